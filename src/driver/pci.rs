//! The driver's view of the PCI segment: enumeration, BAR placement and
//! enabling, functions parked after an orderly detach, and the probe of
//! plain buses (no hot-plug slot) for hot-added functions (what it finds
//! goes to the monitor).

use log::{info, warn};
use pci_types::{ConfigRegionAccess, PciAddress};

use crate::driver::entries::WAITING_FOR_POLL;
use crate::driver::monitor::{BridgeId, Probed};
use crate::driver::Driver;
use crate::error::{Error, Result};
use crate::pci::assign::HostWindows;
use crate::pci::config::ConfigSpace;
use crate::pci::enumerate::Topology;
use crate::pci::placement::BarAllocator;
use crate::pci::window::Window;
use crate::platform::{Instant, PhysAddr, Platform};

/// NVMe functions the topology records.
const MAX_FUNCTIONS: usize = 16;
/// Bridges the topology records.
const MAX_BRIDGES: usize = 32;
/// Device numbers on a bus.
const DEVICES: u8 = 32;

/// What the driver knows of the PCI segment.
pub(crate) struct Pci {
    pub(crate) topology: Topology<MAX_FUNCTIONS, MAX_BRIDGES>,
    bars: BarAllocator<MAX_BRIDGES, MAX_FUNCTIONS>,
    /// Plain-bus probe position: index into the probed buses, device number.
    cursor: (usize, u8),
    next_probe: Instant,
    /// Functions detached in an orderly way that are still in place: not
    /// attached again until they leave.
    parked: heapless::Vec<PciAddress, MAX_FUNCTIONS>,
    /// The hot-plug slots' power machines.
    pub(crate) slots: crate::driver::power::Slots,
}

impl Pci {
    pub(crate) fn new(root_window: Option<(PhysAddr, u64)>) -> Self {
        let root = root_window.and_then(|(base, size)| Window::new(base, size));
        Self {
            topology: Topology::new(0),
            bars: BarAllocator::new(root),
            cursor: (0, 0),
            next_probe: Instant::from_nanos(0),
            parked: heapless::Vec::new(),
            slots: crate::driver::power::Slots::default(),
        }
    }

    pub(crate) fn park(&mut self, address: PciAddress) {
        if !self.parked.contains(&address) {
            // More detached-and-present functions than the topology holds
            // cannot exist.
            let _ = self.parked.push(address);
        }
    }

    pub(crate) fn is_parked(&self, address: PciAddress) -> bool {
        self.parked.contains(&address)
    }

    pub(crate) fn unpark(&mut self, address: PciAddress) {
        self.parked.retain(|&a| a != address);
    }

    /// Unparks every function on `bus` and returns them.
    pub(crate) fn unpark_bus(&mut self, bus: u8) -> heapless::Vec<PciAddress, MAX_FUNCTIONS> {
        let gone = self
            .parked
            .iter()
            .copied()
            .filter(|a| a.bus() == bus)
            .collect();
        self.parked.retain(|a| a.bus() != bus);
        gone
    }

    pub(crate) fn unpark_all(&mut self) {
        self.parked.clear();
    }
}

