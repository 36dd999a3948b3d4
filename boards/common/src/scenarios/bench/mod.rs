//! `bench`: 4 KiB random reads at queue depth 1, 4 and 32 in one boot, by
//! three contenders on the same controller: the driver with MMIO doorbells,
//! the driver with shadow doorbells, and the reference loop
//! ([`reference`]: the same queue size and doorbell policy, nothing checked).
//!
//! Arguments: `controller=N` picks the N-th NVMe function of the walk
//! (default 0); `ms=N` is the guest time per queue depth, contender and round
//! (default 1000); `rounds=N` (default 5, at most [`MAX_ROUNDS`]) repeats the
//! three contenders at each queue depth back to back, in an order rotated
//! from one queue depth and round to the next, so that drift of a busy host
//! spreads over all of them and each round's three runs compare closely.
//! Each run prints `@@RESULT r{R}_{C}_qd{Q}_iops=..` (C: `ref`, `mmio`,
//! `shadow`); at the end `{C}_qd{Q}_ios=.. {C}_qd{Q}_mmio_writes_milli=..`
//! (register writes per I/O over all rounds, times 1000) and
//! `shadow_supported=0|1` and `default_shadow=0|1` (the default
//! configuration's switch).

mod reference;

use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;

use bare_nvme::nvme::{Controller, ControllerConfig};
use bare_nvme::pci::bar;
use bare_nvme::QueueId;
use bare_nvme::{DmaRegion, Instant, IoOp, PhysAddr, Platform, RegisterAccess};

use super::{check_dma_returned, Context, Failure, Outcome, Scenario};
use crate::pci::scan;
use crate::platform::{CountedRegisters, QemuPlatform};
use crate::{clock, dma, ensure, failure, marker};

/// The scenario.
pub const SCENARIO: Scenario = Scenario {
    name: "bench",
    about: "4 KiB random-read IOPS at QD 1, 4 and 32, with and without shadow doorbells",
    run,
};

/// Register writes through [`CountingRegisters`] (one core: no contention).
static WRITES: AtomicU64 = AtomicU64::new(0);

/// The board's platform with register writes counted.
#[derive(Clone, Copy)]
struct CountingPlatform(QemuPlatform);

/// Registers whose writes are counted.
struct CountingRegisters(CountedRegisters);

impl RegisterAccess for CountingRegisters {
    fn read32(&self, offset: usize) -> u32 {
        self.0.read32(offset)
    }

    fn write32(&self, offset: usize, value: u32) {
        WRITES.fetch_add(1, Ordering::Relaxed);
        self.0.write32(offset, value);
    }
}

impl Platform for CountingPlatform {
    type Registers = CountingRegisters;

    fn dma_alloc(&self, len: usize, align: usize) -> Option<DmaRegion> {
        self.0.dma_alloc(len, align)
    }

    fn dma_free(&self, region: DmaRegion) {
        self.0.dma_free(region)
    }

    fn map_registers(&self, phys: PhysAddr, len: usize) -> Option<CountingRegisters> {
        self.0.map_registers(phys, len).map(CountingRegisters)
    }

    fn now(&self) -> Instant {
        self.0.now()
    }
}

type Nvme = Controller<CountingPlatform, ()>;

/// Most commands in flight (the deepest queue depth measured).
pub const MAX_QD: usize = 32;
/// Most rounds.
pub const MAX_ROUNDS: u64 = 64;

/// The contenders, in the order of the first round.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Contender {
    Reference,
    Mmio,
    Shadow,
}

impl Contender {
    const ALL: [Contender; 3] = [Contender::Reference, Contender::Mmio, Contender::Shadow];

    fn name(self) -> &'static str {
        match self {
            Contender::Reference => "ref",
            Contender::Mmio => "mmio",
            Contender::Shadow => "shadow",
        }
    }
}

/// What one run measured at one queue depth: I/Os, register writes, time.
#[derive(Clone, Copy, Default)]
struct Measured {
    ios: u64,
    writes: u64,
    elapsed: Duration,
}

impl Measured {
    fn iops(&self) -> u128 {
        self.ios as u128 * 1_000_000_000 / self.elapsed.as_nanos().max(1)
    }

    fn add(&mut self, other: Measured) {
        self.ios += other.ios;
        self.writes += other.writes;
        self.elapsed += other.elapsed;
    }
}

/// Queue depths measured.
const QDS: [usize; 3] = [1, 4, 32];

/// The namespace every contender reads: its ID, 4 KiB I/Os it holds and
/// blocks per I/O; and the entries of the driver's I/O queues, which the
/// reference's queue gets too.
#[derive(Clone, Copy)]
struct Target {
    nsid: u32,
    ios: u64,
    per_io: u32,
    entries: u16,
}

