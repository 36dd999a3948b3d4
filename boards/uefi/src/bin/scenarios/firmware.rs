//! The driver image and the firmware's handles: loading the driver, handing
//! it the NVMe functions, finding our file system, namespace and protocols.

use super::*;

/// Loads and starts the driver image; returns its handle.
pub(crate) fn load_driver() -> Result<Handle, String> {
    if DRIVER.is_empty() {
        return Err("built without the driver image (BARE_NVME_UEFI_DRIVER)".into());
    }
    let image = boot::load_image(
        boot::image_handle(),
        LoadImageSource::FromBuffer {
            buffer: DRIVER,
            file_path: None,
        },
    )
    .map_err(|e| format!("LoadImage: {e:?}"))?;
    boot::start_image(image).map_err(|e| format!("StartImage: {e:?}"))?;
    Ok(image)
}

/// The PCI functions of class NVMe, with their PCI I/O.
pub(crate) fn nvme_functions() -> Vec<(Handle, PciIo)> {
    let Ok(handles) = boot::locate_handle_buffer(SearchType::ByProtocol(&pci_io::GUID)) else {
        return Vec::new();
    };
    let me = boot::image_handle().as_ptr();
    let mut found = Vec::new();
    for &h in handles.iter() {
        let Ok(iface) = efi::open(
            h.as_ptr(),
            &pci_io::GUID,
            me,
            ptr::null_mut(),
            efi::OPEN_GET,
        ) else {
            continue;
        };
        let Some(iface) = NonNull::new(iface) else {
            continue;
        };
        // SAFETY: the firmware's PCI I/O instance; the function stays while
        // the scenario runs (no hot-plug here).
        let pci = unsafe { PciIo::new(iface) };
        let class = [
            pci.config_read8(0x0b),
            pci.config_read8(0x0a),
            pci.config_read8(0x09),
        ];
        if class == [Some(1), Some(8), Some(2)] {
            found.push((h, pci));
        }
    }
    found
}

/// Gives every NVMe function to our driver: `ConnectController` naming it
/// first, recursively so the partition and FAT drivers bind on our
/// namespaces. Its `Start` takes the function from the firmware's NVMe
/// driver (an exclusive open: the firmware disconnects that driver first).
pub(crate) fn hand_over(driver: Handle) -> Result<Vec<(Handle, PciIo)>, String> {
    let functions = nvme_functions();
    if functions.is_empty() {
        return Err("no NVMe function".into());
    }
    let me = boot::image_handle().as_ptr();
    for &(h, _) in &functions {
        let before = drivers_holding(h);
        let start = clock::now();
        boot::connect_controller(h, &[Some(driver), None], None, true)
            .map_err(|e| format!("ConnectController: {e:?}"))?;
        say!(
            "uefi: controller handed over in {} ms ({before} driver(s) held it before, {} after)",
            (clock::now() - start).as_millis(),
            drivers_holding(h)
        );
        if efi::open(h.as_ptr(), &TAG_GUID, me, ptr::null_mut(), efi::OPEN_GET).is_err() {
            return Err("the controller is not ours after connecting".into());
        }
        if drivers_holding(h) != 1 {
            return Err("another driver still holds the controller".into());
        }
    }
    Ok(functions)
}

/// How many drivers hold `handle`'s PCI I/O BY_DRIVER (the firmware's NVMe
/// driver before the hand-over, ours after).
pub(crate) fn drivers_holding(handle: Handle) -> usize {
    let mut entries = ptr::null_mut();
    let mut count = 0usize;
    // SAFETY: valid out pointers; the firmware allocates the array, which
    // is freed below.
    let s = unsafe {
        (efi::boot().open_protocol_information)(
            handle.as_ptr(),
            &pci_io::GUID,
            &mut entries,
            &mut count,
        )
    };
    if !s.is_success() || entries.is_null() {
        return 0;
    }
    // SAFETY: `count` entries from the firmware.
    let list = unsafe { core::slice::from_raw_parts(entries, count) };
    let held = list
        .iter()
        .filter(|e| e.attributes & efi::OPEN_BY_DRIVER != 0)
        .count();
    // SAFETY: the pool buffer the firmware returned.
    let _ = unsafe { (efi::boot().free_pool)(entries.cast()) };
    held
}

