//! Memory resource assignment when no firmware did it (or when told to redo
//! it): bridge memory windows sized from what is behind each bridge, every
//! memory BAR of every NVMe function (BAR0 and the others, in one block per
//! function) placed inside them, room kept in hot-plug capable ports for a
//! controller added later, I/O windows closed.
//!
//! Two kinds of memory are laid out independently: the 32-bit
//! non-prefetchable window, and the 64-bit prefetchable one for 64-bit
//! prefetchable BARs when the host bridge has such a window and every bridge
//! on the way supports it. Each bridge window starts 1 MiB aligned (its
//! granularity) and at least as aligned as the largest BAR inside; inside a
//! window the items are placed by decreasing alignment, so the sizes
//! computed bottom-up are exactly the layouts used top-down.

use pci_types::{ConfigRegionAccess, PciAddress};

use super::bar::{self, Bar};
use super::config::{
    Command, ConfigSpace, MEMORY_BASE, PREFETCHABLE_BASE, PREFETCHABLE_BASE_UPPER,
    PREFETCHABLE_LIMIT_UPPER,
};
use super::enumerate::Topology;
use super::window::Window;
use crate::error::Error;
use crate::platform::PhysAddr;

/// Bridge memory window granularity (PCI-to-PCI Bridge 1.2, 3.2.5.8).
const WINDOW_GRANULE: u64 = 1 << 20;
/// I/O Base and I/O Limit register (dword with Secondary Status).
const IO_BASE: u16 = 0x1C;
/// I/O Base Upper 16 Bits and I/O Limit Upper 16 Bits.
const IO_UPPER: u16 = 0x30;

/// Address space the host bridge forwards to PCI, from the platform's
/// description of it (a device tree's `ranges`, ACPI's `_CRS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostWindows {
    /// Non-prefetchable memory below 4 GiB.
    pub memory: Window,
    /// 64-bit prefetchable memory, when the host bridge has such a window.
    pub prefetchable: Option<Window>,
}

/// What a hot-plug capable port keeps for devices plugged in later, like
/// Linux's `hpbussize`, `hpmmiosize` and `hpmmioprefsize`: its windows are
/// at least this large (more when what is behind it already needs more).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HotplugReserve {
    /// Bus numbers kept beyond the port's secondary bus (a switch plugged
    /// in needs one for its internal bus and one per downstream port).
    pub buses: u8,
    /// Bytes of non-prefetchable memory (rounded up to 1 MiB).
    pub memory: u64,
    /// Bytes of prefetchable memory (rounded up to 1 MiB; used only when
    /// the host has a prefetchable window).
    pub prefetchable: u64,
}

impl Default for HotplugReserve {
    /// Three extra buses (enough for a hot-added two-port switch), 2 MiB of
    /// each memory kind (Linux's default).
    fn default() -> Self {
        Self::new()
    }
}

impl HotplugReserve {
    /// The defaults (as [`Default`]), usable in a `const` or `static`.
    pub const fn new() -> Self {
        Self {
            buses: 3,
            memory: 2 << 20,
            prefetchable: 2 << 20,
        }
    }

    /// Sets [`HotplugReserve::buses`].
    pub const fn buses(mut self, buses: u8) -> Self {
        self.buses = buses;
        self
    }

    /// Sets [`HotplugReserve::memory`].
    pub const fn memory(mut self, memory: u64) -> Self {
        self.memory = memory;
        self
    }

    /// Sets [`HotplugReserve::prefetchable`].
    pub const fn prefetchable(mut self, prefetchable: u64) -> Self {
        self.prefetchable = prefetchable;
        self
    }
}

/// The two kinds of memory a window forwards.
const MEMORY: usize = 0;
const PREFETCHABLE: usize = 1;

/// Size and alignment one bridge needs for each kind.
#[derive(Clone, Copy, Default)]
struct Need {
    size: [u64; 2],
    align: [u64; 2],
}

/// Something placed inside a window.
#[derive(Clone, Copy)]
enum Item {
    Function(usize),
    Bridge(usize),
}

