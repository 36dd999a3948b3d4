//! Resource assignment without firmware: bus numbers with hot-plug reserves,
//! bridge windows sized from what is behind them, BARs inside, I/O windows
//! closed, and per-function reasons when the host window is too small.

mod pci_common;

use bare_nvme::pci::assign::{HostWindows, HotplugReserve};
use bare_nvme::pci::enumerate::Topology;
use bare_nvme::pci::window::Window;
use bare_nvme::{Error, PhysAddr};
use bare_nvme_sim::{FunctionId, FunctionSpec};
use pci_common::{Fabric, DLLLARC, MIB, QEMU_SLOT};

type Topo = Topology<16, 16>;

/// The `virt` board's 32-bit window and 64-bit prefetchable window.
fn virt_host() -> HostWindows {
    HostWindows {
        memory: Window::new(PhysAddr::new(0x1000_0000), 0x2eff_0000).unwrap(),
        prefetchable: Some(Window::new(PhysAddr::new(0x80_0000_0000), 0x80_0000_0000).unwrap()),
    }
}

fn memory_only(base: u64, size: u64) -> HostWindows {
    HostWindows {
        memory: Window::new(PhysAddr::new(base), size).unwrap(),
        prefetchable: None,
    }
}

/// A PCIe port as after reset, with a hot-plug slot or without.
fn port(hot_plug: bool) -> FunctionSpec {
    FunctionSpec::bridge().with_pcie_port(hot_plug.then_some(QEMU_SLOT), DLLLARC)
}

/// Bus numbers (primary, secondary, subordinate) of a bridge function.
fn buses(pci: &Fabric, f: FunctionId) -> (u8, u8, u8) {
    let v = pci.peek(f, 0x18);
    (v as u8, (v >> 8) as u8, (v >> 16) as u8)
}

/// The non-prefetchable window programmed in a bridge: (base, last).
fn memory_window(pci: &Fabric, f: FunctionId) -> Option<(u64, u64)> {
    let v = pci.peek(f, 0x20);
    let base = u64::from(v & 0xFFF0) << 16;
    let last = u64::from(v & 0xFFF0_0000) | 0xF_FFFF;
    (base <= last).then_some((base, last))
}

/// The prefetchable window programmed in a bridge: (base, last).
fn prefetchable_window(pci: &Fabric, f: FunctionId) -> Option<(u64, u64)> {
    let v = pci.peek(f, 0x24);
    let base = u64::from(v & 0xFFF0) << 16 | u64::from(pci.peek(f, 0x28)) << 32;
    let last = u64::from(v & 0xFFF0_0000) | 0xF_FFFF | u64::from(pci.peek(f, 0x2C)) << 32;
    (base <= last).then_some((base, last))
}

fn bar0(pci: &Fabric, f: FunctionId) -> u64 {
    u64::from(pci.peek(f, 0x10) & !0xF) | u64::from(pci.peek(f, 0x14)) << 32
}

fn inside(outer: (u64, u64), base: u64, size: u64) -> bool {
    outer.0 <= base && base + size - 1 <= outer.1
}

fn assign(pci: &Fabric, host: HostWindows, reserve: HotplugReserve) -> (Topo, usize) {
    let mut topology = Topo::new(0);
    topology.renumber(pci, reserve.buses).unwrap();
    let stranded = topology.assign_memory(pci, host, reserve);
    (topology, stranded)
}

/// Root ports (one hot-plug slot empty, one with a controller), a switch
/// behind a third root port with controllers on two downstream ports.
struct Machine {
    pci: Fabric,
    empty: FunctionId,
    rp: FunctionId,
    rp_nvme: FunctionId,
    switch_rp: FunctionId,
    upstream: FunctionId,
    downstream: [FunctionId; 2],
    switch_nvme: [FunctionId; 2],
}

