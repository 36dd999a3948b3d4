//! Functions described register by register: placement, routing through
//! bridge chains by the programmed bus numbers, several functions per device,
//! per-bit write semantics, RW1C bits, capability lists, removal and the log
//! of config writes.

mod common;

use bare_nvme_sim::{
    ConfigWrite, ControllerSpec, FunctionId, FunctionSpec, PortId, Sim, FUNCTION_PCIE_CAP,
};
use common::*;
use pci_types::PciAddress;

fn empty() -> Sim {
    Sim::builder()
        .host_bridge(false)
        .firmware_configured(false)
        .build()
}

fn at(bus: u8, device: u8, function: u8) -> PciAddress {
    PciAddress::new(0, bus, device, function)
}

#[test]
fn host_bridge_knob_frees_bus0_device0() {
    let with = Sim::builder().build();
    assert_eq!(cfg_read(&with.config_access(), addr(0, 0), 0), 0x29c0_8086);
    let sim = empty();
    let cfg = sim.config_access();
    assert_eq!(cfg_read(&cfg, addr(0, 0), 0), u32::MAX);
    let f = sim.add_function(
        None,
        0,
        0,
        FunctionSpec::endpoint(0x1234, 0x5678, [1, 8, 2]),
    );
    assert_eq!(sim.function_address(f), Some(addr(0, 0)));
    assert_eq!(cfg_read(&cfg, addr(0, 0), 0), 0x5678_1234);
    assert_eq!(cfg_read(&cfg, addr(0, 0), 8) >> 8, 0x01_08_02);
}

#[test]
fn every_function_number_answers_whatever_function_zero_says() {
    let sim = empty();
    let cfg = sim.config_access();
    let f0 = sim.add_function(None, 2, 0, FunctionSpec::endpoint(0x8086, 1, [2, 0, 0]));
    let f5 = sim.add_function(None, 2, 5, FunctionSpec::nvme(16 << 10));
    // Device 4 has no function 0 and its function 1 still answers.
    let lone = sim.add_function(None, 4, 1, FunctionSpec::nvme(16 << 10).multifunction());
    assert_eq!(cfg_read(&cfg, at(0, 2, 0), 0x0C) >> 16 & 0xFF, 0x00);
    assert_eq!(cfg_read(&cfg, at(0, 2, 5), 0), 0x0010_1B36);
    assert_eq!(cfg_read(&cfg, at(0, 2, 1), 0), u32::MAX);
    assert_eq!(cfg_read(&cfg, at(0, 4, 1), 0x0C) >> 16 & 0xFF, 0x80);
    assert_eq!(cfg_read(&cfg, at(0, 4, 0), 0), u32::MAX);
    assert_eq!(
        [f0, f5, lone].map(|f| sim.function_address(f)),
        [Some(at(0, 2, 0)), Some(at(0, 2, 5)), Some(at(0, 4, 1))]
    );
}

#[test]
fn a_bridge_chain_routes_by_the_bus_numbers_written_into_it() {
    let sim = empty();
    let cfg = sim.config_access();
    let a = sim.add_function(None, 1, 0, FunctionSpec::bridge());
    let b = sim.add_function(Some(a), 3, 0, FunctionSpec::bridge());
    let end = sim.add_function(Some(b), 0, 2, FunctionSpec::nvme(16 << 10));
    // Reset bus numbers are 0: nothing behind A answers.
    assert_eq!(cfg_read(&cfg, addr(0, 1), 0x18), 0);
    assert_eq!(sim.function_address(b), None);
    assert_eq!(sim.function_address(end), None);
    // The bus number dword is writable as a whole.
    cfg_write(&cfg, addr(0, 1), 0x18, 0x0005_0100);
    assert_eq!(cfg_read(&cfg, addr(0, 1), 0x18), 0x0005_0100);
    assert_eq!(sim.function_address(b), Some(at(1, 3, 0)));
    assert_eq!(sim.function_address(end), None);
    cfg_write(&cfg, at(1, 3, 0), 0x18, 0x0005_0401);
    assert_eq!(sim.function_address(end), Some(at(4, 0, 2)));
    assert_eq!(cfg_read(&cfg, at(4, 0, 2), 0), 0x0010_1B36);
    // A bus outside A's range is not forwarded; renumbering moves the device.
    cfg_write(&cfg, addr(0, 1), 0x18, 0x0003_0100);
    assert_eq!(sim.function_address(end), None);
    assert_eq!(cfg_read(&cfg, at(4, 0, 2), 0), u32::MAX);
    cfg_write(&cfg, at(1, 3, 0), 0x18, 0x0002_0201);
    assert_eq!(sim.function_address(end), Some(at(2, 0, 2)));
}

