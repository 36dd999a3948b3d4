//! `cargo xtask bench [--no-qemu]`: measures the I/O path and writes
//! `BENCHMARKS.md`.
//!
//! 1. Instructions per I/O, counted by callgrind over the host harness
//!    (`bench/`, binary `iobench`, release build): only the driver's submit
//!    and poll are collected (`--toggle-collect` on the `#[inline(never)]`
//!    functions `measured_submit` and `measured_poll`); the simulated device
//!    does its work between those calls. The reference loop (write an SQE,
//!    ring, poll a phase bit) is counted the same way in the same run.
//! 2. Register and config accesses per I/O and per tick (`iobench counts`).
//! 3. QEMU: the kernel's `bench` scenario on a `null-co` backed controller.

mod document;
mod host;
mod qemu;
mod stats;
mod targets;

use std::collections::BTreeMap;

use crate::paths;
use document::document;
use host::{access_counts, access_tables, build_harness, ensure_valgrind};
use host::{instruction_table, instructions, split, split_line};
use qemu::{many_table, qemu, QemuResults};
use targets::targets;

/// Batch sizes measured.
const BATCHES: [usize; 3] = [1, 8, 32];
/// I/Os per callgrind run (enough that setup outside the measured functions
/// does not matter, few enough for a quick run under valgrind).
const IOS_PER_RUN: usize = 6400;

/// Runs the benchmarks.
pub fn main(args: &[String]) -> Result<(), String> {
    let with_qemu = !args.iter().any(|a| a == "--no-qemu");
    if args.iter().any(|a| a == "--qemu-only") {
        // For looking at the QEMU numbers alone: printed, nothing written.
        let (table, results) = qemu()?;
        println!("{table}{}", many_table(&BTreeMap::new(), &results));
        return Ok(());
    }
    ensure_valgrind()?;
    let iobench = build_harness()?;
    let mut out = String::new();

    // 1. Instructions per I/O.
    let rows = instructions(&iobench)?;
    out.push_str(&instruction_table(&rows));
    let split = split(&iobench)?;
    out.push_str(&split_line(split));

    // 2. Access counts.
    let counts = access_counts(&iobench)?;
    out.push_str(&access_tables(&counts));
    // 3. QEMU.
    let mut qemu_results = QemuResults::default();
    if with_qemu {
        let (table, results) = qemu()?;
        out.push_str(&table);
        qemu_results = results;
    }

    // 4. The tick with 16 controllers, simulated and in QEMU.
    out.push_str(&many_table(&counts, &qemu_results));

    // 5. The targets, checked.
    out.push_str(&targets(&rows, split, &counts, &qemu_results));

    println!("{out}");
    let doc = document(&out);
    let path = paths::root().join("BENCHMARKS.md");
    std::fs::write(&path, doc).map_err(|e| format!("writing {}: {e}", path.display()))?;
    println!("written: {}", path.display());
    Ok(())
}
