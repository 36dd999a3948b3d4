//! Enhanced configuration access (memory-mapped, 4 KiB per function).

use core::ptr::NonNull;

use bare_nvme::pci::access::Ecam;
use pci_types::{ConfigRegionAccess, PciAddress};

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

/// The driver's ECAM accessor over `window`; `None` if the window is outside
/// the identity map.
pub fn ecam_access(window: EcamWindow) -> Option<Ecam> {
    let len = u64::from(window.buses) << 20;
    if !paging::is_mapped(window.base, len) {
        return None;
    }
    let base = NonNull::new(window.base as *mut u8)?;
    let end_bus = u8::try_from(window.buses - 1).unwrap_or(u8::MAX);
    // SAFETY: the window is identity mapped (checked above), uncached because
    // it holds no RAM (`paging::mark_non_ram_uncached`), 256 MiB aligned as
    // PCIEXBAR requires, covers `buses` buses from bus 0, and is never unmapped.
    Some(unsafe { Ecam::new(base, 0, 0, end_bus) })
}
