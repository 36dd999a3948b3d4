//! `uefi/compare`: the firmware's NVMe driver and ours on the same reads.

use super::*;

/// Size of `LARGE.BIN` (pattern seed 4), read by `uefi/compare`.
pub(crate) const LARGE_BYTES: usize = 8 << 20;

/// Bytes per BlockIo request in the raw pass of `uefi/compare`.
pub(crate) const RAW_REQUEST: usize = 1 << 20;

/// The file system on an NVMe namespace (device path with an NVMe node),
/// whichever driver serves it.
pub(crate) fn nvme_file_system() -> Result<Handle, String> {
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
pub(crate) fn measure(fs: Handle, who: &str) -> Result<(u64, u64, u64), String> {
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
pub(crate) fn compare() -> Outcome {
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
