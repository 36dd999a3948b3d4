//! The test's handle on the simulation: building a topology, lifecycle events,
//! fault injection, held completions and introspection.

use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bare_nvme::{DmaRegion, Instant};
use pci_types::PciAddress;

use crate::counters::Counters;
use crate::handles::{SimConfig, SimPlatform};

use crate::builder::SimBuilder;
use crate::pci::{pcie, PORT_PCIE_CAP};
use crate::queues::Rule;
use crate::spec::{ControllerSpec, Hold};
use crate::state::State;
use crate::LogLie;
use crate::{CtrlId, Fault, Location, PortId};

/// A simulated machine. Clones share the same simulation.
#[derive(Clone)]
pub struct Sim {
    pub(crate) state: Arc<Mutex<State>>,
}

impl Sim {
    pub(crate) fn from_state(state: Arc<Mutex<State>>) -> Self {
        Self { state }
    }

    /// A builder with defaults: no ports, firmware-configured, 64 MiB arena,
    /// 1 µs clock step.
    pub fn builder() -> SimBuilder {
        SimBuilder::new()
    }

    /// One hot-plug root port (`PortId(0)`) holding one controller
    /// (`CtrlId(0)`).
    pub fn single(spec: ControllerSpec) -> Sim {
        Self::builder()
            .root_port(true)
            .controller_on_port(PortId(0), spec)
            .build()
    }

