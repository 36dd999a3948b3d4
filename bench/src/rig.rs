//! A driver brought up on the deferred device, and the measured calls.

use std::time::Duration;

use bare_nvme::block::{BlockTarget, NamespaceHandle};
use bare_nvme::QueueId;
use bare_nvme::{
    ControllerConfig, ControllerId, DmaRegion, Driver, DriverConfig, DriverController, IoOp,
    Platform,
};
use bare_nvme_sim::{ControllerSpec, NamespaceSpec, PortId, Sim, SimConfig};

use crate::device::{deferred, Access, BenchPlatform, Device};
use crate::{IO_BYTES, NAMESPACE_BLOCKS};

/// The controller type the rig drives.
pub type Ctl = DriverController<BenchPlatform, SimConfig>;

/// A simulated machine with one controller in a hot-plug slot, brought up.
pub struct Rig {
    /// The simulation.
    pub sim: Sim,
    /// The platform the driver uses.
    pub platform: BenchPlatform,
    /// The device that runs deferred doorbells.
    pub device: Device,
    /// The driver (on the heap: its tables are too large to move around
    /// a test thread's stack).
    pub driver: Box<Driver<BenchPlatform, SimConfig>>,
    /// The controller.
    pub id: ControllerId,
    /// One 4 KiB buffer per command slot; `None` while the driver holds it.
    pub buffers: Vec<Option<DmaRegion>>,
}

impl Rig {
    /// Brings a controller up with `queue_depth` entries and shadow
    /// doorbells on or off, and allocates `buffers` I/O buffers.
    pub fn new(shadow_doorbells: bool, queue_depth: u16, buffers: usize) -> Rig {
        let sim = Sim::builder()
            .root_port(true)
            .controller_on_port(
                PortId(0),
                ControllerSpec::default()
                    .serial("bench")
                    .namespace(NamespaceSpec::new(NAMESPACE_BLOCKS, IO_BYTES as u32)),
            )
            .build();
        let (platform, device) = deferred(&sim);
        let config = DriverConfig::default().controller(
            ControllerConfig::default()
                .queue_depth(queue_depth)
                .shadow_doorbells(shadow_doorbells),
        );
        let mut driver = Box::new(Driver::new(platform.clone(), sim.config_access(), config));
        driver.scan().expect("scan");
        let _ = driver.wait_ready(Duration::from_secs(5));
        let id = driver.ready_controllers().next().expect("controller ready");
        let buffers = (0..buffers)
            .map(|_| Some(platform.dma_alloc(IO_BYTES, 4096).expect("buffer")))
            .collect();
        Rig {
            sim,
            platform,
            device,
            driver,
            id,
            buffers,
        }
    }

    /// The controller.
    pub fn controller(&mut self) -> &mut Ctl {
        self.driver.controller(self.id).expect("controller")
    }

    /// A handle on the namespace the measured loops read.
    pub fn namespace(&mut self) -> NamespaceHandle {
        let id = self.id;
        self.driver
            .namespace_handle(Some(id), 1)
            .expect("namespace handle")
    }

    /// Splits the rig into the controller and the buffers.
    pub fn parts(&mut self) -> (&mut Ctl, &mut Vec<Option<DmaRegion>>) {
        let c = self.driver.controller(self.id).expect("controller");
        (c, &mut self.buffers)
    }

    /// Detaches the controller and returns the buffers: afterwards the
    /// simulation should count no live DMA regions.
    pub fn finish(mut self) -> Sim {
        self.controller().detach().expect("detach");
        for b in self.buffers.drain(..).flatten() {
            self.platform.dma_free(b);
        }
        self.sim
    }
}

