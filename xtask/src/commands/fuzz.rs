//! `cargo xtask fuzz [--ci] [--seconds N]` and `cargo xtask miri`: the checks
//! that need the nightly toolchain.
//!
//! The fuzz target (`fuzz/`, cargo-fuzz) lets the fuzzer control everything
//! the device says while the driver brings a controller up and serves I/O;
//! `--ci` is the short run `cargo xtask test` does. Miri runs the driver's
//! unit tests, the simulated-device durability test and the duplicate-completion
//! tests, which between them cover the unsafe layer: shared DMA memory (rings
//! pushed, published and popped across the phase wrap, shadow doorbell and
//! EventIdx slots, PRP lists, identify copies, all against a device side that
//! writes through raw pointers), `MmioRegisters` over a heap array, ECAM.
//! Both install what they lack (cargo-fuzz from crates.io, the miri component
//! with rustup); the nightly toolchain itself must be there.

use std::process::{Command, Stdio};
use std::time::Instant;

use crate::paths;

/// The toolchain both checks run on.
const NIGHTLY: &str = "nightly";
/// The fuzz target.
const TARGET: &str = "device";
/// Length of the run in CI and by default.
const CI_SECONDS: u64 = 45;
const DEFAULT_SECONDS: u64 = 600;
/// No AddressSanitizer: the driver's unsafe code only touches DMA memory,
/// which the simulated machine carves from one arena that ASan cannot see
/// into, and the run is about three times as fast without it.
const SANITIZER: &str = "none";
/// Longest input the fuzzer tries (configuration, script and device lies).
const MAX_LEN: &str = "-max_len=2048";
/// Tests too slow under Miri for what they add there: a scan of a 2 MiB
/// ECAM window (the accessor's unsafe code is covered by the other
/// `pci::access` test; the config accessors' by the `pci_config` tests).
const MIRI_SKIP: &[&str] = &["ecam_reads_and_writes_the_dword_of_bus_device_function_offset"];

/// A check: `Err` says what failed.
type Check = fn() -> Result<(), String>;

/// The stages `cargo xtask test` adds: name and check.
pub const STAGES: &[(&str, Check)] = &[("miri", miri), ("fuzz", ci_fuzz)];

/// `cargo xtask fuzz`.
pub fn main(args: &[String]) -> Result<(), String> {
    let mut seconds = DEFAULT_SECONDS;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--ci" => seconds = CI_SECONDS,
            "--seconds" => {
                seconds = it
                    .next()
                    .and_then(|s| s.parse().ok())
                    .ok_or("--seconds takes a number")?;
            }
            other => return Err(format!("fuzz: unknown argument {other}")),
        }
    }
    fuzz(seconds)
}

/// `cargo xtask miri`.
pub fn miri_main(args: &[String]) -> Result<(), String> {
    if let Some(arg) = args.first() {
        return Err(format!("miri takes no arguments (got {arg})"));
    }
    miri()
}

fn ci_fuzz() -> Result<(), String> {
    fuzz(CI_SECONDS)
}

/// A `cargo +nightly` command in `dir`, free of the toolchain choice of the
/// cargo that runs xtask.
fn nightly_cargo(dir: &std::path::Path) -> Command {
    let mut c = Command::new("cargo");
    c.arg(format!("+{NIGHTLY}"))
        .current_dir(dir)
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .env_remove("RUSTC_WRAPPER");
    c
}

fn run(mut c: Command, what: &str) -> Result<(), String> {
    let status = c.status().map_err(|e| format!("cannot run {what}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status})"))
    }
}

