//! BAR sizing and placement in bridge windows, and bus master control.

mod pci_common;

use bare_nvme::pci::bar::{disable_bus_master, probe_bar0};
use bare_nvme::pci::config::{Command, Status, BAR0, COMMAND, STATUS};
use bare_nvme::pci::enumerate::Topology;
use bare_nvme::pci::placement::BarAllocator;
use bare_nvme::pci::window::Window;
use bare_nvme::{Error, PhysAddr};
use bare_nvme_sim::{FunctionId, FunctionSpec};
use pci_common::{root_port, Fabric};
use pci_types::PciAddress;

type Allocator = BarAllocator<4, 4>;

fn scan(pci: &Fabric) -> Topology<8, 8> {
    let mut topology = Topology::new(0);
    topology.scan(pci).unwrap();
    topology
}

/// Assigns BAR0 of every function found, in walk order.
fn assign_all(
    pci: &Fabric,
    topology: &Topology<8, 8>,
    allocator: &mut Allocator,
) -> Vec<bare_nvme::Result<bare_nvme::pci::bar::Bar>> {
    topology
        .functions()
        .iter()
        .map(|f| allocator.assign_bar0(pci, f.address, topology.parent_of(f)))
        .collect()
}

/// Memory decoding on, INTx off (bus mastering is left as it was: the
/// controller turns it on once it saw the controller disabled).
fn enabled(pci: &Fabric, node: FunctionId) -> bool {
    let wanted = Command::MEMORY | Command::INTX_DISABLE;
    Command::from_bits_retain(pci.command(node)).contains(wanted)
}

#[test]
fn an_unassigned_bar_is_placed_inside_the_parent_window_and_enabled() {
    let pci = Fabric::new();
    let rp = pci.add_root(4, 0, root_port(1, 0xC020_0000));
    let nvme = pci.add_behind(rp, 0, 0, FunctionSpec::nvme(16 << 10));
    let pending = Status::RECEIVED_MASTER_ABORT.bits();
    pci.raise(nvme, STATUS, pending);
    let topology = scan(&pci);
    let mut allocator = Allocator::new(None);

    let bar = assign_all(&pci, &topology, &mut allocator)
        .remove(0)
        .unwrap();
    assert_eq!(bar.address, PhysAddr::new(0xC020_0000));
    assert_eq!(bar.size, 16 << 10);
    assert_eq!(
        pci.peek(nvme, BAR0),
        0xC020_0004,
        "address plus 64-bit type"
    );
    assert_eq!(pci.peek(nvme, BAR0 + 4), 0);
    assert!(enabled(&pci, nvme));
    assert!(
        !Command::from_bits_retain(pci.command(nvme)).contains(Command::BUS_MASTER),
        "no bus mastering before the controller is seen disabled"
    );
    assert_eq!(
        (pci.peek(nvme, COMMAND) >> 16) as u16 & pending,
        pending,
        "status kept"
    );
}

#[test]
fn two_functions_behind_one_bridge_get_disjoint_bars_in_its_window() {
    let pci = Fabric::new();
    let bridge = pci.add_root(
        3,
        0,
        FunctionSpec::bridge()
            .with_buses(0, 1, 1)
            .with_memory_window(0xD000_0000, 0xD01F_FFFF),
    );
    let first = pci.add_behind(bridge, 0, 0, FunctionSpec::nvme(16 << 10));
    let second = pci.add_behind(bridge, 1, 0, FunctionSpec::nvme(1 << 20));
    let third = pci.add_behind(bridge, 2, 0, FunctionSpec::nvme(16 << 10));
    let topology = scan(&pci);
    let mut allocator = Allocator::new(None);

    let bars: Vec<_> = assign_all(&pci, &topology, &mut allocator)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let window = topology.bridges()[0].memory.unwrap();
    for (i, a) in bars.iter().enumerate() {
        assert!(window.contains(a.address.as_u64(), a.size), "{a:?}");
        assert!(a.address.is_aligned(a.size));
        for b in &bars[i + 1..] {
            let disjoint = a.address.as_u64() + a.size <= b.address.as_u64()
                || b.address.as_u64() + b.size <= a.address.as_u64();
            assert!(disjoint, "{a:?} overlaps {b:?}");
        }
    }
    for node in [first, second, third] {
        assert!(enabled(&pci, node));
    }
}

