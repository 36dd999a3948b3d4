//! A device that acts on doorbells later, not inside the write.
//!
//! The simulated controller runs submitted commands inside the doorbell
//! write. Real controllers (and QEMU) see a posted write and get to it some
//! time later, while the CPU carries on. [`BenchPlatform`] wraps the
//! simulation's platform so that I/O doorbell writes are only recorded (a
//! store, as on hardware) and reach the simulated controller when the test
//! calls [`Device::run`], together with the background work of
//! `Sim::process` (shadow doorbells). Two things follow:
//!
//! - measured driver code does not include the device's work, and
//! - with shadow doorbells, EventIdx lags while the device has not run, as
//!   on a busy controller, so the EventIdx rule can save MMIO writes.
//!
//! Every register access is counted here, deferred or not. The clock can be
//! frozen to a cheap read for measured regions (the simulation's clock
//! borrows its whole state).

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use bare_nvme::nvme::regs;
use bare_nvme::{DmaRegion, Instant, PhysAddr, Platform, RegisterAccess};
use bare_nvme_sim::{Sim, SimPlatform, SimRegisters};

/// Doorbell registers that are deferred: SQ/CQ of queues 1..=DEFERRED_QUEUES
/// (DSTRD 0, the simulation's default). The admin queue's doorbells go
/// straight through, so bring-up works as usual.
const DEFERRED_QUEUES: usize = 8;
const FIRST_DEFERRED: usize = regs::DOORBELL_BASE + 8;
const SLOTS: usize = 2 * DEFERRED_QUEUES;

/// Register access counts seen by the wrapper.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Access {
    /// 32-bit register reads.
    pub reads: u64,
    /// 32-bit register writes (doorbells included).
    pub writes: u64,
    /// SQ tail doorbell writes.
    pub sq_doorbells: u64,
    /// CQ head doorbell writes.
    pub cq_doorbells: u64,
}

struct Shared {
    deferring: Cell<bool>,
    pending: [Cell<u32>; SLOTS],
    pending_mask: Cell<u32>,
    reads: Cell<u64>,
    writes: Cell<u64>,
    sq_doorbells: Cell<u64>,
    cq_doorbells: Cell<u64>,
    frozen_clock: Cell<Option<u64>>,
    /// The latest mapping of BAR0, to forward doorbells through.
    mapping: RefCell<Option<SimRegisters>>,
}

/// The simulation's platform with deferred I/O doorbells and counters.
#[derive(Clone)]
pub struct BenchPlatform {
    inner: SimPlatform,
    shared: Rc<Shared>,
}

/// Registers of a [`BenchPlatform`] mapping.
pub struct BenchRegisters {
    inner: SimRegisters,
    shared: Rc<Shared>,
}

/// The device side: runs what the recorded doorbells announced.
#[derive(Clone)]
pub struct Device {
    sim: Sim,
    shared: Rc<Shared>,
}

/// A [`BenchPlatform`] over `sim` and the [`Device`] that serves it.
pub fn deferred(sim: &Sim) -> (BenchPlatform, Device) {
    let shared = Rc::new(Shared {
        deferring: Cell::new(true),
        pending: [const { Cell::new(0) }; SLOTS],
        pending_mask: Cell::new(0),
        reads: Cell::new(0),
        writes: Cell::new(0),
        sq_doorbells: Cell::new(0),
        cq_doorbells: Cell::new(0),
        frozen_clock: Cell::new(None),
        mapping: RefCell::new(None),
    });
    let platform = BenchPlatform {
        inner: sim.platform(),
        shared: shared.clone(),
    };
    let device = Device {
        sim: sim.clone(),
        shared,
    };
    (platform, device)
}

impl Access {
    /// The accesses made since `earlier`.
    pub fn since(self, earlier: Access) -> Access {
        Access {
            reads: self.reads - earlier.reads,
            writes: self.writes - earlier.writes,
            sq_doorbells: self.sq_doorbells - earlier.sq_doorbells,
            cq_doorbells: self.cq_doorbells - earlier.cq_doorbells,
        }
    }
}

impl BenchPlatform {
    /// Counts so far.
    pub fn access(&self) -> Access {
        let s = &self.shared;
        Access {
            reads: s.reads.get(),
            writes: s.writes.get(),
            sq_doorbells: s.sq_doorbells.get(),
            cq_doorbells: s.cq_doorbells.get(),
        }
    }

    /// Freezes the clock at the simulation's current time (`true`), so that
    /// `now()` is one cheap read, or lets it run again (`false`).
    pub fn freeze_clock(&self, frozen: bool) {
        let now = if frozen {
            Some(self.inner.now().as_nanos())
        } else {
            None
        };
        self.shared.frozen_clock.set(now);
    }

    /// Whether I/O doorbells are deferred (the default) or reach the
    /// simulated controller at once.
    pub fn set_deferring(&self, on: bool) {
        self.shared.deferring.set(on);
    }
}

impl Platform for BenchPlatform {
    type Registers = BenchRegisters;

    fn dma_alloc(&self, len: usize, align: usize) -> Option<DmaRegion> {
        self.inner.dma_alloc(len, align)
    }

    fn dma_free(&self, region: DmaRegion) {
        self.inner.dma_free(region)
    }

    fn map_registers(&self, phys: PhysAddr, len: usize) -> Option<BenchRegisters> {
        let inner = self.inner.map_registers(phys, len)?;
        *self.shared.mapping.borrow_mut() = Some(inner.clone());
        Some(BenchRegisters {
            inner,
            shared: self.shared.clone(),
        })
    }

    fn now(&self) -> Instant {
        match self.shared.frozen_clock.get() {
            Some(t) => Instant::from_nanos(t),
            None => self.inner.now(),
        }
    }
}

impl RegisterAccess for BenchRegisters {
    fn read32(&self, offset: usize) -> u32 {
        let s = &self.shared;
        s.reads.set(s.reads.get() + 1);
        self.inner.read32(offset)
    }

    fn write32(&self, offset: usize, value: u32) {
        let s = &self.shared;
        s.writes.set(s.writes.get() + 1);
        let slot = offset.wrapping_sub(FIRST_DEFERRED) / 4;
        if offset >= regs::DOORBELL_BASE && (offset - regs::DOORBELL_BASE) % 8 == 4 {
            s.cq_doorbells.set(s.cq_doorbells.get() + 1);
        } else if offset >= regs::DOORBELL_BASE {
            s.sq_doorbells.set(s.sq_doorbells.get() + 1);
        }
        if s.deferring.get() && offset >= FIRST_DEFERRED && slot < SLOTS {
            s.pending[slot].set(value);
            s.pending_mask.set(s.pending_mask.get() | 1 << slot);
            return;
        }
        self.inner.write32(offset, value);
    }
}

impl Device {
    /// The device's turn: the recorded doorbell writes arrive (the latest
    /// value of each; completion heads before submission tails, so a head
    /// never goes back behind what the device already read from a shadow
    /// slot), then the background work of shadow doorbells.
    pub fn run(&self) {
        let mask = self.shared.pending_mask.replace(0);
        if mask != 0 {
            let mapping = self.shared.mapping.borrow();
            if let Some(r) = mapping.as_ref() {
                for is_cq in [true, false] {
                    for slot in 0..SLOTS {
                        if mask & (1 << slot) != 0 && (slot % 2 == 1) == is_cq {
                            let value = self.shared.pending[slot].get();
                            r.write32(FIRST_DEFERRED + slot * 4, value);
                        }
                    }
                }
            }
        }
        self.sim.process();
    }

    /// The simulation behind the device.
    pub fn sim(&self) -> &Sim {
        &self.sim
    }
}
