//! Device behaviours short of removal: transient glitches, ignored config
//! writes, memory decoding lost with bus mastering on, slow disable and
//! shutdown, slot change bits without a change, and whether DMA is possible.

mod common;

use std::time::Duration;

use bare_nvme::nvme::command::{admin, nvm, SubmissionEntry};
use bare_nvme::nvme::regs;
use bare_nvme::{Platform, RegisterAccess};
use bare_nvme_sim::{ControllerSpec, CtrlId, Fault, Hold, PortId, Sim};
use common::*;

const C: CtrlId = CtrlId(0);
const PCIE: u16 = 0x40;
const SLOT_CTL: u16 = PCIE + 0x18;
const PDS: u32 = 1 << 6;
const PDC: u32 = 1 << 3;
const DLLSC: u32 = 1 << 8;
const DLLLA: u32 = 1 << 13;
const BUS_MASTER: u16 = 1 << 2;
const MEMORY: u16 = 1 << 1;

fn spec() -> ControllerSpec {
    ControllerSpec::with_blocks(64).serial("d")
}

/// A controller with I/O queue pair 1 whose I/O commands are held.
fn held_io(spec: ControllerSpec) -> (Sim, Mini) {
    let sim = Sim::single(spec.hold(Hold::Io));
    let mut m = Mini::bring_up(&sim).unwrap();
    m.create_io(8).unwrap();
    (sim, m)
}

/// Submits a one-block read of LBA 3 into a fresh buffer (held).
fn held_read(sim: &Sim, m: &mut Mini) -> bare_nvme::DmaRegion {
    sim.write_block(C, 1, 3, &[0x5A; 512]);
    let buf = m.p.dma_alloc(512, 4096).unwrap();
    m.submit(true, rw(nvm::READ, 1, 3, 1, buf.phys().as_u64(), 0));
    assert_eq!(sim.held_count(), 1);
    buf
}

#[test]
fn glitch_fails_one_csts_and_one_id_read_then_reads_normally() {
    let sim = Sim::single(spec());
    let mut m = Mini::bring_up(&sim).unwrap();
    let a = sim.address(C).unwrap();
    let id = cfg_read(&m.cfg, a, 0);
    sim.glitch(C);
    assert!(sim.can_dma(C), "a glitch keeps DMA ability");
    assert_eq!(m.regs.read32(regs::CSTS), 0, "first CSTS read glitches");
    assert_eq!(m.regs.read32(regs::CSTS) & 1, 1, "second reads RDY");
    assert_eq!(
        cfg_read(&m.cfg, a, 4),
        cfg_read(&m.cfg, a, 4),
        "other dwords normal"
    );
    assert_eq!(
        cfg_read(&m.cfg, a, 0),
        0xFFFF_FFFF,
        "first ID read glitches"
    );
    assert_eq!(cfg_read(&m.cfg, a, 0), id, "second reads the ID");
    // The controller kept running.
    ok(m.cmd(false, SubmissionEntry::new(admin::GET_FEATURES))
        .unwrap())
    .ok();
    assert!(sim.is_ready(C));
    m.shut_down().unwrap();

    // The same as a scheduled fault.
    let sim = Sim::single(spec());
    let m = Mini::bring_up(&sim).unwrap();
    sim.on_access(sim.access_count(), Fault::Glitch(C));
    assert_eq!(m.regs.read32(regs::CSTS), 0);
    assert_eq!(m.regs.read32(regs::CSTS) & 1, 1);
    m.shut_down().unwrap();
}

