//! The driver: every controller the PCI enumeration found, and the tick that
//! watches them.

mod entries;
mod entry;
mod logs;
mod monitor;
mod pci;
mod power;
mod report;
mod slots;
mod tick;

use core::mem::MaybeUninit;
use core::ptr::addr_of_mut;
use core::time::Duration;

use log::warn;
use pci_types::{ConfigRegionAccess, PciAddress};

use crate::error::{Error, Result};
use crate::event::{ControllerId, Event};
use crate::nvme::controller::{MAX_IO_QUEUES, MAX_QUEUE_DEPTH};
use crate::nvme::{Controller, ControllerConfig, Quarantine, State};
use crate::pci::assign::HotplugReserve;
use crate::pci::link::PciLink;
use crate::platform::{Instant, PhysAddr, Platform};
use crate::spec::identify::IdString;

use entry::Entry;

/// Default number of controllers a driver serves at once.
pub const MAX_CONTROLLERS: usize = 4;
/// Most events one tick returns; the rest wait for the next tick.
pub const MAX_EVENTS: usize = 16;
/// Serial numbers of removed controllers remembered to recognise a return.
const HISTORY: usize = 8;

/// The controller type the driver hands out.
pub type DriverController<
    P,
    C,
    const QUEUES: usize = MAX_IO_QUEUES,
    const DEPTH: usize = MAX_QUEUE_DEPTH,
> = Controller<P, PciLink<C>, QUEUES, DEPTH>;

/// What the embedder chooses for the whole driver.
///
/// Start from the defaults ([`DriverConfig::new`], also usable in a
/// `const`, or [`Default`]) and change what differs with the setter of each
/// field; the fields can be read and assigned, but the struct cannot be
/// built as a literal, so that a field added later breaks no embedder.
///
/// ```
/// use core::time::Duration;
///
/// use bare_nvme::{ControllerConfig, DriverConfig};
///
/// const CONFIG: DriverConfig = DriverConfig::new()
///     .controller(ControllerConfig::new().io_queues(2).queue_depth(64))
///     .slot_poll_interval(Duration::from_millis(5));
///
/// assert_eq!(CONFIG.controller.io_queues, 2);
/// assert_eq!(CONFIG.controller.io_timeout, ControllerConfig::default().io_timeout);
/// let mut config = CONFIG;
/// config.reassign = true;
/// assert_eq!(config, CONFIG.reassign(true));
/// ```
///
/// ```compile_fail,E0639
/// let config = bare_nvme::DriverConfig {
///     reassign: true,
///     ..bare_nvme::DriverConfig::default()
/// };
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DriverConfig {
    /// Settings for each controller.
    pub controller: ControllerConfig,
    /// How often hot-plug ports' Slot Status is read. Default 10 ms.
    pub slot_poll_interval: Duration,
    /// How long one sweep over the empty device numbers of buses without a
    /// hot-plug slot takes (one probe per tick); `None` disables it.
    /// Default 500 ms.
    pub bus_rescan_interval: Option<Duration>,
    /// Where BARs of functions on the root bus may be placed when firmware
    /// left them unassigned (functions behind bridges use the bridge window).
    /// Default `None`.
    pub root_window: Option<(PhysAddr, u64)>,
    /// The host bridge's 64-bit prefetchable window, for 64-bit
    /// prefetchable BARs when the driver assigns resources itself.
    pub prefetchable_window: Option<(PhysAddr, u64)>,
    /// Assign bus numbers, bridge windows and BARs anew even when firmware
    /// assigned them (without firmware they are always assigned). Needs
    /// `root_window`, which then is the host bridge's whole 32-bit window.
    pub reassign: bool,
    /// What hot-plug capable ports keep for devices plugged in later when
    /// the driver assigns resources.
    pub hotplug_reserve: HotplugReserve,
    /// The driver switches hot-plug slots' power and indicators (PCIe Base
    /// 6.0, 6.7): a card in a slot whose power controller has it off is
    /// powered on and brought up with the spec's waits, a slot is switched
    /// off after an orderly detach, a removal or a fault, and a port's
    /// Downstream Port Containment is released once what was behind it is
    /// torn down. `false` keeps the driver's hands off Slot Control and DPC
    /// (a platform that owns them); then arrivals are attached as soon as
    /// they answer. Default `true`.
    pub manage_slots: bool,
    /// The attention button's abort window: a press blinks the power
    /// indicator for this long, a second press inside it cancels, and at its
    /// end the slot's controllers are detached and the slot switched off (or
    /// a switched-off slot with a card powered on). Zero acts at once.
    /// Default 5 s (the spec's).
    pub button_window: Duration,
}