fn align_up(value: u64, align: u64) -> Option<u64> {
    Some(value.checked_add(align - 1)? & !(align - 1))
}

/// The assignment's working state over one topology.
struct Plan<'t, const FUNCTIONS: usize, const BRIDGES: usize> {
    topology: &'t Topology<FUNCTIONS, BRIDGES>,
    needs: [Need; BRIDGES],
    /// Which kind each function's BAR0 goes into (`None`: unusable BAR).
    kinds: [Option<usize>; FUNCTIONS],
    /// Whether each bridge (and every bridge above it) forwards 64-bit
    /// prefetchable memory.
    prefetchable_ok: [bool; BRIDGES],
}

impl<const FUNCTIONS: usize, const BRIDGES: usize> Plan<'_, FUNCTIONS, BRIDGES> {
    /// The size of the block holding every memory BAR of `function`.
    fn block(&self, function: usize) -> Option<u64> {
        let f = &self.topology.functions()[function];
        let bar0 = f.bar0.ok()?;
        bar::layout_bars(&bar0, f.other_bars.as_slice()).map(|(size, _)| size)
    }

    /// Size and alignment of `item` in kind `kind` (0 size: not in it).
    fn extent(&self, item: Item, kind: usize) -> (u64, u64) {
        match item {
            Item::Function(f) => match (self.kinds[f], self.block(f)) {
                (Some(k), Some(size)) if k == kind => (size, size),
                _ => (0, 1),
            },
            Item::Bridge(b) => (self.needs[b].size[kind], self.needs[b].align[kind]),
        }
    }

    /// The items directly behind `parent` (`None`: on bus 0).
    fn items(&self, parent: Option<usize>) -> impl Iterator<Item = Item> + '_ {
        let functions = self
            .topology
            .functions()
            .iter()
            .enumerate()
            .filter(move |(_, f)| f.parent == parent)
            .map(|(i, _)| Item::Function(i));
        let bridges = self
            .topology
            .bridges()
            .iter()
            .enumerate()
            .filter(move |(_, b)| b.parent == parent)
            .map(|(i, _)| Item::Bridge(i));
        functions.chain(bridges)
    }

    /// Lays out the items behind `parent` of kind `kind` from `base` by
    /// decreasing alignment, calling `place` with each item's address (or
    /// `None` when it does not fit below `limit`). Returns the end of the
    /// last item placed.
    fn layout(
        &self,
        parent: Option<usize>,
        kind: usize,
        base: u64,
        limit: u64,
        mut place: impl FnMut(Item, Option<u64>),
    ) -> u64 {
        let mut done_f = [false; FUNCTIONS];
        let mut done_b = [false; BRIDGES];
        let mut end = base;
        loop {
            // The largest alignment not placed yet; each round places one
            // item, so the loop ends after at most FUNCTIONS + BRIDGES.
            let next = self
                .items(parent)
                .filter(|&item| match item {
                    Item::Function(f) => !done_f[f],
                    Item::Bridge(b) => !done_b[b],
                })
                .filter(|&item| self.extent(item, kind).0 != 0)
                .max_by_key(|&item| self.extent(item, kind).1);
            let Some(item) = next else {
                return end;
            };
            match item {
                Item::Function(f) => done_f[f] = true,
                Item::Bridge(b) => done_b[b] = true,
            }
            let (size, align) = self.extent(item, kind);
            let at = align_up(end, align).filter(|&at| {
                at.checked_add(size - 1)
                    .is_some_and(|last| last <= limit && last >= at)
            });
            if let Some(at) = at {
                end = at + size;
            }
            place(item, at);
        }
    }
}

/// Where the layout put each bridge window and BAR.
struct Places<const FUNCTIONS: usize, const BRIDGES: usize> {
    bridge_at: [[Option<u64>; 2]; BRIDGES],
    function_at: [Option<u64>; FUNCTIONS],
    failed: [bool; FUNCTIONS],
}

