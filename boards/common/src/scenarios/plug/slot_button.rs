//! `mode=slot-button`: the attention button on a slot with a power
//! controller. The driver blinks the power indicator for its abort window,
//! detaches in order, and switches the slot's power and indicator off; QEMU
//! ends the unplug on that write. The hand writes nothing.

use bare_nvme::Detection;

use super::button::orderly_detach;
use super::ledger::submit_reads;
use super::verify::survivor_round;
use super::{in_slot, ms, outside, slot_filled, Ctx};
use crate::nvme::Nvme;
use crate::scenarios::{deadline_ms, wait_for_host, Outcome};
use crate::{clock, ensure, failure, marker};

pub(super) fn slot_button(cx: &mut Ctx, d: &mut Nvme) -> Outcome {
    let victim = in_slot(d, cx.bus).ok_or_else(|| failure!("no ready controller in the slot"))?;
    let survivor = outside(d, cx.bus);
    let submitted = submit_reads(cx, d, victim, cx.inflight)?;
    marker!("PHASE armed");
    let armed = clock::now();
    let detach = orderly_detach(cx, d, victim)?;
    let (ticks, took, ledger) = (detach.ticks, detach.took, &detach.ledger);
    let detected_by = Detection::Orderly;
    // The driver's power-off ends the unplug: the slot empties without the
    // hand.
    let deadline = deadline_ms(cx.timeout_ms);
    let start = cx.monitor.ticks;
    while cx.hand.presence() || slot_filled(cx) {
        ensure!(clock::now() < deadline, "the slot was not emptied");
        cx.monitor.tick(d);
    }
    let emptied = clock::now() - armed;
    marker!(
        "RESULT detached_by={detected_by:?} detach_ticks={ticks} detach_ms={} emptied_ms={} emptied_ticks={} submitted={submitted} drained_ok={} hand_writes={}",
        ms(took),
        ms(emptied),
        ticks + (cx.monitor.ticks - start),
        ledger.ok,
        cx.hand.writes()
    );
    marker!("PHASE emptied");
    cx.monitor.quiet(d, 50)?;
    wait_for_host("deleted", cx.timeout_ms)?;
    cx.monitor.quiet(d, 50)?;
    ensure!(cx.hand.writes() == 0, "the hand wrote Slot Control");
    survivor_round(cx, d, survivor)
}
