//! Cases the random runs once found, kept as named tests.

use super::*;

/// Found by the model: a controller brought up by a blocking call (between
/// ticks) and removed before the next tick served I/O, yet its `Ready` was
/// never reported, so neither was its return when the device came back.
#[test]
fn a_controller_that_came_up_between_ticks_reports_ready_before_its_removal() {
    let scenario = Scenario {
        first: QUICK,
        second: None,
        bus0: None,
        depth: 2,
        steps: Vec::new(),
    };
    let mut model = Model::new(&scenario);
    model.driver.scan().expect("scan");
    let events = model.driver.tick();
    let [Event::Attached { id, .. }] = events[..] else {
        panic!("{events:?}");
    };
    let mut buffer = model.sim.platform().dma_alloc(BLOCK, 4096).unwrap();
    // The blocking call finishes the bring-up and serves the read.
    model
        .driver
        .controller(id)
        .unwrap()
        .read(1, 0, &mut buffer)
        .unwrap();
    model.sim.platform().dma_free(buffer);
    model.sim.link_flap(PortId(0));
    // The next tick polls the slot first (its interval passed).
    model.sim.advance(Duration::from_millis(60));
    let mut events = Vec::new();
    for _ in 0..200 {
        model.sim.advance(Duration::from_millis(1));
        events.extend(model.driver.tick());
    }
    let ready = events
        .iter()
        .position(|e| matches!(e, Event::Ready { id: r, .. } if *r == id));
    let removed = events
        .iter()
        .position(|e| matches!(e, Event::Removed { id: r, .. } if *r == id));
    assert!(
        ready.is_some() && ready < removed,
        "Ready of {id} before its removal: {events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Returned { previous, .. } if *previous == id)),
        "the same device back is reported as returned: {events:?}"
    );
}

/// Found by the model: a controller that could not be disabled within
/// CAP.TO is given up, its memory returned on the proof that bus mastering
/// is off; then the bus re-probe attaches the same function again and turns
/// bus mastering back on while the old controller still runs (CSTS.RDY = 1,
/// its queue registers naming the returned memory), which voids that proof:
/// the device may write memory the platform has since handed to someone
/// else (the simulation saw it with another controller's rings).
#[test]
fn a_failed_controller_still_running_gets_no_bus_mastering_back() {
    let sim = Sim::builder()
        .clock_step(CLOCK_STEP)
        .controller_on_bus0(
            ControllerSpec::default()
                .serial("slow")
                .namespace(NamespaceSpec::new(NS_BLOCKS, BLOCK as u32))
                .timeout(1)
                .disable_delay(Duration::from_secs(2)),
        )
        .build();
    let ctrl = CtrlId(0);
    let config = DriverConfig::default()
        .controller(ControllerConfig::default().ready_timeout_limit(Duration::from_secs(1)))
        .bus_rescan_interval(Some(Duration::from_millis(50)));
    let mut driver = Box::new(Drv::new(sim.platform(), sim.config_access(), config));
    driver.scan().expect("scan");
    // Fatal status once enabled: the reset clears CC.EN, but CSTS.RDY stays
    // 1 for 2 s, longer than CAP.TO (500 ms): the controller is given up.
    sim.set_cfs(ctrl);
    let mut events = Vec::new();
    let mut violation = None;
    for ms in 0..3000 {
        sim.advance(Duration::from_millis(1));
        events.extend(driver.tick());
        let failed = events.iter().any(|e| matches!(e, Event::Failed { .. }));
        // The old controller runs until about 2 s (its disable, begun in the
        // first ticks, takes 2 s); after that RDY = 1 is a new enable.
        let old_one_runs = ms < 1900;
        // `can_dma` brings the device's state up to the current time.
        let can_dma = sim.can_dma(ctrl);
        if failed && old_one_runs && can_dma && violation.is_none() {
            violation = Some(ms);
        }
    }
    drop(driver);
    sim.unchecked();
    assert!(
        violation.is_none(),
        "bus mastering back on at {violation:?} ms while the given-up controller \
         still runs: {events:?}"
    );
}

/// Found by the model: a detach whose shutdown does not complete in time
/// ends `Failed`; the function was then released, and the bus re-probe
/// attached it again at once, serving a device the embedder had detached.
#[test]
fn a_detach_that_fails_its_shutdown_does_not_attach_the_device_again() {
    let sim = Sim::builder()
        .clock_step(CLOCK_STEP)
        .controller_on_bus0(
            Knobs {
                slow_shutdown: 2,
                ..QUICK
            }
            .spec("slow"),
        )
        .build();
    let config = DriverConfig::default()
        .controller(ControllerConfig::default().shutdown_timeout(Duration::from_millis(100)))
        .bus_rescan_interval(Some(Duration::from_millis(50)));
    let mut driver = Box::new(Drv::new(sim.platform(), sim.config_access(), config));
    driver.scan().expect("scan");
    let mut events = driver.wait_ready(Duration::from_secs(5)).to_vec();
    let id = driver.ready_controllers().next().expect("ready");
    driver.begin_detach(id).unwrap();
    for _ in 0..2000 {
        sim.advance(Duration::from_millis(1));
        events.extend(driver.tick());
    }
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Failed { id: f, .. } if *f == id)),
        "the shutdown timed out: {events:?}"
    );
    let attaches = events
        .iter()
        .filter(|e| matches!(e, Event::Attached { .. }))
        .count();
    assert_eq!(attaches, 1, "attached again after its detach: {events:?}");
    assert_eq!(driver.controllers().count(), 1);
}