fn machine() -> Machine {
    let pci = Fabric::new();
    let empty = pci.add_root(1, 0, port(true));
    let rp = pci.add_root(2, 0, port(true));
    let rp_nvme = pci.add_behind(rp, 0, 0, FunctionSpec::nvme(16 << 10));
    let switch_rp = pci.add_root(3, 0, port(true));
    let upstream = pci.add_behind(switch_rp, 0, 0, port(false));
    let downstream = [
        pci.add_behind(upstream, 0, 0, port(true)),
        pci.add_behind(upstream, 1, 0, port(true)),
    ];
    let switch_nvme = [
        pci.add_behind(downstream[0], 0, 0, FunctionSpec::nvme(16 << 10)),
        pci.add_behind(downstream[1], 0, 0, FunctionSpec::nvme(4 * MIB)),
    ];
    Machine {
        pci,
        empty,
        rp,
        rp_nvme,
        switch_rp,
        upstream,
        downstream,
        switch_nvme,
    }
}

#[test]
fn an_unconfigured_switch_topology_gets_buses_windows_and_bars() {
    let m = machine();
    let pci = &m.pci;
    let reserve = HotplugReserve::default();
    let (topology, stranded) = assign(pci, virt_host(), reserve);
    assert_eq!(stranded, 0);
    assert_eq!(topology.functions().len(), 3);

    // Depth-first numbers; a hot-plug port keeps `buses` numbers beyond its
    // secondary bus, a port with a switch covers the switch and its reserves.
    assert_eq!(buses(pci, m.empty), (0, 1, 4));
    assert_eq!(buses(pci, m.rp), (0, 5, 8));
    let (_, s, sub) = buses(pci, m.switch_rp);
    assert_eq!(s, 9);
    assert_eq!(buses(pci, m.upstream), (9, 10, sub));
    assert_eq!(buses(pci, m.downstream[0]), (10, 11, 14));
    assert_eq!(buses(pci, m.downstream[1]), (10, 15, 18));
    assert_eq!(sub, 18);
    for (f, nvme) in [(m.rp, m.rp_nvme), (m.downstream[0], m.switch_nvme[0])] {
        assert_eq!(pci.addr(nvme).bus(), buses(pci, f).1);
    }

    // Every BAR is inside each window above it; windows nest; siblings and
    // BARs are disjoint; the empty hot-plug port holds its reserve.
    let sizes = [16 << 10, 16 << 10, 4 * MIB];
    let parents = [
        vec![m.rp],
        vec![m.downstream[0], m.upstream, m.switch_rp],
        vec![m.downstream[1], m.upstream, m.switch_rp],
    ];
    let mut ranges = vec![];
    for (i, nvme) in [m.rp_nvme, m.switch_nvme[0], m.switch_nvme[1]]
        .into_iter()
        .enumerate()
    {
        let bar = bar0(pci, nvme);
        assert_ne!(bar, 0);
        assert_eq!(bar % sizes[i], 0, "naturally aligned");
        assert!(
            bar + sizes[i] <= 1 << 32,
            "non-prefetchable BARs below 4 GiB"
        );
        for &p in &parents[i] {
            let w = memory_window(pci, p).expect("window open");
            assert!(inside(w, bar, sizes[i]), "BAR {bar:#x} outside {w:x?}");
        }
        ranges.push((bar, bar + sizes[i] - 1));
    }
    let empty = memory_window(pci, m.empty).unwrap();
    assert!(empty.1 - empty.0 + 1 >= reserve.memory);
    ranges.push(empty);
    for p in [m.rp, m.switch_rp] {
        ranges.push(memory_window(pci, p).unwrap());
    }
    // A port with a controller has the reserve too (what a replacement
    // gets once the controller is pulled).
    let rp = memory_window(pci, m.rp).unwrap();
    assert!(rp.1 - rp.0 + 1 >= reserve.memory);
    let host = virt_host().memory;
    for &(b, l) in &ranges[3..] {
        assert!(host.contains(b, l - b + 1));
        assert_eq!(b % MIB, 0, "1 MiB granularity");
    }
    let mut roots: Vec<_> = ranges[3..].to_vec();
    roots.sort();
    for w in roots.windows(2) {
        assert!(w[0].1 < w[1].0, "sibling windows overlap: {roots:x?}");
    }
    let (a, b) = (ranges[1], ranges[2]);
    assert!(a.1 < b.0 || b.1 < a.0);

    // Bridges forward memory and master the bus, I/O stays closed, no
    // prefetchable window is opened for non-prefetchable BARs (only the
    // hot-plug reserve asks for one).
    for f in [m.empty, m.rp, m.switch_rp, m.upstream, m.downstream[0]] {
        let command = pci.command(f);
        assert_eq!(command & 0b111, 0b110, "memory and bus master on, I/O off");
        let io = pci.peek(f, 0x1C);
        assert!(
            (io & 0xF0) > ((io >> 8) & 0xF0),
            "I/O window closed: {io:#x}"
        );
    }
    assert!(
        prefetchable_window(pci, m.upstream).is_some(),
        "reserves below"
    );
    let recorded = topology.bridges()[0].memory.unwrap();
    assert_eq!((recorded.base.as_u64(), recorded.limit.as_u64()), empty);
}

