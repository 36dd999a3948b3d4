//! The end of a run: detach everything, collect every command, and check
//! that no event was lost and that memory came back only where the device
//! provably could not write it.

use bare_nvme::{ControllerId, Platform};

use crate::device::Shared;
use crate::ledger::{poll_all, tick, Ledger};
use crate::rig::Rig;
use crate::FuzzDriver;

/// Most ticks the final detach may take.
const DETACH_TICKS: usize = 100_000;

/// Detaches every controller and ticks until all are finished, then
/// collects what they delivered. A detach that cannot shut the controller
/// down ends Failed and releases the function, which the bus rescan then
/// attaches again; after a few such rounds the devices are pulled, which
/// ends the cycle.
pub(crate) fn detach_all(rig: &Rig, driver: &mut FuzzDriver, ledger: &mut Ledger) {
    let mut asked: Vec<ControllerId> = Vec::new();
    let mut ticks = 0;
    let mut quiet_ticks = 0;
    let mut rounds = 0;
    while quiet_ticks < 4 {
        let ids: Vec<ControllerId> = driver.controllers().collect();
        let mut fresh = false;
        for id in ids {
            let Ok(c) = driver.controller(id) else {
                continue;
            };
            if !c.state().is_finished() && !asked.contains(&id) {
                asked.push(id);
                fresh = true;
                let _ = driver.begin_detach(id);
            }
        }
        if fresh && ticks > 0 {
            rounds += 1;
            if rounds == 3 {
                for &(c, _) in &rig.ctrls {
                    rig.sim.surprise_remove(c);
                }
            }
        }
        tick(driver, ledger);
        let all_finished = driver
            .controllers()
            .collect::<Vec<_>>()
            .into_iter()
            .all(|id| {
                driver
                    .controller(id)
                    .map_or(true, |c| c.state().is_finished())
            });
        quiet_ticks = if all_finished { quiet_ticks + 1 } else { 0 };
        ticks += 1;
        assert!(ticks < DETACH_TICKS, "detach never finishes");
    }
    poll_all(driver, ledger);
}

/// Every command came back, and every controller attached reported its
/// end and (while still known) the quarantine it holds.
pub(crate) fn check_reports(driver: &mut FuzzDriver, ledger: &mut Ledger) {
    // A finished controller's entry may be recycled for a new attach once
    // the table is full; what it still held for the caller went back to the
    // platform with it (the memory check covers it).
    ledger
        .outstanding
        .retain(|_, id| driver.controller(*id).is_ok());
    assert!(
        ledger.outstanding.is_empty(),
        "commands never completed after teardown: {:?}",
        ledger.outstanding
    );
    // No event lost: every controller attached reported its end, and the
    // quarantine of each one still known.
    for id in &ledger.attached {
        assert!(
            ledger.ended.contains(id),
            "{id:?} attached but never reported its end (ended: {:?})",
            ledger.ended
        );
        if let Ok(c) = driver.controller(*id) {
            let kept = c.quarantined().regions;
            assert_eq!(
                ledger.quarantined.get(id).copied().unwrap_or(0),
                kept,
                "{id:?} quarantined {kept} regions, reported otherwise"
            );
        }
    }
}

/// After the driver is gone: frees the buffers handed back and checks the
/// device's memory accesses and what is left of the DMA arena. Returns how
/// many regions the driver declared kept.
pub(crate) fn check_memory(rig: &Rig, ledger: &mut Ledger, chaos: &Shared) -> u32 {
    for buffer in ledger.returned.drain(..) {
        rig.platform.dma_free(buffer);
    }
    let declared = ledger.quarantined.values().sum::<u32>() + ledger.kept;
    let sim = &rig.sim;
    let c = sim.counters();
    let chaos = chaos.borrow();
    // A lying read can forge any proof that the device stopped; device
    // writes into the rings can make it fetch or write anything.
    let forged = chaos.read_lied || chaos.scribbled;
    assert!(
        c.freed_while_dma_possible == 0 || chaos.read_lied,
        "memory handed back while the device could still write it: {:?}\n{:#?}",
        sim.violations(),
        sim.protocol_log()
    );
    assert!(
        c.wild_dma == 0 || forged,
        "the device reached memory it did not own: {:?}",
        sim.violations()
    );
    assert!(
        c.protocol_errors == 0 || forged || rig.reset_behind,
        "the device was driven wrongly: {:?}\n{:#?}",
        sim.violations(),
        sim.protocol_log()
    );
    if declared == 0 {
        assert_eq!(
            (c.dma_regions, c.dma_bytes),
            (0, 0),
            "DMA memory leaked after teardown (nothing was declared quarantined)"
        );
    } else {
        assert!(
            c.dma_regions <= u64::from(declared),
            "{} DMA regions outstanding after teardown, {declared} declared quarantined",
            c.dma_regions
        );
    }
    declared
}