impl<const FUNCTIONS: usize, const BRIDGES: usize> Places<FUNCTIONS, BRIDGES> {
    fn new() -> Self {
        Self {
            bridge_at: [[None; 2]; BRIDGES],
            function_at: [None; FUNCTIONS],
            failed: [false; FUNCTIONS],
        }
    }

    fn record(&mut self, kind: usize, item: Item, at: Option<u64>) {
        match item {
            Item::Function(f) => {
                self.function_at[f] = at;
                self.failed[f] |= at.is_none();
            }
            Item::Bridge(b) => self.bridge_at[b][kind] = at,
        }
    }
}

impl<const FUNCTIONS: usize, const BRIDGES: usize> Topology<FUNCTIONS, BRIDGES> {
    /// Assigns memory to the whole topology (bus numbers are the walk's):
    /// sizes every bridge window from what is behind it plus the hot-plug
    /// reserve, places windows and BARs inside `host`, and programs them.
    /// Bridges get memory decoding and bus mastering on, I/O windows closed.
    ///
    /// A function that finds no room (the host window too small) is not
    /// placed: its `bar0` becomes the reason, and everything else is still
    /// assigned. Returns how many functions were left without room.
    pub fn assign_memory<A: ConfigRegionAccess + ?Sized>(
        &mut self,
        access: &A,
        host: HostWindows,
        reserve: HotplugReserve,
    ) -> usize {
        let plan = self.plan(access, host.prefetchable.is_some(), reserve);
        let mut places = Places::new();
        let hosts = [Some(host.memory), host.prefetchable];
        for kind in [MEMORY, PREFETCHABLE] {
            let Some(window) = hosts[kind] else { continue };
            plan.layout(
                None,
                kind,
                window.base.as_u64(),
                window.limit.as_u64(),
                |item, at| places.record(kind, item, at),
            );
        }
        self.place_below(&plan, None, &mut places);
        let (needs, kinds) = (plan.needs, plan.kinds);
        self.program(access, None, &needs, &kinds, &places)
    }

    /// The non-prefetchable memory (size, alignment) what sits behind
    /// bridge `port` needs (a hot-added switch, walked by
    /// [`Topology::probe_behind`]), with `reserve` for its hot-plug ports;
    /// `None` when nothing behind it needs memory. The size is a power of
    /// two, so it can be taken from the port's window like a BAR.
    pub fn memory_need_behind<A: ConfigRegionAccess + ?Sized>(
        &self,
        access: &A,
        port: usize,
        reserve: HotplugReserve,
    ) -> Option<(u64, u64)> {
        let plan = self.plan(access, false, reserve);
        let used = plan.layout(Some(port), MEMORY, 0, u64::MAX, |_, _| {});
        let align = plan
            .items(Some(port))
            .map(|item| plan.extent(item, MEMORY))
            .filter(|&(size, _)| size != 0)
            .map(|(_, align)| align)
            .max()?;
        let size = used.max(align).checked_next_power_of_two()?;
        Some((size, align.max(size)))
    }

    /// Assigns non-prefetchable memory to what sits behind bridge `port`
    /// (a hot-added switch) inside `window`, a part of the port's window
    /// the caller set aside ([`Topology::memory_need_behind`]), and programs
    /// the bridges and BARs there. Returns how many functions were left
    /// without room.
    pub fn assign_memory_behind<A: ConfigRegionAccess + ?Sized>(
        &mut self,
        access: &A,
        port: usize,
        window: Window,
        reserve: HotplugReserve,
    ) -> usize {
        let plan = self.plan(access, false, reserve);
        let mut places = Places::new();
        plan.layout(
            Some(port),
            MEMORY,
            window.base.as_u64(),
            window.limit.as_u64(),
            |item, at| places.record(MEMORY, item, at),
        );
        self.place_below(&plan, Some(port), &mut places);
        let (needs, kinds) = (plan.needs, plan.kinds);
        self.program(access, Some(port), &needs, &kinds, &places)
    }

    /// Whether bridge or function parent `parent` lies in `scope` (the whole
    /// topology for `None`, else behind bridge `scope`).
    fn in_scope(&self, parent: Option<usize>, scope: Option<usize>) -> bool {
        scope.is_none_or(|port| self.is_behind(parent, port))
    }

