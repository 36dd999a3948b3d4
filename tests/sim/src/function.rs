//! Functions described register by register, for tests of PCI code that need
//! shapes the NVMe machine does not have: arbitrary bridge chains, several
//! functions per device, malformed BARs and capability lists, unassigned or
//! half-programmed bridges.
//!
//! A [`FunctionSpec`] is a function's configuration space with per-bit write
//! semantics (read-only, read-write, RW1C). [`Sim::add_function`] places it on
//! bus 0 or behind a bridge function; from then on it is a node of the same
//! topology as everything else, routed by the bus numbers programmed in the
//! bridges above it. Such functions have no behaviour beyond their registers:
//! an NVMe class code makes a driver find one, not a controller answer.

use pci_types::PciAddress;
use std::sync::PoisonError;

use crate::config::{cmd, off, ConfigSpace};
use crate::pci::Kind;
use crate::sim::Sim;

/// Where [`FunctionSpec::with_pcie_port`] places the PCI Express capability.
pub const FUNCTION_PCIE_CAP: u16 = 0x60;

/// Capability ID of PCI Express.
const ID_PCI_EXPRESS: u8 = 0x10;
/// Status register: capability list present.
const STATUS_CAP_LIST: u16 = 1 << 4;
/// Header type layout of a PCI-to-PCI bridge.
const HEADER_TYPE_BRIDGE: u8 = 0x01;

/// A function added with [`Sim::add_function`], numbered 0, 1, ... in the
/// order added. Stays valid after removal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FunctionId(pub usize);

/// A configuration write that reached a [`FunctionId`] function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfigWrite {
    /// The function written.
    pub function: FunctionId,
    /// Dword offset.
    pub offset: u16,
    /// Value written.
    pub value: u32,
}

/// One function's configuration space and its write semantics.
pub struct FunctionSpec {
    cfg: ConfigSpace,
    /// Writable bits of BAR0 and BAR1, for [`FunctionSpec::with_bar0_at`].
    bar_mask: [u32; 2],
    /// The last capability appended, to chain the next one.
    last_cap: Option<u16>,
}

impl FunctionSpec {
    /// An endpoint with class code `[base, sub, prog_if]` and no BARs.
    pub fn endpoint(vendor: u16, device: u16, class: [u8; 3]) -> Self {
        let [base, sub, prog_if] = class;
        Self {
            cfg: ConfigSpace::new(vendor, device, [prog_if, sub, base], 0),
            bar_mask: [0; 2],
            last_cap: None,
        }
    }

    /// An NVMe controller's function (class 01:08:02) with an unassigned
    /// 64-bit BAR0 of `bar_size` bytes.
    pub fn nvme(bar_size: u64) -> Self {
        Self::endpoint(0x1B36, 0x0010, [0x01, 0x08, 0x02]).with_bar0_64(bar_size)
    }

    /// A PCI-to-PCI bridge as after reset: bus numbers 0, memory windows
    /// reading zero (base and limit 0), a 64-bit capable prefetchable window.
    pub fn bridge() -> Self {
        let mut f = Self::endpoint(0x1B36, 0x000C, [0x06, 0x04, 0x00]);
        f.cfg.set8(off::HEADER_TYPE, HEADER_TYPE_BRIDGE);
        let c = &mut f.cfg;
        // Primary, secondary, subordinate bus and secondary latency timer.
        c.mask32(off::PRIMARY_BUS, 0xFFFF_FFFF);
        // I/O base and limit; Secondary Status error bits are RW1C.
        c.mask16(off::IO_BASE, 0xF0F0);
        c.w1c16(off::IO_BASE + 2, 0xF900);
        c.mask16(off::MEM_BASE, 0xFFF0);
        c.mask16(off::MEM_LIMIT, 0xFFF0);
        // Prefetchable window: type bits read 1 (64-bit addressing).
        c.set16(off::PREF_BASE, 0x0001);
        c.set16(off::PREF_LIMIT, 0x0001);
        c.mask16(off::PREF_BASE, 0xFFF0);
        c.mask16(off::PREF_LIMIT, 0xFFF0);
        c.mask32(off::PREF_BASE_UPPER, 0xFFFF_FFFF);
        c.mask32(off::PREF_LIMIT_UPPER, 0xFFFF_FFFF);
        f
    }

