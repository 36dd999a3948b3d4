//! Hot-plug slots with a power controller, simulated: the driver powers a
//! card on, waits for the link, the spec's 100 ms and a function answering
//! Retry Status, drives the indicators, switches the slot off after a detach,
//! a removal or a fault, honours the attention button's abort window, and
//! keeps its hands off when told to.

mod common_hotplug;

use std::time::Duration;

use bare_nvme::{Detection, DriverConfig, Event, SlotFault, State};
use bare_nvme_sim::{CtrlId, PortId, Sim, SlotSpec};
use common_hotplug::*;

/// Slot Control: Power Controller Control (1 = off).
const POWER_OFF: u16 = 1 << 10;
/// Slot Control: the power indicator field and its encodings.
const PIC: u16 = 3 << 8;
const PIC_ON: u16 = 1 << 8;
const PIC_BLINK: u16 = 2 << 8;
const PIC_OFF: u16 = 3 << 8;
/// Slot Control: the attention indicator field, lit.
const AIC: u16 = 3 << 6;
const AIC_ON: u16 = 1 << 6;
const AIC_OFF: u16 = 3 << 6;

const SLOT: PortId = PortId(0);

/// A machine with one slot modelling `slot`, empty.
fn empty(slot: SlotSpec) -> Sim {
    Sim::builder().slot(slot).build()
}

/// A machine with one slot modelling `slot` and a controller in it.
fn populated(slot: SlotSpec) -> Sim {
    Sim::builder()
        .slot(slot)
        .controller_on_port(SLOT, spec("in-slot"))
        .build()
}

/// The default configuration with the attention button acting at once.
fn at_once() -> DriverConfig {
    DriverConfig::default().button_window(Duration::ZERO)
}

fn ms(ticks: usize) -> Duration {
    TICK * ticks as u32
}

/// Ticks until a controller is ready; returns the events and the ticks.
fn until_ready(d: &mut Drv, sim: &Sim, max: usize) -> (Vec<Event>, usize) {
    tick_until(d, sim, max, |ev| ready_id(ev).is_some())
}

fn assert_clean(sim: &Sim) {
    let c = sim.counters();
    assert_eq!(c.protocol_errors, 0, "{:?}", sim.protocol_log());
    assert_eq!(c.wild_dma, 0);
}

#[test]
fn a_card_added_to_a_powered_off_slot_is_powered_on_and_served() {
    let sim = empty(SlotSpec::powered());
    let mut d = driver(&sim, DriverConfig::default());
    assert_eq!(d.scan().unwrap(), 0);
    // An empty slot with a power controller stays off.
    assert_eq!(
        sim.slot_control(SLOT) & (POWER_OFF | PIC),
        POWER_OFF | PIC_OFF
    );
    let (events, _) = tick_until(&mut d, &sim, 50, |_| false);
    assert!(events.is_empty(), "{events:?}");
    let ctrl = sim.hot_add(SLOT, spec("added"));
    // Dark until the driver switches the power on.
    assert!(sim.address(ctrl).is_none());
    let (events, ticks) = tick_until(&mut d, &sim, 20, |_| sim.address(ctrl).is_some());
    assert!(events.is_empty(), "{events:?}");
    assert!(ticks <= 11, "powered on {ticks} ticks after the insertion");
    let control = sim.slot_control(SLOT);
    assert_eq!(control & (POWER_OFF | PIC), PIC_BLINK, "{control:#x}");
    // No configuration request before 100 ms: nothing attached yet.
    let (events, _) = tick_until(&mut d, &sim, 90, |_| false);
    assert!(events.is_empty(), "{events:?}");
    let (events, more) = until_ready(&mut d, &sim, 500);
    let total = ticks + 90 + more;
    println!("device added to Ready: {total} ticks of 1 ms");
    assert!(ms(total) >= Duration::from_millis(100));
    assert!(ms(total) < Duration::from_millis(200), "{total} ticks");
    assert!(matches!(events[0], Event::Attached { .. }), "{events:?}");
    assert_eq!(sim.slot_control(SLOT) & PIC, PIC_ON, "served: indicator on");
    assert_clean(&sim);
}

