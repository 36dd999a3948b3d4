//! Shared helpers of the hot-plug tests: a driver over the simulated
//! machine, a per-command ledger and event bookkeeping.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use bare_nvme::QueueId;
use bare_nvme::{
    ControllerId, DmaRegion, Driver, DriverConfig, Error, Event, IoOp, Platform, State,
};
use bare_nvme_sim::{ControllerSpec, NamespaceSpec, Sim, SimConfig, SimPlatform};

/// The driver type every hot-plug test uses.
pub type Drv = Driver<SimPlatform, SimConfig>;

/// Virtual time between two ticks.
pub const TICK: Duration = Duration::from_millis(1);

/// Block size of the test namespaces.
pub const BLOCK: usize = 512;

/// A controller spec with one namespace and the given serial.
pub fn spec(serial: &str) -> ControllerSpec {
    ControllerSpec::default()
        .serial(serial)
        .namespace(NamespaceSpec::new(1 << 16, BLOCK as u32))
}

/// A driver over `sim` with `config`.
pub fn driver(sim: &Sim, config: DriverConfig) -> Drv {
    Driver::new(sim.platform(), sim.config_access(), config)
}

/// Advances the virtual clock by one tick period and ticks once.
pub fn tick(driver: &mut Drv, sim: &Sim) -> Vec<Event> {
    sim.advance(TICK);
    driver.tick().into_iter().collect()
}

/// The controller an event is about (these tests' slots report no slot
/// faults).
pub fn event_id(e: &Event) -> ControllerId {
    e.id().expect("a controller's event")
}

/// Ticks until `done` holds for the events so far or `max` ticks passed;
/// returns every event seen and the ticks used.
pub fn tick_until(
    driver: &mut Drv,
    sim: &Sim,
    max: usize,
    mut done: impl FnMut(&[Event]) -> bool,
) -> (Vec<Event>, usize) {
    let mut all = Vec::new();
    for n in 1..=max {
        all.extend(tick(driver, sim));
        if done(&all) {
            return (all, n);
        }
    }
    (all, max)
}

/// Whether `events` hold a `Ready` for some controller; returns its id.
pub fn ready_id(events: &[Event]) -> Option<ControllerId> {
    events.iter().find_map(|e| match *e {
        Event::Ready { id, .. } => Some(id),
        _ => None,
    })
}

/// Events that end a controller (`Removed` or `Failed`) for `id`.
pub fn endings(events: &[Event], id: ControllerId) -> Vec<Event> {
    events
        .iter()
        .filter(|e| matches!(e, Event::Removed { .. } | Event::Failed { .. }))
        .filter(|e| e.id() == Some(id))
        .copied()
        .collect()
}

/// Brings up every controller the scan finds; returns the ready ids.
pub fn bring_up(driver: &mut Drv, sim: &Sim, expected: usize) -> Vec<ControllerId> {
    assert_eq!(driver.scan().unwrap(), expected);
    let (events, _) = tick_until(driver, sim, 10_000, |ev| {
        ev.iter()
            .filter(|e| matches!(e, Event::Ready { .. }))
            .count()
            == expected
    });
    let ids: Vec<ControllerId> = events
        .iter()
        .filter_map(|e| match *e {
            Event::Ready { id, .. } => Some(id),
            _ => None,
        })
        .collect();
    assert_eq!(ids.len(), expected, "not all ready: {events:?}");
    ids
}

/// What happened to one submitted command.
#[derive(Debug)]
pub struct Entry {
    /// Controller it was submitted to.
    pub ctrl: ControllerId,
    /// Each completion delivered for it (exactly one when all is well).
    pub results: Vec<Result<(), Error>>,
}

/// Every command submitted, keyed by its tag, with each completion
/// delivered: proves exactly-once completion.
#[derive(Default, Debug)]
pub struct Ledger {
    next_tag: u64,
    pub entries: BTreeMap<u64, Entry>,
    /// Completions for tags never submitted (must stay empty).
    pub unknown: Vec<u64>,
    /// Submissions refused, with the error.
    pub rejected: Vec<Error>,
    /// Commands checked and forgotten by [`Ledger::retire`].
    pub retired: usize,
}

