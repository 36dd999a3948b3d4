//! `cargo xtask qemu [--board x86_64|aarch64] [SCENARIO] [key=value ...]
//! [-- QEMU ARGS]`: boot the
//! kernel with one scenario on the standard topology plus whatever QEMU
//! arguments follow `--`, streaming the serial log.
//!
//! SCENARIO is a kernel scenario name (`boot`, `slots`, ...); the words with
//! `=` are added to the kernel command line. A name from the test catalog
//! (`hot-add`, ...) runs that scenario with its host steps instead.

use crate::board::Board;
use crate::catalog;
use crate::commands::run::print_report;
use crate::scenario::{self, Scenario};
use crate::{kernel, prereq};

/// Boots one scenario.
pub fn main(args: &[String]) -> Result<(), String> {
    let (board, args) = Board::take_option(args)?;
    let board = board.unwrap_or_default();
    let (ours, extra) = match args.iter().position(|a| a == "--") {
        Some(i) => (&args[..i], args[i + 1..].to_vec()),
        None => (&args[..], Vec::new()),
    };
    let name = ours
        .iter()
        .find(|a| !a.contains('='))
        .map(String::as_str)
        .unwrap_or("boot");
    let kernel_args: Vec<&str> = ours
        .iter()
        .filter(|a| a.contains('='))
        .map(String::as_str)
        .collect();
    prereq::ensure(board)?;
    let kernel = kernel::build(board)?;
    let mut chosen = match catalog::find(name) {
        Some(s) => s,
        None => Scenario::new(
            name,
            "ad hoc",
            catalog::standard(name),
            &format!("scenario={name}"),
        ),
    };
    chosen.machine = chosen.machine.on(board);
    for arg in kernel_args {
        chosen.append.push(' ');
        chosen.append.push_str(arg);
    }
    println!("booting: {} ({})", chosen.append, chosen.about);
    let report = scenario::run(&chosen, &kernel, true, &extra);
    print_report(&report);
    if report.passed() {
        Ok(())
    } else {
        Err(format!("{} failed", report.name))
    }
}
