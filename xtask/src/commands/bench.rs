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

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::board::Board;
use crate::scenario::{self, Scenario};
use crate::{catalog, kernel, paths, prereq};

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
    let mut rows: Vec<Row> = Vec::new();
    for &batch in &BATCHES {
        let rounds = (IOS_PER_RUN / batch).to_string();
        let b = batch.to_string();
        let reference = callgrind(
            &iobench,
            &["reference", &b, &rounds],
            &["*reference_submit*", "*reference_poll*"],
        )?;
        let mmio = callgrind(
            &iobench,
            &["driver", &b, "0", &rounds],
            &["*measured_submit*", "*measured_poll*"],
        )?;
        let shadow = callgrind(
            &iobench,
            &["driver", &b, "1", &rounds],
            &["*measured_submit*", "*measured_poll*"],
        )?;
        rows.push((batch, mmio, shadow, reference));
    }
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
    for (batch, mmio, shadow, reference) in &rows {
        writeln!(
            out,
            "| {batch} | {mmio:.1} | {shadow:.1} | {reference:.1} | {:.2}x / {:.2}x |",
            mmio / reference,
            shadow / reference
        )
        .unwrap();
    }

    // 2. Access counts.
    let counts = access_counts(&iobench)?;
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
    out.push_str(&targets(&rows, &counts, &qemu_results));

    println!("{out}");
    let doc = document(&out);
    let path = paths::root().join("BENCHMARKS.md");
    std::fs::write(&path, doc).map_err(|e| format!("writing {}: {e}", path.display()))?;
    println!("written: {}", path.display());
    Ok(())
}

