//! What the driver reports from `tick`: each lifecycle change exactly once.

use pci_types::PciAddress;

use crate::error::Error;
use crate::spec::identify::IdString;
use crate::spec::log::CriticalWarning;

/// Names one attached controller for as long as it stays attached. A new
/// attach (even of the same device in the same slot) gets a new identity, so a
/// handle kept across a removal fails with [`Error::StaleHandle`] instead of
/// reaching the new controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ControllerId {
    pub(crate) index: u8,
    pub(crate) generation: u32,
}

impl ControllerId {
    /// The attach generation (counts every attach the driver made).
    pub fn generation(&self) -> u32 {
        self.generation
    }
}

impl core::fmt::Display for ControllerId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "nvme{}.{}", self.index, self.generation)
    }
}

/// How a removal was noticed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detection {
    /// The tick read CSTS and found it all-ones, zero, or RDY dropped, and
    /// the vendor ID in config space confirmed the device is gone.
    StatusRegister,
    /// The hot-plug port's Slot Status reported the slot empty or the link
    /// down.
    Slot,
    /// An I/O or admin call noticed it first.
    IoPath,
    /// The embedder asked for an orderly detach, or the attention button was
    /// pressed.
    Orderly,
}

/// Why a slot was switched off and flagged by the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotFault {
    /// After power-on the link did not come up within 1 s.
    LinkDown,
    /// The link came up but the function never answered a configuration
    /// read (or kept answering with Retry Status) within its readiness time.
    NotReady,
    /// The slot reported a power fault.
    PowerFault,
}

/// A lifecycle change of a controller (or of a hot-plug slot).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A controller was found (at enumeration or hot-added) and is being
    /// brought up.
    Attached {
        /// Its identity.
        id: ControllerId,
        /// Where it sits.
        address: PciAddress,
    },
    /// A controller finished bring-up and serves I/O.
    Ready {
        /// Its identity.
        id: ControllerId,
        /// Serial number.
        serial: IdString<20>,
        /// Model number.
        model: IdString<40>,
        /// Active namespaces served.
        namespaces: u8,
    },
    /// The controller is gone; every command it had outstanding completed
    /// once with [`Error::DeviceRemoved`] (or [`Error::Aborted`] for an orderly
    /// detach) and all its memory is back with the platform.
    Removed {
        /// Its identity.
        id: ControllerId,
        /// Commands failed by the teardown.
        failed_commands: u32,
        /// How the removal was noticed.
        detected_by: Detection,
    },
    /// The controller failed and was given up (its memory is returned, its
    /// bus mastering turned off).
    Failed {
        /// Its identity.
        id: ControllerId,
        /// Why.
        error: Error,
    },
    /// After `Removed` or `Failed`: the device could not be proven unable to
    /// reach memory (it did not stop within CAP.TO), so the memory it could
    /// reach is kept. Caller buffers among it are never handed back; the
    /// driver's own regions return to the platform once a later tick proves
    /// DMA stopped ([`crate::Driver::quarantine_returned`]). Reported once.
    Quarantined {
        /// Its identity.
        id: ControllerId,
        /// DMA regions kept.
        regions: u32,
        /// Their total size in bytes.
        bytes: u64,
    },
    /// A controller came ready with the serial number of one removed
    /// earlier: the same device is back.
    Returned {
        /// The new identity.
        id: ControllerId,
        /// The identity it had before.
        previous: ControllerId,
    },
    /// The controller raised a SMART / Health asynchronous event; the
    /// SMART log read after it (validated) says this. Once per event the
    /// controller raised (a flooding controller is rate-limited).
    Health {
        /// Its identity.
        id: ControllerId,
        /// Critical warning bits set now (empty: the warning cleared).
        warning: CriticalWarning,
        /// Composite temperature in kelvins.
        temperature: u16,
    },
    /// A namespace became active (attached, created) and is served now.
    NamespaceAdded {
        /// Its controller.
        id: ControllerId,
        /// The namespace ID.
        nsid: u32,
    },
    /// The driver switched a hot-plug slot off and lit its attention
    /// indicator (where it has one): the card there did not come up, or the
    /// slot reported a power fault. The slot stays off until a card is
    /// inserted again (a presence change) or its attention button is
    /// pressed. Controllers that were served there are reported
    /// [`Event::Removed`] on their own.
    SlotFault {
        /// The port of the slot.
        port: PciAddress,
        /// What went wrong.
        fault: SlotFault,
    },
    /// A namespace is no longer active: I/O naming it fails with
    /// [`Error::UnknownNamespace`]; commands already in flight to it
    /// completed or complete once, with the controller's answer.
    NamespaceRemoved {
        /// Its controller.
        id: ControllerId,
        /// The namespace ID.
        nsid: u32,
    },
}

impl Event {
    /// The controller the event is about; `None` for a slot's event.
    pub fn id(&self) -> Option<ControllerId> {
        Some(match *self {
            Event::Attached { id, .. }
            | Event::Ready { id, .. }
            | Event::Removed { id, .. }
            | Event::Failed { id, .. }
            | Event::Quarantined { id, .. }
            | Event::Returned { id, .. }
            | Event::Health { id, .. }
            | Event::NamespaceAdded { id, .. }
            | Event::NamespaceRemoved { id, .. } => id,
            Event::SlotFault { .. } => return None,
        })
    }
}
