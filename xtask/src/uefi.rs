//! The UEFI board (`boards/uefi`): bare-nvme as a UEFI driver under OVMF
//! (x86_64, q35) and AAVMF (aarch64, virt).
//!
//! Its scenarios boot the firmware with the scenario application as QEMU's
//! `-kernel` (the firmware starts a PE image given that way, with `-append`
//! as its load options); the application carries the driver image, loads
//! it, hands it the NVMe controllers and reports on the serial port with the
//! same marker lines as the bare-metal boards, so [`scenario::run`] runs
//! them. `cargo xtask uefi [NAME ...]` runs them alone; `cargo xtask test`
//! runs them after the bare-metal boards.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::board::Board;
use crate::catalog::DISK_BYTES;
use crate::machine::{Disk, Machine};
use crate::scenario::{self, Scenario};
use crate::{fsimage, paths, prereq};

/// One architecture the UEFI board is built and booted for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arch {
    /// The board whose QEMU and machine type it boots (q35 or virt).
    board: Board,
    /// The Rust target of the images.
    target: &'static str,
    /// The firmware image, code and variables in one (no writable variable
    /// store is needed), and the Debian package holding it.
    firmware: &'static str,
    firmware_package: &'static str,
    /// Prefix of its scenario names and disk directories.
    prefix: &'static str,
}

/// x86_64: OVMF on q35.
pub const X86_64: Arch = Arch {
    board: Board::X86_64,
    target: "x86_64-unknown-uefi",
    firmware: "/usr/share/ovmf/OVMF.fd",
    firmware_package: "ovmf",
    prefix: "uefi",
};

/// aarch64: AAVMF (ArmVirtQemu) on virt.
pub const AARCH64: Arch = Arch {
    board: Board::Aarch64,
    target: "aarch64-unknown-uefi",
    firmware: "/usr/share/qemu-efi-aarch64/QEMU_EFI.fd",
    firmware_package: "qemu-efi-aarch64",
    prefix: "aarch64/uefi",
};

/// Both, in the order `test` runs them.
pub const ALL: [Arch; 2] = [X86_64, AARCH64];

/// Blocks of the FAT32 partition (FAT32 needs 65525 clusters).
const PARTITION_BLOCKS: u64 = 70_000;
/// Size of `NEW.BIN`, written by the guest with the pattern of seed 3
/// (the application's `NEW_BYTES`).
const NEW_BYTES: usize = 1 << 20;
/// The files the host puts on the disk: name, length, pattern seed.
const FILES: [(&str, usize, u32); 2] = [("HELLO.TXT", 5000, 1), ("BIG.BIN", 300_000, 2)];

fn crate_dir() -> PathBuf {
    paths::root().join("boards").join("uefi")
}

fn image(arch: Arch, name: &str) -> PathBuf {
    crate_dir()
        .join("target")
        .join(arch.target)
        .join("release")
        .join(format!("{name}.efi"))
}

/// Makes sure the UEFI target, QEMU and the firmware are there (installing
/// the firmware package with apt-get as root, like QEMU).
pub fn ensure(arch: Arch) -> Result<(), String> {
    prereq::ensure(arch.board)?;
    prereq::ensure_target(arch.target)?;
    if Path::new(arch.firmware).exists() {
        return Ok(());
    }
    let install = format!(
        "apt-get update && apt-get install -y {}",
        arch.firmware_package
    );
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root {
        return Err(format!(
            "{} is missing; install it with: sudo sh -c '{install}'",
            arch.firmware
        ));
    }
    eprintln!("xtask: installing the firmware ({install})");
    let ok = Command::new("sh")
        .args(["-c", &install])
        .status()
        .is_ok_and(|s| s.success());
    if ok && Path::new(arch.firmware).exists() {
        Ok(())
    } else {
        Err(format!(
            "installing the firmware failed; run `{install}` by hand"
        ))
    }
}

fn cargo_build(arch: Arch, bin: &str, driver: Option<&Path>) -> Result<(), String> {
    let mut cmd = Command::new(paths::cargo());
    cmd.args([
        "build",
        "--release",
        "--quiet",
        "--target",
        arch.target,
        "--bin",
        bin,
    ])
    .current_dir(crate_dir());
    if let Some(driver) = driver {
        cmd.env("BARE_NVME_UEFI_DRIVER", driver);
    }
    let ok = cmd.status().is_ok_and(|s| s.success());
    if ok {
        Ok(())
    } else {
        Err(format!("building {bin} for {} failed", arch.target))
    }
}

