//! Memory handed back while the device can still write it: counted at
//! `dma_free` and when a completion returns a buffer to its caller, device
//! writes into a buffer its caller owns again, and the check every
//! simulation ends with.

mod common;

use std::time::Duration;

use bare_nvme::nvme::command::{admin, nvm, sc, SubmissionEntry};
use bare_nvme::nvme::regs;
use bare_nvme::{DmaRegion, Platform, RegisterAccess};
use bare_nvme_sim::{ControllerSpec, CtrlId, Hold, Sim};
use common::*;

const C: CtrlId = CtrlId(0);

fn spec() -> ControllerSpec {
    ControllerSpec::with_blocks(64).serial("q")
}

fn held_io(spec: ControllerSpec) -> (Sim, Mini) {
    let sim = Sim::single(spec.hold(Hold::Io));
    let mut m = Mini::bring_up(&sim).unwrap();
    m.create_io(8).unwrap();
    (sim, m)
}

/// A held read of `blocks` blocks into a fresh buffer with PRPs built by
/// hand; returns the buffer and the PRP list page (if more than two pages).
fn held_read(m: &mut Mini, blocks: u16) -> (DmaRegion, Option<DmaRegion>) {
    let len = blocks as usize * 512;
    let buf = m.p.dma_alloc(len, 4096).unwrap();
    let b = buf.phys().as_u64();
    let pages = len.div_ceil(4096) as u64;
    let (prp2, list) = match pages {
        1 => (0, None),
        2 => (b + 4096, None),
        _ => {
            let mut list = m.p.dma_alloc(4096, 4096).unwrap();
            for i in 1..pages {
                let at = (i as usize - 1) * 8;
                list.as_mut_slice()[at..at + 8].copy_from_slice(&(b + i * 4096).to_le_bytes());
            }
            (list.phys().as_u64(), Some(list))
        }
    };
    m.submit(true, rw(nvm::READ, 1, 0, blocks, b, prp2));
    (buf, list)
}

fn freed(sim: &Sim) -> u64 {
    sim.counters().freed_while_dma_possible
}

fn log_has(sim: &Sim, what: &str) -> bool {
    sim.protocol_log().iter().any(|l| l.contains(what))
}

#[test]
fn freeing_the_rings_of_a_running_controller_is_counted() {
    let sim = Sim::single(spec());
    let m = Mini::bring_up(&sim).unwrap();
    m.abandon();
    assert_eq!(freed(&sim), 2, "{:?}", sim.protocol_log());
    assert!(log_has(&sim, "SQ 0 ring") && log_has(&sim, "CQ 0 ring"));
    assert_eq!(sim.counters().protocol_errors, 0, "not a protocol error");
    sim.reset_counters();
    assert_eq!(freed(&sim), 2, "kept across a counter reset");
    assert!(log_has(&sim, "SQ 0 ring"), "with its log lines");
    assert!(!sim.violations().is_empty());
    sim.unchecked();
}

#[test]
fn freeing_is_fine_once_the_device_cannot_dma() {
    // Disabled and not ready.
    let sim = Sim::single(spec());
    Mini::bring_up(&sim).unwrap().release();
    assert_eq!(freed(&sim), 0);
    // Bus mastering off, controller still enabled.
    let sim = Sim::single(spec());
    let m = Mini::bring_up(&sim).unwrap();
    cfg_write(&m.cfg, sim.address(C).unwrap(), 4, 0x0002);
    m.abandon();
    assert_eq!(freed(&sim), 0);
    // Removed.
    let sim = Sim::single(spec());
    let m = Mini::bring_up(&sim).unwrap();
    sim.surprise_remove(C);
    m.abandon();
    assert_eq!(freed(&sim), 0);
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}

#[test]
fn freeing_memory_of_a_held_command_is_counted_until_rdy_drops() {
    let delay = Duration::from_millis(5);
    let (sim, mut m) = held_io(spec().disable_delay(delay));
    // Four pages each: data pages and a PRP list page.
    let (a, a_list) = held_read(&mut m, 32);
    let (b, b_list) = held_read(&mut m, 32);
    m.p.dma_free(a_list.unwrap());
    assert_eq!(freed(&sim), 1, "PRP list page");
    assert!(log_has(&sim, "held command"));
    m.p.dma_free(a);
    assert_eq!(freed(&sim), 2, "data pages, found without the list");
    // Disabled, but RDY still set: the commands may still complete.
    m.regs.write32(regs::CC, 0);
    m.p.dma_free(b);
    assert_eq!(freed(&sim), 3, "data pages while RDY is still set");
    sim.advance(delay);
    assert_eq!(m.regs.read32(regs::CSTS) & 1, 0);
    m.p.dma_free(b_list.unwrap());
    m.abandon();
    assert_eq!(freed(&sim), 3, "nothing referenced once RDY dropped");
    sim.unchecked();
}

