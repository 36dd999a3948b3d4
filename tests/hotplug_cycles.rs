//! Remove / re-insert cycles on one hot-plug port with random sets of
//! commands in flight: a per-command ledger proves each completed exactly
//! once, DMA memory returns to its baseline, handles from before a removal
//! never reach the new controller, and the returning device is recognised.
//!
//! `HOTPLUG_CYCLES` sets the number of cycles (default 10,000 with zero
//! reads and a quarter of that with all-ones reads). The simulation keeps
//! every controller ever plugged in and routes each access past all of them,
//! so its cost grows with the cycles done: the run is split into segments of
//! `HOTPLUG_SEGMENT` cycles (default 100), each on a fresh machine and
//! driver, which keeps a debug `cargo test` at a few seconds per thousand
//! cycles. All 10,000 cycles on one machine and one driver:
//! `HOTPLUG_SEGMENT=10000 cargo test --release --test hotplug_cycles -- --nocapture`.
//! `HOTPLUG_SEED` picks another random sequence.

mod common_hotplug;

use std::time::Duration;

use bare_nvme::{ControllerId, DriverConfig, Error, Event, IoOp, Platform, State};
use bare_nvme_sim::{CtrlId, Fault, Hold, PortId, RemovedReads, Sim, SimPlatform, SlotSpec};
use common_hotplug::*;

const SERIAL: &str = "cycler-0001";

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn io_commands(sim: &Sim) -> u64 {
    sim.counters().io_commands.iter().sum()
}

/// Submits a random command to `id`.
fn random_command(rng: &mut Rng, d: &mut Drv, sim: &Sim, ledger: &mut Ledger, id: ControllerId) {
    let p = sim.platform();
    let lba = rng.below(1024);
    let accepted = match rng.below(4) {
        0 | 1 => ledger.write(d, &p, id, lba, 1 + rng.below(8) as u32),
        2 => ledger.read(d, &p, id, lba, 1 + rng.below(8) as u32),
        _ => ledger.submit(d, &p, id, IoOp::Flush { nsid: 1 }, None),
    };
    assert!(accepted.is_some(), "refused: {:?}", ledger.rejected);
}

/// One port's remove/re-insert cycles: the machine, the driver, the
/// controller now in the port, and what the cycles added up to.
struct Cycler {
    sim: Sim,
    p: SimPlatform,
    d: Drv,
    /// The driver's handle of the controller now in the port.
    id: ControllerId,
    /// The simulation's id of that controller.
    ctrl: CtrlId,
    /// DMA regions and bytes in use with one ready controller.
    base: (u64, u64),
    rng: Rng,
    ledger: Ledger,
    /// Handles of the last few removed controllers.
    old_ids: Vec<ControllerId>,
    total_failed: u64,
    total_ok: u64,
    /// Cycles re-inserted before the driver looked.
    immediate: u64,
}

impl Cycler {
    /// A machine with one hot-plug port and a ready controller in it.
    fn new(seed: u64, mode: RemovedReads, slot: SlotSpec) -> Self {
        let sim = Sim::builder()
            .slot(slot)
            .controller_on_port(PortId(0), spec(SERIAL))
            .removed_reads(mode)
            .build();
        let p = sim.platform();
        let mut d = driver(&sim, DriverConfig::default());
        let id = bring_up(&mut d, &sim, 1)[0];
        let baseline = sim.counters();
        let (base_regions, base_bytes) = (baseline.dma_regions, baseline.dma_bytes);
        assert!(base_regions > 0);
        Cycler {
            sim,
            p,
            d,
            id,
            ctrl: CtrlId(0),
            base: (base_regions, base_bytes),
            rng: Rng(seed | 1),
            ledger: Ledger::default(),
            old_ids: Vec::new(),
            total_failed: 0,
            total_ok: 0,
            immediate: 0,
        }
    }

    /// One cycle: a random set in flight, the removal, the re-insert; the old
    /// controller ends once, its commands are delivered once, memory is back
    /// at the baseline and old handles reach nothing.
    fn cycle(&mut self, cycle: u64, context: &str) {
        let mut events = self.load_and_remove(context);
        let new = self.reinsert(&mut events, context);
        self.check_ending(&events, new, context);
        self.check_old_handles(context);
        self.id = new;
        // Now and then, verified I/O on the new controller.
        if cycle.is_multiple_of(16) {
            self.verified_io(cycle, context);
        }
    }