fn run(board: &Context) -> Outcome {
    let args = board.args;
    let baseline = dma::stats();
    let index = args
        .number("controller", 0)
        .ok_or_else(|| failure!("malformed controller="))? as usize;
    let ms = args
        .number("ms", 1000)
        .ok_or_else(|| failure!("malformed ms="))?;
    let rounds = args
        .number("rounds", 5)
        .ok_or_else(|| failure!("malformed rounds="))?;
    ensure!(
        (1..=MAX_ROUNDS).contains(&rounds),
        "rounds must be 1 to {MAX_ROUNDS}"
    );
    let topology = scan::walk(&board.config);
    let Some(&addr) = topology.nvme.get(index) else {
        return Err(failure!("no NVMe controller number {index}"));
    };
    // Firmware placed BAR0; keep it and turn decoding and bus mastering on.
    let bar = match bar::probe_bar0(&board.config, addr) {
        Ok(b) if b.is_assigned() => b,
        _ => return Err(failure!("{addr}: BAR0 is not an assigned memory BAR")),
    };
    bar::enable(&board.config, addr).map_err(|e| failure!("{addr}: {e}"))?;
    let platform = CountingPlatform(board.platform);
    let bar = (bar.address.as_u64(), bar.size as usize);
    let mut buffers: heapless::Vec<Option<DmaRegion>, MAX_QD> = heapless::Vec::new();
    for _ in 0..MAX_QD {
        let b = platform
            .dma_alloc(4096, 4096)
            .ok_or_else(|| failure!("no DMA memory"))?;
        let _ = buffers.push(Some(b));
    }
    let result = contest(platform, bar, &mut buffers, rounds, ms);
    for b in buffers.iter_mut().filter_map(Option::take) {
        platform.dma_free(b);
    }
    result?;
    check_dma_returned(baseline)
}

/// The rounds: each contender once per round, each round starting one
/// contender later than the one before.
fn contest(
    platform: CountingPlatform,
    bar: (u64, usize),
    buffers: &mut heapless::Vec<Option<DmaRegion>, MAX_QD>,
    rounds: u64,
    ms: u64,
) -> Outcome {
    // A first bring-up finds the namespace (and warms the machine up).
    let (target, shadow_supported) = {
        let mut nvme = driver(platform, bar, false)?;
        let found = nvme.namespaces().first().copied();
        let supported = nvme.info().is_some_and(|i| i.supports_shadow_doorbells());
        let entries = nvme.queue_depth();
        nvme.detach().map_err(|e| failure!("detach failed: {e}"))?;
        let ns = found.ok_or_else(|| failure!("no active namespace"))?;
        ensure!(
            usize::from(entries) > 2 * MAX_QD,
            "I/O queues of {entries} entries"
        );
        ensure!(ns.block_size() <= 4096, "block size {}", ns.block_size());
        let per_io = 4096 / ns.block_size();
        let target = Target {
            nsid: ns.id(),
            ios: ns.blocks() / u64::from(per_io),
            per_io,
            entries,
        };
        (target, supported)
    };
    marker!(
        "RESULT shadow_supported={} default_shadow={}",
        shadow_supported as u8,
        ControllerConfig::default().shadow_doorbells as u8
    );
    let time = Duration::from_millis(ms);
    let mut totals = [[Measured::default(); QDS.len()]; 3];
    for round in 0..rounds as usize {
        for (q, &qd) in QDS.iter().enumerate() {
            for k in 0..Contender::ALL.len() {
                let c = Contender::ALL[(round + q + k) % Contender::ALL.len()];
                let m = match c {
                    Contender::Reference => {
                        run_reference(platform, bar, buffers, target, qd, time)?
                    }
                    Contender::Mmio => run_driver(platform, bar, false, buffers, target, qd, time)?,
                    Contender::Shadow => {
                        run_driver(platform, bar, true, buffers, target, qd, time)?
                    }
                };
                marker!("RESULT r{round}_{}_qd{qd}_iops={}", c.name(), m.iops());
                totals[c as usize][q].add(m);
            }
        }
    }
    for c in Contender::ALL {
        for (q, &qd) in QDS.iter().enumerate() {
            let t = totals[c as usize][q];
            marker!(
                "RESULT {0}_qd{qd}_ios={1} {0}_qd{qd}_mmio_writes_milli={2}",
                c.name(),
                t.ios,
                t.writes * 1000 / t.ios.max(1)
            );
        }
    }
    Ok(())
}

