//! Preparing a firmware-configured PCI function for the driver: its BAR0 and
//! a `DeviceLink` over configuration space.
//!
//! Stands in for the driver's enumerator until boards use it: the board takes
//! the BAR that SeaBIOS assigned and sizes it.

use bare_nvme::nvme::DeviceLink;
use pci_types::{ConfigRegionAccess, PciAddress};

use super::{read32, vendor_id, write32, PortIo, NO_DEVICE};

const COMMAND: u16 = 0x04;
const BAR0: u16 = 0x10;
const COMMAND_MEMORY: u32 = 1 << 1;
const COMMAND_BUS_MASTER: u32 = 1 << 2;
/// BAR bits: memory space, 64-bit type.
const BAR_IO: u32 = 1;
const BAR_TYPE_64: u32 = 0b10 << 1;

/// An assigned memory BAR.
#[derive(Clone, Copy, Debug)]
pub struct Bar {
    /// Physical address.
    pub addr: u64,
    /// Size in bytes (a power of two).
    pub size: u64,
}

/// Reads and sizes BAR0 of `addr`, then enables memory decoding and bus
/// mastering. `None` if BAR0 is not an assigned memory BAR.
pub fn enable_bar0(access: &impl ConfigRegionAccess, addr: PciAddress) -> Option<Bar> {
    let low = read32(access, addr, BAR0);
    if low & BAR_IO != 0 {
        return None;
    }
    let is_64 = low & (0b11 << 1) == BAR_TYPE_64;
    let high = if is_64 {
        read32(access, addr, BAR0 + 4)
    } else {
        0
    };
    let command = read32(access, addr, COMMAND) & 0xFFFF;
    // Size with decoding off, so the all-ones probe never claims an address.
    write32(access, addr, COMMAND, command & !COMMAND_MEMORY);
    write32(access, addr, BAR0, u32::MAX);
    let mut mask = u64::from(read32(access, addr, BAR0) & !0xF);
    write32(access, addr, BAR0, low);
    if is_64 {
        write32(access, addr, BAR0 + 4, u32::MAX);
        mask |= u64::from(read32(access, addr, BAR0 + 4)) << 32;
        write32(access, addr, BAR0 + 4, high);
    } else {
        mask |= 0xFFFF_FFFF_0000_0000;
    }
    let base = (u64::from(high) << 32) | u64::from(low & !0xF);
    let size = (!mask).wrapping_add(1);
    if base == 0 || mask == 0 || !size.is_power_of_two() {
        write32(access, addr, COMMAND, command);
        return None;
    }
    write32(
        access,
        addr,
        COMMAND,
        command | COMMAND_MEMORY | COMMAND_BUS_MASTER,
    );
    Some(Bar { addr: base, size })
}

/// The driver's view of a function's presence, over a configuration accessor
/// of its own.
pub struct ConfigLink {
    config: PortIo,
    addr: PciAddress,
}

impl ConfigLink {
    /// A link to the function at `addr`.
    pub fn new(addr: PciAddress) -> Self {
        Self {
            config: super::port_io(),
            addr,
        }
    }
}

impl DeviceLink for ConfigLink {
    fn is_present(&self) -> bool {
        vendor_id(&self.config, self.addr) != NO_DEVICE
    }

    fn stop_dma(&self) {
        let command = read32(&self.config, self.addr, COMMAND) & 0xFFFF;
        write32(
            &self.config,
            self.addr,
            COMMAND,
            command & !COMMAND_BUS_MASTER,
        );
    }
}
