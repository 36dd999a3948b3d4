//! Before the slot is played with: the controller outside it at work, and
//! what idle ticks cost.

use core::time::Duration;

use crate::counters;
use log::info;

use super::{outside, Ctx};
use crate::nvme::{self, ctrl, Buffers, Nvme};
use crate::scenarios::Outcome;
use crate::{clock, ensure, failure, marker};

/// Shows the controller outside the slot at work before the slot is played
/// with: `bytes` written, read back and compared, with throughput figures.
pub(super) fn warmup(cx: &mut Ctx, d: &mut Nvme, bytes: usize) -> Outcome {
    if bytes == 0 {
        return Ok(());
    }
    let id = outside(d, cx.bus).ok_or_else(|| failure!("no controller outside the slot"))?;
    let c = ctrl(d, id)?;
    let ns = *c
        .namespaces()
        .first()
        .ok_or_else(|| failure!("{id} has no namespace"))?;
    let block = ns.block_size() as usize;
    let bytes = bytes / block * block;
    let mut buffers = Buffers::new(cx.board.platform);
    let w = buffers.alloc(bytes)?;
    let r = buffers.alloc(bytes)?;
    nvme::fill(&mut buffers.regions[w], 0xD0, 0, block);
    let start = clock::now();
    c.write(ns.id(), 0, &buffers.regions[w])
        .map_err(|e| failure!("write: {e}"))?;
    marker!(
        "RESULT boot_to_first_io_us={}",
        nvme::since_machine_start().as_micros()
    );
    let written = clock::now() - start;
    let start = clock::now();
    c.read(ns.id(), 0, &mut buffers.regions[r])
        .map_err(|e| failure!("read: {e}"))?;
    let read = clock::now() - start;
    ensure!(
        nvme::mismatch(&buffers.regions[r], 0xD0, 0, block).is_none(),
        "read back differs"
    );
    let kib_s = |t: Duration| (bytes as u128 * 1_000_000 / t.as_micros().max(1) / 1024) as u64;
    info!(
        "{id}: {} KiB written, read back and verified: write {} KiB/s, read {} KiB/s",
        bytes >> 10,
        kib_s(written),
        kib_s(read)
    );
    marker!(
        "RESULT write_kib_s={} read_kib_s={}",
        kib_s(written),
        kib_s(read)
    );
    Ok(())
}

/// What `ticks` idle ticks, 1 ms apart, cost: config and register reads per
/// tick, and the time one tick takes.
pub(super) fn idle_cost(d: &mut Nvme, ticks: u64) -> Outcome {
    let (config, mmio) = (counters::config_reads(), counters::mmio_reads());
    let mut busy = Duration::ZERO;
    for _ in 0..ticks {
        // The period the scenarios tick at, so time-based polls count.
        clock::delay_us(1000);
        let start = clock::now();
        let events = d.tick();
        busy += clock::now() - start;
        ensure!(events.is_empty(), "event while idle: {:?}", events[0]);
    }
    let per = |n: u64| n * 100 / ticks;
    let (c, m) = (
        per(counters::config_reads() - config),
        per(counters::mmio_reads() - mmio),
    );
    let ready = d.ready_controllers().count();
    marker!(
        "RESULT idle_controllers={ready} idle_config_reads_per_tick={}.{:02} idle_mmio_reads_per_tick={}.{:02} idle_tick_us={}",
        c / 100,
        c % 100,
        m / 100,
        m % 100,
        busy.as_micros() as u64 / ticks
    );
    Ok(())
}
