//! `EFI_DRIVER_BINDING_PROTOCOL`: which controllers the driver takes
//! (NVMe functions), how it starts on one and how it stops.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::ffi::c_void;
use core::ptr::NonNull;

use uefi_raw::protocol::device_path::DevicePathProtocol;
use uefi_raw::protocol::driver::{ComponentName2Protocol, DriverBindingProtocol};
use uefi_raw::table::boot::InterfaceType;
use uefi_raw::{Handle, Status};

use crate::device::Device;
use crate::pci_io::{self, PciIo};
use crate::{efi, say, DEVICE_PATH_GUID, TAG_GUID};

/// Mass storage (01), non-volatile memory (08), NVMe (02).
const NVME_CLASS: [u8; 3] = [0x02, 0x08, 0x01];
/// Device path node type of the end node.
const END_TYPE: u8 = 0x7f;

/// The binding's version: above the firmware's NVMe driver (0x10), so that
/// where both may bind, ours is asked first.
const VERSION: u32 = 0x20;

/// The driver's name for `EFI_COMPONENT_NAME2_PROTOCOL` (UCS-2, NUL
/// terminated), in its one language.
const NAME: [u16; 10] = ucs2(b"bare-nvme\0");
/// RFC 4646 languages of the names, NUL terminated.
const LANGUAGES: &[u8] = b"en\0";

const fn ucs2<const N: usize>(ascii: &[u8; N]) -> [u16; N] {
    let mut out = [0u16; N];
    let mut i = 0;
    while i < N {
        out[i] = ascii[i] as u16;
        i += 1;
    }
    out
}

unsafe extern "efiapi" fn driver_name(
    _this: *const ComponentName2Protocol,
    language: *const u8,
    name: *mut *const u16,
) -> Status {
    if language.is_null() || name.is_null() {
        return Status::INVALID_PARAMETER;
    }
    // SAFETY: the caller's NUL-terminated language string; only its first
    // three bytes are read, up to the NUL.
    let english = unsafe { *language == b'e' && *language.add(1) == b'n' && *language.add(2) == 0 };
    if !english {
        return Status::UNSUPPORTED;
    }
    // SAFETY: the caller's out pointer; the name is static.
    unsafe { *name = NAME.as_ptr() };
    Status::SUCCESS
}

unsafe extern "efiapi" fn controller_name(
    _this: *const ComponentName2Protocol,
    _controller: Handle,
    _child: Handle,
    _language: *const u8,
    _name: *mut *const u16,
) -> Status {
    Status::UNSUPPORTED
}

/// Installs the driver binding and the driver's name on `image` (the
/// driver image's handle).
pub fn install(image: Handle) -> Status {
    let names = Box::leak(Box::new(ComponentName2Protocol {
        get_driver_name: driver_name,
        get_controller_name: controller_name,
        supported_languages: LANGUAGES.as_ptr(),
    }));
    let mut handle = image;
    // SAFETY: the table is leaked: it lives as long as the image.
    let s = unsafe {
        (efi::boot().install_protocol_interface)(
            &mut handle,
            &ComponentName2Protocol::GUID,
            InterfaceType::NATIVE_INTERFACE,
            (names as *mut ComponentName2Protocol).cast::<c_void>(),
        )
    };
    if !s.is_success() {
        return s;
    }
    let binding = Box::leak(Box::new(DriverBindingProtocol {
        supported,
        start,
        stop,
        version: VERSION,
        image_handle: image,
        driver_binding_handle: image,
    }));
    // SAFETY: the binding is leaked: it lives as long as the image.
    unsafe {
        (efi::boot().install_protocol_interface)(
            &mut handle,
            &DriverBindingProtocol::GUID,
            InterfaceType::NATIVE_INTERFACE,
            (binding as *mut DriverBindingProtocol).cast::<c_void>(),
        )
    }
}

fn binding_handle(this: *const DriverBindingProtocol) -> Handle {
    // SAFETY: the firmware passes back the binding `install` published.
    unsafe { (*this).driver_binding_handle }
}

fn open_pci(controller: Handle, binding: Handle, attributes: u32) -> Result<PciIo, Status> {
    let iface = efi::open(controller, &pci_io::GUID, binding, controller, attributes)?;
    let iface = NonNull::new(iface).ok_or(Status::UNSUPPORTED)?;
    // SAFETY: the firmware's PCI I/O instance, valid while we hold it open.
    Ok(unsafe { PciIo::new(iface) })
}

unsafe extern "efiapi" fn supported(
    this: *const DriverBindingProtocol,
    controller: Handle,
    _remaining: *const DevicePathProtocol,
) -> Status {
    let binding = binding_handle(this);
    // BY_DRIVER first: ALREADY_STARTED when this driver holds the function.
    // ACCESS_DENIED when another driver does (the firmware's NVMe driver):
    // this one takes it over in `start`, so look with GET_PROTOCOL instead.
    let (pci, claimed) = match open_pci(controller, binding, efi::OPEN_BY_DRIVER) {
        Ok(pci) => (pci, true),
        Err(Status::ACCESS_DENIED) => match open_pci(controller, binding, efi::OPEN_GET) {
            Ok(pci) => (pci, false),
            Err(s) => return s,
        },
        Err(s) => return s,
    };
    let class = [
        pci.config_read8(0x09),
        pci.config_read8(0x0a),
        pci.config_read8(0x0b),
    ];
    if claimed {
        let _ = efi::close(controller, &pci_io::GUID, binding, controller);
    }
    if class == NVME_CLASS.map(Some) {
        Status::SUCCESS
    } else {
        Status::UNSUPPORTED
    }
}

