//! `mode=flap`: slot power goes off and on; the same device comes back,
//! reported as returned, with its data.

use bare_nvme::Event;

use super::verify::check_io;
use super::{in_slot, ms, on_bus, Ctx};
use crate::nvme::{self, ctrl, Buffers, Nvme};
use crate::scenarios::Outcome;
use crate::{ensure, failure, marker};

pub(super) fn flap(cx: &mut Ctx, d: &mut Nvme) -> Outcome {
    let victim = in_slot(d, cx.bus).ok_or_else(|| failure!("no ready controller in the slot"))?;
    let serial = ctrl(d, victim)?.info().map(|i| i.serial);
    check_io(cx, d, victim, 4096, 0xF1A9)?;
    cx.hand.power_off();
    marker!("PHASE power-off");
    let removed_before = cx.monitor.removed;
    if cx.board.args.get("quick") == Some("on") {
        // Power returns before any tick: the driver sees a reset device.
        cx.hand.power_on();
        marker!("PHASE power-on");
    } else {
        let (event, ticks, took) = cx.monitor.until(
            d,
            cx.timeout_ms,
            "Removed after power-off",
            |e| matches!(e, Event::Removed { id, .. } | Event::Failed { id, .. } if *id == victim),
            |_| Ok(()),
        )?;
        let Event::Removed { detected_by, .. } = event else {
            return Err(failure!("power-off reported as {event:?}"));
        };
        marker!(
            "RESULT flap_detect_ticks={ticks} flap_detect_ms={}.{:03} flap_detected_by={detected_by:?}",
            took.as_micros() / 1000,
            took.as_micros() % 1000
        );
        cx.hand.power_on();
        marker!("PHASE power-on");
    }
    let bus = cx.bus;
    let (event, ticks, took) = cx.monitor.until(
        d,
        cx.timeout_ms,
        "Ready after power-on",
        |e| matches!(e, Event::Ready { .. }),
        |_| Ok(()),
    )?;
    let Event::Ready { id, serial: s, .. } = event else {
        return Err(failure!("not ready"));
    };
    ensure!(on_bus(d, id, bus), "ready controller not in the slot");
    ensure!(Some(s) == serial, "a different serial came back");
    let returned = cx.monitor.log.iter().any(
        |e| matches!(e, Event::Returned { id: i, previous } if *i == id && *previous == victim),
    );
    ensure!(returned, "the controller was not reported as returned");
    let ended: heapless::Vec<&str, 4> = cx
        .monitor
        .log
        .iter()
        .filter_map(|e| match e {
            Event::Removed { id, .. } if *id == victim => Some("Removed"),
            Event::Failed { id, .. } if *id == victim => Some("Failed"),
            _ => None,
        })
        .collect();
    ensure!(
        ended.len() == 1 && cx.monitor.removed <= removed_before + 1,
        "the old controller ended {} times",
        ended.len()
    );
    marker!("RESULT flap_old_ended={}", ended[0]);
    // The data written before the flap is still there.
    let c = ctrl(d, id)?;
    let nsid = c.namespaces().first().map(|n| n.id()).unwrap_or(1);
    let block = c.namespace(nsid).map_err(|e| failure!("{e}"))?.block_size() as usize;
    let mut buffers = Buffers::new(cx.board.platform);
    let b = buffers.alloc(16 * block)?;
    c.read(nsid, 4096, &mut buffers.regions[b])
        .map_err(|e| failure!("read after the flap: {e}"))?;
    ensure!(
        nvme::mismatch(&buffers.regions[b], 0xF1A9, 4096, block).is_none(),
        "data written before the flap is gone"
    );
    marker!(
        "RESULT returned=yes back_ticks={ticks} back_ms={} serial={s}",
        ms(took)
    );
    Ok(())
}
