//! Hot-plug scenarios on the simulated machine: orderly removal by the
//! attention button, link flap, hot-add into an empty port, removal during
//! bring-up, removal next to a controller that keeps serving, and how many
//! ticks removal detection takes.

mod common_hotplug;

use std::time::Duration;

use bare_nvme::{Detection, DriverConfig, Error, Event, Platform, State};
use bare_nvme_sim::{CtrlId, Hold, PortId, RemovedReads, Sim};
use common_hotplug::*;

const DELETE_SQ: u8 = 0x00;
const DELETE_CQ: u8 = 0x04;

fn two_ports(first: bool, second: bool) -> Sim {
    let mut b = Sim::builder().root_port(true).root_port(true);
    if first {
        b = b.controller_on_port(PortId(0), spec("port0-sn"));
    }
    if second {
        b = b.controller_on_port(PortId(1), spec("port1-sn"));
    }
    b.build()
}

fn assert_clean(sim: &Sim) {
    let c = sim.counters();
    assert_eq!(c.protocol_errors, 0, "{:?}", sim.protocol_log());
    assert_eq!(c.wild_dma, 0);
    assert_eq!((c.dma_regions, c.dma_bytes), (0, 0), "DMA memory not back");
}

/// The default configuration with the attention button acting at once (the
/// button's abort window has tests of its own, in `slot_power.rs`).
fn at_once() -> DriverConfig {
    DriverConfig::default().button_window(Duration::ZERO)
}

#[test]
fn attention_button_detaches_in_order() {
    let sim = Sim::single(spec("orderly"));
    let p = sim.platform();
    let mut d = driver(&sim, at_once());
    let id = bring_up(&mut d, &sim, 1)[0];
    let queues = d.controller(id).unwrap().io_queue_count() as u64;
    assert!(queues >= 1);
    sim.hold(CtrlId(0), Hold::Io);
    let mut ledger = Ledger::default();
    for lba in 0..6 {
        ledger.write(&mut d, &p, id, lba * 8, 8).unwrap();
    }
    ledger.poll(&mut d, &p, id);
    sim.process();
    assert_eq!(sim.held_count(), 6);
    let before = sim.counters();

    sim.press_attention_button(PortId(0));
    let (events, _) = tick_until(&mut d, &sim, 20, |_| false);
    // Draining: nothing reported yet, no new submissions accepted.
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(d.controller(id).unwrap().state(), State::Detaching);
    assert!(ledger.write(&mut d, &p, id, 0, 1).is_none());
    assert!(!ledger.rejected.is_empty());
    // The device finishes what it holds; the drain sees it and the detach
    // deletes the queues and shuts the controller down.
    sim.release_all();
    let (events, ticks) = tick_until(&mut d, &sim, 100, |ev| !ev.is_empty());
    println!("orderly detach finished {ticks} ticks after the drain completed");
    assert_eq!(
        events,
        [Event::Removed {
            id,
            failed_commands: 0,
            detected_by: Detection::Orderly
        }]
    );
    ledger.poll(&mut d, &p, id);
    for (tag, e) in &ledger.entries {
        assert_eq!(e.results, [Ok(())], "tag {tag}");
    }
    let after = sim.counters();
    assert_eq!(after.admin(DELETE_SQ) - before.admin(DELETE_SQ), queues);
    assert_eq!(after.admin(DELETE_CQ) - before.admin(DELETE_CQ), queues);
    assert_eq!(d.controller(id).unwrap().state(), State::Detached);
    assert_clean(&sim);
    // Now the slot may be emptied: nothing more is reported.
    sim.surprise_remove(CtrlId(0));
    let (events, _) = tick_until(&mut d, &sim, 50, |_| false);
    assert!(events.is_empty(), "{events:?}");
    assert_clean(&sim);
}

