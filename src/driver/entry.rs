//! One attached controller and what the driver knows and reported of it:
//! its identity, where it sits, how its end was noticed, and which of its
//! lifecycle changes were reported already (each exactly once).

use log::info;
use pci_types::{ConfigRegionAccess, PciAddress};

use crate::driver::monitor::BridgeId;
use crate::driver::{DriverController, MAX_EVENTS};
use crate::error::Error;
use crate::event::{ControllerId, Detection, Event};
use crate::nvme::{Notice, State};
use crate::platform::Platform;
use crate::spec::identify::IdString;

/// Events of one tick.
pub(super) type Events = heapless::Vec<Event, MAX_EVENTS>;

/// What has been reported about an entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Reported {
    attached: bool,
    ready: bool,
    ended: bool,
    quarantined: bool,
}

/// One attached controller and what the driver knows and reported of it.
pub(crate) struct Entry<P: Platform, C: ConfigRegionAccess, const QUEUES: usize, const DEPTH: usize>
{
    id: ControllerId,
    address: PciAddress,
    /// The bridge directly above it, if any.
    port: Option<BridgeId>,
    controller: DriverController<P, C, QUEUES, DEPTH>,
    /// `completions_seen` at the last tick: if it moved, the device is alive.
    last_seen: u64,
    reported: Reported,
    detection: Option<Detection>,
    serial: Option<IdString<20>>,
}

impl<
        P: Platform + Clone,
        C: ConfigRegionAccess + Clone,
        const QUEUES: usize,
        const DEPTH: usize,
    > Entry<P, C, QUEUES, DEPTH>
{
    /// A controller just attached, nothing reported yet.
    pub(super) fn new(
        id: ControllerId,
        address: PciAddress,
        port: Option<BridgeId>,
        controller: DriverController<P, C, QUEUES, DEPTH>,
    ) -> Self {
        Self {
            id,
            address,
            port,
            controller,
            last_seen: 0,
            reported: Reported::default(),
            detection: None,
            serial: None,
        }
    }

    /// Its identity.
    pub(super) fn id(&self) -> ControllerId {
        self.id
    }

    /// Its PCI function.
    pub(super) fn address(&self) -> PciAddress {
        self.address
    }

    /// The bridge directly above it, if any.
    pub(super) fn port(&self) -> Option<BridgeId> {
        self.port
    }

    /// The controller.
    pub(super) fn controller(&self) -> &DriverController<P, C, QUEUES, DEPTH> {
        &self.controller
    }

    /// The controller, to drive it.
    pub(super) fn controller_mut(&mut self) -> &mut DriverController<P, C, QUEUES, DEPTH> {
        &mut self.controller
    }

    /// Whether the controller completed commands since the last call: then
    /// it is alive and needs no register read.
    pub(super) fn completed_since_last_tick(&mut self) -> bool {
        let seen = self.controller.completions_seen();
        let moved = seen != self.last_seen;
        self.last_seen = seen;
        moved
    }

    /// Records how the controller's end was noticed; the first notice wins.
    pub(super) fn note_detection(&mut self, how: Detection) {
        self.detection.get_or_insert(how);
    }

    /// Whether the entry may be reused: its end (and a quarantine) was
    /// reported, the controller finished, and it holds no quarantined
    /// regions (they live in the controller until a proof frees them).
    pub(super) fn is_done(&self) -> bool {
        // A quarantine not yet reported would be lost with the entry.
        let quarantine_told =
            self.reported.quarantined || self.controller.quarantined().regions == 0;
        self.reported.ended
            && quarantine_told
            && self.controller.state().is_finished()
            && !self.controller.holds_quarantine()
    }

    /// `Attached`, once. Returns whether it was reported (now or before).
    pub(super) fn report_attached(&mut self, events: &mut Events) -> bool {
        if self.reported.attached {
            return true;
        }
        let attached = Event::Attached {
            id: self.id,
            address: self.address,
        };
        self.reported.attached = events.push(attached).is_ok();
        self.reported.attached
    }

    /// `Ready` (with `Returned` when `previous` knows the serial), once, for
    /// a controller serving now or one that came up between ticks (a
    /// blocking call finished its bring-up) and ended before this one: it
    /// served, so it is reported ready before its end. Returns false when
    /// what is due must wait for the next tick.
    pub(super) fn report_ready(
        &mut self,
        events: &mut Events,
        previous: impl FnOnce(&IdString<20>) -> Option<ControllerId>,
    ) -> bool {
        let served =
            self.controller.state() == State::Ready || self.controller.owned.lifecycle.came_up();
        if self.reported.ready || !served {
            return true;
        }
        let Some(info) = self.controller.info().copied() else {
            return false;
        };
        let id = self.id;
        let previous = previous(&info.serial);
        if events.capacity() - events.len() < 1 + previous.is_some() as usize {
            // Ready and Returned go out together, or both next tick.
            return false;
        }
        let ready = Event::Ready {
            id,
            serial: info.serial,
            model: info.model,
            namespaces: self.controller.namespaces().len() as u8,
        };
        let _ = events.push(ready);
        self.reported.ready = true;
        self.serial = Some(info.serial);
        info!("nvme: {id} ready: {} {}", info.model, info.serial);
        if let Some(previous) = previous {
            let _ = events.push(Event::Returned { id, previous });
        }
        true
    }

    /// What the controller's asynchronous events produced (health,
    /// namespace changes), in order. Returns false when one had to wait for
    /// the next tick.
    pub(super) fn report_notices(&mut self, events: &mut Events) -> bool {
        let id = self.id;
        while let Some(notice) = self.controller.peek_notice() {
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
            // Taken: the peeked notice is now in the list.
            let _ = self.controller.next_notice();
        }
        true
    }

    /// `Quarantined`, once, after the end, if memory had to be kept.
    /// Returns whether the end had been reported before.
    pub(super) fn report_quarantine(&mut self, events: &mut Events) -> bool {
        if !self.reported.ended {
            return false;
        }
        let kept = self.controller.quarantined();
        if kept.regions > 0 && !self.reported.quarantined {
            let quarantined = Event::Quarantined {
                id: self.id,
                regions: kept.regions,
                bytes: kept.bytes,
            };
            self.reported.quarantined = events.push(quarantined).is_ok();
        }
        true
    }

    /// `Removed` or `Failed` once the controller finished (not reported
    /// before). Returns the event reported, `None` when there is none or it
    /// has to wait for the next tick.
    pub(super) fn report_end(&mut self, events: &mut Events) -> Option<Event> {
        if self.reported.ended {
            return None;
        }
        let id = self.id;
        let state = self.controller.state();
        let event = match state {
            State::Removed | State::Detached => Event::Removed {
                id,
                failed_commands: self.controller.failed_commands(),
                detected_by: self.detection.unwrap_or(if state == State::Detached {
                    Detection::Orderly
                } else {
                    Detection::IoPath
                }),
            },
            State::Failed => Event::Failed {
                id,
                error: self.controller.failure().unwrap_or(Error::ControllerFailed),
            },
            _ => return None,
        };
        events.push(event).ok()?;
        self.reported.ended = true;
        Some(event)
    }

    /// The serial number reported with `Ready`, if it was.
    pub(super) fn serial(&self) -> Option<IdString<20>> {
        self.serial
    }
}