#[test]
fn freeing_shadow_doorbell_pages_in_use_is_counted() {
    let sim = Sim::single(spec());
    let mut m = Mini::bring_up(&sim).unwrap();
    m.create_io(8).unwrap();
    let dbs = m.p.dma_alloc(4096, 4096).unwrap();
    let eis = m.p.dma_alloc(4096, 4096).unwrap();
    let mut e = SubmissionEntry::new(admin::DOORBELL_BUFFER_CONFIG);
    e.prp1 = dbs.phys().as_u64();
    e.prp2 = eis.phys().as_u64();
    ok(m.cmd(false, e).unwrap()).unwrap();
    m.p.dma_free(dbs);
    m.p.dma_free(eis);
    assert_eq!(freed(&sim), 2);
    assert!(log_has(&sim, "shadow doorbell page") && log_has(&sim, "EventIdx page"));
    m.release();
    sim.unchecked();
}

#[test]
fn a_buffer_returned_while_its_command_is_held_is_counted() {
    let (sim, mut m) = held_io(spec());
    let (buf, _) = held_read(&mut m, 1);
    sim.caller_owns(&buf);
    assert_eq!(freed(&sim), 1);
    assert!(log_has(&sim, "returned to its caller"));
    m.release();
    m_free(&sim, buf);
    sim.unchecked();
}

fn m_free(sim: &Sim, r: DmaRegion) {
    sim.platform().dma_free(r);
}

#[test]
fn a_device_write_into_a_buffer_the_caller_owns_is_wild_dma() {
    let (sim, mut m) = held_io(spec());
    let (buf, _) = held_read(&mut m, 1);
    // Bus mastering off: handing the buffer back looks safe at that moment.
    let a = sim.address(C).unwrap();
    cfg_write(&m.cfg, a, 4, 0x0002);
    sim.caller_owns(&buf);
    assert_eq!(freed(&sim), 0);
    // Bus mastering comes back and the held command completes into it.
    cfg_write(&m.cfg, a, 4, 0x0406);
    sim.write_block(C, 1, 0, &[0x77; 512]);
    assert_eq!(sim.complete_held(1), 1);
    assert_eq!(sim.counters().wild_dma, 1);
    assert!(log_has(&sim, "write into memory the caller owns"));
    assert!(
        buf.as_slice().iter().all(|&b| b == 0),
        "write not performed"
    );
    let c = m.reap(true).unwrap();
    assert_eq!(c.status().sc, sc::DATA_TRANSFER_ERROR);
    m.release();
    m_free(&sim, buf);
    sim.unchecked();
}

#[test]
fn a_new_command_naming_the_buffer_gives_it_back_to_the_device() {
    let sim = Sim::single(spec());
    let mut m = Mini::bring_up(&sim).unwrap();
    m.create_io(8).unwrap();
    let buf = m.p.dma_alloc(512, 4096).unwrap();
    sim.caller_owns(&buf);
    sim.write_block(C, 1, 0, &[0x33; 512]);
    let c = m
        .cmd(true, rw(nvm::READ, 1, 0, 1, buf.phys().as_u64(), 0))
        .unwrap();
    ok(c).unwrap();
    assert_eq!(buf.as_slice(), &[0x33; 512]);
    m.p.dma_free(buf);
    m.shut_down().unwrap();
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}

#[test]
#[should_panic(expected = "handed back while the device could still write them")]
fn the_end_check_fires_on_a_freed_ring_of_a_running_controller() {
    let sim = Sim::single(spec());
    Mini::bring_up(&sim).unwrap().abandon();
}

#[test]
#[should_panic(expected = "outstanding at the end")]
fn the_end_check_fires_on_a_leaked_region() {
    let sim = Sim::single(spec());
    let _leaked = sim.platform().dma_alloc(64, 64).unwrap();
}

#[test]
#[should_panic(expected = "protocol errors")]
fn the_end_check_fires_on_an_unexpected_protocol_error() {
    let sim = Sim::single(spec());
    cfg_read(&sim.config_access(), addr(0, 0), 2);
}

#[test]
#[should_panic(expected = "wild_dma")]
fn the_end_check_fires_on_wild_dma_even_with_protocol_errors_expected() {
    let sim = Sim::single(spec());
    sim.expect_protocol_errors();
    let mut m = Mini::bring_up(&sim).unwrap();
    m.create_io(8).unwrap();
    let _ = m.cmd(true, rw(nvm::READ, 1, 0, 1, 0x1000, 0));
    m.release();
}

#[test]
fn declared_expectations_pass_the_end_check() {
    let sim = Sim::single(spec());
    sim.expect_protocol_errors();
    cfg_read(&sim.config_access(), addr(0, 0), 2);
    let sim = Sim::single(spec());
    sim.expect_outstanding();
    let _leaked = sim.platform().dma_alloc(64, 64).unwrap();
    let sim = Sim::single(spec());
    sim.expect_quarantined();
    let _leaked = sim.platform().dma_alloc(64, 64).unwrap();
}
