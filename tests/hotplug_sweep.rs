//! Surprise removal at every single register and config access of bring-up
//! and of an I/O burst, with both kinds of reads a vanished device gives
//! (zero as QEMU, all-ones as real hardware).

mod common_hotplug;

use bare_nvme::{ControllerId, DriverConfig, Error, Event, IoOp};
use bare_nvme_sim::{CtrlId, Fault, Hold, PortId, RemovedReads, Sim};
use common_hotplug::*;

/// Ticks a removal may take to be noticed and torn down.
const MAX_TICKS: usize = 200;
/// Ticks after the removal that must stay quiet.
const QUIET_TICKS: usize = 50;

fn sim(mode: RemovedReads) -> Sim {
    Sim::builder()
        .root_port(true)
        .controller_on_port(PortId(0), spec("sweep-1"))
        .removed_reads(mode)
        .build()
}

fn assert_clean(sim: &Sim, context: &str) {
    let c = sim.counters();
    assert_eq!(
        c.protocol_errors,
        0,
        "{context}: protocol errors {:?}",
        sim.protocol_log()
    );
    assert_eq!(c.wild_dma, 0, "{context}: wild DMA");
    assert_eq!(
        (c.dma_regions, c.dma_bytes),
        (0, 0),
        "{context}: DMA memory not back"
    );
}

/// Exactly one ending for `id`, and it is a surprise removal.
fn assert_one_removal(events: &[Event], id: ControllerId, context: &str) -> u32 {
    let ends = endings(events, id);
    assert_eq!(ends.len(), 1, "{context}: endings {ends:?} in {events:?}");
    match ends[0] {
        Event::Removed {
            failed_commands,
            detected_by,
            ..
        } => {
            assert_ne!(
                detected_by,
                bare_nvme::Detection::Orderly,
                "{context}: a surprise removal reported as orderly"
            );
            failed_commands
        }
        other => panic!("{context}: removal classified as {other:?}"),
    }
}

fn assert_quiet(driver: &mut Drv, sim: &Sim, context: &str) {
    for _ in 0..QUIET_TICKS {
        let ev = tick(driver, sim);
        assert!(ev.is_empty(), "{context}: events after removal: {ev:?}");
    }
}

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

/// Two ports: a controller serving on port 0, port 1 empty until the test
/// plugs one in.
fn two_port_sim(mode: RemovedReads) -> Sim {
    Sim::builder()
        .root_port(true)
        .controller_on_port(PortId(0), spec("stays"))
        .root_port(true)
        .removed_reads(mode)
        .build()
}

/// The controller on port 0 still serves verified I/O.
fn assert_serves(d: &mut Drv, sim: &Sim, id: ControllerId, context: &str) {
    use bare_nvme::Platform;
    let p = sim.platform();
    let mut buf = p.dma_alloc(BLOCK, 4096).unwrap();
    buf.as_mut_slice().fill(0xC3);
    let c = d.controller(id).unwrap();
    assert_eq!(c.state(), bare_nvme::State::Ready, "{context}");
    c.write(1, 5, &buf).unwrap();
    let mut back = p.dma_alloc(BLOCK, 4096).unwrap();
    c.read(1, 5, &mut back).unwrap();
    assert_eq!(back.as_slice(), buf.as_slice(), "{context}");
    p.dma_free(buf);
    p.dma_free(back);
}

fn sweep_hot_add(mode: RemovedReads) -> u64 {
    let setup = |mode| {
        let sim = two_port_sim(mode);
        let mut d = driver(&sim, DriverConfig::default());
        let stay = bring_up(&mut d, &sim, 1)[0];
        let added = sim.hot_add(PortId(1), spec("hot-added"));
        (sim, d, stay, added)
    };
    let (sim0, mut d, _, _) = setup(mode);
    let start = sim0.access_count();
    let (events, _) = tick_until(&mut d, &sim0, 1_000, |ev| ready_id(ev).is_some());
    assert!(ready_id(&events).is_some());
    let end = sim0.access_count();
    for n in start..end {
        let context = format!("{mode:?} removal at hot-add access {n}");
        let (sim, mut d, stay, added) = setup(mode);
        let base = sim.counters();
        assert_eq!(sim.access_count(), start, "{context}: not deterministic");
        sim.on_access(n, Fault::SurpriseRemove(added));
        let (events, _) = tick_until(&mut d, &sim, MAX_TICKS, |ev| {
            ev.iter()
                .any(|e| matches!(e, Event::Removed { .. } | Event::Failed { .. }))
        });
        assert!(sim.address(added).is_none(), "{context}: fault not fired");
        assert!(
            events.iter().all(|e| event_id(e) != stay),
            "{context}: {events:?}"
        );
        let attached: Vec<ControllerId> = events
            .iter()
            .filter(|e| matches!(e, Event::Attached { .. }))
            .map(event_id)
            .collect();
        match attached[..] {
            // Gone before the slot poll attached it.
            [] => assert!(events.is_empty(), "{context}: {events:?}"),
            [id] => {
                assert_one_removal(&events, id, &context);
            }
            _ => panic!("{context}: {events:?}"),
        }
        assert_quiet(&mut d, &sim, &context);
        assert_serves(&mut d, &sim, stay, &context);
        let c = sim.counters();
        assert_eq!(c.protocol_errors, 0, "{context}: {:?}", sim.protocol_log());
        assert_eq!(c.wild_dma, 0, "{context}");
        assert_eq!(
            (c.dma_regions, c.dma_bytes),
            (base.dma_regions, base.dma_bytes),
            "{context}: DMA memory not back"
        );
    }
    end - start
}

