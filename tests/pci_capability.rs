//! The capability list walk: order, bounds, cycles and absent functions.

mod pci_common;

use bare_nvme::pci::capability::{
    Capability, ID_MSI, ID_MSIX, ID_PCI_EXPRESS, ID_POWER_MANAGEMENT, MAX_CAPABILITIES,
};
use bare_nvme::pci::config::{ConfigSpace, CAPABILITY_POINTER};
use bare_nvme::{Error, Result};
use bare_nvme_sim::{FunctionId, FunctionSpec};
use pci_common::Fabric;
use pci_types::PciAddress;

fn collect(pci: &Fabric, node: FunctionId) -> Vec<Result<Capability>> {
    ConfigSpace::new(pci, pci.addr(node))
        .capabilities()
        .collect()
}

fn cap(id: u8, offset: u16) -> Result<Capability> {
    Ok(Capability { id, offset })
}

#[test]
fn walks_the_list_in_order() {
    let pci = Fabric::new();
    let node = pci.add_root(
        0,
        0,
        FunctionSpec::endpoint(1, 2, [1, 8, 2])
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
    let pci = Fabric::new();
    let node = pci.add_root(0, 0, FunctionSpec::endpoint(1, 2, [1, 8, 2]));
    pci.poke(node, CAPABILITY_POINTER, 0x40);
    assert!(collect(&pci, node).is_empty());
}

#[test]
fn a_cycle_ends_the_walk_with_an_error() {
    let pci = Fabric::new();
    let node = pci.add_root(
        0,
        0,
        FunctionSpec::endpoint(1, 2, [1, 8, 2])
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
    let pci = Fabric::new();
    let node = pci.add_root(0, 0, FunctionSpec::endpoint(1, 2, [1, 8, 2]));
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
        let pci = Fabric::new();
        let node = pci.add_root(0, 0, FunctionSpec::endpoint(1, 2, [1, 8, 2]));
        pci.set_capability_pointer(node, bad);
        let walk = collect(&pci, node);
        assert_eq!(walk.len(), 1, "pointer {bad:#x}");
        assert!(walk[0].is_err());
    }
}

#[test]
fn reserved_pointer_bits_are_masked() {
    let pci = Fabric::new();
    let node = pci.add_root(0, 0, FunctionSpec::endpoint(1, 2, [1, 8, 2]));
    pci.set_capability_pointer(node, 0x43);
    pci.poke(node, 0x40, 0x0010);
    assert_eq!(collect(&pci, node), [cap(0x10, 0x40)]);
}

#[test]
fn a_longest_possible_list_is_walked_to_its_end() {
    let pci = Fabric::new();
    let node = pci.add_root(0, 0, FunctionSpec::endpoint(1, 2, [1, 8, 2]));
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
    let pci = Fabric::new();
    let walk: Vec<_> = ConfigSpace::new(&pci, PciAddress::new(0, 0, 7, 0))
        .capabilities()
        .collect();
    assert_eq!(walk, [Err(Error::DeviceRemoved)]);
}
