//! Controller bring-up through the driver: from a controller firmware left
//! enabled, with namespaces of 512 and 4096-byte blocks, with queue counts
//! and depths the controller limits; and the orderly detach that ends it.

mod common;

use std::time::Duration;

use bare_nvme::nvme::command::admin;
use bare_nvme::QueueId;
use bare_nvme::{ControllerConfig, Event, Platform, State};
use bare_nvme_sim::{BridgeId, ControllerSpec, CtrlId, NamespaceSpec, PortId, Sim};
use common::*;

fn firmware_enabled(serial: &str) -> ControllerSpec {
    ControllerSpec::default()
        .serial(serial)
        .firmware_enabled(true)
        .ready_delay(Duration::from_millis(20))
        .namespace(NamespaceSpec::new(512, 512))
}

#[test]
fn controllers_firmware_left_enabled_are_reset_first_and_then_serve_io() {
    let sim = Sim::builder()
        .root_port(true)
        .pci_bridge()
        .controller_on_port(PortId(0), firmware_enabled("port"))
        .controller_on_bridge(BridgeId(0), firmware_enabled("bridge"))
        .controller_on_bus0(firmware_enabled("bus0"))
        .build();
    for c in 0..3 {
        assert!(sim.is_ready(CtrlId(c)), "firmware left {c} enabled");
    }
    let mut driver = Box::new(Drv::new(
        sim.platform(),
        sim.config_access(),
        Default::default(),
    ));
    assert_eq!(driver.scan().unwrap(), 3);
    let events = driver.wait_ready(PATIENCE);
    let ready: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Ready { serial, .. } => Some(serial.as_str().to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(ready.len(), 3, "{events:?} {:?}", sim.protocol_log());
    // Programming the admin queue or CC while the controller is still
    // enabled, or before RDY dropped, is a protocol error in the model.
    assert_clean(&sim);
    let counters = sim.counters();
    assert_eq!(counters.admin(admin::CREATE_SQ), 3);
    assert_eq!(counters.admin(admin::CREATE_CQ), 3);
    let p = sim.platform();
    for id in driver.ready_controllers().collect::<Vec<_>>() {
        let data = filled(&p, 4096, 5);
        let mut back = zeroed(&p, 4096);
        let c = driver.controller(id).unwrap();
        c.write(1, 64, &data).unwrap();
        c.read(1, 64, &mut back).unwrap();
        assert_eq!(back.as_slice(), data.as_slice());
        p.dma_free(data);
        p.dma_free(back);
    }
    finish(&sim, driver);
}

#[test]
fn several_namespaces_of_512_and_4096_byte_blocks_are_served_independently() {
    let spec = ControllerSpec::default()
        .namespace(NamespaceSpec::new(4096, 512))
        .namespace(NamespaceSpec::new(1024, 4096))
        .namespace(NamespaceSpec::new(100, 512))
        .namespace(NamespaceSpec::new(8, 4096));
    let (sim, mut driver, id) = single(spec, ControllerConfig::default());
    let c = driver.controller(id).unwrap();
    let shape: Vec<(u32, u32, u64)> = c
        .namespaces()
        .iter()
        .map(|n| (n.id(), n.block_size(), n.blocks()))
        .collect();
    assert_eq!(
        shape,
        [(1, 512, 4096), (2, 4096, 1024), (3, 512, 100), (4, 4096, 8)]
    );
    let p = sim.platform();
    // The same LBA on every namespace, different data on each.
    for (nsid, bs, _) in &shape {
        let data = filled(&p, 2 * *bs as usize, *nsid as u8);
        c.write(*nsid, 6, &data).unwrap();
        p.dma_free(data);
    }
    for (nsid, bs, _) in &shape {
        let bs = *bs as usize;
        let mut back = zeroed(&p, 2 * bs);
        c.read(*nsid, 6, &mut back).unwrap();
        let expected = pattern(2 * bs, *nsid as u8);
        assert_eq!(back.as_slice(), &expected[..], "namespace {nsid}");
        assert_eq!(sim.read_block(CtrlId(0), *nsid, 7), expected[bs..]);
        p.dma_free(back);
    }
    // Each namespace's own end bounds its range.
    let mut one = zeroed(&p, 4096);
    assert!(c.read(4, 7, &mut one).is_ok());
    assert!(c.read(4, 8, &mut one).is_err());
    assert!(c.read(2, 1023, &mut one).is_ok());
    assert!(c.write_zeroes(3, 99, 2).is_err());
    c.write_zeroes(3, 6, 1).unwrap();
    assert_eq!(sim.read_block(CtrlId(0), 3, 6), vec![0; 512]);
    assert_eq!(sim.read_block(CtrlId(0), 1, 6), pattern(1024, 1)[..512]);
    p.dma_free(one);
    finish(&sim, driver);
}

#[test]
fn the_ready_event_reports_identity_and_namespace_count() {
    let spec = ControllerSpec::default()
        .serial("SN-0042")
        .model("Test Model 9")
        .namespace(NamespaceSpec::new(64, 512))
        .namespace(NamespaceSpec::new(64, 4096));
    let sim = Sim::single(spec);
    let mut driver = Box::new(Drv::new(
        sim.platform(),
        sim.config_access(),
        Default::default(),
    ));
    driver.scan().unwrap();
    let events = driver.wait_ready(PATIENCE);
    let ready = events
        .iter()
        .find_map(|e| match e {
            Event::Ready {
                serial,
                model,
                namespaces,
                ..
            } => Some((
                serial.as_str().to_string(),
                model.as_str().to_string(),
                *namespaces,
            )),
            _ => None,
        })
        .expect("ready event");
    assert_eq!(ready, ("SN-0042".into(), "Test Model 9".into(), 2));
    finish(&sim, driver);
}

#[test]
fn queue_count_and_depth_are_clamped_to_what_the_controller_grants() {
    let spec = ControllerSpec::default()
        .mqes(15)
        .max_ioqpairs(2)
        .namespace(NamespaceSpec::new(64, 512));
    let config = ControllerConfig::default().io_queues(4).queue_depth(128);
    let (sim, mut driver, id) = single(spec, config);
    let c = driver.controller(id).unwrap();
    assert_eq!(c.io_queue_count(), 2);
    assert_eq!(c.queue_depth(), 16, "CAP.MQES 15 means 16 entries");
    assert_eq!(sim.io_queues(CtrlId(0)), 2);
    // A full ring's worth on each granted queue goes through.
    let p = sim.platform();
    for q in 0..2u16 {
        for k in 0..15u64 {
            let op = bare_nvme::IoOp::Read {
                nsid: 1,
                lba: k,
                blocks: 1,
            };
            let _ = c
                .submit(QueueId::new(q), op, Some(zeroed(&p, 512)), k)
                .unwrap();
        }
    }
    for q in 0..2u16 {
        for d in collect(&mut driver, id, q, 15) {
            assert_eq!(d.result, Ok(()));
            p.dma_free(d.buffer.unwrap());
        }
    }
    finish(&sim, driver);
}

#[test]
fn an_orderly_detach_deletes_the_queues_and_returns_all_memory() {
    let (sim, mut driver, id) = single(spec(64, 512), ControllerConfig::default());
    let held = sim.counters().dma_regions;
    assert!(held > 0, "rings and identify memory held");
    assert_eq!(sim.io_queues(CtrlId(0)), 1);
    sim.reset_counters();
    let c = driver.controller(id).unwrap();
    c.detach().unwrap();
    assert_eq!(c.state(), State::Detached);
    let counters = sim.counters();
    assert_eq!(counters.admin(admin::DELETE_SQ), 1);
    assert_eq!(counters.admin(admin::DELETE_CQ), 1);
    assert_eq!(sim.io_queues(CtrlId(0)), 0);
    assert_eq!(counters.dma_regions, 0);
    assert_eq!((counters.dma_allocs, counters.dma_frees), (0, held));
    // The tick reports the detach once.
    let removed: Vec<_> = (0..100)
        .flat_map(|_| driver.tick())
        .filter(|e| matches!(e, Event::Removed { .. }))
        .collect();
    assert_eq!(removed.len(), 1, "{removed:?}");
    assert_clean(&sim);
}

#[test]
fn settings_outside_their_range_are_clamped_rather_than_failing_the_controller() {
    let cases = [
        // (io_queues, queue_depth, max_transfer) -> (queues, depth, transfer)
        ((0, 128, 256 << 10), (1, 128, 256 << 10)),
        ((1, 0, 256 << 10), (1, 2, 256 << 10)),
        ((1, 1, 256 << 10), (1, 2, 256 << 10)),
        ((1, 128, 0), (1, 128, 4096)),
        ((1, 128, 6000), (1, 128, 4096)),
        // MDTS 7 of the simulated controller: 512 KiB.
        ((100, 10_000, u32::MAX), (4, 256, 512 << 10)),
    ];
    for ((io_queues, queue_depth, max_transfer), expected) in cases {
        let config = ControllerConfig::default()
            .io_queues(io_queues)
            .queue_depth(queue_depth)
            .max_transfer(max_transfer);
        let (sim, mut driver, id) = single(spec(64, 512), config);
        let c = driver.controller(id).unwrap();
        let got = (c.io_queue_count(), c.queue_depth(), c.max_transfer());
        assert_eq!(got, expected, "{config:?}");
        let p = sim.platform();
        let data = filled(&p, 4096, 1);
        let mut back = zeroed(&p, 4096);
        c.write(1, 0, &data).unwrap();
        c.read(1, 0, &mut back).unwrap();
        assert_eq!(back.as_slice(), data.as_slice());
        p.dma_free(data);
        p.dma_free(back);
        finish(&sim, driver);
    }
}