/// Submits reads of one block at `lbas[i]` into `buffers[first + i]` (tag
/// = buffer index), without ringing: the measured submit.
#[inline(never)]
pub fn measured_submit(
    c: &mut Ctl,
    ns: &NamespaceHandle,
    buffers: &mut [Option<DmaRegion>],
    first: usize,
    lbas: &[u64],
) -> usize {
    let mut submitted = 0;
    for (i, &lba) in lbas.iter().enumerate() {
        let index = first + i;
        let Some(buffer) = buffers[index].take() else {
            break;
        };
        match c.submit_read(QueueId::FIRST, ns, lba, 1, buffer, index as u64) {
            Ok(_) => submitted += 1,
            Err(rejected) => {
                buffers[index] = rejected.buffer;
                break;
            }
        }
    }
    submitted
}

/// Rings the doorbell if needed, consumes completions and puts each buffer
/// back in its slot: the measured poll. Returns the completions delivered;
/// `failed` counts those with an error.
#[inline(never)]
pub fn measured_poll(c: &mut Ctl, buffers: &mut [Option<DmaRegion>], failed: &mut usize) -> usize {
    c.poll(QueueId::FIRST, |done| {
        if done.result.is_err() {
            *failed += 1;
        }
        buffers[done.tag as usize] = done.buffer;
    })
}

/// Runs `rounds` batches of `batch` reads: submit, (device), poll,
/// (device). Returns the completions delivered and how many failed.
pub fn run_batches(rig: &mut Rig, batch: usize, rounds: usize, lbas: &[u64]) -> (usize, usize) {
    let device = rig.device.clone();
    let ns = rig.namespace();
    let (c, buffers) = rig.parts();
    let mut delivered = 0;
    let mut failed = 0;
    for r in 0..rounds {
        let at = (r * batch) % (lbas.len() - batch);
        let submitted = measured_submit(c, &ns, buffers, 0, &lbas[at..at + batch]);
        assert_eq!(submitted, batch, "submission refused");
        // The doorbell is rung by the poll; the device runs after it.
        let mut got = measured_poll(c, buffers, &mut failed);
        while got < batch {
            device.run();
            got += measured_poll(c, buffers, &mut failed);
        }
        device.run();
        delivered += got;
    }
    (delivered, failed)
}

/// Keeps `qd` reads in flight for `ios` completions; returns completions,
/// register accesses and errors (failed commands plus protocol errors).
pub fn stream(shadow: bool, qd: usize, ios: usize, lbas: &[u64]) -> (usize, Access, u64) {
    let mut rig = Rig::new(shadow, 256, qd);
    let device = rig.device.clone();
    let before = rig.platform.access();
    let mut done = 0usize;
    let mut failed = 0u64;
    let mut next = 0usize;
    {
        let (c, buffers) = rig.parts();
        for (i, buffer) in buffers.iter_mut().enumerate().take(qd) {
            let op = IoOp::Read {
                nsid: 1,
                lba: lbas[next % lbas.len()],
                blocks: 1,
            };
            next += 1;
            let _ = c
                .submit(QueueId::FIRST, op, buffer.take(), i as u64)
                .expect("submit");
            c.ring_doorbells();
        }
        let mut ready = Vec::with_capacity(qd);
        while done < ios {
            device.run();
            c.poll(QueueId::FIRST, |d| {
                if d.result.is_err() {
                    failed += 1;
                }
                buffers[d.tag as usize] = d.buffer;
                ready.push(d.tag as usize);
            });
            done += ready.len();
            for i in ready.drain(..) {
                let op = IoOp::Read {
                    nsid: 1,
                    lba: lbas[next % lbas.len()],
                    blocks: 1,
                };
                next += 1;
                let _ = c
                    .submit(QueueId::FIRST, op, buffers[i].take(), i as u64)
                    .expect("submit");
                c.ring_doorbells();
            }
        }
        while c.in_flight() > 0 {
            device.run();
            c.poll(QueueId::FIRST, |d| buffers[d.tag as usize] = d.buffer);
        }
    }
    let a = rig.platform.access().since(before);
    let sim = rig.finish();
    let c = sim.counters();
    assert_eq!(c.dma_regions, 0);
    (done, a, failed + c.protocol_errors)
}
