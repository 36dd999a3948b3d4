//! The QEMU part: the contest of the reference loop and the driver on a
//! `null-co` backed controller, and the tick cost with 16 controllers.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use super::stats::{median, min_max, quantile, spread};
use crate::board::Board;
use crate::scenario::{self, Scenario};
use crate::{catalog, kernel, prereq};

/// Rounds of the QEMU contest (each contender once per round).
pub(super) const QEMU_ROUNDS: usize = 30;
/// Guest time per queue depth, contender and round.
pub(super) const QEMU_MS: u64 = 60;
/// Queue depths of the QEMU contest.
pub(super) const QEMU_QDS: [usize; 3] = [1, 4, 32];
/// Controllers of the tick-cost machine.
pub(super) const MANY: usize = 16;

/// The contenders of the QEMU contest: result key, column name.
pub(super) const CONTENDERS: [(&str, &str); 3] = [
    ("ref", "reference"),
    ("mmio", "driver, MMIO doorbells"),
    ("shadow", "driver, shadow doorbells"),
];

/// What the QEMU part measured.
#[derive(Default)]
pub(super) struct QemuResults {
    /// IOPS per round, by (contender, queue depth).
    pub(super) rounds: BTreeMap<(String, usize), Vec<f64>>,
    /// Every other `@@RESULT` of the contest.
    pub(super) contest: BTreeMap<String, String>,
    /// The `@@RESULT`s of the tick-cost boot.
    pub(super) ticks: BTreeMap<String, String>,
    /// The QEMU that measured them (`7.2.22`); numbers differ between
    /// versions as much as between drivers.
    pub(super) version: String,
}

impl QemuResults {
    pub(super) fn iops(&self, contender: &str, qd: usize) -> &[f64] {
        self.rounds
            .get(&(contender.to_string(), qd))
            .map_or(&[], Vec::as_slice)
    }

    /// Per-round ratios `a / b` at `qd` (the two ran in the same round).
    pub(super) fn ratios(&self, a: &str, b: &str, qd: usize) -> Vec<f64> {
        self.iops(a, qd)
            .iter()
            .zip(self.iops(b, qd))
            .map(|(x, y)| x / y)
            .collect()
    }

    /// The contender the default configuration is (`mmio` or `shadow`).
    pub(super) fn default_contender(&self) -> &'static str {
        if self.contest.get("default_shadow").map(String::as_str) == Some("1") {
            "shadow"
        } else {
            "mmio"
        }
    }
}

/// Three QEMU boots: the contest (reference, MMIO and shadow doorbells,
/// rounds in rotated order) on a `null-co` backed controller, one queue per
/// core on two cores against one (`smp-io`), and the tick cost with 16
/// controllers. Returns the tables and the raw results.
pub(super) fn qemu() -> Result<(String, QemuResults), String> {
    prereq::ensure(Board::X86_64)?;
    let kernel = kernel::build(Board::X86_64)?;
    let mut results = QemuResults {
        version: crate::prereq::qemu_release(),
        ..QemuResults::default()
    };
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

pub(super) fn qemu_tables(q: &QemuResults) -> String {
    let mut out = String::new();
    out.push_str(&median_table(q));
    out.push_str(&best_round_table(q));
    out.push_str(&mmio_writes_table(q));
    out.push_str(&rounds_table(q));
    out
}

/// How the contest ran, and per queue depth the median IOPS of each
/// contender with their spread and the ratios between them.
fn median_table(q: &QemuResults) -> String {
    let mut out = String::new();
    writeln!(
        out,
        "\n### QEMU {} (TCG), nvme on null-co, 4 KiB random reads: the driver against the reference loop\n\n\
{QEMU_ROUNDS} rounds of {QEMU_MS} ms per queue depth and contender, in one boot; at each queue \
depth a round runs the reference, the driver with MMIO doorbells and the driver with shadow \
doorbells back to back (each from its own bring-up), the order rotated from one queue depth and \
round to the next. IOPS are medians over the rounds, with the spread of the rounds (the middle \
half, first to third quartile, over the median); the ratios to the reference are medians of the \
per-round ratios (a round's runs lie within a fraction of a second of each other), with their \
first and third quartile; shadow / MMIO is the ratio of the median IOPS.\n",
        q.version
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
    out
}

/// The best round of each contender per queue depth, and its ratios.
fn best_round_table(q: &QemuResults) -> String {
    let mut out = String::new();
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
    out
}

/// MMIO writes per I/O of each contender per queue depth (`?` where the
/// guest gave none).
fn mmio_writes_table(q: &QemuResults) -> String {
    let mut out = String::new();
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
    out
}

/// The IOPS of every round, one column per queue depth and contender (`-`
/// for a round that gave none).
fn rounds_table(q: &QemuResults) -> String {
    let mut out = String::new();
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

pub(super) fn many_table(counts: &BTreeMap<String, String>, q: &QemuResults) -> String {
    let mut out = format!(
        "\n### The tick with {MANY} controllers\n\n\
Each controller in its own PCIe root port with a hot-plug slot, a driver with room for {MANY} \
(`Driver<_, _, {MANY}>`, default `DriverConfig`), one tick per millisecond, each tick measured \
alone. Busy: every controller completed one read between two ticks. Simulation: \
`iobench counts`, 1000 ticks, host time in the release build with the simulated device's \
bookkeeping included. QEMU {}: the `tick-cost` scenario, 2000 ticks, time from the TSC.\n\n\
| where | load | register reads / tick (most) | config reads / tick (most) | tick time, median | tick time, mean / most |\n\
|---|---|---:|---:|---:|---:|\n",
        q.version
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Two rounds of 1000 and 2000 IOPS for every contender and queue
    /// depth, and one MMIO write count.
    fn two_rounds() -> QemuResults {
        let mut q = QemuResults::default();
        for (c, _) in CONTENDERS {
            for qd in QEMU_QDS {
                q.rounds.insert((c.into(), qd), vec![1000.0, 2000.0]);
            }
        }
        q.contest
            .insert("ref_qd1_mmio_writes_milli".into(), "1500".into());
        q
    }

    #[test]
    fn the_tables_give_the_best_round_and_mark_what_the_guest_did_not_give() {
        let q = two_rounds();
        let best = best_round_table(&q);
        assert!(best.contains("\n| 32 | 2000 | 2000 | 2000 | 1.00 | 1.00 |\n"));
        let writes = mmio_writes_table(&q);
        assert!(writes.contains("\n| 1 | 1.500 | ? | ? |\n"));
        let rounds = rounds_table(&q);
        assert!(rounds.contains("\n| 1 | 2000 | 2000 |"));
        assert!(rounds.contains("\n| 2 | - | - |"));
        let rows = rounds
            .lines()
            .filter(|l| l.starts_with("| ") && l.as_bytes()[2].is_ascii_digit())
            .count();
        assert_eq!(rows, QEMU_ROUNDS);
        let all = qemu_tables(&q);
        assert!(all.starts_with(&median_table(&q)) && all.ends_with(&rounds));
    }
}
