//! The hot-plug policy: what a slot poll or a bus probe observed, turned
//! into the change the driver applies. Everything here is a decision on
//! values already read; the reads are the driver's (`slots.rs`, `pci.rs`),
//! and so is carrying a change out (`tick.rs`).

use log::info;
use pci_types::PciAddress;

use crate::pci::enumerate::{Bridge, Topology};
use crate::pci::slot::SlotStatus;

/// A bridge of the topology, named by its address: it stays valid when
/// [`Topology::scan`] rebuilds the bridge list (an index into that list
/// would not). Bus numbers change only when every bus is numbered anew,
/// which happens while no controller is attached, so no id outlives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BridgeId(PciAddress);

impl BridgeId {
    /// The id of the bridge at `index` in `topology`'s list.
    pub(crate) fn of<const F: usize, const B: usize>(
        topology: &Topology<F, B>,
        index: usize,
    ) -> Option<Self> {
        topology.bridges().get(index).map(|b| Self(b.address))
    }

    /// Where the bridge sits in `topology`'s list now, and what it is.
    pub(crate) fn find<const F: usize, const B: usize>(
        self,
        topology: &Topology<F, B>,
    ) -> Option<(usize, Bridge)> {
        let index = topology.bridge_index(self.0)?;
        Some((index, topology.bridges()[index]))
    }

    /// The bridge's configuration address.
    pub(crate) fn address(self) -> PciAddress {
        self.0
    }
}

/// One poll of a hot-plug slot: its Slot Status events and state.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SlotObservation {
    /// The port the slot belongs to.
    pub(crate) bridge: BridgeId,
    /// The port's secondary bus: where the slot's device sits.
    pub(crate) secondary: u8,
    /// Slot Status as read.
    pub(crate) status: SlotStatus,
    /// The event bits set in Slot Status (acknowledged after the change).
    pub(crate) events: SlotStatus,
    /// Presence Detect State.
    pub(crate) present: bool,
    /// The data link went down (read only when its state changed).
    pub(crate) link_down: bool,
}

impl SlotObservation {
    /// A card is in the slot and its link is up.
    fn usable(&self) -> bool {
        self.present && !self.link_down
    }

    /// Presence or link state changed since the last poll.
    fn presence_or_link_changed(&self) -> bool {
        self.events
            .intersects(SlotStatus::PRESENCE_DETECT_CHANGED | SlotStatus::DATA_LINK_STATE_CHANGED)
    }
}

/// What a slot poll means for the controllers behind the slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SlotChange {
    /// Nothing to do.
    Quiet,
    /// The card left or its link is down: the live controllers are
    /// surprise-removed. With `slot_event` (a presence or link change), the
    /// functions parked behind the slot left too.
    Emptied {
        /// A presence or link change was reported.
        slot_event: bool,
    },
    /// Presence or link changed and a card is there: whatever the driver
    /// talked to is gone (a link flap faster than the poll brings the device
    /// back reset, without its BAR), and the card there now is probed and
    /// attached as new.
    Replaced,
    /// The attention button: the live controllers are detached in order.
    DetachRequested,
    /// No slot event, but the device the slot last held came back (a slot
    /// power cycle on ports that report none): probed and attached.
    Returned,
}

/// Decides what a slot poll means. `live` tells whether live controllers
/// sit behind the slot. `unchanged` (config and register reads) and
/// `returned` (one or two config reads) are asked only where the answer
/// decides something: `unchanged` tells whether those controllers still
/// answer as the driver configured them, `returned` whether an empty slot's
/// last device came back (see `Driver::awaits_return`).
pub(crate) fn slot_change(
    seen: &SlotObservation,
    live: bool,
    unchanged: impl FnOnce() -> bool,
    returned: impl FnOnce() -> bool,
) -> SlotChange {
    let mut changed = seen.presence_or_link_changed();
    if changed && seen.usable() && live && unchanged() {
        // A bouncing presence detect (or a link that recovered without
        // resetting the function): the controller still answers as the
        // one the driver configured, so nothing was removed.
        info!(
            "pci: slot event on bridge {}, but its controller is unchanged: ignored",
            seen.bridge.address()
        );
        changed = false;
    }
    if !seen.usable() {
        SlotChange::Emptied {
            slot_event: changed,
        }
    } else if changed {
        SlotChange::Replaced
    } else if live && seen.events.contains(SlotStatus::ATTENTION_BUTTON_PRESSED) {
        SlotChange::DetachRequested
    } else if !live && returned() {
        SlotChange::Returned
    } else {
        SlotChange::Quiet
    }
}

