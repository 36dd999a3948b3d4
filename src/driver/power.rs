//! The driver's hands on hot-plug slots: each slot's power machine
//! ([`SlotPower`]) kept by port address, fed by the slot polls, and its
//! Slot Control writes issued one command at a time.

use log::{info, warn};
use pci_types::{ConfigRegionAccess, PciAddress};

use crate::driver::monitor::{BridgeId, SlotObservation};
use crate::driver::Driver;
use crate::pci::config::ConfigSpace;
use crate::pci::dpc::Dpc;
use crate::pci::hotplug::{Act, Phase, Poll, SlotFault, SlotPolicy, SlotPower, Step};
use crate::pci::slot::{
    LinkCapabilities, LinkStatus, PciePort, SlotControl, SlotStatus, CRS_VENDOR_ID,
};
use crate::platform::{Instant, Platform};

/// Hot-plug slots the driver keeps machines for.
pub(crate) const MAX_SLOTS: usize = 32;

/// A port's Downstream Port Containment, as the driver watches it.
#[derive(Clone, Copy, Debug)]
struct Containment {
    dpc: Dpc,
    /// The port contained something while controllers behind it were still
    /// being torn down: released on a later poll.
    pending: bool,
}

/// Slot machines by port address, DPC ports, and slot faults not yet
/// reported.
#[derive(Default)]
pub(crate) struct Slots {
    machines: heapless::Vec<(PciAddress, SlotPower), MAX_SLOTS>,
    containment: heapless::Vec<(PciAddress, Containment), MAX_SLOTS>,
    faults: heapless::Deque<(PciAddress, SlotFault), 8>,
}

impl Slots {
    pub(crate) fn get_mut(&mut self, port: PciAddress) -> Option<&mut SlotPower> {
        self.machines
            .iter_mut()
            .find(|(a, _)| *a == port)
            .map(|(_, m)| m)
    }

    fn set(&mut self, port: PciAddress, machine: SlotPower) {
        match self.get_mut(port) {
            Some(m) => *m = machine,
            None => {
                if self.machines.push((port, machine)).is_err() {
                    warn!("pci: more than {MAX_SLOTS} hot-plug slots; {port} left as it is");
                }
            }
        }
    }

    fn set_dpc(&mut self, port: PciAddress, dpc: Option<Dpc>) {
        self.containment.retain(|(a, _)| *a != port);
        if let Some(dpc) = dpc {
            let _ = self.containment.push((
                port,
                Containment {
                    dpc,
                    pending: false,
                },
            ));
        }
    }

    fn containment(&mut self, port: PciAddress) -> Option<&mut Containment> {
        self.containment
            .iter_mut()
            .find(|(a, _)| *a == port)
            .map(|(_, c)| c)
    }

    /// Whether a slot is bringing a card up (power-on, link, readiness).
    pub(crate) fn any_starting(&self) -> bool {
        self.machines.iter().any(|(_, m)| m.starting())
    }

    /// The oldest fault not yet reported.
    pub(crate) fn next_fault(&mut self) -> Option<(PciAddress, SlotFault)> {
        self.faults.pop_front()
    }

    /// Puts a fault back at the front (no room for it this tick).
    pub(crate) fn unreport(&mut self, fault: (PciAddress, SlotFault)) {
        let _ = self.faults.push_front(fault);
    }

    fn fault(&mut self, port: PciAddress, fault: SlotFault) {
        if self.faults.push_back((port, fault)).is_err() {
            // A storm of faults: the oldest unreported one is dropped.
            let _ = self.faults.pop_front();
            let _ = self.faults.push_back((port, fault));
        }
    }
}

/// How a slot poll continues after the power machine's step.
pub(crate) enum Then {
    /// The monitor's usual rules, attaching arrivals or not.
    Usual {
        /// A card that arrived may be probed and attached.
        attach: bool,
    },
    /// Nothing more this poll.
    Done,
    /// A Slot Control command has not completed: the poll's events stay
    /// pending for a later poll.
    Wait,
    /// The function behind the slot answers: probe and attach.
    Attach,
    /// Orderly detach of the live controllers.
    Detach,
    /// Surprise removal of the live controllers.
    Remove,
}

