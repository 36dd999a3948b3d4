//! `bench`: 4 KiB random reads at queue depth 1, 4 and 32, with and without
//! shadow doorbells, in one boot (so the numbers compare within one run).
//!
//! Arguments: `controller=N` picks the N-th NVMe function of the walk
//! (default 0); `ms=N` is the guest time per configuration and round
//! (default 1000); `rounds=N` repeats the interleaved MMIO / shadow runs
//! (default 2) and the results add up over them.
//! For each configuration it prints
//! `@@RESULT qd{Q}_shadow{S}_ios=.. qd{Q}_shadow{S}_iops=.. qd{Q}_shadow{S}_mmio_writes_milli=..`
//! (register writes per I/O, times 1000) and `shadow_active=0|1`.

use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;

use bare_nvme::nvme::{Controller, ControllerConfig};
use bare_nvme::pci::bar;
use bare_nvme::QueueId;
use bare_nvme::{DmaRegion, Instant, IoOp, PhysAddr, Platform, RegisterAccess};

use super::{check_dma_returned, Board, Outcome, Scenario};
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

const MAX_QD: usize = 32;

fn run(board: &Board) -> Outcome {
    let args = board.args;
    let baseline = dma::stats();
    let index = args
        .number("controller", 0)
        .ok_or_else(|| failure!("malformed controller="))? as usize;
    let ms = args
        .number("ms", 1000)
        .ok_or_else(|| failure!("malformed ms="))?;
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
    // Interleaved (and repeated) so that drift of the host under TCG hits
    // both variants alike; the numbers add up over the rounds.
    let rounds = args
        .number("rounds", 2)
        .ok_or_else(|| failure!("malformed rounds="))?;
    let mut totals: Totals = [[(0, 0, Duration::ZERO); 2]; QDS.len()];
    for _ in 0..rounds {
        for shadow in [false, true] {
            run_one(
                platform,
                (bar.address.as_u64(), bar.size),
                shadow,
                ms,
                &mut totals,
            )?;
        }
    }
    for (q, &qd) in QDS.iter().enumerate() {
        for shadow in [false, true] {
            let (ios, writes, elapsed) = totals[q][shadow as usize];
            let iops = ios as u128 * 1_000_000_000 / elapsed.as_nanos().max(1);
            let key = |what: &str| -> heapless::String<40> {
                let mut k = heapless::String::new();
                let _ =
                    core::fmt::write(&mut k, format_args!("qd{qd}_shadow{}_{what}", shadow as u8));
                k
            };
            marker!(
                "RESULT {}={} {}={} {}={}",
                key("ios"),
                ios,
                key("iops"),
                iops,
                key("mmio_writes_milli"),
                writes * 1000 / ios.max(1)
            );
        }
    }
    check_dma_returned(baseline)
}

/// Queue depths measured.
const QDS: [usize; 3] = [1, 4, 32];

/// (I/Os, register writes, time) per queue depth and shadow switch.
type Totals = [[(u64, u64, Duration); 2]; QDS.len()];

/// One bring-up with `shadow` doorbells on or off, each queue depth for `ms`,
/// detach; adds (I/Os, register writes, time) to `totals[qd][shadow]`.
fn run_one(
    platform: CountingPlatform,
    bar: (u64, u64),
    shadow: bool,
    ms: u64,
    totals: &mut Totals,
) -> Result<(), super::Failure> {
    let (bar_addr, bar_size) = (bar.0, bar.1 as usize);
    let Some(regs) = platform.map_registers(PhysAddr::new(bar_addr), bar_size) else {
        return Err(failure!("cannot map BAR0 at {bar_addr:#x}"));
    };
    // The default configuration (128 entries per queue), only the switch
    // under test changed.
    let config = ControllerConfig {
        shadow_doorbells: shadow,
        ..ControllerConfig::default()
    };
    let mut nvme: Nvme = Controller::new(platform, (), regs, bar_size, config);
    nvme.bring_up()
        .map_err(|e| failure!("bring-up failed: {e}"))?;
    let Some(ns) = nvme.namespaces().first().copied() else {
        return Err(failure!("no active namespace"));
    };
    ensure!(ns.block_size() <= 4096, "block size {}", ns.block_size());
    let per_io = 4096 / ns.block_size();
    let blocks = ns.blocks() / per_io as u64;
    let mut buffers: heapless::Vec<Option<DmaRegion>, MAX_QD> = heapless::Vec::new();
    for _ in 0..MAX_QD {
        let b = platform
            .dma_alloc(4096, 4096)
            .ok_or_else(|| failure!("no DMA memory"))?;
        let _ = buffers.push(Some(b));
    }
    let mut result = Ok(());
    for (q, &qd) in QDS.iter().enumerate() {
        match stream(&mut nvme, &mut buffers, qd, blocks, per_io, ms) {
            Ok((ios, writes, elapsed)) => {
                let t = &mut totals[q][shadow as usize];
                *t = (t.0 + ios, t.1 + writes, t.2 + elapsed);
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    let detached = nvme.detach().map_err(|e| failure!("detach failed: {e}"));
    drop(nvme);
    for b in buffers.iter_mut().filter_map(Option::take) {
        platform.dma_free(b);
    }
    result?;
    detached
}

/// Keeps `qd` random 4 KiB reads in flight for `ms` of guest time. Returns
/// completions, register writes and the time taken.
fn stream(
    nvme: &mut Nvme,
    buffers: &mut heapless::Vec<Option<DmaRegion>, MAX_QD>,
    qd: usize,
    blocks: u64,
    per_io: u32,
    ms: u64,
) -> Result<(u64, u64, Duration), super::Failure> {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next_lba = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % blocks) * per_io as u64
    };
    let mut submit =
        |nvme: &mut Nvme, buffers: &mut heapless::Vec<Option<DmaRegion>, MAX_QD>, i: usize| {
            let op = IoOp::Read {
                nsid: 1,
                lba: next_lba(),
                blocks: per_io,
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
    let end = start + Duration::from_millis(ms);
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
    Ok((ios, WRITES.load(Ordering::Relaxed) - writes_before, elapsed))
}
