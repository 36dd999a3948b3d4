//! Escalation when commands miss their deadline or the controller reports a
//! fatal status: abort, then reset with backoff, then give up, each bounded.

use std::time::Duration;

use bare_nvme::QueueId;
use bare_nvme::{
    ControllerConfig, Driver, DriverConfig, Error, Event, IoOp, Platform, State, Wait,
};
use bare_nvme_sim::{ControllerSpec, CtrlId, Hold, Misbehaviour, NamespaceSpec, Sim};

type SimDriver = Driver<bare_nvme_sim::SimPlatform, bare_nvme_sim::SimConfig>;

/// The driver holds every controller's tables inline (some 400 KiB): on the
/// heap, not on a test thread's 2 MiB stack.
fn setup() -> (Sim, Box<SimDriver>, bare_nvme::ControllerId) {
    setup_with(ControllerSpec::default())
}

/// [`setup`] with a controller built on `spec`.
fn setup_with(spec: ControllerSpec) -> (Sim, Box<SimDriver>, bare_nvme::ControllerId) {
    let sim = Sim::single(
        spec.serial("rec1")
            .namespace(NamespaceSpec::new(1 << 16, 512)),
    );
    let config = DriverConfig::default()
        .controller(
            ControllerConfig::default()
                .io_timeout(Duration::from_millis(20))
                .admin_timeout(Duration::from_millis(20)),
        )
        // A button press detaches at once (its window is tested elsewhere).
        .button_window(Duration::ZERO);
    let mut driver = Box::new(Driver::new(sim.platform(), sim.config_access(), config));
    driver.scan().unwrap();
    let _ = driver.wait_ready(Duration::from_secs(1));
    let id = driver.ready_controllers().next().expect("controller ready");
    (sim, driver, id)
}

/// Ticks (advancing virtual time) until `done` holds or `limit` ticks passed.
fn tick_until(
    sim: &Sim,
    driver: &mut SimDriver,
    limit: usize,
    mut done: impl FnMut(&mut SimDriver, &[Event]) -> bool,
) -> Vec<Event> {
    let mut all = Vec::new();
    for _ in 0..limit {
        sim.advance(Duration::from_millis(1));
        let events: Vec<Event> = driver.tick().into_iter().collect();
        all.extend(events.iter().copied());
        if done(driver, &events) {
            return all;
        }
    }
    panic!("condition not reached in {limit} ticks; events: {all:?}");
}

fn submit_read(sim: &Sim, driver: &mut SimDriver, id: bare_nvme::ControllerId, tag: u64) {
    let buf = sim.platform().dma_alloc(4096, 4096).unwrap();
    let op = IoOp::Read {
        nsid: 1,
        lba: 0,
        blocks: 8,
    };
    let _ = driver
        .controller(id)
        .unwrap()
        .submit(QueueId::FIRST, op, Some(buf), tag)
        .unwrap();
}

fn collect(
    sim: &Sim,
    driver: &mut SimDriver,
    id: bare_nvme::ControllerId,
) -> Vec<(u64, Result<(), Error>)> {
    let mut out = Vec::new();
    let platform = sim.platform();
    driver.controller(id).unwrap().poll(QueueId::FIRST, |c| {
        out.push((c.tag, c.result));
        platform.dma_free(c.buffer.expect("buffer handed back"));
    });
    out
}

#[test]
fn a_command_past_its_deadline_is_aborted_and_fails_with_timeout_without_a_reset() {
    let (sim, mut driver, id) = setup();
    sim.hold(CtrlId(0), Hold::Io);
    submit_read(&sim, &mut driver, id, 7);
    assert!(collect(&sim, &mut driver, id).is_empty(), "held in flight");
    let before = sim.counters();
    let mut results = Vec::new();
    tick_until(&sim, &mut driver, 200, |d, _| {
        results.extend(collect(&sim, d, id));
        !results.is_empty()
    });
    let timeout = Error::Timeout {
        what: Wait::IoCommand,
        after_ms: 20,
    };
    assert_eq!(results, vec![(7, Err(timeout))]);
    let after = sim.counters();
    assert_eq!(after.admin(0x08) - before.admin(0x08), 1, "one Abort sent");
    assert_eq!(
        after.admin(0x05),
        before.admin(0x05),
        "no queue re-created: no reset"
    );
    assert_eq!(driver.controller(id).unwrap().state(), State::Ready);
    assert_eq!(after.protocol_errors, 0);
}

#[test]
fn a_command_the_device_completed_is_not_timed_out_because_nobody_polled() {
    let (sim, mut driver, id) = setup();
    submit_read(&sim, &mut driver, id, 3);
    driver.controller(id).unwrap().ring_doorbells();
    sim.process();
    let before = sim.counters();
    // Three times the I/O timeout of ticks, and no poll.
    for _ in 0..60 {
        sim.advance(Duration::from_millis(1));
        let _ = driver.tick();
    }
    assert_eq!(collect(&sim, &mut driver, id), vec![(3, Ok(()))]);
    let after = sim.counters();
    assert_eq!(after.admin(0x08), before.admin(0x08), "no Abort sent");
    assert_eq!(driver.controller(id).unwrap().reset_count(), 0);
}