#[test]
fn a_64_bit_prefetchable_bar_goes_above_4_gib_when_the_host_allows() {
    let none = HotplugReserve::default().buses(0).memory(0).prefetchable(0);
    let pci = Fabric::new();
    let rp = pci.add_root(1, 0, port(false));
    let nvme = pci.add_behind(rp, 0, 0, prefetchable_nvme(MIB));
    let (topology, stranded) = assign(&pci, virt_host(), none);
    assert_eq!(stranded, 0);
    let bar = bar0(&pci, nvme);
    assert!(bar >= 0x80_0000_0000, "{bar:#x}");
    let w = prefetchable_window(&pci, rp).unwrap();
    assert!(inside(w, bar, MIB));
    assert_eq!(
        memory_window(&pci, rp),
        None,
        "nothing needs the 32-bit window"
    );
    assert_eq!(topology.functions()[0].bar0.unwrap().address.as_u64(), bar);

    // Without a host prefetchable window the same BAR goes below 4 GiB.
    let pci = Fabric::new();
    let rp = pci.add_root(1, 0, port(false));
    let nvme = pci.add_behind(rp, 0, 0, prefetchable_nvme(MIB));
    let (_, stranded) = assign(&pci, memory_only(0xC000_0000, 0x1000_0000), none);
    assert_eq!(stranded, 0);
    let bar = bar0(&pci, nvme);
    assert!(inside(memory_window(&pci, rp).unwrap(), bar, MIB));
    assert!(bar < 1 << 32);
    assert_eq!(prefetchable_window(&pci, rp), None);
}

/// An NVMe function with a 64-bit prefetchable BAR0 of `size` bytes.
fn prefetchable_nvme(size: u64) -> FunctionSpec {
    FunctionSpec::nvme(size).with_bar0_prefetchable()
}

#[test]
fn a_host_window_too_small_skips_functions_with_the_reason() {
    let pci = Fabric::new();
    let a = pci.add_root(1, 0, port(false));
    let b = pci.add_root(2, 0, port(false));
    let big = pci.add_behind(a, 0, 0, FunctionSpec::nvme(4 * MIB));
    let small = pci.add_behind(b, 0, 0, FunctionSpec::nvme(16 << 10));
    let reserve = HotplugReserve::default();
    // 3 MiB: room for the small one's 1 MiB window, not for the 4 MiB one.
    let (topology, stranded) = assign(&pci, memory_only(0xC000_0000, 3 * MIB), reserve);
    assert_eq!(stranded, 1);
    let f = |at| {
        topology
            .functions()
            .iter()
            .find(|f| f.address == pci.addr(at))
            .unwrap()
            .bar0
    };
    assert!(
        matches!(f(big), Err(Error::CapacityExceeded { .. })),
        "{:?}",
        f(big)
    );
    assert_eq!(bar0(&pci, big), 0, "not programmed");
    assert_eq!(memory_window(&pci, a), None, "its bridge stays closed");
    let bar = f(small).unwrap();
    assert!(inside(
        memory_window(&pci, b).unwrap(),
        bar.address.as_u64(),
        bar.size
    ));
    assert_eq!(bar0(&pci, small), bar.address.as_u64());
}