#[test]
fn scan_powers_a_populated_slot_nobody_powered() {
    let sim = populated(SlotSpec::powered().unpowered());
    assert_eq!(sim.slot_control(SLOT) & POWER_OFF, POWER_OFF);
    let mut d = driver(&sim, DriverConfig::default());
    // Nothing answers yet: the scan finds no function, but powers the slot.
    assert_eq!(d.scan().unwrap(), 0);
    assert_eq!(sim.slot_control(SLOT) & (POWER_OFF | PIC), PIC_BLINK);
    let (events, ticks) = until_ready(&mut d, &sim, 1000);
    assert!(ready_id(&events).is_some(), "{events:?}");
    assert!(ms(ticks) >= Duration::from_millis(100), "{ticks} ticks");
    assert_eq!(sim.slot_control(SLOT) & PIC, PIC_ON);

    // `wait_ready` after the scan waits for the slot's power-up too.
    let sim = populated(SlotSpec::powered().unpowered());
    sim.set_clock_step(Duration::from_micros(100));
    let mut d = driver(&sim, DriverConfig::default());
    assert_eq!(d.scan().unwrap(), 0);
    let events = d.wait_ready(Duration::from_secs(2));
    assert!(ready_id(&events).is_some(), "{events:?}");
}

#[test]
fn a_slot_firmware_powered_is_left_on() {
    let sim = populated(SlotSpec::powered());
    let before = sim.slot_control(SLOT);
    assert_eq!(before & (POWER_OFF | PIC), PIC_ON);
    let mut d = driver(&sim, DriverConfig::default());
    bring_up(&mut d, &sim, 1);
    assert_eq!(sim.slot_control(SLOT), before, "Slot Control written");
}

#[test]
fn link_training_and_retry_status_delay_the_first_attach() {
    let slot = SlotSpec::powered()
        .link_training(Duration::from_millis(50))
        .crs(Duration::from_millis(300));
    let sim = empty(slot);
    let mut d = driver(&sim, DriverConfig::default());
    d.scan().unwrap();
    sim.hot_add(SLOT, spec("slow"));
    // Power-on within a poll, then 50 ms link training, 100 ms wait, and
    // 300 ms of Retry Status counted from the link-up.
    let (events, ticks) = until_ready(&mut d, &sim, 2000);
    println!("with training and CRS: Ready after {ticks} ticks");
    assert!(ready_id(&events).is_some(), "{events:?}");
    let attached_at = events
        .iter()
        .position(|e| matches!(e, Event::Attached { .. }))
        .unwrap();
    assert_eq!(attached_at, 0, "{events:?}");
    assert!(ms(ticks) >= Duration::from_millis(350), "{ticks} ticks");
    assert!(ms(ticks) < Duration::from_millis(500), "{ticks} ticks");
    assert_clean(&sim);
}

#[test]
fn a_function_that_retries_past_its_readiness_time_is_given_up() {
    let sim = empty(SlotSpec::powered().crs(Duration::from_secs(3)));
    let mut d = driver(&sim, DriverConfig::default());
    d.scan().unwrap();
    sim.hot_add(SLOT, spec("never-ready"));
    let (events, ticks) = tick_until(&mut d, &sim, 3000, |ev| !ev.is_empty());
    println!("never ready: reported after {ticks} ticks");
    let port = sim.port_address(SLOT);
    assert_eq!(
        events,
        [Event::SlotFault {
            port,
            fault: SlotFault::NotReady
        }]
    );
    // 100 ms settle plus the 1 s readiness time, give or take a poll.
    assert!(ms(ticks) >= Duration::from_millis(1100), "{ticks} ticks");
    assert!(ms(ticks) <= Duration::from_millis(1130), "{ticks} ticks");
    let control = sim.slot_control(SLOT);
    assert_eq!(
        control & (POWER_OFF | PIC | AIC),
        POWER_OFF | PIC_OFF | AIC_ON
    );
}

