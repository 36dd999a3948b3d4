//! The tick: what the driver does every 1-10 ms, in one place. It advances
//! each controller, checks the ones serving, polls the hot-plug slots and
//! probes plain buses, and applies what the monitor made of those
//! observations.

use log::{info, warn};
use pci_types::ConfigRegionAccess;

use crate::driver::entries::WAITING_FOR_POLL;
use crate::driver::entry::Events;
use crate::driver::monitor::{self, BridgeId, BusChange, SlotChange, SlotObservation};
use crate::driver::power::Then;
use crate::driver::Driver;
use crate::error::Error;
use crate::event::Detection;
use crate::nvme::State;
use crate::pci::config::ConfigSpace;
use crate::pci::slot::SlotStatus;
use crate::platform::{Instant, Platform};

impl<
        P: Platform + Clone,
        C: ConfigRegionAccess + Clone,
        const N: usize,
        const QUEUES: usize,
        const DEPTH: usize,
    > Driver<P, C, N, QUEUES, DEPTH>
{
    /// One tick, reporting into `events`: what does not fit there is
    /// reported by a later tick, never dropped.
    pub(super) fn tick_into(&mut self, events: &mut Events) {
        let now = self.platform.now();
        if now >= self.next_slot_poll {
            self.next_slot_poll = now + self.config.slot_poll_interval;
            self.poll_slots(events);
        }
        self.probe_buses(now);
        for index in 0..N {
            self.tick_entry(index, now, events);
        }
        while let Some((port, fault)) = self.pci.slots.next_fault() {
            if events
                .push(crate::Event::SlotFault { port, fault })
                .is_err()
            {
                self.pci.slots.unreport((port, fault));
                break;
            }
        }
    }

    /// Advances entry `index`'s controller, or checks it when it serves,
    /// and reports what changed.
    fn tick_entry(&mut self, index: usize, now: Instant, events: &mut Events) {
        let Some(entry) = self.entries[index].as_mut() else {
            return;
        };
        match entry.controller().state() {
            State::Discovered
            | State::Resetting
            | State::Enabling
            | State::Initializing
            | State::Detaching
            | State::Stopping => {
                let _ = entry.controller_mut().advance();
            }
            State::Ready => {
                // Completions since the last tick show it alive: no register
                // read needed (a command stuck among others that complete is
                // still expired below).
                if !entry.completed_since_last_tick() {
                    if let Some(error) = entry.controller_mut().check_health() {
                        if self.stopped(index, error, events) {
                            return;
                        }
                    }
                }
                if let Some(entry) = self.entries[index].as_mut() {
                    entry.controller_mut().expire(now);
                    entry.controller_mut().service_events();
                }
            }
            State::Detached | State::Removed | State::Failed => self.lift_quarantine(index),
        }
        self.report(index, events);
    }

    /// Entry `index`'s controller finished: when it holds quarantined
    /// regions, one look for proof that its device stopped DMA, and they go
    /// back to the platform with it. Not while another controller is
    /// attached at the same function (a scan attached the device again):
    /// turning bus mastering off would stop that one, and its function is
    /// no proof about the old queues' memory.
    fn lift_quarantine(&mut self, index: usize) {
        let address = self.address_of(index);
        if self.is_attached(address) {
            return;
        }
        if let Some(entry) = self.entries[index].as_mut() {
            let freed = entry.controller_mut().lift_quarantine();
            self.returned.merge(freed);
        }
    }

    /// Entry `index`'s controller stopped running (`error`). When its
    /// function still answers config space (or the controller failed), the
    /// slot tells a reset device (removed, then attached again: a link flap
    /// or a card swapped between slot polls) from a failed one. Returns
    /// true when the slot showed it gone; then it was reported already.
    fn stopped(&mut self, index: usize, error: Error, events: &mut Events) -> bool {
        let port = self.entries[index].as_ref().and_then(|e| e.port());
        let answers = || ConfigSpace::new(&self.access, self.address_of(index)).is_present();
        if let (Some(port), true) = (port, error == Error::ControllerFailed || answers()) {
            self.poll_slot(port, events);
            if !self.is_live(index) {
                self.report(index, events);
                return true;
            }
        }
        if let Some(entry) = self.entries[index].as_mut() {
            if error == Error::DeviceRemoved {
                entry.note_detection(Detection::StatusRegister);
            }
            entry.controller_mut().lost(error);
        }
        false
    }

    /// Polls every hot-plug slot (see [`Driver::poll_slot`]).
    fn poll_slots(&mut self, events: &mut Events) {
        for index in 0..self.pci.topology.bridges().len() {
            if let Some(bridge) = BridgeId::of(&self.pci.topology, index) {
                self.poll_slot(bridge, events);
            }
        }
    }

    /// Reads the Slot Status of `bridge`'s slot (nothing if it has none),
    /// steps its power machine, applies what the poll means, and
    /// acknowledges its events.
    fn poll_slot(&mut self, bridge: BridgeId, events: &mut Events) {
        let Some((port, control, mut seen)) = self.observe_slot(bridge) else {
            return;
        };
        let live: heapless::Vec<usize, N> = self
            .entries_on_port(bridge)
            .filter(|&i| self.is_live(i))
            .collect();
        match self.step_slot(port, &seen, control, !live.is_empty()) {
            // Events stay pending for the poll after the command completed.
            Then::Wait => return,
            Then::Done => {}
            Then::Attach => self.attach_behind(bridge),
            Then::Detach => {
                for &i in &live {
                    self.detach_entry(i);
                }
            }
            Then::Remove => {
                for &i in &live {
                    self.remove_entry(i, Detection::Slot);
                }
                self.release_parked(seen.secondary);
            }
            Then::Usual { attach } => {
                if self.config.manage_slots {
                    // The power machine answered the button.
                    seen.events -= SlotStatus::ATTENTION_BUTTON_PRESSED;
                }
                let change = monitor::slot_change(
                    &seen,
                    !live.is_empty(),
                    || self.unchanged(&live),
                    || attach && self.awaits_return(bridge, seen.secondary),
                );
                self.apply_slot(&seen, change, &live, attach, events);
            }
        }
        self.release_containment(bridge, &seen);
        let mut handled = seen.status.events();
        if self.config.manage_slots {
            // The power machine acknowledges Command Completed itself.
            handled -= SlotStatus::COMMAND_COMPLETED;
        }
        port.clear_slot_status(&self.access, handled);
    }

    /// Carries out `change` for the slot seen in `seen`, whose live
    /// controllers are the entries `live`.
    fn apply_slot(
        &mut self,
        seen: &SlotObservation,
        change: SlotChange,
        live: &[usize],
        attach: bool,
        events: &mut Events,
    ) {
        match change {
            SlotChange::Quiet => {}
            SlotChange::DetachRequested => {
                for &i in live {
                    self.detach_entry(i);
                }
            }
            SlotChange::Emptied { slot_event } => {
                for &i in live {
                    self.remove_entry(i, Detection::Slot);
                }
                if slot_event {
                    self.release_parked(seen.secondary);
                }
            }
            SlotChange::Replaced => {
                for &i in live {
                    self.remove_entry(i, Detection::Slot);
                }
                self.release_parked(seen.secondary);
                for &i in live {
                    if let Some(address) = self.entries[i].as_ref().map(|e| e.address()) {
                        self.release_function(address);
                    }
                    // Reported before the new card takes an entry: a
                    // finished entry is reused only once its end was told,
                    // and this one may be the one to reuse (rather than an
                    // older one whose failed commands wait for a poll).
                    self.report(i, events);
                }
                if attach {
                    self.attach_behind(seen.bridge);
                }
            }
            SlotChange::Returned => self.attach_behind(seen.bridge),
        }
    }

    /// Whatever was parked on `bus` (behind a slot) left, or was swapped.
    fn release_parked(&mut self, bus: u8) {
        for address in self.pci.unpark_bus(bus) {
            self.release_function(address);
        }
    }

    /// Probes the next device number of the plain buses when one is due and
    /// applies what it means.
    fn probe_buses(&mut self, now: Instant) {
        let Some((address, bridge, probed)) = self.probe_next_device(now) else {
            return;
        };
        match monitor::bus_change(probed) {
            BusChange::Quiet => {}
            BusChange::ParkedLeft => {
                self.pci.unpark(address);
                self.release_function(address);
            }
            BusChange::Appeared => match self.attach(address, bridge) {
                Ok(_) => info!("pci: NVMe function appeared at {address}"),
                // Found again by the next sweep, quietly.
                Err(WAITING_FOR_POLL) => self.note_waiting_for_poll(address),
                Err(e) => warn!("nvme: cannot attach hot-added {address}: {e}"),
            },
        }
    }
}
