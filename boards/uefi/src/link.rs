//! `bare_nvme::DeviceLink` over `EFI_PCI_IO_PROTOCOL`: whether the function
//! still answers, and bus mastering off as the proof that its DMA stopped.

use bare_nvme::{DeviceLink, DmaStop, Presence};

use crate::pci_io::{AttrOp, PciIo, ATTR_BUS_MASTER};
use crate::platform::UefiPlatform;

/// The controller as this driver runs it: one I/O queue of up to 64 entries,
/// shared by BlockIo's blocking transfers and BlockIo2's requests.
pub type Nvme = bare_nvme::Controller<UefiPlatform, PciIoLink, 1, 64>;

/// PCI command register: memory space enable.
const COMMAND_MEMORY: u16 = 1 << 1;
/// PCI command register: bus master enable.
const COMMAND_BUS_MASTER: u16 = 1 << 2;

/// The link to one controller's function.
#[derive(Clone, Copy, Debug)]
pub struct PciIoLink(pub PciIo);

impl PciIoLink {
    fn command(&self) -> Option<u16> {
        self.0.config_read16(4)
    }

    fn silent(&self) -> bool {
        self.0.config_read16(0).is_none_or(|v| v == u16::MAX)
    }
}

impl DeviceLink for PciIoLink {
    fn presence(&self) -> Presence {
        // One silent read can be a glitch; two in a row are not.
        if self.silent() && self.silent() {
            return Presence::Absent;
        }
        match self.command() {
            Some(c) if c != u16::MAX && c & COMMAND_MEMORY == 0 => Presence::Reset,
            _ => Presence::Present,
        }
    }

    fn stop_dma(&self) -> Option<DmaStop> {
        let _ = self.0.attributes(AttrOp::Disable, ATTR_BUS_MASTER);
        match self.command() {
            _ if self.silent() && self.silent() => Some(DmaStop::Gone),
            Some(c) if c & COMMAND_BUS_MASTER == 0 => Some(DmaStop::BusMasterOff),
            _ => None,
        }
    }

    fn allow_dma(&self) -> bool {
        let _ = self.0.attributes(AttrOp::Enable, ATTR_BUS_MASTER);
        self.command()
            .is_some_and(|c| c != u16::MAX && c & COMMAND_BUS_MASTER != 0)
    }
}
