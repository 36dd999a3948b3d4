//! `smp-io`: one I/O queue per core (needs `-smp 2`). A shared controller
//! ([`Controller::share`]) on a `null-co` disk streams 4 KiB random reads at
//! queue depth 32 per queue: first on one core (queue 0, core 0), then on two
//! at once (queue 0 on core 0, queue 1 on core 1), alternating for
//! `rounds=N` (default 3) runs of `ms=N` milliseconds each (default 1000).
//! Core 0 ticks the monitor every millisecond between its polls.
//!
//! Each round ends with a control run: queue 0 on core 0 while core 1 only
//! spins (no I/O), which shows what a second busy processor costs the host
//! apart from a second queue.
//!
//! Prints `@@RESULT r{R}_one_core_iops=.. r{R}_two_cores_iops=..
//! r{R}_one_core_beside_spin_iops=..` per round
//! and `one_core_qd32_iops=.. two_cores_qd32_iops=.. two_cores_ratio_qd32=..`
//! over all rounds (the ratio as `cargo xtask bench` reads it), then checks
//! that every DMA region came back.

use core::time::Duration;

use bare_nvme::block::{BlockTarget, NamespaceHandle};
use bare_nvme::nvme::{Controller, ControllerConfig, IoQueue, Monitor};
use bare_nvme::pci::bar;
use bare_nvme::{DmaRegion, Instant, Platform, State};

use super::{check_dma_returned, Context, Outcome, Scenario};
use crate::clock;
use crate::pci::scan;
use crate::smp::{self, SmpError};
use bare_nvme_board_common::platform::QemuPlatform;
use bare_nvme_board_common::{dma, ensure, failure, marker};

/// The scenario.
pub const SCENARIO: Scenario = Scenario {
    name: "smp-io",
    about: "QD 32 4 KiB reads, one queue per core: IOPS on two cores over one",
    run,
};

/// Queue pairs: one per core.
const QUEUES: usize = 2;
/// Reads in flight per queue.
const QD: usize = 32;
/// Most rounds.
const MAX_ROUNDS: u64 = 16;
/// How often core 0 ticks the monitor.
const TICK: Duration = Duration::from_millis(1);
/// How long a run may take past its end to drain.
const DRAIN: Duration = Duration::from_secs(10);

type Nvme = Controller<QemuPlatform, (), QUEUES, 256>;
type Queue<'a> = IoQueue<'a, QemuPlatform, QUEUES, 256>;
type Buffers = heapless::Vec<Option<DmaRegion>, QD>;

fn run(board: &Context) -> Outcome {
    let args = board.args;
    let baseline = dma::stats();
    let ms = args
        .number("ms", 1000)
        .ok_or_else(|| failure!("malformed ms="))?;
    let rounds = args
        .number("rounds", 3)
        .ok_or_else(|| failure!("malformed rounds="))?;
    ensure!(
        (1..=MAX_ROUNDS).contains(&rounds),
        "rounds must be 1 to {MAX_ROUNDS}"
    );
    let cores = smp::cores();
    marker!("RESULT cores={cores}");
    ensure!(cores >= 2, "{cores} core online: the machine needs -smp 2");
    let topology = scan::walk(&board.config);
    let Some(&addr) = topology.nvme.first() else {
        return Err(failure!("no NVMe controller"));
    };
    // Firmware placed BAR0; keep it and turn decoding and bus mastering on.
    let bar = match bar::probe_bar0(&board.config, addr) {
        Ok(b) if b.is_assigned() => b,
        _ => return Err(failure!("{addr}: BAR0 is not an assigned memory BAR")),
    };
    bar::enable(&board.config, addr).map_err(|e| failure!("{addr}: {e}"))?;
    let platform = board.platform;
    let Some(regs) = platform.map_registers(bar.address, bar.size as usize) else {
        return Err(failure!("cannot map BAR0 at {:#x}", bar.address.as_u64()));
    };
    let config = ControllerConfig::default().io_queues(QUEUES as u16);
    let mut nvme: Nvme = Controller::new(platform, (), regs, bar.size as usize, config);
    nvme.bring_up()
        .map_err(|e| failure!("bring-up failed: {e}"))?;
    let mut buffers = [Buffers::new(), Buffers::new()];
    let result = alloc_buffers(platform, &mut buffers)
        .and_then(|()| contest(&mut nvme, &mut buffers, rounds, Duration::from_millis(ms)));
    let detached = nvme.detach().map_err(|e| failure!("detach failed: {e}"));
    drop(nvme);
    for b in buffers.iter_mut().flat_map(|set| set.iter_mut()) {
        if let Some(b) = b.take() {
            platform.dma_free(b);
        }
    }
    result?;
    detached?;
    check_dma_returned(baseline)
}