    /// Puts a random set of commands in flight and removes the controller;
    /// returns the events the ticks in between reported.
    fn load_and_remove(&mut self, context: &str) -> Vec<Event> {
        let (sim, p, id, ctrl) = (&self.sim, &self.p, self.id, self.ctrl);
        let (d, rng, ledger) = (&mut self.d, &mut self.rng, &mut self.ledger);
        // A random set in flight: some completed and delivered, some
        // completed but not yet reaped, the rest held by the device.
        sim.hold(ctrl, Hold::Io);
        let k = rng.below(13);
        for _ in 0..k {
            random_command(rng, d, sim, ledger, id);
        }
        ledger.poll(d, p, id);
        sim.process();
        sim.complete_held(rng.below(k + 1) as usize);
        if rng.below(2) == 0 {
            ledger.poll(d, p, id);
        }
        sim.complete_held(rng.below(3) as usize);
        let mut events = Vec::new();
        if rng.below(3) == 0 {
            events.extend(tick(d, sim));
        }
        // The removal: now, or at one of the next few register or config
        // accesses the driver makes while serving and ticking.
        if rng.below(2) == 0 {
            sim.surprise_remove(ctrl);
        } else {
            sim.on_access(
                sim.access_count() + rng.below(4),
                Fault::SurpriseRemove(ctrl),
            );
            ledger.poll(d, p, id);
            for _ in 0..100 {
                if sim.address(ctrl).is_none() {
                    break;
                }
                events.extend(tick(d, sim));
                ledger.poll(d, p, id);
            }
            assert!(
                sim.address(ctrl).is_none(),
                "{context}: removal never fired"
            );
        }
        events
    }

    /// Plugs a new controller in, at once or after the driver saw the
    /// removal, and ticks until it is reported as returned; returns its
    /// handle.
    fn reinsert(&mut self, events: &mut Vec<Event>, context: &str) -> ControllerId {
        let (sim, p, id) = (&self.sim, &self.p, self.id);
        let reinsert_now = self.rng.below(4) == 0;
        if reinsert_now {
            // Pulled and pushed back before the driver looked: the slot's
            // change bits still tell.
            self.immediate += 1;
        } else {
            let (more, _) = tick_until(&mut self.d, sim, 100, |ev| !endings(ev, id).is_empty());
            events.extend(more);
            self.ledger.poll(&mut self.d, p, id);
            assert_eq!(self.ledger.outstanding(id), 0, "{context}");
            // Nothing is attached: every byte is back.
            let c = sim.counters();
            assert_eq!((c.dma_regions, c.dma_bytes), (0, 0), "{context}");
        }
        let old_ctrl = self.ctrl;
        self.ctrl = sim.hot_add(PortId(0), spec(SERIAL));
        assert_ne!(self.ctrl, old_ctrl);
        let (more, ticks) = tick_until(&mut self.d, sim, 1_000, |ev| {
            ev.iter().any(|e| matches!(e, Event::Returned { .. }))
        });
        events.extend(more);
        assert!(ticks < 1_000, "{context}: not back: {events:?}");
        ready_id(events).expect("ready")
    }

    /// The old controller ended once, by surprise removal, and `new` returned
    /// in its place; what was outstanding is delivered once, memory is back
    /// at the baseline, and the device saw no protocol error or wild DMA.
    fn check_ending(&mut self, events: &[Event], new: ControllerId, context: &str) {
        let (sim, p, id) = (&self.sim, &self.p, self.id);
        // Exactly one ending for the old controller, a surprise removal.
        let ends = endings(events, id);
        let failed = match ends[..] {
            [Event::Removed {
                failed_commands, ..
            }] => failed_commands,
            _ => panic!("{context}: {events:?}"),
        };
        assert!(
            events.contains(&Event::Returned {
                id: new,
                previous: id
            }),
            "{context}: {events:?}"
        );
        assert_eq!(events.len(), 4, "{context}: {events:?}");
        // What was outstanding is delivered once, with DeviceRemoved.
        self.ledger.poll(&mut self.d, p, id);
        assert_eq!(self.ledger.outstanding(id), 0, "{context}");
        let (ok, removed) = self.ledger.retire(id, context);
        assert_eq!(removed, failed as usize, "{context}: failed_commands");
        self.total_failed += removed as u64;
        self.total_ok += ok as u64;
        // Memory: back to the baseline of one ready controller.
        let c = sim.counters();
        assert_eq!((c.dma_regions, c.dma_bytes), self.base, "{context}");
        assert_eq!(c.protocol_errors, 0, "{context}: {:?}", sim.protocol_log());
        assert_eq!(c.wild_dma, 0, "{context}");
    }

