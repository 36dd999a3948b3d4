//! `cargo xtask test [--qemu-only] [--cpus=N] [NAME ...]`: everything CI checks.
//!
//! Host stages (the layering check, format, lints, host tests, all with the
//! adapter features;
//! the library with them built for x86_64-unknown-none, aarch64 and riscv64;
//! Miri, a short fuzz run, the kernel build) and then every
//! QEMU scenario of the catalog (or those whose names contain one of the
//! NAMEs), each within its time limit. One line per stage and scenario; the
//! last line is `N passed, M failed`; the exit code is non-zero on any failure.
//! `--cpus=N` boots every scenario with N processors (multi-threaded TCG)
//! instead of what the catalog gives it.

use std::process::Command;
use std::time::Instant;

use crate::board::Board;
use crate::catalog::Planned;
use crate::commands::run::timing;
use crate::{catalog, kernel, paths, prereq, scenario};

/// Serial lines shown for a failed scenario.
const TAIL_LINES: usize = 40;
/// Serial lines repeated in the recap at the end.
const RECAP_LINES: usize = 12;

struct Tally {
    passed: usize,
    failed: usize,
    /// Each failed scenario's reason and its last serial lines, repeated at
    /// the end so that a log cut in the middle still shows them.
    recaps: Vec<String>,
    /// Scenarios run a second time because the first run failed for
    /// QEMU's reasons, with those reasons.
    reruns: Vec<String>,
    /// Runs in which QEMU never freed a pulled device.
    unfreed: usize,
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

/// A host stage: a cargo command in the repository or a board crate.
struct Stage {
    name: &'static str,
    args: &'static [&'static str],
    board: Option<Board>,
}

