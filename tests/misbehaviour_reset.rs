//! A controller that changes what it reports across a reset, while commands
//! failed by that reset still wait to be collected: the controller is given
//! up with the field named, every one of those commands is still delivered
//! once, with its buffer, and no memory is lost.

mod misbehaviour_common;

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use bare_nvme::nvme::regs;
use bare_nvme::QueueId;
use bare_nvme::{
    DmaRegion, Driver, Error, Instant, IoOp, PhysAddr, Platform, RegisterAccess, State, Wait,
};
use bare_nvme_sim::{CtrlId, Misbehaviour, Sim, SimPlatform, SimRegisters};
use misbehaviour_common::*;

/// The sim's platform, with a CAP.MQES that can be changed under the driver.
#[derive(Clone)]
struct Fickle {
    inner: SimPlatform,
    mqes: Rc<Cell<Option<u16>>>,
}

struct FickleRegisters {
    inner: SimRegisters,
    mqes: Rc<Cell<Option<u16>>>,
}

impl Platform for Fickle {
    type Registers = FickleRegisters;
    fn dma_alloc(&self, len: usize, align: usize) -> Option<DmaRegion> {
        self.inner.dma_alloc(len, align)
    }
    fn dma_free(&self, region: DmaRegion) {
        self.inner.dma_free(region)
    }
    fn map_registers(&self, phys: PhysAddr, len: usize) -> Option<FickleRegisters> {
        Some(FickleRegisters {
            inner: self.inner.map_registers(phys, len)?,
            mqes: self.mqes.clone(),
        })
    }
    fn now(&self) -> Instant {
        self.inner.now()
    }
}

impl RegisterAccess for FickleRegisters {
    fn read32(&self, offset: usize) -> u32 {
        let value = self.inner.read32(offset);
        match self.mqes.get() {
            Some(mqes) if offset == regs::CAP => value & !0xFFFF | u32::from(mqes),
            _ => value,
        }
    }
    fn write32(&self, offset: usize, value: u32) {
        self.inner.write32(offset, value)
    }
}

#[test]
fn commands_failed_by_a_reset_survive_a_changed_queue_geometry() {
    let sim = Sim::single(spec());
    let mqes = Rc::new(Cell::new(None));
    let platform = Fickle {
        inner: sim.platform(),
        mqes: mqes.clone(),
    };
    let mut driver = Box::new(Driver::<_, _>::new(platform, sim.config_access(), config()));
    driver.scan().unwrap();
    let end = sim.now() + Duration::from_secs(5);
    while driver.ready_controllers().next().is_none() && sim.now() < end {
        let _ = driver.tick();
        sim.advance(Duration::from_millis(1));
    }
    let id = driver.ready_controllers().next().expect("ready");
    // Commands an abort cannot end: the recovery has to reset.
    sim.misbehave(CtrlId(0), Misbehaviour::NeverComplete.always());
    let c = driver.controller(id).unwrap();
    assert_eq!(c.queue_depth(), 128);
    for tag in 0..3 {
        let buf = sim.platform().dma_alloc(512, 4096).unwrap();
        let op = IoOp::Read {
            nsid: 1,
            lba: tag,
            blocks: 1,
        };
        let _ = c.submit(QueueId::FIRST, op, Some(buf), tag).unwrap();
    }
    c.ring_doorbells();
    // From now on the controller claims 16-entry queues at most.
    mqes.set(Some(15));
    sim.advance(IO_TIMEOUT * 2);
    for _ in 0..1000 {
        let _ = driver.tick();
        if driver.controller(id).unwrap().state() != State::Ready {
            break;
        }
        sim.advance(Duration::from_millis(1));
    }
    assert_eq!(driver.controller(id).unwrap().state(), State::Resetting);
    sim.behave(CtrlId(0));
    // Bring-up runs again before the caller polls.
    let end = sim.now() + Duration::from_secs(5);
    while !matches!(
        driver.controller(id).unwrap().state(),
        State::Ready | State::Failed
    ) && sim.now() < end
    {
        let _ = driver.tick();
        sim.advance(Duration::from_millis(1));
    }
    let c = driver.controller(id).unwrap();
    assert_eq!(c.state(), State::Failed);
    assert!(
        matches!(
            c.failure(),
            Some(Error::BadDeviceValue {
                field: "queue geometry after reset",
                ..
            })
        ),
        "{:?}",
        c.failure()
    );
    let mut seen = Vec::new();
    for q in 0..c.io_queue_count() {
        c.poll(QueueId::new(q), |done| seen.push(done));
    }
    let mut tags: Vec<u64> = seen.iter().map(|d| d.tag).collect();
    tags.sort();
    assert_eq!(tags, [0, 1, 2], "each command delivered once");
    for done in seen {
        assert!(
            matches!(
                done.result,
                Err(Error::Timeout {
                    what: Wait::IoCommand,
                    ..
                })
            ),
            "{:?}",
            done.result
        );
        sim.platform().dma_free(done.buffer.expect("buffer back"));
    }
    let _ = driver.begin_detach(id);
    for _ in 0..2000 {
        let _ = driver.tick();
        sim.advance(Duration::from_millis(1));
    }
    drop(driver);
    assert_eq!(sim.counters().dma_regions, 0, "DMA memory leaked");
}
