//! Once the device behaves again: every controller settles, and a Ready
//! one serves a read.

use std::time::Duration;

use bare_nvme::{ControllerId, IoOp, Platform, QueueId, State};
use bare_nvme_sim::Hold;

use crate::device::Shared;
use crate::ledger::{poll_all, tick, Ledger};
use crate::rig::Rig;
use crate::FuzzDriver;

/// Ticks, each 1 ms of virtual time, for controllers to settle once the
/// device behaves again.
const SETTLE_TICKS: usize = 3_000;

/// The device stops misbehaving: every controller must settle (Ready, or
/// ended) within [`SETTLE_TICKS`] of virtual milliseconds, and, unless a
/// lie may have left the driver misconfigured, every Ready controller must
/// serve a read of block 0 from its first I/O queue. Returns how many did.
pub(crate) fn recover(
    rig: &Rig,
    driver: &mut FuzzDriver,
    ledger: &mut Ledger,
    chaos: &Shared,
) -> usize {
    let sim = &rig.sim;
    for &(c, _) in &rig.ctrls {
        sim.behave(c);
        sim.unhang(c);
        sim.ignore_config_writes(c, false);
        sim.hold(c, Hold::None);
    }
    sim.release_all();
    for &port in &rig.down {
        sim.link_up(port);
    }
    let settled = |driver: &mut FuzzDriver| {
        let ids: Vec<ControllerId> = driver.controllers().collect();
        ids.into_iter().all(|id| {
            driver.controller(id).map_or(true, |c| {
                c.state() == State::Ready || c.state().is_finished()
            })
        })
    };
    let mut ticks = 0;
    while !settled(driver) {
        sim.advance(Duration::from_millis(1));
        tick(driver, ledger);
        poll_all(driver, ledger);
        ticks += 1;
        if ticks == SETTLE_TICKS {
            let states: Vec<_> = driver
                .controllers()
                .collect::<Vec<_>>()
                .into_iter()
                .map(|id| driver.controller(id).map(|c| c.state()))
                .collect();
            panic!("controllers never settle with a device that behaves: {states:?}");
        }
    }
    {
        let chaos = chaos.borrow();
        if chaos.read_lied || chaos.scribbled {
            return 0;
        }
    }
    // Commands the misbehaving device lost time out and come back.
    let mut ticks = 0;
    while ledger.outstanding.values().any(|id| {
        driver
            .controller(*id)
            .is_ok_and(|c| c.state() == State::Ready)
    }) {
        poll_all(driver, ledger);
        sim_tick(rig, driver, ledger);
        ticks += 1;
        assert!(
            ticks < SETTLE_TICKS,
            "commands never complete on a Ready controller once the device behaves: {:?}",
            ledger.outstanding
        );
    }
    let ids: Vec<ControllerId> = driver.ready_controllers().collect();
    let mut served = 0;
    for id in ids {
        if serve_one(rig, driver, ledger, id) {
            served += 1;
        }
    }
    served
}

/// Reads block 0 of the first namespace through queue 0, up to three
/// times (the first may be what makes the driver notice a reset device);
/// true once one read succeeds, false if the controller ends meanwhile.
pub(crate) fn serve_one(
    rig: &Rig,
    driver: &mut FuzzDriver,
    ledger: &mut Ledger,
    id: ControllerId,
) -> bool {
    for _ in 0..3 {
        let Ok(ctrl) = driver.controller(id) else {
            return false;
        };
        if ctrl.state() != State::Ready {
            return false;
        }
        let Some(ns) = ctrl.namespaces().first().copied() else {
            return false;
        };
        let Some(buffer) = rig.platform.dma_alloc(ns.block_size() as usize, 4096) else {
            // The arena is full of quarantined memory.
            return false;
        };
        let tag = ledger.tag();
        let op = IoOp::Read {
            nsid: ns.id(),
            lba: 0,
            blocks: 1,
        };
        match ctrl.submit(QueueId::FIRST, op, Some(buffer), tag) {
            Ok(_) => {
                ledger.outstanding.insert(tag, id);
            }
            Err(rejected) => {
                let error = rejected.error;
                ledger.give_back(rejected.buffer);
                panic!("a Ready controller refuses a read once the device behaves: {error:?}");
            }
        }
        let mut ticks = 0;
        while ledger.outstanding.contains_key(&tag) {
            poll_all(driver, ledger);
            sim_tick(rig, driver, ledger);
            ticks += 1;
            assert!(
                ticks < SETTLE_TICKS,
                "a read never completes once the device behaves"
            );
        }
        if ledger.succeeded.contains(&tag) {
            return true;
        }
    }
    let state = driver.controller(id).map(|c| c.state());
    assert!(
        !matches!(state, Ok(State::Ready)),
        "a Ready controller fails every read once the device behaves"
    );
    false
}

pub(crate) fn sim_tick(rig: &Rig, driver: &mut FuzzDriver, ledger: &mut Ledger) {
    rig.sim.advance(Duration::from_millis(1));
    tick(driver, ledger);
}
