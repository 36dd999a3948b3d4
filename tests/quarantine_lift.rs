//! Quarantine lifted: the driver's own regions of a controller given up
//! while its device could still reach memory return to the platform, each
//! exactly once, when a later tick proves DMA stopped (the device left its
//! slot, or bus mastering reads back off), and never before.

mod misbehaviour_common;

use std::time::Duration;

use bare_nvme::pci::config::{Command, ConfigSpace};
use bare_nvme::pci::link::PciLink;
use bare_nvme::{Controller, Event, IoOp, PhysAddr, Platform, Quarantine, QueueId};
use bare_nvme_sim::{CtrlId, Hold, Sim, SimConfig, SimPlatform};
use misbehaviour_common::*;

const CTRL: CtrlId = CtrlId(0);

/// A driver whose controller was given up with a read held by a device
/// that ignores config writes and whose registers are out of reach: its
/// memory is quarantined. Returns the driver, the quarantine reported and
/// the regions the platform has outstanding.
fn quarantined(sim: &Sim) -> (Box<SimDriver>, Quarantine, u64) {
    let (mut driver, id) = ready(sim);
    sim.hold(CTRL, Hold::Io);
    submit_read(&mut driver, sim, id, 5);
    driver.controller(id).unwrap().ring_doorbells();
    sim.ignore_config_writes(CTRL, true);
    sim.memory_decoding_off(CTRL);
    let mut events = tick_for(&mut driver, sim, Duration::from_secs(5), |d| {
        d.controller_state(id).is_some_and(|s| s.is_finished())
    });
    events.extend(tick_for(&mut driver, sim, Duration::from_millis(5), |_| {
        false
    }));
    let kept = events
        .iter()
        .find_map(|e| match *e {
            Event::Quarantined { regions, bytes, .. } => Some(Quarantine { regions, bytes }),
            _ => None,
        })
        .expect("quarantined");
    let got = poll(&mut driver, id);
    assert_eq!(got.len(), 1);
    assert!(got[0].buffer.is_none(), "the caller buffer stays kept");
    assert!(sim.can_dma(CTRL));
    // Still hung: ticks find no proof and free nothing.
    let outstanding = sim.counters().dma_regions;
    tick_for(&mut driver, sim, Duration::from_millis(50), |_| false);
    assert_eq!(driver.quarantine_returned(), Quarantine::default());
    assert_eq!(sim.counters().dma_regions, outstanding);
    assert_eq!(sim.counters().freed_while_dma_possible, 0);
    (driver, kept, outstanding)
}

/// The regions freed since `outstanding`, as the platform's ledger shows
/// them, match what the driver reports, and the caller's buffer (one
/// region, its read's 512 bytes rounded to a page) is all that stays.
fn assert_returned(driver: &SimDriver, sim: &Sim, kept: Quarantine, outstanding: u64) {
    let returned = driver.quarantine_returned();
    assert_eq!(
        returned.regions + 1,
        kept.regions,
        "{returned:?} of {kept:?}"
    );
    assert!(returned.bytes > 0 && returned.bytes < kept.bytes);
    assert_eq!(
        sim.counters().dma_regions,
        outstanding - u64::from(returned.regions)
    );
    let c = sim.counters();
    assert_eq!((c.freed_while_dma_possible, c.wild_dma), (0, 0));
}

#[test]
fn quarantined_regions_return_once_the_device_has_left_its_slot() {
    let sim = Sim::single(spec());
    let (mut driver, kept, outstanding) = quarantined(&sim);
    sim.surprise_remove(CTRL);
    tick_for(&mut driver, &sim, Duration::from_millis(50), |d| {
        d.quarantine_returned().regions > 0
    });
    assert_returned(&driver, &sim, kept, outstanding);
    // Exactly once: later ticks free nothing more (a second free would
    // panic in the platform's ledger).
    let once = driver.quarantine_returned();
    tick_for(&mut driver, &sim, Duration::from_millis(50), |_| false);
    assert_eq!(driver.quarantine_returned(), once);
    // The caller's buffer of the held read stays in quarantine.
    sim.expect_quarantined();
}

