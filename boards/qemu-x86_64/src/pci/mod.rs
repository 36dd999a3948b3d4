//! Configuration space for the board: the driver's accessors (port I/O, ECAM
//! found through the q35 PCIEXBAR), small register helpers, and a read-only
//! bus walker that shows what firmware left behind.

mod ecam;
pub mod scan;

pub use bare_nvme::pci::access::{Ecam, PortIo};
pub use ecam::{ecam_access, find_ecam, EcamWindow};

use core::sync::atomic::{AtomicU64, Ordering};
use pci_types::{ConfigRegionAccess, PciAddress};

use spin::Once;

/// The configuration accessor handed to the driver: ECAM when the chipset
/// has it enabled, else port I/O. A copyable reference to an accessor that
/// lives for the whole run, so the driver can give each controller its own.
#[derive(Clone, Copy)]
pub enum Access {
    /// Memory-mapped configuration space.
    Ecam(&'static Ecam),
    /// The legacy CF8/CFC mechanism.
    Port(&'static PortIo),
}

impl Access {
    /// Which mechanism, for the log.
    pub fn name(&self) -> &'static str {
        match self {
            Access::Ecam(_) => "ECAM",
            Access::Port(_) => "port I/O",
        }
    }
}

/// Configuration reads made through [`Access`] (the driver's) since boot.
static CONFIG_READS: AtomicU64 = AtomicU64::new(0);

/// Configuration reads the driver made so far.
pub fn config_reads() -> u64 {
    CONFIG_READS.load(Ordering::Relaxed)
}

impl ConfigRegionAccess for Access {
    unsafe fn read(&self, address: PciAddress, offset: u16) -> u32 {
        CONFIG_READS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe {
            match self {
                Access::Ecam(e) => e.read(address, offset),
                Access::Port(p) => p.read(address, offset),
            }
        }
    }

    unsafe fn write(&self, address: PciAddress, offset: u16, value: u32) {
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe {
            match self {
                Access::Ecam(e) => e.write(address, offset, value),
                Access::Port(p) => p.write(address, offset, value),
            }
        }
    }
}

static DRIVER_ECAM: Once<Option<Ecam>> = Once::new();
static DRIVER_PORT: Once<PortIo> = Once::new();

/// The driver's accessor: ECAM over `window` when there is one, else port I/O.
pub fn driver_access(window: Option<EcamWindow>) -> Access {
    let ecam = DRIVER_ECAM.call_once(|| window.and_then(ecam_access));
    match ecam {
        Some(e) => Access::Ecam(e),
        None => Access::Port(DRIVER_PORT.call_once(port_io)),
    }
}

/// Vendor ID read from an empty slot or a removed function.
pub const NO_DEVICE: u16 = 0xFFFF;

/// Capability ID of the PCI Express capability.
pub const CAP_ID_PCIE: u8 = 0x10;

/// Offset of the capabilities pointer.
const CAP_POINTER: u16 = 0x34;
/// Status register bit: capabilities list present.
const STATUS_CAP_LIST: u32 = 1 << 20;

/// Reads the 32-bit register at `offset` (dword aligned).
pub fn read32(access: &impl ConfigRegionAccess, addr: PciAddress, offset: u16) -> u32 {
    // SAFETY: config reads of a dword-aligned offset below 4 KiB have no side
    // effects on memory; an absent function reads all-ones.
    unsafe { access.read(addr, offset & 0xFFC) }
}

/// Writes the 32-bit register at `offset` (dword aligned).
pub fn write32(access: &impl ConfigRegionAccess, addr: PciAddress, offset: u16, value: u32) {
    // SAFETY: the board writes only registers whose meaning it knows (Slot
    // Control, command, BAR sizing); none of them makes a device write memory.
    unsafe { access.write(addr, offset & 0xFFC, value) }
}

/// The vendor ID, [`NO_DEVICE`] when nothing answers.
pub fn vendor_id(access: &impl ConfigRegionAccess, addr: PciAddress) -> u16 {
    read32(access, addr, 0) as u16
}

/// The offset of capability `id` in the legacy capability list, if present.
/// The walk is bounded: a looping or corrupt list ends it.
pub fn find_capability(access: &impl ConfigRegionAccess, addr: PciAddress, id: u8) -> Option<u16> {
    if read32(access, addr, 0x04) & STATUS_CAP_LIST == 0 {
        return None;
    }
    let mut offset = (read32(access, addr, CAP_POINTER) & 0xFC) as u16;
    // At most 48 capabilities fit in the 192 bytes after the header.
    for _ in 0..48 {
        if offset < 0x40 {
            return None;
        }
        let header = read32(access, addr, offset);
        if header as u8 == id {
            return Some(offset);
        }
        offset = ((header >> 8) & 0xFC) as u16;
    }
    None
}

/// A port I/O accessor of its own for a component of the board.
pub fn port_io() -> PortIo {
    // SAFETY: q35 implements configuration mechanism #1. Several accessors
    // exist (the driver's, the hand's, the scenario's), but the board runs on
    // one CPU without interrupts, so no address/data pair is ever interleaved
    // with another.
    unsafe { PortIo::new() }
}
