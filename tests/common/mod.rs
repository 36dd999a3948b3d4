//! Shared setup for the driver's integration tests against the simulated
//! device: bringing a driver up, data patterns, buffers and the checks every
//! test ends with.
#![allow(dead_code)]

use std::ptr::NonNull;
use std::time::Duration;

use bare_nvme::QueueId;
use bare_nvme::{
    Completion, ControllerConfig, ControllerId, DmaRegion, Driver, DriverConfig, Event, PhysAddr,
    Platform,
};
use bare_nvme_sim::{ControllerSpec, Counters, NamespaceSpec, Sim, SimConfig, SimPlatform};

/// The driver type every test uses.
pub type Drv = Driver<SimPlatform, SimConfig>;
/// The driver holds every controller's queues and command tables inline
/// (some 400 KiB), so tests keep it on the heap, not on a test thread's stack.
pub type BoxedDrv = Box<Drv>;

/// Generous virtual-time budget for bring-up and detach.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A driver over `sim` with `config`, scanned and brought up. Returns the
/// driver and the controllers that became ready, in attach order.
pub fn up_with(sim: &Sim, config: DriverConfig) -> (BoxedDrv, Vec<ControllerId>) {
    let mut driver = Box::new(Drv::new(sim.platform(), sim.config_access(), config));
    driver.scan().expect("scan");
    let _ = driver.wait_ready(PATIENCE);
    let ids: Vec<ControllerId> = driver.ready_controllers().collect();
    (driver, ids)
}

/// A driver with default settings except the per-controller `config`.
pub fn up(sim: &Sim, config: ControllerConfig) -> (BoxedDrv, Vec<ControllerId>) {
    up_with(sim, DriverConfig::default().controller(config))
}

/// One controller in a hot-plug slot, brought up with `config`; its id.
pub fn single(spec: ControllerSpec, config: ControllerConfig) -> (Sim, BoxedDrv, ControllerId) {
    let sim = Sim::single(spec);
    let (driver, ids) = up(&sim, config);
    assert_eq!(
        ids.len(),
        1,
        "controller not ready: {:?}",
        sim.protocol_log()
    );
    (sim, driver, ids[0])
}

/// A controller with one namespace of `blocks` blocks of `block_size` bytes.
pub fn spec(blocks: u64, block_size: u32) -> ControllerSpec {
    ControllerSpec::default().namespace(NamespaceSpec::new(blocks, block_size))
}

/// `len` bytes that differ from block to block and from seed to seed.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    // The block number is mixed in, so a block landing at the wrong LBA or
    // a page taken from the wrong place shows up as a mismatch.
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8)
        .collect()
}

/// A DMA buffer of `len` bytes holding `pattern(len, seed)`.
pub fn filled(p: &SimPlatform, len: usize, seed: u8) -> DmaRegion {
    let mut b = p.dma_alloc(len, 4096).expect("dma");
    b.as_mut_slice().copy_from_slice(&pattern(len, seed));
    b
}

/// A zeroed DMA buffer of `len` bytes.
pub fn zeroed(p: &SimPlatform, len: usize) -> DmaRegion {
    p.dma_alloc(len, 4096).expect("dma")
}

/// A view of `len` bytes at `offset` into `parent`, to hand the driver a
/// buffer whose start is not page (or not dword) aligned.
///
/// The view is never given to `dma_free` (only `parent` is), and `parent`
/// must not be touched while the view is in use.
pub fn view(parent: &DmaRegion, offset: usize, len: usize) -> DmaRegion {
    assert!(offset + len <= parent.len());
    // SAFETY: the range lies inside `parent`, which stays allocated for the
    // test's duration; the caller does not access `parent` while the view is
    // in use, and the device sees the same bytes at `phys + offset`.
    unsafe {
        DmaRegion::new(
            NonNull::new_unchecked(parent.virt().as_ptr().add(offset)),
            PhysAddr::new(parent.phys().as_u64() + offset as u64),
            len,
        )
    }
}

/// I/O commands executed, all opcodes together.
pub fn io_total(c: &Counters) -> u64 {
    c.io_commands.iter().sum()
}

/// The model saw nothing a correct driver never does.
pub fn assert_clean(sim: &Sim) {
    let c = sim.counters();
    assert_eq!(c.protocol_errors, 0, "{:?}", sim.protocol_log());
    assert_eq!(c.wild_dma, 0, "device reached memory outside allocations");
}

/// Polls `queue` until `n` completions arrived (bounded), returning them.
/// Each returned buffer is reported to the model as the caller's again
/// ([`Sim::caller_owns`]), so a device still writing it is caught.
pub fn collect(driver: &mut BoxedDrv, id: ControllerId, queue: u16, n: usize) -> Vec<Completion> {
    let mut got = Vec::new();
    for _ in 0..10_000 {
        if got.len() >= n {
            break;
        }
        driver
            .controller(id)
            .unwrap()
            .poll(QueueId::new(queue), |c| got.push(c));
    }
    for b in got.iter().filter_map(|c| c.buffer.as_ref()) {
        driver.platform().caller_owns(b);
    }
    assert_eq!(got.len(), n, "completions missing");
    got
}

/// Detaches every ready controller through the driver, ticks until each reported
/// its removal, and checks the model: no protocol error, no wild DMA, and
/// every DMA region the driver allocated returned. The test must have freed
/// its own buffers first.
pub fn finish(sim: &Sim, mut driver: BoxedDrv) {
    let ids: Vec<ControllerId> = driver.ready_controllers().collect();
    for &id in &ids {
        driver.begin_detach(id).unwrap();
    }
    let mut removed = Vec::new();
    let deadline = sim.now() + PATIENCE;
    while removed.len() < ids.len() && sim.now() < deadline {
        for e in driver.tick() {
            if let Event::Removed { id, .. } = e {
                removed.push(id);
            }
        }
    }
    assert_eq!(removed.len(), ids.len(), "not every controller detached");
    assert_clean(sim);
    assert_eq!(sim.counters().dma_regions, 0, "DMA regions outstanding");
}
