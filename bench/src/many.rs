//! The tick with many controllers on the simulated machine: every
//! controller in its own hot-plug root port, a driver with room for all of
//! them, and per tick the register reads, configuration reads and host time.

use std::time::{Duration, Instant};

use bare_nvme::QueueId;
use bare_nvme::{ControllerId, Driver, DriverConfig, Event, IoOp, Platform};
use bare_nvme_sim::{ControllerSpec, NamespaceSpec, PortId, Sim, SimConfig, SimPlatform};

/// Controllers the measured driver has room for (and the measurement uses).
pub const CONTROLLERS: usize = 16;

/// The driver with room for [`CONTROLLERS`].
pub type Many = Driver<SimPlatform, SimConfig, CONTROLLERS>;

/// Virtual time between two ticks.
pub const TICK: Duration = Duration::from_millis(1);

/// What the ticks cost.
#[derive(Clone, Debug, Default)]
pub struct TickCost {
    /// Ticks measured.
    pub ticks: u64,
    /// Register reads over all ticks, and the most in one tick.
    pub mmio_reads: u64,
    /// The most register reads in one tick.
    pub mmio_reads_max: u64,
    /// Register writes over all ticks.
    pub mmio_writes: u64,
    /// Configuration reads over all ticks.
    pub config_reads: u64,
    /// The most configuration reads in one tick.
    pub config_reads_max: u64,
    /// Host time of each tick (simulated device included), sorted.
    pub nanos: Vec<u64>,
}

impl TickCost {
    /// Mean of `total` per tick.
    pub fn per_tick(&self, total: u64) -> f64 {
        total as f64 / self.ticks.max(1) as f64
    }

    /// Median host time of one tick.
    pub fn median_nanos(&self) -> u64 {
        self.nanos.get(self.nanos.len() / 2).copied().unwrap_or(0)
    }
}

/// A simulated machine with `n` controllers, one per hot-plug root port, and
/// a driver that brought all of them up. Returns the ready IDs.
pub fn machine(n: usize) -> (Sim, Box<Many>, Vec<ControllerId>) {
    let mut b = Sim::builder();
    for i in 0..n {
        b = b.root_port(true).controller_on_port(
            PortId(i),
            ControllerSpec::default()
                .serial(&format!("many-{i}"))
                .namespace(NamespaceSpec::new(1 << 16, 512)),
        );
    }
    let sim = b.build();
    let mut d: Box<Many> = Box::new(Driver::new(
        sim.platform(),
        sim.config_access(),
        DriverConfig::default(),
    ));
    assert_eq!(d.scan().expect("scan"), n, "attached");
    let mut ready = Vec::new();
    for _ in 0..10_000 {
        sim.advance(TICK);
        for e in d.tick() {
            match e {
                Event::Ready { id, .. } => ready.push(id),
                Event::Attached { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        if ready.len() == n {
            break;
        }
    }
    assert_eq!(ready.len(), n, "ready");
    // Settle: nothing left over from the bring-up.
    for _ in 0..20 {
        sim.advance(TICK);
        assert!(d.tick().is_empty());
    }
    (sim, d, ready)
}

/// One read on `id`, polled until it completed.
fn one_read(d: &mut Many, sim: &Sim, id: ControllerId, tag: u64) {
    let p = sim.platform();
    let buf = p.dma_alloc(512, 4096).expect("buffer");
    let c = d.controller(id).expect("controller");
    let op = IoOp::Read {
        nsid: 1,
        lba: tag % 64,
        blocks: 1,
    };
    let _ = c
        .submit(QueueId::FIRST, op, Some(buf), tag)
        .expect("submit");
    let mut done = None;
    for _ in 0..10 {
        c.poll(QueueId::FIRST, |comp| done = Some(comp));
        if done.is_some() {
            break;
        }
        sim.process();
    }
    let done = done.expect("completed");
    done.result.expect("read");
    p.dma_free(done.buffer.expect("buffer back"));
}

/// Ticks `ticks` times, one [`TICK`] of virtual time apart; with `busy`,
/// every controller completes one read between two ticks. Fails on any
/// event.
pub fn measure(d: &mut Many, sim: &Sim, ids: &[ControllerId], ticks: u64, busy: bool) -> TickCost {
    let mut cost = TickCost {
        ticks,
        ..TickCost::default()
    };
    for t in 0..ticks {
        if busy {
            for &id in ids {
                one_read(d, sim, id, t);
            }
        }
        sim.advance(TICK);
        let before = sim.counters();
        let start = Instant::now();
        let events = d.tick();
        let nanos = start.elapsed().as_nanos() as u64;
        let after = sim.counters();
        assert!(events.is_empty(), "tick {t}: {events:?}");
        let reads = after.mmio_reads - before.mmio_reads;
        let config = after.config_reads - before.config_reads;
        cost.mmio_reads += reads;
        cost.mmio_reads_max = cost.mmio_reads_max.max(reads);
        cost.mmio_writes += after.mmio_writes - before.mmio_writes;
        cost.config_reads += config;
        cost.config_reads_max = cost.config_reads_max.max(config);
        cost.nanos.push(nanos);
    }
    cost.nanos.sort_unstable();
    cost
}

/// Detaches every controller; afterwards the simulation holds no DMA.
pub fn finish(mut d: Box<Many>, sim: Sim, ids: &[ControllerId]) {
    for &id in ids {
        d.controller(id)
            .expect("controller")
            .detach()
            .expect("detach");
    }
    drop(d);
    let c = sim.counters();
    assert_eq!(c.protocol_errors, 0, "{:?}", sim.protocol_log());
    assert_eq!(c.dma_regions, 0, "DMA regions outstanding");
}
