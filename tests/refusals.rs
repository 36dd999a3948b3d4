//! Requests the controller cannot take in its current shape: an unknown
//! queue, a full queue, an operation it does not support, and any use after
//! detach. Each is refused with its own error and sends nothing.

mod common;

use std::time::Duration;

use bare_nvme::nvme::command::nvm;
use bare_nvme::nvme::identify::ctrl;
use bare_nvme::QueueId;
use bare_nvme::{
    ControllerConfig, Driver, DriverConfig, Error, Event, IoOp, Platform, Rejected, State,
};
use bare_nvme_sim::{ControllerSpec, NamespaceSpec, PortId, Sim, SimConfig, SimPlatform};
use common::*;

const NS: u32 = 1;

fn write(lba: u64) -> IoOp {
    IoOp::Write {
        nsid: NS,
        lba,
        blocks: 1,
    }
}

#[test]
fn an_unknown_queue_is_refused_and_polling_it_delivers_nothing() {
    let config = ControllerConfig::default().io_queues(2);
    let (sim, mut driver, id) = single(spec(1024, 512), config);
    sim.reset_counters();
    let p = sim.platform();
    let c = driver.controller(id).unwrap();
    assert_eq!(c.io_queue_count(), 2);
    let mut buf = Some(filled(&p, 512, 1));
    for queue in [2, 3, 255, u16::MAX] {
        match c.submit(QueueId::new(queue), write(0), buf.take(), 1) {
            Err(Rejected { error, buffer }) => {
                assert_eq!(error, Error::UnknownQueue { queue });
                buf = buffer;
            }
            Ok(t) => panic!("queue {queue} accepted {t:?}"),
        }
        assert_eq!(
            c.poll(QueueId::new(queue), |_| panic!(
                "completion on queue {queue}"
            )),
            0
        );
    }
    assert!(buf.is_some(), "buffer handed back");
    for q in 0..2 {
        assert_eq!(c.poll(QueueId::new(q), |_| ()), 0);
    }
    let counters = sim.counters();
    assert_eq!((io_total(&counters), counters.mmio_writes), (0, 0));
    p.dma_free(buf.unwrap());
    finish(&sim, driver);
}

#[test]
fn a_full_queue_refuses_the_next_command_until_polled() {
    let config = ControllerConfig::default().queue_depth(8);
    let (sim, mut driver, id) = single(spec(1024, 512), config);
    sim.reset_counters();
    let p = sim.platform();
    let c = driver.controller(id).unwrap();
    assert_eq!(c.queue_depth(), 8);
    // One ring slot always stays empty: 7 commands fit.
    for lba in 0..7 {
        let _ = c
            .submit(
                QueueId::FIRST,
                write(lba),
                Some(filled(&p, 512, lba as u8)),
                lba,
            )
            .unwrap();
    }
    let extra = filled(&p, 512, 7);
    let extra_phys = extra.phys();
    let extra = match c.submit(QueueId::FIRST, write(7), Some(extra), 7) {
        Err(Rejected { error, buffer }) => {
            assert_eq!(error, Error::QueueFull { queue: 0 });
            let b = buffer.expect("buffer handed back");
            assert_eq!(b.phys(), extra_phys);
            b
        }
        Ok(t) => panic!("an eighth command was accepted: {t:?}"),
    };
    let flush = c.submit(QueueId::FIRST, IoOp::Flush { nsid: NS }, None, 8);
    assert_eq!(flush.unwrap_err().error, Error::QueueFull { queue: 0 });
    // The blocking wrappers use the same queue and say so too.
    let mut probe = zeroed(&p, 512);
    assert_eq!(
        c.read(NS, 0, &mut probe),
        Err(Error::QueueFull { queue: 0 })
    );
    // Submitting rang no doorbell: nothing reached the device yet.
    let counters = sim.counters();
    assert_eq!((io_total(&counters), counters.mmio_writes), (0, 0));
    let done = collect(&mut driver, id, 0, 7);
    assert_eq!(
        sim.counters().io(nvm::WRITE),
        7,
        "the refused one never ran"
    );
    for d in done {
        assert_eq!(d.result, Ok(()));
        p.dma_free(d.buffer.unwrap());
    }
    // Polled empty, the queue takes commands again.
    let c = driver.controller(id).unwrap();
    let _ = c.submit(QueueId::FIRST, write(7), Some(extra), 7).unwrap();
    for d in collect(&mut driver, id, 0, 1) {
        p.dma_free(d.buffer.unwrap());
    }
    let c = driver.controller(id).unwrap();
    c.read(NS, 7, &mut probe).unwrap();
    assert_eq!(probe.as_slice(), &pattern(512, 7)[..]);
    p.dma_free(probe);
    finish(&sim, driver);
}