    /// Sizes every bridge window bottom-up.
    fn plan<A: ConfigRegionAccess + ?Sized>(
        &self,
        access: &A,
        host_prefetchable: bool,
        reserve: HotplugReserve,
    ) -> Plan<'_, FUNCTIONS, BRIDGES> {
        let mut plan = Plan {
            topology: self,
            needs: [Need::default(); BRIDGES],
            kinds: [None; FUNCTIONS],
            prefetchable_ok: [false; BRIDGES],
        };
        for (i, b) in self.bridges().iter().enumerate() {
            let config = ConfigSpace::new(access, b.address);
            let own = config.read16(PREFETCHABLE_BASE) & 0xF == 1;
            let above = b.parent.is_none_or(|p| plan.prefetchable_ok[p]);
            plan.prefetchable_ok[i] = own && above && host_prefetchable;
        }
        for (i, f) in self.functions().iter().enumerate() {
            plan.kinds[i] = f.bar0.ok().map(|bar| {
                let path_ok = f.parent.is_none_or(|p| plan.prefetchable_ok[p]) && host_prefetchable;
                // One block per function: prefetchable only if all of it is.
                let all = |b: &Bar| b.prefetchable && b.is_64bit;
                let others = f.other_bars.as_slice().iter().all(|(_, b)| all(b));
                if all(&bar) && others && path_ok {
                    PREFETCHABLE
                } else {
                    MEMORY
                }
            });
        }
        // Children follow their parents in the list: sizes bottom-up.
        for i in (0..self.bridges().len()).rev() {
            let hot_plug = self.bridges()[i].hot_plug_capable();
            for kind in [MEMORY, PREFETCHABLE] {
                let mut align = WINDOW_GRANULE;
                for item in plan.items(Some(i)) {
                    let (size, a) = plan.extent(item, kind);
                    if size != 0 {
                        align = align.max(a);
                    }
                }
                let mut used = plan.layout(Some(i), kind, 0, u64::MAX, |_, _| {});
                if hot_plug && (kind == MEMORY || plan.prefetchable_ok[i]) {
                    // At least the reserve, as Linux sizes hot-plug
                    // bridges: what a device plugged in later gets.
                    used = used.max([reserve.memory, reserve.prefetchable][kind]);
                }
                let size = if used == 0 {
                    0
                } else {
                    align_up(used, WINDOW_GRANULE).unwrap_or(u64::MAX)
                };
                plan.needs[i].size[kind] = size;
                plan.needs[i].align[kind] = align;
            }
        }
        plan
    }

    /// Top-down: each placed bridge's items inside its own window (parents
    /// are placed before their children), for the bridges in `scope`.
    fn place_below(
        &self,
        plan: &Plan<'_, FUNCTIONS, BRIDGES>,
        scope: Option<usize>,
        places: &mut Places<FUNCTIONS, BRIDGES>,
    ) {
        for i in 0..self.bridges().len() {
            if !self.in_scope(self.bridges()[i].parent, scope) {
                continue;
            }
            for kind in [MEMORY, PREFETCHABLE] {
                let Some(base) = places.bridge_at[i][kind] else {
                    // A window that found no room strands what is behind it.
                    if plan.needs[i].size[kind] != 0 {
                        self.strand(plan, i, kind, &mut places.failed);
                    }
                    continue;
                };
                let limit = base + plan.needs[i].size[kind] - 1;
                plan.layout(Some(i), kind, base, limit, |item, at| {
                    places.record(kind, item, at)
                });
            }
        }
    }

    /// Programs the windows of the bridges in `scope` (parents first), then
    /// the BARs; returns how many functions were left without room.
    fn program<A: ConfigRegionAccess + ?Sized>(
        &mut self,
        access: &A,
        scope: Option<usize>,
        needs: &[Need; BRIDGES],
        kinds: &[Option<usize>; FUNCTIONS],
        places: &Places<FUNCTIONS, BRIDGES>,
    ) -> usize {
        let count = self.bridges().len();
        // Bridges that did not take their windows, and what they read.
        let mut deaf: [Option<u64>; BRIDGES] = [None; BRIDGES];
        for (i, need) in needs.iter().enumerate().take(count) {
            if !self.in_scope(self.bridges()[i].parent, scope) {
                continue;
            }
            let window = |kind: usize| {
                places.bridge_at[i][kind]
                    .and_then(|base| Window::new(PhysAddr::new(base), need.size[kind]))
            };
            let (memory, prefetchable) = (window(MEMORY), window(PREFETCHABLE));
            let bridge = &mut self.bridges_mut()[i];
            bridge.memory = memory;
            bridge.prefetchable = prefetchable;
            if let Err(read) = program_bridge(access, bridge.address, memory, prefetchable) {
                log::warn!(
                    "pci: bridge {} does not take its windows (reads {read:#x}): nothing behind it is reachable",
                    bridge.address
                );
                deaf[i] = Some(read);
                continue;
            }
            log::info!(
                "pci: bridge {} buses {}-{} memory {} prefetchable {}",
                bridge.address,
                bridge.secondary,
                bridge.subordinate,
                Shown(memory),
                Shown(prefetchable),
            );
        }
        let mut stranded = 0;
        let count = self.functions().len();
        for (i, kind) in kinds.iter().enumerate().take(count) {
            if !self.in_scope(self.functions()[i].parent, scope) {
                continue;
            }
            let parent = self.functions()[i].parent;
            let behind_deaf =
                (0..count).find_map(|b| deaf[b].filter(|_| self.is_behind(parent, b)));
            let f = &mut self.functions_mut()[i];
            let Ok(mut bar) = f.bar0 else { continue };
            if let Some(read) = behind_deaf {
                stranded += 1;
                let error = Error::BadDeviceValue {
                    field: "bridge window (read back)",
                    value: read,
                };
                log::warn!("pci: NVMe function {}: not placed: {error}", f.address);
                f.bar0 = Err(error);
                continue;
            }
            let placed = places.function_at[i].filter(|_| !places.failed[i] && kind.is_some());
            let Some(at) = placed else {
                stranded += 1;
                let what = if *kind == Some(PREFETCHABLE) {
                    "bytes in the prefetchable host window"
                } else {
                    "bytes in the memory host window"
                };
                let error = Error::CapacityExceeded {
                    what,
                    limit: u32::try_from(bar.size).unwrap_or(u32::MAX),
                };
                log::warn!("pci: NVMe function {}: not placed: {error}", f.address);
                f.bar0 = Err(error);
                continue;
            };
            let others = f.other_bars;
            let programmed = bar::layout_bars(&bar, others.as_slice())
                .ok_or(Error::BadDeviceValue {
                    field: "memory BARs' total size",
                    value: bar.size,
                })
                .and_then(|(_, offsets)| {
                    bar::program_block(access, f.address, &bar, others.as_slice(), &offsets, at)?;
                    Ok(offsets)
                });
            match programmed {
                Ok(offsets) => {
                    for &(index, offset) in offsets.iter() {
                        let address = PhysAddr::new(at + offset);
                        match index {
                            0 => bar.address = address,
                            _ => f.other_bars.set_address(index, address),
                        }
                    }
                    log::info!(
                        "pci: NVMe function {} BAR0 {:#x} size {:#x}, {} other memory BARs in its block at {:#x}",
                        f.address,
                        bar.address.as_u64(),
                        bar.size,
                        others.as_slice().len(),
                        at,
                    );
                    f.bar0 = Ok(bar);
                }
                Err(e) => {
                    log::warn!("pci: NVMe function {}: BAR0 not taken: {e}", f.address);
                    f.bar0 = Err(e);
                    stranded += 1;
                }
            }
        }
        stranded
    }

    /// Marks every function behind bridge `index` whose BAR is of `kind` as
    /// without room.
    fn strand(
        &self,
        plan: &Plan<'_, FUNCTIONS, BRIDGES>,
        index: usize,
        kind: usize,
        failed: &mut [bool; FUNCTIONS],
    ) {
        for (f, function) in self.functions().iter().enumerate() {
            if plan.kinds[f] == Some(kind) && self.is_behind(function.parent, index) {
                failed[f] = true;
            }
        }
    }

    /// Whether bridge `parent` (a function's or a bridge's parent) is
    /// `ancestor` or lies behind it: whether what has that parent sits
    /// behind `ancestor`.
    pub fn is_behind(&self, mut parent: Option<usize>, ancestor: usize) -> bool {
        // Parents precede children, so each step goes to a smaller index.
        for _ in 0..=self.bridges().len() {
            match parent {
                Some(p) if p == ancestor => return true,
                Some(p) => parent = self.bridges().get(p).and_then(|b| b.parent),
                None => return false,
            }
        }
        false
    }
}