#[test]
fn a_link_that_never_comes_up_switches_the_slot_off_until_the_next_insertion() {
    // A real slot: the card stays when the driver switches the slot off.
    let sim = empty(SlotSpec::powered().link_never_up().keeps_card());
    let mut d = driver(&sim, DriverConfig::default());
    d.scan().unwrap();
    let ctrl = sim.hot_add(SLOT, spec("no-link"));
    let (events, ticks) = tick_until(&mut d, &sim, 3000, |ev| !ev.is_empty());
    let port = sim.port_address(SLOT);
    assert_eq!(
        events,
        [Event::SlotFault {
            port,
            fault: SlotFault::LinkDown
        }]
    );
    assert!(ms(ticks) >= Duration::from_secs(1), "{ticks} ticks");
    let control = sim.slot_control(SLOT);
    assert_eq!(
        control & (POWER_OFF | PIC | AIC),
        POWER_OFF | PIC_OFF | AIC_ON
    );
    // Not retried on its own: the slot stays off, nothing is reported.
    let (events, _) = tick_until(&mut d, &sim, 3000, |_| false);
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(sim.slot_control(SLOT), control);
    // The attention button asks for it: after the 5 s window the slot is
    // powered on again (and fails again).
    sim.press_attention_button(SLOT);
    tick_until(&mut d, &sim, 4900, |_| false);
    assert_eq!(
        sim.slot_control(SLOT) & (POWER_OFF | PIC),
        POWER_OFF | PIC_BLINK
    );
    tick_until(&mut d, &sim, 150, |_| false);
    let retried = sim.slot_control(SLOT);
    assert_eq!(retried & (POWER_OFF | PIC), PIC_BLINK, "{retried:#x}");
    let (events, _) = tick_until(&mut d, &sim, 3000, |ev| !ev.is_empty());
    assert_eq!(
        events,
        [Event::SlotFault {
            port,
            fault: SlotFault::LinkDown
        }]
    );
    // A new insertion is tried again (and fails the same way here).
    sim.surprise_remove(ctrl);
    tick_until(&mut d, &sim, 20, |_| false);
    sim.hot_add(SLOT, spec("no-link-2"));
    let (events, _) = tick_until(&mut d, &sim, 20, |_| false);
    assert!(events.is_empty(), "{events:?}");
    let control = sim.slot_control(SLOT);
    assert_eq!(
        control & (POWER_OFF | PIC | AIC),
        PIC_BLINK | AIC_OFF,
        "{control:#x}"
    );
}

#[test]
fn command_completed_is_waited_for_across_ticks() {
    let slow = SlotSpec::powered().command_latency(Duration::from_millis(300));
    let sim = empty(slow);
    let mut d = driver(&sim, DriverConfig::default());
    d.scan().unwrap();
    sim.hot_add(SLOT, spec("slow-commands"));
    let (events, ticks) = until_ready(&mut d, &sim, 2000);
    assert!(ready_id(&events).is_some(), "{events:?}");
    // The power-on completes after 300 ms; only then the 100 ms wait.
    assert!(ms(ticks) >= Duration::from_millis(400), "{ticks} ticks");
    // The indicator's command (after the power-on's completion) is written.
    tick_until(&mut d, &sim, 400, |_| false);
    assert_eq!(sim.slot_control(SLOT) & PIC, PIC_ON);

    // Without Command Completed support nothing is waited for.
    let sim = empty(SlotSpec::powered().no_command_completed());
    let mut d = driver(&sim, DriverConfig::default());
    d.scan().unwrap();
    sim.hot_add(SLOT, spec("no-cc"));
    let (events, ticks) = until_ready(&mut d, &sim, 2000);
    assert!(ready_id(&events).is_some(), "{events:?}");
    assert!(ms(ticks) < Duration::from_millis(200), "{ticks} ticks");
}

