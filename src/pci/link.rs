//! A controller's view of its PCI function: presence and bus mastering.

use pci_types::{ConfigRegionAccess, PciAddress};

use crate::error::Error;
use crate::link::{DeviceLink, DmaStop, Presence};
use crate::pci::bar::{disable_bus_master, enable_bus_master};
use crate::pci::config::{Command, ConfigSpace};
use crate::pci::slot::{LinkCapabilities, PciePort, SlotCapabilities, SlotControl};

/// The [`DeviceLink`] of a controller found by the driver's PCI enumeration.
#[derive(Clone, Debug)]
pub struct PciLink<C> {
    access: C,
    address: PciAddress,
    /// The PCI Express port above the function, if any: its slot and link
    /// confirm that a silent function is really gone.
    port: Option<PciePort>,
}

impl<C: ConfigRegionAccess> PciLink<C> {
    /// The link to the function at `address`, reached through `access`,
    /// below `port` (the PCI Express port above it, if there is one).
    pub fn new(access: C, address: PciAddress, port: Option<PciePort>) -> Self {
        Self {
            access,
            address,
            port,
        }
    }

    /// The function's address.
    pub fn address(&self) -> PciAddress {
        self.address
    }

    fn space(&self) -> ConfigSpace<'_, C> {
        ConfigSpace::new(&self.access, self.address)
    }

    /// Whether the port above says nothing is behind it: slot empty or
    /// powered off, or link down where the port reports link state. Without
    /// such a port a second silent read is all the evidence there is.
    fn port_says_gone(&self) -> bool {
        let Some(port) = self.port else {
            return !self.space().is_present();
        };
        let Ok(state) = port.slot_state(&self.access) else {
            // The port itself no longer answers: its whole branch is gone.
            return true;
        };
        if port.slot_implemented(&self.access) {
            if !state.present() {
                return true;
            }
            // A slot whose power controller is off has no power for the
            // card: it cannot master the bus.
            let powered_off = port
                .slot_capabilities(&self.access)
                .contains(SlotCapabilities::POWER_CONTROLLER)
                && port
                    .slot_control(&self.access)
                    .contains(SlotControl::POWER_OFF);
            if powered_off {
                return true;
            }
        }
        let reports_link = port
            .link_capabilities(&self.access)
            .contains(LinkCapabilities::DLL_ACTIVE_REPORTING);
        if reports_link {
            !state.link_active()
        } else {
            !self.space().is_present()
        }
    }
}

impl<C: ConfigRegionAccess> DeviceLink for PciLink<C> {
    fn presence(&self) -> Presence {
        let space = self.space();
        // One silent read can be a glitch on the bus; two in a row are not.
        if !space.is_present() && !space.is_present() {
            return Presence::Absent;
        }
        let command = space.command();
        if command.bits() != u16::MAX && !command.contains(Command::MEMORY) {
            Presence::Reset
        } else {
            Presence::Present
        }
    }

    fn stop_dma(&self) -> Option<DmaStop> {
        match disable_bus_master(&self.access, self.address) {
            Ok(()) => Some(DmaStop::BusMasterOff),
            // Silent: gone only if the port above agrees (a glitch reads
            // silent once).
            Err(Error::DeviceRemoved) => self.port_says_gone().then_some(DmaStop::Gone),
            // The function ignores the write.
            Err(_) => None,
        }
    }

    fn allow_dma(&self) -> bool {
        enable_bus_master(&self.access, self.address)
    }
}