#[test]
fn attention_button_aborts_what_does_not_drain() {
    let sim = Sim::single(spec("orderly-stuck"));
    let p = sim.platform();
    let mut config = at_once();
    config.controller.io_timeout = Duration::from_millis(50);
    let mut d = driver(&sim, config);
    let id = bring_up(&mut d, &sim, 1)[0];
    sim.hold(CtrlId(0), Hold::Io);
    let mut ledger = Ledger::default();
    for lba in 0..3 {
        ledger.read(&mut d, &p, id, lba, 1).unwrap();
    }
    ledger.poll(&mut d, &p, id);
    sim.press_attention_button(PortId(0));
    // Never released: the drain deadline passes, the rest is aborted.
    let (events, ticks) = tick_until(&mut d, &sim, 500, |ev| !ev.is_empty());
    println!("stuck detach finished after {ticks} ticks");
    assert!(
        matches!(
            events[..],
            [Event::Removed {
                detected_by: Detection::Orderly,
                failed_commands: 3,
                ..
            }]
        ),
        "{events:?}"
    );
    ledger.poll(&mut d, &p, id);
    for e in ledger.entries.values() {
        assert_eq!(e.results, [Err(Error::Aborted)]);
    }
    let c = sim.counters();
    assert_eq!(c.protocol_errors, 0, "{:?}", sim.protocol_log());
    assert_eq!(c.wild_dma, 0);
    assert_eq!(c.dma_regions, 0);
}

/// A link flap `phase` ticks after bring-up settled, the controller busy
/// or idle: Removed (by the slot, however it was first noticed), then the
/// same device attached again, Ready and Returned.
fn link_flap(mode: RemovedReads, phase: usize, busy: bool) {
    let context = format!("{mode:?} phase {phase} busy {busy}");
    let sim = Sim::builder()
        .root_port(true)
        .controller_on_port(PortId(0), spec("flapper"))
        .removed_reads(mode)
        .build();
    let p = sim.platform();
    let mut d = driver(&sim, DriverConfig::default());
    let id = bring_up(&mut d, &sim, 1)[0];
    tick_until(&mut d, &sim, phase, |_| false);
    let mut ledger = Ledger::default();
    if busy {
        // Completions flowed since the last tick: the tick reads no CSTS.
        ledger.read(&mut d, &p, id, 9, 1).unwrap();
        assert_eq!(ledger.poll(&mut d, &p, id), 1);
    }
    sim.hold(CtrlId(0), Hold::Io);
    for lba in 0..4 {
        ledger.write(&mut d, &p, id, lba, 1).unwrap();
    }
    ledger.poll(&mut d, &p, id);
    sim.process();
    sim.link_flap(PortId(0));
    let (events, ticks) = tick_until(&mut d, &sim, 2_000, |ev| {
        ev.iter().any(|e| matches!(e, Event::Returned { .. }))
    });
    let removed: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e, Event::Removed { .. } | Event::Failed { .. }))
        .collect();
    assert!(
        matches!(removed[..], [Event::Removed { id: r, failed_commands: 4, detected_by: Detection::Slot }] if *r == id),
        "{context}: {events:?}"
    );
    let new = ready_id(&events).expect("ready again");
    assert_ne!(new, id);
    assert!(
        events.contains(&Event::Returned {
            id: new,
            previous: id
        }),
        "{context}: {events:?}"
    );
    assert_eq!(events.len(), 4, "{context}: {events:?}");
    if phase == 0 && !busy {
        println!("link flap ({mode:?}): back after {ticks} ticks: {events:?}");
    }
    ledger.poll(&mut d, &p, id);
    assert_eq!(ledger.assert_exactly_once(id, &context), 4);
    // The old handle never reaches the new controller.
    let io = sim.counters().io_commands;
    assert!(ledger.write(&mut d, &p, id, 0, 1).is_none());
    assert_eq!(sim.counters().io_commands, io);
    // The device serves I/O again.
    sim.hold(CtrlId(0), Hold::None);
    let mut buf = p.dma_alloc(BLOCK, 4096).unwrap();
    buf.as_mut_slice().fill(0x5A);
    d.controller(new).unwrap().write(1, 7, &buf).unwrap();
    assert_eq!(sim.read_block(CtrlId(0), 1, 7), buf.as_slice());
    p.dma_free(buf);
    d.controller(new).unwrap().detach().unwrap();
    assert_clean(&sim);
}

