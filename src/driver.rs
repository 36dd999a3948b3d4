//! The driver: every controller the PCI enumeration found, and the tick that
//! watches them.

use core::time::Duration;

use log::{info, warn};
use pci_types::{ConfigRegionAccess, PciAddress};

use crate::error::{Error, Result};
use crate::event::{ControllerId, Detection, Event};
use crate::nvme::identify::IdString;
use crate::nvme::{Config, Controller, State};
use crate::pci::link::PciLink;
use crate::platform::{Instant, PhysAddr, Platform};

/// Default number of controllers a driver serves at once.
pub const MAX_CONTROLLERS: usize = 4;
/// Most events one tick returns; the rest wait for the next tick.
pub const MAX_EVENTS: usize = 16;
/// Serial numbers of removed controllers remembered to recognise a return.
const HISTORY: usize = 8;

/// The controller type the driver hands out.
pub type DriverController<P, C> = Controller<P, PciLink<C>>;

/// What the embedder chooses for the whole driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DriverConfig {
    /// Settings for each controller.
    pub controller: Config,
    /// How often hot-plug ports' Slot Status is read.
    pub slot_poll_interval: Duration,
    /// How long one sweep over the empty device numbers of buses without a
    /// hot-plug slot takes (one probe per tick); `None` disables it.
    pub bus_rescan_interval: Option<Duration>,
    /// Where BARs of functions on the root bus may be placed when firmware
    /// left them unassigned (functions behind bridges use the bridge window).
    pub root_window: Option<(PhysAddr, u64)>,
}

impl Default for DriverConfig {
    fn default() -> Self {
        Self {
            controller: Config::default(),
            slot_poll_interval: Duration::from_millis(10),
            bus_rescan_interval: Some(Duration::from_millis(500)),
            root_window: None,
        }
    }
}

/// What has been reported about an entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Reported {
    attached: bool,
    ready: bool,
    ended: bool,
    quarantined: bool,
}

pub(crate) struct Entry<P: Platform, C: ConfigRegionAccess> {
    pub(crate) id: ControllerId,
    pub(crate) address: PciAddress,
    /// Index of the hot-plug port above it, if any.
    pub(crate) port: Option<usize>,
    pub(crate) controller: DriverController<P, C>,
    /// `completions_seen` at the last tick: if it moved, the device is alive.
    last_seen: u64,
    reported: Reported,
    detection: Option<Detection>,
    serial: Option<IdString<20>>,
}

/// A polled NVMe driver over PCI: enumerates, brings controllers up, serves
/// them, and watches for hot-add and removal from [`Driver::tick`].
pub struct Driver<
    P: Platform + Clone,
    C: ConfigRegionAccess + Clone,
    const N: usize = MAX_CONTROLLERS,
> {
    pub(crate) platform: P,
    pub(crate) access: C,
    pub(crate) config: DriverConfig,
    pub(crate) entries: [Option<Entry<P, C>>; N],
    generation: u32,
    history: heapless::Deque<(IdString<20>, ControllerId), HISTORY>,
    pub(crate) pci: crate::hotplug::Pci,
    next_slot_poll: Instant,
}

impl<P: Platform + Clone, C: ConfigRegionAccess + Clone, const N: usize> Driver<P, C, N> {
    /// A driver with nothing attached yet; call [`Driver::scan`] next.
    pub fn new(platform: P, access: C, config: DriverConfig) -> Self {
        Self {
            platform,
            access,
            config,
            entries: [const { None }; N],
            generation: 0,
            history: heapless::Deque::new(),
            pci: crate::hotplug::Pci::new(config.root_window),
            next_slot_poll: Instant::from_nanos(0),
        }
    }

    /// The platform.
    pub fn platform(&self) -> &P {
        &self.platform
    }

