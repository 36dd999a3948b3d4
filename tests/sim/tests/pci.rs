//! The PCI model: enumeration, capabilities, BAR sizing, routing by the
//! programmed bus numbers and windows, command register gating.

mod common;

use bare_nvme::{PhysAddr, Platform, RegisterAccess};
use bare_nvme_sim::{BridgeId, ControllerSpec, CtrlId, PortId, Sim, MMIO_APERTURE};
use common::*;

fn two_ports() -> Sim {
    Sim::builder()
        .root_port(true)
        .root_port(false)
        .controller_on_port(PortId(0), ControllerSpec::with_blocks(64).serial("a"))
        .build()
}

/// Capability IDs in list order, bounded.
fn caps(cfg: &bare_nvme_sim::SimConfig, a: pci_types::PciAddress) -> Vec<(u8, u16)> {
    let mut out = Vec::new();
    if cfg_read(cfg, a, 4) >> 16 & 0x10 == 0 {
        return out;
    }
    let mut ptr = (cfg_read(cfg, a, 0x34) & 0xFC) as u16;
    while ptr != 0 && out.len() < 48 {
        let v = cfg_read(cfg, a, ptr);
        out.push((v as u8, ptr));
        ptr = ((v >> 8) & 0xFC) as u16;
    }
    out
}

#[test]
fn bus0_has_host_bridge_root_ports_and_the_controller_behind_its_port() {
    let sim = two_ports();
    let cfg = sim.config_access();
    assert_eq!(cfg_read(&cfg, addr(0, 0), 0), 0x29c0_8086);
    let port = sim.port_address(PortId(0));
    assert_eq!(cfg_read(&cfg, port, 0), 0x000c_1b36);
    assert_eq!(cfg_read(&cfg, port, 0x0C) >> 16 & 0x7F, 1, "type-1 header");
    assert_eq!(find_nvme(&cfg), vec![sim.address(CtrlId(0)).unwrap()]);
    // Secondary bus 1 for the first port, device 0 only.
    assert_eq!(sim.address(CtrlId(0)), Some(addr(1, 0)));
    assert_eq!(cfg_read(&cfg, addr(1, 1), 0), 0xFFFF_FFFF);
    assert_eq!(cfg_read(&cfg, addr(0, 30), 0), 0xFFFF_FFFF);
    assert_eq!(cfg_read(&cfg, addr(7, 0), 0), 0xFFFF_FFFF);
    let nvme = addr(1, 0);
    assert_eq!(cfg_read(&cfg, nvme, 0), 0x0010_1b36);
    assert_eq!(cfg_read(&cfg, nvme, 8) >> 8, 0x01_08_02);
    assert_eq!(sim.counters().protocol_errors, 0);
}

#[test]
fn root_port_pcie_capability_reports_hot_plug_slot() {
    let sim = two_ports();
    let cfg = sim.config_access();
    let port = sim.port_address(PortId(0));
    let list = caps(&cfg, port);
    let (_, pcie) = *list.iter().find(|(id, _)| *id == 0x10).expect("PCIe cap");
    assert!(list.len() >= 2, "more than one capability: {list:?}");
    let pcie_caps = cfg_read(&cfg, port, pcie) >> 16;
    assert_eq!(pcie_caps >> 4 & 0xF, 4, "root port");
    assert_ne!(pcie_caps & 1 << 8, 0, "slot implemented");
    let slot_cap = cfg_read(&cfg, port, pcie + 0x14);
    assert_ne!(slot_cap & 1 << 6, 0, "hot-plug capable");
    assert_eq!(slot_cap >> 19, 1, "physical slot number");
    let link_cap = cfg_read(&cfg, port, pcie + 0x0C);
    assert_ne!(link_cap & 1 << 20, 0, "DLL link active reporting");
    let link_status = cfg_read(&cfg, port, pcie + 0x10) >> 16;
    assert_ne!(link_status & 1 << 13, 0, "link active");
    let slot_status = cfg_read(&cfg, port, pcie + 0x18) >> 16;
    assert_ne!(slot_status & 1 << 6, 0, "presence");
    // The second port: no hot-plug, empty, link down.
    let port2 = sim.port_address(PortId(1));
    let slot_cap2 = cfg_read(&cfg, port2, pcie + 0x14);
    assert_eq!(slot_cap2 & 1 << 6, 0);
    assert_eq!(cfg_read(&cfg, port2, pcie + 0x18) >> 16 & 1 << 6, 0);
    assert_eq!(cfg_read(&cfg, port2, pcie + 0x10) >> 16 & 1 << 13, 0);
}

