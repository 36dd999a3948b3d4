//! Controller registers that lie or stall: CAP.TO at its extremes, MQES 0,
//! RDY that never rises, a shutdown that never completes, CSTS.CFS and an
//! NVM subsystem reset while serving I/O.

mod misbehaviour_common;

use std::time::Duration;

use bare_nvme::{Error, Event, State, Wait};
use bare_nvme_sim::{CtrlId, Fault, Hold, Sim};
use misbehaviour_common::*;

const CTRL: CtrlId = CtrlId(0);

fn failed_with(events: &[Event]) -> Option<Error> {
    events.iter().find_map(|e| match e {
        Event::Failed { error, .. } => Some(*error),
        _ => None,
    })
}

#[test]
fn cap_timeout_zero_still_brings_the_controller_up() {
    let sim = Sim::single(spec().timeout(0));
    let (mut driver, id) = ready(&sim);
    round_trip(&mut driver, &sim, id, 0);
    finish(driver, &sim);
}

#[test]
fn cap_timeout_zero_with_rdy_never_rising_fails_within_the_shortest_wait() {
    let sim = Sim::single(spec().timeout(0).ready_never(true));
    let started = sim.now();
    let (driver, events) = start(&sim);
    assert!(
        matches!(
            failed_with(&events),
            Some(Error::Timeout {
                what: Wait::Enable,
                ..
            })
        ),
        "{events:?}"
    );
    // TO = 0 is treated as one unit (500 ms), never as "no wait"; the
    // bring-up is tried once and retried MAX_RESETS times with backoff
    // (50 + 100 + 200 ms) before the controller is given up.
    let waited = sim.now() - started;
    let tries = 1 + bare_nvme::nvme::recovery::MAX_RESETS as u32;
    assert!(
        waited >= Duration::from_millis(500) * tries
            && waited < Duration::from_millis(500) * tries + Duration::from_secs(1),
        "{waited:?}"
    );
    finish(driver, &sim);
}

#[test]
fn a_huge_cap_timeout_is_bounded_by_the_configured_limit() {
    // TO = 255 claims 127.5 s; the embedder's limit (2 s here) wins.
    let sim = Sim::single(spec().timeout(255).ready_never(true));
    let started = sim.now();
    let (driver, events) = start(&sim);
    assert!(
        matches!(
            failed_with(&events),
            Some(Error::Timeout {
                what: Wait::Enable,
                ..
            })
        ),
        "{events:?}"
    );
    // Each of the tries waits the limit, not 127.5 s.
    let waited = sim.now() - started;
    let tries = 1 + bare_nvme::nvme::recovery::MAX_RESETS as u32;
    assert!(
        waited >= READY_LIMIT * tries && waited < READY_LIMIT * tries + Duration::from_secs(1),
        "{waited:?}"
    );
    finish(driver, &sim);
}

#[test]
fn mqes_zero_is_refused_with_the_field_named() {
    let sim = Sim::single(spec().mqes(0));
    let (driver, events) = start(&sim);
    assert_eq!(
        failed_with(&events),
        Some(Error::BadDeviceValue {
            field: "CAP.MQES",
            value: 0
        }),
        "{events:?}"
    );
    assert!(!sim.is_ready(CTRL), "never enabled");
    finish(driver, &sim);
}

#[test]
fn a_tiny_mqes_gives_small_queues_that_still_work() {
    // MQES 1: two entries per queue, one command at a time.
    let sim = Sim::single(spec().mqes(1));
    let (mut driver, id) = ready(&sim);
    assert_eq!(driver.controller(id).unwrap().queue_depth(), 2);
    round_trip(&mut driver, &sim, id, 100);
    finish(driver, &sim);
}

