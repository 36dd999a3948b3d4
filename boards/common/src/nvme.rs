//! The board's bare-nvme driver and what scenarios do with it: the driver in
//! a static (it holds fixed tables for every controller, too large for a
//! stack), a tick loop that logs and collects events, data patterns and
//! verified I/O.

use core::time::Duration;

use crate::cmdline::Args;
use bare_nvme::{
    ControllerId, DmaRegion, Driver, DriverConfig, DriverController, Event, Instant, Platform,
};
use log::info;
use spin::{Mutex, MutexGuard, Once};

use crate::pci::Access;
use crate::platform::QemuPlatform;
use crate::scenarios::{Failure, Outcome};
use crate::{clock, failure};

/// The driver as the boards run it.
pub type Nvme = Driver<QemuPlatform, Access>;
/// One controller of it.
pub type Ctrl = DriverController<QemuPlatform, Access>;

static DRIVER: Once<Mutex<Nvme>> = Once::new();

/// The driver, created on first use with `config` (one scenario runs per
/// boot, so later calls get the same driver).
pub fn driver(
    platform: QemuPlatform,
    access: Access,
    config: DriverConfig,
) -> MutexGuard<'static, Nvme> {
    DRIVER
        .call_once(|| {
            info!("driver: {} bytes", core::mem::size_of::<Nvme>());
            Mutex::new(Driver::new(platform, access, config))
        })
        .lock()
}

/// The driver configuration from the command line: `io_queues=N`,
/// `max_transfer=B`, `slot_poll_ms=N`.
pub fn config_from(args: &Args) -> Result<DriverConfig, Failure> {
    let mut config = DriverConfig::default();
    config.controller.io_queues = args
        .number("io_queues", 2)
        .ok_or_else(|| failure!("malformed io_queues="))? as u16;
    config.controller.max_transfer =
        args.number("max_transfer", u64::from(config.controller.max_transfer))
            .ok_or_else(|| failure!("malformed max_transfer="))? as u32;
    let poll = args
        .number("slot_poll_ms", 10)
        .ok_or_else(|| failure!("malformed slot_poll_ms="))?;
    config.slot_poll_interval = Duration::from_millis(poll);
    let window = args
        .number("button_window_ms", config.button_window.as_millis() as u64)
        .ok_or_else(|| failure!("malformed button_window_ms="))?;
    config.button_window = Duration::from_millis(window);
    config.manage_slots = args.get("manage_slots") != Some("0");
    crate::pci::host_config(args, &mut config);
    Ok(config)
}

/// Time since the machine started (see [`crate::Board::since_machine_start`]).
pub fn since_machine_start() -> Duration {
    clock::since_machine_start()
}

/// The tick loop: calls `Driver::tick` once per period, logs every event and
/// counts ticks.
pub struct Monitor {
    period: Duration,
    next: Instant,
    /// Ticks made so far.
    pub ticks: u64,
    /// Removed events seen so far.
    pub removed: u32,
    /// Every event seen so far, in order (the oldest are dropped when full).
    pub log: heapless::Deque<Event, 64>,
}

impl Monitor {
    /// A monitor ticking every `period`.
    pub fn new(period: Duration) -> Self {
        Self {
            period,
            next: clock::now(),
            ticks: 0,
            removed: 0,
            log: heapless::Deque::new(),
        }
    }

    /// Waits for the next tick time, ticks once, returns the events.
    pub fn tick(&mut self, d: &mut Nvme) -> heapless::Vec<Event, { bare_nvme::MAX_EVENTS }> {
        while clock::now() < self.next {
            clock::relax();
        }
        self.next = clock::now() + self.period;
        self.ticks += 1;
        let events = d.tick();
        for e in &events {
            self.note(e);
        }
        events
    }

    fn note(&mut self, e: &Event) {
        match e {
            Event::Attached { id, address } => info!("event: {id} attached at {address}"),
            Event::Ready {
                id,
                serial,
                model,
                namespaces,
            } => info!("event: {id} ready: {model} serial {serial}, {namespaces} namespaces"),
            Event::Removed {
                id,
                failed_commands,
                detected_by,
            } => {
                self.removed += 1;
                info!("event: {id} removed ({detected_by:?}), {failed_commands} commands failed")
            }
            Event::Failed { id, error } => info!("event: {id} failed: {error}"),
            Event::Returned { id, previous } => info!("event: {id} returned (was {previous})"),
            Event::Quarantined { id, regions, bytes } => {
                info!("event: {id} quarantined {regions} regions ({bytes} bytes)")
            }
            Event::Health {
                id,
                warning,
                temperature,
            } => info!(
                "event: {id} health: critical warning {:#04x}, {temperature} K",
                warning.bits()
            ),
            Event::NamespaceAdded { id, nsid } => info!("event: {id} namespace {nsid} added"),
            Event::NamespaceRemoved { id, nsid } => info!("event: {id} namespace {nsid} removed"),
            Event::SlotFault { port, fault } => {
                info!("event: slot of {port} switched off: {fault:?}")
            }
        }
        if self.log.is_full() {
            self.log.pop_front();
        }
        let _ = self.log.push_back(*e);
    }