/// Found by the model: an orderly detach ends with the controller shut
/// down but still enabled (CC.EN = 1, CSTS.RDY = 1), its memory returned on
/// the proof that bus mastering is off. A scan then attaches the function
/// again and turns bus mastering back on: until the new bring-up disables
/// the controller, it can reach the returned memory through the queue
/// addresses it still holds.
#[test]
fn a_detached_controller_is_disabled_before_a_scan_attaches_it_again() {
    let sim = Sim::single(QUICK.spec("again"));
    let mut driver = Box::new(Drv::new(
        sim.platform(),
        sim.config_access(),
        DriverConfig::default(),
    ));
    driver.scan().expect("scan");
    let _ = driver.wait_ready(Duration::from_secs(5));
    let id = driver.ready_controllers().next().expect("ready");
    driver.begin_detach(id).unwrap();
    let mut events = Vec::new();
    for _ in 0..100 {
        sim.advance(Duration::from_millis(1));
        events.extend(driver.tick());
    }
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Removed { id: r, .. } if *r == id)),
        "{events:?}"
    );
    assert_eq!(driver.scan().expect("scan"), 1, "attached again");
    assert!(
        !sim.can_dma(CtrlId(0)),
        "bus mastering is on and the controller still enabled from the last attach"
    );
}

/// Found by the model: one config read of a present device that glitches
/// (all-ones once) during a scan must not hide the function, since nothing
/// looks again (a hot-plug slot is only re-read on slot events) until the
/// embedder scans again. The walk reads twice before it believes a device
/// number empty.
#[test]
fn a_scan_finds_a_function_whose_first_config_read_glitches() {
    let sim = Sim::single(QUICK.spec("glitchy"));
    let mut driver = Box::new(Drv::new(
        sim.platform(),
        sim.config_access(),
        DriverConfig::default(),
    ));
    sim.glitch(CtrlId(0));
    let found = driver.scan().expect("scan");
    let _ = driver.wait_ready(Duration::from_secs(5));
    let ready = driver.ready_controllers().count();
    drop(driver);
    assert_eq!((found, ready), (1, 1), "the glitched function was missed");
}

/// Found by the model (a simulation defect): a controller given up because
/// it does not disable within CAP.TO has its bus mastering turned off and
/// its memory returned; the simulated device then still read its shadow
/// doorbells and wrote EventIdx there (counted as wild DMA), though with bus
/// mastering off it can reach no memory.
#[test]
fn a_given_up_controller_with_shadow_doorbells_reaches_no_memory() {
    let knobs = Knobs {
        slow_disable: 2,
        shadow: true,
        ..QUICK
    };
    run_scenario(&Scenario {
        first: knobs,
        second: None,
        bus0: None,
        depth: 2,
        steps: vec![
            Step::Tick { ms: 1 },
            Step::Blocking {
                c: 0,
                op: Blocking::Read,
                lba: 0,
                blocks: 1,
            },
            // Never rung, so it times out: abort, reset, the disable takes
            // longer than CAP.TO, the controller is given up.
            Step::Submit {
                c: 0,
                q: 0,
                write: false,
                lba: 0,
                blocks: 1,
                unaligned: false,
            },
        ],
    });
}

/// Found by the model: a controller whose bus mastering cannot be turned
/// off (the function ignores config writes) is detached while it is still
/// coming up; its teardown took one CSTS read with RDY = 0 (a glitch) for
/// proof that it stopped and returned its admin queues while it still ran.
#[test]
fn a_glitched_status_read_is_no_proof_that_the_controller_stopped() {
    run_scenario(&Scenario {
        first: QUICK,
        second: None,
        bus0: Some(Knobs {
            slow_ready: true,
            ..QUICK
        }),
        depth: 2,
        steps: vec![
            Step::Tick { ms: 1 },
            Step::Tick { ms: 15 },
            Step::Device {
                d: 1,
                ev: Device::IgnoreConfigWrites(true),
            },
            Step::Detach { c: 1 },
            Step::Tick { ms: 5 },
            Step::Device {
                d: 1,
                ev: Device::Glitch,
            },
            Step::Tick { ms: 1 },
        ],
    });
}

/// Found by the model: two cards swapped in one slot poll (a link flap on
/// each of two ports) with the driver's table full. The first port's old
/// controller (one command failed, not polled yet) was reported removed
/// before the second port's new card needed an entry, while the second
/// port's old controller (nothing to deliver) was not reported yet; so the
/// new card took the entry holding the failed command, which was never
/// delivered.
#[test]
fn a_card_swapped_in_takes_the_entry_of_the_controller_it_replaced() {
    run_scenario(&Scenario {
        first: QUICK,
        second: Some(QUICK),
        bus0: Some(QUICK),
        depth: 2,
        steps: vec![
            Step::Tick { ms: 1 },
            Step::Blocking {
                c: 129,
                op: Blocking::Read,
                lba: 0,
                blocks: 1,
            },
            Step::Submit {
                c: 108,
                q: 0,
                write: false,
                lba: 0,
                blocks: 1,
                unaligned: false,
            },
            Step::Blocking {
                c: 112,
                op: Blocking::Read,
                lba: 0,
                blocks: 1,
            },
            Step::Tick { ms: 10 },
            Step::Device {
                d: 187,
                ev: Device::LinkFlap,
            },
            Step::Device {
                d: 39,
                ev: Device::LinkFlap,
            },
        ],
    });
}