#[test]
fn bars_size_by_their_writable_bits() {
    let sim = empty();
    let cfg = sim.config_access();
    sim.add_function(None, 1, 0, FunctionSpec::nvme(16 << 10));
    sim.add_function(
        None,
        2,
        0,
        FunctionSpec::endpoint(1, 2, [1, 8, 2]).with_bar0_32(0x4000),
    );
    let io = FunctionSpec::nvme(16 << 10).with_bar0_raw(0x1, 0xFFFF_FF00);
    sim.add_function(None, 3, 0, io);
    for device in 1..=3 {
        cfg_write(&cfg, addr(0, device), 0x10, u32::MAX);
        cfg_write(&cfg, addr(0, device), 0x14, u32::MAX);
    }
    assert_eq!(cfg_read(&cfg, addr(0, 1), 0x10), 0xFFFF_C004);
    assert_eq!(cfg_read(&cfg, addr(0, 1), 0x14), u32::MAX);
    assert_eq!(cfg_read(&cfg, addr(0, 2), 0x10), 0xFFFF_C000);
    assert_eq!(cfg_read(&cfg, addr(0, 2), 0x14), 0, "no upper half");
    assert_eq!(cfg_read(&cfg, addr(0, 3), 0x10), 0xFFFF_FF01);
    assert_eq!(cfg_read(&cfg, addr(0, 3), 0x14), u32::MAX);
}

#[test]
fn firmware_assignment_and_bridge_windows_read_back_as_programmed() {
    let sim = empty();
    let cfg = sim.config_access();
    let bridge = FunctionSpec::bridge()
        .with_buses(0, 1, 1)
        .with_memory_window(0xD000_0000, 0xD01F_FFFF)
        .with_prefetchable_window(0x8_0000_0000, 0x8_3FFF_FFFF);
    let b = sim.add_function(None, 3, 0, bridge);
    let plain = sim.add_function(None, 4, 0, FunctionSpec::bridge());
    let f = sim.add_function(
        Some(b),
        0,
        0,
        FunctionSpec::nvme(16 << 10).with_bar0_at(0xD000_4000),
    );
    assert_eq!(cfg_read(&cfg, addr(0, 3), 0x20), 0xD010_D000);
    assert_eq!(cfg_read(&cfg, addr(0, 3), 0x24), 0x3FF1_0001);
    assert_eq!(cfg_read(&cfg, addr(0, 3), 0x28), 0x8);
    assert_eq!(cfg_read(&cfg, addr(0, 3), 0x2C), 0x8);
    // Unassigned windows read zero apart from the 64-bit type bits.
    assert_eq!(sim.config_peek(plain, 0x20), 0);
    assert_eq!(sim.config_peek(plain, 0x24), 0x0001_0001);
    let a = sim.function_address(f).unwrap();
    assert_eq!(cfg_read(&cfg, a, 0x10), 0xD000_4004);
    assert_eq!(
        cfg_read(&cfg, a, 0x04) & 0x6,
        0x6,
        "memory and bus master on"
    );
    // The window registers keep their type bits when written.
    cfg_write(&cfg, addr(0, 4), 0x24, 0xFFFF_FFFF);
    assert_eq!(cfg_read(&cfg, addr(0, 4), 0x24), 0xFFF1_FFF1);
}

#[test]
fn rw1c_status_bits_clear_only_when_written_as_one() {
    let sim = empty();
    let cfg = sim.config_access();
    let port = FunctionSpec::bridge()
        .with_buses(0, 1, 1)
        .with_pcie_port(Some(1 << 6), 1 << 20);
    let p = sim.add_function(None, 4, 0, port);
    let slot = FUNCTION_PCIE_CAP + 0x18;
    sim.config_raise(p, 0x06, 0x2000);
    sim.config_raise(p, slot + 2, 0x0048);
    // Writing Command with zeros in the Status half clears nothing.
    cfg_write(&cfg, addr(0, 4), 0x04, 0x0000_0006);
    assert_eq!(cfg_read(&cfg, addr(0, 4), 0x04), 0x2010_0006);
    cfg_write(&cfg, addr(0, 4), 0x04, 0x2000_0006);
    assert_eq!(
        cfg_read(&cfg, addr(0, 4), 0x04),
        0x0010_0006,
        "CAP_LIST stays"
    );
    // Presence Detect State (bit 6) is read-only, Changed (bit 3) RW1C;
    // Slot Control is writable in the low half.
    cfg_write(&cfg, addr(0, 4), slot, 0x0048_0100);
    assert_eq!(cfg_read(&cfg, addr(0, 4), slot), 0x0040_0100);
    assert_eq!(cfg_read(&cfg, addr(0, 4), FUNCTION_PCIE_CAP) >> 16, 0x0142);
}

