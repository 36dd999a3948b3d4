//! `plug`: the driver's tick monitor against real (emulated) hot-plug: a
//! device added to an empty slot, pulled with commands in flight, pulled and
//! re-added many times, removed in an orderly way with the attention button,
//! its slot power flapped, pulled during bring-up; and a second controller
//! that keeps serving meanwhile.
//!
//! The hand (`crate::hand`) pulls devices; it shares nothing with the driver,
//! so each removal is a surprise to it.
//!
//! Arguments: `port=B:D.F` (hex) the root port whose slot is played with
//! (required); `mode=` one of
//! - `cycles` (`cycles=N`): N times: `@@PHASE empty`, the host adds a
//!   controller, the tick finds it, verified I/O, `inflight=K` commands
//!   submitted, the hand pulls it, each command completes once;
//! - `surprise`: the controller cold-plugged in the slot is pulled with
//!   `inflight=K` commands in flight (a slow backend keeps them there);
//! - `button`: the host's `device_del` presses the attention button, the
//!   driver detaches, then the hand empties the slot (`@@WAIT deleted`);
//! - `flap`: slot power off, the driver reports the removal, power on, the
//!   same device is reported ready and returned with its data (`quick=on`:
//!   power returns before the driver could notice);
//! - `bringup`: the controller in the slot is pulled `after_ticks=N` ticks
//!   into its bring-up;
//!
//! `warmup=BYTES` first writes, reads back and times BYTES on the controller
//! outside the slot; `survivor=io` runs verified I/O on a controller outside the slot on every
//! tick of the removal; `verify=pattern|zeroes` (zeroes for a null backend);
//! `timeout_ms=N` bounds each wait (default 10000).

use core::time::Duration;

use bare_nvme::{ControllerId, Detection, Error, Event, IoOp, Platform, State};
use log::info;
use pci_types::PciAddress;

use super::{check_dma_returned, wait_for_host, Board, Failure, Outcome, Scenario};
use crate::hand::Hand;
use crate::nvme::{self, ctrl, Buffers, Monitor, Nvme};
use crate::pci::{self, scan, NO_DEVICE};
use crate::{clock, dma, ensure, failure, marker, platform};

/// The scenario.
pub const SCENARIO: Scenario = Scenario {
    name: "plug",
    about: "hot-add, surprise removal, cycles, attention button, link flap, removal in bring-up",
    run,
};

/// Most commands kept in flight at a pull.
const MAX_INFLIGHT: usize = 64;

struct Ctx<'a> {
    board: &'a Board,
    monitor: Monitor,
    hand: Hand,
    /// The bus behind the slot.
    bus: u8,
    timeout_ms: u64,
    survivor_io: bool,
    zeroes: bool,
    inflight: usize,
    /// Survivor I/O rounds done.
    survivor_rounds: u64,
}

fn run(board: &Board) -> Outcome {
    let args = board.args;
    let baseline = dma::stats();
    let port = args
        .pci_address("port")
        .ok_or_else(|| failure!("malformed port="))?
        .ok_or_else(|| failure!("port= is required"))?;
    let topology = scan::walk(&board.config);
    let root = topology
        .root_ports
        .iter()
        .find(|p| p.addr == port)
        .ok_or_else(|| failure!("no root port with a slot at {port}"))?;
    let hand = Hand::new(port).ok_or_else(|| failure!("{port} has no PCIe capability"))?;
    let number = |key, default| {
        args.number(key, default)
            .ok_or_else(|| failure!("malformed {key}="))
    };
    let mut cx = Ctx {
        board,
        monitor: Monitor::new(Duration::from_millis(1)),
        hand,
        bus: root.secondary_bus,
        timeout_ms: number("timeout_ms", 10_000)?,
        survivor_io: args.get("survivor") == Some("io"),
        zeroes: args.get("verify") == Some("zeroes"),
        inflight: (number("inflight", 16)? as usize).min(MAX_INFLIGHT),
        survivor_rounds: 0,
    };
    let config = nvme::config_from(&args)?;
    let mut d = nvme::driver(board.platform, board.access, config);
    d.scan().map_err(|e| failure!("scan: {e}"))?;
    let mode = args.get("mode").unwrap_or("cycles");
    let result = match mode {
        "bringup" => bringup(&mut cx, &mut d, number("after_ticks", 1)?),
        _ => {
            settle(&mut cx, &mut d)?;
            warmup(&mut cx, &mut d, number("warmup", 0)? as usize)?;
            idle_cost(&mut d, 200)?;
            match mode {
                "cycles" => cycles(&mut cx, &mut d, number("cycles", 1)?),
                "surprise" => surprise(&mut cx, &mut d),
                "button" => button(&mut cx, &mut d),
                "flap" => flap(&mut cx, &mut d),
                other => Err(failure!("unknown mode={other}")),
            }
        }
    };
    result?;
    detach_all(&mut cx, &mut d)?;
    marker!("RESULT survivor_rounds={}", cx.survivor_rounds);
    drop(d);
    check_dma_returned(baseline)
}

