//! The enumeration walk: bus numbering through bridges, multifunction
//! devices, malformed headers and bounds.

mod pci_common;

use bare_nvme::pci::enumerate::{Topology, MAX_DEPTH};
use bare_nvme::{Error, PhysAddr};
use bare_nvme_sim::{FunctionId, FunctionSpec, FUNCTION_PCIE_CAP};
use pci_common::{host_bridge, root_port, Fabric, MIB};
use pci_types::PciAddress;

type Small = Topology<8, 8>;

fn scan<const F: usize, const B: usize>(pci: &Fabric) -> (Topology<F, B>, bare_nvme::Result<()>) {
    let mut topology = Topology::new(0);
    let result = topology.scan(pci);
    (topology, result)
}

/// The addresses of the NVMe functions found.
fn found<const F: usize, const B: usize>(topology: &Topology<F, B>) -> Vec<PciAddress> {
    topology.functions().iter().map(|f| f.address).collect()
}

#[test]
fn qemu_like_topology_with_firmware_numbers_and_windows() {
    let pci = Fabric::new();
    pci.add_root(0, 0, host_bridge());
    let rp1 = pci.add_root(
        4,
        0,
        root_port(1, 0xC000_0000).with_prefetchable_window(0x8_0000_0000, 0x8_001F_FFFF),
    );
    pci.add_root(5, 0, root_port(2, 0xC020_0000));
    let nvme = pci.add_behind(
        rp1,
        0,
        0,
        FunctionSpec::nvme(16 << 10).with_bar0_at(0xC000_0000),
    );

    let (topology, result) = scan::<8, 8>(&pci);
    assert_eq!(result, Ok(()));
    let bridges = topology.bridges();
    assert_eq!(bridges.len(), 2);
    assert_eq!(bridges[0].address, PciAddress::new(0, 0, 4, 0));
    assert_eq!(
        (
            bridges[0].primary,
            bridges[0].secondary,
            bridges[0].subordinate
        ),
        (0, 1, 1)
    );
    assert!(!bridges[0].numbered_by_walk);
    let window = bridges[0].memory.unwrap();
    assert_eq!(window.base, PhysAddr::new(0xC000_0000));
    assert_eq!(window.limit, PhysAddr::new(0xC01F_FFFF));
    let prefetchable = bridges[0].prefetchable.unwrap();
    assert_eq!(prefetchable.base, PhysAddr::new(0x8_0000_0000));
    assert_eq!(prefetchable.size(), 2 * MIB);
    assert!(bridges[1].prefetchable.is_none(), "reset value 0 is closed");
    assert!(bridges[0].hot_plug_capable());
    assert_eq!(bridges[0].port.unwrap().capability, FUNCTION_PCIE_CAP);
    assert_eq!(bridges[1].secondary, 2);

    let functions = topology.functions();
    assert_eq!(functions.len(), 1);
    let f = &functions[0];
    assert_eq!(f.address, pci.addr(nvme));
    assert_eq!(f.address.bus(), 1);
    assert_eq!((f.vendor_id, f.device_id), (0x1B36, 0x0010));
    assert_eq!(f.parent, Some(0));
    assert_eq!(topology.parent_of(f).unwrap().address, bridges[0].address);
    let bar = f.bar0.unwrap();
    assert_eq!(bar.address, PhysAddr::new(0xC000_0000));
    assert_eq!(bar.size, 16 << 10);
    assert!(bar.is_64bit);
}

#[test]
fn unnumbered_nested_bridges_are_numbered_depth_first_and_routed() {
    let pci = Fabric::new();
    let a = pci.add_root(1, 0, FunctionSpec::bridge());
    let b = pci.add_behind(a, 0, 0, FunctionSpec::bridge());
    let deep = pci.add_behind(b, 0, 0, FunctionSpec::nvme(16 << 10));
    let beside = pci.add_behind(a, 1, 0, FunctionSpec::nvme(16 << 10));
    let c = pci.add_root(2, 0, FunctionSpec::bridge());
    let other = pci.add_behind(c, 0, 0, FunctionSpec::nvme(16 << 10));

    let (topology, result) = scan::<8, 8>(&pci);
    assert_eq!(result, Ok(()));
    let numbers: Vec<_> = topology
        .bridges()
        .iter()
        .map(|b| (b.primary, b.secondary, b.subordinate, b.numbered_by_walk))
        .collect();
    // Bus 0 is walked first (A, C recorded), then A's subtree, then C's.
    assert_eq!(numbers, [(0, 1, 2, true), (0, 3, 3, true), (1, 2, 2, true)]);
    // The hardware routes the programmed numbers to the functions found.
    assert_eq!(
        found(&topology),
        [pci.addr(deep), pci.addr(beside), pci.addr(other)]
    );
    assert_eq!(pci.addr(deep).bus(), 2);
    assert_eq!(pci.addr(beside).bus(), 1);
    assert_eq!(pci.addr(other).bus(), 3);
    assert_eq!(pci.peek(a, 0x18) & 0xFF_FFFF, 0x02_0100);
    let parents: Vec<_> = topology.functions().iter().map(|f| f.parent).collect();
    assert_eq!(parents, [Some(2), Some(0), Some(1)]);
}