/// What probing one device number of a bus without a hot-plug slot found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Probed {
    /// A live controller is attached there: not probed.
    Attached,
    /// A function parked after an orderly detach; whether it still answers.
    Parked {
        /// It answers config reads.
        present: bool,
    },
    /// Nothing answers.
    Absent,
    /// A function answers with this class code.
    Function {
        /// Class, subclass, programming interface.
        class: (u8, u8, u8),
    },
}

/// What a bus probe means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BusChange {
    /// Nothing to do.
    Quiet,
    /// A parked function left: it is forgotten and its BAR range freed.
    ParkedLeft,
    /// A new NVMe function: it is attached.
    Appeared,
}

/// Decides what a bus probe means.
pub(crate) fn bus_change(probed: Probed) -> BusChange {
    match probed {
        Probed::Parked { present: false } => BusChange::ParkedLeft,
        Probed::Function { class } if class == crate::pci::enumerate::NVME_CLASS => {
            BusChange::Appeared
        }
        _ => BusChange::Quiet,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(events: SlotStatus, present: bool, link_down: bool) -> SlotObservation {
        SlotObservation {
            bridge: BridgeId(PciAddress::new(0, 0, 1, 0)),
            secondary: 1,
            status: events,
            events,
            present,
            link_down,
        }
    }

    const PRESENCE: SlotStatus = SlotStatus::PRESENCE_DETECT_CHANGED;
    const BUTTON: SlotStatus = SlotStatus::ATTENTION_BUTTON_PRESSED;

    fn never() -> bool {
        panic!("asked although the answer decides nothing")
    }

    #[test]
    fn an_empty_slot_or_a_dead_link_removes() {
        let quiet = SlotStatus::empty();
        let removed = slot_change(&seen(quiet, false, false), true, never, never);
        assert_eq!(removed, SlotChange::Emptied { slot_event: false });
        let removed = slot_change(&seen(PRESENCE, true, true), true, || false, never);
        assert_eq!(removed, SlotChange::Emptied { slot_event: true });
    }

    #[test]
    fn a_presence_change_with_a_card_replaces_unless_the_controller_is_unchanged() {
        let swapped = slot_change(&seen(PRESENCE, true, false), true, || false, never);
        assert_eq!(swapped, SlotChange::Replaced);
        let fresh = slot_change(&seen(PRESENCE, true, false), false, never, never);
        assert_eq!(fresh, SlotChange::Replaced);
        let bounce = slot_change(&seen(PRESENCE, true, false), true, || true, never);
        assert_eq!(bounce, SlotChange::Quiet);
        let bounce_and_button = seen(PRESENCE | BUTTON, true, false);
        let detach = slot_change(&bounce_and_button, true, || true, never);
        assert_eq!(detach, SlotChange::DetachRequested);
    }

    #[test]
    fn an_occupied_slot_without_events_is_probed_only_when_its_device_may_be_back() {
        let quiet = seen(SlotStatus::empty(), true, false);
        assert_eq!(slot_change(&quiet, true, never, never), SlotChange::Quiet);
        assert_eq!(
            slot_change(&quiet, false, never, || true),
            SlotChange::Returned
        );
        assert_eq!(
            slot_change(&quiet, false, never, || false),
            SlotChange::Quiet
        );
        let button = seen(BUTTON, true, false);
        assert_eq!(
            slot_change(&button, false, never, || true),
            SlotChange::Returned
        );
    }

    #[test]
    fn a_bus_probe_attaches_nvme_functions_and_forgets_parked_ones_that_left() {
        let nvme = crate::pci::enumerate::NVME_CLASS;
        assert_eq!(
            bus_change(Probed::Function { class: nvme }),
            BusChange::Appeared
        );
        let other = Probed::Function { class: (2, 0, 0) };
        assert_eq!(bus_change(other), BusChange::Quiet);
        let left = Probed::Parked { present: false };
        assert_eq!(bus_change(left), BusChange::ParkedLeft);
        let still = Probed::Parked { present: true };
        assert_eq!(bus_change(still), BusChange::Quiet);
        assert_eq!(bus_change(Probed::Absent), BusChange::Quiet);
        assert_eq!(bus_change(Probed::Attached), BusChange::Quiet);
    }
}
