//! The bus walk: bus 0 and every bus behind PCI-to-PCI bridges, depth-first.
//!
//! Bus numbers firmware assigned are used as they are. A bridge without valid
//! numbers (secondary bus 0 after reset, or numbers that clash with the
//! hierarchy) is numbered once the firmware-numbered part is known: it gets
//! the next free bus, and its ancestors' subordinate ranges grow to cover it
//! when they can without overlapping a sibling's range.
//!
//! Everything read is untrusted: each bus is scanned at most once, nesting is
//! bounded by [`MAX_DEPTH`], the walk keeps an explicit fixed-capacity stack,
//! and header types are checked before they decide anything.

use pci_types::{ConfigRegionAccess, PciAddress};

use super::bar::{probe_bar0, probe_other_bars, Bar, OtherBars};
use super::config::{
    ConfigSpace, HEADER_TYPE_BRIDGE, HEADER_TYPE_CARDBUS, HEADER_TYPE_ENDPOINT, MEMORY_BASE,
    MEMORY_LIMIT, MULTIFUNCTION, PREFETCHABLE_BASE, PREFETCHABLE_BASE_UPPER, PREFETCHABLE_LIMIT,
    PREFETCHABLE_LIMIT_UPPER, PRIMARY_BUS,
};
use super::slot::{PciePort, SlotCapabilities, CRS_VENDOR_ID};
use super::window::Window;
use crate::error::{Error, Result};
use crate::platform::PhysAddr;

mod numbering;

use numbering::{claim, Buses};

/// Deepest bridge nesting followed. Real hierarchies are a few levels deep
/// (root port, switch upstream and downstream ports); more is a fault.
pub const MAX_DEPTH: usize = 32;
/// Bus numbers per segment.
pub const BUS_COUNT: usize = 256;
/// Devices per bus.
const DEVICES: u8 = 32;
/// Functions per device.
const FUNCTIONS: u8 = 8;

/// Class code of an NVMe controller: mass storage, non-volatile memory
/// controller, NVM Express (PCI Code and ID Assignment 1.15, D.2).
pub const NVME_CLASS: (u8, u8, u8) = (0x01, 0x08, 0x02);

/// A PCI-to-PCI bridge found by the walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bridge {
    /// The bridge's own address (on its primary bus).
    pub address: PciAddress,
    /// Index of the bridge above it in [`Topology::bridges`], `None` on bus 0.
    pub parent: Option<usize>,
    /// Primary bus number.
    pub primary: u8,
    /// Secondary bus number (0 when it could not be numbered).
    pub secondary: u8,
    /// Subordinate bus number: the highest bus behind the bridge.
    pub subordinate: u8,
    /// Whether the walk assigned the bus numbers (firmware had not).
    pub numbered_by_walk: bool,
    /// The non-prefetchable memory window, `None` when closed.
    pub memory: Option<Window>,
    /// The prefetchable memory window, `None` when closed or absent.
    pub prefetchable: Option<Window>,
    /// The PCI Express capability, when the bridge is a PCIe port.
    pub port: Option<PciePort>,
    /// Slot Capabilities, when the port has a slot.
    pub slot: Option<SlotCapabilities>,
}

impl Bridge {
    /// Whether the port has a hot-plug capable slot (the monitor polls its
    /// Slot Status and Link Status).
    pub fn hot_plug_capable(&self) -> bool {
        self.slot
            .is_some_and(|s| s.contains(SlotCapabilities::HOT_PLUG_CAPABLE))
    }

    /// Whether `bus` is routed through this bridge.
    pub fn routes(&self, bus: u8) -> bool {
        self.secondary != 0 && (self.secondary..=self.subordinate).contains(&bus)
    }
}

/// An NVMe function found by the walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NvmeFunction {
    /// Its address.
    pub address: PciAddress,
    /// Vendor ID.
    pub vendor_id: u16,
    /// Device ID.
    pub device_id: u16,
    /// Index of its bridge in [`Topology::bridges`], `None` on bus 0.
    pub parent: Option<usize>,
    /// BAR0 as sized during the walk, or why the function is unusable
    /// (a malformed other BAR makes it unusable too).
    pub bar0: Result<Bar>,
    /// Its other memory BARs (a controller memory buffer, an MSI-X
    /// table), placed with BAR0 in one block: none may decode outside the
    /// windows above the function once it is enabled.
    pub other_bars: OtherBars,
}

/// Whether the walk may still defer bridges without numbers (first pass),
/// numbers them as it meets them (behind a bridge the walk numbered), or
/// numbers every bridge anew, depth-first, ignoring what firmware left.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Firmware,
    Assign,
    Renumber,
}

