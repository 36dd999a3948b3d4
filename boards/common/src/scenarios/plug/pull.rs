//! The hand pulls the slot's controller; the tick must report it removed,
//! once.

use core::time::Duration;

use bare_nvme::{ControllerId, Detection, Event};
use log::info;

use super::Ctx;
use crate::nvme::{self, ctrl, Nvme};
use crate::scenarios::Failure;
use crate::{ensure, failure};

/// Pulls the slot's controller `victim` and ticks until its Removed event;
/// returns (failed_commands, detected_by, ticks, time).
pub(super) fn pull(
    cx: &mut Ctx,
    d: &mut Nvme,
    victim: ControllerId,
    survivor: Option<ControllerId>,
) -> Result<(u32, Detection, u64, Duration), Failure> {
    crate::clock::delay_us(cx.pull_after_us);
    let in_flight = ctrl(d, victim)?.in_flight();
    info!("hand: pulling {victim} out of its slot with {in_flight} commands in flight");
    cx.hand.remove();
    let removed_before = cx.monitor.removed;
    let timeout = cx.timeout_ms;
    let mut rounds = 0u64;
    let survivor_io = cx.survivor_io;
    let (event, ticks, took) = cx.monitor.until(
        d,
        timeout,
        "Removed after the pull",
        |e| matches!(e, Event::Removed { id, .. } if *id == victim),
        |d| {
            if let (true, Some(id)) = (survivor_io, survivor) {
                rounds += 1;
                let c = ctrl(d, id)?;
                let nsid = c.namespaces().first().map(|n| n.id()).unwrap_or(1);
                let block = c.namespace(nsid).map_err(|e| failure!("{e}"))?.block_size();
                nvme::verified_io(c, nsid, 2048 + rounds * 8, 8 * block as usize, rounds)
                    .map_err(|e| failure!("survivor during the removal: {e}"))?;
            }
            Ok(())
        },
    )?;
    cx.survivor_rounds += rounds;
    let Event::Removed {
        failed_commands,
        detected_by,
        ..
    } = event
    else {
        return Err(failure!("not a removal: {event:?}"));
    };
    ensure!(
        cx.monitor.removed == removed_before + 1,
        "{} Removed events for one pull",
        cx.monitor.removed - removed_before
    );
    Ok((failed_commands, detected_by, ticks, took))
}