fn alloc_buffers(platform: QemuPlatform, buffers: &mut [Buffers; 2]) -> Outcome {
    for set in buffers.iter_mut() {
        for _ in 0..QD {
            let b = platform
                .dma_alloc(4096, 4096)
                .ok_or_else(|| failure!("no DMA memory"))?;
            let _ = set.push(Some(b));
        }
    }
    Ok(())
}

/// What one core's stream did.
#[derive(Clone, Copy, Default)]
struct Streamed {
    ios: u64,
    failed: u64,
    stalled: bool,
}

fn contest(nvme: &mut Nvme, buffers: &mut [Buffers; 2], rounds: u64, time: Duration) -> Outcome {
    let first = *nvme
        .namespaces()
        .first()
        .ok_or_else(|| failure!("no active namespace"))?;
    ensure!(
        first.block_size() <= 4096,
        "block size {}",
        first.block_size()
    );
    ensure!(
        nvme.io_queue_count() as usize == QUEUES,
        "{} I/O queues granted",
        nvme.io_queue_count()
    );
    let ns = nvme
        .namespace_handle(None, first.id())
        .map_err(|e| failure!("namespace handle: {e}"))?;
    let (mut monitor, queues) = nvme.share().map_err(|e| failure!("share: {e}"))?;
    let [set0, set1] = buffers;
    let (mut one, mut two) = ((0u64, Duration::ZERO), (0u64, Duration::ZERO));
    let mut spun = (0u64, Duration::ZERO);
    for round in 0..rounds {
        // One core: queue 0 on core 0.
        let start = clock::now();
        let s = stream(
            &queues[0],
            &ns,
            set0,
            start + time,
            round,
            Some(&mut monitor),
        );
        let elapsed = clock::now() - start;
        check(s, "one core")?;
        marker!("RESULT r{round}_one_core_iops={}", iops(s.ios, elapsed));
        one = (one.0 + s.ios, one.1 + elapsed);
        // Two cores: queue 1 on core 1 at the same time.
        let start = clock::now();
        let end = start + time;
        let mut other = Streamed::default();
        let q1 = &queues[1];
        let ns1 = &ns;
        let mut work = || other = stream(q1, ns1, set1, end, round + 1000, None);
        let s = smp::scope(time + DRAIN, |scope| -> Result<Streamed, SmpError> {
            let job = scope.spawn(1, &mut work)?;
            let mine = stream(&queues[0], &ns, set0, end, round, Some(&mut monitor));
            job.join(end + DRAIN)?;
            Ok(mine)
        })
        .map_err(|e| failure!("core 1: {e}"))?;
        let elapsed = clock::now() - start;
        check(s, "two cores, core 0")?;
        check(other, "two cores, core 1")?;
        let ios = s.ios + other.ios;
        marker!("RESULT r{round}_two_cores_iops={}", iops(ios, elapsed));
        two = (two.0 + ios, two.1 + elapsed);
        // Control: queue 0 on core 0 while core 1 only spins, no I/O. What
        // a second busy processor costs the host (QEMU runs each as a
        // thread beside its device model) apart from a second queue.
        let start = clock::now();
        let end = start + time;
        let mut spin = || {
            while clock::now() < end {
                core::hint::spin_loop();
            }
        };
        let s = smp::scope(time + DRAIN, |scope| -> Result<Streamed, SmpError> {
            let job = scope.spawn(1, &mut spin)?;
            let mine = stream(&queues[0], &ns, set0, end, round, Some(&mut monitor));
            job.join(end + DRAIN)?;
            Ok(mine)
        })
        .map_err(|e| failure!("core 1: {e}"))?;
        let elapsed = clock::now() - start;
        check(s, "one core beside a spinning one")?;
        marker!(
            "RESULT r{round}_one_core_beside_spin_iops={}",
            iops(s.ios, elapsed)
        );
        spun = (spun.0 + s.ios, spun.1 + elapsed);
    }
    ensure!(
        monitor.tick() == State::Ready,
        "controller {:?} after the runs",
        monitor.state()
    );
    let (one_iops, two_iops) = (iops(one.0, one.1), iops(two.0, two.1));
    let spun_iops = iops(spun.0, spun.1);
    marker!("RESULT one_core_beside_spin_qd32_iops={spun_iops}");
    let milli = two_iops * 1000 / one_iops.max(1);
    marker!(
        "RESULT one_core_qd32_iops={one_iops} two_cores_qd32_iops={two_iops} two_cores_ratio_qd32={}.{:03}",
        milli / 1000,
        milli % 1000
    );
    Ok(())
}