#[test]
fn an_orderly_detach_switches_the_slot_off() {
    let sim = populated(SlotSpec::powered());
    let mut d = driver(&sim, DriverConfig::default());
    let id = bring_up(&mut d, &sim, 1)[0];
    d.begin_detach(id).unwrap();
    let (events, _) = tick_until(&mut d, &sim, 500, |_| {
        sim.slot_control(SLOT) & POWER_OFF != 0
    });
    assert_eq!(
        endings(&events, id),
        [Event::Removed {
            id,
            failed_commands: 0,
            detected_by: Detection::Orderly
        }]
    );
    assert_eq!(
        sim.slot_control(SLOT) & (POWER_OFF | PIC),
        POWER_OFF | PIC_OFF
    );
    // Power and indicator off: the platform (here, like QEMU, the slot)
    // takes the card out; nothing more is reported.
    assert!(!sim.is_present(CtrlId(0)));
    let (events, _) = tick_until(&mut d, &sim, 100, |_| false);
    assert!(events.is_empty(), "{events:?}");
}

#[test]
fn a_surprise_removal_switches_the_slot_off_and_a_new_card_is_powered_up() {
    let sim = populated(SlotSpec::powered());
    let mut d = driver(&sim, DriverConfig::default());
    let id = bring_up(&mut d, &sim, 1)[0];
    sim.surprise_remove(CtrlId(0));
    let (events, _) = tick_until(&mut d, &sim, 100, |ev| !endings(ev, id).is_empty());
    assert!(matches!(
        endings(&events, id)[..],
        [Event::Removed {
            detected_by: Detection::Slot,
            ..
        }]
    ));
    tick_until(&mut d, &sim, 20, |_| false);
    assert_eq!(
        sim.slot_control(SLOT) & (POWER_OFF | PIC),
        POWER_OFF | PIC_OFF
    );
    let ctrl = sim.hot_add(SLOT, spec("in-slot"));
    assert!(sim.address(ctrl).is_none(), "powered without the driver");
    let (events, _) = until_ready(&mut d, &sim, 500);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Returned { previous, .. } if *previous == id)),
        "{events:?}"
    );
}

#[test]
fn the_attention_button_waits_five_seconds_and_a_second_press_cancels() {
    let sim = populated(SlotSpec::powered());
    let mut d = driver(&sim, DriverConfig::default());
    let id = bring_up(&mut d, &sim, 1)[0];
    sim.press_attention_button(SLOT);
    let (events, _) = tick_until(&mut d, &sim, 2000, |_| false);
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(sim.slot_control(SLOT) & PIC, PIC_BLINK);
    assert_eq!(d.controller(id).unwrap().state(), State::Ready);
    // The second press inside the window: cancelled, indicator on again.
    sim.press_attention_button(SLOT);
    let (events, _) = tick_until(&mut d, &sim, 6000, |_| false);
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(sim.slot_control(SLOT) & PIC, PIC_ON);
    assert_eq!(d.controller(id).unwrap().state(), State::Ready);
    // A press left alone: detach at the window's end, then power off.
    sim.press_attention_button(SLOT);
    let pressed = sim.now();
    let (events, ticks) = tick_until(&mut d, &sim, 7000, |ev| !ev.is_empty());
    let took = sim.now() - pressed;
    println!("button press to Removed: {ticks} ticks, {took:?}");
    assert_eq!(
        events,
        [Event::Removed {
            id,
            failed_commands: 0,
            detected_by: Detection::Orderly
        }]
    );
    assert!(took >= Duration::from_secs(5), "{took:?}");
    assert!(took < Duration::from_millis(5100), "{took:?}");
    tick_until(&mut d, &sim, 20, |_| false);
    assert_eq!(
        sim.slot_control(SLOT) & (POWER_OFF | PIC),
        POWER_OFF | PIC_OFF
    );
}

