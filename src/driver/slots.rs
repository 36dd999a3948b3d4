//! Reading hot-plug slots for the monitor: a port's Slot Status (and Link
//! Status when the link changed), and the checks a slot event may need
//! (is the controller behind it unchanged, did an empty slot's device
//! come back).

use pci_types::{ConfigRegionAccess, PciAddress};

use crate::driver::monitor::{BridgeId, SlotObservation};
use crate::driver::Driver;
use crate::nvme::State;
use crate::pci::config::{Command, ConfigSpace};
use crate::pci::slot::{LinkStatus, PciePort, SlotControl, SlotStatus};
use crate::platform::Platform;

impl<
        P: Platform + Clone,
        C: ConfigRegionAccess + Clone,
        const N: usize,
        const QUEUES: usize,
        const DEPTH: usize,
    > Driver<P, C, N, QUEUES, DEPTH>
{
    /// Reads Slot Status of `bridge`'s slot (one config read; Link Status
    /// too when the link state changed). `None` when the bridge has no
    /// hot-plug slot, or the port itself is gone (then nothing behind it
    /// answers either).
    pub(super) fn observe_slot(
        &self,
        bridge: BridgeId,
    ) -> Option<(PciePort, SlotControl, SlotObservation)> {
        let (_, found) = bridge.find(&self.pci.topology)?;
        let port = found.port.filter(|_| found.hot_plug_capable())?;
        let (control, status) = port.slot_registers(&self.access).ok()?;
        let events = status.events();
        let mut link_down = false;
        if events.contains(SlotStatus::DATA_LINK_STATE_CHANGED) {
            link_down = !port
                .link_status(&self.access)
                .contains(LinkStatus::DLL_LINK_ACTIVE);
        }
        let seen = SlotObservation {
            bridge,
            secondary: found.secondary,
            status,
            events,
            present: status.contains(SlotStatus::PRESENCE_DETECT_STATE),
            link_down,
        };
        Some((port, control, seen))
    }

    /// Whether every controller of `entries` still is the one the driver
    /// configured: its function answers with memory decoding on and its
    /// registers read back the CAP the controller reported. A function reset
    /// by a link flap, or a swapped card, fails this.
    pub(super) fn unchanged(&self, entries: &[usize]) -> bool {
        entries.iter().all(|&i| {
            self.entries[i]
                .as_ref()
                .is_some_and(|e| e.controller().answers_as_configured())
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
    pub(super) fn awaits_return(&self, bridge: BridgeId, secondary: u8) -> bool {
        let last = self
            .entries_on_port(bridge)
            .filter_map(|i| self.entries[i].as_ref())
            .max_by_key(|e| e.id().generation);
        let Some(state) = last.map(|e| e.controller().state()) else {
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
