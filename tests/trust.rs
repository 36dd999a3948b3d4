//! A device that glitches, lies or stalls, and an embedder who uses the
//! driver in ways the common paths do not: the lifecycle holds its promises.
//! Memory returns only once the device provably cannot reach it; a detach
//! ends with a shutdown or says it could not; no doorbell reaches a disabled
//! controller; a tick never spins; no event is lost or miscounted.

mod misbehaviour_common;

use std::time::Duration;

use bare_nvme::nvme::command::admin;
use bare_nvme::pci::config::{Command, ConfigSpace};
use bare_nvme::QueueId;
use bare_nvme::{
    Controller, ControllerConfig, Detection, Driver, DriverConfig, Error, Event, IoOp, PhysAddr,
    Platform, State, Wait,
};
use bare_nvme_sim::{
    ControllerSpec, CtrlId, Hold, Misbehaviour, NamespaceSpec, PortId, Sim, SimPlatform,
};
use misbehaviour_common::*;

const CTRL: CtrlId = CtrlId(0);

/// A controller driven on its own, without the driver's PCI layer: the test
/// turns on memory decoding and bus mastering, as firmware would.
fn standalone(sim: &Sim, config: ControllerConfig) -> Controller<SimPlatform> {
    let access = sim.config_access();
    let address = sim.address(CTRL).expect("function");
    ConfigSpace::new(&access, address)
        .update_command(Command::MEMORY | Command::BUS_MASTER, Command::empty());
    let platform = sim.platform();
    let len = 16 << 10;
    let regs = platform
        .map_registers(PhysAddr::new(sim.bar(CTRL)), len)
        .expect("mapped");
    Controller::new(platform, (), regs, len, config)
}

fn short_config() -> ControllerConfig {
    config().controller
}

#[test]
fn a_standalone_detach_whose_queue_deletion_times_out_still_disables_before_memory_returns() {
    let sim = Sim::single(spec());
    let mut c = standalone(&sim, short_config());
    c.bring_up().expect("ready");
    // From now on admin commands are never answered: Delete SQ times out.
    sim.hold(CTRL, Hold::All);
    let r = c.detach();
    assert!(
        matches!(
            r,
            Err(Error::Timeout {
                what: Wait::AdminCommand,
                ..
            })
        ),
        "the detach says what it could not do: {r:?}"
    );
    assert_eq!(c.state(), State::Detached);
    // Without config space the controller itself must be seen disabled
    // before its memory goes back.
    assert!(!sim.is_ready(CTRL), "CSTS.RDY still 1");
    assert_eq!(c.dma_stop(), Some(bare_nvme::DmaStop::Disabled));
    drop(c);
    sim.release_all();
    assert_eq!(sim.counters().dma_regions, 0);
}

#[test]
fn a_detach_while_an_abort_is_outstanding_deletes_the_queues_and_shuts_down() {
    let sim = Sim::single(spec());
    let (mut driver, id) = ready(&sim);
    sim.misbehave(CTRL, Misbehaviour::NeverComplete.once());
    submit_read(&mut driver, &sim, id, 7);
    driver.controller(id).unwrap().ring_doorbells();
    let before = sim.counters();
    // Past the deadline, one tick sends the Abort; the detach starts before
    // the tick that would collect the Abort's completion.
    sim.advance(IO_TIMEOUT * 2);
    let _ = driver.tick();
    assert_eq!(
        sim.counters().admin(admin::ABORT),
        before.admin(admin::ABORT) + 1
    );
    driver.begin_detach(id).unwrap();
    let events = tick_for(&mut driver, &sim, Duration::from_secs(5), |d| {
        d.controller_state(id).is_some_and(|s| s.is_finished())
    });
    let after = sim.counters();
    assert_eq!(
        after.admin(admin::DELETE_SQ),
        before.admin(admin::DELETE_SQ) + 1
    );
    assert_eq!(
        after.admin(admin::DELETE_CQ),
        before.admin(admin::DELETE_CQ) + 1
    );
    assert_eq!(after.protocol_errors, 0, "{:?}", sim.protocol_log());
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::Removed {
                detected_by: Detection::Orderly,
                failed_commands: 1,
                ..
            }
        )),
        "{events:?}"
    );
    assert_eq!(driver.controller_state(id), Some(State::Detached));
    finish(driver, &sim);
}