#[test]
fn bar_sizing_reads_back_mask_and_restores() {
    let sim = two_ports();
    let cfg = sim.config_access();
    let a = addr(1, 0);
    let lo = cfg_read(&cfg, a, 0x10);
    let hi = cfg_read(&cfg, a, 0x14);
    assert_eq!(lo & 0xF, 0b0100, "64-bit memory BAR");
    cfg_write(&cfg, a, 0x10, !0);
    cfg_write(&cfg, a, 0x14, !0);
    let size_lo = cfg_read(&cfg, a, 0x10) & !0xF;
    let size_hi = cfg_read(&cfg, a, 0x14);
    let mask = (size_hi as u64) << 32 | size_lo as u64;
    assert_eq!(!mask + 1, 16 << 10);
    cfg_write(&cfg, a, 0x10, lo);
    cfg_write(&cfg, a, 0x14, hi);
    assert_eq!(sim.bar(CtrlId(0)), (lo & !0xF) as u64 | (hi as u64) << 32);
}

#[test]
fn absurd_bar_size_and_broken_headers_are_reported_as_configured() {
    let sim = Sim::builder()
        .controller_on_bus0(
            ControllerSpec::with_blocks(8)
                .bar_size(1 << 63)
                .capability_cycle(true)
                .header_type(0x7F),
        )
        .build();
    let cfg = sim.config_access();
    let a = sim.address(CtrlId(0)).unwrap();
    assert_eq!(sim.bar(CtrlId(0)), 0, "firmware could not place it");
    cfg_write(&cfg, a, 0x10, !0);
    cfg_write(&cfg, a, 0x14, !0);
    assert_eq!(cfg_read(&cfg, a, 0x10), 0x0000_0004);
    assert_eq!(cfg_read(&cfg, a, 0x14), 0x8000_0000);
    assert_eq!(cfg_read(&cfg, a, 0x0C) >> 16 & 0xFF, 0x7F);
    assert_eq!(caps(&cfg, a).len(), 48, "the cycle never ends");
}

#[test]
fn renumbering_bridges_moves_the_devices_behind_them() {
    let sim = two_ports();
    let cfg = sim.config_access();
    let port = sim.port_address(PortId(0));
    // Secondary = subordinate = 9.
    let buses = cfg_read(&cfg, port, 0x18);
    cfg_write(&cfg, port, 0x18, (buses & 0xFF00_00FF) | 9 << 8 | 9 << 16);
    assert_eq!(cfg_read(&cfg, addr(1, 0), 0), 0xFFFF_FFFF);
    assert_eq!(cfg_read(&cfg, addr(9, 0), 0), 0x0010_1b36);
    assert_eq!(sim.address(CtrlId(0)), Some(addr(9, 0)));
}

#[test]
fn unconfigured_machine_needs_bus_numbers_windows_and_bars() {
    let sim = Sim::builder()
        .firmware_configured(false)
        .pci_bridge()
        .controller_on_bridge(BridgeId(0), ControllerSpec::with_blocks(8))
        .build();
    let cfg = sim.config_access();
    let p = sim.platform();
    assert_eq!(sim.address(CtrlId(0)), None);
    let bridge = addr(0, 1);
    assert_eq!(cfg_read(&cfg, bridge, 0x18), 0, "no bus numbers");
    cfg_write(&cfg, bridge, 0x18, 0x0003_0300);
    let a = addr(3, 0);
    assert_eq!(cfg_read(&cfg, a, 8) >> 8, 0x01_08_02);
    let base = MMIO_APERTURE.0;
    cfg_write(&cfg, a, 0x10, base as u32);
    cfg_write(&cfg, a, 0x14, 0);
    cfg_write(&cfg, a, 4, 0x6);
    let regs = p.map_registers(PhysAddr::new(base), 0x4000).unwrap();
    assert_eq!(regs.read32(0x08), 0, "bridge window closed and memory off");
    // Window [base, base + 1 MiB), memory decoding on the bridge.
    let w = (base >> 16) as u32 & 0xFFF0;
    cfg_write(&cfg, bridge, 0x20, w | w << 16);
    assert_eq!(regs.read32(0x08), 0, "bridge memory space still disabled");
    cfg_write(&cfg, bridge, 4, 0x6);
    assert_eq!(regs.read32(0x08), 0x0001_0400, "VS through the window");
    // Memory decoding off on the function: unclaimed again.
    cfg_write(&cfg, a, 4, 0x4);
    assert_eq!(regs.read32(0x08), 0);
    assert_eq!(sim.counters().protocol_errors, 0);
}

#[test]
fn unaligned_config_access_is_a_protocol_error() {
    let sim = two_ports();
    sim.expect_protocol_errors();
    let cfg = sim.config_access();
    assert_eq!(cfg_read(&cfg, addr(0, 0), 2), 0xFFFF_FFFF);
    assert_eq!(sim.counters().protocol_errors, 1);
    assert_eq!(sim.counters().config_reads, 1);
}
