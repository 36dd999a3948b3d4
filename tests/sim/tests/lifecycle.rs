//! Surprise removal, hot-add, slot power control, link flaps.

mod common;

use bare_nvme::nvme::command::{nvm, SubmissionEntry};
use bare_nvme::nvme::regs;
use bare_nvme::{PhysAddr, Platform, RegisterAccess};
use bare_nvme_sim::{ControllerSpec, CtrlId, Hold, Location, PortId, RemovedReads, Sim};
use common::*;

const PCIE: u16 = 0x40;
const SLOT_CTL: u16 = PCIE + 0x18;
const PDS: u32 = 1 << 6;
const PDC: u32 = 1 << 3;
const ABP: u32 = 1 << 0;
const DLLSC: u32 = 1 << 8;
const DLLLA: u32 = 1 << 13;

fn slot_status(m: &bare_nvme_sim::SimConfig, port: pci_types::PciAddress) -> u32 {
    cfg_read(m, port, SLOT_CTL) >> 16
}

fn link_status(m: &bare_nvme_sim::SimConfig, port: pci_types::PciAddress) -> u32 {
    cfg_read(m, port, PCIE + 0x10) >> 16
}

fn sim2() -> Sim {
    Sim::builder()
        .root_port(true)
        .root_port(true)
        .controller_on_port(PortId(0), ControllerSpec::with_blocks(64).serial("first"))
        .build()
}

#[test]
fn surprise_removal_as_qemu_shows_it() {
    let sim = sim2();
    let mut m = Mini::bring_up(&sim).unwrap();
    m.create_io(8).unwrap();
    sim.hold(CtrlId(0), Hold::Io);
    let mut flush = SubmissionEntry::new(nvm::FLUSH);
    flush.nsid = 1;
    m.submit(true, flush);
    assert_eq!(sim.held_count(), 1);
    sim.surprise_remove(CtrlId(0));
    let port = sim.port_address(PortId(0));
    assert_eq!(cfg_read(&m.cfg, addr(1, 0), 0), 0xFFFF_FFFF);
    assert_eq!(m.regs.read32(regs::CSTS), 0);
    assert_eq!(m.regs.read32(regs::CAP), 0);
    m.regs.write32(regs::CC, 0);
    let st = slot_status(&m.cfg, port);
    assert_eq!(st & (PDS | PDC | DLLSC), PDC | DLLSC);
    assert_eq!(link_status(&m.cfg, port) & DLLLA, 0);
    // Held commands never complete.
    assert_eq!(sim.held_count(), 0);
    assert_eq!(sim.release_all(), 0);
    assert!(m.reap(true).is_err());
    // RW1C: write the change bits back to clear them, control untouched.
    let ctl = cfg_read(&m.cfg, port, SLOT_CTL) & 0xFFFF;
    cfg_write(&m.cfg, port, SLOT_CTL, ctl | (PDC | DLLSC) << 16);
    assert_eq!(slot_status(&m.cfg, port) & (PDC | DLLSC), 0);
    m.release();
    assert_eq!(sim.counters().dma_regions, 0);
    assert_eq!(
        sim.counters().protocol_errors,
        0,
        "{:?}",
        sim.protocol_log()
    );
}

#[test]
fn removed_bar_reads_all_ones_in_hardware_mode() {
    let sim = Sim::builder()
        .removed_reads(RemovedReads::AllOnes)
        .controller_on_bus0(ControllerSpec::with_blocks(8))
        .build();
    let (_, _, regs, _) = Mini::map(&sim).unwrap();
    assert_ne!(regs.read32(regs::VS), u32::MAX);
    sim.surprise_remove(CtrlId(0));
    assert_eq!(regs.read32(regs::CSTS), u32::MAX);
    assert!(!sim.is_present(CtrlId(0)));
    assert_eq!(sim.address(CtrlId(0)), None);
}

#[test]
fn hot_added_controller_comes_up_reset_and_can_be_brought_up() {
    let sim = sim2();
    let cfg = sim.config_access();
    let port = sim.port_address(PortId(1));
    assert_eq!(slot_status(&cfg, port) & PDS, 0);
    let id = sim.hot_add(PortId(1), ControllerSpec::with_blocks(8).serial("cafe"));
    assert_eq!(id, CtrlId(1));
    let st = slot_status(&cfg, port);
    assert_eq!(st & (PDS | PDC | DLLSC), PDS | PDC | DLLSC);
    assert_ne!(link_status(&cfg, port) & DLLLA, 0);
    let a = sim.address(id).unwrap();
    assert_eq!(a, addr(2, 0));
    assert_eq!(cfg_read(&cfg, a, 4) & 0xFFFF, 0, "command register reset");
    assert_eq!(cfg_read(&cfg, a, 0x10), 0x4, "BAR0 unassigned");
    // Place BAR0 in the port's window and use it.
    let window = ((cfg_read(&cfg, port, 0x20) & 0xFFF0) as u64) << 16;
    cfg_write(&cfg, a, 0x10, window as u32);
    cfg_write(&cfg, a, 0x14, (window >> 32) as u32);
    cfg_write(&cfg, a, 4, 0x0406);
    let regs = sim
        .platform()
        .map_registers(PhysAddr::new(window), 0x4000)
        .unwrap();
    assert_eq!(regs.read32(regs::VS), 0x0001_0400);
    assert_eq!(sim.bar(id), window);
}

