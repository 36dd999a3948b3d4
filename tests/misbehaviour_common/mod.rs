//! What the misbehaviour tests share: a driver with short deadlines over a
//! simulated machine, and loops that tick it with the virtual clock moving.
#![allow(dead_code)]

use std::time::Duration;

use bare_nvme::QueueId;
use bare_nvme::{
    Completion, ControllerConfig, ControllerId, DmaRegion, Driver, DriverConfig, Event, IoOp,
    Platform, State,
};
use bare_nvme_sim::{ControllerSpec, NamespaceSpec, Sim, SimConfig, SimPlatform};

pub type SimDriver = Driver<SimPlatform, SimConfig>;

/// Deadlines short enough that a test crosses them in a few ticks.
pub const IO_TIMEOUT: Duration = Duration::from_millis(100);
pub const ADMIN_TIMEOUT: Duration = Duration::from_millis(100);
pub const READY_LIMIT: Duration = Duration::from_secs(2);

pub fn config() -> DriverConfig {
    DriverConfig::default().controller(
        ControllerConfig::default()
            .io_timeout(IO_TIMEOUT)
            .admin_timeout(ADMIN_TIMEOUT)
            .ready_timeout_limit(READY_LIMIT)
            .shutdown_timeout(Duration::from_millis(100)),
    )
}

/// One controller with one namespace of 1024 blocks of 512 bytes.
pub fn spec() -> ControllerSpec {
    ControllerSpec::default()
        .serial("mis")
        .namespace(NamespaceSpec::new(1024, 512))
}

/// A driver that scanned `sim` and ran bring-up to its end; the events seen.
/// Boxed: the driver holds its fixed-capacity tables inline (hundreds of
/// KiB), too much to move around on a test thread's stack.
pub fn start(sim: &Sim) -> (Box<SimDriver>, Vec<Event>) {
    let mut driver = Box::new(Driver::new(sim.platform(), sim.config_access(), config()));
    driver.scan().expect("scan");
    let events = tick_for(&mut driver, sim, Duration::from_secs(10), |d| {
        let ids: Vec<ControllerId> = d.controllers().collect();
        ids.into_iter().all(|id| {
            !matches!(
                d.controller_state(id),
                Some(State::Discovered | State::Resetting | State::Enabling | State::Initializing)
            )
        })
    });
    (driver, events)
}

/// A driver whose single controller is ready.
pub fn ready(sim: &Sim) -> (Box<SimDriver>, ControllerId) {
    let (driver, events) = start(sim);
    let id = driver
        .ready_controllers()
        .next()
        .unwrap_or_else(|| panic!("not ready: {events:?}"));
    (driver, id)
}

pub trait StateOf {
    fn controller_state(&mut self, id: ControllerId) -> Option<State>;
}

impl StateOf for SimDriver {
    fn controller_state(&mut self, id: ControllerId) -> Option<State> {
        self.controller(id).ok().map(|c| c.state())
    }
}

/// Ticks every millisecond of virtual time until `done` or `limit` passed;
/// returns the events.
pub fn tick_for(
    driver: &mut SimDriver,
    sim: &Sim,
    limit: Duration,
    mut done: impl FnMut(&mut SimDriver) -> bool,
) -> Vec<Event> {
    let end = sim.now() + limit;
    let mut events = Vec::new();
    loop {
        events.extend(driver.tick());
        if done(driver) || sim.now() > end {
            return events;
        }
        sim.advance(Duration::from_millis(1));
    }
}

/// A zeroed DMA buffer of `len` bytes.
pub fn buffer(sim: &Sim, len: usize) -> DmaRegion {
    sim.platform().dma_alloc(len, 4096).expect("DMA memory")
}

/// Submits a one-block read with `tag` on queue 0.
pub fn submit_read(driver: &mut SimDriver, sim: &Sim, id: ControllerId, tag: u64) {
    let c = driver.controller(id).unwrap();
    let op = IoOp::Read {
        nsid: 1,
        lba: tag % 1024,
        blocks: 1,
    };
    let _ = c
        .submit(QueueId::FIRST, op, Some(buffer(sim, 512)), tag)
        .expect("submitted");
}

/// Polls queue 0 and collects what completed.
pub fn poll(driver: &mut SimDriver, id: ControllerId) -> Vec<Completion> {
    let mut out = Vec::new();
    let c = driver.controller(id).unwrap();
    for q in 0..c.io_queue_count() {
        c.poll(QueueId::new(q), |done| out.push(done));
    }
    for b in out.iter().filter_map(|c| c.buffer.as_ref()) {
        driver.platform().caller_owns(b);
    }
    out
}

/// Returns the buffers of `completions` to the platform.
pub fn free(sim: &Sim, completions: Vec<Completion>) {
    for c in completions {
        if let Some(b) = c.buffer {
            sim.platform().dma_free(b);
        }
    }
}

/// A blocking write then read back of two blocks at `lba`: the controller
/// serves I/O.
pub fn round_trip(driver: &mut SimDriver, sim: &Sim, id: ControllerId, lba: u64) {
    let c = driver.controller(id).unwrap();
    let mut data = buffer(sim, 1024);
    data.as_mut_slice().fill(lba as u8 ^ 0x5A);
    c.write(1, lba, &data).expect("write");
    let mut back = buffer(sim, 1024);
    c.read(1, lba, &mut back).expect("read");
    assert_eq!(back.as_slice(), data.as_slice());
    sim.platform().dma_free(data);
    sim.platform().dma_free(back);
}

/// Detaches every controller, ends the driver and checks that all DMA
/// memory went back.
pub fn finish(mut driver: Box<SimDriver>, sim: &Sim) {
    let ids: Vec<ControllerId> = driver.controllers().collect();
    for id in &ids {
        let _ = driver.begin_detach(*id);
    }
    tick_for(&mut driver, sim, Duration::from_secs(30), |d| {
        ids.iter().all(|id| {
            matches!(
                d.controller_state(*id),
                None | Some(State::Detached | State::Removed | State::Failed)
            )
        })
    });
    for id in &ids {
        if driver.controller(*id).is_ok() {
            free(sim, poll(&mut driver, *id));
        }
    }
    drop(driver);
    let c = sim.counters();
    assert_eq!((c.dma_regions, c.dma_bytes), (0, 0), "DMA memory leaked");
}
