//! The capability list of a function, walked defensively.
//!
//! The list is a chain of pointers read from the device: it may point outside
//! the capability area, at itself, or around in a circle. The walk checks each
//! pointer before following it and remembers where it has been, so it ends
//! after at most [`MAX_CAPABILITIES`] steps whatever the device says.

use pci_types::ConfigRegionAccess;

use super::config::{ConfigSpace, Status, CAPABILITY_POINTER};
use crate::error::{Error, Result};

/// Capability ID of the PCI Express capability.
pub const ID_PCI_EXPRESS: u8 = 0x10;
/// Capability ID of MSI.
pub const ID_MSI: u8 = 0x05;
/// Capability ID of MSI-X.
pub const ID_MSIX: u8 = 0x11;
/// Capability ID of power management.
pub const ID_POWER_MANAGEMENT: u8 = 0x01;

/// First offset a capability may live at: the header ends at 0x40.
const FIRST: u16 = 0x40;
/// The legacy capability list lives below 0x100 (extended ones above).
const END: u16 = 0x100;
/// How many dword-aligned places there are for a capability, and so the most
/// capabilities a valid list can have.
pub const MAX_CAPABILITIES: usize = ((END - FIRST) / 4) as usize;

/// One entry of the capability list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capability {
    /// The capability ID.
    pub id: u8,
    /// Its offset in configuration space.
    pub offset: u16,
}

/// Iterator over a function's capabilities. Yields `Err` once (and then ends)
/// when a pointer is out of range or the list loops.
pub struct Capabilities<'a, A: ConfigRegionAccess + ?Sized> {
    config: ConfigSpace<'a, A>,
    /// Next offset to visit, 0 when done.
    next: u16,
    /// Dwords 0x40..0x100 already visited, one bit each.
    visited: u64,
    /// Set once the walk ended (list end or error).
    done: bool,
    /// The function did not answer: the walk yields `DeviceRemoved` once.
    absent: bool,
}

impl<'a, A: ConfigRegionAccess + ?Sized> Capabilities<'a, A> {
    pub(crate) fn new(config: ConfigSpace<'a, A>) -> Self {
        // An absent function reads all-ones, CAP_LIST included: check presence
        // first so that the walk reports the removal instead of garbage.
        let present = config.is_present();
        let has_list = present && config.status().contains(Status::CAP_LIST);
        let next = if has_list {
            mask_pointer(config.read8(CAPABILITY_POINTER))
        } else {
            0
        };
        Self {
            config,
            next,
            visited: 0,
            done: present && !has_list,
            absent: !present,
        }
    }

    fn fail(&mut self, field: &'static str, value: u16) -> Option<Result<Capability>> {
        self.done = true;
        Some(Err(Error::BadDeviceValue {
            field,
            value: value.into(),
        }))
    }
}

/// Capability pointers carry two reserved low bits that software must mask
/// off (PCI Local Bus 3.0, 6.7).
fn mask_pointer(raw: u8) -> u16 {
    u16::from(raw & !3)
}

/// The capability list of a function, read through its configuration
/// space (here rather than in `config`, which the list walk builds on).
impl<'a, A: ConfigRegionAccess + ?Sized> ConfigSpace<'a, A> {
    /// The function's capability list, bounded and checked for cycles.
    pub fn capabilities(&self) -> Capabilities<'a, A> {
        Capabilities::new(*self)
    }

    /// The offset of the first capability with `id`, `Ok(None)` when the list
    /// has none, an error when the list is malformed before one is found.
    pub fn find_capability(&self, id: u8) -> Result<Option<u16>> {
        for capability in self.capabilities() {
            let capability = capability?;
            if capability.id == id {
                return Ok(Some(capability.offset));
            }
        }
        Ok(None)
    }
}

impl<A: ConfigRegionAccess + ?Sized> Iterator for Capabilities<'_, A> {
    type Item = Result<Capability>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if self.absent {
            self.done = true;
            return Some(Err(Error::DeviceRemoved));
        }
        let offset = self.next;
        if offset == 0 {
            self.done = true;
            return None;
        }
        if !(FIRST..END).contains(&offset) {
            return self.fail("capability pointer", offset);
        }
        let bit = 1u64 << ((offset - FIRST) / 4);
        if self.visited & bit != 0 {
            return self.fail("capability pointer (cycle)", offset);
        }
        self.visited |= bit;
        let header = self.config.read16(offset);
        self.next = mask_pointer((header >> 8) as u8);
        Some(Ok(Capability {
            id: header as u8,
            offset,
        }))
    }
}

