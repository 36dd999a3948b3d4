//! The driver's view of the PCI segment: enumeration, BAR placement and
//! enabling, functions parked after an orderly detach, and the probe of
//! plain buses (no hot-plug slot) for hot-added functions.

use log::{info, warn};
use pci_types::{ConfigRegionAccess, PciAddress};

use crate::driver::Driver;
use crate::error::{Error, Result};
use crate::pci::bar::BarAllocator;
use crate::pci::config::ConfigSpace;
use crate::pci::enumerate::{Topology, NVME_CLASS};
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

    fn unpark(&mut self, address: PciAddress) {
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
    ) -> heapless::Vec<(PciAddress, Option<usize>), MAX_FUNCTIONS> {
        if let Err(e) = self.pci.topology.scan(&self.access) {
            // The walk records what it could; serve that.
            warn!("pci: enumeration incomplete: {e}");
        }
        let mut found = heapless::Vec::new();
        for f in self.pci.topology.functions() {
            let _ = found.push((f.address, f.parent));
        }
        info!(
            "pci: {} bridges, {} NVMe functions",
            self.pci.topology.bridges().len(),
            found.len()
        );
        found
    }

    /// Places BAR0 of `address` (keeping a valid firmware assignment) and turns
    /// on memory decoding and bus mastering. Returns BAR0's address and size.
    pub(crate) fn enable_function(
        &mut self,
        address: PciAddress,
        bridge: Option<usize>,
    ) -> Result<(PhysAddr, usize)> {
        let parent = bridge
            .and_then(|i| self.pci.topology.bridges().get(i))
            .copied();
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

    pub(crate) fn attach_behind(&mut self, bridge: usize) {
        if let Err(e) = self.pci.topology.probe_behind(&self.access, bridge) {
            warn!("pci: probing behind bridge {bridge}: {e}");
        }
        let candidates: heapless::Vec<PciAddress, MAX_FUNCTIONS> = self
            .pci
            .topology
            .functions()
            .iter()
            .filter(|f| f.parent == Some(bridge))
            .map(|f| f.address)
            .collect();
        for address in candidates {
            if self.is_attached(address) {
                continue;
            }
            if let Err(e) = self.attach(address, Some(bridge)) {
                warn!("nvme: cannot attach hot-added {address}: {e}");
                self.pci.topology.forget_function(address);
            }
        }
    }

    /// Probes one device number of a bus without a hot-plug slot (bus 0 and
    /// buses behind plain bridges), so a sweep over all of them takes the
    /// configured rescan interval. A new NVMe function is attached.
    pub(crate) fn probe_buses(&mut self, now: Instant) {
        let Some(interval) = self.config.bus_rescan_interval else {
            return;
        };
        if now < self.pci.next_probe {
            return;
        }
        let buses = self.plain_buses();
        if buses.is_empty() {
            return;
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
            return;
        }
        let space = ConfigSpace::new(&self.access, address);
        let present = space.is_present();
        if self.pci.is_parked(address) {
            if !present {
                self.pci.unpark(address);
                self.release_function(address);
            }
            return;
        }
        if !present {
            return;
        }
        if space.class_code() != NVME_CLASS {
            return;
        }
        info!("pci: NVMe function appeared at {address}");
        if let Err(e) = self.attach(address, bridge) {
            warn!("nvme: cannot attach hot-added {address}: {e}");
        }
    }

    /// Bus 0 and the secondary buses of bridges without a hot-plug slot.
    fn plain_buses(&self) -> heapless::Vec<(u8, Option<usize>), MAX_BRIDGES> {
        let mut buses = heapless::Vec::new();
        let _ = buses.push((0, None));
        for (i, b) in self.pci.topology.bridges().iter().enumerate() {
            if !b.hot_plug_capable() && b.secondary != 0 {
                let _ = buses.push((b.secondary, Some(i)));
            }
        }
        buses
    }
}