#[test]
fn link_flap_removes_and_brings_back() {
    with_big_stack(|| {
        for mode in [RemovedReads::Zero, RemovedReads::AllOnes] {
            // Every phase of the 10 ms slot poll: the CSTS read may notice
            // the reset device first, or the slot poll.
            for phase in 0..12 {
                for busy in [false, true] {
                    link_flap(mode, phase, busy);
                }
            }
        }
    });
}

#[test]
fn link_down_then_up() {
    let sim = Sim::single(spec("down-up"));
    let mut d = driver(&sim, DriverConfig::default());
    let id = bring_up(&mut d, &sim, 1)[0];
    sim.link_down(PortId(0));
    let (events, _) = tick_until(&mut d, &sim, 100, |_| false);
    assert!(
        matches!(events[..], [Event::Removed { id: r, failed_commands: 0, .. }] if r == id),
        "{events:?}"
    );
    assert_clean(&sim);
    sim.link_up(PortId(0));
    let (events, _) = tick_until(&mut d, &sim, 1_000, |ev| {
        ev.iter().any(|e| matches!(e, Event::Returned { .. }))
    });
    let new = ready_id(&events).expect("back");
    assert!(events.contains(&Event::Returned {
        id: new,
        previous: id
    }));
    d.controller(new).unwrap().detach().unwrap();
    assert_clean(&sim);
}

#[test]
fn plain_bus_removal_and_hot_add() {
    // Bus 0 has no slot: CSTS finds the removal, re-probing finds the
    // hot-add within the rescan interval.
    let sim = Sim::builder().controller_on_bus0(spec("on-bus0")).build();
    // A hot-added function on bus 0 comes with BAR0 unassigned; the driver
    // needs a root window to place it (the top of the MMIO aperture, above
    // what firmware assigned).
    let config = DriverConfig::default().root_window(Some((
        bare_nvme::PhysAddr::new(bare_nvme_sim::MMIO_APERTURE.1 - (64 << 20)),
        64 << 20,
    )));
    let mut d = driver(&sim, config);
    let id = bring_up(&mut d, &sim, 1)[0];
    tick_until(&mut d, &sim, 5, |_| false);
    sim.surprise_remove(CtrlId(0));
    let (events, ticks) = tick_until(&mut d, &sim, 100, |ev| !ev.is_empty());
    assert_eq!(ticks, 1);
    assert!(
        matches!(events[..], [Event::Removed { id: r, detected_by: Detection::StatusRegister, .. }] if r == id),
        "{events:?}"
    );
    assert_clean(&sim);
    let added = sim.hot_add_at(bare_nvme_sim::Location::Bus0, spec("on-bus0"));
    let (events, ticks) = tick_until(&mut d, &sim, 5_000, |ev| ready_id(ev).is_some());
    let new = ready_id(&events).expect("found by re-probing");
    let rescan_ticks = (config.bus_rescan_interval.unwrap().as_nanos() / TICK.as_nanos()) as usize;
    println!("bus 0 hot-add found and ready after {ticks} ticks (rescan {rescan_ticks} ticks)");
    assert!(ticks <= rescan_ticks + 50, "{ticks}");
    assert!(events.contains(&Event::Returned {
        id: new,
        previous: id
    }));
    assert_eq!(d.address(new).ok(), sim.address(added));
    d.controller(new).unwrap().detach().unwrap();
    assert_clean(&sim);
}

