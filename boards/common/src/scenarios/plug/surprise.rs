//! `mode=surprise`: the controller cold-plugged in the slot is pulled with
//! commands in flight while a second controller keeps serving.

use bare_nvme::QueueId;
use bare_nvme::{Error, IoOp, State};

use super::ledger::{collect, submit_reads};
use super::pull::pull;
use super::verify::survivor_round;
use super::{in_slot, outside, Ctx};
use crate::nvme::{ctrl, Nvme};
use crate::scenarios::{deadline_ms, Outcome};
use crate::{clock, ensure, failure, marker};

pub(super) fn surprise(cx: &mut Ctx, d: &mut Nvme) -> Outcome {
    let victim = in_slot(d, cx.bus).ok_or_else(|| failure!("no ready controller in the slot"))?;
    let survivor = outside(d, cx.bus);
    ensure!(
        !cx.survivor_io || survivor.is_some(),
        "no second controller for survivor=io"
    );
    survivor_round(cx, d, survivor)?;
    let in_flight = submit_reads(cx, d, victim, cx.inflight)?;
    ensure!(in_flight > 0, "nothing in flight at the pull");
    let (failed, by, ticks, took) = pull(cx, d, victim, survivor)?;
    marker!(
        "RESULT detect_ticks={ticks} detect_ms={}.{:03} detected_by={by:?} in_flight={in_flight} failed_commands={failed}",
        took.as_micros() / 1000,
        took.as_micros() % 1000
    );
    let ledger = collect(cx, d, victim, cx.inflight)?;
    ensure!(
        ledger.removed == failed,
        "{} commands failed with DeviceRemoved, event says {failed}",
        ledger.removed
    );
    ensure!(
        failed > 0,
        "no command failed although {in_flight} were in flight"
    );
    // New submissions get the same error.
    let late = ctrl(d, victim)?
        .submit(QueueId::FIRST, IoOp::Flush { nsid: 1 }, None, 0)
        .err()
        .map(|r| r.error);
    ensure!(
        late == Some(Error::DeviceRemoved),
        "submission after removal: {late:?}"
    );
    marker!(
        "RESULT ledger_ok={} ledger_removed={} late_submit=DeviceRemoved",
        ledger.ok,
        ledger.removed
    );
    // Later ticks are quiet about the slot, the survivor keeps serving.
    let deadline = deadline_ms(100);
    while clock::now() < deadline {
        let events = cx.monitor.tick(d);
        ensure!(
            events.is_empty(),
            "event after the removal: {:?}",
            events[0]
        );
        survivor_round(cx, d, survivor)?;
    }
    if let Some(id) = survivor {
        ensure!(
            ctrl(d, id)?.state() == State::Ready,
            "the second controller left Ready"
        );
        ensure!(
            !cx.survivor_io || cx.survivor_rounds > 1,
            "no verified I/O on the second controller"
        );
        marker!("RESULT survivor=ready");
    }
    Ok(())
}