#[test]
fn no_doorbell_reaches_a_controller_being_reset() {
    let sim = Sim::single(spec().ready_delay(Duration::from_millis(20)));
    let (mut driver, id) = ready(&sim);
    // Two reads queued, not yet rung.
    submit_read(&mut driver, &sim, id, 1);
    submit_read(&mut driver, &sim, id, 2);
    sim.set_cfs(CTRL);
    for _ in 0..3 {
        let _ = driver.tick();
    }
    assert_ne!(driver.controller_state(id), Some(State::Ready));
    // The caller polls while the reset has the controller disabled.
    let mut got = Vec::new();
    for _ in 0..200 {
        got.extend(poll(&mut driver, id));
        let _ = driver.tick();
        sim.advance(Duration::from_millis(1));
    }
    // The simulated controller counts a doorbell written while it is
    // disabled, or for a queue it does not have, as a protocol error.
    assert_eq!(
        sim.counters().protocol_errors,
        0,
        "{:?}",
        sim.protocol_log()
    );
    let mut tags: Vec<u64> = got.iter().map(|c| c.tag).collect();
    tags.sort();
    assert_eq!(tags, [1, 2], "each command delivered once");
    assert!(got.iter().all(|c| c.result == Err(Error::ControllerFailed)));
    free(&sim, got);
    finish(driver, &sim);
}

/// Register and config reads one tick may make for one controller (it
/// advances at most 16 state-machine steps, none of which waits by
/// spinning; in practice a step or two before it waits for the device).
const TICK_READS: u64 = 16;

#[test]
fn a_controller_slow_at_every_step_never_stalls_a_tick() {
    let slow = Duration::from_millis(300);
    let sim = Sim::single(spec().timeout(4).ready_delay(slow));
    let mut driver = Box::new(Driver::new(sim.platform(), sim.config_access(), config()));
    driver.scan().unwrap();
    let mut worst = (0u64, 0u64, Duration::ZERO);
    let mut ticks = 0;
    let mut measure = |driver: &mut Box<SimDriver>, sim: &Sim| {
        let before = sim.counters();
        let t0 = sim.now();
        let events = driver.tick();
        let after = sim.counters();
        let spent = sim.now() - t0;
        worst.0 = worst.0.max(after.mmio_reads - before.mmio_reads);
        worst.1 = worst.1.max(after.config_reads - before.config_reads);
        worst.2 = worst.2.max(spent);
        sim.advance(Duration::from_millis(1));
        events
    };
    let mut events = Vec::new();
    while driver.ready_controllers().next().is_none() && ticks < 5_000 {
        events.extend(measure(&mut driver, &sim));
        ticks += 1;
    }
    let id = driver.ready_controllers().next().expect("ready");
    // A reset: the disable takes `slow` as well.
    sim.set_cfs(CTRL);
    for _ in 0..2_000 {
        events.extend(measure(&mut driver, &sim));
    }
    assert_eq!(
        driver.controller_state(id),
        Some(State::Ready),
        "{events:?}"
    );
    assert_eq!(driver.controller(id).unwrap().reset_count(), 1);
    // And an orderly detach, whose shutdown and disable are slow too.
    driver.begin_detach(id).unwrap();
    for _ in 0..2_000 {
        events.extend(measure(&mut driver, &sim));
    }
    assert_eq!(driver.controller_state(id), Some(State::Detached));
    let (reads, config_reads, spent) = worst;
    println!("worst tick: {reads} register reads, {config_reads} config reads, {spent:?}");
    assert!(reads <= TICK_READS, "{reads} register reads in one tick");
    assert!(
        config_reads <= TICK_READS,
        "{config_reads} config reads in one tick"
    );
    assert!(spent < Duration::from_millis(1), "one tick took {spent:?}");
    finish(driver, &sim);
}