impl<
        P: Platform + Clone,
        C: ConfigRegionAccess + Clone,
        const N: usize,
        const QUEUES: usize,
        const DEPTH: usize,
    > Driver<P, C, N, QUEUES, DEPTH>
{
    fn policy(&self) -> SlotPolicy {
        SlotPolicy {
            button_window: self.config.button_window,
        }
    }

    /// A fresh machine for the slot of `port`, from its registers now; a
    /// card in a slot nobody powered is powered on. `None` when the driver
    /// keeps its hands off slots or the port stopped answering.
    fn start_machine(&mut self, port: PciePort, secondary: u8, now: Instant) -> Option<SlotPower> {
        if !self.config.manage_slots {
            return None;
        }
        let caps = port.slot_capabilities(&self.access);
        let link_reporting = port
            .link_capabilities(&self.access)
            .contains(LinkCapabilities::DLL_ACTIVE_REPORTING);
        let (control, status) = port.slot_registers(&self.access).ok()?;
        port.enable_crs_visibility(&self.access);
        let dpc = Dpc::find(&self.access, port.address);
        self.pci.slots.set_dpc(port.address, dpc);
        let answers = secondary != 0 && {
            let vendor =
                ConfigSpace::new(&self.access, PciAddress::new(0, secondary, 0, 0)).vendor_id();
            vendor != crate::pci::config::VENDOR_NONE && vendor != CRS_VENDOR_ID
        };
        let (phase, write) = SlotPower::initial(caps, control, status, answers, now);
        let mut machine = SlotPower::new(caps, link_reporting, phase);
        if let Some(write) = write {
            info!(
                "pci: slot of {} holds a card without power: powering it on",
                port.address
            );
            port.write_slot_control(&self.access, write);
            machine.issued(now);
        }
        self.pci.slots.set(port.address, machine);
        Some(machine)
    }

    /// Builds the machine of every hot-plug slot the enumeration found
    /// (at `scan`): populated slots nobody powered are powered on. A slot
    /// that has a machine from an earlier scan keeps it (a slot the driver
    /// switched off stays off).
    pub(super) fn start_slots(&mut self) {
        let now = self.platform.now();
        for i in 0..self.pci.topology.bridges().len() {
            let bridge = self.pci.topology.bridges()[i];
            if let Some(port) = bridge.port.filter(|_| bridge.hot_plug_capable()) {
                if self.pci.slots.get_mut(port.address).is_none() {
                    self.start_machine(port, bridge.secondary, now);
                }
            }
        }
    }

    /// Ends a Downstream Port Containment of `bridge`'s port once nothing
    /// behind it is still being torn down, so that a card there (the same
    /// one, after a containment with the device present, or one inserted
    /// later) can train its link. Read only after a presence or link change,
    /// or while a release waits for a teardown.
    pub(super) fn release_containment(&mut self, bridge: BridgeId, seen: &SlotObservation) {
        let address = bridge.address();
        let changed = seen.events.intersects(
            crate::pci::slot::SlotStatus::PRESENCE_DETECT_CHANGED
                | crate::pci::slot::SlotStatus::DATA_LINK_STATE_CHANGED,
        );
        let Some(c) = self.pci.slots.containment(address).copied() else {
            return;
        };
        if !(changed || c.pending) {
            return;
        }
        if !c.dpc.triggered(&self.access) {
            if let Some(c) = self.pci.slots.containment(address) {
                c.pending = false;
            }
            return;
        }
        let busy = self
            .entries_on_port(bridge)
            .any(|i| self.entries[i].as_ref().is_some_and(|e| !e.is_done()));
        let released = !busy && c.dpc.release(&self.access);
        if released {
            info!("pci: port {address}: containment released after the teardown");
        }
        if let Some(c) = self.pci.slots.containment(address) {
            c.pending = !released;
        }
    }

    /// An orderly detach of a controller behind `bridge` was asked for: its
    /// slot is switched off once the detach is done.
    pub(super) fn slot_detach_requested(&mut self, bridge: BridgeId) {
        if let Some(m) = self.pci.slots.get_mut(bridge.address()) {
            m.detach_requested();
        }
    }

    /// Runs the power machine of the slot seen in `seen` (Slot Control
    /// `control`), issuing its Slot Control write; returns how the poll
    /// goes on. Slots the driver keeps its hands off follow the usual rules.
    pub(super) fn step_slot(
        &mut self,
        port: PciePort,
        seen: &SlotObservation,
        control: SlotControl,
        live: bool,
    ) -> Then {
        if !self.config.manage_slots {
            return Then::Usual { attach: true };
        }
        let now = self.platform.now();
        let address = port.address;
        let mut machine = match self.pci.slots.get_mut(address) {
            Some(m) => *m,
            None => match self.start_machine(port, seen.secondary, now) {
                Some(m) => m,
                None => return Then::Usual { attach: true },
            },
        };
        let status = seen.status;
        if status.contains(SlotStatus::COMMAND_COMPLETED) {
            // Acknowledged before any new command, so that the next
            // completion is that command's own.
            port.clear_slot_status(&self.access, SlotStatus::COMMAND_COMPLETED);
        }
        if machine.command_pending(status, now) {
            // The next command waits for the last one's completion; the
            // slot's events stay pending until then.
            self.pci.slots.set(address, machine);
            return Then::Wait;
        }
        let link_active = machine
            .wants_link()
            .then(|| port.link_status(&self.access))
            .map(|l| l.contains(LinkStatus::DLL_LINK_ACTIVE));
        // A port without a secondary bus number reaches nothing: bus 0
        // device 0 is not the slot's function.
        let vendor = (machine.wants_vendor(now) && seen.secondary != 0).then(|| {
            ConfigSpace::new(&self.access, PciAddress::new(0, seen.secondary, 0, 0)).vendor_id()
        });
        let poll = Poll {
            control,
            status,
            live,
            now,
        };
        let step: Step = machine.step(&self.policy(), &poll, link_active, vendor);
        if let Some(write) = step.write {
            port.write_slot_control(&self.access, write);
            machine.issued(now);
        }
        if let Some(fault) = step.fault {
            warn!("pci: slot of {address}: {fault:?}; switched off");
            self.pci.slots.fault(address, fault);
        }
        let served = machine.phase() == Phase::Served;
        self.pci.slots.set(address, machine);
        match step.act {
            Act::None if served => Then::Usual { attach: true },
            Act::None => Then::Done,
            Act::Usual => Then::Usual { attach: true },
            Act::UsualNoAttach => Then::Usual { attach: false },
            Act::Attach => Then::Attach,
            Act::Detach => Then::Detach,
            Act::Remove(_) => Then::Remove,
        }
    }
}