#[test]
fn cfs_while_serving_io_resets_the_controller_and_fails_each_command_once() {
    let sim = Sim::single(spec().hold(Hold::Io));
    let (mut driver, id) = ready(&sim);
    for tag in 0..3 {
        submit_read(&mut driver, &sim, id, tag);
    }
    driver.controller(id).unwrap().ring_doorbells();
    assert_eq!(sim.held_count(), 3);
    sim.set_cfs(CTRL);
    let mut seen = Vec::new();
    let events = tick_for(&mut driver, &sim, Duration::from_millis(500), |d| {
        seen.extend(poll(d, id));
        d.controller_state(id) == Some(State::Ready) && !seen.is_empty()
    });
    assert_eq!(failed_with(&events), None, "{events:?}");
    assert_eq!(driver.controller(id).unwrap().reset_count(), 1);
    let mut tags: Vec<u64> = seen.iter().map(|c| c.tag).collect();
    tags.sort();
    assert_eq!(tags, [0, 1, 2]);
    assert!(seen
        .iter()
        .all(|c| c.result == Err(Error::ControllerFailed) && c.buffer.is_some()));
    free(&sim, seen);
    assert!(poll(&mut driver, id).is_empty(), "nothing completes twice");
    // The controller that came back serves I/O again.
    sim.hold(CTRL, Hold::None);
    round_trip(&mut driver, &sim, id, 50);
    finish(driver, &sim);
}

#[test]
fn cfs_during_a_blocking_read_returns_a_typed_error_and_the_next_call_works() {
    let sim = Sim::single(spec().hold(Hold::Io));
    let (mut driver, id) = ready(&sim);
    // CFS rises a few accesses into the read: after the doorbell.
    sim.on_access(sim.access_count() + 2, Fault::SetCfs(CTRL));
    let mut buf = buffer(&sim, 512);
    let r = driver.controller(id).unwrap().read(1, 0, &mut buf);
    assert_eq!(r, Err(Error::ControllerFailed));
    assert_eq!(driver.controller_state(id), Some(State::Resetting));
    sim.hold(CTRL, Hold::None);
    // The next blocking call finishes the bring-up the reset started.
    assert_eq!(driver.controller(id).unwrap().read(1, 0, &mut buf), Ok(()));
    bare_nvme::Platform::dma_free(&sim.platform(), buf);
    let events = tick_for(&mut driver, &sim, Duration::from_millis(5), |_| false);
    assert_eq!(failed_with(&events), None);
    finish(driver, &sim);
}

#[test]
fn cfs_during_bring_up_is_cured_by_a_reset() {
    let sim = Sim::single(spec());
    // Well into bring-up: after enable, while identifying.
    let mut driver = Box::new(bare_nvme::Driver::new(
        sim.platform(),
        sim.config_access(),
        config(),
    ));
    driver.scan().unwrap();
    sim.on_access(sim.access_count() + 12, Fault::SetCfs(CTRL));
    let events = tick_for(&mut driver, &sim, Duration::from_secs(5), |d| {
        let id = d.controllers().next().unwrap();
        matches!(d.controller_state(id), Some(State::Failed | State::Ready))
    });
    assert!(failed_with(&events).is_none(), "{events:?}");
    let id = driver
        .ready_controllers()
        .next()
        .expect("ready after a reset");
    assert_eq!(driver.controller(id).unwrap().reset_count(), 1);
    round_trip(&mut driver, &sim, id, 0);
    finish(driver, &sim);
}

#[test]
fn an_nvm_subsystem_reset_is_noticed_by_the_tick_and_the_controller_comes_back() {
    let sim = Sim::single(spec());
    let (mut driver, id) = ready(&sim);
    sim.inject(Fault::NssrOccurred(CTRL));
    let events = tick_for(&mut driver, &sim, Duration::from_millis(500), |d| {
        d.controller(id).unwrap().reset_count() == 1 && d.controller_state(id) == Some(State::Ready)
    });
    assert_eq!(failed_with(&events), None, "{events:?}");
    assert_eq!(driver.controller_state(id), Some(State::Ready));
    round_trip(&mut driver, &sim, id, 0);
    finish(driver, &sim);
}

#[test]
fn a_hung_controller_times_out_and_is_given_up() {
    let sim = Sim::single(spec());
    let (mut driver, id) = ready(&sim);
    sim.hang(CTRL);
    let mut buf = buffer(&sim, 512);
    let r = driver.controller(id).unwrap().read(1, 0, &mut buf);
    // The abort goes unanswered and RDY is frozen, so the reset cannot
    // complete: the controller fails, its command with the timeout.
    assert!(
        matches!(
            r,
            Err(Error::Timeout {
                what: Wait::IoCommand,
                ..
            })
        ),
        "{r:?}"
    );
    assert_eq!(driver.controller_state(id), Some(State::Failed));
    assert_eq!(sim.command_register(CTRL) & 0x4, 0, "bus master off");
    bare_nvme::Platform::dma_free(&sim.platform(), buf);
    finish(driver, &sim);
}