#[test]
fn wait_ready_loses_no_event_with_many_controllers() {
    // A driver for 16 controllers is built by value before it is boxed.
    std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(many_controllers)
        .unwrap()
        .join()
        .unwrap();
}

fn many_controllers() {
    let mut builder = Sim::builder();
    for i in 0..10 {
        builder = builder.root_port(true).controller_on_port(
            PortId(i),
            ControllerSpec::default()
                .serial(&format!("many{i}"))
                .namespace(NamespaceSpec::new(64, 512)),
        );
    }
    let sim = builder.build();
    let mut driver: Box<Driver<_, _, 16>> = Box::new(Driver::new(
        sim.platform(),
        sim.config_access(),
        DriverConfig::default(),
    ));
    assert_eq!(driver.scan().unwrap(), 10);
    let mut events: Vec<Event> = driver
        .wait_ready(Duration::from_secs(30))
        .into_iter()
        .collect();
    for _ in 0..20 {
        events.extend(driver.wait_ready(Duration::from_secs(30)));
        events.extend(driver.tick());
    }
    let ready = events
        .iter()
        .filter(|e| matches!(e, Event::Ready { .. }))
        .count();
    let attached = events
        .iter()
        .filter(|e| matches!(e, Event::Attached { .. }))
        .count();
    assert_eq!((attached, ready), (10, 10), "{events:?}");
}

#[test]
fn a_removal_counts_only_the_callers_commands() {
    let sim = Sim::single(spec());
    let (mut driver, id) = ready(&sim);
    // One caller command in flight and the driver's Abort for it.
    sim.hold(CTRL, Hold::All);
    submit_read(&mut driver, &sim, id, 3);
    driver.controller(id).unwrap().ring_doorbells();
    sim.advance(IO_TIMEOUT * 2);
    let _ = driver.tick();
    sim.surprise_remove(CTRL);
    let events = tick_for(&mut driver, &sim, Duration::from_secs(1), |d| {
        d.controller_state(id).is_some_and(|s| s.is_finished())
    });
    let removed: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e, Event::Removed { .. }))
        .collect();
    assert!(
        matches!(
            removed.as_slice(),
            [Event::Removed {
                failed_commands: 1,
                ..
            }]
        ),
        "{events:?}"
    );
    let delivered = poll(&mut driver, id);
    assert_eq!(delivered.len(), 1);
    free(&sim, delivered);
    finish(driver, &sim);
}

#[test]
fn scan_after_an_orderly_detach_attaches_the_controller_again() {
    let sim = Sim::single(spec());
    let (mut driver, id) = ready(&sim);
    driver.begin_detach(id).unwrap();
    tick_for(&mut driver, &sim, Duration::from_secs(5), |d| {
        d.controller_state(id) == Some(State::Detached)
    });
    assert_eq!(
        driver.scan().unwrap(),
        1,
        "the detached function is attached again"
    );
    let events = tick_for(&mut driver, &sim, Duration::from_secs(5), |d| {
        d.ready_controllers().next().is_some()
    });
    let again = driver.ready_controllers().next().expect("ready again");
    assert_ne!(again, id);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Returned { previous, .. } if *previous == id)),
        "{events:?}"
    );
    round_trip(&mut driver, &sim, again, 8);
    finish(driver, &sim);
}

