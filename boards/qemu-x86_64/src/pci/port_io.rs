//! Configuration mechanism #1: the CF8/CFC port pair.

use pci_types::{ConfigRegionAccess, PciAddress};
use x86_64::instructions::port::Port;

const CONFIG_ADDRESS: u16 = 0xCF8;
const CONFIG_DATA: u16 = 0xCFC;
const ENABLE: u32 = 1 << 31;

/// Port I/O configuration access (the first 256 bytes of each function).
///
/// Several instances may exist (the driver's, the hand's): the board runs on
/// one CPU without interrupts, so the address/data pair is never interleaved.
#[derive(Clone, Copy, Debug, Default)]
pub struct PortIo;

impl PortIo {
    fn address(addr: PciAddress, offset: u16) -> Option<u32> {
        if offset > 0xFC || addr.segment() != 0 {
            return None;
        }
        Some(
            ENABLE
                | (u32::from(addr.bus()) << 16)
                | (u32::from(addr.device() & 0x1F) << 11)
                | (u32::from(addr.function() & 0x7) << 8)
                | u32::from(offset & 0xFC),
        )
    }
}

impl ConfigRegionAccess for PortIo {
    unsafe fn read(&self, addr: PciAddress, offset: u16) -> u32 {
        let Some(address) = Self::address(addr, offset) else {
            return u32::MAX;
        };
        // SAFETY: the standard configuration ports; the caller vouches for
        // the side effects of reading this register.
        unsafe {
            Port::new(CONFIG_ADDRESS).write(address);
            Port::new(CONFIG_DATA).read()
        }
    }

    unsafe fn write(&self, addr: PciAddress, offset: u16, value: u32) {
        let Some(address) = Self::address(addr, offset) else {
            return;
        };
        // SAFETY: as in `read`; the caller vouches for the write.
        unsafe {
            Port::new(CONFIG_ADDRESS).write(address);
            Port::new(CONFIG_DATA).write(value);
        }
    }
}