#[test]
fn a_small_admin_queue_keeps_room_for_an_abort_and_a_detach_beside_its_event_requests() {
    // CAP.MQES 3: an admin queue of four entries, three usable, and a
    // controller that takes four event requests (AERL 3).
    let (sim, mut driver, id) = setup_with(ControllerSpec::default().mqes(3));
    assert!(
        sim.counters().admin(0x0C) >= 1,
        "event requests are armed all the same"
    );
    sim.hold(CtrlId(0), Hold::Io);
    submit_read(&sim, &mut driver, id, 7);
    let before = sim.counters();
    let mut results = Vec::new();
    tick_until(&sim, &mut driver, 200, |d, _| {
        results.extend(collect(&sim, d, id));
        !results.is_empty()
    });
    assert!(
        matches!(results[..], [(7, Err(Error::Timeout { .. }))]),
        "{results:?}"
    );
    let after = sim.counters();
    assert_eq!(after.admin(0x08) - before.admin(0x08), 1, "one Abort sent");
    assert_eq!(driver.controller(id).unwrap().reset_count(), 0, "no reset");
    sim.hold(CtrlId(0), Hold::None);
    // The orderly detach deletes its queues (an admin command each) and
    // reports no error.
    assert_eq!(driver.controller(id).unwrap().detach(), Ok(()));
    assert_eq!(sim.counters().protocol_errors, 0);
}

#[test]
fn a_controller_that_fails_while_its_detach_was_requested_is_given_up_not_reset() {
    // A volatile write cache: the detach starts with a flush of its own.
    let (sim, mut driver, id) = setup_with(ControllerSpec::default().volatile_cache(true));
    sim.hold(CtrlId(0), Hold::Io);
    sim.press_attention_button(bare_nvme_sim::PortId(0));
    sim.set_cfs(CtrlId(0));
    let events = tick_until(&sim, &mut driver, 500, |d, _| {
        d.controller(id).map_or(true, |c| c.state().is_finished())
    });
    let c = driver.controller(id).unwrap();
    assert_eq!(c.state(), State::Failed, "{events:?}");
    assert_eq!(c.reset_count(), 0, "not reset: the detach would be undone");
    assert_eq!(c.failure(), Some(Error::ControllerFailed));
    // A blocking call says so, whatever its own commands left behind.
    let platform = sim.platform();
    let mut buf = platform.dma_alloc(4096, 4096).unwrap();
    assert_eq!(c.read(1, 0, &mut buf), Err(Error::ControllerFailed));
    platform.dma_free(buf);
    assert_eq!(sim.counters().protocol_errors, 0);
}

#[test]
fn a_command_the_abort_cannot_end_resets_the_controller_which_serves_again() {
    let (sim, mut driver, id) = setup();
    sim.misbehave(CtrlId(0), Misbehaviour::NeverComplete.once());
    submit_read(&sim, &mut driver, id, 1);
    let mut results = Vec::new();
    tick_until(&sim, &mut driver, 500, |d, _| {
        results.extend(collect(&sim, d, id));
        !results.is_empty() && d.controller(id).unwrap().state() == State::Ready
    });
    assert!(
        matches!(results[..], [(1, Err(Error::Timeout { .. }))]),
        "{results:?}"
    );
    // The controller was reset and re-initialised, then serves I/O.
    assert!(sim.counters().admin(0x05) >= 2, "I/O CQ created again");
    let platform = sim.platform();
    let mut buf = platform.dma_alloc(4096, 4096).unwrap();
    buf.as_mut_slice().fill(0x5A);
    let c = driver.controller(id).unwrap();
    c.write(1, 100, &buf).unwrap();
    buf.as_mut_slice().fill(0);
    c.read(1, 100, &mut buf).unwrap();
    assert!(buf.as_slice().iter().all(|&b| b == 0x5A));
    platform.dma_free(buf);
    assert_eq!(sim.counters().protocol_errors, 0);
    assert_eq!(sim.counters().wild_dma, 0);
}

#[test]
fn fatal_status_resets_the_controller_and_it_comes_back() {
    let (sim, mut driver, id) = setup();
    sim.hold(CtrlId(0), Hold::Io);
    submit_read(&sim, &mut driver, id, 3);
    sim.set_cfs(CtrlId(0));
    let mut results = Vec::new();
    let events = tick_until(&sim, &mut driver, 500, |d, _| {
        results.extend(collect(&sim, d, id));
        !results.is_empty() && d.controller(id).unwrap().state() == State::Ready
    });
    assert_eq!(results, vec![(3, Err(Error::ControllerFailed))]);
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::Removed { .. } | Event::Failed { .. })),
        "{events:?}"
    );
    sim.hold(CtrlId(0), Hold::None);
    let platform = sim.platform();
    let mut buf = platform.dma_alloc(512, 4096).unwrap();
    driver.controller(id).unwrap().read(1, 0, &mut buf).unwrap();
    platform.dma_free(buf);
}

#[test]
fn a_controller_that_keeps_failing_is_given_up_once_with_bus_mastering_off() {
    let (sim, mut driver, id) = setup();
    // Fatal status again after every reset: the reset budget runs out.
    let mut failed = Vec::new();
    for _ in 0..2000 {
        if sim.is_ready(CtrlId(0)) {
            sim.set_cfs(CtrlId(0));
        }
        sim.advance(Duration::from_millis(1));
        for e in driver.tick() {
            if let Event::Failed { id: fid, .. } = e {
                failed.push(fid);
            }
        }
        if !failed.is_empty() {
            break;
        }
    }
    assert_eq!(failed, vec![id], "reported once");
    for _ in 0..50 {
        sim.advance(Duration::from_millis(10));
        assert!(driver.tick().is_empty(), "quiet after the failure");
    }
    assert_eq!(
        sim.command_register(CtrlId(0)) & (1 << 2),
        0,
        "bus master off"
    );
    assert_eq!(sim.counters().dma_regions, 0, "all memory returned");
    let mut buf = sim.platform().dma_alloc(512, 512).unwrap();
    assert_eq!(
        driver.controller(id).unwrap().read(1, 0, &mut buf),
        Err(Error::ControllerFailed)
    );
    sim.platform().dma_free(buf);
}