impl Default for DriverConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl DriverConfig {
    /// The defaults (as [`Default`]), usable in a `const` or `static`.
    pub const fn new() -> Self {
        Self {
            controller: ControllerConfig::new(),
            slot_poll_interval: Duration::from_millis(10),
            bus_rescan_interval: Some(Duration::from_millis(500)),
            root_window: None,
            prefetchable_window: None,
            reassign: false,
            hotplug_reserve: HotplugReserve::new(),
            manage_slots: true,
            button_window: crate::pci::hotplug::BUTTON_WINDOW,
        }
    }

    /// Sets [`DriverConfig::controller`].
    pub const fn controller(mut self, controller: ControllerConfig) -> Self {
        self.controller = controller;
        self
    }

    /// Sets [`DriverConfig::slot_poll_interval`].
    pub const fn slot_poll_interval(mut self, slot_poll_interval: Duration) -> Self {
        self.slot_poll_interval = slot_poll_interval;
        self
    }

    /// Sets [`DriverConfig::bus_rescan_interval`].
    pub const fn bus_rescan_interval(mut self, bus_rescan_interval: Option<Duration>) -> Self {
        self.bus_rescan_interval = bus_rescan_interval;
        self
    }

    /// Sets [`DriverConfig::root_window`].
    pub const fn root_window(mut self, root_window: Option<(PhysAddr, u64)>) -> Self {
        self.root_window = root_window;
        self
    }

    /// Sets [`DriverConfig::prefetchable_window`].
    pub const fn prefetchable_window(
        mut self,
        prefetchable_window: Option<(PhysAddr, u64)>,
    ) -> Self {
        self.prefetchable_window = prefetchable_window;
        self
    }

    /// Sets [`DriverConfig::reassign`].
    pub const fn reassign(mut self, reassign: bool) -> Self {
        self.reassign = reassign;
        self
    }

    /// Sets [`DriverConfig::hotplug_reserve`].
    pub const fn hotplug_reserve(mut self, hotplug_reserve: HotplugReserve) -> Self {
        self.hotplug_reserve = hotplug_reserve;
        self
    }

    /// Sets [`DriverConfig::manage_slots`].
    pub const fn manage_slots(mut self, manage_slots: bool) -> Self {
        self.manage_slots = manage_slots;
        self
    }

    /// Sets [`DriverConfig::button_window`].
    pub const fn button_window(mut self, button_window: Duration) -> Self {
        self.button_window = button_window;
        self
    }
}

/// A polled NVMe driver over PCI: enumerates, brings controllers up, serves
/// them, and watches for hot-add and removal from [`Driver::tick`].
///
/// [`Driver::scan`] finds and attaches the controllers; the tick, called
/// every 1-10 ms, advances their bring-up, checks each (one register read
/// at most), polls hot-plug slots, and returns the [`Event`]s that happened,
/// each once. A controller attached is named by a [`ControllerId`] that
/// never names another (a device plugged in again gets a new one); its
/// [`Controller`] is lent by [`Driver::controller`] for I/O, log pages and
/// features. Its tables are fixed in size by the const parameters: up to
/// `N` controllers of up to `QUEUES` I/O queues of `DEPTH` entries.
///
/// ```
/// use std::time::Duration;
///
/// use bare_nvme::{Driver, DriverConfig, Event, Platform};
/// use bare_nvme_sim::{ControllerSpec, NamespaceSpec, Sim};
///
/// // The simulated device stands in for the hardware here.
/// let sim = Sim::single(ControllerSpec::default().namespace(NamespaceSpec::new(2048, 512)));
/// let mut driver = Box::new(Driver::<_, _>::new(
///     sim.platform(),
///     sim.config_access(),
///     DriverConfig::new(),
/// ));
/// assert_eq!(driver.scan()?, 1);
/// let events = driver.wait_ready(Duration::from_secs(5));
/// let id = driver.ready_controllers().next().expect("served");
/// assert!(events
///     .iter()
///     .any(|e| matches!(e, Event::Ready { id: ready, namespaces: 1, .. } if *ready == id)));
///
/// // Blocking I/O on namespace 1, from DMA memory.
/// let platform = sim.platform();
/// let mut buffer = platform.dma_alloc(512, 4096).expect("memory");
/// buffer.as_mut_slice().fill(0xA5);
/// driver.controller(id)?.write(1, 7, &buffer)?;
/// platform.dma_free(buffer);
///
/// // Then the tick, every few milliseconds, for as long as the driver runs.
/// sim.advance(Duration::from_millis(1));
/// assert!(driver.tick().is_empty());
/// # Ok::<(), bare_nvme::Error>(())
/// ```
pub struct Driver<
    P: Platform + Clone,
    C: ConfigRegionAccess + Clone,
    const N: usize = MAX_CONTROLLERS,
    const QUEUES: usize = MAX_IO_QUEUES,
    const DEPTH: usize = MAX_QUEUE_DEPTH,