#[test]
fn a_zero_button_window_detaches_at_once() {
    let sim = populated(SlotSpec::powered());
    let mut d = driver(&sim, at_once());
    let id = bring_up(&mut d, &sim, 1)[0];
    sim.press_attention_button(SLOT);
    let (events, ticks) = tick_until(&mut d, &sim, 500, |ev| !ev.is_empty());
    assert!(ticks < 100, "{ticks} ticks");
    assert!(matches!(
        endings(&events, id)[..],
        [Event::Removed {
            detected_by: Detection::Orderly,
            ..
        }]
    ));
}

#[test]
fn a_power_fault_removes_the_controller_and_lights_the_attention_indicator() {
    let sim = populated(SlotSpec::powered());
    let mut d = driver(&sim, DriverConfig::default());
    let id = bring_up(&mut d, &sim, 1)[0];
    sim.power_fault(SLOT);
    let (events, _) = tick_until(&mut d, &sim, 200, |ev| {
        ev.iter().any(|e| matches!(e, Event::SlotFault { .. })) && !endings(ev, id).is_empty()
    });
    assert!(
        matches!(endings(&events, id)[..], [Event::Removed { .. }]),
        "{events:?}"
    );
    let port = sim.port_address(SLOT);
    assert!(events.contains(&Event::SlotFault {
        port,
        fault: SlotFault::PowerFault
    }));
    let control = sim.slot_control(SLOT);
    assert_eq!(
        control & (POWER_OFF | AIC),
        POWER_OFF | AIC_ON,
        "{control:#x}"
    );
}

#[test]
fn an_open_latch_is_a_surprise_removal() {
    let sim = populated(SlotSpec::powered().mrl_sensor());
    let mut d = driver(&sim, DriverConfig::default());
    let id = bring_up(&mut d, &sim, 1)[0];
    sim.open_latch(SLOT);
    let (events, _) = tick_until(&mut d, &sim, 200, |ev| !endings(ev, id).is_empty());
    assert!(
        matches!(
            endings(&events, id)[..],
            [Event::Removed {
                detected_by: Detection::Slot,
                ..
            }]
        ),
        "{events:?}"
    );
    assert_eq!(sim.slot_control(SLOT) & POWER_OFF, POWER_OFF);
}

#[test]
fn hands_off_leaves_slot_control_alone() {
    let sim = empty(SlotSpec::powered());
    let config = DriverConfig::default().manage_slots(false);
    let mut d = driver(&sim, config);
    d.scan().unwrap();
    let before = sim.slot_control(SLOT);
    let ctrl = sim.hot_add(SLOT, spec("left-dark"));
    let (events, _) = tick_until(&mut d, &sim, 2000, |_| false);
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(sim.slot_control(SLOT), before);
    assert!(sim.address(ctrl).is_none());
}