#[test]
fn quarantined_regions_return_once_bus_mastering_reads_back_off() {
    let sim = Sim::single(spec());
    let (mut driver, kept, outstanding) = quarantined(&sim);
    // The device takes config writes again (a reset of its function): the
    // tick turns bus mastering off, reads it back off, and frees.
    sim.ignore_config_writes(CTRL, false);
    tick_for(&mut driver, &sim, Duration::from_millis(50), |d| {
        d.quarantine_returned().regions > 0
    });
    assert!(
        !sim.can_dma(CTRL),
        "bus mastering off before anything returned"
    );
    assert_returned(&driver, &sim, kept, outstanding);
    let once = driver.quarantine_returned();
    tick_for(&mut driver, &sim, Duration::from_millis(50), |_| false);
    assert_eq!(driver.quarantine_returned(), once);
    // The device completes the held read: it cannot reach memory.
    sim.release_all();
    assert_eq!(sim.counters().wild_dma, 0);
    sim.expect_quarantined();
    drop(driver);
}

#[test]
fn a_quarantine_waits_while_a_scan_has_attached_the_same_function_again() {
    let sim = Sim::single(spec());
    let (mut driver, kept, outstanding) = quarantined(&sim);
    // The function takes config writes again and the embedder scans: the
    // same device is attached anew. Switching its bus mastering off to lift
    // the old quarantine would stop the new controller.
    sim.ignore_config_writes(CTRL, false);
    sim.hold(CTRL, Hold::None);
    driver.scan().expect("scan");
    let events = tick_for(&mut driver, &sim, Duration::from_secs(10), |d| {
        d.ready_controllers().count() == 1
    });
    let Some(id) = driver.ready_controllers().next() else {
        panic!("not attached again: {events:?}");
    };
    round_trip(&mut driver, &sim, id, 8);
    assert_eq!(driver.quarantine_returned(), Quarantine::default());
    // Once the new controller is detached, its function's bus mastering
    // reads back off and the old regions return.
    driver.begin_detach(id).expect("detach");
    tick_for(&mut driver, &sim, Duration::from_secs(10), |d| {
        d.quarantine_returned().regions > 0
    });
    let returned = driver.quarantine_returned();
    assert_eq!(
        returned.regions + 1,
        kept.regions,
        "{returned:?} of {kept:?}"
    );
    assert!(sim.counters().dma_regions < outstanding);
    let c = sim.counters();
    assert_eq!((c.freed_while_dma_possible, c.wild_dma), (0, 0));
    sim.expect_quarantined();
}

#[test]
fn a_standalone_controller_with_a_pci_link_returns_its_quarantine_from_its_tick() {
    let sim = Sim::single(spec());
    let access = sim.config_access();
    let address = sim.address(CTRL).expect("function");
    ConfigSpace::new(&access, address)
        .update_command(Command::MEMORY | Command::BUS_MASTER, Command::empty());
    let platform = sim.platform();
    let len = 16 << 10;
    let regs = platform
        .map_registers(PhysAddr::new(sim.bar(CTRL)), len)
        .expect("mapped");
    let link = PciLink::new(access, address, None);
    let mut c: Controller<SimPlatform, PciLink<SimConfig>> =
        Controller::new(platform, link, regs, len, config().controller);
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
    // RDY freezes and bus mastering cannot be switched off: the stuck read
    // ends in a reset that never stops, and the controller is given up.
    sim.hang(CTRL);
    sim.ignore_config_writes(CTRL, true);
    let end = sim.now() + Duration::from_secs(10);
    while !c.state().is_finished() && sim.now() < end {
        c.tick();
        // Virtual time, so the deadlines pass in few ticks.
        sim.advance(Duration::from_millis(1));
    }
    let kept = c.quarantined();
    assert!(kept.regions > 1, "{kept:?}");
    let outstanding = sim.counters().dma_regions;
    for _ in 0..100 {
        c.tick();
    }
    assert_eq!(c.quarantine_returned(), Quarantine::default());
    assert_eq!(sim.counters().dma_regions, outstanding);
    // The function takes config writes again: the next tick switches bus
    // mastering off, reads it back off, and frees.
    sim.ignore_config_writes(CTRL, false);
    c.tick();
    assert!(!sim.can_dma(CTRL));
    let returned = c.quarantine_returned();
    assert_eq!(
        returned.regions + 1,
        kept.regions,
        "{returned:?} of {kept:?}"
    );
    assert_eq!(
        sim.counters().dma_regions,
        outstanding - u64::from(returned.regions)
    );
    for _ in 0..100 {
        c.tick();
    }
    assert_eq!(c.quarantine_returned(), returned, "once");
    let counters = sim.counters();
    assert_eq!(
        (counters.freed_while_dma_possible, counters.wild_dma),
        (0, 0)
    );
    drop(c);
    sim.expect_quarantined();
}