/// The driver's controller on the BAR, brought up with the default
/// configuration but for `shadow`.
fn driver(platform: CountingPlatform, bar: (u64, usize), shadow: bool) -> Result<Nvme, Failure> {
    let Some(regs) = platform.map_registers(PhysAddr::new(bar.0), bar.1) else {
        return Err(failure!("cannot map BAR0 at {:#x}", bar.0));
    };
    let config = ControllerConfig::default().shadow_doorbells(shadow);
    let mut nvme: Nvme = Controller::new(platform, (), regs, bar.1, config);
    nvme.bring_up()
        .map_err(|e| failure!("bring-up failed: {e}"))?;
    Ok(nvme)
}

/// One bring-up with `shadow` doorbells on or off, `qd` reads in flight for
/// `time`, detach.
fn run_driver(
    platform: CountingPlatform,
    bar: (u64, usize),
    shadow: bool,
    buffers: &mut heapless::Vec<Option<DmaRegion>, MAX_QD>,
    target: Target,
    qd: usize,
    time: Duration,
) -> Result<Measured, Failure> {
    let mut nvme = driver(platform, bar, shadow)?;
    let result = stream(&mut nvme, buffers, qd, target, time);
    let detached = nvme.detach().map_err(|e| failure!("detach failed: {e}"));
    drop(nvme);
    let measured = result?;
    detached?;
    Ok(measured)
}

/// One setup of the reference, `qd` reads in flight for `time`, disable.
fn run_reference(
    platform: CountingPlatform,
    bar: (u64, usize),
    buffers: &mut heapless::Vec<Option<DmaRegion>, MAX_QD>,
    target: Target,
    qd: usize,
    time: Duration,
) -> Result<Measured, Failure> {
    let Some(regs) = platform.map_registers(PhysAddr::new(bar.0), bar.1) else {
        return Err(failure!("cannot map BAR0 at {:#x}", bar.0));
    };
    let mut reference = reference::Reference::new(&platform, &regs, target.entries, target.nsid)?;
    let writes = WRITES.load(Ordering::Relaxed);
    let (ios, elapsed) = reference.stream(buffers, qd, lbas(target), target.per_io, time)?;
    Ok(Measured {
        ios,
        writes: WRITES.load(Ordering::Relaxed) - writes,
        elapsed,
    })
}

/// The random 4 KiB-aligned block addresses every contender reads, in the
/// same order.
fn lbas(target: Target) -> impl FnMut() -> u64 {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % target.ios) * u64::from(target.per_io)
    }
}

/// Keeps `qd` random 4 KiB reads in flight for `time`, then drains.
fn stream(
    nvme: &mut Nvme,
    buffers: &mut heapless::Vec<Option<DmaRegion>, MAX_QD>,
    qd: usize,
    target: Target,
    time: Duration,
) -> Result<Measured, Failure> {
    let mut next_lba = lbas(target);
    let mut submit =
        |nvme: &mut Nvme, buffers: &mut heapless::Vec<Option<DmaRegion>, MAX_QD>, i: usize| {
            let op = IoOp::Read {
                nsid: target.nsid,
                lba: next_lba(),
                blocks: target.per_io,
            };
            nvme.submit(QueueId::FIRST, op, buffers[i].take(), i as u64)
                .map(|_| ())
                .map_err(|r| {
                    buffers[i] = r.buffer;
                    failure!("submit refused: {}", r.error)
                })
        };
    let writes_before = WRITES.load(Ordering::Relaxed);
    let start = clock::now();
    let end = start + time;
    for i in 0..qd {
        submit(nvme, buffers, i)?;
    }
    let mut ios = 0u64;
    let mut failed = 0u64;
    let mut ready: heapless::Vec<usize, MAX_QD> = heapless::Vec::new();
    let mut stopping = false;
    loop {
        if clock::now() > end + Duration::from_secs(10) {
            return Err(failure!("I/O stalled"));
        }
        nvme.poll(QueueId::FIRST, |done| {
            if done.result.is_err() {
                failed += 1;
            }
            buffers[done.tag as usize] = done.buffer;
            let _ = ready.push(done.tag as usize);
        });
        ios += ready.len() as u64;
        if !stopping && clock::now() >= end {
            stopping = true;
        }
        if stopping {
            ready.clear();
            if nvme.in_flight() == 0 {
                break;
            }
            continue;
        }
        for i in ready.iter().copied() {
            submit(nvme, buffers, i)?;
        }
        ready.clear();
    }
    let elapsed = clock::now() - start;
    ensure!(failed == 0, "{failed} reads failed");
    Ok(Measured {
        ios,
        writes: WRITES.load(Ordering::Relaxed) - writes_before,
        elapsed,
    })
}
