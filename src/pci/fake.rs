//! A small PCI topology in host memory for the unit tests of this module.
//!
//! Functions have 4 KiB of configuration space with per-bit write semantics
//! (read-only, read-write, RW1C), so BAR sizing, bus number programming and
//! status clearing behave as on hardware. Configuration cycles are routed the
//! way bridges route them: bus 0 is the root, any other bus is reached through
//! the bridge whose programmed secondary..=subordinate range contains it.

use std::cell::RefCell;

use pci_types::{ConfigRegionAccess, PciAddress};

use super::capability::ID_PCI_EXPRESS;
use super::config::{
    BAR0, BAR1, CAPABILITY_POINTER, COMMAND, HEADER_TYPE_BRIDGE, MEMORY_BASE, PREFETCHABLE_BASE,
    PREFETCHABLE_BASE_UPPER, PREFETCHABLE_LIMIT_UPPER, PRIMARY_BUS,
};

const DWORDS: usize = 1024;
/// Command bits a typical function implements (IO, MEM, BME, PERR, SERR, INTx disable).
const COMMAND_WRITABLE: u32 = 0x0547;
/// RW1C bits of the Status register, in the dword at 0x04.
const STATUS_RW1C: u32 = 0xF900 << 16;
/// Where `with_pcie_port` places the PCI Express capability.
pub const PCIE_CAP: u16 = 0x60;

/// A handle on one function of the fake topology.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Node(usize);

/// One function's configuration space and its write semantics.
#[derive(Clone)]
pub struct FakeFunction {
    config: Box<[u32; DWORDS]>,
    writable: Box<[u32; DWORDS]>,
    rw1c: Box<[u32; DWORDS]>,
}

impl FakeFunction {
    fn blank() -> Self {
        Self {
            config: Box::new([0; DWORDS]),
            writable: Box::new([0; DWORDS]),
            rw1c: Box::new([0; DWORDS]),
        }
    }

    /// An endpoint with class code `[base, sub, prog_if]` and no BARs.
    pub fn endpoint(vendor: u16, device: u16, class: [u8; 3]) -> Self {
        let mut f = Self::blank();
        f.config[0] = u32::from(vendor) | (u32::from(device) << 16);
        f.config[2] =
            (u32::from(class[0]) << 24) | (u32::from(class[1]) << 16) | (u32::from(class[2]) << 8);
        f.writable[1] = COMMAND_WRITABLE;
        f.rw1c[1] = STATUS_RW1C;
        f
    }

    /// An NVMe controller (class 01:08:02) with an unassigned 64-bit BAR0 of
    /// `bar_size` bytes.
    pub fn nvme(bar_size: u64) -> Self {
        Self::endpoint(0x1B36, 0x0010, [0x01, 0x08, 0x02]).with_bar0_64(bar_size)
    }

    /// A PCI-to-PCI bridge with unassigned bus numbers and closed windows.
    pub fn bridge() -> Self {
        let mut f = Self::endpoint(0x1B36, 0x000C, [0x06, 0x04, 0x00]);
        f.set_header_type(HEADER_TYPE_BRIDGE);
        f.writable[dw(PRIMARY_BUS)] = 0xFFFF_FFFF;
        // I/O base/limit writable, Secondary Status RW1C.
        f.writable[dw(0x1C)] = 0x0000_F0F0;
        f.rw1c[dw(0x1C)] = STATUS_RW1C;
        f.writable[dw(MEMORY_BASE)] = 0xFFF0_FFF0;
        // 64-bit prefetchable window: type bits read 1.
        f.config[dw(PREFETCHABLE_BASE)] = 0x0001_0001;
        f.writable[dw(PREFETCHABLE_BASE)] = 0xFFF0_FFF0;
        f.writable[dw(PREFETCHABLE_BASE_UPPER)] = 0xFFFF_FFFF;
        f.writable[dw(PREFETCHABLE_LIMIT_UPPER)] = 0xFFFF_FFFF;
        f
    }

