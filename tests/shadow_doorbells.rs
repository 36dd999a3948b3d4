//! Doorbell Buffer Config: configured when the controller offers it and the
//! embedder wants it, buffers returned on detach and on removal.

use std::time::Duration;

use bare_nvme::nvme::command::admin;
use bare_nvme::QueueId;
use bare_nvme::{ControllerConfig, Driver, DriverConfig, Platform};
use bare_nvme_sim::{ControllerSpec, CtrlId, NamespaceSpec, Sim};

fn driver(sim: &Sim, shadow: bool) -> Driver<bare_nvme_sim::SimPlatform, bare_nvme_sim::SimConfig> {
    let config =
        DriverConfig::default().controller(ControllerConfig::default().shadow_doorbells(shadow));
    let mut d = Driver::new(sim.platform(), sim.config_access(), config);
    d.scan().unwrap();
    let _ = d.wait_ready(Duration::from_secs(5));
    d
}

fn spec(shadow: bool) -> ControllerSpec {
    ControllerSpec::default()
        .namespace(NamespaceSpec::new(4096, 512))
        .shadow_doorbells(shadow)
}

fn write_read_back(
    sim: &Sim,
    d: &mut Driver<bare_nvme_sim::SimPlatform, bare_nvme_sim::SimConfig>,
) {
    let id = d.ready_controllers().next().expect("ready");
    let p = sim.platform();
    let mut buf = p.dma_alloc(8192, 4096).unwrap();
    buf.as_mut_slice().fill(0x5A);
    let mut back = p.dma_alloc(8192, 4096).unwrap();
    let c = d.controller(id).unwrap();
    for lba in 0..20 {
        c.write(1, lba * 16, &buf).unwrap();
        c.read(1, lba * 16, &mut back).unwrap();
        assert_eq!(back.as_slice(), buf.as_slice());
    }
    p.dma_free(buf);
    p.dma_free(back);
}

#[test]
fn offered_and_wanted_means_configured_and_io_works() {
    let sim = Sim::single(spec(true));
    let mut d = driver(&sim, true);
    assert!(sim.shadow_doorbells_active(CtrlId(0)));
    assert_eq!(sim.counters().admin(admin::DOORBELL_BUFFER_CONFIG), 1);
    write_read_back(&sim, &mut d);
    let id = d.ready_controllers().next().unwrap();
    d.controller(id).unwrap().detach().unwrap();
    let c = sim.counters();
    assert_eq!(c.protocol_errors, 0, "{:?}", sim.protocol_log());
    assert_eq!(c.dma_regions, 0, "shadow and EventIdx pages returned");
}

#[test]
fn switched_off_means_mmio_doorbells_only() {
    let sim = Sim::single(spec(true));
    let mut d = driver(&sim, false);
    assert!(!sim.shadow_doorbells_active(CtrlId(0)));
    assert_eq!(sim.counters().admin(admin::DOORBELL_BUFFER_CONFIG), 0);
    write_read_back(&sim, &mut d);
    assert_eq!(sim.counters().protocol_errors, 0);
}

/// The default configuration does not ask for them, even when offered (see
/// BENCHMARKS.md: on a controller that keeps up they save no MMIO write).
#[test]
fn the_default_configuration_leaves_them_off() {
    let sim = Sim::single(spec(true));
    let mut d = Driver::new(sim.platform(), sim.config_access(), DriverConfig::default());
    d.scan().unwrap();
    let _ = d.wait_ready(Duration::from_secs(5));
    assert!(!sim.shadow_doorbells_active(CtrlId(0)));
    assert_eq!(sim.counters().admin(admin::DOORBELL_BUFFER_CONFIG), 0);
    write_read_back(&sim, &mut d);
    assert_eq!(sim.counters().protocol_errors, 0);
}

#[test]
fn not_offered_means_not_asked() {
    let sim = Sim::single(spec(false));
    let mut d = driver(&sim, true);
    assert_eq!(sim.counters().admin(admin::DOORBELL_BUFFER_CONFIG), 0);
    write_read_back(&sim, &mut d);
    let c = sim.counters();
    assert_eq!(c.protocol_errors, 0);
}

#[test]
fn removal_returns_the_doorbell_pages() {
    let sim = Sim::single(spec(true));
    let mut d = driver(&sim, true);
    assert!(sim.shadow_doorbells_active(CtrlId(0)));
    sim.surprise_remove(CtrlId(0));
    for _ in 0..5 {
        sim.advance(Duration::from_millis(20));
        let _ = d.tick();
    }
    assert_eq!(sim.counters().dma_regions, 0);
}