fn check(s: Streamed, what: &str) -> Outcome {
    ensure!(!s.stalled, "{what}: I/O stalled");
    ensure!(s.failed == 0, "{what}: {} reads failed", s.failed);
    ensure!(s.ios > 0, "{what}: no I/O completed");
    Ok(())
}

fn iops(ios: u64, elapsed: Duration) -> u128 {
    ios as u128 * 1_000_000_000 / elapsed.as_nanos().max(1)
}

/// Keeps `QD` random 4 KiB reads in flight on `q` until `end`, then drains;
/// ticks `monitor` every [`TICK`] if given (core 0 only).
fn stream(
    q: &Queue<'_>,
    ns: &NamespaceHandle,
    buffers: &mut Buffers,
    end: Instant,
    seed: u64,
    mut monitor: Option<&mut Monitor<'_, QemuPlatform, (), QUEUES, 256>>,
) -> Streamed {
    let per_io = (4096 >> ns.block_shift()) as u32;
    let slots = ns.blocks() / u64::from(per_io);
    let mut x: u64 = 0x2545_F491_4F6C_DD1D ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut next_lba = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % slots) * u64::from(per_io)
    };
    let mut out = Streamed::default();
    let mut in_flight = 0usize;
    let mut submit = |buffers: &mut Buffers, i: usize, in_flight: &mut usize| {
        let Some(buffer) = buffers[i].take() else {
            return false;
        };
        match q.submit_read(ns, next_lba(), per_io, buffer, i as u64) {
            Ok(_) => {
                *in_flight += 1;
                true
            }
            Err(r) => {
                buffers[i] = r.buffer;
                false
            }
        }
    };
    for i in 0..QD {
        if !submit(buffers, i, &mut in_flight) {
            out.failed += 1;
        }
    }
    let mut next_tick = clock::now() + TICK;
    let mut ready: heapless::Vec<usize, QD> = heapless::Vec::new();
    loop {
        let now = clock::now();
        if now > end + DRAIN {
            out.stalled = true;
            return out;
        }
        if let Some(m) = monitor.as_deref_mut() {
            if now >= next_tick {
                next_tick = now + TICK;
                m.tick();
            }
        }
        q.poll(|done| {
            if done.result.is_err() {
                out.failed += 1;
            }
            buffers[done.tag as usize] = done.buffer;
            let _ = ready.push(done.tag as usize);
        });
        in_flight -= ready.len();
        out.ios += ready.len() as u64;
        if now >= end {
            ready.clear();
            if in_flight == 0 {
                return out;
            }
            continue;
        }
        for &i in ready.iter() {
            if !submit(buffers, i, &mut in_flight) {
                out.failed += 1;
            }
        }
        ready.clear();
    }
}