> {
    platform: P,
    access: C,
    config: DriverConfig,
    entries: [Option<Entry<P, C, QUEUES, DEPTH>>; N],
    generation: u32,
    history: heapless::Deque<(IdString<20>, ControllerId), HISTORY>,
    pci: pci::Pci,
    next_slot_poll: Instant,
    /// A device waiting for a table entry was warned about (once, until an
    /// entry is free again).
    warned_waiting: bool,
    /// Quarantined regions freed since, once DMA was proven stopped.
    returned: Quarantine,
}

impl<
        P: Platform + Clone,
        C: ConfigRegionAccess + Clone,
        const N: usize,
        const QUEUES: usize,
        const DEPTH: usize,
    > Driver<P, C, N, QUEUES, DEPTH>
{
    /// Builds the driver in `place` (a `static`, or memory from
    /// `Box::new_uninit`) field by field, so that no value of the driver's
    /// size is ever on the stack, and returns it there, ready for
    /// [`Driver::scan`]. Controllers are placed into their table entries
    /// when attached, one at a time.
    pub fn new_in(
        place: &mut MaybeUninit<Self>,
        platform: P,
        access: C,
        config: DriverConfig,
    ) -> &mut Self {
        let this = place.as_mut_ptr();
        // SAFETY: `this` points to memory valid for writes and properly
        // aligned for `Self` (it comes from `place`). Each field is written
        // once through a raw pointer to it (no reference to uninitialised
        // memory is made, nothing uninitialised is read or dropped), the
        // table entry by entry; after the last write every field is
        // initialised, so `assume_init_mut` is sound. Nothing here panics, so
        // no partially initialised value is left behind by unwinding.
        unsafe {
            addr_of_mut!((*this).platform).write(platform);
            addr_of_mut!((*this).access).write(access);
            addr_of_mut!((*this).config).write(config);
            let entries =
                addr_of_mut!((*this).entries).cast::<Option<Entry<P, C, QUEUES, DEPTH>>>();
            for i in 0..N {
                entries.add(i).write(None);
            }
            addr_of_mut!((*this).generation).write(0);
            addr_of_mut!((*this).history).write(heapless::Deque::new());
            addr_of_mut!((*this).pci).write(pci::Pci::new(config.root_window));
            addr_of_mut!((*this).next_slot_poll).write(Instant::from_nanos(0));
            addr_of_mut!((*this).warned_waiting).write(false);
            addr_of_mut!((*this).returned).write(Quarantine::default());
            place.assume_init_mut()
        }
    }

    /// A driver with nothing attached yet; call [`Driver::scan`] next.
    ///
    /// This returns the driver by value, and its size grows with `N`,
    /// `QUEUES` and `DEPTH` (some 240 KiB with the defaults, 24 KiB for
    /// `Driver<_, _, 1, 1, 32>`; the repository's README has a table): for large
    /// configurations build it where it is to live with [`Driver::new_in`].
    pub fn new(platform: P, access: C, config: DriverConfig) -> Self {
        Self {
            platform,
            access,
            config,
            entries: [const { None }; N],
            generation: 0,
            history: heapless::Deque::new(),
            pci: pci::Pci::new(config.root_window),
            next_slot_poll: Instant::from_nanos(0),
            warned_waiting: false,
            returned: Quarantine::default(),
        }
    }

    /// The driver's own quarantined regions (queues, PRP lists, scratch and
    /// shadow doorbell pages of controllers given up) returned to the
    /// platform's `dma_free` since the driver was made, each exactly once:
    /// a tick after the end found the device gone (config space silent, the
    /// slot or link says empty or down) or its bus mastering switched off
    /// and read back off. Caller buffers of commands failed while
    /// quarantined are not among them: they are kept for good.
    ///
    /// A running total rather than an event: the controller's table entry
    /// is freed in the same tick, and a count the embedder reads when it
    /// likes needs no change to [`Event`]'s variants.
    pub fn quarantine_returned(&self) -> Quarantine {
        self.returned
    }

    /// The platform.
    pub fn platform(&self) -> &P {
        &self.platform
    }

    /// Identities of the controllers attached (in any state).
    pub fn controllers(&self) -> impl Iterator<Item = ControllerId> + '_ {
        self.entries.iter().flatten().map(|e| e.id())
    }

    /// Identities of the controllers serving I/O.
    pub fn ready_controllers(&self) -> impl Iterator<Item = ControllerId> + '_ {
        self.entries
            .iter()
            .flatten()
            .filter(|e| e.controller().state() == State::Ready)
            .map(|e| e.id())
    }

    /// The controller `id`. Also after its removal, so that the commands it
    /// failed can still be collected with `poll`; `StaleHandle` once its entry
    /// was reused.
    pub fn controller(
        &mut self,
        id: ControllerId,
    ) -> Result<&mut DriverController<P, C, QUEUES, DEPTH>> {
        self.entry_mut(id).map(|e| e.controller_mut())
    }

    /// Lends controller `id`'s I/O queues to handles for other cores and
    /// returns them with its monitor (see [`crate::nvme::share`]). The
    /// driver is borrowed meanwhile, so its tick does not run: call the
    /// monitor's tick instead. Hot-add is seen, and attached, once the share
    /// ends; a removal of this controller is seen by its monitor, and
    /// reported as [`Event::Removed`] by the first driver tick after the
    /// share.
    pub fn share(
        &mut self,
        id: ControllerId,
    ) -> Result<crate::nvme::Share<'_, P, PciLink<C>, QUEUES, DEPTH>> {
        self.entry_mut(id)?.controller_mut().share()
    }

    /// The PCI address of controller `id`.
    pub fn address(&self, id: ControllerId) -> Result<PciAddress> {
        self.entries
            .get(id.index as usize)
            .and_then(|e| e.as_ref())
            .filter(|e| e.id() == id)
            .map(|e| e.address())
            .ok_or(Error::StaleHandle)
    }

    fn entry_mut(&mut self, id: ControllerId) -> Result<&mut Entry<P, C, QUEUES, DEPTH>> {
        self.entries
            .get_mut(id.index as usize)
            .and_then(|e| e.as_mut())
            .filter(|e| e.id() == id)
            .ok_or(Error::StaleHandle)
    }

    /// Starts an orderly detach of `id`; `tick` carries it out and reports
    /// [`Event::Removed`] with [`Detection::Orderly`](crate::Detection::Orderly).
    pub fn begin_detach(&mut self, id: ControllerId) -> Result<()> {
        let port = self.entry_mut(id)?.port();
        self.detach_entry(id.index as usize);
        if let Some(port) = port {
            self.slot_detach_requested(port);
        }
        Ok(())
    }

    /// Enumerates PCI and attaches every NVMe controller found; bring-up runs
    /// in the following ticks (or [`Driver::wait_ready`]). Returns how many
    /// controllers were attached.
    pub fn scan(&mut self) -> Result<usize> {
        self.pci.unpark_all();
        let found = self.enumerate();
        self.start_slots();
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

    /// Ticks until every attached controller is ready, failed or gone, and
    /// no hot-plug slot is still powering a card up (a populated slot
    /// `scan` found switched off), or `timeout` passed; returns the events
    /// seen meanwhile. Returns early
    /// when [`MAX_EVENTS`] events were collected: no event is dropped, the
    /// rest are reported by the next `wait_ready` or `tick`.
    #[must_use = "each event is reported once: events dropped here are lost"]
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
                    e.controller().state(),
                    State::Discovered | State::Resetting | State::Enabling | State::Initializing
                )
            });
            let busy = busy || self.pci.slots.any_starting();
            if !busy || self.platform.now() > deadline {
                return all;
            }
        }
    }

    /// The monitor: call every 1-10 ms. Advances bring-up and detach, checks
    /// each controller with at most one register read (none when it completed
    /// commands since the last tick), polls hot-plug slots and probes for
    /// hot-added functions. Each lifecycle change is reported exactly once,
    /// so the list must not be dropped unread:
    ///
    /// ```compile_fail
    /// #![deny(unused_must_use)]
    /// use bare_nvme::pci_types::ConfigRegionAccess;
    /// use bare_nvme::{Driver, Platform};
    ///
    /// fn serve<P: Platform + Clone, C: ConfigRegionAccess + Clone>(driver: &mut Driver<P, C>) {
    ///     driver.tick(); // unused return value that must be used
    /// }
    /// ```
    #[must_use = "each event is reported once: events dropped here are lost"]
    pub fn tick(&mut self) -> heapless::Vec<Event, MAX_EVENTS> {
        let mut events = heapless::Vec::new();
        self.tick_into(&mut events);
        events
    }
}