#[test]
fn renumbering_replaces_firmware_numbers_depth_first() {
    let pci = Fabric::new();
    // Firmware numbers that a depth-first walk would not give.
    let a = pci.add_root(1, 0, port(false).with_buses(0, 7, 9));
    let b = pci.add_root(2, 0, port(false).with_buses(0, 3, 3));
    let inner = pci.add_behind(a, 0, 0, port(false).with_buses(7, 8, 8));
    let nvme = pci.add_behind(inner, 0, 0, FunctionSpec::nvme(16 << 10));
    let none = HotplugReserve::default().buses(0).memory(0).prefetchable(0);
    let (topology, _) = assign(&pci, virt_host(), none);
    assert_eq!(buses(&pci, a), (0, 1, 2));
    assert_eq!(buses(&pci, inner), (1, 2, 2));
    assert_eq!(buses(&pci, b), (0, 3, 3));
    assert_eq!(pci.addr(nvme).bus(), 2);
    assert_eq!(topology.functions()[0].address, pci.addr(nvme));
}

#[test]
fn a_switch_hot_added_into_a_reserved_port_is_numbered_and_given_memory() {
    let pci = Fabric::new();
    let other = pci.add_root(1, 0, port(true));
    let rp = pci.add_root(2, 0, port(true));
    let reserve = HotplugReserve::default();
    let (mut topology, _) = assign(&pci, virt_host(), reserve);
    assert_eq!(buses(&pci, rp), (0, 5, 8));
    let port_window = memory_window(&pci, rp).unwrap();
    let before = memory_window(&pci, other);

    // A switch with one hot-plug downstream port and a controller behind it
    // arrives in the port's slot, straight from reset.
    let upstream = pci.add_behind(rp, 0, 0, port(false));
    let downstream = pci.add_behind(upstream, 0, 0, port(true));
    let nvme = pci.add_behind(downstream, 0, 0, FunctionSpec::nvme(16 << 10));
    let index = topology.bridge_index(pci.addr(rp)).unwrap();
    assert_eq!(topology.probe_behind(&pci, index), Ok(1));
    // Compact inside the port's range (5-8), so that every port of a wider
    // switch finds a number.
    assert_eq!(buses(&pci, upstream), (5, 6, 7));
    assert_eq!(buses(&pci, downstream), (6, 7, 7));
    assert_eq!(pci.addr(nvme).bus(), 7);

    let (size, _) = topology
        .memory_need_behind(&pci, index, reserve)
        .expect("the controller needs memory");
    assert!(
        size <= port_window.1 - port_window.0 + 1,
        "fits the reserve"
    );
    let window = Window::new(PhysAddr::new(port_window.0), size).unwrap();
    assert_eq!(
        topology.assign_memory_behind(&pci, index, window, reserve),
        0
    );
    let bar = bar0(&pci, nvme);
    for f in [downstream, upstream, rp] {
        let w = memory_window(&pci, f).expect("window open");
        assert!(inside(w, bar, 16 << 10), "BAR {bar:#x} outside {w:x?}");
        assert!(inside(port_window, w.0, w.1 - w.0 + 1));
    }
    assert_eq!(
        memory_window(&pci, rp).unwrap(),
        port_window,
        "the port keeps its window"
    );
    assert_eq!(memory_window(&pci, other), before, "nothing else moves");
    assert_eq!(pci.command(upstream) & 0b110, 0b110);
    // Probing again (a later slot event) leaves the configured switch alone.
    let writes = pci.writes().len();
    assert_eq!(topology.probe_behind(&pci, index), Ok(0));
    assert!(
        pci.writes()[writes..].iter().all(|w| w.offset != 0x18),
        "no renumbering"
    );
}