/// One bus being scanned.
#[derive(Clone, Copy)]
struct Frame {
    bus: u8,
    /// The bridge whose secondary bus this is.
    bridge: Option<usize>,
    /// Nesting depth of the bus: 0 for bus 0.
    depth: u8,
    device: u8,
    function: u8,
    multifunction: bool,
    /// One past the last device number scanned ([`DEVICES`] but for the
    /// frame of a hot-added switch's own device).
    limit: u8,
}

impl Frame {
    fn new(bus: u8, bridge: Option<usize>, depth: u8) -> Self {
        Self {
            bus,
            bridge,
            depth,
            device: 0,
            function: 0,
            multifunction: false,
            limit: DEVICES,
        }
    }

    fn next_device(&mut self) {
        self.device += 1;
        self.function = 0;
        self.multifunction = false;
    }

    fn next_function(&mut self) {
        if self.multifunction && self.function + 1 < FUNCTIONS {
            self.function += 1;
        } else {
            self.next_device();
        }
    }
}

/// What the walk found: the bridges and the NVMe functions, up to the
/// capacities.
#[derive(Clone, Debug)]
pub struct Topology<const FUNCTIONS: usize, const BRIDGES: usize> {
    segment: u16,
    bridges: heapless::Vec<Bridge, BRIDGES>,
    functions: heapless::Vec<NvmeFunction, FUNCTIONS>,
}

/// The walk's working state, separate from what it records.
struct Walk {
    mode: Mode,
    buses: Buses,
    first_error: Option<Error>,
    /// Bus numbers a hot-plug capable port keeps beyond its secondary bus
    /// ([`Mode::Renumber`] only).
    hotplug_buses: u8,
    /// Highest bus number the walk may give ([`Mode::Renumber`]): the
    /// subordinate bus of the port a hot-added switch sits behind.
    ceiling: u8,
}

impl Walk {
    /// Keeps the first problem for the caller; logs it once, later ones
    /// only at debug level so that a large broken topology does not flood
    /// the log.
    fn note(&mut self, error: Error) {
        if self.first_error.is_none() {
            log::warn!("pci: {error}");
            self.first_error = Some(error);
        } else {
            log::debug!("pci: {error}");
        }
    }
}

impl<const FUNCTIONS: usize, const BRIDGES: usize> Topology<FUNCTIONS, BRIDGES> {
    /// An empty topology of PCI segment `segment`.
    pub fn new(segment: u16) -> Self {
        Self {
            segment,
            bridges: heapless::Vec::new(),
            functions: heapless::Vec::new(),
        }
    }

    /// The bridges found, parents before children.
    pub fn bridges(&self) -> &[Bridge] {
        &self.bridges
    }

    /// The NVMe functions found, in walk order.
    pub fn functions(&self) -> &[NvmeFunction] {
        &self.functions
    }

    /// The bridges, for the resource assignment to record windows.
    pub(crate) fn bridges_mut(&mut self) -> &mut [Bridge] {
        &mut self.bridges
    }

    /// The NVMe functions, for the resource assignment to record BARs.
    pub(crate) fn functions_mut(&mut self) -> &mut [NvmeFunction] {
        &mut self.functions
    }

    /// The bridge above `function`, if it sits behind one.
    pub fn parent_of(&self, function: &NvmeFunction) -> Option<&Bridge> {
        function.parent.and_then(|i| self.bridges.get(i))
    }

    /// The index of the bridge at `address`.
    pub fn bridge_index(&self, address: PciAddress) -> Option<usize> {
        self.bridges.iter().position(|b| b.address == address)
    }

    /// Forgets the function at `address` (after its removal), returning it.
    pub fn forget_function(&mut self, address: PciAddress) -> Option<NvmeFunction> {
        let index = self.functions.iter().position(|f| f.address == address)?;
        Some(self.functions.remove(index))
    }

