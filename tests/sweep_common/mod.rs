//! What the removal sweeps share: the one-slot machine, the checks every
//! swept run ends with, and the tick budgets.
#![allow(dead_code)]

use bare_nvme::{ControllerId, Event};
use bare_nvme_sim::{PortId, RemovedReads, Sim};

use super::common_hotplug::*;

/// Ticks a removal may take to be noticed and torn down.
pub const MAX_TICKS: usize = 200;
/// Ticks after the removal that must stay quiet.
pub const QUIET_TICKS: usize = 50;

pub fn sim(mode: RemovedReads) -> Sim {
    Sim::builder()
        .root_port(true)
        .controller_on_port(PortId(0), spec("sweep-1"))
        .removed_reads(mode)
        .build()
}

pub fn assert_clean(sim: &Sim, context: &str) {
    let c = sim.counters();
    assert_eq!(
        c.protocol_errors,
        0,
        "{context}: protocol errors {:?}",
        sim.protocol_log()
    );
    assert_eq!(c.wild_dma, 0, "{context}: wild DMA");
    assert_eq!(
        (c.dma_regions, c.dma_bytes),
        (0, 0),
        "{context}: DMA memory not back"
    );
}

/// Exactly one ending for `id`, and it is a surprise removal.
pub fn assert_one_removal(events: &[Event], id: ControllerId, context: &str) -> u32 {
    let ends = endings(events, id);
    assert_eq!(ends.len(), 1, "{context}: endings {ends:?} in {events:?}");
    match ends[0] {
        Event::Removed {
            failed_commands,
            detected_by,
            ..
        } => {
            assert_ne!(
                detected_by,
                bare_nvme::Detection::Orderly,
                "{context}: a surprise removal reported as orderly"
            );
            failed_commands
        }
        other => panic!("{context}: removal classified as {other:?}"),
    }
}

pub fn assert_quiet(driver: &mut Drv, sim: &Sim, context: &str) {
    for _ in 0..QUIET_TICKS {
        let ev = tick(driver, sim);
        assert!(ev.is_empty(), "{context}: events after removal: {ev:?}");
    }
}