    /// Sets the multifunction bit of the header type.
    pub fn multifunction(mut self) -> Self {
        let header = self.cfg.get8(off::HEADER_TYPE);
        self.cfg.set8(off::HEADER_TYPE, header | 0x80);
        self
    }

    /// Overrides the whole header type byte (layout in bits 6:0,
    /// multifunction in bit 7). A layout of 1 makes the function route as a
    /// bridge.
    pub fn with_header_type(mut self, header_type: u8) -> Self {
        self.cfg.set8(off::HEADER_TYPE, header_type);
        self
    }

    fn set_bar_mask(&mut self, lo: u32, hi: u32) {
        self.bar_mask = [lo, hi];
        self.cfg.mask32(off::BAR0, lo);
        self.cfg.mask32(off::BAR0 + 4, hi);
    }

    /// Marks BAR0 prefetchable (bit 3, read-only).
    pub fn with_bar0_prefetchable(mut self) -> Self {
        let low = self.cfg.get32(off::BAR0);
        self.cfg.set32(off::BAR0, low | 0b1000);
        self
    }

    /// A 64-bit memory BAR0 of `size` bytes (a power of two), unassigned.
    pub fn with_bar0_64(mut self, size: u64) -> Self {
        let mask = !(size - 1);
        self.cfg.set32(off::BAR0, 0b100);
        self.cfg.set32(off::BAR0 + 4, 0);
        self.set_bar_mask((mask as u32) & !0xF, (mask >> 32) as u32);
        self
    }

    /// A 32-bit memory BAR0 of `size` bytes (a power of two), unassigned.
    pub fn with_bar0_32(mut self, size: u32) -> Self {
        self.cfg.set32(off::BAR0, 0);
        let hi = self.bar_mask[1];
        self.set_bar_mask(!(size - 1) & !0xF, hi);
        self
    }

    /// An unassigned memory BAR `index` (1 to 5) of `size` bytes (a power of
    /// two): 64-bit (taking index + 1 too) or 32-bit, prefetchable or not,
    /// as a controller memory buffer or an MSI-X table has.
    pub fn with_memory_bar(
        mut self,
        index: u16,
        size: u64,
        is_64bit: bool,
        prefetchable: bool,
    ) -> Self {
        let at = off::BAR0 + 4 * usize::from(index);
        let mask = !(size - 1);
        let kind = if is_64bit { 0b100 } else { 0 } | if prefetchable { 0b1000 } else { 0 };
        self.cfg.set32(at, kind);
        self.cfg.mask32(at, (mask as u32) & !0xF);
        if is_64bit {
            self.cfg.set32(at + 4, 0);
            self.cfg.mask32(at + 4, (mask >> 32) as u32);
        }
        self
    }

    /// Firmware has programmed memory BAR `index` (and its upper half for a
    /// 64-bit one) to `address`.
    pub fn with_memory_bar_at(mut self, index: u16, address: u64) -> Self {
        let at = off::BAR0 + 4 * usize::from(index);
        let low = self.cfg.get32(at);
        self.cfg.set32(at, (low & 0xF) | (address as u32 & !0xF));
        if low & 0b110 == 0b100 {
            self.cfg.set32(at + 4, (address >> 32) as u32);
        }
        self
    }

    /// BAR0 with raw read-only bits `ro` and writable mask `writable`, for
    /// malformed BARs (BAR1 keeps what it had).
    pub fn with_bar0_raw(mut self, ro: u32, writable: u32) -> Self {
        self.cfg.set32(off::BAR0, ro);
        let hi = self.bar_mask[1];
        self.set_bar_mask(writable, hi);
        self
    }

    /// Firmware has programmed BAR0 (and BAR1) to `address` and enabled memory
    /// decoding and bus mastering.
    pub fn with_bar0_at(mut self, address: u64) -> Self {
        let [lo, hi] = self.bar_mask;
        let low_bits = self.cfg.get32(off::BAR0) & 0xF;
        self.cfg.set32(off::BAR0, low_bits | (address as u32 & lo));
        self.cfg.set32(off::BAR0 + 4, (address >> 32) as u32 & hi);
        let command = self.cfg.command() | cmd::MEMORY | cmd::BUS_MASTER;
        self.cfg.set16(off::COMMAND, command);
        self
    }