#[test]
fn an_unnumbered_bridge_uses_a_spare_bus_in_its_parents_range() {
    let pci = Fabric::new();
    // Firmware reserved buses 1..=3 for this port but numbered nothing behind.
    let a = pci.add_root(1, 0, FunctionSpec::bridge().with_buses(0, 1, 3));
    let b = pci.add_behind(a, 0, 0, FunctionSpec::bridge());
    let nvme = pci.add_behind(b, 0, 0, FunctionSpec::nvme(16 << 10));
    let c = pci.add_root(2, 0, FunctionSpec::bridge().with_buses(0, 4, 4));
    let (topology, result) = scan::<8, 8>(&pci);
    assert_eq!(result, Ok(()));
    let bridges = topology.bridges();
    assert_eq!((bridges[0].secondary, bridges[0].subordinate), (1, 3));
    assert_eq!((bridges[1].secondary, bridges[1].subordinate), (2, 2));
    assert_eq!(found(&topology), [pci.addr(nvme)]);
    assert_eq!(pci.addr(c).bus(), 0);
}

#[test]
fn the_last_parent_range_grows_to_cover_a_new_bus() {
    let pci = Fabric::new();
    let a = pci.add_root(1, 0, FunctionSpec::bridge().with_buses(0, 1, 1));
    let b = pci.add_behind(a, 0, 0, FunctionSpec::bridge());
    let nvme = pci.add_behind(b, 0, 0, FunctionSpec::nvme(16 << 10));
    let (topology, result) = scan::<8, 8>(&pci);
    assert_eq!(result, Ok(()));
    let bridges = topology.bridges();
    assert_eq!((bridges[0].secondary, bridges[0].subordinate), (1, 2));
    assert!(!bridges[0].numbered_by_walk);
    assert_eq!((bridges[1].secondary, bridges[1].subordinate), (2, 2));
    assert_eq!(pci.peek(a, 0x18) & 0xFF_FFFF, 0x02_0100);
    assert_eq!(found(&topology), [pci.addr(nvme)]);
}

#[test]
fn a_parent_range_boxed_in_by_a_sibling_is_reported_not_overlapped() {
    let pci = Fabric::new();
    let a = pci.add_root(1, 0, FunctionSpec::bridge().with_buses(0, 1, 1));
    pci.add_behind(a, 0, 0, FunctionSpec::bridge());
    let c = pci.add_root(2, 0, FunctionSpec::bridge().with_buses(0, 2, 2));
    let c_nvme = pci.add_behind(c, 0, 0, FunctionSpec::nvme(16 << 10));
    let d = pci.add_root(3, 0, FunctionSpec::bridge());
    let d_nvme = pci.add_behind(d, 0, 0, FunctionSpec::nvme(16 << 10));

    let (topology, result) = scan::<8, 8>(&pci);
    assert!(
        matches!(result, Err(Error::CapacityExceeded { .. })),
        "{result:?}"
    );
    let bridges = topology.bridges();
    // The bridge behind A got nothing and A still routes only bus 1.
    assert_eq!((bridges[0].secondary, bridges[0].subordinate), (1, 1));
    assert_eq!(bridges[1].secondary, 0);
    // D was numbered after everything firmware had used.
    assert_eq!((bridges[3].secondary, bridges[3].subordinate), (3, 3));
    assert_eq!(found(&topology), [pci.addr(c_nvme), pci.addr(d_nvme)]);
}