#[test]
fn a_bridge_that_ignores_its_window_decodes_nothing_and_strands_what_is_behind_it() {
    let pci = Fabric::new();
    // The memory window dword (20h) reads 0 whatever is written.
    let deaf = pci.add_root(1, 0, port(false).with_read_only_dword(0x20));
    let lost = pci.add_behind(deaf, 0, 0, FunctionSpec::nvme(16 << 10));
    let good = pci.add_root(2, 0, port(false));
    let placed = pci.add_behind(good, 0, 0, FunctionSpec::nvme(16 << 10));
    let (topology, stranded) = assign(
        &pci,
        memory_only(0x1000_0000, 0x1000_0000),
        Default::default(),
    );
    assert_eq!(stranded, 1);
    let lost_address = pci.addr(lost);
    let lost_function = topology
        .functions()
        .iter()
        .find(|f| f.address == lost_address)
        .expect("recorded");
    assert!(
        matches!(
            lost_function.bar0,
            Err(Error::BadDeviceValue {
                field: "bridge window (read back)",
                ..
            })
        ),
        "{:?}",
        lost_function.bar0
    );
    // A window base 0 limit 1 MiB, made up, must not decode: memory space
    // and bus mastering stay off on that bridge.
    assert_eq!(pci.peek(deaf, 0x04) & 0x7, 0, "command register");
    assert_eq!(bar0(&pci, lost), 0, "nothing behind it programmed");
    // The other bridge and its controller are placed as usual.
    assert_eq!(pci.peek(good, 0x04) & 0x6, 0x6);
    assert!(inside(
        memory_window(&pci, good).unwrap(),
        bar0(&pci, placed),
        16 << 10
    ));
}

/// A controller memory buffer (BAR2, 64-bit, 1 MiB) and an MSI-X table
/// (BAR4, 32-bit, 4 KiB) beside BAR0: every memory BAR is placed inside the
/// windows above the function, none overlapping another.
#[test]
fn every_memory_bar_of_a_function_is_placed_inside_its_bridge_window() {
    let pci = Fabric::new();
    let rp = pci.add_root(1, 0, port(false));
    let nvme = pci.add_behind(
        rp,
        0,
        0,
        FunctionSpec::nvme(16 << 10)
            .with_memory_bar(2, MIB, true, false)
            .with_memory_bar(4, 4 << 10, false, false),
    );
    let (topology, stranded) = assign(&pci, virt_host(), HotplugReserve::default());
    assert_eq!(stranded, 0);
    assert_eq!(topology.functions()[0].other_bars.as_slice().len(), 2);
    let window = memory_window(&pci, rp).expect("a memory window");
    let bar2 = u64::from(pci.peek(nvme, 0x18) & !0xF) | u64::from(pci.peek(nvme, 0x1C)) << 32;
    let bar4 = u64::from(pci.peek(nvme, 0x20) & !0xF);
    let bars = [(bar0(&pci, nvme), 16 << 10), (bar2, MIB), (bar4, 4 << 10)];
    for (i, &(base, size)) in bars.iter().enumerate() {
        assert!(base != 0 && base % size == 0, "BAR {i} at {base:#x}");
        assert!(
            inside(window, base, size),
            "BAR {i} at {base:#x} outside {window:x?}"
        );
        for &(other, other_size) in &bars[i + 1..] {
            assert!(
                base + size <= other || other + other_size <= base,
                "overlap"
            );
        }
    }
}