/// Programs a bridge's windows (closing those that are `None` and the I/O
/// window), reads them back and, if the bridge took them, turns on memory
/// decoding and bus mastering; a bridge that did not take them is left
/// with both off (a window it made up must not claim addresses). Returns
/// whether it took them, or what its memory windows read instead.
fn program_bridge<A: ConfigRegionAccess + ?Sized>(
    access: &A,
    address: PciAddress,
    memory: Option<Window>,
    prefetchable: Option<Window>,
) -> core::result::Result<(), u64> {
    let config = ConfigSpace::new(access, address);
    // I/O base above limit: closed. The upper dword keeps Secondary Status
    // (RW1C bits written as 0 are left alone).
    config.write32(IO_BASE, 0x0000_00F0);
    config.write32(IO_UPPER, 0);
    let (base, limit) = match memory {
        Some(w) => (w.base.as_u64(), w.limit.as_u64()),
        None => (0xFFF0_0000, 0),
    };
    let memory_dword = ((base >> 16) as u32 & 0xFFF0) | ((limit as u32) & 0xFFF0_0000);
    config.write32(MEMORY_BASE, memory_dword);
    let (base, limit) = match prefetchable {
        Some(w) => (w.base.as_u64(), w.limit.as_u64()),
        None => (0xFFFF_FFFF_FFF0_0000, 0),
    };
    // The type bits (3:0 of base and limit) are the bridge's own.
    let prefetchable_dword = ((base >> 16) as u32 & 0xFFF0) | ((limit as u32) & 0xFFF0_0000);
    config.write32(PREFETCHABLE_BASE, prefetchable_dword);
    config.write32(PREFETCHABLE_BASE_UPPER, (base >> 32) as u32);
    config.write32(PREFETCHABLE_LIMIT_UPPER, (limit >> 32) as u32);
    let read = |offset, mask| config.read32(offset) & mask;
    const WINDOW: u32 = 0xFFF0_FFF0;
    let memory_back = read(MEMORY_BASE, WINDOW);
    let prefetchable_back = read(PREFETCHABLE_BASE, WINDOW);
    // A bridge without a prefetchable window reads it 0 whatever is
    // written: what is not there cannot mislead.
    let prefetchable_taken = prefetchable_back == prefetchable_dword
        || (prefetchable.is_none() && prefetchable_back == 0);
    let upper_taken = prefetchable.is_none()
        || (config.read32(PREFETCHABLE_BASE_UPPER) == (base >> 32) as u32
            && config.read32(PREFETCHABLE_LIMIT_UPPER) == (limit >> 32) as u32);
    if memory_back != memory_dword || !prefetchable_taken || !upper_taken {
        config.update_command(
            Command::empty(),
            Command::MEMORY | Command::BUS_MASTER | Command::IO,
        );
        return Err(u64::from(memory_back) | (u64::from(prefetchable_back) << 32));
    }
    config.update_command(Command::MEMORY | Command::BUS_MASTER, Command::IO);
    Ok(())
}

/// A window for the log.
struct Shown(Option<Window>);

impl core::fmt::Display for Shown {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            Some(w) => write!(f, "{:#x}-{:#x}", w.base.as_u64(), w.limit.as_u64()),
            None => f.write_str("closed"),
        }
    }
}