#[test]
fn hot_add_on_a_plain_bus_is_found_only_by_probing() {
    let sim = Sim::builder().build();
    let cfg = sim.config_access();
    assert!(find_nvme(&cfg).is_empty());
    let id = sim.hot_add_at(Location::Bus0, ControllerSpec::with_blocks(8));
    assert_eq!(find_nvme(&cfg), vec![sim.address(id).unwrap()]);
}

#[test]
fn slot_control_power_and_indicator_off_removes_the_device() {
    let sim = sim2();
    let m = Mini::bring_up(&sim).unwrap();
    let port = sim.port_address(PortId(0));
    let dword = cfg_read(&m.cfg, port, SLOT_CTL);
    // Write the control half only (status bits as zero so nothing clears).
    cfg_write(
        &m.cfg,
        port,
        SLOT_CTL,
        (dword & 0xFFFF_0000 & !(0x11F << 16)) | 0x07C0,
    );
    assert!(!sim.is_present(CtrlId(0)));
    assert_eq!(slot_status(&m.cfg, port) & PDS, 0);
    assert_eq!(m.regs.read32(regs::CSTS), 0);
    m.release();
    // A card inserted afterwards is powered and readable at once.
    let id = sim.hot_add(PortId(0), ControllerSpec::with_blocks(8).serial("again"));
    assert_eq!(sim.address(id), Some(addr(1, 0)));
    assert_eq!(slot_status(&sim.config_access(), port) & PDS, PDS);
}

#[test]
fn slot_power_off_with_indicator_on_unpowers_then_returns_reset() {
    let sim = sim2();
    let mut m = Mini::bring_up(&sim).unwrap();
    m.create_io(8).unwrap();
    let port = sim.port_address(PortId(0));
    cfg_write(&m.cfg, port, SLOT_CTL, 0x05C0);
    assert!(sim.is_present(CtrlId(0)));
    assert_eq!(sim.address(CtrlId(0)), None, "unpowered: not reachable");
    assert_eq!(cfg_read(&m.cfg, addr(1, 0), 0), 0xFFFF_FFFF);
    assert_eq!(slot_status(&m.cfg, port) & PDS, PDS);
    assert_eq!(link_status(&m.cfg, port) & DLLLA, 0);
    cfg_write(&m.cfg, port, SLOT_CTL, 0x01C0);
    assert_eq!(cfg_read(&m.cfg, addr(1, 0), 0), 0x0010_1b36);
    assert_eq!(cfg_read(&m.cfg, addr(1, 0), 0x10), 0x4, "BAR reset");
    assert_eq!(sim.io_queues(CtrlId(0)), 0);
    assert_ne!(link_status(&m.cfg, port) & DLLLA, 0);
    m.release();
}

#[test]
fn link_flap_brings_the_same_device_back_reset() {
    let sim = sim2();
    let m = Mini::bring_up(&sim).unwrap();
    let port = sim.port_address(PortId(0));
    sim.link_down(PortId(0));
    assert_eq!(m.regs.read32(regs::CSTS), 0);
    assert_eq!(link_status(&m.cfg, port) & DLLLA, 0);
    sim.link_up(PortId(0));
    assert_eq!(slot_status(&m.cfg, port) & (PDS | PDC | DLLSC), PDS | DLLSC);
    assert!(!sim.is_ready(CtrlId(0)));
    assert_eq!(sim.bar(CtrlId(0)), 0);
    assert_eq!(sim.identify_controller(CtrlId(0))[4..9], *b"first");
    m.release();
}

#[test]
fn attention_button_sets_its_bit() {
    let sim = sim2();
    let cfg = sim.config_access();
    sim.press_attention_button(PortId(1));
    assert_ne!(slot_status(&cfg, sim.port_address(PortId(1))) & ABP, 0);
    assert_eq!(sim.slot_status(PortId(1)) as u32 & ABP, ABP);
}