    fn set_header_type(&mut self, header_type: u8) {
        self.config[3] = (self.config[3] & !0x00FF_0000) | (u32::from(header_type) << 16);
    }

    /// Sets the multifunction bit of the header type.
    pub fn multifunction(mut self) -> Self {
        self.config[3] |= 0x0080_0000;
        self
    }

    /// Overrides the header type layout byte (bits 6:0 plus bit 7).
    pub fn with_header_type(mut self, header_type: u8) -> Self {
        self.set_header_type(header_type);
        self
    }

    /// A 64-bit memory BAR0 of `size` bytes, unassigned.
    pub fn with_bar0_64(mut self, size: u64) -> Self {
        let mask = !(size - 1);
        self.config[dw(BAR0)] = 0b100;
        self.writable[dw(BAR0)] = (mask as u32) & !0xF;
        self.config[dw(BAR1)] = 0;
        self.writable[dw(BAR1)] = (mask >> 32) as u32;
        self
    }

    /// A 32-bit memory BAR0 of `size` bytes, unassigned.
    pub fn with_bar0_32(mut self, size: u32) -> Self {
        self.config[dw(BAR0)] = 0;
        self.writable[dw(BAR0)] = !(size - 1) & !0xF;
        self
    }

    /// BAR0 with raw read-only bits `ro` and writable mask `writable` (for
    /// malformed BARs).
    pub fn with_bar0_raw(mut self, ro: u32, writable: u32) -> Self {
        self.config[dw(BAR0)] = ro;
        self.writable[dw(BAR0)] = writable;
        self
    }

    /// Firmware has programmed BAR0 (and BAR1) to `address` and enabled
    /// memory decoding.
    pub fn with_bar0_at(mut self, address: u64) -> Self {
        let lo = dw(BAR0);
        self.config[lo] = (self.config[lo] & 0xF) | (address as u32 & self.writable[lo]);
        self.config[dw(BAR1)] = (address >> 32) as u32 & self.writable[dw(BAR1)];
        self.config[1] |= 0x6;
        self
    }

    /// Firmware-assigned bus numbers of a bridge.
    pub fn with_buses(mut self, primary: u8, secondary: u8, subordinate: u8) -> Self {
        self.config[dw(PRIMARY_BUS)] =
            u32::from(primary) | (u32::from(secondary) << 8) | (u32::from(subordinate) << 16);
        self
    }

    /// A bridge's non-prefetchable window `base..=limit` (1 MiB granular).
    pub fn with_memory_window(mut self, base: u32, limit: u32) -> Self {
        self.config[dw(MEMORY_BASE)] = ((base >> 16) & 0xFFF0) | (limit & 0xFFF0_0000);
        self
    }

    /// A bridge's 64-bit prefetchable window `base..=limit`.
    pub fn with_prefetchable_window(mut self, base: u64, limit: u64) -> Self {
        self.config[dw(PREFETCHABLE_BASE)] =
            0x0001_0001 | ((base as u32 >> 16) & 0xFFF0) | (limit as u32 & 0xFFF0_0000);
        self.config[dw(PREFETCHABLE_BASE_UPPER)] = (base >> 32) as u32;
        self.config[dw(PREFETCHABLE_LIMIT_UPPER)] = (limit >> 32) as u32;
        self
    }

    /// Appends a capability at `offset` to the end of the list.
    pub fn with_capability(mut self, offset: u16, id: u8, body: &[u32]) -> Self {
        let pointer = self.config[dw(CAPABILITY_POINTER)] & 0xFF;
        if self.config[1] & (0x10 << 16) == 0 || pointer == 0 {
            self.config[1] |= 0x10 << 16;
            self.config[dw(CAPABILITY_POINTER)] = u32::from(offset);
        } else {
            let mut at = pointer as usize;
            // Bounded: test lists are well-formed and short.
            for _ in 0..48 {
                let next = (self.config[at / 4] >> 8) & 0xFF;
                if next == 0 {
                    break;
                }
                at = next as usize;
            }
            self.config[at / 4] |= u32::from(offset) << 8;
        }
        self.config[dw(offset)] = u32::from(id);
        for (i, value) in body.iter().enumerate() {
            self.config[dw(offset) + 1 + i] = *value;
        }
        self
    }

