//! What one tick costs: config space and register reads per tick, idle and
//! with completions flowing, for one and two controllers, with the monitor's
//! default intervals and with the slots polled on every tick.

mod common_hotplug;

use std::time::Duration;

use bare_nvme::QueueId;
use bare_nvme::{ControllerId, DriverConfig, IoOp, Platform};
use bare_nvme_sim::{Counters, PortId, Sim};
use common_hotplug::*;

/// Ticks measured per scenario.
const TICKS: u64 = 1_000;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Load {
    /// No I/O at all.
    Idle,
    /// Every controller completes a command between two ticks.
    Busy,
    /// The first controller is busy, the others idle.
    FirstBusy,
}

#[derive(Default, Debug)]
struct Cost {
    config_reads: u64,
    config_writes: u64,
    mmio_reads: u64,
    mmio_writes: u64,
    max_config_reads: u64,
    max_mmio_reads: u64,
    ticks_with_config_reads: u64,
}

fn diff(a: &Counters, b: &Counters) -> (u64, u64, u64, u64) {
    (
        b.config_reads - a.config_reads,
        b.config_writes - a.config_writes,
        b.mmio_reads - a.mmio_reads,
        b.mmio_writes - a.mmio_writes,
    )
}

/// One blocking-free read on `id`, polled until it completed.
fn one_command(d: &mut Drv, sim: &Sim, id: ControllerId, tag: u64) {
    let p = sim.platform();
    let buf = p.dma_alloc(BLOCK, 4096).unwrap();
    let c = d.controller(id).unwrap();
    let op = IoOp::Read {
        nsid: 1,
        lba: tag % 64,
        blocks: 1,
    };
    let _ = c.submit(QueueId::FIRST, op, Some(buf), tag).unwrap();
    let mut done = None;
    for _ in 0..10 {
        c.poll(QueueId::FIRST, |comp| done = Some(comp));
        if done.is_some() {
            break;
        }
        sim.process();
    }
    let done = done.expect("completed");
    done.result.unwrap();
    p.dma_free(done.buffer.unwrap());
}

fn measure(controllers: usize, slot_poll: Option<Duration>, load: Load) -> Cost {
    let mut b = Sim::builder();
    for i in 0..controllers {
        b = b
            .root_port(true)
            .controller_on_port(PortId(i), spec(&format!("cost-{i}")));
    }
    let sim = b.build();
    let mut config = DriverConfig::default();
    if let Some(interval) = slot_poll {
        config.slot_poll_interval = interval;
    }
    let mut d = driver(&sim, config);
    let ids = bring_up(&mut d, &sim, controllers);
    // Settle: nothing pending from bring-up.
    tick_until(&mut d, &sim, 20, |_| false);
    let mut cost = Cost::default();
    for t in 0..TICKS {
        let busy: &[ControllerId] = match load {
            Load::Idle => &[],
            Load::Busy => &ids,
            Load::FirstBusy => &ids[..1],
        };
        for &id in busy {
            one_command(&mut d, &sim, id, t);
        }
        sim.advance(TICK);
        let before = sim.counters();
        let events = d.tick();
        let after = sim.counters();
        assert!(events.is_empty(), "{events:?}");
        let (cr, cw, mr, mw) = diff(&before, &after);
        cost.config_reads += cr;
        cost.config_writes += cw;
        cost.mmio_reads += mr;
        cost.mmio_writes += mw;
        cost.max_config_reads = cost.max_config_reads.max(cr);
        cost.max_mmio_reads = cost.max_mmio_reads.max(mr);
        cost.ticks_with_config_reads += (cr > 0) as u64;
        // Registers: nothing for a controller that completed commands since
        // the last tick, one CSTS read for each other one.
        let idle = (controllers - busy.len()) as u64;
        assert_eq!(
            mr, idle,
            "tick {t}: {mr} register reads, {idle} idle controllers"
        );
        assert_eq!(mw, 0, "tick {t}: register writes");
        // Config space: one Slot Status read per port when the slot poll is
        // due, and at most two reads (vendor ID, class) for the plain-bus
        // probe when one is due. Nothing to clear while nothing changes.
        assert!(cr <= controllers as u64 + 2, "tick {t}: {cr} config reads");
        assert_eq!(cw, 0, "tick {t}: config writes");
    }
    let c = sim.counters();
    assert_eq!(c.protocol_errors, 0, "{:?}", sim.protocol_log());
    // Over the whole run: the slot polls due and the probes due, no more.
    let ms = TICKS * TICK.as_millis() as u64;
    let interval_ms = config.slot_poll_interval.as_millis() as u64;
    let slot_polls = ms.checked_div(interval_ms).map_or(TICKS, |n| n + 1);
    // Bus 0 is the only bus without a slot: 32 probes per rescan interval.
    let probe_ms = config.bus_rescan_interval.unwrap().as_micros() as u64 / 32;
    let probes = ms * 1000 / probe_ms + 1;
    let bound = controllers as u64 * slot_polls + 2 * probes;
    assert!(
        cost.config_reads <= bound,
        "{} config reads over {TICKS} ticks, bound {bound}",
        cost.config_reads
    );
    println!(
        "{controllers} controller(s), {load:?}, slot poll {:?}: per tick {:.3} config reads (max {}), {:.3} MMIO reads (max {}); {} of {TICKS} ticks read config space",
        config.slot_poll_interval,
        cost.config_reads as f64 / TICKS as f64,
        cost.max_config_reads,
        cost.mmio_reads as f64 / TICKS as f64,
        cost.max_mmio_reads,
        cost.ticks_with_config_reads
    );
    cost
}

#[test]
fn tick_cost_default_intervals() {
    for controllers in [1, 2] {
        for load in [Load::Idle, Load::Busy, Load::FirstBusy] {
            if load == Load::FirstBusy && controllers == 1 {
                continue;
            }
            let cost = measure(controllers, None, load);
            // With 1 ms ticks most ticks touch no config space at all.
            assert!(cost.ticks_with_config_reads * 4 < TICKS, "{cost:?}");
        }
    }
}

#[test]
fn tick_cost_slot_polled_every_tick() {
    for controllers in [1, 2] {
        for load in [Load::Idle, Load::Busy, Load::FirstBusy] {
            if load == Load::FirstBusy && controllers == 1 {
                continue;
            }
            let cost = measure(controllers, Some(Duration::ZERO), load);
            // Every tick reads each slot's status once.
            assert!(cost.config_reads >= controllers as u64 * TICKS, "{cost:?}");
        }
    }
}