#[test]
fn a_valid_firmware_assignment_is_kept_and_placement_avoids_it() {
    let pci = Fabric::new();
    let bridge = pci.add_root(
        3,
        0,
        FunctionSpec::bridge()
            .with_buses(0, 1, 1)
            .with_memory_window(0xD000_0000, 0xD01F_FFFF),
    );
    pci.add_behind(
        bridge,
        0,
        0,
        FunctionSpec::nvme(16 << 10).with_bar0_at(0xD000_0000),
    );
    pci.add_behind(bridge, 1, 0, FunctionSpec::nvme(16 << 10));
    let topology = scan(&pci);
    let mut allocator = Allocator::new(None);
    let bars = assign_all(&pci, &topology, &mut allocator);
    assert_eq!(bars[0].unwrap().address, PhysAddr::new(0xD000_0000));
    assert_eq!(bars[1].unwrap().address, PhysAddr::new(0xD000_4000));
    // Sizing restores the BAR; nothing else rewrote the kept one.
    let rewrites = pci
        .writes()
        .iter()
        .filter(|w| w.offset == BAR0 && w.value != u32::MAX && w.value & !0xF != 0xD000_0000)
        .filter(|w| w.function == FunctionId(1))
        .count();
    assert_eq!(rewrites, 0);
}

#[test]
fn a_firmware_assignment_outside_the_window_is_replaced() {
    for firmware in [0xE000_0000u64, 0xCFFF_C000] {
        let pci = Fabric::new();
        let bridge = pci.add_root(
            3,
            0,
            FunctionSpec::bridge()
                .with_buses(0, 1, 1)
                .with_memory_window(0xD000_0000, 0xD01F_FFFF),
        );
        let nvme = pci.add_behind(
            bridge,
            0,
            0,
            FunctionSpec::nvme(16 << 10).with_bar0_at(firmware),
        );
        let topology = scan(&pci);
        let bar = assign_all(&pci, &topology, &mut Allocator::new(None))
            .remove(0)
            .unwrap();
        assert_eq!(
            bar.address,
            PhysAddr::new(0xD000_0000),
            "firmware {firmware:#x}"
        );
        assert_eq!(pci.peek(nvme, BAR0) & !0xF, 0xD000_0000);
    }
}

#[test]
fn clashing_firmware_assignments_are_separated() {
    let pci = Fabric::new();
    let bridge = pci.add_root(
        3,
        0,
        FunctionSpec::bridge()
            .with_buses(0, 1, 1)
            .with_memory_window(0xD000_0000, 0xD01F_FFFF),
    );
    let a = pci.add_behind(
        bridge,
        0,
        0,
        FunctionSpec::nvme(16 << 10).with_bar0_at(0xD000_8000),
    );
    let b = pci.add_behind(
        bridge,
        1,
        0,
        FunctionSpec::nvme(16 << 10).with_bar0_at(0xD000_8000),
    );
    let topology = scan(&pci);
    let bars = assign_all(&pci, &topology, &mut Allocator::new(None));
    assert_eq!(bars[0].unwrap().address, PhysAddr::new(0xD000_8000));
    assert_eq!(bars[1].unwrap().address, PhysAddr::new(0xD000_0000));
    assert_eq!(pci.peek(a, BAR0) & !0xF, 0xD000_8000);
    assert_eq!(pci.peek(b, BAR0) & !0xF, 0xD000_0000);
}

#[test]
fn sizing_happens_with_memory_decoding_off_and_restores_everything() {
    let pci = Fabric::new();
    let nvme = pci.add_root(1, 0, FunctionSpec::nvme(16 << 10).with_bar0_at(0xFE00_0000));
    let address = pci.addr(nvme);
    let before = (
        pci.peek(nvme, BAR0),
        pci.peek(nvme, BAR0 + 4),
        pci.command(nvme),
    );
    let bar = probe_bar0(&pci, address).unwrap();
    assert_eq!(bar.address, PhysAddr::new(0xFE00_0000));
    assert_eq!(bar.size, 16 << 10);
    assert_eq!(
        (
            pci.peek(nvme, BAR0),
            pci.peek(nvme, BAR0 + 4),
            pci.command(nvme)
        ),
        before
    );
    // Every all-ones write to BAR0 happened while MEMORY was off.
    let mut memory_on = true;
    for w in pci.writes() {
        if w.offset == COMMAND {
            memory_on = w.value & u32::from(Command::MEMORY.bits()) != 0;
        }
        if w.offset == BAR0 && w.value == u32::MAX {
            assert!(!memory_on, "BAR0 sized with memory decoding on");
        }
    }
}

