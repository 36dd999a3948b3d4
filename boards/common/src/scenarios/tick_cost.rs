//! `tick-cost`: what one tick costs with many controllers. The driver (room
//! for [`CONTROLLERS`]) brings up every NVMe controller it finds, then ticks
//! once per millisecond and measures each tick alone: its time (the board's clock), the
//! register reads and the configuration reads it made.
//!
//! Arguments: `controllers=N` (default 16) must all come up; `ticks=N`
//! (default 2000) ticks are measured idle, then as many busy (one read
//! completed on every controller between two ticks). Prints
//! `@@RESULT {idle,busy}_tick_ns_{mean,median,max}=..`,
//! `{idle,busy}_mmio_reads_milli=..` (per tick, times 1000),
//! `{idle,busy}_mmio_reads_max=..`, `{idle,busy}_config_reads_milli=..`,
//! `{idle,busy}_config_reads_max=..`.

use core::mem::MaybeUninit;
use core::time::Duration;

use crate::counters;
use bare_nvme::{ControllerId, DmaRegion, Driver, DriverConfig, Event, Platform};
use spin::Mutex;

use super::{check_dma_returned, Context, Failure, Outcome, Scenario};
use crate::pci::Access;
use crate::platform::QemuPlatform;
use crate::{clock, dma, ensure, failure, marker};

/// The scenario.
pub const SCENARIO: Scenario = Scenario {
    name: "tick-cost",
    about: "tick time, register and config reads per tick with 16 controllers",
    run,
};

/// Controllers the driver has room for.
pub const CONTROLLERS: usize = 16;

type Many = Driver<QemuPlatform, Access, CONTROLLERS>;

/// Where the driver is built, field by field (`Driver::new_in`): its
/// tables for 16 controllers are too large for the stack.
static DRIVER: Mutex<MaybeUninit<Many>> = Mutex::new(MaybeUninit::uninit());

/// Most ticks measured per load.
const MAX_TICKS: usize = 10_000;

/// Per tick: nanoseconds, register reads, config reads.
struct Sample {
    nanos: heapless::Vec<u64, MAX_TICKS>,
    mmio: u64,
    mmio_max: u64,
    config: u64,
    config_max: u64,
}

fn run(board: &Context) -> Outcome {
    let baseline = dma::stats();
    let args = board.args;
    let want = args
        .number("controllers", CONTROLLERS as u64)
        .ok_or_else(|| failure!("malformed controllers="))? as usize;
    let ticks = args
        .number("ticks", 2000)
        .ok_or_else(|| failure!("malformed ticks="))? as usize;
    ensure!(
        (1..=MAX_TICKS).contains(&ticks),
        "ticks must be 1 to {MAX_TICKS}"
    );
    // The host's window, where the board knows it (aarch64, or x86 with
    // `reassign=1`), for the driver to place BARs in.
    let mut config = DriverConfig::default();
    crate::pci::host_config(&board.args, &mut config);
    let mut place = DRIVER.lock();
    let d = Driver::new_in(&mut place, board.platform, board.access, config);
    let found = d.scan().map_err(|e| failure!("scan: {e}"))?;
    ensure!(found == want, "{found} controllers attached, want {want}");
    let deadline = clock::now() + Duration::from_secs(30);
    let mut ready = 0;
    while ready < want {
        ensure!(clock::now() < deadline, "{ready} of {want} ready in 30 s");
        for e in d.tick() {
            match e {
                Event::Ready { .. } => ready += 1,
                Event::Attached { .. } => {}
                other => return Err(failure!("unexpected {other:?}")),
            }
        }
        clock::delay_us(1000);
    }
    let ids: heapless::Vec<ControllerId, CONTROLLERS> = d.ready_controllers().collect();
    marker!("RESULT ready={}", ids.len());
    let mut buffer = board
        .platform
        .dma_alloc(4096, 4096)
        .ok_or_else(|| failure!("no DMA memory"))?;
    let result = measure_both(d, &ids, &mut buffer, ticks);
    board.platform.dma_free(buffer);
    result?;
    for &id in &ids {
        d.controller(id)
            .and_then(|c| c.detach())
            .map_err(|e| failure!("detach {id}: {e}"))?;
    }
    drop(place);
    check_dma_returned(baseline)
}

fn measure_both(
    d: &mut Many,
    ids: &[ControllerId],
    buffer: &mut DmaRegion,
    ticks: usize,
) -> Outcome {
    for busy in [false, true] {
        let s = measure(d, ids, buffer, ticks, busy)?;
        let load = if busy { "busy" } else { "idle" };
        let mut sorted = s.nanos.clone();
        sorted.sort_unstable();
        let n = sorted.len() as u64;
        let mean = sorted.iter().sum::<u64>() / n.max(1);
        marker!(
            "RESULT {load}_tick_ns_mean={mean} {load}_tick_ns_median={} {load}_tick_ns_max={}",
            sorted[sorted.len() / 2],
            sorted[sorted.len() - 1]
        );
        marker!(
            "RESULT {load}_mmio_reads_milli={} {load}_mmio_reads_max={} {load}_config_reads_milli={} {load}_config_reads_max={}",
            s.mmio * 1000 / n,
            s.mmio_max,
            s.config * 1000 / n,
            s.config_max
        );
    }
    Ok(())
}

/// Ticks once per millisecond `ticks` times; with `busy`, one read is
/// completed on every controller before each tick.
fn measure(
    d: &mut Many,
    ids: &[ControllerId],
    buffer: &mut DmaRegion,
    ticks: usize,
    busy: bool,
) -> Result<Sample, Failure> {
    let mut s = Sample {
        nanos: heapless::Vec::new(),
        mmio: 0,
        mmio_max: 0,
        config: 0,
        config_max: 0,
    };
    let mut next = clock::now();
    for t in 0..ticks {
        if busy {
            for &id in ids {
                let c = d.controller(id).map_err(|e| failure!("{id}: {e}"))?;
                let nsid = c
                    .namespaces()
                    .first()
                    .map(|n| n.id())
                    .ok_or_else(|| failure!("{id}: no namespace"))?;
                c.read(nsid, t as u64 % 64, &mut *buffer)
                    .map_err(|e| failure!("{id}: read: {e}"))?;
            }
        }
        while clock::now() < next {
            core::hint::spin_loop();
        }
        next = clock::now() + Duration::from_millis(1);
        let (mmio, config) = (counters::mmio_reads(), counters::config_reads());
        let start = clock::ticks();
        let events = d.tick();
        let cycles = clock::ticks() - start;
        let mmio = counters::mmio_reads() - mmio;
        let config = counters::config_reads() - config;
        ensure!(events.is_empty(), "tick {t}: {:?}", events[0]);
        let _ = s.nanos.push(clock::ticks_to_nanos(cycles));
        s.mmio += mmio;
        s.mmio_max = s.mmio_max.max(mmio);
        s.config += config;
        s.config_max = s.config_max.max(config);
    }
    Ok(s)
}
