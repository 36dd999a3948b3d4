//! Enhanced configuration access (memory-mapped, 4 KiB per function).

use core::ptr::NonNull;

use pci_types::{ConfigRegionAccess, PciAddress};
use volatile::VolatilePtr;

use crate::paging;

/// The q35 host bridge (MCH) that holds PCIEXBAR.
const HOST_BRIDGE: (u8, u8, u8) = (0, 0, 0);
const Q35_MCH_DEVICE_ID: u16 = 0x29C0;
const INTEL_VENDOR_ID: u16 = 0x8086;
/// PCIEXBAR, 64 bits at 0x60 (Intel Q35 datasheet 5.1.16).
const PCIEXBAR: u16 = 0x60;
const PCIEXBAR_ENABLE: u64 = 1;

/// Where ECAM lives and how many buses it covers.
#[derive(Clone, Copy, Debug)]
pub struct EcamWindow {
    /// Physical base address.
    pub base: u64,
    /// Buses covered (from bus 0).
    pub buses: u16,
}

/// Reads the ECAM window from the q35 host bridge's PCIEXBAR. `None` on a
/// different chipset or when firmware left ECAM disabled.
pub fn find_ecam(access: &impl ConfigRegionAccess) -> Option<EcamWindow> {
    let bridge = PciAddress::new(0, HOST_BRIDGE.0, HOST_BRIDGE.1, HOST_BRIDGE.2);
    let id = super::read32(access, bridge, 0);
    if id as u16 != INTEL_VENDOR_ID || (id >> 16) as u16 != Q35_MCH_DEVICE_ID {
        return None;
    }
    let bar = u64::from(super::read32(access, bridge, PCIEXBAR))
        | (u64::from(super::read32(access, bridge, PCIEXBAR + 4)) << 32);
    if bar & PCIEXBAR_ENABLE == 0 {
        return None;
    }
    // Length field (bits 2:1): 256, 128 or 64 MiB; the base uses bits 35:28,
    // 35:27 or 35:26 accordingly.
    let (buses, low_bit) = match (bar >> 1) & 0b11 {
        0b00 => (256, 28),
        0b01 => (128, 27),
        0b10 => (64, 26),
        _ => return None,
    };
    let mask = ((1u64 << 36) - 1) & !((1u64 << low_bit) - 1);
    Some(EcamWindow {
        base: bar & mask,
        buses,
    })
}

/// ECAM access through the identity map.
#[derive(Clone, Copy, Debug)]
pub struct Ecam {
    window: EcamWindow,
}

impl Ecam {
    /// Access through `window`; `None` if the window is outside the identity map.
    pub fn new(window: EcamWindow) -> Option<Self> {
        paging::is_mapped(window.base, u64::from(window.buses) << 20).then_some(Self { window })
    }

    fn register(&self, addr: PciAddress, offset: u16) -> Option<VolatilePtr<'_, u32>> {
        if addr.segment() != 0 || u16::from(addr.bus()) >= self.window.buses || offset > 0xFFC {
            return None;
        }
        let offset = (u64::from(addr.bus()) << 20)
            | (u64::from(addr.device() & 0x1F) << 15)
            | (u64::from(addr.function() & 0x7) << 12)
            | u64::from(offset & 0xFFC);
        let ptr = NonNull::new((self.window.base + offset) as *mut u32)?;
        // SAFETY: inside the ECAM window (checked in `new` to be identity
        // mapped, uncached as non-RAM), dword aligned; accessed only through
        // volatile operations.
        Some(unsafe { VolatilePtr::new(ptr) })
    }
}

impl ConfigRegionAccess for Ecam {
    unsafe fn read(&self, addr: PciAddress, offset: u16) -> u32 {
        self.register(addr, offset).map_or(u32::MAX, |r| r.read())
    }

    unsafe fn write(&self, addr: PciAddress, offset: u16, value: u32) {
        if let Some(r) = self.register(addr, offset) {
            r.write(value);
        }
    }
}
