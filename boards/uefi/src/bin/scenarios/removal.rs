//! `uefi/pull` and `uefi/pull-async`: the controller vanishes under I/O.

use super::*;

/// Bytes per file read in `uefi/pull`, and reads before the pull.
pub(crate) const PULL_CHUNK: usize = 256 << 10;

pub(crate) const READS_BEFORE_PULL: usize = 4;

/// `uefi/pull`: the controller vanishes (its root port's slot powered off,
/// QEMU deletes it) while the firmware's FAT driver reads a file through
/// our BlockIo: the read fails with an error instead of hanging, later
/// calls say `EFI_NO_MEDIA`, and disconnecting the controller removes our
/// protocols and returns every DMA buffer.
pub(crate) fn pull() -> Outcome {
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

/// `uefi/pull-async`: eight 1 MiB BlockIo2 reads outstanding, then the
/// controller vanishes: every token still completes (none hangs), those
/// the device did not finish with an error, later calls say `EFI_NO_MEDIA`,
/// and disconnecting returns every DMA buffer.
pub(crate) fn pull_async() -> Outcome {
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
