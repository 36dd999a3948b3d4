//! The hot-plug slot monitor: what a port's Slot Status (and Link Status)
//! says, turned into removals, orderly detaches and attaches.

use log::info;
use pci_types::{ConfigRegionAccess, PciAddress};

use crate::driver::Driver;
use crate::event::Detection;
use crate::nvme::State;
use crate::pci::config::{Command, ConfigSpace};
use crate::pci::slot::{LinkStatus, SlotStatus};
use crate::platform::Platform;

impl<
        P: Platform + Clone,
        C: ConfigRegionAccess + Clone,
        const N: usize,
        const QUEUES: usize,
        const DEPTH: usize,
    > Driver<P, C, N, QUEUES, DEPTH>
{
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
            // Whatever was parked behind the slot left (or was swapped).
            for address in self.pci.unpark_bus(bridge.secondary) {
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
}