/// The controller's device path, copied (with its end node).
fn device_path(controller: Handle, binding: Handle) -> Result<Vec<u8>, Status> {
    let path = efi::open(
        controller,
        &DEVICE_PATH_GUID,
        binding,
        controller,
        efi::OPEN_GET,
    )?
    .cast::<u8>()
    .cast_const();
    let mut len = 0usize;
    loop {
        // SAFETY: a device path is a sequence of nodes, each with its length
        // at bytes 2..4, ending with a node of type 0x7f.
        let (kind, node_len) = unsafe {
            let node = path.add(len);
            (
                *node,
                u16::from_le_bytes([*node.add(2), *node.add(3)]) as usize,
            )
        };
        if node_len < 4 {
            return Err(Status::INVALID_PARAMETER);
        }
        len += node_len;
        if kind == END_TYPE {
            break;
        }
    }
    // SAFETY: the `len` bytes just walked.
    Ok(unsafe { core::slice::from_raw_parts(path, len) }.to_vec())
}

unsafe extern "efiapi" fn start(
    this: *const DriverBindingProtocol,
    controller: Handle,
    _remaining: *const DevicePathProtocol,
) -> Status {
    let binding = binding_handle(this);
    // EXCLUSIVE: the firmware disconnects the driver that holds the
    // function (its own NVMe driver, and the partition and FAT drivers on
    // its namespaces) before granting it; ACCESS_DENIED if one refuses.
    let pci = match open_pci(
        controller,
        binding,
        efi::OPEN_BY_DRIVER | efi::OPEN_EXCLUSIVE,
    ) {
        Ok(pci) => pci,
        Err(s) => {
            say!("uefi: the function is not free: {s:?}");
            return s;
        }
    };
    let fail = |s: Status| {
        let _ = efi::close(controller, &pci_io::GUID, binding, controller);
        s
    };
    let path = match device_path(controller, binding) {
        Ok(p) => p,
        Err(s) => return fail(s),
    };
    if let Some((seg, bus, dev, func)) = pci.location() {
        say!("uefi: starting on {seg:04x}:{bus:02x}:{dev:02x}.{func}");
    }
    let device = efi::at_callback(|| Device::start(controller, binding, pci, &path));
    let device = match device {
        Ok(d) => Box::into_raw(d),
        Err(s) => return fail(s),
    };
    let mut handle = controller;
    // SAFETY: the tag points at the boxed device, uninstalled in `stop`
    // before the device is freed.
    let s = unsafe {
        (efi::boot().install_protocol_interface)(
            &mut handle,
            &TAG_GUID,
            InterfaceType::NATIVE_INTERFACE,
            device.cast::<c_void>(),
        )
    };
    if !s.is_success() {
        // SAFETY: `device` came from `Box::into_raw` just above.
        let mut device = unsafe { Box::from_raw(device) };
        device.withdraw_namespaces();
        device.stop();
        return fail(s);
    }
    Status::SUCCESS
}

unsafe extern "efiapi" fn stop(
    this: *const DriverBindingProtocol,
    controller: Handle,
    children: usize,
    child_handles: *const Handle,
) -> Status {
    let binding = binding_handle(this);
    let device = match efi::open(controller, &TAG_GUID, binding, controller, efi::OPEN_GET) {
        Ok(d) => d.cast::<Device>(),
        Err(_) => return Status::DEVICE_ERROR,
    };
    efi::at_callback(|| {
        // SAFETY: the tag points at the live device `start` made; at
        // TPL_CALLBACK its tick does not run meanwhile.
        let dev = unsafe { &mut *device };
        if children > 0 {
            // SAFETY: the firmware passes `children` handles.
            let handles = unsafe { core::slice::from_raw_parts(child_handles, children) };
            let mut all = Status::SUCCESS;
            for &child in handles {
                let Some(at) = dev.namespaces.iter().position(|n| n.handle == child) else {
                    continue;
                };
                match dev.namespaces[at].uninstall(controller, binding) {
                    Ok(()) => {
                        dev.namespaces.remove(at);
                    }
                    Err(s) => {
                        say!("uefi: namespace still in use: {s:?}");
                        all = Status::DEVICE_ERROR;
                    }
                }
            }
            return all;
        }
        if !dev.namespaces.is_empty() {
            return Status::DEVICE_ERROR;
        }
        // SAFETY: uninstalls the tag `start` installed.
        let _ = unsafe {
            (efi::boot().uninstall_protocol_interface)(
                controller,
                &TAG_GUID,
                device.cast::<c_void>(),
            )
        };
        // SAFETY: `device` came from `Box::into_raw` in `start`; nothing
        // refers to it any more (tag and namespaces gone).
        unsafe { Box::from_raw(device) }.stop();
        let _ = efi::close(controller, &pci_io::GUID, binding, controller);
        Status::SUCCESS
    })
}