    /// A PCI Express root port capability at [`PCIE_CAP`]: `slot` gives the
    /// Slot Capabilities of an implemented slot, `link_caps` the Link
    /// Capabilities. Slot Control is writable, Slot Status and Link Status
    /// carry their RW1C bits.
    pub fn with_pcie_port(mut self, slot: Option<u32>, link_caps: u32) -> Self {
        // PCIe Capabilities: version 2, root port (type 4), slot implemented.
        let caps: u32 = 0x2 | (0x4 << 4) | if slot.is_some() { 1 << 8 } else { 0 };
        self = self.with_capability(PCIE_CAP, ID_PCI_EXPRESS, &[]);
        let base = dw(PCIE_CAP);
        self.config[base] |= caps << 16;
        // Device Control / Device Status.
        self.writable[base + 2] = 0x0000_FFFF;
        self.rw1c[base + 2] = 0x000F_0000;
        self.config[base + 3] = link_caps;
        // Link Control / Link Status (LBMS, LABS are RW1C).
        self.writable[base + 4] = 0x0000_0FFB;
        self.rw1c[base + 4] = 0xC000_0000;
        if let Some(slot_caps) = slot {
            self.config[base + 5] = slot_caps;
            self.writable[base + 6] = 0x0000_1FFF;
            self.rw1c[base + 6] = 0x011F_0000;
        }
        self
    }
}

fn dw(offset: u16) -> usize {
    usize::from(offset / 4)
}

struct Entry {
    parent: Option<usize>,
    device: u8,
    function: u8,
    present: bool,
    f: FakeFunction,
}

impl Entry {
    fn is_bridge(&self) -> bool {
        (self.f.config[3] >> 16) & 0x7F == u32::from(HEADER_TYPE_BRIDGE)
    }

    fn buses(&self) -> (u8, u8) {
        let d = self.f.config[dw(PRIMARY_BUS)];
        ((d >> 8) as u8, (d >> 16) as u8)
    }
}

/// A recorded configuration write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Write {
    /// The function written.
    pub node: Node,
    /// Dword offset.
    pub offset: u16,
    /// Value written.
    pub value: u32,
}

/// The fake topology; implements [`ConfigRegionAccess`].
#[derive(Default)]
pub struct FakePci {
    entries: RefCell<Vec<Entry>>,
    writes: RefCell<Vec<Write>>,
}

impl FakePci {
    /// An empty topology (everything reads all-ones).
    pub fn new() -> Self {
        Self::default()
    }

    fn add(&self, parent: Option<Node>, device: u8, function: u8, f: FakeFunction) -> Node {
        let mut entries = self.entries.borrow_mut();
        entries.push(Entry {
            parent: parent.map(|p| p.0),
            device,
            function,
            present: true,
            f,
        });
        Node(entries.len() - 1)
    }

    /// Places `f` on bus 0.
    pub fn add_root(&self, device: u8, function: u8, f: FakeFunction) -> Node {
        self.add(None, device, function, f)
    }

    /// Places `f` on the secondary bus of `bridge`.
    pub fn add_behind(&self, bridge: Node, device: u8, function: u8, f: FakeFunction) -> Node {
        self.add(Some(bridge), device, function, f)
    }

    /// Takes a function away (surprise removal); it and everything behind it
    /// read all-ones.
    pub fn remove(&self, node: Node) {
        self.entries.borrow_mut()[node.0].present = false;
    }