#[test]
fn absurd_or_malformed_bars_are_rejected() {
    let cases = [
        ("2 GiB", FunctionSpec::nvme(2 << 30)),
        ("4 KiB", FunctionSpec::nvme(4 << 10)),
        (
            "I/O BAR",
            FunctionSpec::nvme(16 << 10).with_bar0_raw(0x1, 0xFFFF_FF00),
        ),
        (
            "reserved type",
            FunctionSpec::nvme(16 << 10).with_bar0_raw(0x2, 0xFFFF_C000),
        ),
        (
            "not implemented",
            FunctionSpec::nvme(16 << 10).with_bar0_raw(0x0, 0),
        ),
        (
            "holes in the mask",
            FunctionSpec::nvme(16 << 10).with_bar0_raw(0x0, 0xF0F0_0000),
        ),
    ];
    for (name, function) in cases {
        let pci = Fabric::new();
        let nvme = pci.add_root(1, 0, function);
        let result = probe_bar0(&pci, pci.addr(nvme));
        assert!(
            matches!(result, Err(Error::BadDeviceValue { .. })),
            "{name}: {result:?}"
        );
        let mut allocator = Allocator::new(Window::new(PhysAddr::new(0xC000_0000), 1 << 28));
        assert!(allocator.assign_bar0(&pci, pci.addr(nvme), None).is_err());
        assert!(!enabled(&pci, nvme), "{name}: enabled despite a bad BAR");
    }
}

#[test]
fn a_32_bit_bar_is_sized_and_placed() {
    let pci = Fabric::new();
    let nvme = pci.add_root(
        1,
        0,
        FunctionSpec::endpoint(0x1B36, 0x0010, [1, 8, 2]).with_bar0_32(0x4000),
    );
    let mut allocator = Allocator::new(Window::new(PhysAddr::new(0xC000_0000), 1 << 20));
    let bar = allocator.assign_bar0(&pci, pci.addr(nvme), None).unwrap();
    assert!(!bar.is_64bit);
    assert_eq!(bar.address, PhysAddr::new(0xC000_0000));
    assert_eq!(pci.peek(nvme, BAR0), 0xC000_0000);
}

#[test]
fn bus_zero_uses_the_root_window_or_fails_without_one() {
    let pci = Fabric::new();
    let nvme = pci.add_root(1, 0, FunctionSpec::nvme(16 << 10));
    let address = pci.addr(nvme);
    assert_eq!(
        Allocator::new(None).assign_bar0(&pci, address, None),
        Err(Error::DeviceUnsupported {
            what: "a memory window to place BAR0 in"
        })
    );
    assert!(!enabled(&pci, nvme));
    let root = Window::new(PhysAddr::new(0x8_0000_0000), 1 << 30);
    let bar = Allocator::new(root)
        .assign_bar0(&pci, address, None)
        .unwrap();
    assert_eq!(bar.address, PhysAddr::new(0x8_0000_0000));
    assert_eq!(pci.peek(nvme, BAR0 + 4), 0x8);
    assert!(enabled(&pci, nvme));
}

#[test]
fn a_full_window_is_a_capacity_error() {
    let pci = Fabric::new();
    let rp = pci.add_root(4, 0, root_port(1, 0xC000_0000));
    pci.add_behind(rp, 0, 0, FunctionSpec::nvme(4 << 20));
    let topology = scan(&pci);
    let result = assign_all(&pci, &topology, &mut Allocator::new(None)).remove(0);
    assert!(
        matches!(result, Err(Error::CapacityExceeded { .. })),
        "{result:?}"
    );
}

#[test]
fn a_bridge_without_a_window_cannot_take_an_unassigned_bar() {
    let pci = Fabric::new();
    let bridge = pci.add_root(3, 0, FunctionSpec::bridge().with_buses(0, 1, 1));
    pci.add_behind(bridge, 0, 0, FunctionSpec::nvme(16 << 10));
    let topology = scan(&pci);
    assert!(topology.bridges()[0].memory.is_none());
    let result = assign_all(&pci, &topology, &mut Allocator::new(None)).remove(0);
    assert!(matches!(result, Err(Error::DeviceUnsupported { .. })));
}

#[test]
fn a_reinserted_function_gets_the_released_range_back() {
    let pci = Fabric::new();
    // A window with room for exactly one 1 MiB BAR after the first function.
    let rp = pci.add_root(4, 0, root_port(1, 0xC000_0000));
    let first = pci.add_behind(rp, 0, 0, FunctionSpec::nvme(1 << 20));
    let mut topology = scan(&pci);
    let mut allocator = Allocator::new(None);
    let placed = assign_all(&pci, &topology, &mut allocator)
        .remove(0)
        .unwrap();
    let address: PciAddress = pci.addr(first);

    pci.remove(first);
    topology.forget_function(address).unwrap();
    assert!(allocator.release(address));
    assert!(!allocator.release(address));

    let again = pci.add_behind(rp, 0, 0, FunctionSpec::nvme(1 << 20));
    assert_eq!(topology.probe_behind(&pci, 0), Ok(1));
    let f = topology.functions()[0];
    let bar = allocator
        .assign_bar0(&pci, f.address, topology.parent_of(&f))
        .unwrap();
    assert_eq!(bar.address, placed.address);
    assert!(enabled(&pci, again));
}

