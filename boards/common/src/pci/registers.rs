//! Small configuration-space helpers for the board's own components (the
//! bus walk for the log, the hand, scenario checks), over any accessor.

use pci_types::{ConfigRegionAccess, PciAddress};

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