#[test]
fn write_zeroes_and_deallocate_are_refused_when_the_controller_lacks_them() {
    let spec = spec(1024, 512).identify_patch(ctrl::ONCS, &[0, 0]);
    let (sim, mut driver, id) = single(spec, ControllerConfig::default());
    sim.reset_counters();
    let c = driver.controller(id).unwrap();
    let info = c.info().unwrap();
    assert!(!info.supports_write_zeroes() && !info.supports_deallocate());
    assert!(matches!(
        c.write_zeroes(NS, 0, 1),
        Err(Error::Unsupported { .. })
    ));
    assert!(matches!(
        c.deallocate(NS, 0, 1),
        Err(Error::Unsupported { .. })
    ));
    let ops = [
        IoOp::WriteZeroes {
            nsid: NS,
            lba: 0,
            blocks: 1,
        },
        IoOp::Deallocate {
            nsid: NS,
            lba: 0,
            blocks: 1,
        },
    ];
    for op in ops {
        let r = c.submit(QueueId::FIRST, op, None, 0).unwrap_err();
        assert!(matches!(r.error, Error::Unsupported { .. }), "{r:?}");
    }
    assert_eq!(c.poll(QueueId::FIRST, |_| ()), 0);
    let counters = sim.counters();
    assert_eq!((io_total(&counters), counters.mmio_writes), (0, 0));
    // What the controller does support still works.
    c.flush(NS).unwrap();
    assert_eq!(sim.counters().io(nvm::FLUSH), 1);
    finish(&sim, driver);
}

#[test]
fn every_call_after_detach_is_refused_as_not_ready_and_touches_nothing() {
    let (sim, mut driver, id) = single(spec(1024, 512), ControllerConfig::default());
    let p = sim.platform();
    let mut buf = filled(&p, 512, 3);
    let c = driver.controller(id).unwrap();
    c.write(NS, 0, &buf).unwrap();
    c.detach().unwrap();
    assert_eq!(c.state(), State::Detached);
    assert_eq!(sim.counters().dma_regions, 1, "only the test's buffer");
    sim.reset_counters();
    assert_eq!(c.read(NS, 0, &mut buf), Err(Error::NotReady));
    assert_eq!(c.write(NS, 0, &buf), Err(Error::NotReady));
    assert_eq!(c.flush(NS), Err(Error::NotReady));
    assert_eq!(c.write_zeroes(NS, 0, 1), Err(Error::NotReady));
    assert_eq!(c.deallocate(NS, 0, 1), Err(Error::NotReady));
    let r = c
        .submit(QueueId::FIRST, write(0), Some(buf), 1)
        .unwrap_err();
    assert_eq!(r.error, Error::NotReady);
    let buf = r.buffer.expect("buffer handed back");
    assert_eq!(c.poll(QueueId::FIRST, |_| ()), 0);
    c.ring_doorbells();
    let counters = sim.counters();
    assert_eq!(io_total(&counters), 0);
    assert_eq!(counters.mmio(), 0, "registers of a detached controller");
    assert_eq!(counters.dma_allocs, 0);
    p.dma_free(buf);
    assert_clean(&sim);
    assert_eq!(sim.counters().dma_regions, 0);
}

