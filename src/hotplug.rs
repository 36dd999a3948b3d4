//! The PCI side of the driver: enumeration, BAR placement, hot-plug slot
//! polling and probing of plain buses for hot-added functions.

use log::{info, warn};
use pci_types::{ConfigRegionAccess, PciAddress};

use crate::driver::Driver;
use crate::error::{Error, Result};
use crate::event::Detection;
use crate::nvme::State;
use crate::pci::bar::BarAllocator;
use crate::pci::config::{Command, ConfigSpace};
use crate::pci::enumerate::{Topology, NVME_CLASS};
use crate::pci::slot::{LinkStatus, SlotStatus};
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

    pub(crate) fn unpark_all(&mut self) {
        self.parked.clear();
    }
}

impl<P: Platform + Clone, C: ConfigRegionAccess + Clone, const N: usize> Driver<P, C, N> {
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

    /// Reads Slot Status of every hot-plug port (one config read each; Link
    /// Status only when the link state changed) and acts on what changed:
    /// an emptied slot or a dead link is a surprise removal, a filled slot is
    /// probed and attached, the attention button starts an orderly detach.
    pub(crate) fn poll_slots(&mut self) {
        for index in 0..self.pci.topology.bridges().len() {
            self.poll_slot(index);
        }
    }

    /// Polls the slot of bridge `index` (nothing if it has none); see
    /// [`Driver::poll_slots`].
    pub(crate) fn poll_slot(&mut self, index: usize) {
        let Some(bridge) = self.pci.topology.bridges().get(index).copied() else {
            return;
        };
        let Some(port) = bridge.port.filter(|_| bridge.hot_plug_capable()) else {
            return;
        };
        let Ok(status) = port.slot_status(&self.access) else {
            return; // the port itself is gone: nothing behind it answers
        };
        let events = status.events();
        let mut link_down = false;
        if events.contains(SlotStatus::DATA_LINK_STATE_CHANGED) {
            link_down = !port
                .link_status(&self.access)
                .contains(LinkStatus::DLL_LINK_ACTIVE);
        }
        let present = status.contains(SlotStatus::PRESENCE_DETECT_STATE);
        let live: heapless::Vec<usize, N> = self
            .entries_on_port(index)
            .filter(|&i| self.is_live(i))
            .collect();
        // A presence or link change while a controller is attached means
        // the device it talked to is gone, even if a device is back by now
        // (a link flap faster than the poll): that one comes up reset,
        // without its BAR, and is a new attach.
        let mut changed = events
            .intersects(SlotStatus::PRESENCE_DETECT_CHANGED | SlotStatus::DATA_LINK_STATE_CHANGED);
        if changed && present && !link_down && !live.is_empty() && self.unchanged(&live) {
            // A bouncing presence detect (or a link that recovered without
            // resetting the function): the controller still answers as the
            // one the driver configured, so nothing was removed.
            info!("pci: slot event on bridge {index}, but its controller is unchanged: ignored");
            changed = false;
        }
        if !present || link_down || changed {
            for &i in &live {
                self.remove_entry(i, Detection::Slot);
            }
        } else if events.contains(SlotStatus::ATTENTION_BUTTON_PRESSED) {
            for &i in &live {
                self.detach_entry(i);
            }
        }
        if changed {
            let bus = bridge.secondary;
            let gone: heapless::Vec<PciAddress, MAX_FUNCTIONS> = self
                .pci
                .parked
                .iter()
                .copied()
                .filter(|a| a.bus() == bus)
                .collect();
            for address in gone {
                self.pci.unpark(address);
                self.release_function(address);
            }
        }
        // No slot event, but the device may be back (see awaits_return);
        // checked only for an occupied slot.
        let returned = present
            && !link_down
            && !changed
            && live.is_empty()
            && self.awaits_return(index, bridge.secondary);
        if present && !link_down && (changed || returned) {
            for &i in &live {
                if let Some(address) = self.entries[i].as_ref().map(|e| e.address) {
                    self.release_function(address);
                }
            }
            self.attach_behind(index);
        }
        port.clear_slot_status(&self.access, events);
    }

    /// Whether every controller of `entries` still is the one the driver
    /// configured: its function answers with memory decoding on and its
    /// registers read back the CAP the controller reported. A function reset
    /// by a link flap, or a swapped card, fails this.
    fn unchanged(&self, entries: &[usize]) -> bool {
        entries.iter().all(|&i| {
            self.entries[i]
                .as_ref()
                .is_some_and(|e| e.controller.answers_as_configured())
        })
    }

    /// Whether a slot that still reports a card should be probed although
    /// no slot event arrived: a slot power cycle brings the device back
    /// without any slot event on some ports (QEMU's among them). That is the
    /// case when the slot's last controller was surprise-removed (not
    /// detached on request) and the function answers again, or when it
    /// failed and the function has since been reset (memory decoding off,
    /// which the driver had turned on): a device that fails on its own is
    /// not retried. One or two config reads, only for such slots.
    fn awaits_return(&self, bridge: usize, secondary: u8) -> bool {
        let last = self
            .entries_on_port(bridge)
            .filter_map(|i| self.entries[i].as_ref())
            .max_by_key(|e| e.id.generation);
        let Some(state) = last.map(|e| e.controller.state()) else {
            return false;
        };
        if secondary == 0 || !matches!(state, State::Removed | State::Failed) {
            return false;
        }
        let space = ConfigSpace::new(&self.access, PciAddress::new(0, secondary, 0, 0));
        space.is_present()
            && (state == State::Removed || !space.command().contains(Command::MEMORY))
    }

    fn attach_behind(&mut self, bridge: usize) {
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