/// A card pulled `after` ticks into its power-up and pushed back (or a new
/// one inserted) `gap` ticks later: whatever was attached ends once, the
/// card there at the end is served, and nothing is attached while dark.
fn pull_during_power_up(after: usize, gap: usize) {
    let slot = SlotSpec::powered()
        .link_training(Duration::from_millis(30))
        .crs(Duration::from_millis(60))
        .command_latency(Duration::from_millis(5));
    let sim = empty(slot);
    let mut d = driver(&sim, DriverConfig::default());
    d.scan().unwrap();
    let first = sim.hot_add(SLOT, spec("first"));
    let (mut events, _) = tick_until(&mut d, &sim, after, |_| false);
    sim.surprise_remove(first);
    let (more, _) = tick_until(&mut d, &sim, gap, |_| false);
    events.extend(more);
    let second = sim.hot_add(SLOT, spec("second"));
    let (more, _) = tick_until(&mut d, &sim, 3000, |ev| {
        ev.iter()
            .any(|e| matches!(e, Event::Ready { serial, .. } if serial.as_str() == "second"))
    });
    events.extend(more);
    let context = format!("pulled {after} ticks in, back {gap} ticks later: {events:?}");
    assert!(sim.address(second).is_some(), "{context}");
    let ready: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Ready { id, serial, .. } => Some((*id, serial.as_str().to_string())),
            _ => None,
        })
        .collect();
    assert_eq!(
        ready.last().map(|r| r.1.as_str()),
        Some("second"),
        "{context}"
    );
    // Every controller attached before the last ended exactly once.
    let attached: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Attached { id, .. } => Some(*id),
            _ => None,
        })
        .collect();
    let (last, earlier) = attached.split_last().expect("attached");
    assert!(endings(&events, *last).is_empty(), "{context}");
    for id in earlier {
        assert_eq!(endings(&events, *id).len(), 1, "{context}");
    }
    assert!(
        !events.iter().any(|e| matches!(e, Event::SlotFault { .. })),
        "{context}"
    );
    assert_clean(&sim);
}

#[test]
fn a_card_pulled_and_reinserted_at_every_step_of_its_power_up() {
    // Ticks into the power-up: before the first poll, at the power-on
    // command, waiting for Command Completed, training, the 100 ms wait,
    // Retry Status, and bring-up after the attach.
    for after in [0, 1, 5, 10, 12, 20, 40, 60, 100, 140, 170, 200, 230, 260] {
        for gap in [0, 1, 15] {
            pull_during_power_up(after, gap);
        }
    }
}

#[test]
fn an_insertion_that_also_presses_the_button_powers_up_at_once() {
    // QEMU's device_add sets Presence Detect Changed and Attention Button
    // Pressed together: the insertion wins, no 5 s window.
    let sim = empty(SlotSpec::powered());
    let mut d = driver(&sim, DriverConfig::default());
    d.scan().unwrap();
    sim.hot_add(SLOT, spec("added-with-button"));
    sim.press_attention_button(SLOT);
    let (events, ticks) = until_ready(&mut d, &sim, 1000);
    assert!(ready_id(&events).is_some(), "{events:?}");
    assert!(ms(ticks) < Duration::from_millis(200), "{ticks} ticks");
    // A press during the power-up is ignored as well.
    let sim = empty(SlotSpec::powered().link_training(Duration::from_millis(50)));
    let mut d = driver(&sim, DriverConfig::default());
    d.scan().unwrap();
    sim.hot_add(SLOT, spec("pressed-while-starting"));
    tick_until(&mut d, &sim, 30, |_| false);
    sim.press_attention_button(SLOT);
    let (events, ticks) = until_ready(&mut d, &sim, 1000);
    assert!(ready_id(&events).is_some(), "{events:?}");
    assert!(ms(ticks) < Duration::from_millis(200), "{ticks} ticks");
    assert_eq!(sim.slot_control(SLOT) & PIC, PIC_ON);
}

#[test]
fn containment_with_the_device_present_is_a_link_loss_and_is_released() {
    let sim = populated(SlotSpec::powered().dpc());
    let mut d = driver(&sim, DriverConfig::default());
    let id = bring_up(&mut d, &sim, 1)[0];
    sim.contain(SLOT);
    let (events, _) = tick_until(&mut d, &sim, 1000, |ev| {
        ev.iter()
            .any(|e| matches!(e, Event::Returned { previous, .. } if *previous == id))
    });
    assert!(
        matches!(
            endings(&events, id)[..],
            [Event::Removed {
                detected_by: Detection::Slot | Detection::StatusRegister,
                ..
            }]
        ),
        "{events:?}"
    );
    assert!(!sim.contained(SLOT));
    assert!(ready_id(&events).is_some(), "{events:?}");
    assert_clean(&sim);
}

