//! `cargo xtask run`: the tour for newcomers. Builds the kernel and boots it
//! on the standard topology (a controller on `rp1` backed by a raw image that
//! persists between runs, an empty `rp2`), streaming the serial log: first the
//! board on its own, then the driver bringing the controller up and doing
//! I/O, then a hot-add of a second controller over QMP that the kernel's hand
//! pulls again. Ends with a summary.

use crate::catalog;
use crate::machine::{Disk, Machine};
use crate::paths;
use crate::scenario::{self, Report, Scenario};
use crate::{kernel, prereq};

/// Runs the tour.
pub fn main(args: &[String]) -> Result<(), String> {
    if let Some(arg) = args.first() {
        return Err(format!("run takes no arguments (got {arg})"));
    }
    prereq::ensure()?;
    let kernel = kernel::build()?;
    // The demo disk persists between runs.
    let disk = Disk {
        path: paths::work().join("demo").join("disk0.img"),
        size: catalog::DISK_BYTES,
        fresh: false,
    };
    println!("disk image: {}", disk.path.display());
    let machine = Machine::standard(disk);
    let mut reports = Vec::new();

    let boot = Scenario::new(
        "boot",
        "the board comes up",
        machine.clone(),
        "scenario=boot",
    );
    println!("\n== boot: {} ==", boot.append);
    reports.push(scenario::run(&boot, &kernel, true, &[]));

    let io = Scenario::new(
        "io",
        "the driver serves I/O",
        machine.clone(),
        "scenario=io persist=write",
    );
    println!("\n== io: {} ==", io.append);
    reports.push(scenario::run(&io, &kernel, true, &[]));

    if let Some(mut hot_add) = catalog::find("hot-add") {
        hot_add.machine = machine;
        println!("\n== hot-add: {} ==", hot_add.append);
        println!("(the host adds nvme1 to rp2 after @@READY, then presses its button)");
        reports.push(scenario::run(&hot_add, &kernel, true, &[]));
    }

    println!("\n== summary ==");
    for report in &reports {
        print_report(report);
    }
    if reports.iter().all(Report::passed) {
        Ok(())
    } else {
        Err("the tour failed".to_string())
    }
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