/// Builds the driver image, then the scenario application carrying it;
/// returns the application.
pub fn build(arch: Arch) -> Result<PathBuf, String> {
    cargo_build(arch, "bare-nvme-uefi", None)?;
    let driver = image(arch, "bare-nvme-uefi");
    cargo_build(arch, "uefi-scenarios", Some(&driver))?;
    Ok(image(arch, "uefi-scenarios"))
}

fn disk_path(name: &str) -> PathBuf {
    paths::work().join(name).join("disk0.img")
}

/// The disk of scenario directory `name`, made before the run (kept as
/// made: not zeroed by QEMU's start).
fn disk(name: &str) -> Disk {
    Disk {
        path: disk_path(name),
        size: DISK_BYTES,
        fresh: false,
    }
}

/// A GPT disk with one FAT32 partition holding [`FILES`] and `extra`.
fn make_disk(name: &str, extra: &[(&str, usize, u32)]) -> Result<(), String> {
    let contents: Vec<(&str, Vec<u8>)> = FILES
        .iter()
        .chain(extra)
        .map(|&(name, len, seed)| (name, fsimage::pattern(len, seed)))
        .collect();
    let files: Vec<(&str, &[u8])> = contents.iter().map(|(n, c)| (*n, &c[..])).collect();
    fsimage::create_file(&disk_path(name), DISK_BYTES, PARTITION_BLOCKS, &files).map(|_| ())
}

/// Size of `LARGE.BIN` (pattern seed 4), read by `compare` and `pull` (the
/// application's `LARGE_BYTES`).
const LARGE_BYTES: usize = 8 << 20;
/// `LARGE.BIN`, the file `compare` and `pull` read.
const LARGE: [(&str, usize, u32); 1] = [("LARGE.BIN", LARGE_BYTES, 4)];

// The host steps are plain function pointers: one per disk directory.
fn make_files() -> Result<(), String> {
    make_disk("uefi-files", &[])
}
fn make_exit_boot() -> Result<(), String> {
    make_disk("uefi-exit-boot", &[])
}
fn make_pull() -> Result<(), String> {
    make_disk("uefi-pull", &LARGE)
}
fn make_compare() -> Result<(), String> {
    make_disk("uefi-compare", &LARGE)
}
fn make_files_aarch64() -> Result<(), String> {
    make_disk("aarch64-uefi-files", &[])
}
fn make_compare_aarch64() -> Result<(), String> {
    make_disk("aarch64-uefi-compare", &LARGE)
}
fn make_async() -> Result<(), String> {
    make_disk("uefi-async", &[])
}
fn make_pull_async() -> Result<(), String> {
    make_disk("uefi-pull-async", &[])
}
fn make_async_aarch64() -> Result<(), String> {
    make_disk("aarch64-uefi-async", &[])
}
fn check_async() -> Result<(), String> {
    check_async_blocks("uefi-async")
}
fn check_async_aarch64() -> Result<(), String> {
    check_async_blocks("aarch64-uefi-async")
}
fn check_files() -> Result<(), String> {
    check_new_file("uefi-files")
}
fn check_files_aarch64() -> Result<(), String> {
    check_new_file("aarch64-uefi-files")
}

/// Where `async` writes (the application's `ASYNC_LBA`, past the FAT
/// partition), how much, and the pattern seed.
const ASYNC_OFFSET: u64 = 80_000 * fsimage::BLOCK;
const ASYNC_BYTES: usize = 8 << 20;
const ASYNC_SEED: u32 = 5;

/// After an `async` run: the blocks the BlockIo2 writes covered hold the
/// pattern, on the image itself.
fn check_async_blocks(name: &str) -> Result<(), String> {
    use std::io::{Read, Seek, SeekFrom};
    let path = disk_path(name);
    let mut file = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut data = vec![0u8; ASYNC_BYTES];
    file.seek(SeekFrom::Start(ASYNC_OFFSET))
        .and_then(|_| file.read_exact(&mut data))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let want = fsimage::pattern(ASYNC_BYTES, ASYNC_SEED);
    match data.iter().zip(&want).position(|(a, b)| a != b) {
        Some(at) => Err(format!(
            "byte {at} of the BlockIo2 writes differs on the image"
        )),
        None => Ok(()),
    }
}

