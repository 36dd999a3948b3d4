//! `mode=bringup`: the controller in the slot is pulled part way through its
//! bring-up; the other controller still comes up.

use bare_nvme::State;
use log::info;

use super::pull::pull;
use super::verify::check_io;
use super::{ms, on_bus, settle, Ctx};
use crate::nvme::{ctrl, Nvme};
use crate::scenarios::Outcome;
use crate::{ensure, failure, marker};

pub(super) fn bringup(cx: &mut Ctx, d: &mut Nvme, after_ticks: u64) -> Outcome {
    for _ in 0..after_ticks {
        cx.monitor.tick(d);
    }
    let victim = d
        .controllers()
        .find(|&id| on_bus(d, id, cx.bus))
        .ok_or_else(|| failure!("no controller attached in the slot"))?;
    let state = ctrl(d, victim)?.state();
    ensure!(
        !matches!(state, State::Ready),
        "bring-up already finished after {after_ticks} ticks"
    );
    info!("pulling {victim} in state {state:?}");
    let survivor = d.controllers().find(|&id| !on_bus(d, id, cx.bus));
    let (failed, by, ticks, took) = pull(cx, d, victim, None)?;
    marker!(
        "RESULT pulled_in={state:?} bringup_removed_by={by:?} bringup_detect_ticks={ticks} bringup_detect_ms={} failed_commands={failed}",
        ms(took)
    );
    settle(cx, d)?;
    if let Some(id) = survivor {
        ensure!(
            ctrl(d, id)?.state() == State::Ready,
            "the other controller did not come up"
        );
        check_io(cx, d, id, 0, 0xB00)?;
        marker!("RESULT survivor=ready");
    }
    cx.monitor.quiet(d, 50)
}