#[test]
fn hot_add_into_empty_port() {
    let sim = two_ports(true, false);
    let p = sim.platform();
    let mut d = driver(&sim, DriverConfig::default());
    let first = bring_up(&mut d, &sim, 1)[0];
    let (events, _) = tick_until(&mut d, &sim, 50, |_| false);
    assert!(events.is_empty());
    let ctrl = sim.hot_add(PortId(1), spec("newcomer"));
    let (events, ticks) = tick_until(&mut d, &sim, 2_000, |ev| ready_id(ev).is_some());
    println!("hot-add ready after {ticks} ticks");
    let id = ready_id(&events).expect("hot-added controller ready");
    assert!(
        matches!(events[0], Event::Attached { id: a, address } if a == id
        && Some(address) == sim.address(ctrl))
    );
    assert!(!events.iter().any(|e| matches!(e, Event::Returned { .. })));
    match events.iter().find(|e| matches!(e, Event::Ready { .. })) {
        Some(Event::Ready {
            serial, namespaces, ..
        }) => {
            assert_eq!(serial.as_str(), "newcomer");
            assert_eq!(*namespaces, 1);
        }
        _ => unreachable!(),
    }
    // Both serve I/O.
    for (c, who) in [(first, CtrlId(0)), (id, ctrl)] {
        let mut buf = p.dma_alloc(BLOCK, 4096).unwrap();
        buf.as_mut_slice().fill(who.0 as u8 + 1);
        d.controller(c).unwrap().write(1, 3, &buf).unwrap();
        assert_eq!(sim.read_block(who, 1, 3), buf.as_slice());
        p.dma_free(buf);
    }
    for c in [first, id] {
        d.controller(c).unwrap().detach().unwrap();
    }
    assert_clean(&sim);
}

#[test]
fn removal_during_bring_up_at_each_tick() {
    // Coarser than the per-access sweep: removal between any two ticks of
    // bring-up, by the test's hand rather than a scheduled fault.
    let sim = Sim::single(spec("early"));
    let mut d = driver(&sim, DriverConfig::default());
    d.scan().unwrap();
    let (events, ticks) = tick_until(&mut d, &sim, 1_000, |ev| ready_id(ev).is_some());
    assert!(ready_id(&events).is_some());
    for k in 0..ticks {
        let sim = Sim::single(spec("early"));
        let mut d = driver(&sim, DriverConfig::default());
        d.scan().unwrap();
        let (mut events, _) = tick_until(&mut d, &sim, k, |_| false);
        sim.surprise_remove(CtrlId(0));
        let (more, _) = tick_until(&mut d, &sim, 50, |_| false);
        events.extend(more);
        let id = event_id(&events[0]);
        let ends = endings(&events, id);
        assert!(
            matches!(ends[..], [Event::Removed { .. }]),
            "removed after {k} ticks: {events:?}"
        );
        assert_clean(&sim);
    }
    println!("removal after each of {ticks} bring-up ticks");
}

#[test]
fn removal_leaves_second_controller_untouched() {
    let sim = two_ports(true, true);
    let p = sim.platform();
    let mut d = driver(&sim, DriverConfig::default());
    let ids = bring_up(&mut d, &sim, 2);
    let addr0 = sim.address(CtrlId(0)).unwrap();
    let (gone, stay) = if d.address(ids[0]).unwrap() == addr0 {
        (ids[0], ids[1])
    } else {
        (ids[1], ids[0])
    };
    sim.hold(CtrlId(0), Hold::Io);
    let mut ledger = Ledger::default();
    let mut lba = 0;
    for _ in 0..5 {
        ledger.write(&mut d, &p, gone, 0, 1).unwrap();
    }
    ledger.poll(&mut d, &p, gone);
    sim.process();
    let mut removed_event = None;
    let mut served = 0;
    for t in 0..200 {
        // The survivor keeps a stream of I/O going every tick.
        for _ in 0..3 {
            ledger.write(&mut d, &p, stay, lba, 1).unwrap();
            lba += 1;
        }
        served += ledger.poll(&mut d, &p, stay);
        if t == 20 {
            sim.surprise_remove(CtrlId(0));
        }
        for e in tick(&mut d, &sim) {
            assert_eq!(event_id(&e), gone, "{e:?}");
            assert!(removed_event.replace(e).is_none(), "second event {e:?}");
        }
        ledger.poll(&mut d, &p, gone);
    }
    served += ledger.poll(&mut d, &p, stay);
    assert!(matches!(
        removed_event,
        Some(Event::Removed {
            failed_commands: 5,
            ..
        })
    ));
    assert_eq!(ledger.assert_exactly_once(gone, "removed"), 5);
    assert_eq!(ledger.assert_exactly_once(stay, "survivor"), 0);
    assert_eq!(served, 600);
    assert_eq!(d.controller(stay).unwrap().state(), State::Ready);
    let c = d.controller(stay).unwrap();
    assert_eq!(c.failed_commands(), 0);
    let f = c.faults();
    assert_eq!((f.wrong_queue, f.bad_sq_head, f.unknown_cid), (0, 0, 0));
    d.controller(stay).unwrap().detach().unwrap();
    assert_clean(&sim);
}

