//! `cargo xtask run [--board x86_64|aarch64]`: the tour for newcomers. Builds the kernel and boots it
//! with two PCIe root ports and one NVMe controller (on `rp1`, backed by a
//! raw image that persists between runs), streaming the serial log: PCI
//! enumeration, bring-up, identify data, a verified write/read with
//! throughput figures; then live hot-plug: the host adds a second
//! controller to the empty `rp2`, the driver's tick finds it and brings it
//! up, it serves verified I/O, the kernel's hand pulls it with 8 reads
//! outstanding (each fails once with `DeviceRemoved`), the host adds it back
//! and the driver reports it returned. Ends with a summary.
//!
//! The hand pulls 50 ms after the reads' doorbell: QEMU has finished them
//! by then, but the driver has not polled, so they are still outstanding.
//! A pull while QEMU itself still holds requests is what QEMU 7.2 and 10
//! get wrong (they never free the device, and crash now and then: see the
//! x86 board's README); `pull-unfreed` in the catalog covers that path.

use crate::board::Board;
use crate::catalog;
use crate::machine::{Disk, Machine};
use crate::paths;
use crate::scenario::{self, Report, Scenario, Step};
use crate::{kernel, prereq};

/// Hot-add / surprise-removal cycles the tour shows.
const CYCLES: u64 = 2;

/// Runs the tour.
pub fn main(args: &[String]) -> Result<(), String> {
    let (board, args) = Board::take_option(args)?;
    if let Some(arg) = args.first() {
        return Err(format!("run takes only --board NAME (got {arg})"));
    }
    let board = board.unwrap_or_default();
    prereq::ensure(board)?;
    let kernel = kernel::build(board)?;
    // The demo's first disk persists between runs.
    let disk = |file: &str, fresh: bool| Disk {
        path: paths::work().join("demo").join(file),
        size: catalog::DISK_BYTES,
        fresh,
    };
    println!("disk images in {}", paths::work().join("demo").display());
    let machine = Machine::standard(disk("disk0.img", false))
        .raw_drive("d1", disk("disk1.img", true))
        .on(board);
    let mut steps = vec![Step::marker("RESULT boot_to_first_io_us")];
    steps.extend(catalog::cycle_steps(CYCLES, "d1"));
    let tour = Scenario::new(
        "tour",
        "enumeration, bring-up, I/O; hot-add, surprise removal with I/O in flight, re-add",
        machine,
        &format!("scenario=plug mode=cycles cycles={CYCLES} port=0:5.0 inflight=8 warmup=4194304 pull_after_us=50000"),
    )
    .steps(steps);
    println!(
        "== {} ==\nkernel command line: {}\n",
        tour.about, tour.append
    );
    let mut report = scenario::run(&tour, &kernel, true, &[]);
    let mut rerun = None;
    if let Some(why) = report.qemu_fault.clone() {
        // QEMU itself failed (see Report::qemu_fault), not the driver: say
        // so and run the tour once more.
        println!("\n== {why}; running the tour again ==\n");
        rerun = Some(why);
        report = scenario::run(&tour, &kernel, true, &[]);
    }
    println!("\n== summary ==");
    print_report(&report);
    summary(&report);
    println!("QEMU: {}", prereq::qemu_version());
    if let Some(why) = rerun {
        println!("QEMU's: the first run failed for QEMU's reasons ({why}); this is the second");
    }
    for note in &report.notes {
        println!("QEMU's: {note}");
    }
    if report.passed() {
        Ok(())
    } else {
        Err("the tour failed".to_string())
    }
}

fn summary(report: &Report) {
    let r = |k: &str| report.results.get(k).map(String::as_str).unwrap_or("?");
    println!(
        "boot to first I/O: {} us; 4 MiB write {} KiB/s, read {} KiB/s (TCG)",
        r("boot_to_first_io_us"),
        r("write_kib_s"),
        r("read_kib_s")
    );
    println!(
        "hot-add: found {}..{} ticks after the device appeared; surprise removal: seen after {}..{} ticks ({} ms on average)",
        r("add_ticks_min"),
        r("add_ticks_max"),
        r("remove_ticks_min"),
        r("remove_ticks_max"),
        r("remove_ms_avg")
    );
    println!(
        "{} cycles, {} in-flight commands failed with DeviceRemoved, DMA outstanding at the end: {} bytes",
        r("cycles"),
        r("failed_in_flight"),
        r("dma_bytes")
    );
}

/// One line per scenario: verdict, times, results.
pub fn print_report(report: &Report) {
    let verdict = if report.passed() { "ok  " } else { "FAIL" };
    println!("{verdict} {:<12} {}", report.name, timing(report));
    if !report.results.is_empty() {
        let results: Vec<String> = report
            .results
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!("     {}", results.join(" "));
    }
    if let Some(why) = &report.failure {
        println!("     {why}");
    }
}

/// Wall time and boot times of a run.
pub fn timing(report: &Report) -> String {
    let mut s = format!("{:.3} s", report.wall.as_secs_f64());
    if let Some(k) = report.kmain {
        s.push_str(&format!(", kmain at {:.1} ms guest", k.as_secs_f64() * 1e3));
    }
    if let Some(f) = report.first_line {
        s.push_str(&format!(
            ", first serial line {:.1} ms",
            f.as_secs_f64() * 1e3
        ));
    }
    s
}
