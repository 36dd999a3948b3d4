//! The scenario application: the firmware starts it (QEMU `-kernel`, the
//! scenario on `-append`). It loads the driver image it carries, connects
//! the NVMe controllers to it (its `Start` takes them from the firmware's
//! own NVMe driver), then checks what the firmware's FAT driver reads and
//! writes through our BlockIo, BlockIo2 requests, DiskInfo, removal and
//! ExitBootServices. Results go to the serial port as marker lines; the
//! machine ends through isa-debug-exit (x86) or semihosting (aarch64).

#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::ffi::c_void;
use core::ptr::{self, NonNull};

use bare_nvme_uefi::pci_io::{self, PciIo};
use bare_nvme_uefi::{clock, efi, say, DEVICE_PATH_GUID, TAG_GUID};
use uefi::boot::{self, LoadImageSource, SearchType};
use uefi::prelude::*;
use uefi::proto::loaded_image::LoadedImage;
use uefi::proto::media::file::{File, FileAttribute, FileMode};
use uefi::proto::media::fs::SimpleFileSystem;
use uefi::{cstr16, CStr16};
use uefi_raw::protocol::block::{BlockIo2Protocol, BlockIo2Token, BlockIoProtocol};

/// The driver image, built before this application (see build.rs).
static DRIVER: &[u8] = include_bytes!(env!("DRIVER_IMAGE"));

/// Size of `NEW.BIN`, written with the pattern of seed 3 (the host checks).
const NEW_BYTES: usize = 1 << 20;

type Outcome = Result<(), String>;

#[entry]
fn main() -> Status {
    // The firmware's terminal leaves escape sequences on the line.
    say!("");
    say!("@@BOOT uefi");
    clock::calibrate();
    let options = load_options();
    let scenario = options
        .split_whitespace()
        .find_map(|w| w.strip_prefix("scenario="))
        .unwrap_or("files");
    say!("uefi: scenario {scenario}");
    let outcome = match scenario {
        "files" => files(),
        "compare" => compare(),
        "async" => asynchronous(),
        #[cfg(target_arch = "x86_64")]
        "pull-async" => pull_async(),
        // Their probe and their hand reach configuration space through
        // x86 port I/O.
        #[cfg(target_arch = "x86_64")]
        "exit-boot" => exit_boot(),
        #[cfg(target_arch = "x86_64")]
        "pull" => pull(),
        other => Err(format!("unknown scenario {other}")),
    };
    match outcome {
        Ok(()) => {
            say!("@@PASS");
            exit_qemu(0x10)
        }
        Err(e) => {
            say!("@@FAIL {e}");
            exit_qemu(0x11)
        }
    }
}

/// The command line OVMF passes from `-append`.
fn load_options() -> String {
    let Ok(image) = boot::open_protocol_exclusive::<LoadedImage>(boot::image_handle()) else {
        return String::new();
    };
    image
        .load_options_as_cstr16()
        .map(|s| format!("{s}"))
        .unwrap_or_default()
}

/// Ends the machine through isa-debug-exit (status `(code << 1) | 1`).
#[cfg(target_arch = "x86_64")]
fn exit_qemu(code: u32) -> ! {
    // SAFETY: the isa-debug-exit port; the write ends the machine.
    unsafe {
        core::arch::asm!("out dx, eax", in("dx") 0xf4u16, in("eax") code, options(nomem, nostack))
    };
    loop {
        core::hint::spin_loop();
    }
}

/// Ends the machine through semihosting `SYS_EXIT` with the status x86's
/// isa-debug-exit would give (`(code << 1) | 1`), as the aarch64 board does.
#[cfg(target_arch = "aarch64")]
fn exit_qemu(code: u32) -> ! {
    /// `SYS_EXIT` and `ADP_Stopped_ApplicationExit`.
    const SYS_EXIT: u64 = 0x18;
    const APPLICATION_EXIT: u64 = 0x20026;
    let block = [APPLICATION_EXIT, u64::from((code << 1) | 1)];
    // SAFETY: the semihosting call (QEMU runs with -semihosting); it ends
    // the machine and reads only `block`.
    unsafe {
        core::arch::asm!(
            "hlt #0xf000",
            inout("x0") SYS_EXIT => _,
            in("x1") block.as_ptr(),
            options(nostack)
        );
    }
    loop {
        core::hint::spin_loop();
    }
}

/// Byte `i` of the host's test pattern of `seed` (xtask's `fsimage::pattern`).
fn pattern_byte(i: u64, seed: u32) -> u8 {
    let x = (i ^ (i >> 9)).wrapping_mul(0x9E37_79B1) ^ u64::from(seed).wrapping_mul(0x85EB_CA77);
    (x >> 13) as u8
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u64).map(|i| pattern_byte(i, seed)).collect()
}

