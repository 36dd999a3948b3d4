//! `mode=cycles`: the host adds a controller to the empty slot, the tick
//! finds it, it serves verified I/O, the hand pulls it with commands in
//! flight; many times over.

use core::time::Duration;

use bare_nvme::QueueId;
use bare_nvme::{ControllerId, Error, Event, IoOp};
use log::info;

use super::ledger::{collect, submit_reads};
use super::pull::pull;
use super::verify::{check_io, survivor_round};
use super::{in_slot, ms, outside, slot_filled, Ctx};
use crate::dma::{self, DmaStats};
use crate::nvme::Nvme;
use crate::scenarios::{deadline_ms, wait_for_host, Failure, Outcome};
use crate::{clock, ensure, marker};

/// Latency statistics over cycles.
#[derive(Default)]
struct Latency {
    n: u64,
    min_ticks: u64,
    max_ticks: u64,
    sum_us: u64,
    max_us: u64,
}

impl Latency {
    fn add(&mut self, ticks: u64, t: Duration) {
        let us = t.as_micros() as u64;
        if self.n == 0 || ticks < self.min_ticks {
            self.min_ticks = ticks;
        }
        self.max_ticks = self.max_ticks.max(ticks);
        self.max_us = self.max_us.max(us);
        self.sum_us += us;
        self.n += 1;
    }
    fn avg_us(&self) -> u64 {
        self.sum_us / self.n.max(1)
    }
}

/// What holds across the cycles and what they add up to.
struct Run {
    /// The controller outside the slot, if any.
    survivor: Option<ControllerId>,
    /// DMA in use with only the survivor attached; every cycle returns to it.
    baseline: DmaStats,
    /// The controller of the previous cycle.
    previous: Option<ControllerId>,
    add: Latency,
    /// From Presence Detect to Ready.
    ready: Latency,
    remove: Latency,
    failed_total: u64,
    /// Verified I/O rounds the survivor served while a card came up.
    add_rounds: u64,
}

/// Runs `count` cycles, then reports their latencies and waits for the host
/// to see the last controller deleted.
pub(super) fn cycles(cx: &mut Ctx, d: &mut Nvme, count: u64) -> Outcome {
    ensure!(
        in_slot(d, cx.bus).is_none() && !slot_filled(cx),
        "the slot is not empty at the start"
    );
    let mut run = Run {
        survivor: outside(d, cx.bus),
        baseline: dma::stats(),
        previous: None,
        add: Latency::default(),
        ready: Latency::default(),
        remove: Latency::default(),
        failed_total: 0,
        add_rounds: 0,
    };
    for cycle in 0..count {
        let attached = one_cycle(cx, d, &mut run, cycle)?;
        run.previous = Some(attached);
    }
    let (add, remove, failed_total) = (&run.add, &run.remove, run.failed_total);
    marker!(
        "RESULT cycles={count} failed_in_flight={failed_total} add_ticks_min={} add_ticks_max={} add_ms_avg={}.{:03} remove_ticks_min={} remove_ticks_max={} remove_ms_avg={}.{:03} remove_ms_max={}.{:03}",
        add.min_ticks,
        add.max_ticks,
        add.avg_us() / 1000,
        add.avg_us() % 1000,
        remove.min_ticks,
        remove.max_ticks,
        remove.avg_us() / 1000,
        remove.avg_us() % 1000,
        remove.max_us / 1000,
        remove.max_us % 1000
    );
    marker!(
        "RESULT ready_ticks_min={} ready_ticks_max={} ready_ms_avg={}.{:03} ready_ms_max={}.{:03}",
        run.ready.min_ticks,
        run.ready.max_ticks,
        run.ready.avg_us() / 1000,
        run.ready.avg_us() % 1000,
        run.ready.max_us / 1000,
        run.ready.max_us % 1000
    );
    marker!(
        "RESULT served_during_add={} add_survivor_rounds={}",
        if run.add_rounds > 0 { "yes" } else { "no" },
        run.add_rounds
    );
    marker!("PHASE done");
    cx.monitor.quiet(d, 30)?;
    // The host sees QEMU delete the last controller before the machine ends.
    wait_for_host("deleted", cx.timeout_ms)?;
    cx.monitor.quiet(d, 20)
}