#[test]
fn ignored_config_writes_leave_bus_mastering_on() {
    let sim = Sim::single(spec());
    let m = Mini::bring_up(&sim).unwrap();
    let a = sim.address(C).unwrap();
    let before = sim.command_register(C);
    assert_ne!(before & BUS_MASTER, 0);
    sim.ignore_config_writes(C, true);
    cfg_write(&m.cfg, a, 4, (before & !BUS_MASTER) as u32);
    assert_eq!(
        cfg_read(&m.cfg, a, 4) & 0xFFFF,
        before as u32,
        "write ignored"
    );
    assert!(sim.can_dma(C));
    sim.ignore_config_writes(C, false);
    cfg_write(&m.cfg, a, 4, (before & !BUS_MASTER) as u32);
    assert_eq!(sim.command_register(C) & BUS_MASTER, 0, "writes work again");
    cfg_write(&m.cfg, a, 4, before as u32);
    sim.inject(Fault::IgnoreConfigWrites(C));
    cfg_write(&m.cfg, a, 4, 0);
    assert_eq!(sim.command_register(C), before);
    sim.ignore_config_writes(C, false);
    m.shut_down().unwrap();
}

#[test]
fn memory_decoding_off_keeps_bus_mastering_and_dma() {
    let (sim, mut m) = held_io(spec());
    let buf = held_read(&sim, &mut m);
    sim.memory_decoding_off(C);
    let cmd = sim.command_register(C);
    assert_eq!((cmd & MEMORY, cmd & BUS_MASTER), (0, BUS_MASTER));
    assert_eq!(m.regs.read32(regs::VS), 0, "registers reach nothing");
    assert!(sim.is_ready(C));
    assert!(sim.can_dma(C));
    assert_eq!(
        sim.complete_held(1),
        1,
        "held command completes into memory"
    );
    assert_eq!(buf.as_slice(), &[0x5A; 512]);
    // Decoding back on: the completion is in the CQ.
    let a = sim.address(C).unwrap();
    cfg_write(&m.cfg, a, 4, (cmd | MEMORY) as u32);
    ok(m.reap(true).unwrap()).unwrap();
    m.p.dma_free(buf);
    m.shut_down().unwrap();

    let sim = Sim::single(spec());
    let m = Mini::bring_up(&sim).unwrap();
    sim.inject(Fault::MemoryDecodingOff(C));
    assert_eq!(sim.command_register(C) & MEMORY, 0);
    let a = sim.address(C).unwrap();
    cfg_write(&m.cfg, a, 4, 0x0406);
    m.shut_down().unwrap();
}

#[test]
fn disable_delay_keeps_rdy_and_dma_until_it_passes() {
    let delay = Duration::from_millis(5);
    let (sim, mut m) = held_io(spec().disable_delay(delay));
    let buf = held_read(&sim, &mut m);
    m.regs.write32(regs::CC, 0);
    assert_eq!(m.regs.read32(regs::CSTS) & 1, 1, "RDY still set");
    assert!(sim.can_dma(C));
    assert_eq!(sim.complete_held(1), 1, "a held command still completes");
    assert_eq!(buf.as_slice(), &[0x5A; 512]);
    sim.advance(delay);
    assert_eq!(m.regs.read32(regs::CSTS) & 1, 0, "RDY dropped");
    assert!(!sim.can_dma(C));
    assert_eq!(sim.io_queues(C), 0, "the reset happened");
    m.p.dma_free(buf);
    m.release();

    // Enabling is not slowed by disable_delay; ready_delay alone applies to
    // both directions.
    let sim = Sim::single(spec().disable_delay(delay));
    let m = Mini::bring_up(&sim).unwrap();
    m.shut_down().unwrap();
    let sim = Sim::single(spec().ready_delay(Duration::from_millis(2)));
    let m = Mini::bring_up(&sim).unwrap();
    m.regs.write32(regs::CC, 0);
    assert_eq!(m.regs.read32(regs::CSTS) & 1, 1);
    sim.advance(Duration::from_millis(2));
    assert_eq!(m.regs.read32(regs::CSTS) & 1, 0);
    m.release();
}