fn ensure_valgrind() -> Result<(), String> {
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

fn build_harness() -> Result<PathBuf, String> {
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
fn callgrind(iobench: &Path, args: &[&str], collect: &[&str]) -> Result<f64, String> {
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

fn access_counts(iobench: &Path) -> Result<BTreeMap<String, String>, String> {
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

/// Rounds of the QEMU contest (each contender once per round).
const QEMU_ROUNDS: usize = 30;
/// Guest time per queue depth, contender and round.
const QEMU_MS: u64 = 60;
/// Queue depths of the QEMU contest.
const QEMU_QDS: [usize; 3] = [1, 4, 32];
/// Controllers of the tick-cost machine.
const MANY: usize = 16;

/// The contenders of the QEMU contest: result key, column name.
const CONTENDERS: [(&str, &str); 3] = [
    ("ref", "reference"),
    ("mmio", "driver, MMIO doorbells"),
    ("shadow", "driver, shadow doorbells"),
];

/// What the QEMU part measured.
#[derive(Default)]
struct QemuResults {
    /// IOPS per round, by (contender, queue depth).
    rounds: BTreeMap<(String, usize), Vec<f64>>,
    /// Every other `@@RESULT` of the contest.
    contest: BTreeMap<String, String>,
    /// The `@@RESULT`s of the tick-cost boot.
    ticks: BTreeMap<String, String>,
}

impl QemuResults {
    fn iops(&self, contender: &str, qd: usize) -> &[f64] {
        self.rounds
            .get(&(contender.to_string(), qd))
            .map_or(&[], Vec::as_slice)
    }

    /// Per-round ratios `a / b` at `qd` (the two ran in the same round).
    fn ratios(&self, a: &str, b: &str, qd: usize) -> Vec<f64> {
        self.iops(a, qd)
            .iter()
            .zip(self.iops(b, qd))
            .map(|(x, y)| x / y)
            .collect()
    }

    /// The contender the default configuration is (`mmio` or `shadow`).
    fn default_contender(&self) -> &'static str {
        if self.contest.get("default_shadow").map(String::as_str) == Some("1") {
            "shadow"
        } else {
            "mmio"
        }
    }
}

fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The value below which a share `p` of `values` lies (linear between
/// neighbours).
fn quantile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let at = p * (v.len() - 1) as f64;
    let (lo, hi) = (at.floor() as usize, at.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (at - lo as f64)
}

/// The middle half of `values` (first to third quartile) over their
/// median, in percent.
fn spread(values: &[f64]) -> f64 {
    (quantile(values, 0.75) - quantile(values, 0.25)) / median(values) * 100.0
}

fn min_max(values: &[f64]) -> (f64, f64) {
    (
        values.iter().copied().fold(f64::NAN, f64::min),
        values.iter().copied().fold(f64::NAN, f64::max),
    )
}

/// Three QEMU boots: the contest (reference, MMIO and shadow doorbells, rounds
/// in rotated order) on a `null-co` backed controller, one queue per core on
/// two cores against one (`smp-io`), and the tick cost with 16 controllers. Returns the tables and the raw results.
fn qemu() -> Result<(String, QemuResults), String> {
    prereq::ensure(Board::X86_64)?;
    let kernel = kernel::build(Board::X86_64)?;
    let mut results = QemuResults::default();
    let machine = catalog::null_controller();
    let s = Scenario::new(
        "bench",
        "4 KiB random reads on null-co: reference, MMIO and shadow doorbells",
        machine,
        &format!("scenario=bench ms={QEMU_MS} rounds={QEMU_ROUNDS}"),
    )
    .time_limit(Duration::from_secs(240));
    let report = scenario::run(&s, &kernel, false, &[]);
    if !report.passed() {
        return Err(format!(
            "QEMU bench failed: {:?}\n{}",
            report.failure,
            report.tail(20)
        ));
    }
    for (k, v) in &report.results {
        // r{R}_{C}_qd{Q}_iops
        let round = k
            .strip_prefix('r')
            .and_then(|rest| rest.split_once('_'))
            .and_then(|(r, rest)| Some((r.parse::<usize>().ok()?, rest)));
        let parsed = round.and_then(|(r, rest)| {
            let rest = rest.strip_suffix("_iops")?;
            let (c, qd) = rest.split_once("_qd")?;
            Some((
                r,
                c.to_string(),
                qd.parse::<usize>().ok()?,
                v.parse::<f64>().ok()?,
            ))
        });
        match parsed {
            Some((r, c, qd, iops)) => {
                let per_round = results.rounds.entry((c, qd)).or_default();
                if per_round.len() <= r {
                    per_round.resize(r + 1, f64::NAN);
                }
                per_round[r] = iops;
            }
            None => {
                results.contest.insert(k.clone(), v.clone());
            }
        }
    }
    let s = Scenario::new(
        "smp-io",
        "QD 32 4 KiB reads on null-co, one queue per core: one core, then two",
        catalog::null_controller().cpus(2),
        "scenario=smp-io ms=500 rounds=3",
    )
    .time_limit(Duration::from_secs(120));
    let report = scenario::run(&s, &kernel, false, &[]);
    if !report.passed() {
        return Err(format!(
            "QEMU smp-io failed: {:?}\n{}",
            report.failure,
            report.tail(20)
        ));
    }
    for (k, v) in &report.results {
        // two_cores_ratio_qd32 and the IOPS it is made of.
        results.contest.insert(k.clone(), v.clone());
    }
    let many = catalog::many_controllers(MANY);
    let s = Scenario::new(
        "tick-cost",
        "tick time and reads per tick with 16 controllers",
        many,
        &format!("scenario=tick-cost controllers={MANY} ticks=2000"),
    )
    .time_limit(Duration::from_secs(120));
    let report = scenario::run(&s, &kernel, false, &[]);
    if !report.passed() {
        return Err(format!(
            "QEMU tick-cost failed: {:?}\n{}",
            report.failure,
            report.tail(20)
        ));
    }
    results.ticks = report.results;
    Ok((qemu_tables(&results), results))
}

fn qemu_tables(q: &QemuResults) -> String {
    let mut out = String::new();
    writeln!(
        out,
        "\n### QEMU 7.2 (TCG), nvme on null-co, 4 KiB random reads: the driver against the reference loop\n\n\
{QEMU_ROUNDS} rounds of {QEMU_MS} ms per queue depth and contender, in one boot; at each queue \
depth a round runs the reference, the driver with MMIO doorbells and the driver with shadow \
doorbells back to back (each from its own bring-up), the order rotated from one queue depth and \
round to the next. IOPS are medians over the rounds, with the spread of the rounds (the middle \
half, first to third quartile, over the median); the ratios to the reference are medians of the \
per-round ratios (a round's runs lie within a fraction of a second of each other), with their \
first and third quartile; shadow / MMIO is the ratio of the median IOPS.\n"
    )
    .unwrap();
    write!(out, "| queue depth |").unwrap();
    for (_, name) in CONTENDERS {
        write!(out, " IOPS, {name} (spread) |").unwrap();
    }
    writeln!(
        out,
        " MMIO / reference | shadow / reference | shadow / MMIO |\n|---:|---:|---:|---:|---:|---:|---:|"
    )
    .unwrap();
    for qd in QEMU_QDS {
        write!(out, "| {qd} |").unwrap();
        for (c, _) in CONTENDERS {
            let v = q.iops(c, qd);
            write!(out, " {:.0} ({:.0}%) |", median(v), spread(v)).unwrap();
        }
        for (a, b) in [("mmio", "ref"), ("shadow", "ref")] {
            let r = q.ratios(a, b, qd);
            let (lo, hi) = (quantile(&r, 0.25), quantile(&r, 0.75));
            write!(out, " {:.2} ({lo:.2} to {hi:.2}) |", median(&r)).unwrap();
        }
        write!(
            out,
            " {:.2} |",
            median(q.iops("shadow", qd)) / median(q.iops("mmio", qd))
        )
        .unwrap();
        writeln!(out).unwrap();
    }
    writeln!(
        out,
        "\nThe best round of each contender (contention only takes IOPS away, so the largest values are \
closest to an idle host):\n\n| queue depth | best IOPS, reference | best, MMIO | best, shadow | \
MMIO / reference | shadow / reference |\n|---:|---:|---:|---:|---:|---:|"
    )
    .unwrap();
    for qd in QEMU_QDS {
        let best = |c: &str| min_max(q.iops(c, qd)).1;
        let (r, m, sh) = (best("ref"), best("mmio"), best("shadow"));
        writeln!(
            out,
            "| {qd} | {r:.0} | {m:.0} | {sh:.0} | {:.2} | {:.2} |",
            m / r,
            sh / r
        )
        .unwrap();
    }
    let w = |c: &str, qd: usize| -> String {
        q.contest
            .get(&format!("{c}_qd{qd}_mmio_writes_milli"))
            .and_then(|v| v.parse::<f64>().ok())
            .map_or("?".into(), |v| format!("{:.3}", v / 1000.0))
    };
    writeln!(
        out,
        "\n| queue depth | MMIO writes / I/O, reference | MMIO writes / I/O, MMIO doorbells | MMIO writes / I/O, shadow doorbells |\n|---:|---:|---:|---:|"
    )
    .unwrap();
    for qd in QEMU_QDS {
        writeln!(
            out,
            "| {qd} | {} | {} | {} |",
            w("ref", qd),
            w("mmio", qd),
            w("shadow", qd)
        )
        .unwrap();
    }
    writeln!(
        out,
        "\nIOPS of every round (the order within a round rotates):\n"
    )
    .unwrap();
    write!(out, "| round |").unwrap();
    for qd in QEMU_QDS {
        for (c, _) in CONTENDERS {
            write!(out, " {c}, QD {qd} |").unwrap();
        }
    }
    write!(out, "\n|---:|").unwrap();
    for _ in 0..QEMU_QDS.len() * CONTENDERS.len() {
        write!(out, "---:|").unwrap();
    }
    writeln!(out).unwrap();
    for r in 0..QEMU_ROUNDS {
        write!(out, "| {r} |").unwrap();
        for qd in QEMU_QDS {
            for (c, _) in CONTENDERS {
                match q.iops(c, qd).get(r) {
                    Some(v) => write!(out, " {v:.0} |").unwrap(),
                    None => write!(out, " - |").unwrap(),
                }
            }
        }
        writeln!(out).unwrap();
    }
    out
}

type Row = (usize, f64, f64, f64);

fn many_table(counts: &BTreeMap<String, String>, q: &QemuResults) -> String {
    let mut out = format!(
        "\n### The tick with {MANY} controllers\n\n\
Each controller in its own PCIe root port with a hot-plug slot, a driver with room for {MANY} \
(`Driver<_, _, {MANY}>`, default `DriverConfig`), one tick per millisecond, each tick measured \
alone. Busy: every controller completed one read between two ticks. Simulation: \
`iobench counts`, 1000 ticks, host time in the release build with the simulated device's \
bookkeeping included. QEMU: the `tick-cost` scenario, 2000 ticks, time from the TSC.\n\n\
| where | load | register reads / tick (most) | config reads / tick (most) | tick time, median | tick time, mean / most |\n\
|---|---|---:|---:|---:|---:|\n"
    );
    let c = |k: &str| counts.get(k).cloned().unwrap_or_else(|| "?".into());
    let t = |k: &str| -> f64 {
        q.ticks
            .get(k)
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    };
    for load in ["idle", "busy"] {
        let key = format!("many{MANY}_{load}");
        writeln!(
            out,
            "| simulation | {load} | {} ({}) | {} ({}) | {} µs | |",
            c(&format!("{key}_mmio_reads")),
            c(&format!("{key}_mmio_reads_max")),
            c(&format!("{key}_config_reads")),
            c(&format!("{key}_config_reads_max")),
            c(&format!("{key}_tick_us_median")),
        )
        .unwrap();
    }
    for load in ["idle", "busy"] {
        writeln!(
            out,
            "| QEMU (TCG) | {load} | {:.3} ({}) | {:.3} ({}) | {:.1} µs | {:.1} / {:.1} µs |",
            t(&format!("{load}_mmio_reads_milli")) / 1000.0,
            t(&format!("{load}_mmio_reads_max")),
            t(&format!("{load}_config_reads_milli")) / 1000.0,
            t(&format!("{load}_config_reads_max")),
            t(&format!("{load}_tick_ns_median")) / 1000.0,
            t(&format!("{load}_tick_ns_mean")) / 1000.0,
            t(&format!("{load}_tick_ns_max")) / 1000.0,
        )
        .unwrap();
    }
    out
}

/// The targets, each with the measured value and whether it holds, then a
/// closing note listing those that do not hold.
fn targets(rows: &[Row], counts: &BTreeMap<String, String>, qemu: &QemuResults) -> String {
    let num = |m: &BTreeMap<String, String>, k: &str| -> f64 {
        m.get(k).and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)
    };
    let mut out =
        String::from("\n### Targets\n\n| target | measured | holds |\n|---|---:|:---:|\n");
    let mut missed: Vec<String> = Vec::new();
    let mut line = |what: &str, value: String, ok: Option<bool>| {
        let mark = match ok {
            Some(true) => "yes",
            Some(false) => {
                missed.push(format!("{what}: {value}"));
                "**no**"
            }
            None => "not measured",
        };
        writeln!(out, "| {what} | {value} | {mark} |").unwrap();
    };
    if let Some(&(_, mmio, shadow, reference)) = rows.iter().find(|r| r.0 == 32) {
        let worst = mmio.max(shadow);
        line(
            "<= 150 driver instructions per I/O at batch 32",
            format!("{mmio:.0} (MMIO), {shadow:.0} (shadow)"),
            Some(worst <= 150.0),
        );
        line(
            "<= 2.0x the reference loop at batch 32",
            format!("{:.2}x", worst / reference),
            Some(worst / reference <= 2.0),
        );
    }
    let mut reads = 0.0f64;
    let mut doorbells = 0.0f64;
    for b in BATCHES {
        for s in [0, 1] {
            reads = reads.max(num(
                counts,
                &format!("batch{b}_shadow{s}_mmio_reads_per_io"),
            ));
            doorbells = doorbells.max(num(
                counts,
                &format!("batch{b}_shadow{s}_doorbells_per_batch"),
            ));
        }
    }
    line(
        "0 MMIO reads per I/O",
        format!("{reads:.3}"),
        Some(reads == 0.0),
    );
    line(
        "<= 2 doorbell writes per batch",
        format!("{doorbells:.3}"),
        Some(doorbells <= 2.0),
    );
    for qd in [4, 8, 32] {
        let v = num(counts, &format!("stream_qd{qd}_shadow1_mmio_writes_per_io"));
        line(
            &format!("shadow doorbells: <= 0.3 MMIO writes per I/O, simulated, streaming QD {qd}"),
            format!("{v:.3}"),
            Some(v <= 0.3),
        );
    }
    if !qemu.rounds.is_empty() {
        let default = qemu.default_contender();
        let doorbells = if default == "shadow" {
            "shadow"
        } else {
            "MMIO"
        };
        for qd in QEMU_QDS {
            let r = median(&qemu.ratios(default, "ref", qd));
            line(
                &format!(
                    ">= 0.95 of the reference loop's IOPS in QEMU, QD {qd} (default: {doorbells} doorbells)"
                ),
                format!("{r:.2}"),
                Some(r >= 0.95),
            );
        }
        let shadow_off = default == "mmio";
        let worst = QEMU_QDS
            .iter()
            .map(|&qd| median(qemu.iops("shadow", qd)) / median(qemu.iops("mmio", qd)))
            .fold(f64::NAN, f64::min);
        line(
            "shadow doorbells: median IOPS >= MMIO doorbells' at QD 1, 4 and 32, or off by default",
            format!(
                "worst shadow / MMIO {worst:.2}; default {}",
                if shadow_off { "off" } else { "on" }
            ),
            Some(shadow_off || worst >= 1.0),
        );
    }
    match qemu.contest.get("two_cores_ratio_qd32") {
        Some(v) => {
            let r: f64 = v.parse().unwrap_or(f64::NAN);
            line(
                ">= 1.6x IOPS on two cores over one at QD 32 (QEMU)",
                format!("{r:.2}"),
                Some(r >= 1.6),
            );
        }
        None => line(
            ">= 1.6x IOPS on two cores over one at QD 32 (QEMU)",
            "-".into(),
            None,
        ),
    }
    let idle = num(counts, "tick_idle_mmio_reads");
    let busy = num(counts, "tick_busy_mmio_reads");
    line(
        "idle tick: <= 1 non-posted read per controller",
        format!("{idle:.3} register reads (CSTS)"),
        Some(idle <= 1.0),
    );
    line(
        "busy tick: no non-posted read per controller",
        format!("{busy:.3} register reads"),
        Some(busy == 0.0),
    );
    let many = MANY as f64;
    let sim_idle = num(counts, &format!("many{MANY}_idle_mmio_reads_max"));
    let sim_busy = num(counts, &format!("many{MANY}_busy_mmio_reads_max"));
    line(
        &format!("{MANY} controllers, simulated: <= 1 register read per controller in any idle tick, none busy"),
        format!("{sim_idle} idle, {sim_busy} busy (most in one tick)"),
        Some(sim_idle <= many && sim_busy == 0.0),
    );
    if !qemu.ticks.is_empty() {
        let q_idle = num(&qemu.ticks, "idle_mmio_reads_max");
        let q_busy = num(&qemu.ticks, "busy_mmio_reads_max");
        line(
            &format!("{MANY} controllers, QEMU: <= 1 register read per controller in any idle tick, none busy"),
            format!("{q_idle} idle, {q_busy} busy (most in one tick)"),
            Some(q_idle <= many && q_busy == 0.0),
        );
        let sim_config = num(counts, &format!("many{MANY}_idle_config_reads_max"));
        let q_config = num(&qemu.ticks, "idle_config_reads_max");
        line(
            &format!("{MANY} controllers: <= 1 config read per port and tick, plus 2 for the plain-bus probe"),
            format!("{sim_config} simulated, {q_config} QEMU (most in one tick)"),
            Some(sim_config <= many + 2.0 && q_config <= many + 2.0),
        );
    }
    let idle_config = num(counts, "tick_idle_config_reads");
    let busy_config = num(counts, "tick_busy_config_reads");
    writeln!(
        out,
        "| (not per controller) hot-plug port watch: config reads per 1 ms tick | {idle_config:.3} idle, {busy_config:.3} busy | n/a |"
    )
    .unwrap();
    // What remains of a missed target, keyed by the start of its text.
    let mut remaining: Vec<(String, String)> = Vec::new();
    if let Some(&(_, mmio, shadow, reference)) = rows.iter().find(|r| r.0 == 32) {
        let worst = mmio.max(shadow);
        remaining.push((
            "<= 150 driver instructions".into(),
            format!("{:.0} instructions per I/O too many", worst - 150.0),
        ));
        remaining.push((
            "<= 2.0x the reference loop".into(),
            format!(
                "2.0x allows {:.0} instructions per I/O, {:.0} fewer than now",
                2.0 * reference,
                worst - 2.0 * reference
            ),
        ));
    }
    if !qemu.rounds.is_empty() {
        let default = qemu.default_contender();
        for qd in QEMU_QDS {
            // Time per I/O: the reference's from its median IOPS, the
            // driver's from the median per-round ratio, as in the target.
            let t_ref = 1e9 / median(qemu.iops("ref", qd));
            let t_drv = t_ref / median(&qemu.ratios(default, "ref", qd));
            remaining.push((
                format!(">= 0.95 of the reference loop's IOPS in QEMU, QD {qd} "),
                format!(
                    "the reference takes {t_ref:.0} ns per I/O (guest time), the driver \
                     {t_drv:.0} ns; 0.95 needs {:.0} ns less per I/O",
                    t_drv - t_ref / 0.95
                ),
            ));
        }
    }
    out.push_str("\n### Closing note\n\n");
    if missed.is_empty() {
        out.push_str("Every target measured holds.\n");
    } else {
        out.push_str("Every target measured holds except:\n\n");
        for m in &missed {
            match remaining.iter().find(|(k, _)| m.starts_with(k.as_str())) {
                Some((_, rest)) => writeln!(out, "- {m}; {rest}").unwrap(),
                None => writeln!(out, "- {m}").unwrap(),
            }
        }
        out.push_str(
            "\nWhy each remains is explained under \"Reading the targets\" (instructions per I/O; \
             against the reference in QEMU).\n",
        );
    }
    out
}

fn document(tables: &str) -> String {
    format!(
        "# Benchmarks\n\n\
Generated by `cargo xtask bench` (`--no-qemu` skips the QEMU part). Numbers below are from the last run.\n\n\
## How to reproduce\n\n\
```\ncargo xtask bench\n```\n\n\
Needs valgrind (`apt-get install -y valgrind`; xtask tries to install it) and, for the QEMU part, \
`qemu-system-x86_64` and the `x86_64-unknown-none` target (installed by xtask as for `cargo xtask test`).\n\n\
- **Instructions** are counted by callgrind (`valgrind --tool=callgrind --toggle-collect=...`) over the \
host harness `bench/` (crate `bare-nvme-bench`, binary `iobench`, release build). Only the driver's \
`measured_submit` (a loop of `Controller::submit_read` with a namespace handle) and `measured_poll` (`Controller::poll` with a \
callback that puts the buffer back) are collected. The simulated controller sits behind a platform \
wrapper that records I/O doorbell writes and forwards them to the device between the measured calls, so \
the device's work (fetching, executing, writing CQEs) is not counted; a doorbell write costs a few \
stores, as does the reference's. The clock is frozen to one memory read while measuring. The reference \
loop (`bench/src/reference.rs`) writes an SQE, rings the SQ doorbell once per batch, polls phase bits \
and rings the CQ head once; it is counted the same way in the same run, so the ratio is stable. \
Each batch is: submit N, poll (rings), device runs, poll (drains, rings the CQ head).\n\
- **Register accesses** come from the same harness (`iobench counts`): every register read and write \
is counted by the wrapper; config reads by the simulated controller. Streaming keeps QD reads in flight \
and resubmits each completion at once with its own `ring_doorbells`; the device runs once per poll. \
With shadow doorbells the EventIdx rule then leaves at most one SQ and one CQ MMIO write per device turn.\n\
- **QEMU**: two boots. The kernel's `bench` scenario (`boards/qemu-x86_64/src/scenarios/bench/`) on \
`-blockdev driver=null-co,read-zeroes=on` runs three contenders on the same controller: the reference \
loop (`bench/reference.rs` there: a controller reset, its own admin queue and one I/O queue pair of \
the driver's size, 128 entries, reads with the command ID as buffer index, the driver's doorbell \
policy of one SQ tail write per batch and the CQ head written back once a quarter of the ring was \
consumed, nothing validated, nothing tracked), the driver with MMIO doorbells and the driver with \
shadow doorbells, every run from its own bring-up. Each round runs the three back to back at each \
queue depth, in an order rotated from one queue depth and round to the next, so that a busy host \
hits all alike and each round's three runs can be compared with each other; register writes are \
counted by a wrapper around the board's registers. The `tick-cost` scenario boots 16 controllers \
in 16 root ports. TCG makes absolute IOPS meaningless beyond this machine; compare the ratios.\n\
- **Noise.** The host has 2 cores shared with other builds, and under TCG the guest's CPU and QEMU's \
device model both need one. The spread column says how far the rounds lie apart; the per-round \
ratios are steadier than the IOPS because a round's three runs share the host's state, and their \
first and third quartile are given. On this host, loaded by other builds, four runs gave the \
driver with MMIO doorbells 0.91 to 0.99 of the reference's IOPS at QD 1, 0.90 to 1.11 at QD 4 \
and 0.84 to 0.93 at QD 32, and shadow doorbells 0.90 to 1.00, 0.91 to 0.97 and 0.80 to 0.89 of \
MMIO doorbells': a difference under 0.1 is inside the noise of one run, a ratio above 1 is noise, \
and only what holds in every run (shadow never above MMIO, the gap to the reference widest at \
QD 32) is a finding. A fifth run, with the host saturated (a tenth of these IOPS), said nothing either \
way.\n\n\
## Results\n\n{tables}\n\
## Reading the targets\n\n\
- **Instructions per I/O.** The reference does nothing but ring arithmetic. Per command the driver \
also checks the controller state, the queue, the namespace (lookup), the LBA range, the buffer's \
size and alignment, builds PRPs, keeps a generation-tagged CID slot with the caller's tag, deadline \
and the ownership of the caller's `DmaRegion` (moved in on submit and handed back in the \
`Completion`), and on completion validates SQ ID, SQ head and CID before handing the buffer back \
through a closure. The API moves `Result<Token, Rejected>` and `Completion` by value. Those checks are \
the driver's contract (every device value is untrusted, buffers never leak), so the 150-instruction \
and 2.0x targets are missed by design at the current API; what remains is counted above, per \
function, by `callgrind_annotate .xtask/callgrind.out` after a run.\n\
- **Against the reference in QEMU.** Under TCG every doorbell write is an exit into QEMU's device \
model, and the reference writes exactly as many as the driver (the MMIO writes table), so what \
separates the two is guest CPU time per command: the driver's checks, command slot and completion \
validation (the instructions counted above, several times the reference loop's), which TCG runs \
at a fraction of native speed, on the same host cores as the device model. That cost is paid per \
command at every queue depth: at QD 1 it adds to each round trip, at QD 32 it is the share of the \
CPU the device model does not get. The lean per-command path (fewer instructions per I/O) is what \
closes the gap; the doorbell policy has nothing left to give.\n\
- **Shadow doorbells are off by default** (`ControllerConfig::shadow_doorbells`). The EventIdx rule is exact \
(`(u16)(new - event_idx - 1) < (u16)(new - old)`, shadow write, full barrier, EventIdx read, MMIO \
only if needed). QEMU 7.2's nvme sets EventIdx to the tail it consumed each time it processes a \
queue, and a doorbell write has it process the queue within microseconds, so when new work \
arrives the device has caught up and the rule asks for the MMIO write anyway: the MMIO writes per \
I/O with shadow doorbells equal those without, and each ring pays the shadow write, the barrier \
and the EventIdx read on top. Their median IOPS come out at or below MMIO doorbells'. They pay only \
on a controller that is still busy with earlier work when new work arrives (the simulation's \
streaming rows, where they cut MMIO writes to 0.05 per I/O at QD 32); an embedder with such a \
controller turns them on.\n\
- **Many controllers.** A tick reads CSTS once per idle controller and nothing for a controller \
that completed commands since the last tick; 16 controllers cost 16 register reads in an idle tick \
and none in a busy one. Config reads do not scale with ticks: each port's Slot Status once per \
`slot_poll_interval` (10 ms), so 1.6 per 1 ms tick on average with 16 ports, at most 16 plus 2 for \
the plain-bus probe in one tick. In QEMU they come out above that because ticks fall more than 1 ms \
apart whenever the host takes the CPU away, so more slot polls are due per tick. The QEMU tick time is mostly \
the 16 CSTS reads, each an exit into QEMU; its largest values are the host taking the CPU away.\n\
- **Ticks.** Per controller the idle tick reads CSTS once and a tick with completions since the \
last one reads nothing. The config reads listed separately are the hot-plug watch of the ports \
(Slot Status and Link Status every `slot_poll_interval`) and the slow probing of empty device \
numbers on plain buses; they do not scale with I/O.\n"
    )
}
