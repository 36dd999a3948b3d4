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

#[cfg(test)]
mod tests {
    use pci_types::PciAddress;

    use super::*;
    use crate::pci::fake::{FakeFunction, FakePci, Node};

    fn collect(pci: &FakePci, node: Node) -> Vec<Result<Capability>> {
        ConfigSpace::new(pci, pci.addr(node))
            .capabilities()
            .collect()
    }

    fn cap(id: u8, offset: u16) -> Result<Capability> {
        Ok(Capability { id, offset })
    }

    #[test]
    fn walks_the_list_in_order() {
        let pci = FakePci::new();
        let node = pci.add_root(
            0,
            0,
            FakeFunction::endpoint(1, 2, [1, 8, 2])
                .with_capability(0x40, ID_POWER_MANAGEMENT, &[])
                .with_capability(0x50, ID_MSIX, &[])
                .with_capability(0x60, ID_PCI_EXPRESS, &[]),
        );
        assert_eq!(
            collect(&pci, node),
            [
                cap(ID_POWER_MANAGEMENT, 0x40),
                cap(ID_MSIX, 0x50),
                cap(ID_PCI_EXPRESS, 0x60)
            ]
        );
        let config = ConfigSpace::new(&pci, pci.addr(node));
        assert_eq!(config.find_capability(ID_PCI_EXPRESS), Ok(Some(0x60)));
        assert_eq!(config.find_capability(ID_MSI), Ok(None));
    }

    #[test]
    fn no_list_when_status_says_so() {
        let pci = FakePci::new();
        let node = pci.add_root(0, 0, FakeFunction::endpoint(1, 2, [1, 8, 2]));
        pci.poke(node, CAPABILITY_POINTER, 0x40);
        assert!(collect(&pci, node).is_empty());
    }

    #[test]
    fn a_cycle_ends_the_walk_with_an_error() {
        let pci = FakePci::new();
        let node = pci.add_root(
            0,
            0,
            FakeFunction::endpoint(1, 2, [1, 8, 2])
                .with_capability(0x40, ID_POWER_MANAGEMENT, &[])
                .with_capability(0x50, ID_MSIX, &[]),
        );
        // 0x50 points back to 0x40.
        pci.poke(node, 0x50, u32::from(ID_MSIX) | (0x40 << 8));
        let walk = collect(&pci, node);
        assert_eq!(walk.len(), 3);
        assert_eq!(
            walk[..2],
            [cap(ID_POWER_MANAGEMENT, 0x40), cap(ID_MSIX, 0x50)]
        );
        assert!(matches!(
            walk[2],
            Err(Error::BadDeviceValue { value: 0x40, .. })
        ));
        let config = ConfigSpace::new(&pci, pci.addr(node));
        assert!(config.find_capability(ID_PCI_EXPRESS).is_err());
    }

    #[test]
    fn a_self_loop_ends_the_walk_with_an_error() {
        let pci = FakePci::new();
        let node = pci.add_root(0, 0, FakeFunction::endpoint(1, 2, [1, 8, 2]));
        pci.set_capability_pointer(node, 0x40);
        pci.poke(node, 0x40, 0x4010);
        let walk = collect(&pci, node);
        assert_eq!(walk[0], cap(0x10, 0x40));
        assert!(walk[1].is_err());
        assert_eq!(walk.len(), 2);
    }

    #[test]
    fn pointers_into_the_header_or_beyond_are_rejected() {
        for bad in [0x08u8, 0x3C] {
            let pci = FakePci::new();
            let node = pci.add_root(0, 0, FakeFunction::endpoint(1, 2, [1, 8, 2]));
            pci.set_capability_pointer(node, bad);
            let walk = collect(&pci, node);
            assert_eq!(walk.len(), 1, "pointer {bad:#x}");
            assert!(walk[0].is_err());
        }
    }

    #[test]
    fn reserved_pointer_bits_are_masked() {
        let pci = FakePci::new();
        let node = pci.add_root(0, 0, FakeFunction::endpoint(1, 2, [1, 8, 2]));
        pci.set_capability_pointer(node, 0x43);
        pci.poke(node, 0x40, 0x0010);
        assert_eq!(collect(&pci, node), [cap(0x10, 0x40)]);
    }

    #[test]
    fn a_longest_possible_list_is_walked_to_its_end() {
        let pci = FakePci::new();
        let node = pci.add_root(0, 0, FakeFunction::endpoint(1, 2, [1, 8, 2]));
        pci.set_capability_pointer(node, 0x40);
        for offset in (0x40..0x100).step_by(4) {
            let next = if offset == 0xFC { 0 } else { offset + 4 };
            pci.poke(node, offset, u32::from(0x09 | (next << 8)));
        }
        let walk = collect(&pci, node);
        assert_eq!(walk.len(), MAX_CAPABILITIES);
        assert!(walk.iter().all(Result::is_ok));
    }

    #[test]
    fn absent_function_yields_an_error_not_a_loop() {
        let pci = FakePci::new();
        let walk: Vec<_> = ConfigSpace::new(&pci, PciAddress::new(0, 0, 7, 0))
            .capabilities()
            .collect();
        assert_eq!(walk, [Err(Error::DeviceRemoved)]);
    }
}
