//! Completions that lie: duplicated, unknown, stale, for another queue, with
//! an SQ head out of range, with the wrong phase, or never posted. Each bad
//! entry is dropped and counted; no command completes twice; a command whose
//! completion never comes times out, the controller is reset and serves I/O
//! again.

mod misbehaviour_common;

use std::time::Duration;

use bare_nvme::{Error, Event, State, Wait};
use bare_nvme_sim::{CtrlId, Misbehaviour, Queues, Sim};
use misbehaviour_common::*;

const CTRL: CtrlId = CtrlId(0);

/// Submits one read with `tag` and polls until it is delivered or the I/O
/// deadline passed (ticking, so the deadline is enforced); returns every
/// delivery seen, including later duplicates (there must be none).
fn one_command(
    driver: &mut SimDriver,
    sim: &Sim,
    id: bare_nvme::ControllerId,
    tag: u64,
) -> Vec<bare_nvme::Completion> {
    submit_read(driver, sim, id, tag);
    let mut seen = Vec::new();
    tick_for(driver, sim, IO_TIMEOUT * 3, |d| {
        if d.controller_state(id) == Some(State::Ready) {
            seen.extend(poll(d, id));
        }
        !seen.is_empty()
    });
    // Keep polling a while: a second delivery would show up here.
    for _ in 0..10 {
        seen.extend(poll(driver, id));
        sim.advance(Duration::from_millis(1));
    }
    seen
}

fn timed_out(result: &bare_nvme::Result<()>) -> bool {
    matches!(
        result,
        Err(Error::Timeout {
            what: Wait::IoCommand,
            ..
        })
    )
}

/// After a timeout: the controller was reset and comes back ready.
fn recovers(driver: &mut SimDriver, sim: &Sim, id: bare_nvme::ControllerId) {
    let events = tick_for(driver, sim, Duration::from_secs(5), |d| {
        d.controller_state(id) == Some(State::Ready)
    });
    assert_eq!(
        driver.controller_state(id),
        Some(State::Ready),
        "no recovery: {events:?}"
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::Failed { .. } | Event::Removed { .. })),
        "{events:?}"
    );
    sim.behave(CTRL);
    round_trip(driver, sim, id, 40);
}

#[test]
fn a_duplicate_completion_is_dropped_and_counted() {
    let sim = Sim::single(spec());
    let (mut driver, id) = ready(&sim);
    sim.misbehave(CTRL, Misbehaviour::CompleteTwice.once());
    let seen = one_command(&mut driver, &sim, id, 7);
    assert_eq!(seen.len(), 1, "delivered once");
    assert_eq!((seen[0].tag, seen[0].result), (7, Ok(())));
    let faults = driver.controller(id).unwrap().faults();
    assert_eq!(faults.unknown_cid, 1, "{faults:?}");
    assert_eq!(faults.total(), 1);
    free(&sim, seen);
    round_trip(&mut driver, &sim, id, 8);
    finish(driver, &sim);
}

#[test]
fn duplicates_on_every_command_never_complete_one_twice() {
    let sim = Sim::single(spec());
    let (mut driver, id) = ready(&sim);
    sim.misbehave(CTRL, Misbehaviour::CompleteTwice.always());
    for tag in 0..20 {
        submit_read(&mut driver, &sim, id, tag);
    }
    let mut seen = Vec::new();
    for _ in 0..20 {
        seen.extend(poll(&mut driver, id));
    }
    let mut tags: Vec<u64> = seen.iter().map(|c| c.tag).collect();
    tags.sort();
    assert_eq!(tags, (0..20).collect::<Vec<_>>());
    assert!(seen.iter().all(|c| c.result.is_ok()));
    assert_eq!(driver.controller(id).unwrap().faults().unknown_cid, 20);
    free(&sim, seen);
    finish(driver, &sim);
}

/// A completion the driver must drop: the command it belongs to never
/// completes, so it times out, exactly once, and the controller is reset.
fn dropped_then_timeout(what: Misbehaviour) -> bare_nvme::nvme::QueueFaults {
    let sim = Sim::single(spec());
    let (mut driver, id) = ready(&sim);
    // One good command first, so a stale CID has something to name.
    let first = one_command(&mut driver, &sim, id, 1);
    assert_eq!(first.len(), 1);
    free(&sim, first);
    sim.misbehave(CTRL, what.once());
    let seen = one_command(&mut driver, &sim, id, 2);
    assert_eq!(seen.len(), 1, "{what:?}: delivered once: {seen:?}");
    assert_eq!(seen[0].tag, 2);
    assert!(timed_out(&seen[0].result), "{what:?}: {:?}", seen[0].result);
    assert!(seen[0].buffer.is_some(), "the buffer comes back");
    free(&sim, seen);
    let faults = driver.controller(id).unwrap().faults();
    recovers(&mut driver, &sim, id);
    finish(driver, &sim);
    faults
}

#[test]
fn an_unknown_cid_is_dropped_and_the_command_times_out() {
    let f = dropped_then_timeout(Misbehaviour::UnknownCid);
    assert_eq!((f.unknown_cid, f.total()), (1, 1), "{f:?}");
}

#[test]
fn a_stale_cid_does_not_complete_the_command_reusing_its_slot() {
    let f = dropped_then_timeout(Misbehaviour::StaleCid);
    assert_eq!((f.unknown_cid, f.total()), (1, 1), "{f:?}");
}

#[test]
fn a_completion_for_another_queue_is_dropped() {
    let f = dropped_then_timeout(Misbehaviour::WrongSqId);
    assert_eq!((f.wrong_queue, f.total()), (1, 1), "{f:?}");
}

