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

use bare_nvme::{ControllerId, DriverConfig, Error, Event, IoOp, Platform, State};
use bare_nvme_sim::{CtrlId, Fault, Hold, PortId, RemovedReads, Sim};
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

/// Runs `cycles` remove/re-insert cycles; returns how many completed.
fn run(cycles: u64, seed: u64, mode: RemovedReads) -> u64 {
    let sim = Sim::builder()
        .root_port(true)
        .controller_on_port(PortId(0), spec(SERIAL))
        .removed_reads(mode)
        .build();
    let p = sim.platform();
    let mut d = driver(&sim, DriverConfig::default());
    let mut id = bring_up(&mut d, &sim, 1)[0];
    let mut ctrl = CtrlId(0);
    let baseline = sim.counters();
    let (base_regions, base_bytes) = (baseline.dma_regions, baseline.dma_bytes);
    assert!(base_regions > 0);
    let mut rng = Rng(seed | 1);
    let mut ledger = Ledger::default();
    let mut old_ids: Vec<ControllerId> = Vec::new();
    let mut total_failed = 0u64;
    let mut total_ok = 0u64;
    let mut immediate = 0;

    for cycle in 0..cycles {
        let context = format!("{mode:?} cycle {cycle} (seed {seed})");
        // A random set in flight: some completed and delivered, some
        // completed but not yet reaped, the rest held by the device.
        sim.hold(ctrl, Hold::Io);
        let k = rng.below(13);
        for _ in 0..k {
            random_command(&mut rng, &mut d, &sim, &mut ledger, id);
        }
        ledger.poll(&mut d, &p, id);
        sim.process();
        sim.complete_held(rng.below(k + 1) as usize);
        if rng.below(2) == 0 {
            ledger.poll(&mut d, &p, id);
        }
        sim.complete_held(rng.below(3) as usize);
        let mut events = Vec::new();
        if rng.below(3) == 0 {
            events.extend(tick(&mut d, &sim));
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
            ledger.poll(&mut d, &p, id);
            for _ in 0..100 {
                if sim.address(ctrl).is_none() {
                    break;
                }
                events.extend(tick(&mut d, &sim));
                ledger.poll(&mut d, &p, id);
            }
            assert!(
                sim.address(ctrl).is_none(),
                "{context}: removal never fired"
            );
        }
        let reinsert_now = rng.below(4) == 0;
        if reinsert_now {
            // Pulled and pushed back before the driver looked: the slot's
            // change bits still tell.
            immediate += 1;
        } else {
            let (more, _) = tick_until(&mut d, &sim, 100, |ev| !endings(ev, id).is_empty());
            events.extend(more);
            ledger.poll(&mut d, &p, id);
            assert_eq!(ledger.outstanding(id), 0, "{context}");
            // Nothing is attached: every byte is back.
            let c = sim.counters();
            assert_eq!((c.dma_regions, c.dma_bytes), (0, 0), "{context}");
        }
        let old_ctrl = ctrl;
        ctrl = sim.hot_add(PortId(0), spec(SERIAL));
        assert_ne!(ctrl, old_ctrl);
        let (more, ticks) = tick_until(&mut d, &sim, 1_000, |ev| {
            ev.iter().any(|e| matches!(e, Event::Returned { .. }))
        });
        events.extend(more);
        assert!(ticks < 1_000, "{context}: not back: {events:?}");
        // Exactly one ending for the old controller, a surprise removal.
        let ends = endings(&events, id);
        let failed = match ends[..] {
            [Event::Removed {
                failed_commands, ..
            }] => failed_commands,
            _ => panic!("{context}: {events:?}"),
        };
        let new = ready_id(&events).expect("ready");
        assert!(
            events.contains(&Event::Returned {
                id: new,
                previous: id
            }),
            "{context}: {events:?}"
        );
        assert_eq!(events.len(), 4, "{context}: {events:?}");
        // What was outstanding is delivered once, with DeviceRemoved.
        ledger.poll(&mut d, &p, id);
        assert_eq!(ledger.outstanding(id), 0, "{context}");
        let (ok, removed) = ledger.retire(id, &context);
        assert_eq!(removed, failed as usize, "{context}: failed_commands");
        total_failed += removed as u64;
        total_ok += ok as u64;
        // Memory: back to the baseline of one ready controller.
        let c = sim.counters();
        assert_eq!(
            (c.dma_regions, c.dma_bytes),
            (base_regions, base_bytes),
            "{context}"
        );
        assert_eq!(c.protocol_errors, 0, "{context}: {:?}", sim.protocol_log());
        assert_eq!(c.wild_dma, 0, "{context}");
        // Old handles: stale or a removed controller, never the new one.
        old_ids.push(id);
        if old_ids.len() > 8 {
            old_ids.remove(0);
        }
        let commands = io_commands(&sim);
        for &old in &old_ids {
            match d.controller(old) {
                Err(e) => assert_eq!(e, Error::StaleHandle, "{context}"),
                Ok(c) => assert_eq!(c.state(), State::Removed, "{context}"),
            }
            let refused = ledger.rejected.len();
            assert!(ledger.write(&mut d, &p, old, 0, 1).is_none(), "{context}");
            assert!(matches!(
                ledger.rejected[refused..],
                [Error::StaleHandle | Error::DeviceRemoved]
            ));
            ledger.rejected.clear();
            assert_eq!(ledger.poll(&mut d, &p, old), 0, "{context}");
        }
        assert_eq!(
            io_commands(&sim),
            commands,
            "{context}: an old handle reached a device"
        );
        id = new;
        // Now and then, verified I/O on the new controller.
        if cycle % 16 == 0 {
            let lba = rng.below(1024);
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
    // Every command of every cycle completed exactly once.
    ledger.retire(id, "all cycles");
    assert!(ledger.unknown.is_empty());
    println!(
        "{mode:?}: {cycles} cycles, {} commands ({total_ok} ok, {total_failed} failed with DeviceRemoved), {immediate} re-inserted before the driver looked",
        ledger.retired
    );
    d.controller(id).unwrap().detach().unwrap();
    let c = sim.counters();
    assert_eq!((c.dma_regions, c.dma_bytes), (0, 0));
    cycles
}

/// `cycles` cycles in segments of `HOTPLUG_SEGMENT`.
fn run_segments(cycles: u64, seed: u64, mode: RemovedReads) -> u64 {
    let segment = env("HOTPLUG_SEGMENT", 100).max(1);
    let start = std::time::Instant::now();
    let mut done = 0;
    let mut n = 0;
    while done < cycles {
        let this = segment.min(cycles - done);
        done += run(this, seed.wrapping_add(n * 0x9E37_79B9), mode);
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
    assert_eq!(run_segments(cycles, seed, RemovedReads::Zero), cycles);
}

#[test]
fn remove_reinsert_cycles_all_ones_reads() {
    let cycles = (env("HOTPLUG_CYCLES", 10_000) / 4).max(1);
    let seed = env("HOTPLUG_SEED", 0x5EED_0002);
    assert_eq!(run_segments(cycles, seed, RemovedReads::AllOnes), cycles);
}