/// Ticks until no controller is coming up.
fn settle(cx: &mut Ctx, d: &mut Nvme) -> Outcome {
    let deadline = super::deadline_ms(cx.timeout_ms);
    loop {
        let ids: heapless::Vec<ControllerId, 8> = d.controllers().collect();
        let busy = ids.iter().any(|&id| {
            d.controller(id).is_ok_and(|c| {
                matches!(
                    c.state(),
                    State::Resetting | State::Enabling | State::Initializing
                )
            })
        });
        if !busy {
            return Ok(());
        }
        ensure!(clock::now() < deadline, "controllers not ready in time");
        cx.monitor.tick(d);
    }
}

/// Shows the controller outside the slot at work before the slot is played
/// with: `bytes` written, read back and compared, with throughput figures.
fn warmup(cx: &mut Ctx, d: &mut Nvme, bytes: usize) -> Outcome {
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
fn idle_cost(d: &mut Nvme, ticks: u64) -> Outcome {
    let (config, mmio) = (pci::config_reads(), platform::mmio_reads());
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
        per(pci::config_reads() - config),
        per(platform::mmio_reads() - mmio),
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

/// Orderly detach of every live controller; each reports Removed once, then
/// the driver stays quiet.
fn detach_all(cx: &mut Ctx, d: &mut Nvme) -> Outcome {
    let live: heapless::Vec<ControllerId, 8> = d.ready_controllers().collect();
    for &id in &live {
        d.detach(id).map_err(|e| failure!("detach {id}: {e}"))?;
    }
    cx.monitor.removals(d, live.len() as u32, cx.timeout_ms)?;
    cx.monitor.quiet(d, 30)
}

fn on_bus(d: &Nvme, id: ControllerId, bus: u8) -> bool {
    d.address(id).is_ok_and(|a| a.bus() == bus)
}

/// The ready controller in the slot, if any.
fn in_slot(d: &Nvme, bus: u8) -> Option<ControllerId> {
    d.ready_controllers().find(|&id| on_bus(d, id, bus))
}

/// A ready controller outside the slot.
fn outside(d: &Nvme, bus: u8) -> Option<ControllerId> {
    d.ready_controllers().find(|&id| !on_bus(d, id, bus))
}

/// One verified I/O round on `id` (pattern, or zeroes on a null backend).
fn check_io(cx: &Ctx, d: &mut Nvme, id: ControllerId, lba: u64, seed: u64) -> Outcome {
    let zeroes = cx.zeroes;
    let c = ctrl(d, id)?;
    let nsid = c
        .namespaces()
        .first()
        .map(|n| n.id())
        .ok_or_else(|| failure!("{id} has no namespace"))?;
    let block = c.namespace(nsid).map_err(|e| failure!("{e}"))?.block_size() as usize;
    if !zeroes {
        return nvme::verified_io(c, nsid, lba, 16 * block, seed);
    }
    let mut buffers = Buffers::new(*c.platform());
    let b = buffers.alloc(16 * block)?;
    buffers.regions[b].as_mut_slice().fill(0xA5);
    c.read(nsid, lba, &mut buffers.regions[b])
        .map_err(|e| failure!("read {id}: {e}"))?;
    ensure!(
        buffers.regions[b].as_slice().iter().all(|&x| x == 0),
        "{id}: read of a zero device returned data"
    );
    Ok(())
}

/// Verified I/O on the controller outside the slot, if asked for.
fn survivor_round(cx: &mut Ctx, d: &mut Nvme, survivor: Option<ControllerId>) -> Outcome {
    let Some(id) = survivor.filter(|_| cx.survivor_io) else {
        return Ok(());
    };
    let round = cx.survivor_rounds;
    cx.survivor_rounds += 1;
    let zeroes = cx.zeroes;
    cx.zeroes = false;
    let result = check_io(cx, d, id, 1024 + (round % 64) * 16, 0x5000 + round);
    cx.zeroes = zeroes;
    result.map_err(|e| failure!("survivor: {e}"))
}

/// Submits `n` one-block reads on `id`, each with its own buffer and its
/// index as tag, spread over the I/O queues, and rings the doorbells.
fn submit_reads(cx: &Ctx, d: &mut Nvme, id: ControllerId, n: usize) -> Result<usize, Failure> {
    let platform = cx.board.platform;
    let c = ctrl(d, id)?;
    let nsid = c.namespaces().first().map(|n| n.id()).unwrap_or(1);
    let block = c.namespace(nsid).map_err(|e| failure!("{e}"))?.block_size() as usize;
    let queues = c.io_queue_count().max(1);
    for tag in 0..n {
        let buffer = platform
            .dma_alloc(block, 4096)
            .ok_or_else(|| failure!("no DMA memory"))?;
        let op = IoOp::Read {
            nsid,
            lba: tag as u64 * 8,
            blocks: 1,
        };
        if let Err(r) = c.submit(tag as u16 % queues, op, Some(buffer), tag as u64) {
            if let Some(b) = r.buffer {
                platform.dma_free(b);
            }
            return Err(failure!("submit {tag}: {}", r.error));
        }
    }
    c.ring_doorbells();
    Ok(c.in_flight())
}

/// What the commands of [`submit_reads`] came back with.
#[derive(Default, Debug)]
struct Ledger {
    ok: u32,
    removed: u32,
    aborted: u32,
}

/// Polls `id` until all `n` commands were delivered; each exactly once, with
/// success, `DeviceRemoved` or (orderly) `Aborted`.
fn collect(cx: &Ctx, d: &mut Nvme, id: ControllerId, n: usize) -> Result<Ledger, Failure> {
    let platform = cx.board.platform;
    let c = ctrl(d, id)?;
    let queues = c.io_queue_count().max(1);
    let mut seen = [0u8; MAX_INFLIGHT];
    let mut ledger = Ledger::default();
    let mut other = None;
    let deadline = super::deadline_ms(cx.timeout_ms);
    let mut delivered = 0;
    while delivered < n && clock::now() < deadline {
        for q in 0..queues {
            delivered += c.poll(q, |done| {
                if let Some(slot) = seen.get_mut(done.tag as usize) {
                    *slot += 1;
                }
                match done.result {
                    Ok(()) => ledger.ok += 1,
                    Err(Error::DeviceRemoved) => ledger.removed += 1,
                    Err(Error::Aborted) => ledger.aborted += 1,
                    Err(e) => other = Some(e),
                }
                if let Some(b) = done.buffer {
                    platform.dma_free(b);
                }
            });
        }
    }
    if let Some(e) = other {
        return Err(failure!("a command completed with {e}"));
    }
    ensure!(
        seen[..n].iter().all(|&s| s == 1) && delivered == n,
        "{delivered} of {n} completions; per command {:?}",
        &seen[..n.min(16)]
    );
    // Nothing more may come.
    let mut extra = 0;
    for q in 0..queues {
        extra += c.poll(q, |_| {});
    }
    ensure!(extra == 0, "{extra} completions delivered twice");
    Ok(ledger)
}

/// Pulls the slot's controller `victim` and ticks until its Removed event;
/// returns (failed_commands, detected_by, ticks, time).
fn pull(
    cx: &mut Ctx,
    d: &mut Nvme,
    victim: ControllerId,
    survivor: Option<ControllerId>,
) -> Result<(u32, Detection, u64, Duration), Failure> {
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

fn ms(t: Duration) -> u64 {
    t.as_micros() as u64 / 1000
}

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

/// The slot's presence as the scenario sees it through its own accessor.
fn slot_filled(cx: &Ctx) -> bool {
    pci::vendor_id(&cx.board.config, PciAddress::new(0, cx.bus, 0, 0)) != NO_DEVICE
}

fn cycles(cx: &mut Ctx, d: &mut Nvme, count: u64) -> Outcome {
    ensure!(
        in_slot(d, cx.bus).is_none() && !slot_filled(cx),
        "the slot is not empty at the start"
    );
    let survivor = outside(d, cx.bus);
    let with_survivor = dma::stats();
    let mut add = Latency::default();
    let mut remove = Latency::default();
    let mut previous: Option<ControllerId> = None;
    let mut failed_total = 0u64;
    for cycle in 0..count {
        marker!("PHASE empty {cycle}");
        // The host adds the controller; the tick finds it.
        let deadline = super::deadline_ms(cx.timeout_ms);
        let mut seen_at: Option<(u64, bare_nvme::Instant)> = None;
        let bus = cx.bus;
        let attached = loop {
            if seen_at.is_none() && slot_filled(cx) {
                seen_at = Some((cx.monitor.ticks, clock::now()));
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
        add.add(cx.monitor.ticks - seen_tick, clock::now() - seen_time);
        let mut returned = None;
        let (_, _, ready_after) = cx.monitor.until(
            d,
            cx.timeout_ms,
            "Ready after the hot-add",
            |e| matches!(e, Event::Ready { id, .. } if *id == attached),
            |_| Ok(()),
        )?;
        // Returned comes in the same tick as Ready.
        for e in cx.monitor.log.iter() {
            if let Event::Returned { id, previous: p } = e {
                if *id == attached {
                    returned = Some(*p);
                }
            }
        }
        if let Some(prev) = previous {
            ensure!(
                returned == Some(prev),
                "cycle {cycle}: not reported as returned (got {returned:?}, was {prev})"
            );
            // A handle kept from before the removal cannot reach the new one.
            let stale = d.controller(prev).map(|c| {
                c.submit(0, IoOp::Flush { nsid: 1 }, None, 0)
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
        }
        check_io(cx, d, attached, cycle * 64, 0x100 + cycle)?;
        let submitted = submit_reads(cx, d, attached, cx.inflight)?;
        let (failed, by, ticks, took) = pull(cx, d, attached, survivor)?;
        remove.add(ticks, took);
        let ledger = collect(cx, d, attached, cx.inflight)?;
        ensure!(
            ledger.removed == failed,
            "cycle {cycle}: {} commands failed with DeviceRemoved, event says {failed}",
            ledger.removed
        );
        failed_total += u64::from(failed);
        info!(
            "cycle {cycle}: ready {} ms after the add, removed ({by:?}) {} ms / {ticks} ticks after the pull; {submitted} in flight, {} ok, {failed} failed",
            ms(ready_after),
            ms(took),
            ledger.ok
        );
        let now = dma::stats();
        ensure!(
            now == with_survivor,
            "cycle {cycle}: DMA {} regions / {} bytes, baseline {} / {}",
            now.regions,
            now.bytes,
            with_survivor.regions,
            with_survivor.bytes
        );
        previous = Some(attached);
    }
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
    marker!("PHASE done");
    cx.monitor.quiet(d, 30)?;
    // The host sees QEMU delete the last controller before the machine ends.
    wait_for_host("deleted", cx.timeout_ms)?;
    cx.monitor.quiet(d, 20)
}

fn surprise(cx: &mut Ctx, d: &mut Nvme) -> Outcome {
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
        .submit(0, IoOp::Flush { nsid: 1 }, None, 0)
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
    let deadline = super::deadline_ms(100);
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

fn button(cx: &mut Ctx, d: &mut Nvme) -> Outcome {
    let victim = in_slot(d, cx.bus).ok_or_else(|| failure!("no ready controller in the slot"))?;
    let survivor = outside(d, cx.bus);
    let submitted = submit_reads(cx, d, victim, cx.inflight)?;
    marker!("PHASE armed");
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

fn flap(cx: &mut Ctx, d: &mut Nvme) -> Outcome {
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

fn bringup(cx: &mut Ctx, d: &mut Nvme, after_ticks: u64) -> Outcome {
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