#[test]
fn an_sq_head_beyond_the_ring_is_dropped() {
    let f = dropped_then_timeout(Misbehaviour::SqHeadOutOfRange);
    assert_eq!((f.bad_sq_head, f.total()), (1, 1), "{f:?}");
}

/// An SQ head past the tail, though inside the ring, would make the queue
/// look full forever; it is a fault, and the reset gives the queue back.
#[test]
fn an_sq_head_past_the_tail_is_dropped_and_the_queue_recovers() {
    let f = dropped_then_timeout(Misbehaviour::SqHeadPastTail);
    assert_eq!((f.bad_sq_head, f.total()), (1, 1), "{f:?}");
}

#[test]
fn an_sq_head_going_backwards_is_dropped_and_the_queue_recovers() {
    let f = dropped_then_timeout(Misbehaviour::SqHeadBackwards);
    assert_eq!((f.bad_sq_head, f.total()), (1, 1), "{f:?}");
}

#[test]
fn a_completion_with_the_wrong_phase_is_invisible_and_the_command_times_out() {
    let f = dropped_then_timeout(Misbehaviour::WrongPhase);
    assert_eq!(f.total(), 0, "never seen, so never counted: {f:?}");
}

#[test]
fn a_command_that_never_completes_times_out_and_the_controller_is_reset() {
    let f = dropped_then_timeout(Misbehaviour::NeverComplete);
    assert_eq!(f.total(), 0);
}

#[test]
fn the_tick_aborts_an_overdue_command_then_resets_the_controller_when_the_abort_fails() {
    let sim = Sim::single(spec());
    let (mut driver, id) = ready(&sim);
    sim.misbehave(CTRL, Misbehaviour::NeverComplete.once());
    submit_read(&mut driver, &sim, id, 5);
    driver.controller(id).unwrap().ring_doorbells();
    assert!(poll(&mut driver, id).is_empty());
    let aborts = sim.counters().admin(0x08);
    sim.advance(IO_TIMEOUT * 2);
    let mut seen = Vec::new();
    let mut state_at_delivery = None;
    for _ in 0..100 {
        let _ = driver.tick();
        let got = poll(&mut driver, id);
        if !got.is_empty() {
            state_at_delivery = driver.controller_state(id);
            // The device was stopped before the buffer came back.
            assert!(!sim.is_ready(CTRL), "disabled before the buffer comes back");
            seen.extend(got);
            break;
        }
        sim.advance(Duration::from_millis(1));
    }
    assert_eq!(sim.counters().admin(0x08), aborts + 1, "an abort first");
    assert_eq!(state_at_delivery, Some(State::Resetting));
    assert_eq!(seen.len(), 1);
    assert!(timed_out(&seen[0].result), "{:?}", seen[0].result);
    free(&sim, seen);
    recovers(&mut driver, &sim, id);
    finish(driver, &sim);
}

#[test]
fn bad_admin_completions_are_dropped_and_bring_up_still_succeeds() {
    for what in [
        Misbehaviour::CompleteTwice,
        Misbehaviour::UnknownCid,
        Misbehaviour::WrongSqId,
        Misbehaviour::SqHeadOutOfRange,
        Misbehaviour::SqHeadPastTail,
        Misbehaviour::SqHeadBackwards,
    ] {
        let sim = Sim::single(spec());
        sim.misbehave(CTRL, what.once().on(Queues::Admin));
        let (mut driver, events) = start(&sim);
        let id = driver.controllers().next().unwrap();
        let faults = driver.controller(id).unwrap().faults();
        assert_eq!(faults.total(), 1, "{what:?}: {faults:?}");
        // Doubled completions need nothing; the others lose the command,
        // which times out: the controller is reset and the bring-up retried
        // (the rule hit only once), so it comes up all the same.
        assert_eq!(
            driver.controller_state(id),
            Some(State::Ready),
            "{what:?}: {events:?}"
        );
        assert!(
            !events.iter().any(|e| matches!(e, Event::Failed { .. })),
            "{what:?}: {events:?}"
        );
        let identifies = sim.counters().admin(0x06);
        if what == Misbehaviour::CompleteTwice {
            assert_eq!(
                identifies, 4,
                "{what:?}: no retry (controller, list, namespace descriptors and data)"
            );
        } else {
            assert!(identifies > 4, "{what:?}: bring-up retried after the reset");
        }
        round_trip(&mut driver, &sim, id, 3);
        finish(driver, &sim);
    }
}

#[test]
fn a_stuck_command_times_out_while_others_keep_completing() {
    let sim = Sim::single(spec());
    let (mut driver, id) = ready(&sim);
    sim.misbehave(CTRL, Misbehaviour::NeverComplete.once());
    submit_read(&mut driver, &sim, id, 1000);
    let mut seen = Vec::new();
    // A busy controller: every tick sees fresh completions of other commands.
    for tag in 0..50 {
        if driver.controller_state(id) != Some(State::Ready) {
            break;
        }
        submit_read(&mut driver, &sim, id, tag);
        seen.extend(poll(&mut driver, id));
        sim.advance(IO_TIMEOUT / 10);
        let _ = driver.tick();
    }
    seen.extend(poll(&mut driver, id));
    let stuck: Vec<_> = seen.iter().filter(|c| c.tag == 1000).collect();
    assert_eq!(stuck.len(), 1, "the stuck command is failed once");
    assert!(timed_out(&stuck[0].result), "{:?}", stuck[0].result);
    free(&sim, seen);
    recovers(&mut driver, &sim, id);
    finish(driver, &sim);
}