    /// Ticks until an event satisfies `want` (returned with the ticks and
    /// time it took), calling `between` after every tick; fails after
    /// `timeout_ms`.
    pub fn until(
        &mut self,
        d: &mut Nvme,
        timeout_ms: u64,
        what: &str,
        mut want: impl FnMut(&Event) -> bool,
        mut between: impl FnMut(&mut Nvme) -> Outcome,
    ) -> Result<(Event, u64, Duration), Failure> {
        let start = clock::now();
        let first_tick = self.ticks;
        let deadline = start + Duration::from_millis(timeout_ms);
        loop {
            let events = self.tick(d);
            if let Some(e) = events.iter().find(|e| want(e)) {
                return Ok((*e, self.ticks - first_tick, clock::now() - start));
            }
            between(d)?;
            if clock::now() > deadline {
                return Err(failure!("no {what} within {timeout_ms} ms"));
            }
        }
    }

    /// Ticks until `count` more Removed events arrived (several may come in
    /// one tick); fails after `timeout_ms`.
    pub fn removals(&mut self, d: &mut Nvme, count: u32, timeout_ms: u64) -> Outcome {
        let target = self.removed + count;
        let deadline = clock::now() + Duration::from_millis(timeout_ms);
        while self.removed < target {
            if clock::now() > deadline {
                return Err(failure!(
                    "{} of {count} removals within {timeout_ms} ms",
                    count - (target - self.removed)
                ));
            }
            self.tick(d);
        }
        Ok(())
    }

    /// Ticks for `ms` milliseconds; fails on any event (the driver must stay
    /// quiet).
    pub fn quiet(&mut self, d: &mut Nvme, ms: u64) -> Outcome {
        let deadline = clock::now() + Duration::from_millis(ms);
        while clock::now() < deadline {
            let events = self.tick(d);
            if let Some(e) = events.first() {
                return Err(failure!("unexpected event {e:?}"));
            }
        }
        Ok(())
    }
}

/// The controller `id`, as a scenario failure when the handle is stale.
pub fn ctrl(d: &mut Nvme, id: ControllerId) -> Result<&mut Ctrl, Failure> {
    d.controller(id)
        .map_err(|e| failure!("controller {id}: {e}"))
}

/// The 64-bit word `word` of block `lba` in the pattern of `seed`.
fn pattern(seed: u64, lba: u64, word: u64) -> u64 {
    (seed << 48) ^ (lba << 16) ^ word ^ 0x5A5A_0000_0000_5A5A
}

/// Fills `buffer` with the pattern of `seed` for blocks from `lba` on.
pub fn fill(buffer: &mut DmaRegion, seed: u64, lba: u64, block: usize) {
    for (i, chunk) in buffer.as_mut_slice().chunks_exact_mut(8).enumerate() {
        let lba = lba + (i * 8 / block) as u64;
        chunk.copy_from_slice(&pattern(seed, lba, (i % (block / 8)) as u64).to_le_bytes());
    }
}

/// The first 8-byte word of `buffer` that differs from the pattern, if any.
pub fn mismatch(buffer: &DmaRegion, seed: u64, lba: u64, block: usize) -> Option<usize> {
    buffer
        .as_slice()
        .chunks_exact(8)
        .enumerate()
        .position(|(i, chunk)| {
            let lba = lba + (i * 8 / block) as u64;
            chunk != pattern(seed, lba, (i % (block / 8)) as u64).to_le_bytes()
        })
}

/// DMA buffers a scenario holds, returned on every path.
pub struct Buffers {
    platform: QemuPlatform,
    /// The regions.
    pub regions: heapless::Vec<DmaRegion, 8>,
}

impl Buffers {
    /// No buffers yet.
    pub fn new(platform: QemuPlatform) -> Self {
        Self {
            platform,
            regions: heapless::Vec::new(),
        }
    }

    /// Allocates a buffer of `len` bytes; returns its index.
    pub fn alloc(&mut self, len: usize) -> Result<usize, Failure> {
        let region = self
            .platform
            .dma_alloc(len, 4096)
            .ok_or_else(|| failure!("no DMA memory for {len} bytes"))?;
        self.regions
            .push(region)
            .map_err(|_| failure!("too many buffers"))?;
        Ok(self.regions.len() - 1)
    }
}

impl Drop for Buffers {
    fn drop(&mut self) {
        while let Some(region) = self.regions.pop() {
            self.platform.dma_free(region);
        }
    }
}

/// Writes the pattern of `seed` over `bytes` at `lba` of namespace `nsid`,
/// reads it back into another buffer and compares; then flushes.
pub fn verified_io(c: &mut Ctrl, nsid: u32, lba: u64, bytes: usize, seed: u64) -> Outcome {
    let block = c
        .namespace(nsid)
        .map_err(|e| failure!("namespace {nsid}: {e}"))?
        .block_size() as usize;
    let mut buffers = Buffers::new(*c.platform());
    let w = buffers.alloc(bytes)?;
    let r = buffers.alloc(bytes)?;
    fill(&mut buffers.regions[w], seed, lba, block);
    c.write(nsid, lba, &buffers.regions[w])
        .map_err(|e| failure!("write ns {nsid} lba {lba}: {e}"))?;
    c.read(nsid, lba, &mut buffers.regions[r])
        .map_err(|e| failure!("read ns {nsid} lba {lba}: {e}"))?;
    if let Some(word) = mismatch(&buffers.regions[r], seed, lba, block) {
        return Err(failure!(
            "ns {nsid} lba {lba}: read back differs at byte {}",
            word * 8
        ));
    }
    c.flush(nsid)
        .map_err(|e| failure!("flush ns {nsid}: {e}"))?;
    Ok(())
}