    /// Firmware-assigned bus numbers of a bridge.
    pub fn with_buses(mut self, primary: u8, secondary: u8, subordinate: u8) -> Self {
        self.cfg.set8(off::PRIMARY_BUS, primary);
        self.cfg.set8(off::SECONDARY_BUS, secondary);
        self.cfg.set8(off::SUBORDINATE_BUS, subordinate);
        self
    }

    /// The dword at `offset` ignores writes (a bridge that does not take
    /// its bus numbers or a window, say).
    pub fn with_read_only_dword(mut self, offset: u16) -> Self {
        self.cfg.mask32(usize::from(offset & !3), 0);
        self
    }

    /// A bridge's memory window `base..=limit` (1 MiB granular).
    pub fn with_memory_window(mut self, base: u32, limit: u32) -> Self {
        self.cfg
            .set16(off::MEM_BASE, ((base >> 16) & 0xFFF0) as u16);
        self.cfg
            .set16(off::MEM_LIMIT, ((limit >> 16) & 0xFFF0) as u16);
        self
    }

    /// A bridge's 64-bit prefetchable window `base..=limit` (1 MiB granular).
    pub fn with_prefetchable_window(mut self, base: u64, limit: u64) -> Self {
        let c = &mut self.cfg;
        c.set16(off::PREF_BASE, 0x0001 | ((base >> 16) as u16 & 0xFFF0));
        c.set16(off::PREF_LIMIT, 0x0001 | ((limit >> 16) as u16 & 0xFFF0));
        c.set32(off::PREF_BASE_UPPER, (base >> 32) as u32);
        c.set32(off::PREF_LIMIT_UPPER, (limit >> 32) as u32);
        self
    }

    /// Appends a capability with `id` at `offset` (dword aligned, in
    /// 0x40..0x100) to the end of the list, followed by the dwords of `body`.
    pub fn with_capability(mut self, offset: u16, id: u8, body: &[u32]) -> Self {
        let at = usize::from(offset);
        assert!(
            offset.is_multiple_of(4)
                && (0x40..0x100).contains(&offset)
                && at + 4 + 4 * body.len() <= 0x100,
            "capability at {offset:#x} does not fit"
        );
        match self.last_cap {
            None => {
                self.cfg.set8(off::CAP_PTR, offset as u8);
                let status = self.cfg.get16(off::STATUS) | STATUS_CAP_LIST;
                self.cfg.set16(off::STATUS, status);
            }
            Some(previous) => self.cfg.set8(usize::from(previous) + 1, offset as u8),
        }
        self.last_cap = Some(offset);
        self.cfg.set32(at, u32::from(id));
        for (i, value) in body.iter().enumerate() {
            self.cfg.set32(at + 4 + 4 * i, *value);
        }
        self
    }

    /// A PCI Express root port capability at [`FUNCTION_PCIE_CAP`]: `slot`
    /// gives the Slot Capabilities of an implemented slot, `link_caps` the
    /// Link Capabilities. Device Control, Link Control and Slot Control are
    /// writable; Device, Link and Slot Status carry their RW1C bits. Status
    /// bits change only when a test sets them ([`Sim::config_raise`]).
    pub fn with_pcie_port(mut self, slot: Option<u32>, link_caps: u32) -> Self {
        self = self.with_capability(FUNCTION_PCIE_CAP, ID_PCI_EXPRESS, &[]);
        let p = usize::from(FUNCTION_PCIE_CAP);
        // PCI Express Capabilities: version 2, root port (type 4), slot bit.
        let slot_bit = if slot.is_some() { 1 << 8 } else { 0 };
        let c = &mut self.cfg;
        c.set16(p + 2, 0x2 | (0x4 << 4) | slot_bit);
        c.mask16(p + 0x08, 0xFFFF);
        c.w1c16(p + 0x0A, 0x000F);
        c.set32(p + 0x0C, link_caps);
        c.mask16(p + 0x10, 0x0FFB);
        c.w1c16(p + 0x12, 0xC000);
        if let Some(slot_caps) = slot {
            c.set32(p + 0x14, slot_caps);
            c.mask16(p + 0x18, 0x1FFF);
            c.w1c16(p + 0x1A, 0x011F);
        }
        self
    }
}