/// The file system mounted on one of our namespaces.
pub(crate) fn our_file_system() -> Result<Handle, String> {
    let handles =
        boot::find_handles::<SimpleFileSystem>().map_err(|e| format!("no file system: {e:?}"))?;
    let me = boot::image_handle().as_ptr();
    for h in handles {
        let Ok(path) = efi::open(
            h.as_ptr(),
            &DEVICE_PATH_GUID,
            me,
            ptr::null_mut(),
            efi::OPEN_GET,
        ) else {
            continue;
        };
        let mut path = path.cast_const().cast();
        let mut owner: *mut c_void = ptr::null_mut();
        // SAFETY: a device path from the firmware; valid out pointers.
        let s = unsafe { (efi::boot().locate_device_path)(&TAG_GUID, &mut path, &mut owner) };
        if s.is_success() {
            return Ok(h);
        }
    }
    Err("no file system on a namespace of this driver".into())
}

pub(crate) fn read_file(
    dir: &mut uefi::proto::media::file::Directory,
    name: &CStr16,
    len: usize,
) -> Result<Vec<u8>, String> {
    let file = dir
        .open(name, FileMode::Read, FileAttribute::empty())
        .map_err(|e| format!("open {name}: {e:?}"))?;
    let mut file = file
        .into_regular_file()
        .ok_or(format!("{name} is a directory"))?;
    let mut data = vec![0u8; len + 512];
    let mut got = 0;
    loop {
        let n = file
            .read(&mut data[got..])
            .map_err(|e| format!("read {name}: {e:?}"))?;
        if n == 0 {
            break;
        }
        got += n;
    }
    data.truncate(got);
    Ok(data)
}

/// The namespace size (NSZE) from `EFI_DISK_INFO_PROTOCOL.Identify` on our
/// namespace, after checking its interface is NVMe and that a short buffer
/// is answered with the size needed.
pub(crate) fn disk_info_blocks() -> Result<u64, String> {
    use uefi_raw::protocol::disk::DiskInfoProtocol;
    let handles = boot::locate_handle_buffer(SearchType::ByProtocol(&TAG_GUID))
        .map_err(|e| format!("no handle of ours: {e:?}"))?;
    let me = boot::image_handle().as_ptr();
    for &h in handles.iter() {
        let Ok(info) = efi::open(
            h.as_ptr(),
            &DiskInfoProtocol::GUID,
            me,
            ptr::null_mut(),
            efi::OPEN_GET,
        ) else {
            continue;
        };
        let info = info.cast::<DiskInfoProtocol>();
        // SAFETY: our DiskInfo instance.
        if unsafe { (*info).interface } != DiskInfoProtocol::NVME_INTERFACE_GUID {
            return Err("DiskInfo's interface is not NVMe".into());
        }
        let mut size = 0u32;
        // SAFETY: a size query: no buffer.
        let s = unsafe { ((*info).identify)(info, ptr::null_mut(), &mut size) };
        if s != Status::BUFFER_TOO_SMALL || size != 4096 {
            return Err(format!("Identify with no buffer: {s:?}, size {size}"));
        }
        let mut data = vec![0u8; 4096];
        // SAFETY: `data` holds the 4096 bytes asked for.
        let s = unsafe { ((*info).identify)(info, data.as_mut_ptr().cast(), &mut size) };
        if !s.is_success() {
            return Err(format!("Identify: {s:?}"));
        }
        let mut nsze = [0u8; 8];
        nsze.copy_from_slice(&data[..8]);
        return Ok(u64::from_le_bytes(nsze));
    }
    Err("no namespace of ours with DiskInfo".into())
}

