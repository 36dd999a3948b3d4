//! What the tick reports: each lifecycle change of an entry exactly once,
//! and the serial numbers that recognise a device coming back.

use log::{info, warn};
use pci_types::ConfigRegionAccess;

use crate::driver::{Driver, MAX_EVENTS};
use crate::error::Error;
use crate::event::{ControllerId, Detection, Event};
use crate::nvme::identify::IdString;
use crate::nvme::{Notice, State};
use crate::platform::Platform;

/// Events of one tick.
type Events = heapless::Vec<Event, MAX_EVENTS>;

impl<
        P: Platform + Clone,
        C: ConfigRegionAccess + Clone,
        const N: usize,
        const QUEUES: usize,
        const DEPTH: usize,
    > Driver<P, C, N, QUEUES, DEPTH>
{
    /// Emits what changed for entry `index`, each change once and in order
    /// (attached, ready, end, quarantine). An event that does not fit waits
    /// for the next tick, and so does everything after it.
    pub(crate) fn report(&mut self, index: usize, events: &mut Events) {
        if self.report_attached(index, events)
            && self.report_ready(index, events)
            && self.report_notices(index, events)
        {
            self.report_end(index, events);
        }
    }

    /// `Attached`, once. Returns whether it was reported (now or before).
    fn report_attached(&mut self, index: usize, events: &mut Events) -> bool {
        let Some(entry) = self.entries[index].as_mut() else {
            return false;
        };
        if entry.reported.attached {
            return true;
        }
        let attached = Event::Attached {
            id: entry.id,
            address: entry.address,
        };
        entry.reported.attached = events.push(attached).is_ok();
        entry.reported.attached
    }

    /// `Ready` (with `Returned` when the serial is known), once, for a
    /// controller serving now or one that came up between ticks (a blocking
    /// call finished its bring-up) and ended before this one: it served, so
    /// it is reported ready before its end. Returns false when what is due
    /// must wait for the next tick.
    fn report_ready(&mut self, index: usize, events: &mut Events) -> bool {
        let Some(entry) = self.entries[index].as_mut() else {
            return false;
        };
        let served = entry.controller.state() == State::Ready || entry.controller.owned.came_up;
        if entry.reported.ready || !served {
            return true;
        }
        let Some(info) = entry.controller.info().copied() else {
            return false;
        };
        let id = entry.id;
        // The history keeps one entry per serial, its latest identity.
        let previous = self
            .history
            .iter()
            .find(|(s, _)| *s == info.serial)
            .map(|&(_, p)| p);
        if events.capacity() - events.len() < 1 + previous.is_some() as usize {
            // Ready and Returned go out together, or both next tick.
            return false;
        }
        let ready = Event::Ready {
            id,
            serial: info.serial,
            model: info.model,
            namespaces: entry.controller.namespaces().len() as u8,
        };
        let _ = events.push(ready);
        entry.reported.ready = true;
        entry.serial = Some(info.serial);
        info!("nvme: {id} ready: {} {}", info.model, info.serial);
        if let Some(previous) = previous {
            let _ = events.push(Event::Returned { id, previous });
        }
        true
    }

    /// What the controller's asynchronous events produced (health,
    /// namespace changes), in order, after `Ready`. Returns false when one
    /// had to wait for the next tick.
    fn report_notices(&mut self, index: usize, events: &mut Events) -> bool {
        let Some(entry) = self.entries[index].as_mut() else {
            return false;
        };
        let id = entry.id;
        while let Some(notice) = entry.controller.peek_notice() {
            let event = match notice {
                Notice::Health {
                    warning,
                    temperature,
                } => Event::Health {
                    id,
                    warning,
                    temperature,
                },
                Notice::NamespaceAdded { nsid } => Event::NamespaceAdded { id, nsid },
                Notice::NamespaceRemoved { nsid } => Event::NamespaceRemoved { id, nsid },
            };
            if events.push(event).is_err() {
                return false;
            }
            entry.controller.next_notice();
        }
        true
    }

    /// `Removed` or `Failed` once the controller finished, then
    /// `Quarantined` if memory had to be kept; the function is parked or
    /// released.
    fn report_end(&mut self, index: usize, events: &mut Events) {
        let Some(entry) = self.entries[index].as_mut() else {
            return;
        };
        let id = entry.id;
        if entry.reported.ended {
            let kept = entry.controller.quarantined();
            if kept.regions > 0 && !entry.reported.quarantined {
                let quarantined = Event::Quarantined {
                    id,
                    regions: kept.regions,
                    bytes: kept.bytes,
                };
                entry.reported.quarantined = events.push(quarantined).is_ok();
            }
            return;
        }
        let state = entry.controller.state();
        let event = match state {
            State::Removed | State::Detached => Event::Removed {
                id,
                failed_commands: entry.controller.failed_commands(),
                detected_by: entry.detection.unwrap_or(if state == State::Detached {
                    Detection::Orderly
                } else {
                    Detection::IoPath
                }),
            },
            State::Failed => Event::Failed {
                id,
                error: entry
                    .controller
                    .failure()
                    .unwrap_or(Error::ControllerFailed),
            },
            _ => return,
        };
        if events.push(event).is_err() {
            return;
        }
        entry.reported.ended = true;
        match event {
            Event::Removed {
                failed_commands,
                detected_by,
                ..
            } => info!("nvme: {id} removed ({detected_by:?}), {failed_commands} commands failed"),
            Event::Failed { error, .. } => warn!("nvme: {id} failed: {error}"),
            _ => {}
        }
        let address = entry.address;
        if let Some(serial) = entry.serial {
            self.remember(serial, id);
        }
        if matches!(state, State::Detached | State::Failed) {
            // Detached, or given up (a failed detach included): not gone.
            // Keep its BAR range and do not attach it again until it leaves,
            // is reset behind the driver (a slot event, a power cycle), or
            // the embedder scans again: a device that keeps failing is not
            // retried in an endless loop of attaches.
            self.pci.park(address);
        } else {
            self.release_function(address);
        }
    }

    /// Records that the device with `serial` was last `id`. One entry per
    /// serial, naming its latest controller: a device removed again and
    /// again must neither crowd out the others nor be reported as returning
    /// from an older attach.
    fn remember(&mut self, serial: IdString<20>, id: ControllerId) {
        self.history.retain(|(s, _)| *s != serial);
        if self.history.is_full() {
            self.history.pop_front();
        }
        let _ = self.history.push_back((serial, id));
    }
}
