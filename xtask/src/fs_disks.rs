//! The disk images of the filesystem scenarios: made before the run (a GPT
//! with a FAT32 partition holding two files) and checked after it.

use std::fs::OpenOptions;
use std::path::PathBuf;

use crate::catalog::DISK_BYTES;
use crate::fsimage;
use crate::machine::Disk;
use crate::paths;

/// Blocks of the FAT32 partition: 34 MiB (FAT32 needs 65525 clusters),
/// leaving room past it for the timing runs.
const PARTITION_BLOCKS: u64 = 70_000;
/// Size of `NEW.BIN`, written by the guest with the pattern of seed 3.
pub const NEW_BYTES: usize = 1 << 20;

fn image(name: &str) -> PathBuf {
    paths::work().join(name).join("disk0.img")
}

/// The disk of scenario `name`: kept as the host made it (not zeroed).
pub fn disk(name: &str) -> Disk {
    Disk {
        path: image(name),
        size: DISK_BYTES,
        fresh: false,
    }
}

fn make(name: &str) -> Result<(), String> {
    let hello = fsimage::pattern(5000, 1);
    let big = fsimage::pattern(300_000, 2);
    let files = [("HELLO.TXT", &hello[..]), ("BIG.BIN", &big[..])];
    fsimage::create_file(&image(name), DISK_BYTES, PARTITION_BLOCKS, &files)?;
    Ok(())
}

/// Before `fs-files`.
pub fn make_files() -> Result<(), String> {
    make("fs-files")
}

/// Before `fs-pull`.
pub fn make_pull() -> Result<(), String> {
    make("fs-pull")
}

/// After `fs-files`: the host's own FAT reader finds `NEW.BIN` byte for
/// byte, next to the untouched files.
pub fn check_files() -> Result<(), String> {
    let path = image("fs-files");
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut names = fsimage::file_names(&mut file).map_err(|e| e.to_string())?;
    names.sort();
    if names != ["BIG.BIN", "HELLO.TXT", "NEW.BIN"] {
        return Err(format!("root directory holds {names:?}"));
    }
    for (name, len, seed) in [
        ("NEW.BIN", NEW_BYTES, 3),
        ("HELLO.TXT", 5000, 1),
        ("BIG.BIN", 300_000, 2),
    ] {
        let contents = fsimage::read_file(&mut file, name).map_err(|e| format!("{name}: {e}"))?;
        let want = fsimage::pattern(len, seed);
        if contents.len() != want.len() {
            return Err(format!("{name}: {} bytes, expected {len}", contents.len()));
        }
        if let Some(at) = contents.iter().zip(&want).position(|(a, b)| a != b) {
            return Err(format!("{name}: byte {at} differs"));
        }
    }
    Ok(())
}