impl<
        P: Platform + Clone,
        C: ConfigRegionAccess + Clone,
        const N: usize,
        const QUEUES: usize,
        const DEPTH: usize,
    > Driver<P, C, N, QUEUES, DEPTH>
{
    /// Walks the PCI segment; returns the NVMe functions with their bridge.
    pub(crate) fn enumerate(
        &mut self,
    ) -> heapless::Vec<(PciAddress, Option<BridgeId>), MAX_FUNCTIONS> {
        if let Err(e) = self.pci.topology.scan(&self.access) {
            // The walk records what it could; serve that.
            warn!("pci: enumeration incomplete: {e}");
        }
        let bridges = self.pci.topology.bridges();
        let firmware_left_nothing =
            !bridges.is_empty() && bridges.iter().all(|b| b.numbered_by_walk);
        // Moving the BARs of controllers in use is not an option: only the
        // first scan assigns.
        let idle = self.entries.iter().all(|e| e.is_none());
        if (self.config.reassign || firmware_left_nothing) && idle {
            self.assign_resources();
        }
        let mut found = heapless::Vec::new();
        for f in self.pci.topology.functions() {
            // A function the assignment found no room for is skipped (the
            // reason was logged); any other BAR problem shows at attach.
            if matches!(f.bar0, Err(Error::CapacityExceeded { .. })) {
                continue;
            }
            let parent = f.parent.and_then(|i| BridgeId::of(&self.pci.topology, i));
            let _ = found.push((f.address, parent));
        }
        info!(
            "pci: {} bridges, {} NVMe functions",
            self.pci.topology.bridges().len(),
            found.len()
        );
        found
    }

    /// Numbers every bus and assigns every window and BAR anew inside the
    /// host windows (`root_window`, `prefetchable_window`).
    fn assign_resources(&mut self) {
        let window =
            |w: Option<(PhysAddr, u64)>| w.and_then(|(base, size)| Window::new(base, size));
        let Some(memory) = window(self.config.root_window) else {
            warn!("pci: firmware assigned no resources and no host window is known");
            return;
        };
        let host = HostWindows {
            memory,
            prefetchable: window(self.config.prefetchable_window),
        };
        let reserve = self.config.hotplug_reserve;
        if let Err(e) = self.pci.topology.renumber(&self.access, reserve.buses) {
            warn!("pci: bus numbering incomplete: {e}");
        }
        let stranded = self.pci.topology.assign_memory(&self.access, host, reserve);
        if stranded != 0 {
            warn!("pci: {stranded} NVMe functions left without memory");
        }
        // Bus 0 functions found later must not land in a bridge's window.
        self.pci.bars = BarAllocator::new(Some(memory));
        for b in self
            .pci
            .topology
            .bridges()
            .iter()
            .filter(|b| b.parent.is_none())
        {
            if let Some(w) = b.memory {
                if let Err(e) = self.pci.bars.reserve_root(b.address, w) {
                    warn!("pci: bridge {} window not reserved: {e}", b.address);
                }
            }
        }
    }

    /// Gives a switch just walked behind hot-plug port `port` (its bridges
    /// without a window yet) memory from the port's window: with the
    /// hot-plug reserve for its own ports when that fits, else just what its
    /// controllers need.
    fn assign_behind(&mut self, port: usize) {
        let topology = &self.pci.topology;
        let fresh = topology
            .bridges()
            .iter()
            .find(|b| b.parent == Some(port) && b.memory.is_none());
        let (Some(owner), Some(parent)) = (fresh.map(|b| b.address), topology.bridges().get(port))
        else {
            return;
        };
        let parent = *parent;
        let full = self.config.hotplug_reserve;
        let bare = full.memory(0).prefetchable(0);
        for reserve in [full, bare] {
            let topology = &self.pci.topology;
            let Some((size, _)) = topology.memory_need_behind(&self.access, port, reserve) else {
                return;
            };
            let Ok(base) = self.pci.bars.allocate_in(&parent, owner, size) else {
                continue;
            };
            let Some(window) = Window::new(base, size) else {
                return;
            };
            let stranded =
                self.pci
                    .topology
                    .assign_memory_behind(&self.access, port, window, reserve);
            if stranded != 0 {
                warn!("pci: {stranded} NVMe functions behind {owner} left without memory");
            }
            return;
        }
        warn!(
            "pci: no room in bridge {}'s window for the switch at {owner}",
            parent.address
        );
    }

    /// Places BAR0 of `address` (keeping a valid firmware assignment) and turns
    /// on memory decoding and bus mastering. Returns BAR0's address and size.
    pub(crate) fn enable_function(
        &mut self,
        address: PciAddress,
        bridge: Option<BridgeId>,
    ) -> Result<(PhysAddr, usize)> {
        let parent = bridge
            .and_then(|b| b.find(&self.pci.topology))
            .map(|(_, b)| b);
        let bar = self
            .pci
            .bars
            .assign_bar0(&self.access, address, parent.as_ref())?;
        let len = usize::try_from(bar.size).map_err(|_| Error::BadDeviceValue {
            field: "BAR0 size",
            value: bar.size,
        })?;
        Ok((bar.address, len))
    }

    /// Forgets a function that is gone, so its BAR range can be reused.
    pub(crate) fn release_function(&mut self, address: PciAddress) {
        if self.is_attached(address) {
            // A new controller already sits at the same address.
            return;
        }
        self.pci.bars.release(address);
        self.pci.topology.forget_function(address);
    }

    /// Probes behind the hot-plug port `port` (a card arrived in its slot)
    /// and attaches every NVMe function found there.
    pub(crate) fn attach_behind(&mut self, port: BridgeId) {
        let Some((bridge, _)) = port.find(&self.pci.topology) else {
            return;
        };
        if let Err(e) = self.pci.topology.probe_behind(&self.access, bridge) {
            warn!("pci: probing behind bridge {bridge}: {e}");
        }
        self.assign_behind(bridge);
        // Everything behind the port: a hot-added switch brings its
        // controllers behind its own ports.
        let topology = &self.pci.topology;
        let candidates: heapless::Vec<(PciAddress, Option<BridgeId>), MAX_FUNCTIONS> = topology
            .functions()
            .iter()
            .filter(|f| topology.is_behind(f.parent, bridge))
            .map(|f| (f.address, f.parent.and_then(|i| BridgeId::of(topology, i))))
            .collect();
        for (address, parent) in candidates {
            if self.is_attached(address) {
                continue;
            }
            match self.attach(address, parent) {
                Ok(_) => {}
                // Tried again on the next slot or bus poll, quietly.
                Err(WAITING_FOR_POLL) => {
                    self.note_waiting_for_poll(address);
                    self.pci.topology.forget_function(address);
                }
                Err(e) => {
                    warn!("nvme: cannot attach hot-added {address}: {e}");
                    self.pci.topology.forget_function(address);
                }
            }
        }
    }

    /// Probes the next device number of a bus without a hot-plug slot (bus
    /// 0 and buses behind plain bridges), so that a sweep over all of them
    /// takes the configured rescan interval. `None` when no probe is due;
    /// else the function probed, its bridge, and what was found there (one
    /// config read, two for a function that is neither attached nor
    /// parked).
    pub(super) fn probe_next_device(
        &mut self,
        now: Instant,
    ) -> Option<(PciAddress, Option<BridgeId>, Probed)> {
        let interval = self.config.bus_rescan_interval?;
        if now < self.pci.next_probe {
            return None;
        }
        let buses = self.plain_buses();
        if buses.is_empty() {
            return None;
        }
        let per_probe = interval / (buses.len() as u32 * DEVICES as u32);
        self.pci.next_probe = now + per_probe;
        let (mut bus_index, device) = self.pci.cursor;
        if bus_index >= buses.len() {
            bus_index = 0;
        }
        let (bus, bridge) = buses[bus_index];
        self.pci.cursor = if device + 1 >= DEVICES {
            (bus_index + 1, 0)
        } else {
            (bus_index, device + 1)
        };
        let address = PciAddress::new(0, bus, device, 0);
        if self.is_attached(address) {
            return Some((address, bridge, Probed::Attached));
        }
        let space = ConfigSpace::new(&self.access, address);
        let present = space.is_present();
        let probed = if self.pci.is_parked(address) {
            Probed::Parked { present }
        } else if !present {
            Probed::Absent
        } else {
            Probed::Function {
                class: space.class_code(),
            }
        };
        Some((address, bridge, probed))
    }

    /// Bus 0 and the secondary buses of bridges without a hot-plug slot.
    fn plain_buses(&self) -> heapless::Vec<(u8, Option<BridgeId>), MAX_BRIDGES> {
        let mut buses = heapless::Vec::new();
        let _ = buses.push((0, None));
        for (i, b) in self.pci.topology.bridges().iter().enumerate() {
            if !b.hot_plug_capable() && b.secondary != 0 {
                let _ = buses.push((b.secondary, BridgeId::of(&self.pci.topology, i)));
            }
        }
        buses
    }
}