#[test]
fn shutdown_delay_reports_processing_then_complete() {
    let delay = Duration::from_millis(5);
    let sim = Sim::single(spec().shutdown_delay(delay).hold(Hold::None));
    let mut m = Mini::bring_up(&sim).unwrap();
    m.create_io(8).unwrap();
    let buf = m.p.dma_alloc(512, 4096).unwrap();
    ok(m.cmd(true, rw(nvm::WRITE, 1, 0, 1, buf.phys().as_u64(), 0))
        .unwrap())
    .unwrap();
    m.p.dma_free(buf);
    assert_eq!(sim.dirty_blocks(C, 1), 1);
    let cc = m.regs.read32(regs::CC);
    m.regs.write32(regs::CC, cc | regs::Cc::SHN_NORMAL.bits());
    let shst = |m: &Mini| m.regs.read32(regs::CSTS) & regs::Csts::SHST_MASK;
    assert_eq!(shst(&m), regs::Csts::SHST_OCCURRING.bits());
    assert_eq!(sim.dirty_blocks(C, 1), 1, "flushed only when complete");
    sim.advance(delay);
    assert_eq!(shst(&m), regs::Csts::SHST_COMPLETE.bits());
    assert_eq!(sim.dirty_blocks(C, 1), 0);
    m.shut_down().unwrap();
}

#[test]
fn presence_and_link_bounces_change_nothing_but_the_status_bits() {
    let sim = Sim::single(spec());
    let m = Mini::bring_up(&sim).unwrap();
    let port = sim.port_address(PortId(0));
    let (bar, cmd) = (sim.bar(C), sim.command_register(C));
    let status = |m: &Mini| cfg_read(&m.cfg, port, SLOT_CTL) >> 16;
    assert_eq!(status(&m) & (PDC | DLLSC), 0);
    sim.bounce_presence(PortId(0));
    assert_eq!(status(&m) & (PDS | PDC | DLLSC), PDS | PDC);
    sim.bounce_link(PortId(0));
    assert_eq!(status(&m) & (PDS | PDC | DLLSC), PDS | PDC | DLLSC);
    assert_ne!(cfg_read(&m.cfg, port, PCIE + 0x10) >> 16 & DLLLA, 0);
    assert!(sim.is_present(C) && sim.is_ready(C) && sim.can_dma(C));
    assert_eq!((sim.bar(C), sim.command_register(C)), (bar, cmd));
    assert_eq!(m.regs.read32(regs::CC) & 1, 1, "CC.EN unchanged");
    // Cleared by writing them back; the fault form sets them again.
    let ctl = cfg_read(&m.cfg, port, SLOT_CTL) & 0xFFFF;
    cfg_write(&m.cfg, port, SLOT_CTL, ctl | (PDC | DLLSC) << 16);
    assert_eq!(status(&m) & (PDC | DLLSC), 0);
    sim.inject(Fault::BouncePresence(PortId(0)));
    sim.inject(Fault::BounceLink(PortId(0)));
    assert_eq!(status(&m) & (PDC | DLLSC), PDC | DLLSC);
    m.shut_down().unwrap();
}

#[test]
fn can_dma_follows_presence_bus_mastering_and_enable() {
    let sim = Sim::single(spec());
    assert!(!sim.can_dma(C), "disabled after reset");
    let m = Mini::bring_up(&sim).unwrap();
    assert!(sim.can_dma(C));
    let a = sim.address(C).unwrap();
    cfg_write(&m.cfg, a, 4, 0x0002);
    assert!(!sim.can_dma(C), "bus mastering off");
    cfg_write(&m.cfg, a, 4, 0x0406);
    assert!(sim.can_dma(C));
    // Bus mastering off on the root port above blocks it too.
    let port = sim.port_address(PortId(0));
    let pcmd = cfg_read(&m.cfg, port, 4);
    cfg_write(&m.cfg, port, 4, pcmd & !(BUS_MASTER as u32));
    assert!(!sim.can_dma(C));
    cfg_write(&m.cfg, port, 4, pcmd);
    assert!(sim.can_dma(C));
    m.regs.write32(regs::CC, 0);
    assert!(!sim.can_dma(C), "disabled and not ready");
    m.regs.write32(regs::CC, regs::Cc::enable_value(0));
    assert!(sim.can_dma(C));
    sim.surprise_remove(C);
    assert!(!sim.can_dma(C), "gone");
    m.release();
}
