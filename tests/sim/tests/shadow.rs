//! Doorbell Buffer Config: shadow doorbells and EventIdx, as QEMU 7.2 runs
//! them.

mod common;

use bare_nvme::nvme::command::{admin, nvm, SubmissionEntry};
use bare_nvme::nvme::regs;
use bare_nvme::{DmaRegion, Platform, RegisterAccess};
use bare_nvme_sim::{ControllerSpec, CtrlId, Sim};
use common::*;

fn u32_at(r: &DmaRegion, at: usize) -> u32 {
    u32::from_le_bytes(r.as_slice()[at..at + 4].try_into().unwrap())
}

fn set_u32(r: &mut DmaRegion, at: usize, v: u32) {
    r.as_mut_slice()[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn flush() -> SubmissionEntry {
    let mut e = SubmissionEntry::new(nvm::FLUSH);
    e.nsid = 1;
    e
}

/// SQ 1 tail and CQ 1 head slots for DSTRD 0.
const SQ1: usize = 8;
const CQ1: usize = 12;

fn configured() -> (Sim, Mini, DmaRegion, DmaRegion) {
    let sim = Sim::single(ControllerSpec::with_blocks(64));
    let mut m = Mini::bring_up(&sim).unwrap();
    m.create_io(8).unwrap();
    ok(m.cmd(true, flush()).unwrap()).unwrap();
    let dbs = m.p.dma_alloc(4096, 4096).unwrap();
    let eis = m.p.dma_alloc(4096, 4096).unwrap();
    let mut e = SubmissionEntry::new(admin::DOORBELL_BUFFER_CONFIG);
    e.prp1 = dbs.phys().as_u64();
    e.prp2 = eis.phys().as_u64();
    ok(m.cmd(false, e).unwrap()).unwrap();
    assert!(sim.shadow_doorbells_active(CtrlId(0)));
    (sim, m, dbs, eis)
}

#[test]
fn configuration_seeds_the_buffers_with_current_values() {
    let (sim, m, dbs, eis) = configured();
    assert_eq!((u32_at(&dbs, SQ1), u32_at(&dbs, CQ1)), (1, 1));
    assert_eq!((u32_at(&eis, SQ1), u32_at(&eis, CQ1)), (1, 1));
    let p = m.p.clone();
    m.release();
    p.dma_free(dbs);
    p.dma_free(eis);
    assert_eq!(sim.counters().protocol_errors, 0);
}

#[test]
fn background_processing_reads_shadow_tails_and_heads() {
    let (sim, mut m, mut dbs, eis) = configured();
    sim.reset_counters();
    // Two submissions announced only in the shadow buffer.
    let q = m.io.as_mut().unwrap();
    let mut e = flush();
    e.set_cid(100);
    q.push(&e);
    e.set_cid(101);
    q.push(&e);
    set_u32(&mut dbs, SQ1, q.tail as u32);
    assert!(q.peek().is_none(), "nothing runs before the device looks");
    sim.process();
    assert_eq!(u32_at(&eis, SQ1), 3, "EventIdx = the tail consumed");
    let a = q.pop().unwrap();
    let b = q.pop().unwrap();
    assert_eq!((a.cid, b.cid), (100, 101));
    set_u32(&mut dbs, CQ1, q.head as u32);
    sim.process();
    assert_eq!(u32_at(&eis, CQ1), 3);
    let c = sim.counters();
    assert_eq!((c.mmio_writes, c.io(nvm::FLUSH)), (0, 2));
    let p = m.p.clone();
    m.release();
    p.dma_free(dbs);
    p.dma_free(eis);
    assert_eq!(
        sim.counters().protocol_errors,
        0,
        "{:?}",
        sim.protocol_log()
    );
}

#[test]
fn mmio_doorbells_also_consult_the_shadow_buffer() {
    let (sim, mut m, mut dbs, eis) = configured();
    let q = m.io.as_mut().unwrap();
    q.push(&flush());
    set_u32(&mut dbs, SQ1, q.tail as u32);
    let tail = q.tail;
    m.regs.write32(regs::sq_tail_doorbell(1, 0), tail as u32);
    assert_eq!(u32_at(&eis, SQ1), 2);
    let q = m.io.as_mut().unwrap();
    assert!(q.pop().is_some());
    set_u32(&mut dbs, CQ1, q.head as u32);
    let head = q.head;
    m.regs.write32(regs::cq_head_doorbell(1, 0), head as u32);
    assert_eq!(u32_at(&eis, CQ1), 2);
    let p = m.p.clone();
    m.release();
    p.dma_free(dbs);
    p.dma_free(eis);
    assert_eq!(
        sim.counters().protocol_errors,
        0,
        "{:?}",
        sim.protocol_log()
    );
}

#[test]
fn shadow_values_out_of_range_are_protocol_errors() {
    let (sim, m, mut dbs, eis) = configured();
    sim.expect_protocol_errors();
    set_u32(&mut dbs, SQ1, 99);
    sim.process();
    assert!(sim.counters().protocol_errors >= 1);
    let p = m.p.clone();
    m.release();
    p.dma_free(dbs);
    p.dma_free(eis);
}

#[test]
fn unsupported_without_oacs_bit() {
    let sim = Sim::single(ControllerSpec::with_blocks(8).shadow_doorbells(false));
    let mut m = Mini::bring_up(&sim).unwrap();
    let c = m
        .cmd(false, SubmissionEntry::new(admin::DOORBELL_BUFFER_CONFIG))
        .unwrap();
    assert_eq!(c.status().sc, bare_nvme::nvme::command::sc::INVALID_OPCODE);
    m.release();
}
