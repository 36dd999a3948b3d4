//! The host part: callgrind's instruction counts over the `iobench`
//! harness and the register accesses it counts, with their tables.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{BATCHES, IOS_PER_RUN};
use crate::paths;

/// Instructions per I/O at one batch size: (batch, driver with MMIO
/// doorbells, driver with shadow doorbells, reference loop).
pub(super) type Row = (usize, f64, f64, f64);

pub(super) fn ensure_valgrind() -> Result<(), String> {
    let present = || {
        Command::new("valgrind")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if present() {
        return Ok(());
    }
    let install = "apt-get update && apt-get install -y valgrind";
    eprintln!("xtask: valgrind is missing; trying `{install}`");
    let _ = Command::new("sh").args(["-c", install]).status();
    if present() {
        Ok(())
    } else {
        Err(format!(
            "valgrind is missing; install it with: sudo sh -c '{install}'"
        ))
    }
}

pub(super) fn build_harness() -> Result<PathBuf, String> {
    let status = Command::new(paths::cargo())
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "bare-nvme-bench",
            "--bin",
            "iobench",
        ])
        .current_dir(paths::root())
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err("building the benchmark harness failed".into());
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| paths::root().join("target"));
    Ok(target.join("release").join("iobench"))
}

/// Instructions per I/O in the functions matching `collect`.
pub(super) fn callgrind(iobench: &Path, args: &[&str], collect: &[&str]) -> Result<f64, String> {
    std::fs::create_dir_all(paths::work()).map_err(|e| e.to_string())?;
    let out_file = paths::work().join("callgrind.out");
    let mut cmd = Command::new("valgrind");
    cmd.arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out_file.display()));
    for pattern in collect {
        cmd.arg(format!("--toggle-collect={pattern}"));
    }
    let output = cmd
        .arg(iobench)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run valgrind: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(format!("iobench {args:?} failed: {stdout}{stderr}"));
    }
    let ios: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("ios="))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("iobench {args:?}: no ios= line"))?;
    let collected: f64 = stderr
        .lines()
        .find_map(|l| l.split("Collected :").nth(1))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("callgrind {args:?}: no `Collected` line"))?;
    Ok(collected / ios)
}

pub(super) fn access_counts(iobench: &Path) -> Result<BTreeMap<String, String>, String> {
    let output = Command::new(iobench)
        .arg("counts")
        .output()
        .map_err(|e| format!("cannot run iobench: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "iobench counts failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("@@COUNT "))
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect())
}

/// Callgrind's instructions per I/O for each batch size: the driver with
/// MMIO and with shadow doorbells, and the reference loop.
pub(super) fn instructions(iobench: &Path) -> Result<Vec<Row>, String> {
    let mut rows: Vec<Row> = Vec::new();
    for &batch in &BATCHES {
        let rounds = (IOS_PER_RUN / batch).to_string();
        let b = batch.to_string();
        let reference = callgrind(
            iobench,
            &["reference", &b, &rounds],
            &["*reference_submit*", "*reference_poll*"],
        )?;
        let mmio = callgrind(
            iobench,
            &["driver", &b, "0", &rounds],
            &["*measured_submit*", "*measured_poll*"],
        )?;
        let shadow = callgrind(
            iobench,
            &["driver", &b, "1", &rounds],
            &["*measured_submit*", "*measured_poll*"],
        )?;
        rows.push((batch, mmio, shadow, reference));
    }
    Ok(rows)
}

/// Where the instructions go at batch 32 with MMIO doorbells: submit and
/// poll counted apart.
pub(super) fn split(iobench: &Path) -> Result<(f64, f64), String> {
    let rounds = (IOS_PER_RUN / 32).to_string();
    let args = ["driver", "32", "0", &rounds];
    Ok((
        callgrind(iobench, &args, &["*measured_submit*"])?,
        callgrind(iobench, &args, &["*measured_poll*"])?,
    ))
}

/// The line under the instructions table that gives [`split`].
pub(super) fn split_line(split: (f64, f64)) -> String {
    format!(
        "\nAt batch 32 with MMIO doorbells, `measured_submit` takes {:.1} and `measured_poll` {:.1} of them per I/O.\n",
        split.0, split.1
    )
}

/// The instructions table.
pub(super) fn instruction_table(rows: &[Row]) -> String {
    let mut out = String::new();
    writeln!(
        out,
        "### Driver instructions per 4 KiB read (callgrind, host, release)\n"
    )
    .unwrap();
    writeln!(
        out,
        "| batch | driver, MMIO doorbells | driver, shadow doorbells | reference loop | driver / reference |"
    )
    .unwrap();
    writeln!(out, "|---:|---:|---:|---:|---:|").unwrap();
    for (batch, mmio, shadow, reference) in rows {
        writeln!(
            out,
            "| {batch} | {mmio:.1} | {shadow:.1} | {reference:.1} | {:.2}x / {:.2}x |",
            mmio / reference,
            shadow / reference
        )
        .unwrap();
    }

    out
}

/// The register access tables: per batch, streaming, and per tick.
pub(super) fn access_tables(counts: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let c = |k: &str| counts.get(k).cloned().unwrap_or_else(|| "?".into());
    writeln!(
        out,
        "\n### Register accesses (simulated controller, deferred doorbells)\n"
    )
    .unwrap();
    writeln!(
        out,
        "| batch | MMIO reads / I/O | doorbell writes / batch, MMIO | doorbell writes / batch, shadow | MMIO writes / I/O, MMIO | MMIO writes / I/O, shadow |"
    )
    .unwrap();
    writeln!(out, "|---:|---:|---:|---:|---:|---:|").unwrap();
    for batch in BATCHES {
        writeln!(
            out,
            "| {batch} | {} | {} | {} | {} | {} |",
            c(&format!("batch{batch}_shadow0_mmio_reads_per_io")),
            c(&format!("batch{batch}_shadow0_doorbells_per_batch")),
            c(&format!("batch{batch}_shadow1_doorbells_per_batch")),
            c(&format!("batch{batch}_shadow0_mmio_writes_per_io")),
            c(&format!("batch{batch}_shadow1_mmio_writes_per_io")),
        )
        .unwrap();
    }
    writeln!(
        out,
        "\nStreaming (each completion resubmitted and rung at once; the device runs between polls):\n"
    )
    .unwrap();
    writeln!(
        out,
        "| queue depth | MMIO reads / I/O | MMIO writes / I/O, MMIO doorbells | MMIO writes / I/O, shadow doorbells |"
    )
    .unwrap();
    writeln!(out, "|---:|---:|---:|---:|").unwrap();
    for qd in [1, 4, 8, 32] {
        writeln!(
            out,
            "| {qd} | {} | {} | {} |",
            c(&format!("stream_qd{qd}_shadow1_mmio_reads_per_io")),
            c(&format!("stream_qd{qd}_shadow0_mmio_writes_per_io")),
            c(&format!("stream_qd{qd}_shadow1_mmio_writes_per_io")),
        )
        .unwrap();
    }
    writeln!(
        out,
        "\n| tick | MMIO reads / tick | config reads / tick |\n|---|---:|---:|\n| idle | {} | {} |\n| busy (completions between ticks) | {} | {} |",
        c("tick_idle_mmio_reads"),
        c("tick_idle_config_reads"),
        c("tick_busy_mmio_reads"),
        c("tick_busy_config_reads"),
    )
    .unwrap();

    out
}