/// A read that completes successfully while its Abort is outstanding; the
/// Abort's completion is collected by a tick before (`tick_first`) or after
/// the caller's poll.
fn abort_race(tick_first: bool) -> Result<(), Error> {
    let sim = Sim::single(spec());
    let (mut driver, id) = ready(&sim);
    sim.hold(CTRL, Hold::All);
    submit_read(&mut driver, &sim, id, 9);
    driver.controller(id).unwrap().ring_doorbells();
    sim.advance(IO_TIMEOUT * 2);
    let _ = driver.tick();
    // The read completes (successfully), then the Abort finds nothing.
    assert_eq!(sim.complete_held(2), 2);
    sim.hold(CTRL, Hold::None);
    let mut got = Vec::new();
    if tick_first {
        let _ = driver.tick();
    }
    got.extend(poll(&mut driver, id));
    let _ = driver.tick();
    got.extend(poll(&mut driver, id));
    assert_eq!(got.len(), 1);
    let result = got[0].result;
    free(&sim, got);
    finish(driver, &sim);
    result
}

#[test]
fn a_command_that_completes_while_its_abort_is_outstanding_has_one_result() {
    assert_eq!(abort_race(false), Ok(()));
    assert_eq!(abort_race(true), Ok(()), "the tick's order changes nothing");
}

#[test]
fn an_io_to_a_removed_controller_after_its_teardown_is_refused() {
    let sim = Sim::single(spec());
    let (mut driver, id) = ready(&sim);
    sim.surprise_remove(CTRL);
    tick_for(&mut driver, &sim, Duration::from_millis(10), |d| {
        d.controller_state(id) == Some(State::Removed)
    });
    let c = driver.controller(id).unwrap();
    assert_eq!(c.dma_stop(), Some(bare_nvme::DmaStop::Gone));
    let op = IoOp::Flush { nsid: 1 };
    let r = c.submit(QueueId::FIRST, op, None, 0);
    assert!(matches!(r, Err(ref e) if e.error == Error::DeviceRemoved));
    finish(driver, &sim);
}

/// A driver with one read held by the device (fetched, not completed).
fn with_held_read(sim: &Sim) -> (Box<SimDriver>, bare_nvme::ControllerId) {
    let (mut driver, id) = ready(sim);
    sim.hold(CTRL, Hold::Io);
    submit_read(&mut driver, sim, id, 5);
    driver.controller(id).unwrap().ring_doorbells();
    assert_eq!(sim.held_count(), 1);
    (driver, id)
}

#[test]
fn memory_decoding_off_with_bus_mastering_on_stops_dma_before_anything_returns() {
    let sim = Sim::single(spec());
    let (mut driver, id) = with_held_read(&sim);
    sim.memory_decoding_off(CTRL);
    assert!(sim.can_dma(CTRL));
    let events = tick_for(&mut driver, &sim, Duration::from_secs(1), |d| {
        d.controller_state(id).is_some_and(|s| s.is_finished())
    });
    assert!(
        events.iter().any(|e| matches!(e, Event::Removed { .. })),
        "{events:?}"
    );
    assert!(
        !sim.can_dma(CTRL),
        "bus mastering off before memory returned"
    );
    assert_eq!(
        driver.controller(id).unwrap().dma_stop(),
        Some(bare_nvme::DmaStop::BusMasterOff)
    );
    let got = poll(&mut driver, id);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].result, Err(Error::DeviceRemoved));
    // The device would complete the read now: it cannot reach memory.
    sim.release_all();
    free(&sim, got);
    drop(driver);
    // The end-of-simulation check finds no write into returned memory.
}