/// First offset of the extended capability list (PCIe Base 6.0, 7.6).
const EXTENDED_FIRST: u16 = 0x100;
/// End of a function's configuration space.
const EXTENDED_END: u16 = 0x1000;
/// The most extended capabilities a valid list can have: one per dword.
const MAX_EXTENDED: usize = ((EXTENDED_END - EXTENDED_FIRST) / 4) as usize;

impl<A: ConfigRegionAccess + ?Sized> ConfigSpace<'_, A> {
    /// The offset of the first extended capability with `id`, walked from
    /// 0x100 with every pointer checked (dword aligned, inside 0x100..0x1000,
    /// strictly increasing, so the walk ends after at most 960 steps even on
    /// a list that loops). `None` when there is none, the list is malformed,
    /// or the function does not answer.
    pub fn find_extended_capability(&self, id: u16) -> Option<u16> {
        let mut offset = EXTENDED_FIRST;
        for _ in 0..MAX_EXTENDED {
            let header = self.read32(offset);
            if header == 0 || header == u32::MAX {
                return None;
            }
            if header as u16 == id {
                return Some(offset);
            }
            let next = (header >> 20) as u16 & !3;
            // A pointer backwards or to itself would loop.
            if next <= offset || next >= EXTENDED_END {
                return None;
            }
            offset = next;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use core::cell::RefCell;

    use pci_types::{ConfigRegionAccess, PciAddress};

    use super::*;

    /// One function's 4 KiB of configuration space, in memory.
    struct Space(RefCell<[u32; 1024]>);

    impl ConfigRegionAccess for Space {
        unsafe fn read(&self, _: PciAddress, offset: u16) -> u32 {
            self.0.borrow()[usize::from(offset / 4)]
        }

        unsafe fn write(&self, _: PciAddress, offset: u16, value: u32) {
            self.0.borrow_mut()[usize::from(offset / 4)] = value;
        }
    }

    fn space(headers: &[(u16, u32)]) -> Space {
        let mut dwords = [0u32; 1024];
        dwords[0] = 0x0010_1b36;
        for &(at, header) in headers {
            dwords[usize::from(at / 4)] = header;
        }
        Space(RefCell::new(dwords))
    }

    fn find(space: &Space, id: u16) -> Option<u16> {
        ConfigSpace::new(space, PciAddress::new(0, 1, 0, 0)).find_extended_capability(id)
    }

    /// An extended capability header: ID, version 1, next pointer.
    fn header(id: u16, next: u16) -> u32 {
        u32::from(id) | 1 << 16 | u32::from(next) << 20
    }

    #[test]
    fn the_extended_list_is_followed_and_ends_on_any_malformed_pointer() {
        let list = space(&[(0x100, header(0x01, 0x140)), (0x140, header(0x1D, 0))]);
        assert_eq!(find(&list, 0x1D), Some(0x140));
        assert_eq!(find(&list, 0x02), None);
        // A pointer back (a loop), to itself, or past the end: no capability.
        let looping = space(&[(0x100, header(0x01, 0x140)), (0x140, header(0x02, 0x100))]);
        assert_eq!(find(&looping, 0x1D), None);
        let itself = space(&[(0x100, header(0x01, 0x100))]);
        assert_eq!(find(&itself, 0x1D), None);
        let unaligned = space(&[(0x100, header(0x01, 0x143)), (0x140, header(0x1D, 0))]);
        assert_eq!(find(&unaligned, 0x1D), Some(0x140), "low bits masked");
        // No extended space (all-ones or zero at 0x100).
        assert_eq!(find(&space(&[(0x100, u32::MAX)]), 0x1D), None);
        assert_eq!(find(&space(&[]), 0x1D), None);
        // The longest list there can be: a capability in every dword.
        let mut every: [(u16, u32); 960] = [(0, 0); 960];
        for (i, slot) in every.iter_mut().enumerate() {
            let at = 0x100 + 4 * i as u16;
            let next = if at == 0xFFC { 0 } else { at + 4 };
            *slot = (at, header(0x01, next));
        }
        every[959].1 = header(0x1D, 0);
        assert_eq!(find(&space(&every), 0x1D), Some(0xFFC));
    }

    #[test]
    fn a_dpc_capability_too_close_to_the_end_is_not_used() {
        use crate::pci::dpc::Dpc;
        let at_end = space(&[(0x100, header(0x01, 0xFFC)), (0xFFC, header(0x1D, 0))]);
        assert_eq!(Dpc::find(&at_end, PciAddress::new(0, 1, 0, 0)), None);
        let fine = space(&[(0x100, header(0x1D, 0))]);
        assert!(Dpc::find(&fine, PciAddress::new(0, 1, 0, 0)).is_some());
    }
}
