//! `cargo xtask`: build, boot and test bare-nvme.
//!
//! ```text
//! cargo xtask test [--board B] [--qemu-only] [--cpus=N] [NAME ...]   fmt, clippy, host tests, kernels, QEMU scenarios
//! cargo xtask run [--board B]                 boot the demo and stream its serial log
//! cargo xtask qemu [--board B] [SCENARIO] [k=v ...] [-- QEMU ARGS]
//! cargo xtask bench [--no-qemu]               instructions, register accesses, QEMU IOPS -> BENCHMARKS.md
//! cargo xtask fuzz [--ci] [--seconds N]         fuzz the driver against a lying device
//! cargo xtask soak [--ci] [--cases N] [--seeds K] [--seconds S]   the long model and fuzz runs
//! cargo xtask miri                            the unsafe layer under Miri
//! cargo xtask layers                          no module imports one above it
//! cargo xtask msrv                            no dependency declares a newer rust-version
//! cargo xtask uefi [--board B] [--echo] [--qemu-only] [NAME ...]  the UEFI board under OVMF / AAVMF
//! ```

mod board;
mod catalog;
mod commands;
mod fields;
mod fs_disks;
mod fsimage;
mod kernel;
mod layers;
mod machine;
mod msrv;
mod paths;
mod prereq;
mod qemu;
mod qmp;
mod scenario;
mod serial;
mod uefi;

use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <command>

  test [--qemu-only] [--cpus=N] [NAME ...]
                                  fmt, clippy, host tests, kernel build, QEMU scenarios
                                  (NAME filters scenarios, --cpus=N boots each with N
                                  processors); last line: N passed, M failed
  run                             build, boot the demo on QEMU, stream the serial log
  qemu [SCENARIO] [key=value ...] [-- QEMU ARGS]
                                  boot one scenario with extra kernel and QEMU arguments
                                  (test, run and qemu take --board x86_64|aarch64; test
                                  runs every board when none is named)
  bench [--no-qemu]               instructions per I/O (callgrind), register accesses, QEMU
                                  IOPS; prints the table and writes BENCHMARKS.md
  fuzz [--ci] [--seconds N]       fuzz the driver against a lying device (nightly,
                                  cargo-fuzz); --ci: the short run of `test`
  soak [--ci] [--cases N] [--seeds K] [--seconds S]
                                  the long runs: the model test at N cases (20,000) for
                                  seeds 1 to K (10), then S seconds (600) of fuzzing;
                                  --ci: the short run of `test` (300 cases, 2 seeds)
  miri                            the driver's unit tests and a sim test under Miri
  layers                          check that no module imports one above it (no build)
  msrv                            check that no dependency declares a newer rust-version
  uefi [--echo] [--qemu-only] [NAME ...]
                                  the UEFI board: fmt, clippy, its scenarios under OVMF
                                  and AAVMF (also run by test; takes --board)
  list                            list the QEMU scenarios";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first() else {
        eprintln!("{USAGE}");
        return ExitCode::FAILURE;
    };
    let rest = &args[1..];
    let result = match command.as_str() {
        "test" => commands::test::main(rest),
        "run" => commands::run::main(rest),
        "qemu" => commands::qemu::main(rest),
        "bench" => commands::bench::main(rest),
        "fuzz" => commands::fuzz::main(rest),
        "miri" => commands::fuzz::miri_main(rest),
        "soak" => commands::soak::main(rest),
        "layers" => layers::check(&paths::root()),
        "msrv" => msrv::check(&paths::root()),
        "uefi" => uefi::main(rest),
        "list" => {
            for s in catalog::all()
                .into_iter()
                .chain(uefi::ALL.into_iter().flat_map(uefi::scenarios))
            {
                println!(
                    "{:<12} {}\n{:<12} append: {}",
                    s.name, s.about, "", s.append
                );
            }
            Ok(())
        }
        "help" | "-h" | "--help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => Err(format!("unknown command {other}\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("xtask: {e}");
            }
            ExitCode::FAILURE
        }
    }
}