#[test]
fn bus_mastering_can_be_switched_off_for_quarantine() {
    let pci = Fabric::new();
    let nvme = pci.add_root(1, 0, FunctionSpec::nvme(16 << 10));
    let address = pci.addr(nvme);
    let root = Window::new(PhysAddr::new(0xC000_0000), 1 << 20);
    Allocator::new(root)
        .assign_bar0(&pci, address, None)
        .unwrap();
    assert_eq!(disable_bus_master(&pci, address), Ok(()));
    let command = Command::from_bits_retain(pci.command(nvme));
    assert!(!command.contains(Command::BUS_MASTER));
    assert!(command.contains(Command::MEMORY));
    pci.remove(nvme);
    assert_eq!(disable_bus_master(&pci, address), Err(Error::DeviceRemoved));
}

#[test]
fn a_prefetchable_bar_in_the_prefetchable_window_is_kept() {
    let pci = Fabric::new();
    let bridge = pci.add_root(
        3,
        0,
        FunctionSpec::bridge()
            .with_buses(0, 1, 1)
            .with_memory_window(0xD000_0000, 0xD01F_FFFF)
            .with_prefetchable_window(0x8_0000_0000, 0x8_3FFF_FFFF),
    );
    let prefetchable_64 = 0b1100;
    let nvme = pci.add_behind(
        bridge,
        0,
        0,
        FunctionSpec::nvme(16 << 10)
            .with_bar0_raw(prefetchable_64, 0xFFFF_C000)
            .with_bar0_at(0x8_0000_0000),
    );
    let topology = scan(&pci);
    let bar = assign_all(&pci, &topology, &mut Allocator::new(None))
        .remove(0)
        .unwrap();
    assert!(bar.prefetchable);
    assert_eq!(bar.address, PhysAddr::new(0x8_0000_0000));
    assert_eq!(pci.peek(nvme, BAR0 + 4), 0x8);
    assert!(enabled(&pci, nvme));
}

/// A function whose BAR0 firmware placed inside the bridge window but whose
/// controller memory buffer (BAR2) sits at an old address outside it, and
/// one whose BAR4 was never assigned: neither is enabled with a BAR
/// decoding outside the window; both get every BAR inside it.
#[test]
fn every_memory_bar_is_inside_the_window_before_memory_decoding_is_on() {
    let pci = Fabric::new();
    let bridge = pci.add_root(
        3,
        0,
        FunctionSpec::bridge()
            .with_buses(0, 1, 1)
            .with_memory_window(0xD000_0000, 0xD01F_FFFF),
    );
    let stale = pci.add_behind(
        bridge,
        0,
        0,
        FunctionSpec::nvme(16 << 10)
            .with_memory_bar(2, 64 << 10, true, false)
            .with_memory_bar_at(2, 0xE000_0000)
            .with_bar0_at(0xD000_0000),
    );
    let unassigned = pci.add_behind(
        bridge,
        1,
        0,
        FunctionSpec::nvme(16 << 10).with_memory_bar(4, 4 << 10, false, false),
    );
    let topology = scan(&pci);
    let results = assign_all(&pci, &topology, &mut Allocator::new(None));
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let window = (0xD000_0000u64, 0xD01F_FFFFu64);
    let inside = |base: u64, size: u64| window.0 <= base && base + size - 1 <= window.1;
    let bar = |f: FunctionId, index: u16| u64::from(pci.peek(f, BAR0 + 4 * index) & !0xF);
    let bar2 = bar(stale, 2) | u64::from(pci.peek(stale, BAR0 + 12)) << 32;
    let placed = [
        (bar(stale, 0), 16 << 10),
        (bar2, 64 << 10),
        (bar(unassigned, 0), 16 << 10),
        (bar(unassigned, 4), 4 << 10),
    ];
    for (i, &(base, size)) in placed.iter().enumerate() {
        assert!(base != 0 && inside(base, size), "BAR {i} at {base:#x}");
        for &(other, other_size) in &placed[i + 1..] {
            assert!(
                base + size <= other || other + other_size <= base,
                "overlap"
            );
        }
    }
    assert!(enabled(&pci, stale) && enabled(&pci, unassigned));
}
