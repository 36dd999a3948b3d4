//! Shared setup for the tests of the PCI layer against functions described
//! register by register in the simulated machine ([`FunctionSpec`]).
#![allow(dead_code)]

use bare_nvme_sim::{ConfigWrite, FunctionId, FunctionSpec, Sim, SimConfig};
use pci_types::{ConfigRegionAccess, PciAddress};

pub const MIB: u64 = 1 << 20;
/// Slot Capabilities of a QEMU pcie-root-port without power controller:
/// attention button, hot-plug surprise, hot-plug capable.
pub const QEMU_SLOT: u32 = (1 << 0) | (1 << 5) | (1 << 6);
/// Link Capabilities with Data Link Layer Link Active Reporting.
pub const DLLLARC: u32 = 1 << 20;

pub fn host_bridge() -> FunctionSpec {
    FunctionSpec::endpoint(0x8086, 0x29C0, [0x06, 0x00, 0x00])
}

/// A root port as SeaBIOS leaves it: numbered, with a 2 MiB window.
pub fn root_port(secondary: u8, window_base: u32) -> FunctionSpec {
    FunctionSpec::bridge()
        .with_buses(0, secondary, secondary)
        .with_memory_window(window_base, window_base + 2 * MIB as u32 - 1)
        .with_pcie_port(Some(QEMU_SLOT), DLLLARC)
}

/// A simulated machine with nothing on bus 0 (not even a host bridge) and no
/// firmware configuration, filled function by function; it is the
/// configuration access the code under test uses.
pub struct Fabric {
    pub sim: Sim,
    config: SimConfig,
}

impl Fabric {
    pub fn new() -> Self {
        let sim = Sim::builder()
            .host_bridge(false)
            .firmware_configured(false)
            .build();
        let config = sim.config_access();
        Self { sim, config }
    }

    /// Places `f` on bus 0.
    pub fn add_root(&self, device: u8, function: u8, f: FunctionSpec) -> FunctionId {
        self.sim.add_function(None, device, function, f)
    }

    /// Places `f` on the secondary bus of `bridge`.
    pub fn add_behind(
        &self,
        bridge: FunctionId,
        device: u8,
        function: u8,
        f: FunctionSpec,
    ) -> FunctionId {
        self.sim.add_function(Some(bridge), device, function, f)
    }

    /// Surprise removal: it and everything behind it read all-ones.
    pub fn remove(&self, f: FunctionId) {
        self.sim.remove_function(f);
    }

    /// The function's address as routed now, panicking when unreachable.
    pub fn addr(&self, f: FunctionId) -> PciAddress {
        self.sim.function_address(f).expect("function reachable")
    }

    pub fn peek(&self, f: FunctionId, offset: u16) -> u32 {
        self.sim.config_peek(f, offset)
    }

    pub fn poke(&self, f: FunctionId, offset: u16, value: u32) {
        self.sim.config_poke(f, offset, value);
    }

    pub fn raise(&self, f: FunctionId, offset: u16, bits: u16) {
        self.sim.config_raise(f, offset, bits);
    }

    pub fn set_capability_pointer(&self, f: FunctionId, pointer: u8) {
        self.sim.set_capability_pointer(f, pointer);
    }

    pub fn writes(&self) -> Vec<ConfigWrite> {
        self.sim.config_writes()
    }

    /// The Command register of `f`.
    pub fn command(&self, f: FunctionId) -> u16 {
        self.peek(f, 0x04) as u16
    }
}

impl ConfigRegionAccess for Fabric {
    unsafe fn read(&self, address: PciAddress, offset: u16) -> u32 {
        // SAFETY: the simulated access has no preconditions; the caller's
        // contract is passed on unchanged.
        unsafe { self.config.read(address, offset) }
    }

    unsafe fn write(&self, address: PciAddress, offset: u16, value: u32) {
        // SAFETY: as in `read`.
        unsafe { self.config.write(address, offset, value) }
    }
}
