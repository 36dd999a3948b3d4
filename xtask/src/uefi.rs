//! The UEFI board (`boards/uefi`): bare-nvme as a UEFI driver under OVMF.
//!
//! Its scenarios boot OVMF with the scenario application as QEMU's
//! `-kernel` (OVMF starts a PE image given that way, with `-append` as its
//! load options); the application carries the driver image, loads it, hands
//! it the NVMe controllers and reports on the serial port with the same
//! marker lines as the bare-metal boards, so [`scenario::run`] runs them.
//! `cargo xtask uefi [NAME ...]` runs them alone; `cargo xtask test` runs
//! them after the bare-metal boards.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::catalog::DISK_BYTES;
use crate::machine::{Disk, Machine};
use crate::scenario::{self, Scenario};
use crate::{fsimage, paths, prereq};

/// The Rust target of the x86_64 UEFI images.
const TARGET: &str = "x86_64-unknown-uefi";
/// OVMF as Debian's `ovmf` package installs it (code and variables in one
/// image, so no writable variable store is needed).
const OVMF: &str = "/usr/share/ovmf/OVMF.fd";
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

fn image(name: &str) -> PathBuf {
    crate_dir()
        .join("target")
        .join(TARGET)
        .join("release")
        .join(format!("{name}.efi"))
}

/// Makes sure the UEFI target and OVMF are there (installing OVMF with
/// apt-get as root, like QEMU).
pub fn ensure() -> Result<(), String> {
    prereq::ensure_target(TARGET)?;
    if Path::new(OVMF).exists() {
        return Ok(());
    }
    let install = "apt-get update && apt-get install -y ovmf";
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root {
        return Err(format!(
            "OVMF is missing; install it with: sudo sh -c '{install}'"
        ));
    }
    eprintln!("xtask: installing OVMF ({install})");
    let ok = Command::new("sh")
        .args(["-c", install])
        .status()
        .is_ok_and(|s| s.success());
    if ok && Path::new(OVMF).exists() {
        Ok(())
    } else {
        Err(format!("installing OVMF failed; run `{install}` by hand"))
    }
}

