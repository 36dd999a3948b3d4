//! Faults by access index, controller faults, held commands, Abort, SQ
//! deletion, and corrupted completions.

mod common;

use bare_nvme::nvme::command::{admin, cns, nvm, sc, SubmissionEntry};
use bare_nvme::nvme::regs;
use bare_nvme::RegisterAccess;
use bare_nvme_sim::{ControllerSpec, CtrlId, Fault, Hold, Misbehaviour, PortId, Queues, Sim};
use common::*;

fn spec() -> ControllerSpec {
    ControllerSpec::with_blocks(1024)
        .serial("f")
        .max_ioqpairs(2)
}

fn flush() -> SubmissionEntry {
    let mut e = SubmissionEntry::new(nvm::FLUSH);
    e.nsid = 1;
    e
}

/// Bring-up, Identify, queue creation and one I/O, then the release
/// (which disables the controller). Returns the outcome and the accesses
/// made before the release.
fn scenario(sim: &Sim) -> (R<()>, u64) {
    let mut m = match Mini::bring_up(sim) {
        Ok(m) => m,
        Err(e) => return (Err(e), sim.access_count()),
    };
    let mut e = SubmissionEntry::new(admin::IDENTIFY);
    e.cdw10 = cns::CONTROLLER;
    let r = m.admin_page(e).and_then(|(c, _)| ok(c));
    let r = r
        .and_then(|_| m.create_io(4))
        .and_then(|_| m.cmd(true, flush()))
        .and_then(ok);
    let before_release = sim.access_count();
    m.release();
    (r.map(|_| ()), before_release)
}

#[test]
fn removal_swept_over_every_access_of_a_scenario() {
    let clean = Sim::single(spec());
    let (r, total) = scenario(&clean);
    r.unwrap();
    assert!(total > 20, "{total} accesses");
    for n in 0..=total {
        let sim = Sim::single(spec());
        sim.on_access(n, Fault::SurpriseRemove(CtrlId(0)));
        let (r, _) = scenario(&sim);
        // The last access acknowledges the last completion: too late to matter.
        assert_eq!(
            r.is_ok(),
            n + 1 >= total,
            "removal before access {n}: {r:?}"
        );
        let c = sim.counters();
        assert_eq!(c.dma_regions, 0);
        assert_eq!(c.protocol_errors, 0, "at {n}: {:?}", sim.protocol_log());
        // At `total` the removal hits the release.
        assert!(!sim.is_present(CtrlId(0)));
    }
}

#[test]
fn access_index_counts_config_and_register_accesses_together() {
    let sim = Sim::single(spec());
    let cfg = sim.config_access();
    assert_eq!(sim.access_count(), 0);
    cfg_read(&cfg, addr(0, 0), 0);
    let (_, _, regs, _) = Mini::map(&sim).unwrap();
    let before = sim.access_count();
    sim.on_access(before + 1, Fault::SetCfs(CtrlId(0)));
    assert_eq!(regs.read32(regs::CSTS) & 2, 0);
    assert_eq!(
        regs.read32(regs::CSTS) & 2,
        2,
        "CFS from the indexed access on"
    );
    let c = sim.counters();
    assert_eq!(
        c.config_reads + c.config_writes + c.mmio(),
        sim.access_count()
    );
}

#[test]
fn cfs_and_hang_stop_processing_and_reset_clears_cfs() {
    let sim = Sim::single(spec());
    let mut m = Mini::bring_up(&sim).unwrap();
    sim.set_cfs(CtrlId(0));
    m.submit(false, SubmissionEntry::new(admin::GET_FEATURES));
    assert!(m.reap(false).is_err());
    m.regs.write32(regs::CC, 0);
    assert_eq!(m.regs.read32(regs::CSTS), 0);
    m.release();

    let sim = Sim::single(spec());
    let m = Mini::bring_up(&sim).unwrap();
    sim.hang(CtrlId(0));
    m.regs.write32(regs::CC, 0);
    assert_eq!(m.regs.read32(regs::CSTS) & 1, 1, "RDY frozen");
    assert_eq!(m.regs.read32(regs::VS), 0x0001_0400, "registers still read");
    sim.unhang(CtrlId(0));
    assert_eq!(m.regs.read32(regs::CSTS) & 1, 0);
    m.release();
}

#[test]
fn nssr_fault_and_link_down_fault() {
    let sim = Sim::single(spec());
    let m = Mini::bring_up(&sim).unwrap();
    sim.on_access(sim.access_count(), Fault::NssrOccurred(CtrlId(0)));
    assert_eq!(m.regs.read32(regs::CSTS), regs::Csts::NSSRO.bits());
    sim.on_access(sim.access_count(), Fault::LinkDown(PortId(0)));
    assert_eq!(m.regs.read32(regs::VS), 0);
    m.release();
}