#[test]
fn removal_at_every_hot_add_access() {
    with_big_stack(|| {
        for mode in [RemovedReads::Zero, RemovedReads::AllOnes] {
            let n = sweep_hot_add(mode);
            println!("hot-add bring-up sweep ({mode:?}): {n} removal points");
        }
    });
}

/// Orderly detach by the attention button with commands in flight, the
/// device finishing them after a few ticks.
fn detach_script(
    d: &mut Drv,
    sim: &Sim,
    ledger: &mut Ledger,
    id: ControllerId,
    events: &mut Vec<Event>,
) {
    let p = sim.platform();
    sim.press_attention_button(PortId(0));
    for _ in 0..3 {
        events.extend(tick(d, sim));
        ledger.poll(d, &p, id);
    }
    sim.release_all();
    for _ in 0..MAX_TICKS {
        if !endings(events, id).is_empty() {
            break;
        }
        events.extend(tick(d, sim));
        ledger.poll(d, &p, id);
    }
}

fn sweep_detach(mode: RemovedReads) -> u64 {
    let setup = |mode| {
        let sim = sim(mode);
        let p = sim.platform();
        let mut d = driver(&sim, DriverConfig::default());
        let id = bring_up(&mut d, &sim, 1)[0];
        sim.hold(CtrlId(0), Hold::Io);
        let mut ledger = Ledger::default();
        for lba in 0..4 {
            ledger.write(&mut d, &p, id, lba, 2).unwrap();
        }
        ledger.poll(&mut d, &p, id);
        sim.process();
        (sim, d, id, ledger)
    };
    let (sim0, mut d, id, mut ledger) = setup(mode);
    let start = sim0.access_count();
    let mut events = Vec::new();
    detach_script(&mut d, &sim0, &mut ledger, id, &mut events);
    let end = sim0.access_count();
    assert_eq!(
        events,
        [Event::Removed {
            id,
            failed_commands: 0,
            detected_by: bare_nvme::Detection::Orderly
        }]
    );
    assert_eq!(ledger.assert_exactly_once(id, "reference detach"), 0);
    for n in start..end {
        let context = format!("{mode:?} removal at detach access {n}");
        let (sim, mut d, id, mut ledger) = setup(mode);
        assert_eq!(sim.access_count(), start, "{context}: not deterministic");
        sim.on_access(n, Fault::SurpriseRemove(CtrlId(0)));
        let mut events = Vec::new();
        detach_script(&mut d, &sim, &mut ledger, id, &mut events);
        assert!(
            sim.address(CtrlId(0)).is_none(),
            "{context}: fault not fired"
        );
        let ends = endings(&events, id);
        let failed = match ends[..] {
            [Event::Removed {
                failed_commands, ..
            }] => failed_commands as usize,
            _ => panic!("{context}: {events:?}"),
        };
        ledger.poll(&mut d, &sim.platform(), id);
        // Completed, or failed by the removal; never twice, never lost.
        let removed = ledger.assert_exactly_once(id, &context);
        // The teardown may also have failed the detach's own admin command.
        assert!(
            failed == removed || failed == removed + 1,
            "{context}: failed_commands {failed}, {removed} delivered"
        );
        assert_quiet(&mut d, &sim, &context);
        assert_clean(&sim, &context);
    }
    end - start
}