#[test]
fn a_bridge_pointing_back_at_its_own_bus_is_renumbered() {
    let pci = Fabric::new();
    let a = pci.add_root(1, 0, FunctionSpec::bridge().with_buses(0, 1, 1));
    // Claims its own bus as secondary: following it would loop.
    let b = pci.add_behind(a, 0, 0, FunctionSpec::bridge().with_buses(1, 1, 1));
    let nvme = pci.add_behind(b, 0, 0, FunctionSpec::nvme(16 << 10));
    let (topology, result) = scan::<8, 8>(&pci);
    assert_eq!(result, Ok(()));
    assert_eq!(topology.bridges()[1].secondary, 2);
    assert_eq!(found(&topology), [pci.addr(nvme)]);
}

#[test]
fn a_bridge_claiming_a_siblings_buses_is_renumbered() {
    let pci = Fabric::new();
    let a = pci.add_root(1, 0, FunctionSpec::bridge().with_buses(0, 1, 2));
    let b = pci.add_root(2, 0, FunctionSpec::bridge().with_buses(0, 2, 2));
    let a_nvme = pci.add_behind(a, 0, 0, FunctionSpec::nvme(16 << 10));
    let (topology, result) = scan::<8, 8>(&pci);
    assert_eq!(result, Ok(()));
    let bridges = topology.bridges();
    assert_eq!((bridges[1].secondary, bridges[1].subordinate), (3, 3));
    assert_eq!(pci.addr(b).bus(), 0);
    assert_eq!(found(&topology), [pci.addr(a_nvme)]);
}

#[test]
fn multifunction_devices_are_probed_beyond_function_zero_only_when_flagged() {
    let pci = Fabric::new();
    pci.add_root(
        2,
        0,
        FunctionSpec::endpoint(0x8086, 0x1234, [0x02, 0x00, 0x00]).multifunction(),
    );
    let f1 = pci.add_root(2, 1, FunctionSpec::nvme(16 << 10));
    let f5 = pci.add_root(2, 5, FunctionSpec::nvme(16 << 10));
    // No multifunction bit: function 1 of device 3 must not be probed.
    pci.add_root(
        3,
        0,
        FunctionSpec::endpoint(0x8086, 0x1234, [0x02, 0x00, 0x00]),
    );
    pci.add_root(3, 1, FunctionSpec::nvme(16 << 10));
    // Function 0 absent: the device does not exist.
    pci.add_root(4, 1, FunctionSpec::nvme(16 << 10).multifunction());

    let (topology, result) = scan::<8, 8>(&pci);
    assert_eq!(result, Ok(()));
    assert_eq!(found(&topology), [pci.addr(f1), pci.addr(f5)]);
}

#[test]
fn absent_and_removed_functions_are_skipped() {
    let pci = Fabric::new();
    let rp = pci.add_root(4, 0, root_port(1, 0xC000_0000));
    let gone = pci.add_behind(rp, 0, 0, FunctionSpec::nvme(16 << 10));
    let kept = pci.add_root(6, 0, FunctionSpec::nvme(16 << 10));
    // A function answering vendor 0 is broken, not present.
    pci.add_root(7, 0, FunctionSpec::endpoint(0, 0, [0x01, 0x08, 0x02]));
    pci.remove(gone);
    let (topology, result) = scan::<8, 8>(&pci);
    assert_eq!(result, Ok(()));
    assert_eq!(topology.bridges().len(), 1);
    assert_eq!(found(&topology), [pci.addr(kept)]);
}

#[test]
fn an_invalid_header_type_is_reported_and_the_walk_goes_on() {
    let pci = Fabric::new();
    pci.add_root(1, 0, FunctionSpec::nvme(16 << 10).with_header_type(0x05));
    let good = pci.add_root(2, 0, FunctionSpec::nvme(16 << 10));
    let (topology, result) = scan::<8, 8>(&pci);
    assert_eq!(
        result,
        Err(Error::BadDeviceValue {
            field: "header type",
            value: 5
        })
    );
    assert_eq!(found(&topology), [pci.addr(good)]);
}

