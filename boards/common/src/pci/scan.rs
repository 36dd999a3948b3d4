//! A read-only walk of the PCI hierarchy, for showing what firmware set up.

use heapless::Vec;
use log::info;
use pci_types::{ConfigRegionAccess, PciAddress};

use super::{find_capability, read32, vendor_id, CAP_ID_PCIE, NO_DEVICE};

/// Most root ports remembered.
pub const MAX_PORTS: usize = 16;
/// Deepest bridge nesting followed.
const MAX_DEPTH: u8 = 4;
/// Header type 1: PCI-to-PCI bridge.
const HEADER_BRIDGE: u8 = 1;
/// PCIe capability: Device/Port Type (bits 7:4 of the capability register).
const PORT_TYPE_ROOT: u16 = 0x4;
/// PCIe capability: Device/Port Type of a switch downstream port.
const PORT_TYPE_DOWNSTREAM: u16 = 0x6;
/// PCIe capability register: Slot Implemented.
const SLOT_IMPLEMENTED: u16 = 1 << 8;

/// A PCIe root port (or switch downstream port) with a slot.
#[derive(Clone, Copy, Debug)]
pub struct RootPort {
    /// The port's own address.
    pub addr: PciAddress,
    /// Its secondary bus number (assigned by firmware).
    pub secondary_bus: u8,
    /// Physical slot number from Slot Capabilities.
    pub slot: u16,
}

/// Most NVMe functions remembered.
pub const MAX_NVME: usize = 8;
/// Class code of an NVM Express I/O controller (class, subclass, interface).
const CLASS_NVME: u32 = 0x01_08_02;

/// What the walk found.
#[derive(Debug, Default)]
pub struct Topology {
    /// Functions that answered.
    pub functions: usize,
    /// Root ports and switch downstream ports with a slot.
    pub root_ports: Vec<RootPort, MAX_PORTS>,
    /// NVMe controllers, in walk order.
    pub nvme: Vec<PciAddress, MAX_NVME>,
}

/// Walks bus 0 and every bus behind a bridge, logging each function.
pub fn walk(access: &impl ConfigRegionAccess) -> Topology {
    let mut topology = Topology::default();
    walk_bus(access, 0, 0, &mut topology);
    topology
}

fn walk_bus(access: &impl ConfigRegionAccess, bus: u8, depth: u8, topology: &mut Topology) {
    for device in 0..32 {
        for function in 0..8 {
            let addr = PciAddress::new(0, bus, device, function);
            if vendor_id(access, addr) == NO_DEVICE {
                if function == 0 {
                    break;
                }
                continue;
            }
            topology.functions += 1;
            let header_type = (read32(access, addr, 0x0C) >> 16) as u8;
            show_function(access, addr, header_type);
            if read32(access, addr, 0x08) >> 8 == CLASS_NVME {
                // Beyond MAX_NVME controllers the rest are only shown.
                let _ = topology.nvme.push(addr);
            }
            if header_type & 0x7F == HEADER_BRIDGE {
                let buses = read32(access, addr, 0x18);
                let secondary = (buses >> 8) as u8;
                note_root_port(access, addr, secondary, topology);
                if secondary > bus && depth < MAX_DEPTH {
                    walk_bus(access, secondary, depth + 1, topology);
                }
            }
            if function == 0 && header_type & 0x80 == 0 {
                break;
            }
        }
    }
}

fn show_function(access: &impl ConfigRegionAccess, addr: PciAddress, header_type: u8) {
    let id = read32(access, addr, 0);
    let class = read32(access, addr, 0x08);
    let command = read32(access, addr, 0x04) as u16;
    info!(
        "{:02x}:{:02x}.{} {:04x}:{:04x} class {:02x}.{:02x}.{:02x} cmd {:#06x}",
        addr.bus(),
        addr.device(),
        addr.function(),
        id as u16,
        id >> 16,
        class >> 24,
        (class >> 16) as u8,
        (class >> 8) as u8,
        command
    );
    let bars = if header_type & 0x7F == HEADER_BRIDGE {
        2
    } else {
        6
    };
    let mut index = 0;
    while index < bars {
        let offset = 0x10 + 4 * index as u16;
        let raw = read32(access, addr, offset);
        let is_io = raw & 1 != 0;
        let is_64 = !is_io && (raw >> 1) & 0b11 == 0b10;
        if is_64 && index + 1 < bars {
            let high = read32(access, addr, offset + 4);
            let base = (u64::from(high) << 32) | u64::from(raw & !0xF);
            info!("    BAR{index} mem64 {base:#x}");
            index += 2;
            continue;
        }
        if raw != 0 {
            if is_io {
                info!("    BAR{index} io {:#x}", raw & !0x3);
            } else {
                info!("    BAR{index} mem32 {:#x}", raw & !0xF);
            }
        }
        index += 1;
    }
    if header_type & 0x7F == HEADER_BRIDGE {
        let buses = read32(access, addr, 0x18);
        let memory = read32(access, addr, 0x20);
        let mem_base = (memory & 0xFFF0) << 16;
        let mem_limit = (memory & 0xFFF0_0000) | 0xF_FFFF;
        info!(
            "    bridge buses {}..={} memory window {:#x}..={:#x}",
            (buses >> 8) as u8,
            (buses >> 16) as u8,
            mem_base,
            mem_limit
        );
    }
}

fn note_root_port(
    access: &impl ConfigRegionAccess,
    addr: PciAddress,
    secondary_bus: u8,
    topology: &mut Topology,
) {
    let Some(pcie_cap) = find_capability(access, addr, CAP_ID_PCIE) else {
        return;
    };
    let caps = (read32(access, addr, pcie_cap) >> 16) as u16;
    let kind = (caps >> 4) & 0xF;
    if !matches!(kind, PORT_TYPE_ROOT | PORT_TYPE_DOWNSTREAM) || caps & SLOT_IMPLEMENTED == 0 {
        return;
    }
    let slot_caps = read32(access, addr, pcie_cap + 0x14);
    let slot_status = (read32(access, addr, pcie_cap + 0x18) >> 16) as u16;
    let slot = (slot_caps >> 19) as u16;
    info!("    port slot {slot} slot caps {slot_caps:#010x} slot status {slot_status:#06x}");
    let port = RootPort {
        addr,
        secondary_bus,
        slot,
    };
    if topology.root_ports.push(port).is_err() {
        info!("    (more than {MAX_PORTS} root ports; not tracking this one)");
    }
}