    /// Identities of the controllers attached (in any state).
    pub fn controllers(&self) -> impl Iterator<Item = ControllerId> + '_ {
        self.entries.iter().flatten().map(|e| e.id)
    }

    /// Identities of the controllers serving I/O.
    pub fn ready_controllers(&self) -> impl Iterator<Item = ControllerId> + '_ {
        self.entries
            .iter()
            .flatten()
            .filter(|e| e.controller.state() == State::Ready)
            .map(|e| e.id)
    }

    /// The controller `id`. Also after its removal, so that the commands it
    /// failed can still be collected with `poll`; `StaleHandle` once its entry
    /// was reused.
    pub fn controller(&mut self, id: ControllerId) -> Result<&mut DriverController<P, C>> {
        self.entry_mut(id).map(|e| &mut e.controller)
    }

    /// The PCI address of controller `id`.
    pub fn address(&self, id: ControllerId) -> Result<PciAddress> {
        self.entries
            .get(id.index as usize)
            .and_then(|e| e.as_ref())
            .filter(|e| e.id == id)
            .map(|e| e.address)
            .ok_or(Error::StaleHandle)
    }

    fn entry_mut(&mut self, id: ControllerId) -> Result<&mut Entry<P, C>> {
        self.entries
            .get_mut(id.index as usize)
            .and_then(|e| e.as_mut())
            .filter(|e| e.id == id)
            .ok_or(Error::StaleHandle)
    }

    /// Starts an orderly detach of `id`; `tick` carries it out and reports
    /// [`Event::Removed`] with [`Detection::Orderly`].
    pub fn detach(&mut self, id: ControllerId) -> Result<()> {
        self.entry_mut(id)?;
        self.detach_entry(id.index as usize);
        Ok(())
    }

    /// Enumerates PCI and attaches every NVMe controller found; bring-up runs
    /// in the following ticks (or [`Driver::wait_ready`]). Returns how many
    /// controllers were attached.
    pub fn scan(&mut self) -> Result<usize> {
        self.pci.unpark_all();
        let found = self.enumerate();
        let mut attached = 0;
        for (address, port) in found {
            // A finished controller at the same address (detached, removed)
            // does not hold it: the function found now is a new attach.
            if self.is_attached(address) {
                continue;
            }
            match self.attach(address, port) {
                Ok(_) => attached += 1,
                Err(e) => warn!("nvme: cannot attach {address}: {e}"),
            }
        }
        Ok(attached)
    }

    /// Ticks until every attached controller is ready, failed or gone, or
    /// `timeout` passed; returns the events seen meanwhile. Returns early
    /// when [`MAX_EVENTS`] events were collected: no event is dropped, the
    /// rest are reported by the next `wait_ready` or `tick`.
    pub fn wait_ready(&mut self, timeout: Duration) -> heapless::Vec<Event, MAX_EVENTS> {
        let deadline = self.platform.now() + timeout;
        let mut all = heapless::Vec::new();
        loop {
            self.tick_into(&mut all);
            if all.is_full() {
                return all;
            }
            let busy = self.entries.iter().flatten().any(|e| {
                matches!(
                    e.controller.state(),
                    State::Resetting | State::Enabling | State::Initializing
                )
            });
            if !busy || self.platform.now() > deadline {
                return all;
            }
        }
    }

    /// The monitor: call every 1-10 ms. Advances bring-up and detach, checks
    /// each controller with at most one register read (none when it completed
    /// commands since the last tick), polls hot-plug slots and probes for
    /// hot-added functions. Each lifecycle change is reported exactly once.
    pub fn tick(&mut self) -> heapless::Vec<Event, MAX_EVENTS> {
        let mut events = heapless::Vec::new();
        self.tick_into(&mut events);
        events
    }

    /// One tick, reporting into `events`: what does not fit there is
    /// reported by a later tick, never dropped.
    fn tick_into(&mut self, events: &mut heapless::Vec<Event, MAX_EVENTS>) {
        let now = self.platform.now();
        if now >= self.next_slot_poll {
            self.next_slot_poll = now + self.config.slot_poll_interval;
            self.poll_slots();
        }
        self.probe_buses(now);
        for index in 0..N {
            self.tick_entry(index, now, events);
        }
    }

    fn tick_entry(
        &mut self,
        index: usize,
        now: Instant,
        events: &mut heapless::Vec<Event, MAX_EVENTS>,
    ) {
        let Some(entry) = self.entries[index].as_mut() else {
            return;
        };
        let c = &mut entry.controller;
        match c.state() {
            State::Resetting
            | State::Enabling
            | State::Initializing
            | State::Detaching
            | State::Stopping => {
                let _ = c.advance();
            }
            State::Ready => {
                let seen = c.completions_seen();
                if seen != entry.last_seen {
                    // Alive: no register read needed (a command stuck among
                    // others that complete is still expired below).
                    entry.last_seen = seen;
                } else if let Some(error) = c.check_health() {
                    let port = entry.port;
                    // The function still answers config space but its
                    // controller is not running (failed, or reset behind the
                    // driver by a link flap or a card swapped between slot
                    // polls): the slot tells a reset device (removed, then
                    // attached again) from a failed one.
                    let answers = || {
                        crate::pci::config::ConfigSpace::new(&self.access, self.address_of(index))
                            .is_present()
                    };
                    if let (Some(port), true) =
                        (port, error == Error::ControllerFailed || answers())
                    {
                        self.poll_slot(port);
                        if !self.is_live(index) {
                            self.report(index, events);
                            return;
                        }
                    }
                    if let Some(entry) = self.entries[index].as_mut() {
                        if error == Error::DeviceRemoved {
                            entry.detection.get_or_insert(Detection::StatusRegister);
                        }
                        entry.controller.lost(error);
                    }
                }
                if let Some(entry) = self.entries[index].as_mut() {
                    entry.controller.expire(now);
                }
            }
            State::Detached | State::Removed | State::Failed => {}
        }
        self.report(index, events);
    }

    /// Emits what changed for entry `index`, each change once. An event that
    /// does not fit waits for the next tick.
    fn report(&mut self, index: usize, events: &mut heapless::Vec<Event, MAX_EVENTS>) {
        let Some(entry) = self.entries[index].as_mut() else {
            return;
        };
        let id = entry.id;
        if !entry.reported.attached {
            if events
                .push(Event::Attached {
                    id,
                    address: entry.address,
                })
                .is_err()
            {
                return;
            }
            entry.reported.attached = true;
        }
        let state = entry.controller.state();
        if state == State::Ready && !entry.reported.ready {
            let Some(info) = entry.controller.info().copied() else {
                return;
            };
            // The history keeps one entry per serial, its latest identity.
            let previous = self
                .history
                .iter()
                .find(|(s, _)| *s == info.serial)
                .map(|&(_, p)| p);
            if events.capacity() - events.len() < 1 + previous.is_some() as usize {
                // Ready and Returned go out together, or both next tick.
                return;
            }
            let ready = Event::Ready {
                id,
                serial: info.serial,
                model: info.model,
                namespaces: entry.controller.namespaces().len() as u8,
            };
            if events.push(ready).is_err() {
                return;
            }
            entry.reported.ready = true;
            entry.serial = Some(info.serial);
            info!("nvme: {id} ready: {} {}", info.model, info.serial);
            if let Some(previous) = previous {
                let _ = events.push(Event::Returned { id, previous });
            }
        }
        let Some(entry) = self.entries[index].as_mut() else {
            return;
        };
        if entry.reported.ended {
            let kept = entry.controller.quarantined();
            if kept.regions > 0
                && !entry.reported.quarantined
                && events
                    .push(Event::Quarantined {
                        id,
                        regions: kept.regions,
                        bytes: kept.bytes,
                    })
                    .is_ok()
            {
                entry.reported.quarantined = true;
            }
            return;
        }
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
        if let Some(serial) = entry.serial {
            // One entry per serial, naming its latest controller: a device
            // removed again and again must neither crowd out the others nor
            // be reported as returning from an older attach.
            let mut kept = heapless::Deque::new();
            for &(s, previous) in self.history.iter().filter(|(s, _)| *s != serial) {
                let _ = kept.push_back((s, previous));
            }
            self.history = kept;
            if self.history.is_full() {
                self.history.pop_front();
            }
            let _ = self.history.push_back((serial, id));
        }
        let address = entry.address;
        if state == State::Detached {
            // Detached, not gone: keep its BAR range and do not attach it
            // again until it leaves (or the embedder scans again).
            self.pci.park(address);
        } else {
            self.release_function(address);
        }
    }

    /// Attaches the NVMe function at `address` (BAR placed and enabled) as a
    /// new controller; bring-up starts at the next tick.
    pub(crate) fn attach(
        &mut self,
        address: PciAddress,
        port: Option<usize>,
    ) -> Result<ControllerId> {
        let index = self.free_entry()?;
        let (bar, len) = self.enable_function(address, port)?;
        let regs = self
            .platform
            .map_registers(bar, len)
            .ok_or(Error::MapFailed { addr: bar.as_u64() })?;
        self.generation = self.generation.wrapping_add(1);
        let id = ControllerId {
            index: index as u8,
            generation: self.generation,
        };
        let above = port
            .and_then(|i| self.pci.topology.bridges().get(i))
            .and_then(|b| b.port);
        let link = PciLink::new(self.access.clone(), address, above);
        let controller = Controller::new(
            self.platform.clone(),
            link,
            regs,
            len,
            self.config.controller,
        );
        info!("nvme: {id} attached at {address}, BAR0 {:#x}", bar.as_u64());
        self.entries[index] = Some(Entry {
            id,
            address,
            port,
            controller,
            last_seen: 0,
            reported: Reported::default(),
            detection: None,
            serial: None,
        });
        Ok(id)
    }

    /// A free entry, recycling the oldest finished one if needed. Buffers of
    /// undelivered completions of a recycled entry go back to the platform.
    fn free_entry(&mut self) -> Result<usize> {
        if let Some(i) = self.entries.iter().position(|e| e.is_none()) {
            return Ok(i);
        }
        // Reuse a finished entry: one whose failed commands were all collected
        // first, the oldest among equals, so a caller still collecting from a
        // removed controller keeps its handle as long as possible.
        let finished = self
            .entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| {
                let e = e.as_ref()?;
                // A quarantine not yet reported would be lost with the entry.
                let quarantine_told =
                    e.reported.quarantined || e.controller.quarantined().regions == 0;
                let done =
                    e.reported.ended && quarantine_told && e.controller.state().is_finished();
                done.then_some((e.controller.undelivered() > 0, e.id.generation, i))
            })
            .min()
            .map(|(_, _, i)| i);
        match finished {
            Some(i) => {
                self.entries[i] = None;
                Ok(i)
            }
            None => Err(Error::CapacityExceeded {
                what: "controllers",
                limit: N as u32,
            }),
        }
    }

    /// Entries behind hot-plug port `port`.
    pub(crate) fn entries_on_port(&self, port: usize) -> impl Iterator<Item = usize> + '_ {
        self.entries
            .iter()
            .enumerate()
            .filter(move |(_, e)| e.as_ref().is_some_and(|e| e.port == Some(port)))
            .map(|(i, _)| i)
    }

    fn address_of(&self, index: usize) -> PciAddress {
        self.entries[index]
            .as_ref()
            .map_or(PciAddress::new(0, 0, 0, 0), |e| e.address)
    }

    /// Whether entry `index` holds a controller that is neither finished nor
    /// being stopped.
    pub(crate) fn is_live(&self, index: usize) -> bool {
        self.entries[index].as_ref().is_some_and(|e| {
            let state = e.controller.state();
            !state.is_finished() && state != State::Stopping
        })
    }

    /// Whether a live (not finished) controller sits at `address`.
    pub(crate) fn is_attached(&self, address: PciAddress) -> bool {
        self.entries
            .iter()
            .flatten()
            .any(|e| e.address == address && !e.controller.state().is_finished())
    }

    /// Surprise removal of entry `index`, noticed by `how`.
    pub(crate) fn remove_entry(&mut self, index: usize, how: Detection) {
        if let Some(entry) = self.entries[index].as_mut() {
            entry.detection.get_or_insert(how);
            entry.controller.remove();
        }
    }

    /// Orderly removal of entry `index` (attention button).
    pub(crate) fn detach_entry(&mut self, index: usize) {
        if let Some(entry) = self.entries[index].as_mut() {
            entry.detection.get_or_insert(Detection::Orderly);
            entry.controller.begin_detach();
        }
    }
}