#[test]
fn capacity_overflow_is_an_error_but_keeps_what_fit() {
    let pci = Fabric::new();
    let first = pci.add_root(1, 0, FunctionSpec::nvme(16 << 10));
    pci.add_root(2, 0, FunctionSpec::nvme(16 << 10));
    let rp = pci.add_root(3, 0, root_port(1, 0xC000_0000));
    pci.add_behind(rp, 0, 0, FunctionSpec::bridge());
    let (topology, result) = scan::<1, 1>(&pci);
    assert!(matches!(
        result,
        Err(Error::CapacityExceeded { limit: 1, .. })
    ));
    assert_eq!(found(&topology), [pci.addr(first)]);
    assert_eq!(topology.bridges().len(), 1);
}

#[test]
fn an_absurd_bar_is_recorded_as_an_error_on_the_function() {
    let pci = Fabric::new();
    pci.add_root(1, 0, FunctionSpec::nvme(2 << 30));
    let (topology, result) = scan::<8, 8>(&pci);
    assert_eq!(result, Ok(()));
    assert_eq!(
        topology.functions()[0].bar0,
        Err(Error::BadDeviceValue {
            field: "BAR0 size",
            value: 2 << 30
        })
    );
}

#[test]
fn nesting_deeper_than_the_bound_stops_with_an_error() {
    let pci = Fabric::new();
    let mut parent: Option<FunctionId> = None;
    for _ in 0..MAX_DEPTH + 8 {
        let bridge = FunctionSpec::bridge();
        parent = Some(match parent {
            None => pci.add_root(1, 0, bridge),
            Some(p) => pci.add_behind(p, 0, 0, bridge),
        });
    }
    let (topology, result) = scan::<8, 64>(&pci);
    assert!(matches!(
        result,
        Err(Error::CapacityExceeded {
            what: "bridge nesting depth",
            ..
        })
    ));
    assert_eq!(topology.bridges().len(), MAX_DEPTH + 1);
    assert_eq!(
        topology
            .bridges()
            .iter()
            .filter(|b| b.secondary != 0)
            .count(),
        MAX_DEPTH
    );
}

#[test]
fn bus_numbers_run_out_after_255() {
    let pci = Fabric::new();
    for device in 0..32 {
        for function in 0..8 {
            let bridge = FunctionSpec::bridge();
            let bridge = if function == 0 {
                bridge.multifunction()
            } else {
                bridge
            };
            pci.add_root(device, function, bridge);
        }
    }
    let (topology, result) = scan::<1, 256>(&pci);
    assert!(matches!(result, Err(Error::CapacityExceeded { .. })));
    let numbered = topology
        .bridges()
        .iter()
        .filter(|b| b.secondary != 0)
        .count();
    assert_eq!(numbered, 255);
}

#[test]
fn probing_behind_a_slot_finds_a_hot_added_function_once() {
    let pci = Fabric::new();
    let rp = pci.add_root(4, 0, root_port(1, 0xC000_0000));
    let mut topology = Small::new(0);
    topology.scan(&pci).unwrap();
    assert!(topology.functions().is_empty());

    let nvme = pci.add_behind(rp, 0, 0, FunctionSpec::nvme(16 << 10));
    assert_eq!(topology.probe_behind(&pci, 0), Ok(1));
    assert_eq!(topology.probe_behind(&pci, 0), Ok(0));
    assert_eq!(found(&topology), [pci.addr(nvme)]);
    assert_eq!(topology.functions()[0].parent, Some(0));

    let address = pci.addr(nvme);
    pci.remove(nvme);
    assert!(topology.forget_function(address).is_some());
    assert!(topology.functions().is_empty());
    assert_eq!(topology.probe_behind(&pci, 0), Ok(0));
}

#[test]
fn a_bridge_that_ignores_its_bus_numbers_is_reported_and_not_walked() {
    let pci = Fabric::new();
    // Bus numbers read back 0 whatever is written.
    let deaf = pci.add_root(1, 0, FunctionSpec::bridge().with_read_only_dword(0x18));
    pci.add_behind(deaf, 0, 0, FunctionSpec::nvme(16 << 10));
    let good = pci.add_root(2, 0, FunctionSpec::bridge());
    let reachable = pci.add_behind(good, 0, 0, FunctionSpec::nvme(16 << 10));
    let (topology, result) = scan::<8, 8>(&pci);
    assert!(
        matches!(
            result,
            Err(Error::BadDeviceValue {
                field: "bridge bus numbers (read back)",
                ..
            })
        ),
        "{result:?}"
    );
    // The other bridge is numbered and walked as usual.
    assert_eq!(found(&topology), [pci.addr(reachable)]);
}