fn quiet_ok(c: &mut Command) -> bool {
    c.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn ensure_nightly() -> Result<(), String> {
    if quiet_ok(
        Command::new("rustc")
            .arg(format!("+{NIGHTLY}"))
            .arg("--version"),
    ) {
        return Ok(());
    }
    eprintln!("xtask: installing the {NIGHTLY} toolchain");
    let mut c = Command::new("rustup");
    c.args(["toolchain", "install", NIGHTLY, "--profile", "minimal"]);
    run(c, "rustup toolchain install nightly")
}

fn ensure_cargo_fuzz() -> Result<(), String> {
    ensure_nightly()?;
    if quiet_ok(nightly_cargo(&paths::root()).args(["fuzz", "--version"])) {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-fuzz");
    let mut c = Command::new("cargo");
    c.args(["install", "cargo-fuzz", "--locked"])
        .env_remove("RUSTUP_TOOLCHAIN");
    run(c, "cargo install cargo-fuzz")
}

fn ensure_miri() -> Result<(), String> {
    ensure_nightly()?;
    let listed = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", NIGHTLY])
        .output()
        .map_err(|e| format!("cannot run rustup: {e}"))?;
    let installed = String::from_utf8_lossy(&listed.stdout);
    if !installed.lines().any(|l| l.starts_with("miri")) {
        eprintln!("xtask: installing miri");
        let mut c = Command::new("rustup");
        c.args([
            "component",
            "add",
            "miri",
            "rust-src",
            "--toolchain",
            NIGHTLY,
        ]);
        run(c, "rustup component add miri")?;
    }
    let mut setup = nightly_cargo(&paths::root());
    setup.args(["miri", "setup"]);
    run(setup, "cargo miri setup")
}

/// Runs the fuzz target for `seconds`; fails on any crash, and says how
/// many inputs ran.
pub(crate) fn fuzz(seconds: u64) -> Result<(), String> {
    ensure_cargo_fuzz()?;
    let dir = paths::root().join("fuzz");
    // libFuzzer wants the working corpus to exist; a fresh clone has none.
    std::fs::create_dir_all(dir.join("corpus").join(TARGET))
        .map_err(|e| format!("cannot create the fuzz corpus directory: {e}"))?;
    let start = Instant::now();
    let output = nightly_cargo(&dir)
        // New inputs go to the (ignored) working corpus; `seeds/` holds
        // inputs that once broke an invariant, replayed first on every run.
        .args(["fuzz", "run", "--sanitizer", SANITIZER])
        // Comparison tracing took half of every execution; the input picks
        // behaviour through masks and small ranges, which plain coverage
        // mutation reaches without it.
        .arg("--no-trace-compares")
        .arg(TARGET)
        .arg(format!("corpus/{TARGET}"))
        .args(["seeds", "--"])
        .arg(format!("-max_total_time={seconds}"))
        .args([MAX_LEN, "-len_control=0", "-print_final_stats=1"])
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot run cargo fuzz: {e}"))?;
    let log = String::from_utf8_lossy(&output.stderr);
    let executions = log
        .lines()
        .find_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
        .map(str::trim)
        .unwrap_or("?");
    if output.status.success() {
        println!(
            "     fuzz {TARGET}: {executions} executions in {:.0} s, no crash",
            start.elapsed().as_secs_f64()
        );
        Ok(())
    } else {
        // The crash report: the panic, the input's path, how to reproduce.
        let tail: Vec<&str> = log.lines().rev().take(60).collect();
        for line in tail.into_iter().rev() {
            eprintln!("{line}");
        }
        Err(format!(
            "fuzz {TARGET} found a crash after {executions} executions (input in fuzz/artifacts/{TARGET}/)"
        ))
    }
}

/// Runs the driver's unit tests, the durability test, the configuration access
/// tests and the duplicate-completion tests under Miri (the tests that wait
/// out deadlines take minutes there).
fn miri() -> Result<(), String> {
    ensure_miri()?;
    let target_dir = paths::root().join("target").join("miri");
    let mut c = nightly_cargo(&paths::root());
    c.args([
        "miri",
        "test",
        "-p",
        "bare-nvme",
        "--lib",
        "--test",
        "durability",
        "--test",
        "pci_config",
        "--",
    ])
    .env("CARGO_TARGET_DIR", &target_dir);
    for skip in MIRI_SKIP {
        c.args(["--skip", skip]);
    }
    run(c, "cargo miri test")?;
    let mut c = nightly_cargo(&paths::root());
    c.args([
        "miri",
        "test",
        "-p",
        "bare-nvme",
        "--test",
        "misbehaviour_completions",
        "--",
        "duplicate",
    ])
    .env("CARGO_TARGET_DIR", &target_dir);
    run(c, "cargo miri test (completions)")?;
    // Queue handles on two threads while the main thread runs the monitor:
    // the gate, the queue locks and the shared simulation under Miri's
    // data-race detector.
    let mut c = nightly_cargo(&paths::root());
    c.args(["miri", "test", "-p", "bare-nvme", "--test", "shared_queues"])
        .env("CARGO_TARGET_DIR", &target_dir);
    run(c, "cargo miri test (shared queues)")
}