#[test]
fn a_shutdown_that_never_completes_ends_the_detach_as_failed() {
    let sim = Sim::single(spec().shutdown_never(true));
    let (mut driver, id) = ready(&sim);
    driver.begin_detach(id).unwrap();
    let events = tick_for(&mut driver, &sim, Duration::from_secs(10), |d| {
        d.controller_state(id) == Some(State::Failed)
    });
    // The detach could not end with a completed shutdown: that is reported,
    // never passed off as an orderly removal.
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::Failed {
                error: Error::Timeout {
                    what: Wait::Shutdown,
                    ..
                },
                ..
            }
        )),
        "{events:?}"
    );
    assert!(
        !events.iter().any(|e| matches!(e, Event::Removed { .. })),
        "{events:?}"
    );
    assert_eq!(sim.command_register(CTRL) & 0x4, 0, "bus master off");
    finish(driver, &sim);
}

/// Bring-up, a write and a read back, with CFS rising just before access
/// `at` (or never): returns the I/O results and the events.
/// Also returns the access index where the final detach started.
fn cfs_at(at: Option<u64>) -> (Vec<bare_nvme::Result<()>>, Vec<Event>, u64, u32) {
    let sim = Sim::single(spec());
    if let Some(at) = at {
        sim.on_access(at, Fault::SetCfs(CTRL));
    }
    let (mut driver, mut events) = start(&sim);
    let mut results = Vec::new();
    let ready = driver.ready_controllers().next();
    if let Some(id) = ready {
        let c = driver.controller(id).unwrap();
        let mut data = buffer(&sim, 1024);
        data.as_mut_slice().fill(0x33);
        results.push(c.write(1, 8, &data));
        let mut back = buffer(&sim, 1024);
        results.push(c.read(1, 8, &mut back));
        if results.iter().all(|r| r.is_ok()) {
            assert_eq!(back.as_slice(), data.as_slice());
        }
        bare_nvme::Platform::dma_free(&sim.platform(), data);
        bare_nvme::Platform::dma_free(&sim.platform(), back);
        events.extend(tick_for(
            &mut driver,
            &sim,
            Duration::from_millis(20),
            |_| false,
        ));
    }
    let first = driver.controllers().next();
    let resets = first.map_or(0, |id| driver.controller(id).unwrap().reset_count());
    let detach = sim.access_count();
    finish(driver, &sim);
    (results, events, detach, resets)
}

#[test]
fn cfs_swept_over_every_access_is_noticed_and_handled_once() {
    let (results, events, detach, resets) = cfs_at(None);
    assert_eq!(resets, 0);
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    assert!(failed_with(&events).is_none());
    assert!(detach > 30, "{detach} accesses");
    let mut failed = 0;
    for n in 0..detach {
        let (results, events, _, resets) = cfs_at(Some(n));
        let failures = events
            .iter()
            .filter(|e| matches!(e, Event::Failed { .. }))
            .count();
        // CFS seen by a step or a check: reported once, as a typed error.
        assert!(failures <= 1, "CFS before access {n}: {events:?}");
        for r in &results {
            assert!(
                matches!(
                    r,
                    Ok(()) | Err(Error::ControllerFailed | Error::Timeout { .. })
                ),
                "CFS before access {n}: {r:?}"
            );
        }
        if resets > 0 {
            // Cured by a reset: no Failed event.
            assert_eq!(failures, 0, "CFS before access {n}: {events:?}");
            failed += 1;
        } else if let Some(error) = failed_with(&events) {
            failed += 1;
            assert!(
                matches!(error, Error::ControllerFailed | Error::Timeout { .. }),
                "CFS before access {n}: {error:?}"
            );
        }
    }
    // Before the detach, CFS is always noticed: cured by a reset, or reported
    // as Failed (during the detach it ends the detach instead).
    assert_eq!(
        failed, detach,
        "CFS noticed for {failed} of {detach} accesses"
    );
}