#[test]
fn capabilities_chain_in_order_and_the_pointer_can_be_bent() {
    let sim = empty();
    let cfg = sim.config_access();
    let spec = FunctionSpec::endpoint(1, 2, [1, 8, 2])
        .with_capability(0x40, 0x01, &[0xAABB])
        .with_capability(0x50, 0x11, &[])
        .with_pcie_port(None, 0);
    let f = sim.add_function(None, 1, 0, spec);
    let a = addr(0, 1);
    assert_ne!(cfg_read(&cfg, a, 0x04) & 0x0010_0000, 0, "CAP_LIST");
    assert_eq!(cfg_read(&cfg, a, 0x34), 0x40);
    assert_eq!(cfg_read(&cfg, a, 0x40), 0x5001);
    assert_eq!(cfg_read(&cfg, a, 0x44), 0xAABB);
    assert_eq!(cfg_read(&cfg, a, 0x50), 0x6011);
    assert_eq!(cfg_read(&cfg, a, 0x60) & 0xFFFF, 0x0010);
    // A cycle, made the way a broken device would show it.
    sim.config_poke(f, 0x60, 0x4010);
    assert_eq!(cfg_read(&cfg, a, 0x60), 0x4010);
    let bare = sim.add_function(None, 2, 0, FunctionSpec::endpoint(1, 2, [1, 8, 2]));
    assert_eq!(cfg_read(&cfg, addr(0, 2), 0x04) & 0x0010_0000, 0);
    sim.set_capability_pointer(bare, 0x43);
    assert_eq!(cfg_read(&cfg, addr(0, 2), 0x34), 0x43);
    assert_ne!(cfg_read(&cfg, addr(0, 2), 0x04) & 0x0010_0000, 0);
}

#[test]
fn removal_silences_the_function_and_everything_behind_it() {
    let sim = empty();
    let cfg = sim.config_access();
    let b = sim.add_function(None, 1, 0, FunctionSpec::bridge().with_buses(0, 1, 1));
    let f = sim.add_function(Some(b), 0, 0, FunctionSpec::nvme(16 << 10));
    let other = sim.add_function(None, 2, 0, FunctionSpec::nvme(16 << 10));
    sim.remove_function(b);
    assert_eq!(sim.function_address(f), None);
    assert_eq!(cfg_read(&cfg, addr(1, 0), 0), u32::MAX);
    assert_eq!(cfg_read(&cfg, addr(0, 1), 0), u32::MAX);
    assert_eq!(sim.function_address(other), Some(addr(0, 2)));
    // A new function may take the removed one's place.
    let again = sim.add_function(None, 1, 0, FunctionSpec::nvme(16 << 10));
    assert_eq!(sim.function_address(again), Some(addr(0, 1)));
    assert_eq!(again, FunctionId(3));
}

#[test]
fn the_write_log_holds_writes_to_described_functions_only() {
    let sim = Sim::builder()
        .root_port(true)
        .controller_on_port(PortId(0), ControllerSpec::with_blocks(64))
        .build();
    let cfg = sim.config_access();
    let f = sim.add_function(None, 9, 0, FunctionSpec::nvme(16 << 10));
    let port = sim.port_address(PortId(0));
    cfg_write(&cfg, port, 0x04, 0x0000_0006);
    cfg_write(&cfg, addr(0, 9), 0x10, u32::MAX);
    cfg_write(&cfg, addr(0, 9), 0x04, 0x0000_0002);
    cfg_write(&cfg, addr(0, 10), 0x04, 0x0000_0002);
    assert_eq!(
        sim.config_writes(),
        [
            ConfigWrite {
                function: f,
                offset: 0x10,
                value: u32::MAX
            },
            ConfigWrite {
                function: f,
                offset: 0x04,
                value: 2
            }
        ]
    );
    // The machine's own devices are unaffected by the extra function.
    assert_eq!(find_nvme(&cfg).len(), 2);
    assert_eq!(sim.counters().protocol_errors, 0);
}