/// One cycle: the empty slot is announced, the host adds a controller, it
/// comes up (as the previous one returned), serves verified I/O and is
/// pulled with commands in flight, each of which completes once; the DMA in
/// use is back at the baseline. Returns the cycle's controller.
fn one_cycle(
    cx: &mut Ctx,
    d: &mut Nvme,
    run: &mut Run,
    cycle: u64,
) -> Result<ControllerId, Failure> {
    marker!("PHASE empty {cycle}");
    let rounds = cx.survivor_rounds;
    let (attached, add_ticks, add_time) = hot_add(cx, d, cycle)?;
    run.add_rounds += cx.survivor_rounds - rounds;
    run.add.add(add_ticks, add_time);
    let (_, ready_ticks, ready_after) = cx.monitor.until(
        d,
        cx.timeout_ms,
        "Ready after the hot-add",
        |e| matches!(e, Event::Ready { id, .. } if *id == attached),
        |_| Ok(()),
    )?;
    run.ready
        .add(add_ticks + ready_ticks, add_time + ready_after);
    if let Some(prev) = run.previous {
        check_returned(cx, d, cycle, attached, prev)?;
    }
    check_io(cx, d, attached, cycle * 64, 0x100 + cycle)?;
    let submitted = submit_reads(cx, d, attached, cx.inflight)?;
    let (failed, by, ticks, took) = pull(cx, d, attached, run.survivor)?;
    run.remove.add(ticks, took);
    let ledger = collect(cx, d, attached, cx.inflight)?;
    ensure!(
        ledger.removed == failed,
        "cycle {cycle}: {} commands failed with DeviceRemoved, event says {failed}",
        ledger.removed
    );
    run.failed_total += u64::from(failed);
    info!(
        "cycle {cycle}: ready {} ms after the add, removed ({by:?}) {} ms / {ticks} ticks after the pull; {submitted} in flight, {} ok, {failed} failed",
        ms(ready_after),
        ms(took),
        ledger.ok
    );
    let now = dma::stats();
    let baseline = run.baseline;
    ensure!(
        now == baseline,
        "cycle {cycle}: DMA {} regions / {} bytes, baseline {} / {}",
        now.regions,
        now.bytes,
        baseline.regions,
        baseline.bytes
    );
    Ok(attached)
}

/// Ticks until the controller the host added to the slot is attached;
/// returns it with the ticks and time from the slot filling to the attach.
fn hot_add(
    cx: &mut Ctx,
    d: &mut Nvme,
    cycle: u64,
) -> Result<(ControllerId, u64, Duration), Failure> {
    let deadline = deadline_ms(cx.timeout_ms);
    let mut seen_at: Option<(u64, bare_nvme::Instant)> = None;
    let bus = cx.bus;
    let survivor = outside(d, bus);
    let attached = loop {
        // The card is in from Presence Detect on: in a slot with a power
        // controller it answers only once the driver powered it.
        if seen_at.is_none() && (cx.hand.presence() || slot_filled(cx)) {
            seen_at = Some((cx.monitor.ticks, clock::now()));
        }
        if seen_at.is_some() {
            // The controller outside the slot serves meanwhile.
            survivor_round(cx, d, survivor)?;
        }
        let events = cx.monitor.tick(d);
        let found = events.iter().find_map(|e| match e {
            Event::Attached { id, address } if address.bus() == bus => Some(*id),
            _ => None,
        });
        if let Some(id) = found {
            break id;
        }
        ensure!(clock::now() < deadline, "cycle {cycle}: no hot-add seen");
    };
    let (seen_tick, seen_time) = seen_at.unwrap_or((cx.monitor.ticks, clock::now()));
    Ok((
        attached,
        cx.monitor.ticks - seen_tick,
        clock::now() - seen_time,
    ))
}

/// The controller of this cycle was reported as the previous one returned,
/// and a handle kept from before the removal cannot reach it.
fn check_returned(
    cx: &Ctx,
    d: &mut Nvme,
    cycle: u64,
    attached: ControllerId,
    prev: ControllerId,
) -> Outcome {
    // Returned comes in the same tick as Ready.
    let mut returned = None;
    for e in cx.monitor.log.iter() {
        if let Event::Returned { id, previous: p } = e {
            if *id == attached {
                returned = Some(*p);
            }
        }
    }
    ensure!(
        returned == Some(prev),
        "cycle {cycle}: not reported as returned (got {returned:?}, was {prev})"
    );
    let stale = d.controller(prev).map(|c| {
        c.submit(QueueId::FIRST, IoOp::Flush { nsid: 1 }, None, 0)
            .err()
            .map(|r| r.error)
    });
    ensure!(
        matches!(
            stale,
            Err(Error::StaleHandle) | Ok(Some(Error::DeviceRemoved))
        ),
        "cycle {cycle}: old handle still usable: {stale:?}"
    );
    Ok(())
}
