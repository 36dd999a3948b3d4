//! A controller's view of its PCI function: presence and bus mastering.

use pci_types::{ConfigRegionAccess, PciAddress};

use crate::nvme::DeviceLink;
use crate::pci::config::{Command, ConfigSpace};

/// The [`DeviceLink`] of a controller found by the driver's PCI enumeration.
#[derive(Clone, Debug)]
pub struct PciLink<C> {
    access: C,
    address: PciAddress,
}

impl<C: ConfigRegionAccess> PciLink<C> {
    /// The link to the function at `address`, reached through `access`.
    pub fn new(access: C, address: PciAddress) -> Self {
        Self { access, address }
    }

    /// The function's address.
    pub fn address(&self) -> PciAddress {
        self.address
    }
}

impl<C: ConfigRegionAccess> DeviceLink for PciLink<C> {
    /// Present means the function the driver configured is still there: it
    /// answers config space and still decodes its BAR. A function that was
    /// reset behind the driver's back (a link flap, a slot power cycle) has
    /// memory decoding off again, and the controller the driver knew is gone
    /// as surely as if it had been pulled.
    fn is_present(&self) -> bool {
        let space = ConfigSpace::new(&self.access, self.address);
        space.is_present() && space.command().contains(Command::MEMORY)
    }

    fn stop_dma(&self) {
        let space = ConfigSpace::new(&self.access, self.address);
        if space.is_present() {
            space.update_command(Command::empty(), Command::BUS_MASTER);
        }
    }
}