    /// Walks the segment from bus 0, replacing what was recorded before.
    ///
    /// The walk goes on past problems (a malformed device, a full capacity)
    /// and records everything that fits; the first problem is returned as
    /// the error.
    pub fn scan<A: ConfigRegionAccess + ?Sized>(&mut self, access: &A) -> Result<()> {
        self.bridges.clear();
        self.functions.clear();
        let mut walk = Walk {
            mode: Mode::Firmware,
            buses: Buses::new(),
            first_error: None,
            hotplug_buses: 0,
            ceiling: u8::MAX,
        };
        let mut unnumbered: heapless::Vec<usize, BRIDGES> = heapless::Vec::new();
        self.walk(access, &mut walk, Frame::new(0, None, 0), &mut unnumbered);

        // Second pass: every firmware range is known now, so free bus numbers
        // are really free.
        walk.mode = Mode::Assign;
        for &index in unnumbered.iter() {
            if let Some(frame) = self.number_bridge(access, &mut walk, index) {
                self.walk(access, &mut walk, frame, &mut heapless::Vec::new());
            }
        }
        match walk.first_error {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Numbers every bridge of the segment anew, depth-first from bus 0, as
    /// when no firmware ran: each bridge gets the next free bus as its
    /// secondary bus and a subordinate bus covering everything found behind
    /// it; a hot-plug capable port keeps at least `hotplug_buses` numbers
    /// beyond its secondary bus for what may be plugged in later (Linux's
    /// `hpbussize`). Replaces what was recorded before; the first problem
    /// met is returned, after everything that fits was recorded.
    pub fn renumber<A: ConfigRegionAccess + ?Sized>(
        &mut self,
        access: &A,
        hotplug_buses: u8,
    ) -> Result<()> {
        // Firmware's numbers first, so that every bridge it numbered is
        // known; they are cleared deepest first (children follow parents in
        // the list), so that no stale range overlaps a new one during the
        // walk.
        let _ = self.scan(access);
        let mut walk = Walk {
            mode: Mode::Renumber,
            buses: Buses::new(),
            first_error: None,
            hotplug_buses,
            ceiling: u8::MAX,
        };
        for bridge in self.bridges.iter().rev() {
            let mut cleared = *bridge;
            cleared.primary = 0;
            cleared.secondary = 0;
            cleared.subordinate = 0;
            numbering::write_bus_numbers(access, &mut walk, &cleared);
        }
        self.bridges.clear();
        self.functions.clear();
        self.walk(
            access,
            &mut walk,
            Frame::new(0, None, 0),
            &mut heapless::Vec::new(),
        );
        match walk.first_error {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Re-probes the secondary bus of bridge `bridge` (after a slot reported
    /// a card) and records NVMe functions found there that are not recorded
    /// yet; returns how many were added. A bridge found there (a hot-added
    /// switch) is walked too when the port was given a bus range
    /// (`hotplug_buses`): its bridges are numbered inside that range,
    /// depth-first, and recorded with what is behind them (their windows are
    /// the resource assignment's to program,
    /// [`Topology::assign_memory_behind`]).
    pub fn probe_behind<A: ConfigRegionAccess + ?Sized>(
        &mut self,
        access: &A,
        bridge: usize,
    ) -> Result<usize> {
        let bus = match self.bridges.get(bridge) {
            Some(b) if b.secondary != 0 => b.secondary,
            _ => return Err(Error::InvalidArgument { what: "bridge" }),
        };
        let before = self.functions.len();
        let mut frame = Frame::new(bus, Some(bridge), 0);
        let mut first_error = None;
        while frame.device < DEVICES {
            let address = PciAddress::new(self.segment, bus, frame.device, frame.function);
            let config = ConfigSpace::new(access, address);
            if !answers(&config) {
                frame.next_device();
                continue;
            }
            let header = config.header_type();
            if frame.function == 0 {
                frame.multifunction = header & MULTIFUNCTION != 0;
            }
            frame.next_function();
            if header & !MULTIFUNCTION == HEADER_TYPE_ENDPOINT
                && !self.functions.iter().any(|f| f.address == address)
            {
                if let Err(e) = self.record_function(&config, Some(bridge)) {
                    first_error.get_or_insert(e);
                }
            } else if header & !MULTIFUNCTION == HEADER_TYPE_BRIDGE
                && (config.read32(PRIMARY_BUS) >> 8) as u8 == 0
            {
                // Secondary bus 0: as after reset, so freshly added (a
                // switch that stayed keeps its numbers and windows).
                if let Err(e) = self.walk_hot_added(access, bridge, address) {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(self.functions.len() - before),
        }
    }

    /// Walks the bridge at `address` found behind port `port` (a hot-added
    /// switch), numbering it and everything behind it inside the port's bus
    /// range.
    fn walk_hot_added<A: ConfigRegionAccess + ?Sized>(
        &mut self,
        access: &A,
        port: usize,
        address: PciAddress,
    ) -> Result<()> {
        let (_, depth) = self.chain(port);
        let p = self.bridges[port];
        if p.subordinate <= p.secondary {
            return Err(Error::CapacityExceeded {
                what: "bus numbers behind a hot-plug port",
                limit: 0,
            });
        }
        let mut walk = Walk {
            mode: Mode::Renumber,
            buses: Buses::new(),
            first_error: None,
            hotplug_buses: 0,
            ceiling: p.subordinate,
        };
        claim(&mut walk.buses, p.secondary, p.secondary, depth);
        // Only the switch's own device: the rest of the port's bus was
        // probed by the caller.
        let mut start = Frame::new(p.secondary, Some(port), depth);
        start.device = address.device();
        start.limit = address.device() + 1;
        self.walk(access, &mut walk, start, &mut heapless::Vec::new());
        match walk.first_error {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Depth-first walk from `start` with an explicit stack.
    fn walk<A: ConfigRegionAccess + ?Sized>(
        &mut self,
        access: &A,
        walk: &mut Walk,
        start: Frame,
        unnumbered: &mut heapless::Vec<usize, BRIDGES>,
    ) {
        let mut stack: heapless::Vec<Frame, { MAX_DEPTH + 1 }> = heapless::Vec::new();
        let _ = stack.push(start);
        while let Some(top) = stack.last_mut() {
            if top.device >= top.limit {
                let done = *top;
                stack.pop();
                // The frame of a hot-added switch's bus is the port's: the
                // port's range is not the walk's to close.
                if walk.mode == Mode::Renumber && done.limit == DEVICES {
                    if let Some(bridge) = done.bridge {
                        self.close_range(access, walk, bridge);
                    }
                }
                continue;
            }
            let frame = *top;
            let address = PciAddress::new(self.segment, frame.bus, frame.device, frame.function);
            let config = ConfigSpace::new(access, address);
            if !answers(&config) {
                // Without function 0 there is no device (PCI Local Bus 3.0,
                // 6.2.1); a missing function N > 0 leaves the others.
                if frame.function == 0 {
                    top.next_device();
                } else {
                    top.next_function();
                }
                continue;
            }
            let header = config.header_type();
            if frame.function == 0 {
                top.multifunction = header & MULTIFUNCTION != 0;
            }
            top.next_function();

            match header & !MULTIFUNCTION {
                HEADER_TYPE_ENDPOINT => {
                    if let Err(e) = self.record_function(&config, frame.bridge) {
                        walk.note(e);
                    }
                }
                HEADER_TYPE_BRIDGE => {
                    let Some(index) = self.record_bridge(&config, frame.bridge, walk) else {
                        continue;
                    };
                    if usize::from(frame.depth) >= MAX_DEPTH {
                        walk.note(Error::CapacityExceeded {
                            what: "bridge nesting depth",
                            limit: MAX_DEPTH as u32,
                        });
                        continue;
                    }
                    let next = if walk.mode == Mode::Renumber {
                        self.open_range(access, walk, index, frame.depth + 1)
                    } else if self.firmware_numbers_valid(walk, index, frame.depth + 1) {
                        let b = self.bridges[index];
                        claim(&mut walk.buses, b.secondary, b.subordinate, frame.depth + 1);
                        Some(Frame::new(b.secondary, Some(index), frame.depth + 1))
                    } else if walk.mode == Mode::Firmware {
                        if unnumbered.push(index).is_err() {
                            walk.note(Error::CapacityExceeded {
                                what: "bridges without bus numbers",
                                limit: BRIDGES as u32,
                            });
                        }
                        None
                    } else {
                        self.number_bridge(access, walk, index)
                    };
                    if let Some(next) = next {
                        // Capacity MAX_DEPTH + 1 holds depths 0..=MAX_DEPTH.
                        let _ = stack.push(next);
                    }
                }
                HEADER_TYPE_CARDBUS => {}
                _ => walk.note(Error::BadDeviceValue {
                    field: "header type",
                    value: header.into(),
                }),
            }
        }
    }

    /// Records an endpoint if it is an NVMe controller.
    fn record_function<A: ConfigRegionAccess + ?Sized>(
        &mut self,
        config: &ConfigSpace<'_, A>,
        parent: Option<usize>,
    ) -> Result<()> {
        let (class, subclass, prog_if) = config.class_code();
        if (class, subclass, prog_if) != NVME_CLASS
            || self.functions.iter().any(|f| f.address == config.address())
        {
            return Ok(());
        }
        let bar0 = probe_bar0(config.access(), config.address());
        let others = bar0.and_then(|b| probe_other_bars(config.access(), config.address(), &b));
        let (bar0, other_bars) = match others {
            Ok(others) => (bar0, others),
            Err(e) => (Err(e), OtherBars::new()),
        };
        let function = NvmeFunction {
            address: config.address(),
            vendor_id: config.vendor_id(),
            device_id: config.device_id(),
            parent,
            bar0,
            other_bars,
        };
        if let Err(e) = function.bar0 {
            log::warn!("pci: NVMe function {}: {e}", function.address);
        }
        self.functions
            .push(function)
            .map_err(|_| Error::CapacityExceeded {
                what: "NVMe functions",
                limit: FUNCTIONS as u32,
            })
    }

    /// Records a bridge; `None` when there is no room (the bridge and what is
    /// behind it are then not walked).
    fn record_bridge<A: ConfigRegionAccess + ?Sized>(
        &mut self,
        config: &ConfigSpace<'_, A>,
        parent: Option<usize>,
        walk: &mut Walk,
    ) -> Option<usize> {
        let buses = config.read32(PRIMARY_BUS);
        let port = match PciePort::find(config.access(), config.address()) {
            Ok(port) => port,
            Err(e) => {
                walk.note(e);
                None
            }
        };
        let slot = port
            .filter(|p| p.slot_implemented(config.access()))
            .map(|p| p.slot_capabilities(config.access()));
        let bridge = Bridge {
            address: config.address(),
            parent,
            primary: buses as u8,
            secondary: (buses >> 8) as u8,
            subordinate: (buses >> 16) as u8,
            numbered_by_walk: false,
            memory: memory_window(config),
            prefetchable: prefetchable_window(config),
            port,
            slot,
        };
        // A bridge seen before at this address (a switch pulled and added
        // again) keeps its index: controllers and ports refer to it by it.
        if let Some(index) = self.bridge_index(bridge.address) {
            if bridge.parent == self.bridges[index].parent {
                self.bridges[index] = bridge;
                return Some(index);
            }
        }
        if self.bridges.push(bridge).is_err() {
            walk.note(Error::CapacityExceeded {
                what: "bridges",
                limit: BRIDGES as u32,
            });
            return None;
        }
        Some(self.bridges.len() - 1)
    }
}

/// The window from a base/limit pair; closed when the limit is below the base
/// or the base is 0 (the reset value, which no firmware uses for MMIO).
fn window(base: u64, limit: u64) -> Option<Window> {
    (base != 0 && limit >= base).then_some(Window {
        base: PhysAddr::new(base),
        limit: PhysAddr::new(limit),
    })
}

/// The non-prefetchable window (PCI-to-PCI Bridge 1.2, 3.2.5.8): address bits
/// 31:20 in bits 15:4 of base and limit, limit inclusive to 1 MiB.
fn memory_window<A: ConfigRegionAccess + ?Sized>(config: &ConfigSpace<'_, A>) -> Option<Window> {
    let base = u64::from(config.read16(MEMORY_BASE) & 0xFFF0) << 16;
    let limit = (u64::from(config.read16(MEMORY_LIMIT) & 0xFFF0) << 16) | 0xF_FFFF;
    window(base, limit)
}

/// The prefetchable window (PCI-to-PCI Bridge 1.2, 3.2.5.9), 32- or 64-bit.
fn prefetchable_window<A: ConfigRegionAccess + ?Sized>(
    config: &ConfigSpace<'_, A>,
) -> Option<Window> {
    let base_low = config.read16(PREFETCHABLE_BASE);
    let limit_low = config.read16(PREFETCHABLE_LIMIT);
    let (base_high, limit_high) = match base_low & 0xF {
        0 => (0, 0),
        1 => (
            config.read32(PREFETCHABLE_BASE_UPPER),
            config.read32(PREFETCHABLE_LIMIT_UPPER),
        ),
        _ => return None,
    };
    let base = (u64::from(base_high) << 32) | (u64::from(base_low & 0xFFF0) << 16);
    let limit = (u64::from(limit_high) << 32) | (u64::from(limit_low & 0xFFF0) << 16) | 0xF_FFFF;
    window(base, limit)
}

/// Whether a function answers configuration space. One all-ones read can be
/// a glitch on the bus, so a function counts as absent only after two: a
/// walk is rare (a scan, a slot event), and an empty device number costs one
/// read more.
fn answers<A: ConfigRegionAccess + ?Sized>(config: &ConfigSpace<'_, A>) -> bool {
    // Retry Status (CRS Software Visibility on): there, not ready yet, and
    // the rest of its header reads all-ones; the slot waits for it.
    let ready = || {
        !matches!(
            config.vendor_id(),
            super::config::VENDOR_NONE | 0x0000 | CRS_VENDOR_ID
        )
    };
    ready() || ready()
}