/// The driver's name as `EFI_COMPONENT_NAME2_PROTOCOL` on its image gives
/// it (what the UEFI Shell's `drivers` shows).
pub(crate) fn driver_name(driver: Handle) -> Result<String, String> {
    use uefi_raw::protocol::driver::ComponentName2Protocol;
    let me = boot::image_handle().as_ptr();
    let names = efi::open(
        driver.as_ptr(),
        &ComponentName2Protocol::GUID,
        me,
        ptr::null_mut(),
        efi::OPEN_GET,
    )
    .map_err(|e| format!("no ComponentName2: {e:?}"))?
    .cast::<ComponentName2Protocol>();
    let mut name: *const u16 = ptr::null();
    // SAFETY: the driver's protocol; a NUL-terminated language and a valid
    // out pointer.
    let s = unsafe { ((*names).get_driver_name)(names, c"en".as_ptr().cast(), &mut name) };
    if !s.is_success() || name.is_null() {
        return Err(format!("GetDriverName: {s:?}"));
    }
    let mut out = String::new();
    for i in 0..64 {
        // SAFETY: a NUL-terminated UCS-2 string from the driver; reading
        // stops at the NUL (or after 64 characters).
        let c = unsafe { *name.add(i) };
        if c == 0 {
            break;
        }
        out.push(char::from_u32(u32::from(c)).unwrap_or('?'));
    }
    Ok(out)
}

/// A namespace handle of ours with its BlockIo2 and BlockIo.
pub(crate) fn our_namespace() -> Result<(*mut BlockIo2Protocol, *mut BlockIoProtocol), String> {
    let handles = boot::locate_handle_buffer(SearchType::ByProtocol(&TAG_GUID))
        .map_err(|e| format!("no handle of ours: {e:?}"))?;
    let me = boot::image_handle().as_ptr();
    for &h in handles.iter() {
        // The controller's handle carries the tag too, without BlockIo2.
        let io2 = match efi::open(
            h.as_ptr(),
            &BlockIo2Protocol::GUID,
            me,
            ptr::null_mut(),
            efi::OPEN_GET,
        ) {
            Ok(io2) => io2,
            Err(s) => {
                say!("uefi: tagged handle without BlockIo2: {s:?}");
                continue;
            }
        };
        let io = efi::open(
            h.as_ptr(),
            &BlockIoProtocol::GUID,
            me,
            ptr::null_mut(),
            efi::OPEN_GET,
        )
        .map_err(|e| format!("BlockIo: {e:?}"))?;
        return Ok((io2.cast(), io.cast()));
    }
    Err("no namespace of ours with BlockIo2".into())
}

/// The status of a one-block read through our namespace's BlockIo.
#[cfg(target_arch = "x86_64")]
pub(crate) fn namespace_read_status() -> Result<Status, String> {
    let handles = boot::locate_handle_buffer(SearchType::ByProtocol(&TAG_GUID))
        .map_err(|e| format!("no handle of ours: {e:?}"))?;
    let me = boot::image_handle().as_ptr();
    let block_io_guid = uefi_raw::protocol::block::BlockIoProtocol::GUID;
    for &h in handles.iter() {
        let Ok(bio) = efi::open(
            h.as_ptr(),
            &block_io_guid,
            me,
            ptr::null_mut(),
            efi::OPEN_GET,
        ) else {
            continue;
        };
        let bio = bio.cast::<uefi_raw::protocol::block::BlockIoProtocol>();
        let mut block = [0u8; 4096];
        // SAFETY: our BlockIo instance and its media; the buffer holds a
        // block of any size this driver serves (512 or 4096).
        let s = unsafe {
            let media = &*(*bio).media;
            ((*bio).read_blocks)(
                bio,
                media.media_id,
                0,
                media.block_size as usize,
                block.as_mut_ptr().cast(),
            )
        };
        return Ok(s);
    }
    Err("no namespace of ours".into())
}