/// Loads and starts the driver image; returns its handle.
fn load_driver() -> Result<Handle, String> {
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
fn nvme_functions() -> Vec<(Handle, PciIo)> {
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
fn hand_over(driver: Handle) -> Result<Vec<(Handle, PciIo)>, String> {
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
fn drivers_holding(handle: Handle) -> usize {
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
fn our_file_system() -> Result<Handle, String> {
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

fn read_file(
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
fn disk_info_blocks() -> Result<u64, String> {
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
fn driver_name(driver: Handle) -> Result<String, String> {
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

/// `uefi/files`: the firmware's FAT driver on our BlockIo reads the host's
/// files byte for byte and writes `NEW.BIN`; the host checks it afterwards.
fn files() -> Outcome {
    let driver = load_driver()?;
    say!("@@RESULT driver_name={}", driver_name(driver)?);
    let functions = hand_over(driver)?;
    say!("@@RESULT disk_info_blocks={}", disk_info_blocks()?);
    let fs = our_file_system()?;
    let mut sfs = boot::open_protocol_exclusive::<SimpleFileSystem>(fs)
        .map_err(|e| format!("SimpleFileSystem: {e:?}"))?;
    let mut root = sfs
        .open_volume()
        .map_err(|e| format!("OpenVolume: {e:?}"))?;
    for (name, len, seed) in [
        (cstr16!("HELLO.TXT"), 5000, 1),
        (cstr16!("BIG.BIN"), 300_000, 2),
    ] {
        let start = clock::now();
        let data = read_file(&mut root, name, len)?;
        let us = (clock::now() - start).as_micros().max(1);
        if data.len() != len {
            return Err(format!("{name}: {} bytes, expected {len}", data.len()));
        }
        if let Some(at) = data
            .iter()
            .enumerate()
            .position(|(i, &b)| b != pattern_byte(i as u64, seed))
        {
            return Err(format!("{name}: byte {at} differs"));
        }
        say!("uefi: read {name}: {len} bytes in {us} us, as the host wrote it");
    }
    let new = pattern(NEW_BYTES, 3);
    let start = clock::now();
    let file = root
        .open(
            cstr16!("NEW.BIN"),
            FileMode::CreateReadWrite,
            FileAttribute::empty(),
        )
        .map_err(|e| format!("create NEW.BIN: {e:?}"))?;
    let mut file = file.into_regular_file().ok_or("NEW.BIN is a directory")?;
    file.write(&new)
        .map_err(|e| format!("write NEW.BIN: {e:?}"))?;
    file.flush().map_err(|e| format!("flush NEW.BIN: {e:?}"))?;
    file.close();
    let us = (clock::now() - start).as_micros().max(1);
    say!("uefi: wrote NEW.BIN: {NEW_BYTES} bytes in {us} us");
    // Read it back through a fresh open (the FAT driver's cache may hold
    // it; the host's check after the run is the independent one).
    let back = read_file(&mut root, cstr16!("NEW.BIN"), NEW_BYTES)?;
    if back != new {
        return Err("NEW.BIN reads back differently".into());
    }
    root.close();
    drop(sfs);
    // Give the controllers back in order: the FAT and partition drivers let
    // go of our namespaces, then our Stop detaches the controller.
    for (h, _) in functions {
        boot::disconnect_controller(h, None, None)
            .map_err(|e| format!("DisconnectController: {e:?}"))?;
    }
    say!("@@RESULT files_read=2 new_bytes={NEW_BYTES}");
    Ok(())
}

/// `uefi/exit-boot`: after ExitBootServices the controller is quiescent
/// (CC.EN = 0, shutdown complete, bus mastering off), read by a probe.
/// Returns only on a failure before the exit.
#[cfg(target_arch = "x86_64")]
fn exit_boot() -> Outcome {
    let driver = load_driver()?;
    let functions = hand_over(driver)?;
    let fs = our_file_system()?;
    {
        let mut sfs = boot::open_protocol_exclusive::<SimpleFileSystem>(fs)
            .map_err(|e| format!("SimpleFileSystem: {e:?}"))?;
        let mut root = sfs
            .open_volume()
            .map_err(|e| format!("OpenVolume: {e:?}"))?;
        let data = read_file(&mut root, cstr16!("HELLO.TXT"), 5000)?;
        if data != pattern(5000, 1) {
            return Err("HELLO.TXT differs".into());
        }
    }
    let (_, pci) = functions[0];
    let (_, bus, dev, func) = pci.location().ok_or("no PCI location")?;
    let bar_lo = pci.config_read32(0x10).ok_or("BAR0")?;
    let bar_hi = pci.config_read32(0x14).ok_or("BAR1")?;
    let bar = (u64::from(bar_hi) << 32) | u64::from(bar_lo & !0xf);
    say!("uefi: controller at {bus:02x}:{dev:02x}.{func}, BAR0 {bar:#x}; exiting boot services");
    // SAFETY: nothing of boot services is used past this point: the probe
    // reads registers and configuration space directly.
    let _map = unsafe { boot::exit_boot_services(None) };
    let cc = mmio_read32(bar, 0x14);
    let csts = mmio_read32(bar, 0x1c);
    let command = config_read16(bus as u8, dev as u8, func as u8, 0x04);
    let cc_en = cc & 1;
    let shst = (csts >> 2) & 3;
    let bus_master = (command >> 2) & 1;
    say!(
        "@@RESULT cc_en={cc_en} rdy={} shst={shst} bus_master={bus_master}",
        csts & 1
    );
    // Nothing may be dropped now (the allocator is gone with boot
    // services): the verdict ends the machine here.
    if cc_en != 0 || csts & 1 != 0 || bus_master != 0 {
        say!("@@FAIL controller not quiescent: CC {cc:#x} CSTS {csts:#x} command {command:#x}");
        exit_qemu(0x11)
    }
    say!("@@PASS");
    exit_qemu(0x10)
}

/// A register of the controller at BAR 0 address `bar`.
#[cfg(target_arch = "x86_64")]
fn mmio_read32(bar: u64, offset: usize) -> u32 {
    use bare_nvme::RegisterAccess;

    let Some(base) = NonNull::new(bar as *mut u8) else {
        return u32::MAX;
    };
    // SAFETY: the controller's BAR 0, identity mapped by the firmware's page
    // tables (still in force right after ExitBootServices); reading CC and
    // CSTS has no side effect.
    let regs = unsafe { bare_nvme::MmioRegisters::new(base, 0x1000) };
    regs.read32(offset)
}

/// The CF8 address of a configuration dword.
#[cfg(target_arch = "x86_64")]
fn config_address(bus: u8, dev: u8, func: u8, offset: u8) -> u32 {
    0x8000_0000u32
        | (u32::from(bus) << 16)
        | (u32::from(dev) << 11)
        | (u32::from(func) << 8)
        | u32::from(offset & 0xfc)
}

/// Writes a configuration word through CF8/CFC (the pull's Slot Control
/// write goes to a root port this application holds no PCI I/O for).
#[cfg(target_arch = "x86_64")]
fn config_write16(bus: u8, dev: u8, func: u8, offset: u8, value: u16) {
    let address = config_address(bus, dev, func, offset);
    let port = 0xcfcu16 + u16::from(offset & 2);
    efi::at_callback(|| {
        // SAFETY: the PCI configuration ports of q35; one word written (a
        // word, so the RW1C Slot Status beside Slot Control is untouched).
        unsafe {
            core::arch::asm!("out dx, eax", in("dx") 0xcf8u16, in("eax") address, options(nomem, nostack));
            core::arch::asm!("out dx, ax", in("dx") port, in("ax") value, options(nomem, nostack));
        }
    });
}

/// A configuration byte through CF8/CFC.
#[cfg(target_arch = "x86_64")]
fn config_read8(bus: u8, dev: u8, func: u8, offset: u8) -> u8 {
    (config_read16(bus, dev, func, offset & !1) >> ((offset & 1) * 8)) as u8
}

/// A configuration word through the legacy CF8/CFC mechanism (the firmware's
/// PCI I/O is gone after ExitBootServices).
#[cfg(target_arch = "x86_64")]
fn config_read16(bus: u8, dev: u8, func: u8, offset: u8) -> u16 {
    let address = config_address(bus, dev, func, offset);
    let value: u32;
    // SAFETY: the PCI configuration ports of q35; one dword read.
    unsafe {
        core::arch::asm!("out dx, eax", in("dx") 0xcf8u16, in("eax") address, options(nomem, nostack));
        core::arch::asm!("in eax, dx", in("dx") 0xcfcu16, out("eax") value, options(nomem, nostack));
    }
    (value >> ((offset & 2) * 8)) as u16
}

/// Size of `LARGE.BIN` (pattern seed 4), read by `uefi/compare`.
const LARGE_BYTES: usize = 8 << 20;
/// Bytes per BlockIo request in the raw pass of `uefi/compare`.
const RAW_REQUEST: usize = 1 << 20;

/// The file system on an NVMe namespace (device path with an NVMe node),
/// whichever driver serves it.
fn nvme_file_system() -> Result<Handle, String> {
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
        let mut node = path.cast::<u8>().cast_const();
        loop {
            // SAFETY: a device path from the firmware: nodes with their
            // length at bytes 2..4, ending with type 0x7f.
            let (kind, sub, len) = unsafe {
                (
                    *node,
                    *node.add(1),
                    u16::from_le_bytes([*node.add(2), *node.add(3)]) as usize,
                )
            };
            if kind == 3 && sub == 23 {
                return Ok(h);
            }
            if kind == 0x7f || len < 4 {
                break;
            }
            // SAFETY: the next node of the same path.
            node = unsafe { node.add(len) };
        }
    }
    Err("no file system on an NVMe namespace".into())
}

/// Reads `LARGE.BIN` through the file system on `fs` and the same number of
/// bytes from the start of its partition through the partition's BlockIo;
/// returns MiB/s of each and a checksum of the raw bytes.
fn measure(fs: Handle, who: &str) -> Result<(u64, u64, u64), String> {
    let mib_s = |bytes: usize, us: u128| (bytes as u128 * 1_000_000 / us.max(1) / (1 << 20)) as u64;
    let fs_rate = {
        let mut sfs = boot::open_protocol_exclusive::<SimpleFileSystem>(fs)
            .map_err(|e| format!("SimpleFileSystem: {e:?}"))?;
        let mut root = sfs
            .open_volume()
            .map_err(|e| format!("OpenVolume: {e:?}"))?;
        let start = clock::now();
        let data = read_file(&mut root, cstr16!("LARGE.BIN"), LARGE_BYTES)?;
        let us = (clock::now() - start).as_micros();
        if data.len() != LARGE_BYTES
            || data
                .iter()
                .enumerate()
                .any(|(i, &b)| b != pattern_byte(i as u64, 4))
        {
            return Err(format!("LARGE.BIN through {who} differs"));
        }
        mib_s(LARGE_BYTES, us)
    };
    let me = boot::image_handle().as_ptr();
    let path = efi::open(
        fs.as_ptr(),
        &DEVICE_PATH_GUID,
        me,
        ptr::null_mut(),
        efi::OPEN_GET,
    )
    .map_err(|e| format!("device path: {e:?}"))?;
    let mut path = path.cast_const().cast();
    let mut part: *mut c_void = ptr::null_mut();
    let block_io_guid = uefi_raw::protocol::block::BlockIoProtocol::GUID;
    // SAFETY: a device path from the firmware; valid out pointers.
    let s = unsafe { (efi::boot().locate_device_path)(&block_io_guid, &mut path, &mut part) };
    if !s.is_success() {
        return Err(format!("no BlockIo under the file system: {s:?}"));
    }
    let bio = efi::open(part, &block_io_guid, me, ptr::null_mut(), efi::OPEN_GET)
        .map_err(|e| format!("BlockIo: {e:?}"))?
        .cast::<uefi_raw::protocol::block::BlockIoProtocol>();
    let buffer = boot::allocate_pages(
        boot::AllocateType::AnyPages,
        boot::MemoryType::LOADER_DATA,
        RAW_REQUEST / 4096,
    )
    .map_err(|e| format!("AllocatePages: {e:?}"))?;
    // SAFETY: `bio` is the firmware's BlockIo instance on the partition, its
    // media alongside; the buffer is ours, RAW_REQUEST bytes.
    let (raw_rate, sum) = unsafe {
        let media = &*(*bio).media;
        let block = media.block_size as usize;
        let mut sum = 0u64;
        // Only the reads are timed, not the checksum over what they read.
        let mut busy = core::time::Duration::ZERO;
        for piece in 0..LARGE_BYTES / RAW_REQUEST {
            let lba = (piece * RAW_REQUEST / block) as u64;
            let start = clock::now();
            let s = ((*bio).read_blocks)(
                bio,
                media.media_id,
                lba,
                RAW_REQUEST,
                buffer.as_ptr().cast(),
            );
            busy += clock::now() - start;
            if !s.is_success() {
                return Err(format!("ReadBlocks through {who}: {s:?}"));
            }
            let bytes = core::slice::from_raw_parts(buffer.as_ptr(), RAW_REQUEST);
            sum = bytes
                .iter()
                .fold(sum, |a, &b| a.wrapping_mul(31).wrapping_add(u64::from(b)));
        }
        let us = busy.as_micros();
        let _ = boot::free_pages(buffer, RAW_REQUEST / 4096);
        (mib_s(LARGE_BYTES, us), sum)
    };
    say!("uefi: {who}: LARGE.BIN through FAT at {fs_rate} MiB/s, raw BlockIo at {raw_rate} MiB/s");
    Ok((fs_rate, raw_rate, sum))
}

/// `uefi/compare`: the same file and the same blocks read through the
/// firmware's own NVMe driver, then through ours, in one boot.
fn compare() -> Outcome {
    for (h, _) in nvme_functions() {
        // The firmware connects the boot devices only; make sure its NVMe
        // driver serves this one.
        let _ = boot::connect_controller(h, &[], None, true);
    }
    let fs = nvme_file_system()?;
    if our_file_system().is_ok() {
        return Err("the driver is not loaded yet, yet its tag is there".into());
    }
    let (fw_fs, fw_raw, fw_sum) = measure(fs, "the firmware's NVMe driver")?;
    let driver = load_driver()?;
    let functions = hand_over(driver)?;
    let fs = our_file_system()?;
    let (our_fs, our_raw, our_sum) = measure(fs, "bare-nvme")?;
    if fw_sum != our_sum {
        return Err("the raw blocks differ between the two drivers".into());
    }
    for (h, _) in functions {
        boot::disconnect_controller(h, None, None)
            .map_err(|e| format!("DisconnectController: {e:?}"))?;
    }
    say!(
        "@@RESULT fw_fs_mibs={fw_fs} fw_raw_mibs={fw_raw} ours_fs_mibs={our_fs} ours_raw_mibs={our_raw} same_bytes=1"
    );
    Ok(())
}

/// Slot Control: power controller off, power indicator off, attention
/// indicator off. QEMU deletes the device on this write: a surprise
/// removal, as the bare-metal boards' hand does it.
#[cfg(target_arch = "x86_64")]
const SLOT_REMOVE: u16 = 0x07c0;
/// The PCI Express capability ID.
#[cfg(target_arch = "x86_64")]
const CAP_PCIE: u8 = 0x10;

/// The root port (on bus 0) whose secondary bus is `bus`, and the offset of
/// its Slot Control register.
#[cfg(target_arch = "x86_64")]
fn root_port_of(bus: u8) -> Option<(u8, u16)> {
    (0..32u8).find_map(|dev| {
        let header = config_read8(0, dev, 0, 0x0e);
        if config_read16(0, dev, 0, 0) == u16::MAX || header & 0x7f != 1 {
            return None;
        }
        if config_read8(0, dev, 0, 0x19) != bus {
            return None;
        }
        let mut cap = config_read8(0, dev, 0, 0x34) & 0xfc;
        for _ in 0..48 {
            if cap == 0 {
                return None;
            }
            if config_read8(0, dev, 0, cap) == CAP_PCIE {
                return Some((dev, u16::from(cap) + 0x18));
            }
            cap = config_read8(0, dev, 0, cap + 1) & 0xfc;
        }
        None
    })
}

/// Bytes per file read in `uefi/pull`, and reads before the pull.
#[cfg(target_arch = "x86_64")]
const PULL_CHUNK: usize = 256 << 10;
#[cfg(target_arch = "x86_64")]
const READS_BEFORE_PULL: usize = 4;

/// `uefi/pull`: the controller vanishes (its root port's slot powered off,
/// QEMU deletes it) while the firmware's FAT driver reads a file through
/// our BlockIo: the read fails with an error instead of hanging, later
/// calls say `EFI_NO_MEDIA`, and disconnecting the controller removes our
/// protocols and returns every DMA buffer.
#[cfg(target_arch = "x86_64")]
fn pull() -> Outcome {
    let driver = load_driver()?;
    let functions = hand_over(driver)?;
    let (h, pci) = functions[0];
    let (_, bus, _, _) = pci.location().ok_or("no PCI location")?;
    let (port, slot_control) =
        root_port_of(bus as u8).ok_or("no root port above the controller")?;
    say!("uefi: controller behind root port 00:{port:02x}.0");
    let fs = our_file_system()?;
    let mut sfs = boot::open_protocol_exclusive::<SimpleFileSystem>(fs)
        .map_err(|e| format!("SimpleFileSystem: {e:?}"))?;
    let mut root = sfs
        .open_volume()
        .map_err(|e| format!("OpenVolume: {e:?}"))?;
    let file = root
        .open(cstr16!("LARGE.BIN"), FileMode::Read, FileAttribute::empty())
        .map_err(|e| format!("open LARGE.BIN: {e:?}"))?;
    let mut file = file.into_regular_file().ok_or("LARGE.BIN is a directory")?;
    let mut chunk = vec![0u8; PULL_CHUNK];
    let mut offset = 0usize;
    let mut pulled_at = None;
    let error = loop {
        if offset == READS_BEFORE_PULL * PULL_CHUNK && pulled_at.is_none() {
            say!("uefi: pulling the controller after {offset} bytes");
            config_write16(0, port, 0, slot_control as u8, SLOT_REMOVE);
            pulled_at = Some(clock::now());
        }
        match file.read(&mut chunk) {
            Ok(0) => return Err("the whole file was read after the pull".into()),
            Ok(n) => {
                if chunk[..n]
                    .iter()
                    .enumerate()
                    .any(|(i, &b)| b != pattern_byte((offset + i) as u64, 4))
                {
                    return Err(format!("LARGE.BIN differs near byte {offset}"));
                }
                offset += n;
            }
            Err(e) => break e.status(),
        }
    };
    let pulled_at = pulled_at.ok_or("the read failed before the pull")?;
    let error_us = (clock::now() - pulled_at).as_micros();
    say!("uefi: the file read failed {error_us} us after the pull: {error:?}, {offset} bytes read");
    drop(file);
    root.close();
    drop(sfs);
    // A later BlockIo call on the namespace: the media is gone.
    let after = namespace_read_status()?;
    say!("uefi: a BlockIo read after the failure: {after:?}");
    let start = clock::now();
    let disconnect = boot::disconnect_controller(h, None, None);
    let disconnect_ms = (clock::now() - start).as_millis();
    say!("uefi: disconnect {disconnect:?} in {disconnect_ms} ms");
    let gone = our_file_system().is_err();
    let name = |s: Status| match s {
        Status::DEVICE_ERROR => "DEVICE_ERROR",
        Status::NO_MEDIA => "NO_MEDIA",
        _ => "other",
    };
    say!(
        "@@RESULT pull_error={} after_status={} disconnected={} fs_gone={}",
        name(error),
        name(after),
        u8::from(disconnect.is_ok()),
        u8::from(gone)
    );
    if error != Status::DEVICE_ERROR && error != Status::NO_MEDIA {
        return Err(format!("the read failed with {error:?}"));
    }
    Ok(())
}

/// The status of a one-block read through our namespace's BlockIo.
#[cfg(target_arch = "x86_64")]
fn namespace_read_status() -> Result<Status, String> {
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

/// First block `uefi/async` writes (past the FAT partition, which ends at
/// block 72048 of xtask's image); the host checks it after the run.
const ASYNC_LBA: u64 = 80_000;
/// Requests in flight at once in `uefi/async`, and bytes of each.
const ASYNC_REQUESTS: usize = 8;
const ASYNC_BYTES: usize = 1 << 20;
/// Pattern seed of what `uefi/async` writes (the host's `fsimage::pattern`,
/// over all requests as one run of bytes).
const ASYNC_SEED: u32 = 5;

/// A namespace handle of ours with its BlockIo2 and BlockIo.
fn our_namespace() -> Result<(*mut BlockIo2Protocol, *mut BlockIoProtocol), String> {
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

/// Issues one BlockIo2 request per buffer (all in flight at once), at
/// consecutive ranges from [`ASYNC_LBA`].
fn issue_requests(
    io2: *mut BlockIo2Protocol,
    write: bool,
    buffers: &[NonNull<u8>],
    tokens: &mut [BlockIo2Token],
) -> Outcome {
    // SAFETY: our BlockIo2 instance and its media.
    let media = unsafe { &*(*io2).media };
    let blocks = (ASYNC_BYTES / media.block_size as usize) as u64;
    for (i, (buffer, token)) in buffers.iter().zip(tokens.iter_mut()).enumerate() {
        token.transaction_status = Status::NOT_READY;
        let lba = ASYNC_LBA + i as u64 * blocks;
        // SAFETY: the buffer and token stay ours (untouched) until the
        // token's event is signalled, which the caller waits for.
        let s = unsafe {
            if write {
                ((*io2).write_blocks_ex)(
                    io2,
                    media.media_id,
                    lba,
                    token,
                    ASYNC_BYTES,
                    buffer.as_ptr().cast(),
                )
            } else {
                ((*io2).read_blocks_ex)(
                    io2,
                    media.media_id,
                    lba,
                    token,
                    ASYNC_BYTES,
                    buffer.as_ptr().cast(),
                )
            }
        };
        if !s.is_success() {
            return Err(format!("request {i}: {s:?}"));
        }
    }
    Ok(())
}

/// Waits up to 20 s for every token's event; returns how many were still
/// pending at the first look.
fn wait_requests(tokens: &[BlockIo2Token]) -> Result<usize, String> {
    let mut done = [false; ASYNC_REQUESTS];
    let check = |token: &BlockIo2Token| {
        // SAFETY: the caller's event; CheckEvent only reads and clears its
        // signalled state.
        unsafe { (efi::boot().check_event)(token.event) }.is_success()
    };
    for (i, token) in tokens.iter().enumerate() {
        done[i] = check(token);
    }
    let pending = done.iter().filter(|d| !**d).count();
    let deadline = clock::now() + core::time::Duration::from_secs(20);
    while done.iter().any(|d| !*d) {
        if clock::now() > deadline {
            let left = done.iter().filter(|d| !**d).count();
            return Err(format!(
                "{left} BlockIo2 requests not completed within 20 s"
            ));
        }
        for (i, token) in tokens.iter().enumerate() {
            if !done[i] {
                done[i] = check(token);
            }
        }
    }
    Ok(pending)
}

/// Issues the requests and waits for them all to succeed; returns how many
/// were still pending when the last was issued.
fn run_requests(
    io2: *mut BlockIo2Protocol,
    write: bool,
    buffers: &[NonNull<u8>],
    tokens: &mut [BlockIo2Token],
) -> Result<usize, String> {
    issue_requests(io2, write, buffers, tokens)?;
    let pending = wait_requests(tokens)?;
    if let Some((i, t)) = tokens
        .iter()
        .enumerate()
        .find(|(_, t)| t.transaction_status.is_error())
    {
        return Err(format!(
            "request {i} completed with {:?}",
            t.transaction_status
        ));
    }
    Ok(pending)
}

/// [`ASYNC_REQUESTS`] buffers of [`ASYNC_BYTES`] (pages) and tokens with
/// plain events (no notification: the driver signals them).
fn request_buffers() -> Result<(Vec<NonNull<u8>>, Vec<BlockIo2Token>), String> {
    let mut buffers = Vec::new();
    let mut tokens = Vec::new();
    for _ in 0..ASYNC_REQUESTS {
        let buffer = boot::allocate_pages(
            boot::AllocateType::AnyPages,
            boot::MemoryType::LOADER_DATA,
            ASYNC_BYTES / 4096,
        )
        .map_err(|e| format!("AllocatePages: {e:?}"))?;
        buffers.push(buffer);
        let mut event = ptr::null_mut();
        // SAFETY: a plain event that the driver signals.
        let s = unsafe {
            (efi::boot().create_event)(
                uefi_raw::table::boot::EventType::empty(),
                uefi_raw::table::boot::Tpl::CALLBACK,
                None,
                ptr::null_mut(),
                &mut event,
            )
        };
        if !s.is_success() {
            return Err(format!("CreateEvent: {s:?}"));
        }
        tokens.push(BlockIo2Token {
            event,
            transaction_status: Status::SUCCESS,
        });
    }
    Ok((buffers, tokens))
}

/// `uefi/async`: eight 1 MiB BlockIo2 writes in flight at once past the
/// file system, completed from the driver's tick, then eight reads of the
/// same blocks; the bytes read are the bytes written, a synchronous
/// BlockIo read agrees, and the host checks the image after the run.
fn asynchronous() -> Outcome {
    let driver = load_driver()?;
    let functions = hand_over(driver)?;
    let (io2, io) = our_namespace()?;
    let (buffers, mut tokens) = request_buffers()?;
    for (i, buffer) in buffers.iter().enumerate() {
        // SAFETY: the pages just allocated, ours.
        let bytes = unsafe { core::slice::from_raw_parts_mut(buffer.as_ptr(), ASYNC_BYTES) };
        for (j, b) in bytes.iter_mut().enumerate() {
            *b = pattern_byte((i * ASYNC_BYTES + j) as u64, ASYNC_SEED);
        }
    }
    let start = clock::now();
    let pending_writes = run_requests(io2, true, &buffers, &mut tokens)?;
    let write_us = (clock::now() - start).as_micros().max(1);
    // SAFETY: our BlockIo2; no token: a synchronous flush.
    let s = unsafe { ((*io2).flush_blocks_ex)(io2, ptr::null_mut()) };
    if !s.is_success() {
        return Err(format!("FlushBlocksEx: {s:?}"));
    }
    for buffer in &buffers {
        // SAFETY: our pages; no request is in flight.
        unsafe { ptr::write_bytes(buffer.as_ptr(), 0, ASYNC_BYTES) };
    }
    let start = clock::now();
    let pending_reads = run_requests(io2, false, &buffers, &mut tokens)?;
    let read_us = (clock::now() - start).as_micros().max(1);
    for (i, buffer) in buffers.iter().enumerate() {
        // SAFETY: our pages; every request completed.
        let bytes = unsafe { core::slice::from_raw_parts(buffer.as_ptr(), ASYNC_BYTES) };
        if let Some(at) = bytes
            .iter()
            .enumerate()
            .position(|(j, &b)| b != pattern_byte((i * ASYNC_BYTES + j) as u64, ASYNC_SEED))
        {
            return Err(format!("request {i}: byte {at} read back differently"));
        }
    }
    // The last request's blocks once more through BlockIo (synchronous).
    let mut check = vec![0u8; ASYNC_BYTES];
    // SAFETY: our BlockIo and its media; `check` holds the bytes asked.
    let s = unsafe {
        let media = &*(*io).media;
        let lba =
            ASYNC_LBA + ((ASYNC_REQUESTS - 1) * ASYNC_BYTES / media.block_size as usize) as u64;
        ((*io).read_blocks)(
            io,
            media.media_id,
            lba,
            ASYNC_BYTES,
            check.as_mut_ptr().cast(),
        )
    };
    // SAFETY: our pages, holding what the last async read brought.
    let last =
        unsafe { core::slice::from_raw_parts(buffers[ASYNC_REQUESTS - 1].as_ptr(), ASYNC_BYTES) };
    if !s.is_success() || check != last {
        return Err(format!("BlockIo disagrees with BlockIo2 ({s:?})"));
    }
    let mib = (ASYNC_REQUESTS * ASYNC_BYTES) >> 20;
    say!(
        "uefi: {ASYNC_REQUESTS} x 1 MiB BlockIo2 writes in {write_us} us ({} MiB/s), reads in {read_us} us ({} MiB/s); pending when the last was issued: {pending_writes} writes, {pending_reads} reads",
        mib as u128 * 1_000_000 / write_us,
        mib as u128 * 1_000_000 / read_us
    );
    for token in &tokens {
        // SAFETY: our events, no longer used.
        let _ = unsafe { (efi::boot().close_event)(token.event) };
    }
    for buffer in buffers {
        // SAFETY: our pages, no longer used.
        let _ = unsafe { boot::free_pages(buffer, ASYNC_BYTES / 4096) };
    }
    for (h, _) in functions {
        boot::disconnect_controller(h, None, None)
            .map_err(|e| format!("DisconnectController: {e:?}"))?;
    }
    say!(
        "@@RESULT async_requests={} async_ok=1 pending_writes={pending_writes} pending_reads={pending_reads}",
        2 * ASYNC_REQUESTS
    );
    Ok(())
}

/// `uefi/pull-async`: eight 1 MiB BlockIo2 reads outstanding, then the
/// controller vanishes: every token still completes (none hangs), those
/// the device did not finish with an error, later calls say `EFI_NO_MEDIA`,
/// and disconnecting returns every DMA buffer.
#[cfg(target_arch = "x86_64")]
fn pull_async() -> Outcome {
    let driver = load_driver()?;
    let functions = hand_over(driver)?;
    let (h, pci) = functions[0];
    let (_, bus, _, _) = pci.location().ok_or("no PCI location")?;
    let (port, slot_control) =
        root_port_of(bus as u8).ok_or("no root port above the controller")?;
    let (io2, _) = our_namespace()?;
    let (buffers, mut tokens) = request_buffers()?;
    // At TPL_CALLBACK the driver's tick cannot run: the commands stay
    // outstanding for the driver. QEMU 7.2 crashes when it deletes a
    // controller whose requests are still in its block layer, so the
    // device gets 50 ms to finish them first (it posts their completions;
    // the driver has not taken them when the controller vanishes).
    efi::at_callback(|| {
        issue_requests(io2, false, &buffers, &mut tokens)?;
        clock::spin(core::time::Duration::from_millis(50));
        config_write16(0, port, 0, slot_control as u8, SLOT_REMOVE);
        Ok::<(), String>(())
    })?;
    let pulled_at = clock::now();
    say!("uefi: pulled the controller with {ASYNC_REQUESTS} BlockIo2 reads outstanding");
    wait_requests(&tokens)?;
    let all_ms = (clock::now() - pulled_at).as_millis();
    let failed = tokens
        .iter()
        .filter(|t| t.transaction_status.is_error())
        .count();
    say!(
        "uefi: all {ASYNC_REQUESTS} tokens completed {all_ms} ms after the pull, {failed} with an error"
    );
    let after = namespace_read_status()?;
    let disconnect = boot::disconnect_controller(h, None, None);
    say!(
        "@@RESULT tokens_completed={ASYNC_REQUESTS} tokens_failed={failed} after_status={} disconnected={}",
        if after == Status::NO_MEDIA { "NO_MEDIA" } else { "other" },
        u8::from(disconnect.is_ok())
    );
    Ok(())
}