    fn st(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The platform handle for the driver.
    pub fn platform(&self) -> SimPlatform {
        SimPlatform {
            state: self.state.clone(),
        }
    }

    /// The config space handle for the driver.
    pub fn config_access(&self) -> SimConfig {
        SimConfig {
            state: self.state.clone(),
        }
    }

    // ---- counters and time ----

    /// A snapshot of the counters.
    pub fn counters(&self) -> Counters {
        let s = self.st();
        let mut c = s.stats.c;
        (c.dma_regions, c.dma_bytes) = s.mem.outstanding();
        c
    }

    /// Zeroes the access and command counters and the protocol log. The
    /// memory-safety counters (`wild_dma`, `freed_while_dma_possible`) are
    /// kept, with their log lines, so the end check still sees them.
    pub fn reset_counters(&self) {
        let mut s = self.st();
        let kept = Counters {
            wild_dma: s.stats.c.wild_dma,
            freed_while_dma_possible: s.stats.c.freed_while_dma_possible,
            ..Counters::default()
        };
        s.stats.c = kept;
        s.stats.log = s.stats.notes.clone();
    }

    /// What each protocol error was, in order.
    pub fn protocol_log(&self) -> Vec<String> {
        self.st().stats.log.clone()
    }

    /// The virtual time (without advancing it).
    pub fn now(&self) -> Instant {
        Instant::from_nanos(self.st().now)
    }

    /// Advances the virtual clock.
    pub fn advance(&self, by: Duration) {
        let mut s = self.st();
        s.now = s.now.saturating_add(by.as_nanos() as u64);
        let now = s.now;
        s.ctrls.iter_mut().for_each(|c| c.dev.update(now));
    }

    /// Changes how far each `now()` call advances the clock.
    pub fn set_clock_step(&self, step: Duration) {
        self.st().step = step.as_nanos() as u64;
    }

    // ---- the end-of-simulation check ----

    /// The caller owns `region` again: a completion returned it. Counts in
    /// `freed_while_dma_possible` if a controller that can still DMA
    /// references it; from now until the device fetches a command naming
    /// that memory, any device write there counts as `wild_dma`.
    pub fn caller_owns(&self, region: &DmaRegion) {
        self.st().caller_owns(region);
    }

    /// The test provokes protocol errors on purpose: the end check allows
    /// them (wild DMA and memory handed back too early still fail it).
    pub fn expect_protocol_errors(&self) {
        self.st().expect.protocol_errors = true;
    }

    /// The test leaves DMA regions allocated at the end (its own buffers):
    /// the end check allows outstanding regions.
    pub fn expect_outstanding(&self) {
        self.st().expect.outstanding = true;
    }

    /// The driver keeps DMA regions in quarantine because a device may
    /// still write them: the end check allows outstanding regions.
    pub fn expect_quarantined(&self) {
        self.expect_outstanding();
    }

    /// Turns the end check off, for harnesses that check by themselves.
    pub fn unchecked(&self) {
        self.st().expect.unchecked = true;
    }

    /// What the end check would report now (empty: nothing).
    pub fn violations(&self) -> Vec<String> {
        self.st().violations()
    }

    // ---- faults by access index ----

    /// Register and config accesses served so far: the index the next
    /// access gets.
    pub fn access_count(&self) -> u64 {
        self.st().accesses
    }

    /// Schedules `fault` to happen just before access `index` is served (at
    /// the next access if `index` already passed).
    pub fn on_access(&self, index: u64, fault: Fault) {
        self.st().faults.entry(index).or_default().push(fault);
    }

    /// Makes `fault` happen now.
    pub fn inject(&self, fault: Fault) {
        self.st().apply(fault);
    }

    // ---- lifecycle ----

    /// The function vanishes: config reads all-ones, BAR reads per
    /// [`crate::RemovedReads`], writes dropped, in-flight and held commands never
    /// complete. A root port reports Presence Detect State 0, Presence Detect
    /// Changed, Data Link Layer Link Active 0 and DLL State Changed.
    pub fn surprise_remove(&self, ctrl: CtrlId) {
        self.st().surprise_remove(ctrl.0);
    }

    /// Plugs a new controller into an empty slot. It comes up reset (command
    /// register 0, BAR0 unassigned); the port reports presence, link active
    /// and both change bits. Panics if the slot is occupied.
    pub fn hot_add(&self, port: PortId, spec: ControllerSpec) -> CtrlId {
        self.hot_add_at(Location::Port(port), spec)
    }

    /// Adds a controller anywhere; on bus 0 or behind a bridge nothing
    /// announces it, only re-probing config space finds it.
    pub fn hot_add_at(&self, loc: Location, spec: ControllerSpec) -> CtrlId {
        let spec = spec.firmware_enabled(false).bar_assigned(false);
        self.st().hot_add(loc, spec)
    }

    /// The slot's power controller detects a power fault: Power Fault
    /// Detected, the slot's power cut (the card reset and unreachable) until
    /// software switches the slot off and on again.
    pub fn power_fault(&self, port: PortId) {
        self.st().power_fault(port);
    }

    /// Opens the slot's retention latch (MRL Sensor State open, MRL Sensor
    /// Changed); the card stays until pulled.
    pub fn open_latch(&self, port: PortId) {
        self.st().set_latch(port, true);
    }

    /// Closes the slot's retention latch.
    pub fn close_latch(&self, port: PortId) {
        self.st().set_latch(port, false);
    }

    /// The port triggers Downstream Port Containment (its slot has
    /// [`crate::SlotSpec::dpc`]): DPC Trigger Status set, the link down and
    /// a card still there reset, until software clears the trigger.
    pub fn contain(&self, port: PortId) {
        self.st().contain(port);
    }

    /// Whether the port still holds its link down for containment.
    pub fn contained(&self, port: PortId) -> bool {
        self.st().contained(port)
    }

    /// The root port's Slot Control register.
    pub fn slot_control(&self, port: PortId) -> u16 {
        let s = self.st();
        s.pci.nodes[s.ports[port.0]]
            .cfg
            .get16(PORT_PCIE_CAP + pcie::SLOT_CONTROL)
    }

    /// Plugs the card `ctrl`, pulled earlier ([`Sim::surprise_remove`]),
    /// back into the empty slot of `port` (its own or another): the same
    /// disk with the same media. It is a new controller to the model (the
    /// returned id; `ctrl` keeps answering [`Sim::read_block`] as it was)
    /// with the same spec, serial number included, so the driver reports it
    /// as [`bare_nvme::Event::Returned`], and every block flushed before the
    /// removal reads back; writes still in the volatile write cache went
    /// with the power, as on a real card. It comes up reset, like any card
    /// hot-added. Panics if `ctrl` is still present or the slot is occupied.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use bare_nvme::block::{BounceConfig, NamespaceDisk};
    /// use bare_nvme::{Driver, DriverConfig, Event};
    /// use bare_nvme_sim::{ControllerSpec, CtrlId, NamespaceSpec, PortId, Sim};
    ///
    /// let sim = Sim::single(ControllerSpec::default().namespace(NamespaceSpec::new(2048, 512)));
    /// let mut driver = Box::new(Driver::<_, _>::new(
    ///     sim.platform(),
    ///     sim.config_access(),
    ///     DriverConfig::new(),
    /// ));
    /// driver.scan().unwrap();
    /// let _ = driver.wait_ready(Duration::from_secs(5));
    /// let id = driver.ready_controllers().next().unwrap();
    /// {
    ///     let mut disk = NamespaceDisk::open(&mut *driver, Some(id), 1, BounceConfig::new()).unwrap();
    ///     disk.write(100, &[0x77; 512]).unwrap();
    ///     disk.flush().unwrap();
    /// }
    ///
    /// // Pulled, then put back into the same slot.
    /// sim.surprise_remove(CtrlId(0));
    /// let mut tick = |driver: &mut Driver<_, _>| {
    ///     sim.advance(Duration::from_millis(1));
    ///     driver.tick()
    /// };
    /// while !tick(&mut driver).iter().any(|e| matches!(e, Event::Removed { .. })) {}
    /// let again = sim.reinsert(CtrlId(0), PortId(0));
    /// let returned = loop {
    ///     let found = tick(&mut driver).into_iter().find_map(|e| match e {
    ///         Event::Returned { id, previous, .. } => Some((id, previous)),
    ///         _ => None,
    ///     });
    ///     if let Some(found) = found {
    ///         break found;
    ///     }
    /// };
    /// assert_eq!(returned.1, id);
    /// let _ = driver.wait_ready(Duration::from_secs(5));
    ///
    /// // The data written before the removal is there.
    /// let mut disk = NamespaceDisk::open(&mut *driver, Some(returned.0), 1, BounceConfig::new()).unwrap();
    /// let mut back = [0; 512];
    /// disk.read(100, &mut back).unwrap();
    /// assert_eq!(back, [0x77; 512]);
    /// assert_eq!(sim.read_block(again, 1, 100), [0x77; 512]);
    /// ```
    pub fn reinsert(&self, ctrl: CtrlId, port: PortId) -> CtrlId {
        let mut st = self.st();
        let spec = st.ctrls[ctrl.0]
            .dev
            .spec
            .clone()
            .firmware_enabled(false)
            .bar_assigned(false);
        st.reinsert(ctrl.0, Location::Port(port), spec)
    }

    /// Sets Attention Button Pressed in the port's Slot Status.
    pub fn press_attention_button(&self, port: PortId) {
        self.st().press_attention_button(port);
    }

    /// Takes the link down: the device becomes unreachable and is reset
    /// (queues and in-flight commands gone; data and write cache kept); DLL
    /// Link Active 0 and DLL State Changed.
    pub fn link_down(&self, port: PortId) {
        self.st().set_link(port, false);
    }

    /// Brings the link back: the device answers again, reset (command
    /// register 0, BAR0 unassigned, controller disabled).
    pub fn link_up(&self, port: PortId) {
        self.st().set_link(port, true);
    }

    /// [`Sim::link_down`] then [`Sim::link_up`]: the same device comes back
    /// reset.
    pub fn link_flap(&self, port: PortId) {
        self.link_down(port);
        self.link_up(port);
    }

    /// Every controller loses power and comes back at power-on register
    /// values; writes not flushed from the volatile cache are lost. PCI
    /// configuration is kept (as firmware would restore it).
    pub fn power_loss(&self) {
        let mut s = self.st();
        for c in &mut s.ctrls {
            c.dev.namespaces.iter_mut().for_each(|n| n.lose_cache());
            c.dev.power_on_reset();
        }
    }

    // ---- controller faults ----

    /// Sets CSTS.CFS.
    pub fn set_cfs(&self, ctrl: CtrlId) {
        self.inject(Fault::SetCfs(ctrl));
    }

    /// The controller stops (or, `on` false, resumes) updating its
    /// EventIdx slots, as a device whose shadow-doorbell logic stalled: a
    /// host that follows the EventIdx rule then stops ringing MMIO
    /// doorbells, and what it announces only in the shadow page waits until
    /// the device polls it ([`Sim::process`]).
    pub fn freeze_event_idx(&self, ctrl: CtrlId, on: bool) {
        self.st().ctrls[ctrl.0].dev.event_idx_frozen = on;
    }

    /// Hangs the controller (see [`Fault::Hang`]).
    pub fn hang(&self, ctrl: CtrlId) {
        self.inject(Fault::Hang(ctrl));
    }

    /// A transient glitch of a present, healthy device: the next CSTS read
    /// of the controller returns 0 (RDY clear) and the next config read of
    /// the function's vendor/device dword (offset 0) returns all-ones; after
    /// those two reads everything reads normally. The controller keeps
    /// running and keeps its DMA ability throughout.
    pub fn glitch(&self, ctrl: CtrlId) {
        self.inject(Fault::Glitch(ctrl));
    }

    /// Whether the function drops every config write (`on`) or accepts
    /// them again. Reads stay normal: a driver turning bus mastering off
    /// reads it back still on.
    pub fn ignore_config_writes(&self, ctrl: CtrlId, on: bool) {
        self.st().set_ignore_config_writes(ctrl.0, on);
    }

    /// The function's Command register loses Memory Space Enable while Bus
    /// Master stays on and the controller stays enabled and ready: register
    /// accesses reach nothing, held commands can still complete into memory.
    pub fn memory_decoding_off(&self, ctrl: CtrlId) {
        self.inject(Fault::MemoryDecodingOff(ctrl));
    }

    /// The slot sets Presence Detect Changed while the card stays present,
    /// the link up and the device alive and untouched (BAR, command
    /// register and CC.EN unchanged).
    pub fn bounce_presence(&self, port: PortId) {
        self.inject(Fault::BouncePresence(port));
    }

    /// The slot sets Data Link Layer State Changed while the link stays up
    /// and the device alive and untouched.
    pub fn bounce_link(&self, port: PortId) {
        self.inject(Fault::BounceLink(port));
    }

    /// Whether the controller can write memory now: present, bus mastering
    /// on along its path, and CC.EN = 1 or CSTS.RDY = 1.
    pub fn can_dma(&self, ctrl: CtrlId) -> bool {
        let mut s = self.st();
        let now = s.now;
        s.ctrls[ctrl.0].dev.update(now);
        s.can_dma(ctrl.0)
    }

    /// Lets a hung controller work again.
    pub fn unhang(&self, ctrl: CtrlId) {
        self.st().ctrls[ctrl.0].dev.hung = false;
    }

    /// Adds a completion misbehaviour rule.
    pub fn misbehave(&self, ctrl: CtrlId, rule: Rule) {
        self.st().ctrls[ctrl.0].dev.rules.push(rule);
    }

    /// Removes all misbehaviour rules.
    pub fn behave(&self, ctrl: CtrlId) {
        self.st().ctrls[ctrl.0].dev.rules.clear();
    }

    /// Reads of `lbas` in namespace `nsid` fail with a media error
    /// (Unrecovered Read Error).
    pub fn fail_reads(&self, ctrl: CtrlId, nsid: u32, lbas: Range<u64>) {
        self.st().ctrls[ctrl.0].dev.namespaces[nsid as usize - 1]
            .read_errors
            .push(lbas);
    }

    /// Writes of `lbas` in namespace `nsid` fail with a media error (Write
    /// Fault).
    pub fn fail_writes(&self, ctrl: CtrlId, nsid: u32, lbas: Range<u64>) {
        self.st().ctrls[ctrl.0].dev.namespaces[nsid as usize - 1]
            .write_errors
            .push(lbas);
    }

    /// Removes injected media errors.
    pub fn clear_media_errors(&self, ctrl: CtrlId) {
        for n in &mut self.st().ctrls[ctrl.0].dev.namespaces {
            n.read_errors.clear();
            n.write_errors.clear();
        }
    }

    // ---- held completions and background work ----

    /// Which completions the controller holds from now on.
    pub fn hold(&self, ctrl: CtrlId, hold: Hold) {
        self.st().ctrls[ctrl.0].dev.hold = hold;
    }

    /// Commands held (fetched, not completed) across all controllers.
    pub fn held_count(&self) -> usize {
        let s = self.st();
        (0..s.ctrls.len())
            .filter(|&c| s.present(c))
            .map(|c| s.ctrls[c].dev.held.len())
            .sum()
    }

    /// Executes and completes up to `n` held commands, oldest first across
    /// all controllers; returns how many. Commands stay held while their
    /// controller cannot work (hung, not ready, bus mastering off).
    pub fn complete_held(&self, n: usize) -> usize {
        let mut s = self.st();
        (0..n).take_while(|_| s.release_one()).count()
    }

    /// Completes every held command that can complete.
    pub fn release_all(&self) -> usize {
        self.complete_held(usize::MAX)
    }

    /// The device's background work: every controller reads its shadow
    /// doorbells, runs new submissions and posts waiting completions.
    pub fn process(&self) {
        let mut s = self.st();
        for c in 0..s.ctrls.len() {
            if s.present(c) && s.pci.reachable(s.ctrls[c].node) {
                s.with_ctrl(c, |dev, env| dev.poll_shadow(env));
            }
        }
    }

    // ---- introspection ----

    /// Where the controller's config space answers now (None if removed or
    /// unreachable, e.g. bus numbers not assigned).
    pub fn address(&self, ctrl: CtrlId) -> Option<PciAddress> {
        let s = self.st();
        let node = s.ctrls[ctrl.0].node;
        s.address_of(node).map(|(b, d)| PciAddress::new(0, b, d, 0))
    }

    /// Where the root port's config space answers.
    pub fn port_address(&self, port: PortId) -> PciAddress {
        let s = self.st();
        let node = s.ports[port.0];
        PciAddress::new(0, 0, s.pci.nodes[node].device, 0)
    }

    /// The root port's Slot Status register.
    pub fn slot_status(&self, port: PortId) -> u16 {
        let s = self.st();
        s.pci.nodes[s.ports[port.0]]
            .cfg
            .get16(PORT_PCIE_CAP + pcie::SLOT_STATUS)
    }

    /// Whether the controller's function exists (not removed).
    pub fn is_present(&self, ctrl: CtrlId) -> bool {
        self.st().present(ctrl.0)
    }

    /// The address BAR0 holds now.
    pub fn bar(&self, ctrl: CtrlId) -> u64 {
        self.st().bar_addr(ctrl.0)
    }

    /// The length of the controller's BAR0 in bytes ([`crate::DEFAULT_BAR_SIZE`]
    /// unless its spec set another): what a standalone
    /// [`bare_nvme::Controller::new`] is given as `regs_len`.
    pub fn bar_len(&self, ctrl: CtrlId) -> u64 {
        self.st().ctrls[ctrl.0].dev.spec.bar_len()
    }

    /// The function's PCI command register.
    pub fn command_register(&self, ctrl: CtrlId) -> u16 {
        self.st().command_register(ctrl.0)
    }

    /// Whether CSTS.RDY is set.
    pub fn is_ready(&self, ctrl: CtrlId) -> bool {
        self.st().ctrls[ctrl.0].dev.ready()
    }

    /// I/O submission queues that exist (created, not deleted).
    pub fn io_queues(&self, ctrl: CtrlId) -> usize {
        self.st().ctrls[ctrl.0]
            .dev
            .sqs
            .keys()
            .filter(|&&q| q != 0)
            .count()
    }

    /// Whether Doorbell Buffer Config is in effect.
    pub fn shadow_doorbells_active(&self, ctrl: CtrlId) -> bool {
        self.st().ctrls[ctrl.0].dev.shadow.is_some()
    }

    /// Blocks of namespace `nsid` written but not yet durable.
    pub fn dirty_blocks(&self, ctrl: CtrlId, nsid: u32) -> usize {
        self.st().ctrls[ctrl.0].dev.namespaces[nsid as usize - 1].dirty_blocks()
    }

    /// The content of block `lba` of namespace `nsid` as a read would see it.
    pub fn read_block(&self, ctrl: CtrlId, nsid: u32, lba: u64) -> Vec<u8> {
        let s = self.st();
        let ns = &s.ctrls[ctrl.0].dev.namespaces[nsid as usize - 1];
        let mut buf = vec![0; ns.block_size()];
        ns.read_block(lba, &mut buf);
        buf
    }

    /// Stores block `lba` of namespace `nsid` durably (test setup).
    pub fn write_block(&self, ctrl: CtrlId, nsid: u32, lba: u64, data: &[u8]) {
        let mut s = self.st();
        let ns = &mut s.ctrls[ctrl.0].dev.namespaces[nsid as usize - 1];
        assert_eq!(data.len(), ns.block_size());
        ns.write_block(lba, Some(data), false);
    }

    /// The Identify Controller page the controller returns.
    pub fn identify_controller(&self, ctrl: CtrlId) -> Vec<u8> {
        self.st().ctrls[ctrl.0].dev.identify_controller()
    }

    // ---- asynchronous events and log pages ----

    /// Sets the SMART critical warning bits of `ctrl` (as QEMU's
    /// `smart_critical_warning` property): each newly set bit raises a
    /// SMART / Health event if the driver enabled it.
    pub fn set_critical_warning(&self, ctrl: CtrlId, bits: u8) {
        self.st()
            .with_ctrl(ctrl.0, |dev, env| dev.set_critical_warning(bits, env));
    }

    /// Raises an event of any type (completion dword 0 of a request).
    pub fn raise_event(&self, ctrl: CtrlId, kind: u8, info: u8, log_page: u8) {
        let event = bare_nvme::spec::log::AsyncEvent {
            kind,
            info,
            log_page,
        };
        self.st()
            .with_ctrl(ctrl.0, |dev, env| dev.raise(event, env));
    }

    /// Detaches namespace `nsid` from `ctrl` behind the driver (another
    /// host's Namespace Attachment): a Namespace Attribute Notice follows.
    pub fn detach_namespace(&self, ctrl: CtrlId, nsid: u32) {
        self.st()
            .with_ctrl(ctrl.0, |dev, env| dev.set_attached(nsid, false, env));
    }

    /// Attaches namespace `nsid` to `ctrl` again.
    pub fn attach_namespace(&self, ctrl: CtrlId, nsid: u32) {
        self.st()
            .with_ctrl(ctrl.0, |dev, env| dev.set_attached(nsid, true, env));
    }

    /// How `ctrl` lies about every log page from now on (`None`: it stops).
    pub fn lie_about_logs(&self, ctrl: CtrlId, lie: Option<LogLie>) {
        self.st().ctrls[ctrl.0].dev.events.lie = lie;
    }

    /// The next `events` requests of `ctrl` complete at once with a SMART /
    /// Health event, masks ignored: a flood.
    pub fn event_storm(&self, ctrl: CtrlId, events: u32) {
        self.st().with_ctrl(ctrl.0, |dev, env| {
            dev.events.storm = events;
            dev.deliver_events(env);
        });
    }

    /// Asynchronous Event Requests `ctrl` holds.
    pub fn outstanding_event_requests(&self, ctrl: CtrlId) -> usize {
        self.st().ctrls[ctrl.0].dev.events.aers.len()
    }

    /// Requests `ctrl` refused for exceeding its limit.
    pub fn event_requests_over_limit(&self, ctrl: CtrlId) -> u32 {
        self.st().ctrls[ctrl.0].dev.events.over_limit
    }

    /// The Asynchronous Event Configuration `ctrl` was given.
    pub fn async_event_config(&self, ctrl: CtrlId) -> u32 {
        self.st().ctrls[ctrl.0].dev.events.config
    }
}
