//! `cargo xtask soak [--ci] [--cases N] [--seeds K] [--seconds S]`: the
//! long runs that found the last defects, on demand. The model test runs N
//! cases (default 20,000) for each of K seeds (default 10: 1 to K), built
//! in release; then the fuzzer runs for S seconds (default 600). `--ci` is
//! the short run `cargo xtask test` does: 300 cases for 2 seeds on the
//! debug build the host tests already made, no fuzzing (the fuzz stage has
//! its own short run).

use std::process::Command;
use std::time::Instant;

use crate::paths;

const CASES: u32 = 20_000;
const SEEDS: u64 = 10;
const SECONDS: u64 = 600;
const CI_CASES: u32 = 300;
const CI_SEEDS: u64 = 2;

/// A check: `Err` says what failed.
type Check = fn() -> Result<(), String>;

/// The stage `cargo xtask test` adds: name and check.
pub const STAGES: &[(&str, Check)] = &[("soak", ci_soak)];

/// What one soak runs.
struct Soak {
    cases: u32,
    seeds: u64,
    /// Fuzzing time; 0: none.
    seconds: u64,
    /// Release build (long runs) or the tests' debug build.
    release: bool,
}

/// The short run.
const CI: Soak = Soak {
    cases: CI_CASES,
    seeds: CI_SEEDS,
    seconds: 0,
    release: false,
};

/// `cargo xtask soak`.
pub fn main(args: &[String]) -> Result<(), String> {
    let mut soak = Soak {
        cases: CASES,
        seeds: SEEDS,
        seconds: SECONDS,
        release: true,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut number = |name: &str| {
            it.next()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or(format!("{name} takes a number"))
        };
        match arg.as_str() {
            "--ci" => soak = CI,
            "--cases" => {
                soak.cases = u32::try_from(number("--cases")?).map_err(|e| e.to_string())?
            }
            "--seeds" => soak.seeds = number("--seeds")?,
            "--seconds" => soak.seconds = number("--seconds")?,
            other => return Err(format!("soak: unknown argument {other}")),
        }
    }
    run(&soak)
}

fn ci_soak() -> Result<(), String> {
    run(&CI)
}

fn run(soak: &Soak) -> Result<(), String> {
    let all = Instant::now();
    for seed in 1..=soak.seeds {
        let start = Instant::now();
        let mut cargo = Command::new(paths::cargo());
        cargo.arg("test");
        if soak.release {
            cargo.arg("--release");
        }
        let status = cargo
            .args(["--all-features", "--test", "model"])
            .env("MODEL_CASES", soak.cases.to_string())
            .env("MODEL_SEED", seed.to_string())
            .current_dir(paths::root())
            .status()
            .map_err(|e| format!("cannot run the model test: {e}"))?;
        if !status.success() {
            return Err(format!(
                "model test failed with MODEL_SEED={seed} MODEL_CASES={} (rerun with those)",
                soak.cases
            ));
        }
        println!(
            "     model seed {seed}: {} cases in {:.0} s, no failure",
            soak.cases,
            start.elapsed().as_secs_f64()
        );
    }
    if soak.seconds > 0 {
        crate::commands::fuzz::fuzz(soak.seconds)?;
    }
    println!(
        "     soak: {} seeds x {} model cases, {} s of fuzzing, in {:.0} s",
        soak.seeds,
        soak.cases,
        soak.seconds,
        all.elapsed().as_secs_f64()
    );
    Ok(())
}
