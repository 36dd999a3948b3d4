//! Surprise removal at every access of the rest of a controller's life: a
//! hot-add into an empty slot, an orderly detach, and an I/O burst on a
//! controller beside the one that vanishes.

mod common_hotplug;
mod sweep_common;

use bare_nvme::{ControllerId, DriverConfig, Event};
use bare_nvme_sim::{CtrlId, Fault, Hold, PortId, RemovedReads, Sim};
use common_hotplug::*;
use sweep_common::*;

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

/// The default configuration with the attention button acting at once.
fn at_once() -> DriverConfig {
    DriverConfig::default().button_window(std::time::Duration::ZERO)
}

fn sweep_detach(mode: RemovedReads) -> u64 {
    let setup = |mode| {
        let sim = sim(mode);
        let p = sim.platform();
        let mut d = driver(&sim, at_once());
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
