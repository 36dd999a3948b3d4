//! `cargo xtask test [--qemu-only] [NAME ...]`: everything CI checks.
//!
//! Host stages (format, lints, host tests, all with the adapter features;
//! the library with them built for x86_64-unknown-none, aarch64 and riscv64;
//! Miri, a short fuzz run, the kernel build) and then every
//! QEMU scenario of the catalog (or those whose names contain one of the
//! NAMEs), each within its time limit. One line per stage and scenario; the
//! last line is `N passed, M failed`; the exit code is non-zero on any failure.

use std::process::Command;
use std::time::Instant;

use crate::commands::run::timing;
use crate::{catalog, kernel, paths, prereq, scenario};

/// Serial lines shown for a failed scenario.
const TAIL_LINES: usize = 40;

struct Tally {
    passed: usize,
    failed: usize,
}

impl Tally {
    fn record(&mut self, ok: bool) {
        if ok {
            self.passed += 1;
        } else {
            self.failed += 1;
        }
    }
}

/// A host stage: a cargo command in the repository or the board crate.
struct Stage {
    name: &'static str,
    args: &'static [&'static str],
    in_board: bool,
}

const STAGES: &[Stage] = &[
    Stage {
        name: "fmt",
        args: &["fmt", "--all", "--", "--check"],
        in_board: false,
    },
    Stage {
        name: "fmt board",
        args: &["fmt", "--", "--check"],
        in_board: true,
    },
    Stage {
        name: "clippy",
        args: &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ],
        in_board: false,
    },
    Stage {
        name: "clippy board",
        args: &["clippy", "--release", "--", "-D", "warnings"],
        in_board: true,
    },
    Stage {
        name: "test",
        args: &["test", "--workspace", "--all-features"],
        in_board: false,
    },
];

/// The bare-metal targets the library builds for with every adapter feature
/// (stage name, target): no_std and allocation-free everywhere; on aarch64
/// and riscv64 its DMA barriers are inline assembly, checked only when built
/// for them.
const OTHER_TARGETS: &[(&str, &str)] = &[
    ("build x86_64-none", "x86_64-unknown-none"),
    ("build aarch64", "aarch64-unknown-none"),
    ("build riscv64", "riscv64gc-unknown-none-elf"),
];

/// Runs the checks.
pub fn main(args: &[String]) -> Result<(), String> {
    let qemu_only = args.iter().any(|a| a == "--qemu-only");
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let mut tally = Tally {
        passed: 0,
        failed: 0,
    };
    if !qemu_only {
        for stage in STAGES {
            let start = Instant::now();
            let dir = if stage.in_board {
                paths::board()
            } else {
                paths::root()
            };
            let ok = Command::new(paths::cargo())
                .args(stage.args)
                .current_dir(dir)
                .status()
                .is_ok_and(|s| s.success());
            report_stage(stage.name, ok, start);
            tally.record(ok);
        }
        for &(name, target) in OTHER_TARGETS {
            let start = Instant::now();
            let result = prereq::ensure_target(target).and_then(|()| build_lib_for(target));
            if let Err(e) = &result {
                println!("     {e}");
            }
            report_stage(name, result.is_ok(), start);
            tally.record(result.is_ok());
        }
        for (name, check) in crate::commands::fuzz::STAGES {
            let start = Instant::now();
            let result = check();
            if let Err(e) = &result {
                println!("     {e}");
            }
            report_stage(name, result.is_ok(), start);
            tally.record(result.is_ok());
        }
    }

    let scenarios: Vec<_> = catalog::all()
        .into_iter()
        .filter(|s| filters.is_empty() || filters.iter().any(|f| s.name.contains(f.as_str())))
        .collect();
    let start = Instant::now();
    let kernel = prereq::ensure().and_then(|()| kernel::build());
    report_stage("build kernel", kernel.is_ok(), start);
    tally.record(kernel.is_ok());
    match kernel {
        Err(e) => {
            println!("     {e}; {} QEMU scenarios not run", scenarios.len());
            tally.failed += scenarios.len();
        }
        Ok(kernel) => {
            for s in &scenarios {
                let mut report = scenario::run(s, &kernel, false, &[]);
                if report.qemu_crashed {
                    // QEMU 7.2 occasionally crashes while it deletes a device
                    // that has requests in flight; one retry, said aloud.
                    println!(
                        "note qemu {:<14} {}; retrying once",
                        report.name,
                        report.failure.as_deref().unwrap_or("QEMU crashed")
                    );
                    report = scenario::run(s, &kernel, false, &[]);
                }
                let verdict = if report.passed() { "ok  " } else { "FAIL" };
                println!("{verdict} qemu {:<14} {}", report.name, timing(&report));
                if let Some(why) = &report.failure {
                    println!("     {why}");
                    print!("{}", report.tail(TAIL_LINES));
                }
                tally.record(report.passed());
            }
        }
    }
    println!("{} passed, {} failed", tally.passed, tally.failed);
    if tally.failed == 0 {
        Ok(())
    } else {
        Err(String::new())
    }
}

/// Builds the driver library (not the tests or tools) for `target`.
fn build_lib_for(target: &str) -> Result<(), String> {
    let ok = Command::new(paths::cargo())
        .args(["build", "--lib", "--all-features", "--target", target])
        .current_dir(paths::root())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        Ok(())
    } else {
        Err(format!("the library does not build for {target}"))
    }
}

fn report_stage(name: &str, ok: bool, start: Instant) {
    let verdict = if ok { "ok  " } else { "FAIL" };
    println!(
        "{verdict} {name:<19} {:.3} s",
        start.elapsed().as_secs_f64()
    );
}