#[test]
fn removal_at_every_orderly_detach_access() {
    with_big_stack(|| {
        for mode in [RemovedReads::Zero, RemovedReads::AllOnes] {
            let n = sweep_detach(mode);
            println!("orderly detach sweep ({mode:?}): {n} removal points");
        }
    });
}

/// The burst on the controller in port 0 while the one in port 1 keeps
/// serving its own stream of commands.
fn burst_beside(
    d: &mut Drv,
    sim: &Sim,
    ledger: &mut Ledger,
    (gone, stay): (ControllerId, ControllerId),
    events: &mut Vec<Event>,
) {
    let p = sim.platform();
    sim.hold(CtrlId(0), Hold::Io);
    for round in 0..3u64 {
        ledger.write(d, &p, gone, round * 8, 8);
        ledger.read(d, &p, gone, 100 + round, 1);
        ledger
            .write(d, &p, stay, round, 1)
            .expect("survivor refused");
        ledger
            .read(d, &p, stay, 50 + round, 2)
            .expect("survivor refused");
        ledger.poll(d, &p, gone);
        ledger.poll(d, &p, stay);
        sim.process();
        sim.complete_held(1);
        ledger.poll(d, &p, gone);
        events.extend(tick(d, sim));
        ledger.poll(d, &p, stay);
        sim.advance(std::time::Duration::from_millis(10));
    }
    sim.release_all();
    ledger.poll(d, &p, gone);
    ledger.poll(d, &p, stay);
    events.extend(tick(d, sim));
}

fn sweep_burst_beside(mode: RemovedReads) -> u64 {
    let setup = |mode| {
        let sim = Sim::builder()
            .root_port(true)
            .controller_on_port(PortId(0), spec("goes"))
            .root_port(true)
            .controller_on_port(PortId(1), spec("stays"))
            .removed_reads(mode)
            .build();
        let mut d = driver(&sim, DriverConfig::default());
        let ids = bring_up(&mut d, &sim, 2);
        let gone = if d.address(ids[0]).ok() == sim.address(CtrlId(0)) {
            ids[0]
        } else {
            ids[1]
        };
        let stay = if gone == ids[0] { ids[1] } else { ids[0] };
        (sim, d, gone, stay)
    };
    let (sim0, mut d, gone, stay) = setup(mode);
    let start = sim0.access_count();
    let mut ledger = Ledger::default();
    let mut events = Vec::new();
    burst_beside(&mut d, &sim0, &mut ledger, (gone, stay), &mut events);
    let end = sim0.access_count();
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(ledger.assert_exactly_once(gone, "reference"), 0);
    for n in start..end {
        let context = format!("{mode:?} removal at access {n} beside a serving controller");
        let (sim, mut d, gone, stay) = setup(mode);
        assert_eq!(sim.access_count(), start, "{context}: not deterministic");
        sim.on_access(n, Fault::SurpriseRemove(CtrlId(0)));
        let p = sim.platform();
        let mut ledger = Ledger::default();
        let mut events = Vec::new();
        burst_beside(&mut d, &sim, &mut ledger, (gone, stay), &mut events);
        for _ in 0..MAX_TICKS {
            if !endings(&events, gone).is_empty() {
                break;
            }
            events.extend(tick(&mut d, &sim));
        }
        assert!(
            events.iter().all(|e| event_id(e) == gone),
            "{context}: {events:?}"
        );
        let failed = assert_one_removal(&events, gone, &context);
        ledger.poll(&mut d, &p, gone);
        ledger.poll(&mut d, &p, stay);
        assert_eq!(ledger.assert_exactly_once(gone, &context) as u32, failed);
        // The survivor: every command succeeded, nothing failed or dropped.
        assert_eq!(ledger.assert_exactly_once(stay, &context), 0);
        let c = d.controller(stay).unwrap();
        assert_eq!(c.failed_commands(), 0, "{context}");
        let f = c.faults();
        assert_eq!((f.wrong_queue, f.bad_sq_head, f.unknown_cid), (0, 0, 0));
        assert_quiet(&mut d, &sim, &context);
        assert_serves(&mut d, &sim, stay, &context);
        d.controller(stay).unwrap().detach().unwrap();
        assert_clean(&sim, &context);
    }
    end - start
}

#[test]
fn removal_at_every_access_beside_a_serving_controller() {
    with_big_stack(|| {
        for mode in [RemovedReads::Zero, RemovedReads::AllOnes] {
            let n = sweep_burst_beside(mode);
            println!("burst beside a serving controller ({mode:?}): {n} removal points");
        }
    });
}