#[test]
fn held_commands_complete_on_request_and_can_be_aborted() {
    let sim = Sim::single(spec().hold(Hold::Io));
    let mut m = Mini::bring_up(&sim).unwrap();
    m.create_io(8).unwrap();
    let a = m.submit(true, flush());
    let b = m.submit(true, flush());
    let c = m.submit(true, flush());
    assert_eq!(sim.held_count(), 3);
    assert!(m.io.as_ref().unwrap().peek().is_none());
    assert_eq!(sim.complete_held(1), 1);
    assert_eq!(ok(m.reap(true).unwrap()).unwrap().cid, a);
    // Abort b: it completes with Abort Requested, Abort reports dw0 bit 0 = 0.
    let mut e = SubmissionEntry::new(admin::ABORT);
    e.cdw10 = 1 | (b as u32) << 16;
    assert_eq!(ok(m.cmd(false, e).unwrap()).unwrap().dw0 & 1, 0);
    let r = m.reap(true).unwrap();
    assert_eq!((r.cid, r.status().sc), (b, sc::ABORT_REQUESTED));
    // Aborting a completed command does nothing.
    e.cdw10 = 1 | (a as u32) << 16;
    assert_eq!(ok(m.cmd(false, e).unwrap()).unwrap().dw0 & 1, 1);
    // Deleting the SQ aborts c.
    let mut e = SubmissionEntry::new(admin::DELETE_SQ);
    e.cdw10 = 1;
    ok(m.cmd(false, e).unwrap()).unwrap();
    let r = m.reap(true).unwrap();
    assert_eq!((r.cid, r.status().sc), (c, sc::ABORTED_SQ_DELETION));
    assert_eq!(sim.held_count(), 0);
    assert_eq!(
        sim.counters().protocol_errors,
        0,
        "{:?}",
        sim.protocol_log()
    );
    m.release();
}

fn io_ready() -> (Sim, Mini) {
    let sim = Sim::single(spec());
    let mut m = Mini::bring_up(&sim).unwrap();
    m.create_io(8).unwrap();
    (sim, m)
}

#[test]
fn never_complete_and_complete_twice() {
    let (sim, mut m) = io_ready();
    sim.misbehave(CtrlId(0), Misbehaviour::NeverComplete.once());
    m.submit(true, flush());
    assert!(m.reap(true).is_err());
    ok(m.cmd(true, flush()).unwrap()).unwrap();
    sim.misbehave(CtrlId(0), Misbehaviour::CompleteTwice.once());
    let cid = m.submit(true, flush());
    assert_eq!(m.reap(true).unwrap().cid, cid);
    assert_eq!(m.reap(true).unwrap().cid, cid);
    m.release();
}

#[test]
fn corrupted_completion_fields() {
    let (sim, mut m) = io_ready();
    let prev = m.cmd(true, flush()).unwrap().cid;
    sim.misbehave(CtrlId(0), Misbehaviour::StaleCid.once());
    m.submit(true, flush());
    assert_eq!(m.reap(true).unwrap().cid, prev);
    sim.misbehave(CtrlId(0), Misbehaviour::UnknownCid.once());
    let cid = m.submit(true, flush());
    assert_ne!(m.reap(true).unwrap().cid, cid);
    sim.misbehave(CtrlId(0), Misbehaviour::WrongSqId.once());
    m.submit(true, flush());
    assert_eq!(m.reap(true).unwrap().sq_id, 2);
    sim.misbehave(CtrlId(0), Misbehaviour::SqHeadOutOfRange.once());
    m.submit(true, flush());
    assert!(m.reap(true).unwrap().sq_head >= 8);
    // Admin rules leave I/O alone.
    sim.misbehave(CtrlId(0), Misbehaviour::WrongSqId.once().on(Queues::Admin));
    ok(m.cmd(true, flush()).unwrap()).unwrap();
    let r = m
        .cmd(false, SubmissionEntry::new(admin::GET_FEATURES))
        .unwrap();
    assert_eq!(r.sq_id, 1);
    m.release();
}

#[test]
fn wrong_phase_hides_the_completion() {
    let (sim, mut m) = io_ready();
    sim.misbehave(CtrlId(0), Misbehaviour::WrongPhase.once());
    m.submit(true, flush());
    assert!(m.reap(true).is_err());
    assert_eq!(
        sim.counters().completions_posted,
        4,
        "written, with the old phase"
    );
    m.release();
}
