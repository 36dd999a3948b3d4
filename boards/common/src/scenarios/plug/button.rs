//! `mode=button`: the attention button asks for an orderly detach; only then
//! does the hand empty the slot.

use core::time::Duration;

use bare_nvme::{ControllerId, Detection, Event};

use super::ledger::{collect, submit_reads, Ledger};
use super::verify::survivor_round;
use super::{in_slot, ms, outside, slot_filled, Ctx};
use crate::nvme::Nvme;
use crate::scenarios::{wait_for_host, Failure, Outcome};
use crate::{ensure, failure, marker};

pub(super) fn button(cx: &mut Ctx, d: &mut Nvme) -> Outcome {
    let victim = in_slot(d, cx.bus).ok_or_else(|| failure!("no ready controller in the slot"))?;
    let survivor = outside(d, cx.bus);
    let submitted = submit_reads(cx, d, victim, cx.inflight)?;
    marker!("PHASE armed");
    let detach = orderly_detach(cx, d, victim)?;
    let (ticks, took, ledger) = (detach.ticks, detach.took, &detach.ledger);
    let (detected_by, failed_commands) = (Detection::Orderly, detach.failed_commands);
    marker!(
        "RESULT detached_by={detected_by:?} detach_ticks={ticks} detach_ms={} submitted={submitted} drained_ok={} aborted={} failed_commands={failed_commands}",
        ms(took),
        ledger.ok,
        ledger.aborted
    );
    // The device is detached; now the slot is emptied.
    ensure!(slot_filled(cx), "slot emptied before the hand");
    cx.hand.remove();
    marker!("PHASE pulled");
    cx.monitor.quiet(d, 50)?;
    wait_for_host("deleted", cx.timeout_ms)?;
    cx.monitor.quiet(d, 50)?;
    ensure!(!slot_filled(cx), "device still answers after the pull");
    survivor_round(cx, d, survivor)
}

/// How an orderly detach asked for by the attention button went.
pub(super) struct OrderlyDetach {
    /// Ticks from the press to the Removed event.
    pub(super) ticks: u64,
    /// Time from the press to the Removed event.
    pub(super) took: Duration,
    /// The event's count of failed commands.
    pub(super) failed_commands: u32,
    /// What the reads in flight came back with.
    pub(super) ledger: Ledger,
}

/// Ticks until `victim` is reported removed after a button press, which
/// must be an orderly detach in which no read failed as removed.
pub(super) fn orderly_detach(
    cx: &mut Ctx,
    d: &mut Nvme,
    victim: ControllerId,
) -> Result<OrderlyDetach, Failure> {
    let (event, ticks, took) = cx.monitor.until(
        d,
        cx.timeout_ms,
        "orderly Removed after the attention button",
        |e| matches!(e, Event::Removed { id, .. } if *id == victim),
        |_| Ok(()),
    )?;
    let Event::Removed {
        detected_by,
        failed_commands,
        ..
    } = event
    else {
        return Err(failure!("not a removal"));
    };
    ensure!(
        detected_by == Detection::Orderly,
        "button press detected as {detected_by:?}"
    );
    let ledger = collect(cx, d, victim, cx.inflight)?;
    ensure!(
        ledger.removed == 0,
        "{} commands failed as removed in an orderly detach",
        ledger.removed
    );
    Ok(OrderlyDetach {
        ticks,
        took,
        failed_commands,
        ledger,
    })
}