const STAGES: &[Stage] = &[
    Stage {
        name: "fmt",
        args: &["fmt", "--all", "--", "--check"],
        board: None,
    },
    Stage {
        name: "fmt board x86_64",
        args: &["fmt", "--", "--check"],
        board: Some(Board::X86_64),
    },
    Stage {
        name: "fmt board aarch64",
        args: &["fmt", "--", "--check"],
        board: Some(Board::Aarch64),
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
        board: None,
    },
    Stage {
        name: "clippy board x86_64",
        args: &["clippy", "--release", "--", "-D", "warnings"],
        board: Some(Board::X86_64),
    },
    Stage {
        name: "clippy board aarch64",
        args: &["clippy", "--release", "--", "-D", "warnings"],
        board: Some(Board::Aarch64),
    },
    Stage {
        name: "test",
        args: &["test", "--workspace", "--all-features"],
        board: None,
    },
    Stage {
        name: "doc",
        args: &["rustdoc", "--lib", "--", "-D", "warnings"],
        board: None,
    },
    Stage {
        name: "publish dry run",
        args: &["publish", "--dry-run", "-p", "bare-nvme", "--allow-dirty"],
        board: None,
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
    let (board, args) = Board::take_option(args)?;
    let args = &args[..];
    let boards = board.map_or(Board::ALL.to_vec(), |b| vec![b]);
    let qemu_only = args.iter().any(|a| a == "--qemu-only");
    let cpus = match args.iter().find_map(|a| a.strip_prefix("--cpus=")) {
        Some(n) => Some(
            n.parse::<u32>()
                .map_err(|_| format!("--cpus={n}: not a number"))?,
        ),
        None => None,
    };
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let mut tally = Tally {
        passed: 0,
        failed: 0,
        recaps: Vec::new(),
        reruns: Vec::new(),
        unfreed: 0,
    };
    // Everything later steps need, before the first of them runs.
    let start = Instant::now();
    let mut targets: Vec<&str> = OTHER_TARGETS.iter().map(|&(_, t)| t).collect();
    if qemu_only {
        targets.clear();
    }
    let prerequisites = prereq::ensure_for_test(&boards, &targets).and_then(|()| {
        crate::uefi::arches_for(&boards)
            .into_iter()
            .try_for_each(crate::uefi::ensure)
    });
    if let Err(e) = &prerequisites {
        println!("     {e}");
    }
    report_stage("prerequisites", prerequisites.is_ok(), start);
    tally.record(prerequisites.is_ok());
    if !qemu_only {
        let start = Instant::now();
        let layers = crate::layers::check(&paths::root());
        if let Err(e) = &layers {
            println!("     {}", e.replace('\n', "\n     "));
        }
        report_stage("layers", layers.is_ok(), start);
        tally.record(layers.is_ok());
        // The declared MSRV holds for every dependency's declared one.
        let start = Instant::now();
        let msrv = crate::msrv::check(&paths::root());
        if let Err(e) = &msrv {
            println!("     {}", e.replace('\n', "\n     "));
        }
        report_stage("msrv", msrv.is_ok(), start);
        tally.record(msrv.is_ok());
        for stage in STAGES {
            let start = Instant::now();
            if stage.board.is_some_and(|b| !boards.contains(&b)) {
                continue;
            }
            let dir = stage.board.map_or_else(paths::root, Board::dir);
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
        let checks = crate::commands::fuzz::STAGES
            .iter()
            .chain(crate::commands::soak::STAGES);
        for (name, check) in checks {
            let start = Instant::now();
            let result = check();
            if let Err(e) = &result {
                println!("     {e}");
            }
            report_stage(name, result.is_ok(), start);
            tally.record(result.is_ok());
        }
    }

    let uefi_arches = crate::uefi::arches_for(&boards);
    for board in boards {
        run_board(board, &filters, cpus, &mut tally);
    }
    let (passed, failed, reruns) = crate::uefi::test(&uefi_arches, &filters, !qemu_only, false);
    tally.passed += passed;
    tally.failed += failed;
    tally.reruns.extend(reruns);
    for recap in &tally.recaps {
        print!("{recap}");
    }
    println!(
        "QEMU: {}; {} run(s) with a pulled device QEMU never freed (handled); {} scenario(s) rerun for QEMU's reasons{}",
        prereq::qemu_version(),
        tally.unfreed,
        tally.reruns.len(),
        if tally.reruns.is_empty() {
            String::new()
        } else {
            format!(": {}", tally.reruns.join("; "))
        }
    );
    println!("{} passed, {} failed", tally.passed, tally.failed);
    if tally.failed == 0 {
        Ok(())
    } else {
        Err(String::new())
    }
}

/// Builds `board`'s kernel and runs the catalog on it (on x86 also with
/// the driver reassigning every resource), with `cpus` processors if given.
fn run_board(board: Board, filters: &[&String], cpus: Option<u32>, tally: &mut Tally) {
    let variants: &[bool] = match board {
        Board::X86_64 => &[false, true],
        Board::Aarch64 => &[false],
    };
    let planned: Vec<Planned> = variants
        .iter()
        .flat_map(|&reassign| catalog::plan(board, reassign))
        .filter(|p| {
            let name = match p {
                Planned::Run(s) => &s.name,
                Planned::Skip { name, .. } => name,
            };
            filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()))
        })
        .map(|p| match (p, cpus) {
            (Planned::Run(mut s), Some(n)) => {
                s.machine = s.machine.cpus(n);
                Planned::Run(s)
            }
            (p, _) => p,
        })
        .collect();
    if planned.is_empty() {
        return;
    }
    let start = Instant::now();
    let kernel = prereq::ensure(board).and_then(|()| kernel::build(board));
    report_stage(
        &format!("build kernel {}", board.name()),
        kernel.is_ok(),
        start,
    );
    tally.record(kernel.is_ok());
    let kernel = match kernel {
        Ok(kernel) => kernel,
        Err(e) => {
            println!("     {e}; {} QEMU scenarios not run", planned.len());
            tally.failed += planned.len();
            return;
        }
    };
    for p in &planned {
        let s = match p {
            Planned::Run(s) => s,
            Planned::Skip { name, why } => {
                println!("skip qemu {name:<26} {why}");
                continue;
            }
        };
        let mut report = scenario::run(s, &kernel, false, &[]);
        if let Some(why) = report.qemu_fault.clone() {
            // Not a verdict on the driver: QEMU itself failed (see
            // Report::qemu_fault). One more run, said aloud and counted.
            println!("note qemu {:<26} {why}; running it once more", report.name);
            tally.reruns.push(format!("{} ({why})", report.name));
            report = scenario::run(s, &kernel, false, &[]);
        }
        if report.notes.iter().any(|n| n.contains("no DEVICE_DELETED")) {
            tally.unfreed += 1;
        }
        let verdict = if report.passed() { "ok  " } else { "FAIL" };
        println!("{verdict} qemu {:<26} {}", report.name, timing(&report));
        if let Some(why) = &report.failure {
            println!("     {why}");
            print!("{}", report.tail(TAIL_LINES));
            tally.recaps.push(format!(
                "recap: {} failed: {why}\n{}",
                report.name,
                report.tail(RECAP_LINES)
            ));
        }
        tally.record(report.passed());
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
        "{verdict} {name:<24} {:.3} s",
        start.elapsed().as_secs_f64()
    );
}