#[test]
fn a_handle_to_a_replaced_controller_is_stale() {
    let sim = Sim::builder()
        .root_port(true)
        .root_port(true)
        .controller_on_port(
            PortId(0),
            ControllerSpec::default()
                .serial("first")
                .namespace(NamespaceSpec::new(64, 512)),
        )
        .build();
    // Room for one controller: a new attach reuses the finished entry.
    let mut driver: Box<Driver<SimPlatform, SimConfig, 1>> = Box::new(Driver::new(
        sim.platform(),
        sim.config_access(),
        DriverConfig::default(),
    ));
    assert_eq!(driver.scan().unwrap(), 1);
    let _ = driver.wait_ready(PATIENCE);
    let old = driver.ready_controllers().next().unwrap();
    driver.begin_detach(old).unwrap();
    let removed = (0..1000)
        .flat_map(|_| driver.tick())
        .any(|e| matches!(e, Event::Removed { id, .. } if id == old));
    assert!(removed);
    // Detached but not replaced: the handle still names it, and it refuses.
    let c = driver.controller(old).unwrap();
    assert_eq!(c.flush(NS), Err(Error::NotReady));
    sim.hot_add(
        PortId(1),
        ControllerSpec::default()
            .serial("second")
            .namespace(NamespaceSpec::new(64, 512)),
    );
    let mut ready = None;
    for _ in 0..20_000 {
        sim.advance(Duration::from_micros(100));
        for e in driver.tick() {
            if let Event::Ready { id, serial, .. } = e {
                assert_eq!(serial.as_str(), "second");
                ready = Some(id);
            }
        }
        if ready.is_some() {
            break;
        }
    }
    let new = ready.expect("the hot-added controller came up");
    assert_ne!(new, old);
    assert_eq!(driver.controller(old).err(), Some(Error::StaleHandle));
    assert_eq!(driver.address(old), Err(Error::StaleHandle));
    assert_eq!(driver.begin_detach(old), Err(Error::StaleHandle));
    sim.reset_counters();
    driver.controller(new).unwrap().flush(NS).unwrap();
    assert_eq!(
        io_total(&sim.counters()),
        1,
        "only the new controller's flush"
    );
    driver.controller(new).unwrap().detach().unwrap();
    assert_clean(&sim);
    assert_eq!(sim.counters().dma_regions, 0);
}

#[test]
fn a_controller_that_failed_bring_up_refuses_io_as_failed() {
    // CAP.MQES 0 (one entry) is illegal: the controller cannot be used.
    let sim = Sim::single(spec(64, 512).mqes(0));
    let mut driver = Box::new(Drv::new(
        sim.platform(),
        sim.config_access(),
        DriverConfig::default(),
    ));
    assert_eq!(driver.scan().unwrap(), 1);
    let events = driver.wait_ready(PATIENCE);
    let id = events
        .iter()
        .find_map(|e| match e {
            Event::Failed { id, error } => {
                assert!(matches!(error, Error::BadDeviceValue { .. }), "{error:?}");
                Some(*id)
            }
            _ => None,
        })
        .expect("a Failed event");
    assert_eq!(sim.counters().dma_regions, 0, "memory returned on failure");
    sim.reset_counters();
    let p = sim.platform();
    let mut buf = zeroed(&p, 512);
    let c = driver.controller(id).unwrap();
    assert_eq!(c.state(), State::Failed);
    assert_eq!(c.read(NS, 0, &mut buf), Err(Error::ControllerFailed));
    assert_eq!(c.write(NS, 0, &buf), Err(Error::ControllerFailed));
    assert_eq!(c.write_zeroes(NS, 0, 1), Err(Error::ControllerFailed));
    assert_eq!(c.deallocate(NS, 0, 1), Err(Error::ControllerFailed));
    assert_eq!(c.flush(NS), Err(Error::ControllerFailed));
    let r = c
        .submit(QueueId::FIRST, write(0), Some(buf), 0)
        .unwrap_err();
    assert_eq!(r.error, Error::ControllerFailed);
    assert_eq!(sim.counters().mmio(), 0);
    p.dma_free(r.buffer.unwrap());
    assert_clean(&sim);
}