#[test]
fn a_device_that_cannot_be_stopped_gets_its_memory_quarantined_not_returned() {
    let sim = Sim::single(spec());
    let (mut driver, id) = with_held_read(&sim);
    // Bus mastering cannot be turned off, and the registers are out of
    // reach: nothing proves the device stopped.
    sim.ignore_config_writes(CTRL, true);
    sim.memory_decoding_off(CTRL);
    let events = tick_for(&mut driver, &sim, Duration::from_secs(5), |d| {
        d.controller_state(id).is_some_and(|s| s.is_finished())
    });
    let events: Vec<Event> = events
        .into_iter()
        .chain(tick_for(
            &mut driver,
            &sim,
            Duration::from_millis(5),
            |_| false,
        ))
        .collect();
    let quarantined: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e, Event::Quarantined { .. }))
        .collect();
    assert!(
        matches!(quarantined.as_slice(), [Event::Quarantined { regions, bytes, .. }] if *regions > 0 && *bytes > 0),
        "{events:?}"
    );
    let c = driver.controller(id).unwrap();
    assert_eq!(c.dma_stop(), None);
    assert!(c.quarantined().regions > 0);
    let got = poll(&mut driver, id);
    assert_eq!(got.len(), 1, "the command is still failed once");
    assert_eq!(got[0].result, Err(Error::DeviceRemoved));
    assert!(got[0].buffer.is_none(), "its buffer stays in quarantine");
    // The device completes the read into quarantined memory: allowed, as
    // nobody got that memory back.
    sim.release_all();
    assert_eq!(sim.counters().wild_dma, 0);
    sim.expect_quarantined();
    drop(driver);
}

#[test]
fn a_glitch_on_a_present_device_is_not_a_removal() {
    let sim = Sim::single(spec());
    let (mut driver, id) = with_held_read(&sim);
    // Idle ticks: the health check reads CSTS.
    for _ in 0..3 {
        let _ = driver.tick();
        sim.advance(Duration::from_millis(1));
    }
    sim.glitch(CTRL);
    let events = tick_for(&mut driver, &sim, Duration::from_millis(20), |_| false);
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(driver.controller(id).unwrap().glitches(), 1);
    still_serving(driver, &sim, id);
}

#[test]
fn a_bouncing_presence_detect_or_link_keeps_a_live_controller() {
    for bounce_link in [false, true] {
        let sim = Sim::single(spec());
        let (mut driver, id) = with_held_read(&sim);
        if bounce_link {
            sim.bounce_link(PortId(0));
        } else {
            sim.bounce_presence(PortId(0));
        }
        let events = tick_for(&mut driver, &sim, Duration::from_millis(50), |_| false);
        assert!(events.is_empty(), "{events:?}");
        still_serving(driver, &sim, id);
    }
}

/// The controller is still the one serving: its read held since
/// [`with_held_read`] completes successfully once released, and new I/O
/// round-trips.
fn still_serving(mut driver: Box<SimDriver>, sim: &Sim, id: bare_nvme::ControllerId) {
    assert_eq!(driver.controller_state(id), Some(State::Ready));
    assert_eq!(sim.complete_held(1), 1);
    let got = poll(&mut driver, id);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].result, Ok(()));
    free(sim, got);
    sim.hold(CTRL, Hold::None);
    round_trip(&mut driver, sim, id, 4);
    finish(driver, sim);
}

#[test]
fn a_real_link_flap_is_still_a_removal_with_dma_stopped_first() {
    let sim = Sim::single(spec());
    let (mut driver, id) = with_held_read(&sim);
    sim.link_flap(PortId(0));
    let events = tick_for(&mut driver, &sim, Duration::from_millis(100), |d| {
        d.ready_controllers().any(|r| r != id)
    });
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Removed { id: r, .. } if *r == id)),
        "{events:?}"
    );
    let got = poll(&mut driver, id);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].result, Err(Error::DeviceRemoved));
    free(&sim, got);
    finish(driver, &sim);
}

#[test]
fn a_standalone_controller_that_never_stops_quarantines_on_drop() {
    let sim = Sim::single(spec());
    let mut c = standalone(&sim, short_config());
    c.bring_up().expect("ready");
    sim.hold(CTRL, Hold::Io);
    let op = IoOp::Read {
        nsid: 1,
        lba: 0,
        blocks: 1,
    };
    let buffer = sim.platform().dma_alloc(512, 4096).unwrap();
    let _ = c.submit(QueueId::FIRST, op, Some(buffer), 1).unwrap();
    c.ring_doorbells();
    // RDY freezes: CC.EN = 0 is never acknowledged, and there is no config
    // space to turn bus mastering off.
    sim.hang(CTRL);
    drop(c);
    assert!(sim.can_dma(CTRL));
    assert!(sim.counters().dma_regions > 0, "memory kept");
    sim.expect_quarantined();
}