#[test]
fn a_reset_configures_the_buffers_again_without_leaking() {
    let sim = Sim::single(spec(true));
    let mut d = driver(&sim, true);
    let id = d.ready_controllers().next().unwrap();
    let p = sim.platform();
    let regions_ready = sim.counters().dma_regions;
    // A read the device never completes, and an abort cannot end: the tick
    // aborts it, then resets the controller.
    sim.misbehave(CtrlId(0), bare_nvme_sim::Misbehaviour::NeverComplete.once());
    let buf = p.dma_alloc(4096, 4096).unwrap();
    let op = bare_nvme::IoOp::Read {
        nsid: 1,
        lba: 0,
        blocks: 8,
    };
    let _ = d
        .controller(id)
        .unwrap()
        .submit(QueueId::FIRST, op, Some(buf), 7)
        .unwrap();
    d.controller(id).unwrap().ring_doorbells();
    let mut failed = None;
    for _ in 0..100 {
        sim.advance(Duration::from_secs(1));
        let _ = d.tick();
        d.controller(id).unwrap().poll(QueueId::FIRST, |c| {
            failed = Some((c.tag, c.result, c.buffer))
        });
        if failed.is_some() {
            break;
        }
    }
    let (tag, result, buffer) = failed.expect("the timed-out read is delivered");
    assert_eq!(tag, 7);
    assert!(result.is_err());
    p.dma_free(buffer.expect("buffer back"));
    for _ in 0..50 {
        sim.advance(Duration::from_millis(10));
        let _ = d.tick();
        if d.ready_controllers().next().is_some() {
            break;
        }
    }
    assert_eq!(sim.counters().admin(admin::DOORBELL_BUFFER_CONFIG), 2);
    assert!(sim.shadow_doorbells_active(CtrlId(0)));
    // Fresh I/O works again.
    write_read_back(&sim, &mut d);
    assert_eq!(
        sim.counters().dma_regions,
        regions_ready,
        "same memory as before the reset"
    );
    d.controller(id).unwrap().detach().unwrap();
    let c = sim.counters();
    assert_eq!(c.protocol_errors, 0, "{:?}", sim.protocol_log());
    assert_eq!(c.dma_regions, 0);
}

/// A device whose shadow-doorbell logic stalls (it stops updating EventIdx
/// and never polls the shadow page): the driver, following the EventIdx
/// rule, announces the next read in the shadow page only, and the device
/// never sees it. The command deadline catches it like any other stuck
/// command: the tick aborts it, then resets the controller; the read ends
/// once with a timeout and the controller serves again.
#[test]
fn a_stalled_shadow_doorbell_queue_is_caught_by_the_command_deadline() {
    let sim = Sim::single(spec(true));
    let config = DriverConfig::default().controller(
        ControllerConfig::default()
            .shadow_doorbells(true)
            .io_timeout(Duration::from_millis(100))
            .admin_timeout(Duration::from_millis(100)),
    );
    let mut d = Driver::<_, _>::new(sim.platform(), sim.config_access(), config);
    d.scan().unwrap();
    let _ = d.wait_ready(Duration::from_secs(5));
    let id = d.ready_controllers().next().expect("ready");
    assert!(sim.shadow_doorbells_active(CtrlId(0)));
    sim.freeze_event_idx(CtrlId(0), true);
    let p = sim.platform();
    let read = |lba| bare_nvme::IoOp::Read {
        nsid: 1,
        lba,
        blocks: 8,
    };
    let mut results = Vec::new();
    for tag in 0..2u64 {
        let c = d.controller(id).unwrap();
        let buffer = p.dma_alloc(4096, 4096).unwrap();
        let _token = c
            .submit(QueueId::FIRST, read(tag * 8), Some(buffer), tag)
            .expect("queued");
        c.ring_doorbells();
        for _ in 0..1000 {
            let mut done = Vec::new();
            if let Ok(c) = d.controller(id) {
                c.poll(QueueId::FIRST, |x| done.push(x));
            }
            if let Some(x) = done.pop() {
                results.push((x.tag, x.result));
                p.dma_free(x.buffer.expect("buffer back"));
                break;
            }
            sim.advance(Duration::from_millis(5));
            let _ = d.tick();
        }
    }
    let doorbell_stalled = sim.counters().sq_doorbell_writes;
    assert_eq!(results.len(), 2, "{results:?}");
    assert_eq!(results[0], (0, Ok(())), "announced by MMIO");
    assert!(
        matches!(
            results[1],
            (
                1,
                Err(bare_nvme::Error::Timeout {
                    what: bare_nvme::Wait::IoCommand,
                    ..
                })
            )
        ),
        "{results:?}"
    );
    let c = d.controller(id).unwrap();
    assert_eq!(c.reset_count(), 1);
    sim.freeze_event_idx(CtrlId(0), false);
    for _ in 0..200 {
        sim.advance(Duration::from_millis(5));
        let _ = d.tick();
    }
    assert!(sim.shadow_doorbells_active(CtrlId(0)), "configured again");
    write_read_back(&sim, &mut d);
    assert!(sim.counters().sq_doorbell_writes > doorbell_stalled);
    assert_eq!(
        sim.counters().protocol_errors,
        0,
        "{:?}",
        sim.protocol_log()
    );
}