#[test]
fn containment_after_a_surprise_removal_is_released_so_a_new_card_trains() {
    let sim = populated(SlotSpec::powered().dpc());
    let mut d = driver(&sim, DriverConfig::default());
    let id = bring_up(&mut d, &sim, 1)[0];
    sim.surprise_remove(CtrlId(0));
    sim.contain(SLOT);
    let (events, _) = tick_until(&mut d, &sim, 200, |_| !sim.contained(SLOT));
    assert!(!sim.contained(SLOT), "containment kept: {events:?}");
    assert_eq!(endings(&events, id).len(), 1, "{events:?}");
    sim.hot_add(SLOT, spec("after-containment"));
    let (events, _) = until_ready(&mut d, &sim, 1000);
    assert!(ready_id(&events).is_some(), "{events:?}");

    // Hands off: the containment stays and the new card never trains.
    let sim = populated(SlotSpec::powered().dpc());
    let config = DriverConfig::default().manage_slots(false);
    let mut d = driver(&sim, config);
    bring_up(&mut d, &sim, 1);
    sim.surprise_remove(CtrlId(0));
    sim.contain(SLOT);
    tick_until(&mut d, &sim, 200, |_| false);
    assert!(sim.contained(SLOT));
}

#[test]
fn a_card_left_in_a_switched_off_slot_comes_back_with_the_button() {
    // A real slot: after the orderly detach the card stays, dark.
    let sim = populated(SlotSpec::powered().keeps_card());
    let mut d = driver(&sim, DriverConfig::default());
    let id = bring_up(&mut d, &sim, 1)[0];
    d.begin_detach(id).unwrap();
    let (events, _) = tick_until(&mut d, &sim, 500, |_| {
        sim.slot_control(SLOT) & POWER_OFF != 0
    });
    assert_eq!(endings(&events, id).len(), 1, "{events:?}");
    assert!(sim.is_present(CtrlId(0)));
    assert!(
        sim.address(CtrlId(0)).is_none(),
        "answers while switched off"
    );
    // Left off: nothing happens until someone asks.
    let (events, _) = tick_until(&mut d, &sim, 2000, |_| false);
    assert!(events.is_empty(), "{events:?}");
    sim.press_attention_button(SLOT);
    let pressed = sim.now();
    let (events, _) = until_ready(&mut d, &sim, 8000);
    let took = sim.now() - pressed;
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Returned { previous, .. } if *previous == id)),
        "{events:?}"
    );
    assert!(took >= Duration::from_millis(5100), "{took:?}");
    assert_eq!(sim.slot_control(SLOT) & (POWER_OFF | PIC), PIC_ON);
}

#[test]
fn a_card_still_initialising_at_scan_is_attached_once_it_answers() {
    // Powered by firmware, but still answering Retry Status for 300 ms: the
    // scan finds nothing, the slot waits for the function.
    let sim = populated(
        SlotSpec::powered()
            .crs(Duration::from_millis(300))
            .booting(),
    );
    let mut d = driver(&sim, DriverConfig::default());
    assert_eq!(d.scan().unwrap(), 0);
    let (events, ticks) = until_ready(&mut d, &sim, 2000);
    assert!(ready_id(&events).is_some(), "{events:?}");
    assert!(ms(ticks) >= Duration::from_millis(250), "{ticks} ticks");
    assert!(ms(ticks) < Duration::from_millis(400), "{ticks} ticks");
    // Past its readiness time it is given up like a new card.
    let sim = populated(SlotSpec::powered().crs(Duration::from_secs(5)).booting());
    let mut d = driver(&sim, DriverConfig::default());
    assert_eq!(d.scan().unwrap(), 0);
    let (events, _) = tick_until(&mut d, &sim, 2000, |ev| !ev.is_empty());
    assert_eq!(
        events,
        [Event::SlotFault {
            port: sim.port_address(SLOT),
            fault: SlotFault::NotReady
        }]
    );
}