impl Ledger {
    /// Submits `op` to `id` with a fresh tag; a refusal is recorded and the
    /// buffer freed. Returns the tag if accepted.
    pub fn submit(
        &mut self,
        driver: &mut Drv,
        platform: &SimPlatform,
        id: ControllerId,
        op: IoOp,
        buffer: Option<DmaRegion>,
    ) -> Option<u64> {
        let tag = self.next_tag;
        self.next_tag += 1;
        let c = match driver.controller(id) {
            Ok(c) => c,
            Err(e) => {
                self.rejected.push(e);
                if let Some(b) = buffer {
                    platform.dma_free(b);
                }
                return None;
            }
        };
        match c.submit(QueueId::FIRST, op, buffer, tag) {
            Ok(_) => {
                self.entries.insert(
                    tag,
                    Entry {
                        ctrl: id,
                        results: Vec::new(),
                    },
                );
                Some(tag)
            }
            Err(r) => {
                self.rejected.push(r.error);
                if let Some(b) = r.buffer {
                    platform.dma_free(b);
                }
                None
            }
        }
    }

    /// Submits a write of `blocks` blocks at `lba` from a fresh buffer.
    pub fn write(
        &mut self,
        driver: &mut Drv,
        platform: &SimPlatform,
        id: ControllerId,
        lba: u64,
        blocks: u32,
    ) -> Option<u64> {
        let mut buf = platform.dma_alloc(blocks as usize * BLOCK, 4096).unwrap();
        buf.as_mut_slice().fill(lba as u8);
        let op = IoOp::Write {
            nsid: 1,
            lba,
            blocks,
        };
        self.submit(driver, platform, id, op, Some(buf))
    }

    /// Submits a read of `blocks` blocks at `lba` into a fresh buffer.
    pub fn read(
        &mut self,
        driver: &mut Drv,
        platform: &SimPlatform,
        id: ControllerId,
        lba: u64,
        blocks: u32,
    ) -> Option<u64> {
        let buf = platform.dma_alloc(blocks as usize * BLOCK, 4096).unwrap();
        let op = IoOp::Read {
            nsid: 1,
            lba,
            blocks,
        };
        self.submit(driver, platform, id, op, Some(buf))
    }

    /// Polls queue 0 of `id` (if the handle still names it) and records each
    /// completion; buffers go back to the platform. Returns how many.
    pub fn poll(&mut self, driver: &mut Drv, platform: &SimPlatform, id: ControllerId) -> usize {
        let Ok(c) = driver.controller(id) else {
            return 0;
        };
        let mut done = Vec::new();
        c.poll(QueueId::FIRST, |comp| done.push(comp));
        let n = done.len();
        for comp in done {
            if let Some(b) = comp.buffer {
                platform.dma_free(b);
            }
            match self.entries.get_mut(&comp.tag) {
                Some(e) if e.ctrl == id => e.results.push(comp.result),
                _ => self.unknown.push(comp.tag),
            }
        }
        n
    }

    /// Checks that every command of `id` completed exactly once and forgets
    /// them (keeps long runs linear); returns (succeeded, failed with
    /// `DeviceRemoved`).
    pub fn retire(&mut self, id: ControllerId, context: &str) -> (usize, usize) {
        let removed = self.assert_exactly_once(id, context);
        let before = self.entries.len();
        self.entries.retain(|_, e| e.ctrl != id);
        self.retired += before - self.entries.len();
        (before - self.entries.len() - removed, removed)
    }

    /// Tags submitted to `id` that have not completed yet.
    pub fn outstanding(&self, id: ControllerId) -> usize {
        self.entries
            .values()
            .filter(|e| e.ctrl == id && e.results.is_empty())
            .count()
    }

    /// Asserts every command completed exactly once, and those of `id` with
    /// success or `DeviceRemoved`; returns how many failed with
    /// `DeviceRemoved` for `id`.
    pub fn assert_exactly_once(&self, id: ControllerId, context: &str) -> usize {
        assert!(
            self.unknown.is_empty(),
            "{context}: completions for unknown tags {:?}",
            self.unknown
        );
        let mut removed = 0;
        for (tag, e) in &self.entries {
            assert_eq!(
                e.results.len(),
                1,
                "{context}: tag {tag} completed {} times: {:?}",
                e.results.len(),
                e.results
            );
            if e.ctrl == id {
                match e.results[0] {
                    Ok(()) => {}
                    Err(Error::DeviceRemoved) => removed += 1,
                    Err(other) => panic!("{context}: tag {tag} failed with {other:?}"),
                }
            }
        }
        removed
    }
}

/// Whether the controller `id` is finished (removed, failed or detached) or
/// its handle is stale.
pub fn finished(driver: &mut Drv, id: ControllerId) -> bool {
    match driver.controller(id) {
        Ok(c) => matches!(c.state(), State::Removed | State::Failed | State::Detached),
        Err(_) => true,
    }
}

/// Runs `f` on a thread with a large stack: the driver holds every queue's
/// tracker inline (no allocator), and debug builds keep several copies of
/// it on the stack while it is moved around.
pub fn with_big_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// Size of the driver value, for the record.
pub fn driver_size() -> usize {
    std::mem::size_of::<Drv>()
}