fn cargo_build(bin: &str, driver: Option<&Path>) -> Result<(), String> {
    let mut cmd = Command::new(paths::cargo());
    cmd.args([
        "build",
        "--release",
        "--quiet",
        "--target",
        TARGET,
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
        Err(format!("building {bin} for {TARGET} failed"))
    }
}

/// Builds the driver image, then the scenario application carrying it;
/// returns the application.
pub fn build() -> Result<PathBuf, String> {
    cargo_build("bare-nvme-uefi", None)?;
    let driver = image("bare-nvme-uefi");
    cargo_build("uefi-scenarios", Some(&driver))?;
    Ok(image("uefi-scenarios"))
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

/// Size of `LARGE.BIN` (pattern seed 4), read by `uefi/compare` (the
/// application's `LARGE_BYTES`).
const LARGE_BYTES: usize = 8 << 20;

/// A GPT disk with one FAT32 partition holding [`FILES`] and `extra`.
fn make_disk(name: &str, extra: &[(&str, usize, u32)]) -> Result<(), String> {
    let path = disk_path(name);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    file.set_len(DISK_BYTES).map_err(|e| e.to_string())?;
    let contents: Vec<(&str, Vec<u8>)> = FILES
        .iter()
        .chain(extra)
        .map(|&(name, len, seed)| (name, fsimage::pattern(len, seed)))
        .collect();
    let files: Vec<(&str, &[u8])> = contents.iter().map(|(n, c)| (*n, &c[..])).collect();
    fsimage::create(&mut file, DISK_BYTES, PARTITION_BLOCKS, &files)
        .map(|_| ())
        .map_err(|e| format!("making the filesystem: {e}"))
}

fn make_files() -> Result<(), String> {
    make_disk("uefi-files", &[])
}

fn make_exit_boot() -> Result<(), String> {
    make_disk("uefi-exit-boot", &[])
}

fn make_pull() -> Result<(), String> {
    make_disk("uefi-pull", &[("LARGE.BIN", LARGE_BYTES, 4)])
}

fn make_compare() -> Result<(), String> {
    make_disk("uefi-compare", &[("LARGE.BIN", LARGE_BYTES, 4)])
}

/// After `uefi/files`: the host's own FAT reader finds `NEW.BIN` byte for
/// byte next to the untouched files.
fn check_files() -> Result<(), String> {
    let path = disk_path("uefi-files");
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

/// q35 with OVMF, the usual root ports and `nvme0` on `disk`.
fn machine(disk: Disk) -> Machine {
    Machine::standard(disk).arg("-bios").arg(OVMF)
}

/// The UEFI scenarios.
pub fn all() -> Vec<Scenario> {
    vec![
        Scenario::new(
            "uefi/files",
            "the firmware's FAT driver on our BlockIo reads the host's files and writes NEW.BIN",
            machine(disk("uefi-files")),
            "scenario=files",
        )
        .before(make_files)
        .after(check_files)
        .expect("new_bytes", &NEW_BYTES.to_string()),
        Scenario::new(
            "uefi/exit-boot",
            "after ExitBootServices the controller is shut down, disabled, bus mastering off",
            machine(disk("uefi-exit-boot")),
            "scenario=exit-boot",
        )
        .before(make_exit_boot)
        .expect("cc_en", "0")
        .expect("bus_master", "0")
        .expect("ebs_shutdown_status", "2"),
        Scenario::new(
            "uefi/compare",
            "one file and the same blocks read through the firmware's NVMe driver, then ours",
            machine(disk("uefi-compare")),
            "scenario=compare",
        )
        .before(make_compare)
        .expect("same_bytes", "1"),
        Scenario::new(
            "uefi/pull",
            "the controller vanishes while the firmware's FAT driver reads a file: the error reaches the caller, then NO_MEDIA, disconnect frees everything",
            machine(disk("uefi-pull")),
            "scenario=pull",
        )
        .before(make_pull)
        .expect("after_status", "NO_MEDIA")
        .expect("disconnected", "1")
        .expect("fs_gone", "1")
        .expect("dma_buffers_held", "0"),
    ]
}

/// The board crate's own format and lint checks (the driver's workspace
/// excludes `boards/`): (stage name, cargo arguments).
const CHECKS: [(&str, &[&str]); 2] = [
    ("fmt board uefi", &["fmt", "--", "--check"]),
    (
        "clippy board uefi",
        &[
            "clippy",
            "--release",
            "--quiet",
            "--target",
            TARGET,
            "--",
            "-D",
            "warnings",
        ],
    ),
];

/// Runs [`CHECKS`], one line each; returns (passed, failed).
fn checks() -> (usize, usize) {
    let (mut passed, mut failed) = (0, 0);
    for (name, args) in CHECKS {
        let start = Instant::now();
        let ok = Command::new(paths::cargo())
            .args(args)
            .current_dir(crate_dir())
            .status()
            .is_ok_and(|s| s.success());
        let verdict = if ok { "ok  " } else { "FAIL" };
        println!(
            "{verdict} {name:<24} {:.3} s",
            start.elapsed().as_secs_f64()
        );
        if ok {
            passed += 1;
        } else {
            failed += 1;
        }
    }
    (passed, failed)
}

/// Builds the images and runs the scenarios whose names contain one of
/// `filters` (all without filters), printing one line each (and the
/// serial tail of a failure), after the crate's format and lint checks
/// when `host_checks`. Returns (passed, failed).
pub fn test(filters: &[&String], host_checks: bool, echo: bool) -> (usize, usize) {
    let planned: Vec<Scenario> = all()
        .into_iter()
        .filter(|s| filters.is_empty() || filters.iter().any(|f| s.name.contains(f.as_str())))
        .collect();
    if planned.is_empty() {
        return (0, 0);
    }
    let (mut passed, mut failed) = if host_checks { checks() } else { (0, 0) };
    let start = Instant::now();
    let app = ensure().and_then(|()| build());
    let verdict = if app.is_ok() { "ok  " } else { "FAIL" };
    println!(
        "{verdict} {:<24} {:.3} s",
        "build uefi x86_64",
        start.elapsed().as_secs_f64()
    );
    let app = match app {
        Ok(app) => app,
        Err(e) => {
            println!("     {e}; {} UEFI scenarios not run", planned.len());
            return (passed, failed + planned.len() + 1);
        }
    };
    passed += 1;
    for s in &planned {
        let mut report = scenario::run(s, &app, echo, &[]);
        if report.qemu_crashed {
            // QEMU 7.2 occasionally crashes while it deletes a device that
            // has requests in flight (as `test` says for the other boards);
            // one retry, said aloud.
            println!(
                "note qemu {:<26} {}; retrying once",
                report.name,
                report.failure.as_deref().unwrap_or("QEMU crashed")
            );
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
    (passed, failed)
}

/// `cargo xtask uefi [--echo] [--qemu-only] [NAME ...]`.
pub fn main(args: &[String]) -> Result<(), String> {
    let echo = args.iter().any(|a| a == "--echo");
    let qemu_only = args.iter().any(|a| a == "--qemu-only");
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let (passed, failed) = test(&filters, !qemu_only, echo);
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        Ok(())
    } else {
        Err(String::new())
    }
}