    /// The function's current address as routed by the programmed bus
    /// numbers, `None` when unreachable.
    pub fn address(&self, node: Node) -> Option<PciAddress> {
        let entries = self.entries.borrow();
        let e = &entries[node.0];
        let bus = match e.parent {
            None => 0,
            Some(p) => entries[p].buses().0,
        };
        let address = PciAddress::new(0, bus, e.device, e.function);
        (self.route(&entries, address) == Some(node.0)).then_some(address)
    }

    /// Like [`FakePci::address`], panicking when unreachable.
    pub fn addr(&self, node: Node) -> PciAddress {
        self.address(node).expect("node reachable")
    }

    fn route(&self, entries: &[Entry], address: PciAddress) -> Option<usize> {
        if address.segment() != 0 {
            return None;
        }
        let bus = address.bus();
        let mut parent = None;
        let mut current = 0u8;
        for _ in 0..=entries.len() {
            if bus == current {
                return entries.iter().position(|e| {
                    e.present
                        && e.parent == parent
                        && e.device == address.device()
                        && e.function == address.function()
                });
            }
            let bridge = entries.iter().position(|e| {
                let (secondary, subordinate) = e.buses();
                e.present
                    && e.parent == parent
                    && e.is_bridge()
                    && secondary > current
                    && (secondary..=subordinate).contains(&bus)
            })?;
            parent = Some(bridge);
            current = entries[bridge].buses().0;
        }
        None
    }

    /// Reads a dword of `node` directly (no routing).
    pub fn peek(&self, node: Node, offset: u16) -> u32 {
        self.entries.borrow()[node.0].f.config[dw(offset)]
    }

    /// Sets a dword of `node` directly, as the device itself would.
    pub fn poke(&self, node: Node, offset: u16, value: u32) {
        self.entries.borrow_mut()[node.0].f.config[dw(offset)] = value;
    }

    /// Sets bits of the 16-bit register at `offset`, as the device would when
    /// an event happens.
    pub fn raise(&self, node: Node, offset: u16, bits: u16) {
        let shift = (offset & 2) * 8;
        self.entries.borrow_mut()[node.0].f.config[dw(offset)] |= u32::from(bits) << shift;
    }

    /// Points the capability list at `pointer` and sets Status.CAP_LIST.
    pub fn set_capability_pointer(&self, node: Node, pointer: u8) {
        let mut entries = self.entries.borrow_mut();
        let config = &mut entries[node.0].f.config;
        config[1] |= 0x10 << 16;
        config[dw(CAPABILITY_POINTER)] = u32::from(pointer);
    }

    /// Every configuration write so far.
    pub fn writes(&self) -> Vec<Write> {
        self.writes.borrow().clone()
    }

    /// The Command register of `node`.
    pub fn command(&self, node: Node) -> u16 {
        self.peek(node, COMMAND) as u16
    }
}

impl ConfigRegionAccess for FakePci {
    unsafe fn read(&self, address: PciAddress, offset: u16) -> u32 {
        assert!(offset % 4 == 0 && offset < 4096, "bad offset {offset:#x}");
        let entries = self.entries.borrow();
        match self.route(&entries, address) {
            Some(i) => entries[i].f.config[dw(offset)],
            None => u32::MAX,
        }
    }

    unsafe fn write(&self, address: PciAddress, offset: u16, value: u32) {
        assert!(offset % 4 == 0 && offset < 4096, "bad offset {offset:#x}");
        let mut entries = self.entries.borrow_mut();
        let Some(i) = self.route(&entries, address) else {
            return;
        };
        self.writes.borrow_mut().push(Write {
            node: Node(i),
            offset,
            value,
        });
        let f = &mut entries[i].f;
        let d = dw(offset);
        let mut new = (f.config[d] & !f.writable[d]) | (value & f.writable[d]);
        new &= !(value & f.rw1c[d]);
        f.config[d] = new;
    }
}
