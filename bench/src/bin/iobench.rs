//! The benchmark runner `cargo xtask bench` drives.
//!
//! ```text
//! iobench driver BATCH SHADOW(0|1) ROUNDS   measured loop of the driver
//! iobench reference BATCH ROUNDS            measured reference loop
//! iobench counts                            register and config access counts
//! ```
//!
//! The measured loops are meant to run under
//! `valgrind --tool=callgrind --toggle-collect='*measured_*'` (driver) or
//! `--toggle-collect='*reference_submit*' --toggle-collect='*reference_poll*'`;
//! they print `ios=N` so the caller can divide. `counts` prints
//! `@@COUNT key value` lines.

use std::process::ExitCode;
use std::time::Duration;

use bare_nvme_bench::many;
use bare_nvme_bench::random_lbas;
use bare_nvme_bench::reference::{self, Reference};
use bare_nvme_bench::rig::{self, Rig};

fn arg(args: &[String], i: usize) -> Result<usize, String> {
    args.get(i)
        .ok_or_else(|| format!("missing argument {i}"))?
        .parse()
        .map_err(|e| format!("argument {i}: {e}"))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("driver") => driver(&args),
        Some("reference") => reference(&args),
        Some("counts") => {
            counts();
            Ok(())
        }
        _ => Err(
            "usage: iobench driver BATCH SHADOW ROUNDS | reference BATCH ROUNDS | counts".into(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("iobench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn driver(args: &[String]) -> Result<(), String> {
    let batch = arg(args, 1)?;
    let shadow = arg(args, 2)? != 0;
    let rounds = arg(args, 3)?;
    let lbas = random_lbas(4096);
    let mut rig = Rig::new(shadow, 256, batch);
    rig.platform.freeze_clock(true);
    let (ios, failed) = rig::run_batches(&mut rig, batch, rounds, &lbas);
    rig.platform.freeze_clock(false);
    let sim = rig.finish();
    let c = sim.counters();
    if failed != 0 || c.protocol_errors != 0 || c.dma_regions != 0 {
        return Err(format!(
            "failed={failed} protocol_errors={} dma_regions={}",
            c.protocol_errors, c.dma_regions
        ));
    }
    println!("ios={ios}");
    Ok(())
}

fn reference(args: &[String]) -> Result<(), String> {
    let batch = arg(args, 1)?;
    let rounds = arg(args, 2)?;
    let lbas = random_lbas(4096);
    let mut r = Reference::new();
    let ios = reference::run_batches(&mut r, batch, rounds, &lbas);
    r.finish();
    println!("ios={ios}");
    Ok(())
}

fn per(n: u64, d: usize) -> f64 {
    n as f64 / d as f64
}

fn counts() {
    let lbas = random_lbas(4096);
    let rounds = 256;
    // Batches: submit BATCH, one poll rings, the device runs, a poll drains.
    for shadow in [false, true] {
        for batch in [1usize, 8, 32] {
            let mut rig = Rig::new(shadow, 256, batch);
            let before = rig.platform.access();
            let (ios, failed) = rig::run_batches(&mut rig, batch, rounds, &lbas);
            let a = rig.platform.access().since(before);
            let sim = rig.finish();
            let c = sim.counters();
            assert_eq!((failed, c.protocol_errors, c.dma_regions), (0, 0, 0));
            let key = format!("batch{batch}_shadow{}", shadow as u8);
            println!("@@COUNT {key}_mmio_reads_per_io {:.3}", per(a.reads, ios));
            println!("@@COUNT {key}_mmio_writes_per_io {:.3}", per(a.writes, ios));
            println!(
                "@@COUNT {key}_doorbells_per_batch {:.3}",
                per(a.sq_doorbells + a.cq_doorbells, rounds)
            );
        }
    }
    // Streaming at queue depth QD: each completion is resubmitted and rung
    // at once (one submitter per command), the device runs between polls.
    for shadow in [false, true] {
        for qd in [1usize, 4, 8, 32] {
            let (ios, a, errors) = rig::stream(shadow, qd, 4096, &lbas);
            assert_eq!(errors, 0);
            let key = format!("stream_qd{qd}_shadow{}", shadow as u8);
            println!("@@COUNT {key}_mmio_reads_per_io {:.3}", per(a.reads, ios));
            println!("@@COUNT {key}_mmio_writes_per_io {:.3}", per(a.writes, ios));
        }
    }
    // Tick cost: idle, and with completions flowing between ticks.
    for busy in [false, true] {
        let mut rig = Rig::new(true, 256, 8);
        let ticks = 200;
        let before = rig.platform.access();
        let config_before = rig.sim.counters().config_reads;
        let mut io_reads = 0;
        for t in 0..ticks {
            if busy {
                let a0 = rig.platform.access().reads;
                rig::run_batches(&mut rig, 8, 1, &lbas[t..]);
                io_reads += rig.platform.access().reads - a0;
            }
            rig.sim.advance(Duration::from_millis(1));
            let events = rig.driver.tick();
            assert!(events.is_empty(), "{events:?}");
        }
        let a = rig.platform.access().since(before);
        let config = rig.sim.counters().config_reads - config_before;
        let key = if busy { "tick_busy" } else { "tick_idle" };
        println!(
            "@@COUNT {key}_mmio_reads {:.3}",
            per(a.reads - io_reads, ticks)
        );
        println!("@@COUNT {key}_config_reads {:.3}", per(config, ticks));
        let sim = rig.finish();
        assert_eq!(sim.counters().dma_regions, 0);
    }
    // Many controllers: 16 in hot-plug ports, a driver with room for 16.
    let (sim, mut d, ids) = many::machine(many::CONTROLLERS);
    for busy in [false, true] {
        let cost = many::measure(&mut d, &sim, &ids, 1000, busy);
        let key = format!("many{}_{}", ids.len(), if busy { "busy" } else { "idle" });
        println!(
            "@@COUNT {key}_mmio_reads {:.3}",
            cost.per_tick(cost.mmio_reads)
        );
        println!("@@COUNT {key}_mmio_reads_max {}", cost.mmio_reads_max);
        println!(
            "@@COUNT {key}_config_reads {:.3}",
            cost.per_tick(cost.config_reads)
        );
        println!("@@COUNT {key}_config_reads_max {}", cost.config_reads_max);
        println!(
            "@@COUNT {key}_tick_us_median {:.2}",
            cost.median_nanos() as f64 / 1000.0
        );
    }
    many::finish(d, sim, &ids);
}