#[test]
fn a_standalone_controller_recovers_a_stuck_command_from_its_own_tick() {
    let sim = Sim::single(spec());
    let mut c = standalone(&sim, short_config());
    c.bring_up().expect("ready");
    sim.misbehave(CTRL, Misbehaviour::NeverComplete.once());
    let op = IoOp::Read {
        nsid: 1,
        lba: 0,
        blocks: 1,
    };
    let buffer = sim.platform().dma_alloc(512, 4096).unwrap();
    let _ = c.submit(QueueId::FIRST, op, Some(buffer), 1).unwrap();
    c.ring_doorbells();
    let mut got = Vec::new();
    for _ in 0..2_000 {
        c.tick();
        c.poll(QueueId::FIRST, |done| got.push(done));
        if !got.is_empty() && c.state() == State::Ready {
            break;
        }
        sim.advance(Duration::from_millis(1));
    }
    assert_eq!(got.len(), 1);
    assert!(
        matches!(
            got[0].result,
            Err(Error::Timeout {
                what: Wait::IoCommand,
                ..
            })
        ),
        "{:?}",
        got[0].result
    );
    assert_eq!(
        c.reset_count(),
        1,
        "the abort could not end it: a reset did"
    );
    assert_eq!(c.state(), State::Ready);
    for done in got {
        sim.platform().dma_free(done.buffer.expect("buffer back"));
    }
    c.detach().expect("detached");
    drop(c);
    assert_eq!(sim.counters().dma_regions, 0);
}

#[test]
fn a_detach_during_a_reset_ends_orderly_with_the_commands_failed_once() {
    let sim = Sim::single(spec().disable_delay(Duration::from_millis(30)));
    let (mut driver, id) = with_held_read(&sim);
    sim.set_cfs(CTRL);
    tick_for(&mut driver, &sim, Duration::from_millis(10), |d| {
        d.controller_state(id) == Some(State::Resetting)
    });
    assert_eq!(driver.controller_state(id), Some(State::Resetting));
    // The reset still waits for RDY = 0: nothing may be handed back yet.
    assert!(poll(&mut driver, id).is_empty());
    driver.begin_detach(id).unwrap();
    let events = tick_for(&mut driver, &sim, Duration::from_secs(2), |d| {
        d.controller_state(id).is_some_and(|s| s.is_finished())
    });
    assert_eq!(
        driver.controller_state(id),
        Some(State::Detached),
        "{events:?}"
    );
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::Removed {
                detected_by: Detection::Orderly,
                ..
            }
        )),
        "{events:?}"
    );
    let got = poll(&mut driver, id);
    assert_eq!(got.len(), 1, "the held read is delivered once");
    assert_eq!(got[0].result, Err(Error::ControllerFailed));
    free(&sim, got);
    finish(driver, &sim);
}

#[test]
fn a_controller_that_fails_on_a_plain_bus_is_not_attached_again_and_again() {
    let sim = Sim::builder()
        .controller_on_bus0(spec().ready_never(true))
        .build();
    let mut driver = Box::new(Driver::new(sim.platform(), sim.config_access(), config()));
    driver.scan().unwrap();
    // Long enough for the bring-up to fail and for the bus probe (every
    // 500 ms over bus 0) to pass the function many times.
    let events = tick_for(&mut driver, &sim, Duration::from_secs(10), |_| false);
    let attached = events
        .iter()
        .filter(|e| matches!(e, Event::Attached { .. }))
        .count();
    let failed = events
        .iter()
        .filter(|e| matches!(e, Event::Failed { .. }))
        .count();
    assert_eq!((attached, failed), (1, 1), "{events:?}");
    // The embedder may ask again.
    assert_eq!(driver.scan().unwrap(), 1);
    finish(driver, &sim);
}