    /// Handles of the last few removed controllers, this cycle's included:
    /// stale or a removed controller, never the new one.
    fn check_old_handles(&mut self, context: &str) {
        let (sim, p) = (&self.sim, &self.p);
        let (d, ledger) = (&mut self.d, &mut self.ledger);
        self.old_ids.push(self.id);
        if self.old_ids.len() > 8 {
            self.old_ids.remove(0);
        }
        let commands = io_commands(sim);
        for &old in &self.old_ids {
            match d.controller(old) {
                Err(e) => assert_eq!(e, Error::StaleHandle, "{context}"),
                Ok(c) => assert_eq!(c.state(), State::Removed, "{context}"),
            }
            let refused = ledger.rejected.len();
            assert!(ledger.write(d, p, old, 0, 1).is_none(), "{context}");
            assert!(matches!(
                ledger.rejected[refused..],
                [Error::StaleHandle | Error::DeviceRemoved]
            ));
            ledger.rejected.clear();
            assert_eq!(ledger.poll(d, p, old), 0, "{context}");
        }
        assert_eq!(
            io_commands(sim),
            commands,
            "{context}: an old handle reached a device"
        );
    }

    /// A block written to the controller in the port reads back the same.
    fn verified_io(&mut self, cycle: u64, context: &str) {
        let (p, id) = (&self.p, self.id);
        let d = &mut self.d;
        let lba = self.rng.below(1024);
        let mut buf = p.dma_alloc(BLOCK, 4096).unwrap();
        buf.as_mut_slice().fill(cycle as u8);
        d.controller(id).unwrap().write(1, lba, &buf).unwrap();
        let mut back = p.dma_alloc(BLOCK, 4096).unwrap();
        d.controller(id).unwrap().read(1, lba, &mut back).unwrap();
        assert_eq!(back.as_slice(), buf.as_slice(), "{context}");
        p.dma_free(buf);
        p.dma_free(back);
    }
}

/// Runs `cycles` remove/re-insert cycles; returns how many completed.
fn run(cycles: u64, seed: u64, mode: RemovedReads, slot: &SlotSpec) -> u64 {
    let mut c = Cycler::new(seed, mode, slot.clone());
    for cycle in 0..cycles {
        let context = format!("{mode:?} cycle {cycle} (seed {seed})");
        c.cycle(cycle, &context);
    }
    // Every command of every cycle completed exactly once.
    c.ledger.retire(c.id, "all cycles");
    assert!(c.ledger.unknown.is_empty());
    println!(
        "{mode:?}: {cycles} cycles, {} commands ({} ok, {} failed with DeviceRemoved), {} re-inserted before the driver looked",
        c.ledger.retired, c.total_ok, c.total_failed, c.immediate
    );
    c.d.controller(c.id).unwrap().detach().unwrap();
    let counters = c.sim.counters();
    assert_eq!((counters.dma_regions, counters.dma_bytes), (0, 0));
    cycles
}

/// `cycles` cycles in segments of `HOTPLUG_SEGMENT`.
fn run_segments(cycles: u64, seed: u64, mode: RemovedReads, slot: SlotSpec) -> u64 {
    let segment = env("HOTPLUG_SEGMENT", 100).max(1);
    let start = std::time::Instant::now();
    let mut done = 0;
    let mut n = 0;
    while done < cycles {
        let this = segment.min(cycles - done);
        done += run(this, seed.wrapping_add(n * 0x9E37_79B9), mode, &slot);
        n += 1;
    }
    println!(
        "{mode:?}: {done} remove/re-insert cycles survived in {n} segments, {:?}",
        start.elapsed()
    );
    done
}

#[test]
fn remove_reinsert_cycles_zero_reads() {
    let cycles = env("HOTPLUG_CYCLES", 10_000);
    let seed = env("HOTPLUG_SEED", 0x5EED_0001);
    let slot = SlotSpec::default();
    assert_eq!(run_segments(cycles, seed, RemovedReads::Zero, slot), cycles);
}

#[test]
fn remove_reinsert_cycles_all_ones_reads() {
    let cycles = (env("HOTPLUG_CYCLES", 10_000) / 4).max(1);
    let seed = env("HOTPLUG_SEED", 0x5EED_0002);
    let slot = SlotSpec::default();
    assert_eq!(
        run_segments(cycles, seed, RemovedReads::AllOnes, slot),
        cycles
    );
}

#[test]
fn remove_reinsert_cycles_in_a_slot_with_a_power_controller() {
    // Every re-insert goes through the driver's power-up: Command Completed
    // after 2 ms, 5 ms of link training, 20 ms of Retry Status.
    let cycles = (env("HOTPLUG_CYCLES", 10_000) / 10).max(1);
    let seed = env("HOTPLUG_SEED", 0x5EED_0003);
    let slot = SlotSpec::powered()
        .command_latency(Duration::from_millis(2))
        .link_training(Duration::from_millis(5))
        .crs(Duration::from_millis(20));
    assert_eq!(
        run_segments(cycles, seed, RemovedReads::AllOnes, slot),
        cycles
    );
}