/// Ticks from removal to the Removed event.
fn detection_ticks(config: DriverConfig, busy: bool, phase: usize) -> (usize, Detection) {
    let sim = Sim::single(spec("latency"));
    let p = sim.platform();
    let mut d = driver(&sim, config);
    let id = bring_up(&mut d, &sim, 1)[0];
    let mut ledger = Ledger::default();
    // Settle so the slot poll phase is arbitrary but fixed.
    tick_until(&mut d, &sim, 3 + phase, |_| false);
    if busy {
        // Completions flowed since the last tick: the tick skips CSTS.
        ledger.read(&mut d, &p, id, 0, 1).unwrap();
        assert_eq!(ledger.poll(&mut d, &p, id), 1);
    }
    sim.surprise_remove(CtrlId(0));
    let start = sim.now();
    let (events, ticks) = tick_until(&mut d, &sim, 1_000, |ev| !ev.is_empty());
    let ms = (sim.now().as_nanos() - start.as_nanos()) as f64 / 1e6;
    match events[..] {
        [Event::Removed { detected_by, .. }] => {
            println!(
                "detection (phase {phase}): slot poll {:?}, busy {busy}: {ticks} ticks ({ms:.3} ms virtual), by {detected_by:?}",
                config.slot_poll_interval
            );
            (ticks, detected_by)
        }
        _ => panic!("{events:?}"),
    }
}

#[test]
fn detection_latency_in_ticks() {
    let every_tick = DriverConfig::default().slot_poll_interval(Duration::ZERO);
    let defaults = DriverConfig::default();
    let slot_rarely = DriverConfig::default().slot_poll_interval(Duration::from_secs(3600));
    let interval_ticks = (defaults.slot_poll_interval.as_nanos() / TICK.as_nanos()) as usize;
    let mut worst_default = 0;
    // Every phase of the slot poll relative to the removal.
    for phase in 0..=interval_ticks {
        for busy in [false, true] {
            let (ticks, _) = detection_ticks(every_tick, busy, phase);
            assert_eq!(ticks, 1, "slot polled every tick, busy {busy}");
            // Idle: the tick's CSTS read (or the slot poll) notices it at once.
            // Busy: the tick after completions reads nothing, but no
            // completion can follow a removal, so the next one reads CSTS
            // unless the slot poll came first.
            let (ticks, _) = detection_ticks(defaults, busy, phase);
            assert!(
                ticks <= if busy { 2 } else { 1 },
                "defaults, busy {busy}: {ticks}"
            );
            assert!(ticks <= interval_ticks);
            worst_default = worst_default.max(ticks);
            // The CSTS read alone, with the slot practically never polled.
            let (ticks, how) = detection_ticks(slot_rarely, busy, phase);
            assert_eq!(how, Detection::StatusRegister);
            assert_eq!(ticks, if busy { 2 } else { 1 });
        }
    }
    println!("worst detection latency with defaults and 1 ms ticks: {worst_default} ticks");
}