impl Sim {
    /// Adds `spec` as `device.function` on bus 0 (`behind` None) or on the
    /// secondary bus of the bridge function `behind`. Nothing checks the
    /// multifunction bit: a function answers whatever function 0 says, so
    /// a walk that probes functions it should not finds them.
    pub fn add_function(
        &self,
        behind: Option<FunctionId>,
        device: u8,
        function: u8,
        spec: FunctionSpec,
    ) -> FunctionId {
        assert!(device < 32 && function < 8, "no such function");
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let pci = &mut s.pci;
        let parent = behind.map(|b| pci.functions[b.0]);
        let bridge = spec.cfg.get8(off::HEADER_TYPE) & 0x7F == HEADER_TYPE_BRIDGE;
        let kind = if bridge {
            Kind::PciBridge
        } else {
            Kind::Function
        };
        let node = pci.add(parent, device, spec.cfg, kind);
        pci.nodes[node].function = function;
        pci.functions.push(node);
        FunctionId(pci.functions.len() - 1)
    }

    /// Takes the function away: it and everything behind it read all-ones.
    pub fn remove_function(&self, function: FunctionId) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let node = s.pci.functions[function.0];
        s.pci.nodes[node].present = false;
    }

    /// Where the function answers now, as routed by the bus numbers
    /// programmed in the bridges above it; None when unreachable.
    pub fn function_address(&self, function: FunctionId) -> Option<PciAddress> {
        let s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let node = s.pci.functions[function.0];
        let n = &s.pci.nodes[node];
        let bus = n.parent.map_or(0, |p| s.pci.nodes[p].cfg.bus_range().0);
        (s.pci.route_config(bus, n.device, n.function) == Some(node))
            .then(|| PciAddress::new(0, bus, n.device, n.function))
    }

    /// The dword at `offset` of the function's config space, read directly
    /// (no routing, no access counted).
    pub fn config_peek(&self, function: FunctionId, offset: u16) -> u32 {
        let s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.pci.nodes[s.pci.functions[function.0]]
            .cfg
            .get32(usize::from(offset & !3))
    }

    /// Sets the dword at `offset` directly, as the device itself would
    /// (write masks do not apply).
    pub fn config_poke(&self, function: FunctionId, offset: u16, value: u32) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let node = s.pci.functions[function.0];
        s.pci.nodes[node].cfg.set32(usize::from(offset & !3), value);
    }

    /// Sets `bits` in the 16-bit register at `offset`, as the device does
    /// when an event happens (a status bit rising).
    pub fn config_raise(&self, function: FunctionId, offset: u16, bits: u16) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let node = s.pci.functions[function.0];
        let cfg = &mut s.pci.nodes[node].cfg;
        let at = usize::from(offset & !1);
        let value = cfg.get16(at) | bits;
        cfg.set16(at, value);
    }

    /// Points the capability list at `pointer` and sets Status.CAP_LIST.
    pub fn set_capability_pointer(&self, function: FunctionId, pointer: u8) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let node = s.pci.functions[function.0];
        let cfg = &mut s.pci.nodes[node].cfg;
        let status = cfg.get16(off::STATUS) | STATUS_CAP_LIST;
        cfg.set16(off::STATUS, status);
        cfg.set8(off::CAP_PTR, pointer);
    }

    /// Every config write that reached a [`FunctionId`] function so far, in
    /// order (writes to ports and controllers are not recorded).
    pub fn config_writes(&self) -> Vec<ConfigWrite> {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pci
            .function_writes
            .clone()
    }
}

impl crate::pci::Topology {
    /// Records a config write when `node` is a [`FunctionId`] function.
    pub(crate) fn record_function_write(&mut self, node: usize, offset: usize, value: u32) {
        if let Some(i) = self.functions.iter().position(|&n| n == node) {
            self.function_writes.push(ConfigWrite {
                function: FunctionId(i),
                offset: offset as u16,
                value,
            });
        }
    }
}
