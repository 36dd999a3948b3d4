//! Downstream Port Containment (PCIe Base 6.0, 6.2.11 and 7.9.14): a port
//! that contained an error (often a surprise removal) keeps its link down
//! until software clears DPC Trigger Status.

use pci_types::{ConfigRegionAccess, PciAddress};

use super::config::{ConfigSpace, OtherHalf};

/// Extended capability ID of DPC.
pub const ID_DPC: u16 = 0x001D;
/// The last offset a DPC capability may start at: its registers used here
/// (up to DPC Status) end inside configuration space.
const CAPABILITY_END: u16 = 0x1000 - 0x0C;
/// DPC Status (16 bits), from the capability.
const STATUS: u16 = 0x08;
/// DPC Status: DPC Trigger Status (RW1C).
const TRIGGERED: u16 = 1 << 0;
/// DPC Status: DPC RP Busy (root ports): the port is still purging what it
/// contained; the trigger is not to be cleared yet.
const RP_BUSY: u16 = 1 << 4;

/// A port's DPC capability.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dpc {
    port: PciAddress,
    offset: u16,
}

impl Dpc {
    /// The DPC capability of the port at `port`, if it has one.
    pub fn find<A: ConfigRegionAccess + ?Sized>(access: &A, port: PciAddress) -> Option<Dpc> {
        ConfigSpace::new(access, port)
            .find_extended_capability(ID_DPC)
            // The registers used must lie inside configuration space.
            .filter(|&offset| offset <= CAPABILITY_END)
            .map(|offset| Dpc { port, offset })
    }

    fn status<A: ConfigRegionAccess + ?Sized>(&self, access: &A) -> Option<u16> {
        let status = ConfigSpace::new(access, self.port).read16(self.offset + STATUS);
        (status != u16::MAX).then_some(status)
    }

    /// Whether the port contained an error and holds its link down.
    pub fn triggered<A: ConfigRegionAccess + ?Sized>(&self, access: &A) -> bool {
        self.status(access).is_some_and(|s| s & TRIGGERED != 0)
    }

    /// Ends the containment (clears DPC Trigger Status) unless the port is
    /// still busy with it; returns whether it was cleared.
    pub fn release<A: ConfigRegionAccess + ?Sized>(&self, access: &A) -> bool {
        let Some(status) = self.status(access) else {
            return false;
        };
        if status & TRIGGERED == 0 || status & RP_BUSY != 0 {
            return false;
        }
        // The other half is the read-only Error Source ID.
        ConfigSpace::new(access, self.port).write16(
            self.offset + STATUS,
            TRIGGERED,
            OtherHalf::Zero,
        );
        true
    }
}
