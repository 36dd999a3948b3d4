//! `uefi/files`: the firmware's FAT driver on our BlockIo.

use super::*;

/// Size of `NEW.BIN`, written with the pattern of seed 3 (the host checks).
pub(crate) const NEW_BYTES: usize = 1 << 20;

/// `uefi/files`: the firmware's FAT driver on our BlockIo reads the host's
/// files byte for byte and writes `NEW.BIN`; the host checks it afterwards.
pub(crate) fn files() -> Outcome {
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
