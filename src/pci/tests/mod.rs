//! Scenario tests of the walk and BAR placement against the fake topology.

mod bar;
mod enumerate;

use crate::pci::fake::FakeFunction;

const MIB: u64 = 1 << 20;
/// Slot Capabilities of a QEMU pcie-root-port without power controller:
/// attention button, hot-plug surprise, hot-plug capable.
const QEMU_SLOT: u32 = (1 << 0) | (1 << 5) | (1 << 6);
/// Link Capabilities with Data Link Layer Link Active Reporting.
const DLLLARC: u32 = 1 << 20;

fn host_bridge() -> FakeFunction {
    FakeFunction::endpoint(0x8086, 0x29C0, [0x06, 0x00, 0x00])
}

/// A root port as SeaBIOS leaves it: numbered, with a 2 MiB window.
fn root_port(secondary: u8, window_base: u32) -> FakeFunction {
    FakeFunction::bridge()
        .with_buses(0, secondary, secondary)
        .with_memory_window(window_base, window_base + 2 * MIB as u32 - 1)
        .with_pcie_port(Some(QEMU_SLOT), DLLLARC)
}
