//! Surprise removal at every single register and config access of bring-up
//! and of an I/O burst, with both kinds of reads a vanished device gives
//! (zero as QEMU, all-ones as real hardware).

mod common_hotplug;
mod sweep_common;

use bare_nvme::{ControllerId, DriverConfig, Error, Event, IoOp};
use bare_nvme_sim::{CtrlId, Fault, Hold, RemovedReads, Sim};
use common_hotplug::*;
use sweep_common::*;
/// Accesses of scan + bring-up up to Ready, without faults.
fn bring_up_range(mode: RemovedReads) -> (u64, u64) {
    let sim = sim(mode);
    let mut d = driver(&sim, DriverConfig::default());
    let start = sim.access_count();
    bring_up(&mut d, &sim, 1);
    (start, sim.access_count())
}

fn sweep_bring_up(mode: RemovedReads) -> u64 {
    let (start, end) = bring_up_range(mode);
    assert!(
        end - start > 20,
        "bring-up too short to be real: {start}..{end}"
    );
    for n in start..end {
        let context = format!("{mode:?} removal at bring-up access {n}");
        let sim = sim(mode);
        sim.on_access(n, Fault::SurpriseRemove(CtrlId(0)));
        let mut d = driver(&sim, DriverConfig::default());
        let attached = d.scan().unwrap();
        let (events, _) = tick_until(&mut d, &sim, MAX_TICKS, |ev| {
            ev.iter()
                .any(|e| matches!(e, Event::Removed { .. } | Event::Failed { .. }))
        });
        assert!(
            sim.address(CtrlId(0)).is_none(),
            "{context}: fault not fired"
        );
        let ids: Vec<ControllerId> = events
            .iter()
            .filter(|e| matches!(e, Event::Attached { .. }))
            .map(event_id)
            .collect();
        if attached == 0 {
            // Gone before enumeration (or BAR placement) finished: nothing
            // to report at all.
            assert!(events.is_empty(), "{context}: {events:?}");
        } else {
            assert_eq!(ids.len(), 1, "{context}: {events:?}");
            assert_one_removal(&events, ids[0], &context);
            assert!(
                !events.iter().any(|e| matches!(e, Event::Returned { .. })),
                "{context}: {events:?}"
            );
            let c = d.controller(ids[0]).unwrap();
            assert_eq!(c.state(), bare_nvme::State::Removed, "{context}");
        }
        assert_quiet(&mut d, &sim, &context);
        assert_clean(&sim, &context);
    }
    end - start
}

/// The I/O burst: commands submitted in batches, some completed by the
/// device while others stay held, ticks in between (some with the slot poll
/// due, some idle). Tolerates the device vanishing anywhere.
fn burst(d: &mut Drv, sim: &Sim, ledger: &mut Ledger, id: ControllerId, events: &mut Vec<Event>) {
    let p = sim.platform();
    sim.hold(CtrlId(0), Hold::Io);
    for round in 0..4u64 {
        ledger.write(d, &p, id, round * 8, 8);
        ledger.read(d, &p, id, 100 + round, 1);
        if round % 2 == 1 {
            ledger.submit(d, &p, id, IoOp::Flush { nsid: 1 }, None);
        }
        ledger.poll(d, &p, id);
        sim.process();
        sim.complete_held(2);
        ledger.poll(d, &p, id);
        events.extend(tick(d, sim));
        // A tick with nothing completed since the last one reads CSTS; a
        // later one polls the slot.
        events.extend(tick(d, sim));
        sim.advance(std::time::Duration::from_millis(10));
    }
    sim.release_all();
    ledger.poll(d, &p, id);
    events.extend(tick(d, sim));
    ledger.poll(d, &p, id);
}

fn sweep_burst(mode: RemovedReads) -> u64 {
    let config = DriverConfig::default();
    // Reference run: where the burst's accesses lie, and that it works.
    let sim0 = sim(mode);
    let mut d = driver(&sim0, config);
    let id = bring_up(&mut d, &sim0, 1)[0];
    let start = sim0.access_count();
    let mut ledger = Ledger::default();
    let mut events = Vec::new();
    burst(&mut d, &sim0, &mut ledger, id, &mut events);
    let end = sim0.access_count();
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(ledger.assert_exactly_once(id, "reference burst"), 0);
    assert_eq!(ledger.entries.len(), 10);
    assert!(end - start > 3, "burst too short: {start}..{end}");

    let mut total_failed = 0;
    for n in start..end {
        let context = format!("{mode:?} removal at burst access {n}");
        let sim = sim(mode);
        let mut d = driver(&sim, config);
        let id = bring_up(&mut d, &sim, 1)[0];
        assert_eq!(
            sim.access_count(),
            start,
            "{context}: bring-up not deterministic"
        );
        sim.on_access(n, Fault::SurpriseRemove(CtrlId(0)));
        let p = sim.platform();
        let mut ledger = Ledger::default();
        let mut events = Vec::new();
        burst(&mut d, &sim, &mut ledger, id, &mut events);
        assert!(
            sim.address(CtrlId(0)).is_none(),
            "{context}: fault not fired"
        );
        for _ in 0..MAX_TICKS {
            if !endings(&events, id).is_empty() {
                break;
            }
            events.extend(tick(&mut d, &sim));
            ledger.poll(&mut d, &p, id);
        }
        let failed = assert_one_removal(&events, id, &context);
        // Everything outstanding is delivered by the next poll.
        ledger.poll(&mut d, &p, id);
        let removed = ledger.assert_exactly_once(id, &context);
        assert_eq!(failed as usize, removed, "{context}: failed_commands");
        total_failed += removed;
        assert_eq!(ledger.outstanding(id), 0);
        assert_eq!(ledger.poll(&mut d, &p, id), 0, "{context}: delivered twice");
        // New submissions fail cleanly, nothing reaches a device.
        let before = ledger.rejected.len();
        assert!(ledger.write(&mut d, &p, id, 0, 1).is_none(), "{context}");
        assert_eq!(
            ledger.rejected[before..],
            [Error::DeviceRemoved],
            "{context}"
        );
        assert_quiet(&mut d, &sim, &context);
        assert_eq!(ledger.poll(&mut d, &p, id), 0, "{context}");
        assert_clean(&sim, &context);
    }
    // The sweep must have caught commands in flight, not only idle moments.
    assert!(
        total_failed as u64 > end - start,
        "{total_failed} commands failed"
    );
    println!("  {total_failed} in-flight commands failed over the sweep");
    end - start
}

#[test]
fn removal_at_every_bring_up_access_zero_reads() {
    println!("driver value: {} bytes", driver_size());
    let n = sweep_bring_up(RemovedReads::Zero);
    println!("bring-up sweep (reads 0): {n} removal points");
}

#[test]
fn removal_at_every_bring_up_access_all_ones_reads() {
    let n = sweep_bring_up(RemovedReads::AllOnes);
    println!("bring-up sweep (reads all-ones): {n} removal points");
}

#[test]
fn removal_at_every_io_burst_access_zero_reads() {
    let n = sweep_burst(RemovedReads::Zero);
    println!("I/O burst sweep (reads 0): {n} removal points");
}

#[test]
fn removal_at_every_io_burst_access_all_ones_reads() {
    let n = sweep_burst(RemovedReads::AllOnes);
    println!("I/O burst sweep (reads all-ones): {n} removal points");
}