/// After a `files` run: the host's own FAT reader finds `NEW.BIN` byte for
/// byte next to the untouched files on the disk of directory `name`.
fn check_new_file(name: &str) -> Result<(), String> {
    let path = disk_path(name);
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
    for (name, len, seed) in FILES.into_iter().chain([("NEW.BIN", NEW_BYTES, 3)]) {
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

/// The board's machine with its firmware, the usual root ports and `nvme0`
/// on the disk of directory `dir`.
fn machine(arch: Arch, dir: &str) -> Machine {
    Machine::standard(disk(dir))
        .on(arch.board)
        .arg("-bios")
        .arg(arch.firmware)
}

/// A scenario of `arch` named `{prefix}/{name}`, its disk in
/// `{prefix}-{name}` (slashes as dashes).
fn scenario(arch: Arch, name: &str, about: &str) -> Scenario {
    let full = format!("{}/{name}", arch.prefix);
    let dir = full.replace('/', "-");
    Scenario::new(
        &full,
        about,
        machine(arch, &dir),
        &format!("scenario={name}"),
    )
}

/// The UEFI scenarios of `arch`. On aarch64 only those that need no x86
/// port I/O (the exit-boot probe and the pull's hand use it).
pub fn scenarios(arch: Arch) -> Vec<Scenario> {
    let files =
        "the firmware's FAT driver on our BlockIo reads the host's files and writes NEW.BIN";
    let compare = "one file and the same blocks read through the firmware's NVMe driver, then ours";
    let asynchronous = "eight 1 MiB BlockIo2 writes, then reads, in flight at once and \
                        completed from the tick; the host checks the blocks";
    let new_bytes = NEW_BYTES.to_string();
    // The namespace's size in 512-byte blocks, as DiskInfo's Identify says.
    let disk_blocks = (DISK_BYTES / fsimage::BLOCK).to_string();
    if arch == AARCH64 {
        return vec![
            scenario(arch, "files", files)
                .before(make_files_aarch64)
                .after(check_files_aarch64)
                .expect("new_bytes", &new_bytes)
                .expect("driver_name", "bare-nvme")
                .expect("disk_info_blocks", &disk_blocks)
                .expect("dma_buffers_held", "0"),
            scenario(arch, "compare", compare)
                .before(make_compare_aarch64)
                .expect("same_bytes", "1"),
            scenario(arch, "async", asynchronous)
                .before(make_async_aarch64)
                .after(check_async_aarch64)
                .expect("async_ok", "1")
                .expect("dma_buffers_held", "0"),
        ];
    }
    vec![
        scenario(arch, "files", files)
            .before(make_files)
            .after(check_files)
            .expect("new_bytes", &new_bytes)
            .expect("driver_name", "bare-nvme")
            .expect("disk_info_blocks", &disk_blocks)
            .expect("dma_buffers_held", "0"),
        scenario(
            arch,
            "exit-boot",
            "after ExitBootServices the controller is shut down, disabled, bus mastering off",
        )
        .before(make_exit_boot)
        .expect("cc_en", "0")
        .expect("bus_master", "0")
        .expect("ebs_shutdown_status", "2"),
        scenario(arch, "compare", compare)
            .before(make_compare)
            .expect("same_bytes", "1"),
        scenario(arch, "async", asynchronous)
            .before(make_async)
            .after(check_async)
            .expect("async_ok", "1")
            .expect("dma_buffers_held", "0"),
        scenario(
            arch,
            "pull",
            "the controller vanishes while the firmware's FAT driver reads a file: the error \
             reaches the caller, then NO_MEDIA, disconnect frees everything",
        )
        .before(make_pull)
        .expect("after_status", "NO_MEDIA")
        .expect("disconnected", "1")
        .expect("fs_gone", "1")
        .expect("dma_buffers_held", "0"),
        scenario(
            arch,
            "pull-async",
            "the controller vanishes with eight BlockIo2 reads outstanding: every token \
             completes, later calls say NO_MEDIA, disconnect frees everything",
        )
        .before(make_pull_async)
        .expect("tokens_completed", "8")
        .expect("after_status", "NO_MEDIA")
        .expect("disconnected", "1")
        .expect("dma_buffers_held", "0"),
    ]
}

/// The board crate's own format and lint checks (the driver's workspace
/// excludes `boards/`), for both targets: (stage name, cargo arguments).
const CHECKS: [(&str, &[&str]); 3] = [
    ("fmt board uefi", &["fmt", "--", "--check"]),
    (
        "clippy board uefi x86_64",
        &[
            "clippy",
            "--release",
            "--quiet",
            "--target",
            "x86_64-unknown-uefi",
            "--",
            "-D",
            "warnings",
        ],
    ),
    (
        "clippy board uefi aarch64",
        &[
            "clippy",
            "--release",
            "--quiet",
            "--target",
            "aarch64-unknown-uefi",
            "--",
            "-D",
            "warnings",
        ],
    ),
];

fn line(ok: bool, name: &str, start: Instant) {
    let verdict = if ok { "ok  " } else { "FAIL" };
    println!(
        "{verdict} {name:<24} {:.3} s",
        start.elapsed().as_secs_f64()
    );
}

/// Runs [`CHECKS`], one line each; returns (passed, failed).
fn checks() -> (usize, usize) {
    let (mut passed, mut failed) = (0, 0);
    let targets = ALL.iter().try_for_each(|a| prereq::ensure_target(a.target));
    if let Err(e) = targets {
        println!("FAIL uefi targets: {e}");
        return (0, CHECKS.len());
    }
    for (name, args) in CHECKS {
        let start = Instant::now();
        let ok = Command::new(paths::cargo())
            .args(args)
            .current_dir(crate_dir())
            .status()
            .is_ok_and(|s| s.success());
        line(ok, name, start);
        if ok {
            passed += 1;
        } else {
            failed += 1;
        }
    }
    (passed, failed)
}

/// Builds the images and runs the scenarios of `arches` whose names contain
/// one of `filters` (all without filters), printing one line each (and the
/// serial tail of a failure), after the crate's format and lint checks when
/// `host_checks`. Returns (passed, failed).
/// Returns how many checks and scenarios passed and failed, and the
/// scenarios run a second time for QEMU's reasons (with the reasons).
pub fn test(
    arches: &[Arch],
    filters: &[&String],
    host_checks: bool,
    echo: bool,
) -> (usize, usize, Vec<String>) {
    let mut reruns = Vec::new();
    let planned: Vec<(Arch, Vec<Scenario>)> = arches
        .iter()
        .map(|&arch| {
            let chosen = scenarios(arch)
                .into_iter()
                .filter(|s| {
                    filters.is_empty() || filters.iter().any(|f| s.name.contains(f.as_str()))
                })
                .collect();
            (arch, chosen)
        })
        .filter(|(_, s): &(Arch, Vec<Scenario>)| !s.is_empty())
        .collect();
    if planned.is_empty() {
        return (0, 0, reruns);
    }
    let (mut passed, mut failed) = if host_checks { checks() } else { (0, 0) };
    for (arch, chosen) in planned {
        let start = Instant::now();
        let app = ensure(arch).and_then(|()| build(arch));
        line(
            app.is_ok(),
            &format!("build uefi {}", arch.board.name()),
            start,
        );
        let app = match app {
            Ok(app) => app,
            Err(e) => {
                println!("     {e}; {} UEFI scenarios not run", chosen.len());
                failed += chosen.len() + 1;
                continue;
            }
        };
        passed += 1;
        for s in &chosen {
            let mut report = scenario::run(s, &app, echo, &[]);
            if let Some(why) = report.qemu_fault.clone() {
                // QEMU itself failed (a crash, QMP silent), not the driver:
                // one more run, said aloud and counted.
                println!("note qemu {:<26} {why}; running it once more", report.name);
                reruns.push(format!("{} ({why})", report.name));
                report = scenario::run(s, &app, echo, &[]);
            }
            let verdict = if report.passed() { "ok  " } else { "FAIL" };
            println!(
                "{verdict} qemu {:<26} {:.1} s",
                report.name,
                report.wall.as_secs_f64()
            );
            if let Some(why) = &report.failure {
                println!("     {why}");
                print!("{}", report.tail(40));
                failed += 1;
            } else {
                passed += 1;
            }
        }
    }
    (passed, failed, reruns)
}

/// The architectures of `boards` (as `test --board` picks them).
pub fn arches_for(boards: &[Board]) -> Vec<Arch> {
    ALL.into_iter()
        .filter(|a| boards.contains(&a.board))
        .collect()
}

/// `cargo xtask uefi [--board B] [--echo] [--qemu-only] [NAME ...]`.
pub fn main(args: &[String]) -> Result<(), String> {
    let (board, args) = Board::take_option(args)?;
    let arches = arches_for(&board.map_or(Board::ALL.to_vec(), |b| vec![b]));
    let echo = args.iter().any(|a| a == "--echo");
    let qemu_only = args.iter().any(|a| a == "--qemu-only");
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    for &arch in &arches {
        ensure(arch)?;
    }
    let (passed, failed, reruns) = test(&arches, &filters, !qemu_only, echo);
    for rerun in reruns {
        println!("QEMU's: rerun {rerun}");
    }
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        Ok(())
    } else {
        Err(String::new())
    }
}
