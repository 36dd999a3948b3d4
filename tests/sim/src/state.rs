//! The shared state behind every handle, and the operations that cut across
//! the PCI model and the controllers (routing, removal, faults).

use std::collections::BTreeMap;

use crate::config::{cmd, off};
use crate::controller::{Controller, Env};
use crate::counters::Stats;
use crate::memory::Arena;
use crate::pci::{nvme_config, slot, Kind, SlotAction, Topology};
use crate::spec::ControllerSpec;
use crate::{CtrlId, Fault, Location, PortId, RemovedReads};

pub(crate) struct Slot {
    pub(crate) node: usize,
    pub(crate) dev: Controller,
}

pub(crate) struct State {
    pub(crate) mem: Arena,
    pub(crate) now: u64,
    pub(crate) step: u64,
    pub(crate) pci: Topology,
    pub(crate) ctrls: Vec<Slot>,
    pub(crate) ports: Vec<usize>,
    pub(crate) bridges: Vec<usize>,
    pub(crate) stats: Stats,
    pub(crate) faults: BTreeMap<u64, Vec<Fault>>,
    pub(crate) accesses: u64,
    pub(crate) removed_reads: RemovedReads,
    /// Memory completions returned to their callers, until the device
    /// fetches a command naming it again.
    pub(crate) caller_owned: Vec<crate::dma_refs::Range>,
    /// What the end-of-simulation check allows.
    pub(crate) expect: crate::invariants::Expect,
}

impl State {
    /// Runs `f` on a controller with its environment.
    pub(crate) fn with_ctrl<R>(
        &mut self,
        c: usize,
        f: impl FnOnce(&mut Controller, &mut Env) -> R,
    ) -> R {
        let bus_master = self.pci.bus_master(self.ctrls[c].node);
        let mut env = Env {
            mem: &self.mem,
            stats: &mut self.stats,
            now: self.now,
            bus_master,
            caller_owned: &mut self.caller_owned,
        };
        f(&mut self.ctrls[c].dev, &mut env)
    }

    pub(crate) fn present(&self, c: usize) -> bool {
        self.pci.nodes[self.ctrls[c].node].present
    }

    /// Counts an access and applies faults scheduled up to its index.
    pub(crate) fn begin_access(&mut self) {
        let index = self.accesses;
        self.accesses += 1;
        while let Some(entry) = self.faults.first_entry() {
            if *entry.key() > index {
                break;
            }
            for fault in entry.remove() {
                self.apply(fault);
            }
        }
        let now = self.now;
        for s in &mut self.ctrls {
            s.dev.update(now);
        }
        self.pci.now = now;
        self.pci.advance_ports();
    }

    pub(crate) fn apply(&mut self, fault: Fault) {
        match fault {
            Fault::SurpriseRemove(c) => self.surprise_remove(c.0),
            Fault::SetCfs(c) => self.ctrls[c.0].dev.set_cfs(),
            Fault::Hang(c) => self.ctrls[c.0].dev.hung = true,
            Fault::NssrOccurred(c) => self.ctrls[c.0].dev.subsystem_reset(),
            Fault::LinkDown(p) => self.set_link(p, false),
            Fault::Glitch(c) => self.glitch(c.0),
            Fault::IgnoreConfigWrites(c) => self.set_ignore_config_writes(c.0, true),
            Fault::MemoryDecodingOff(c) => self.memory_decoding_off(c.0),
            Fault::BouncePresence(p) => self.bounce(p, slot::PRESENCE_DETECT_CHANGED),
            Fault::BounceLink(p) => self.bounce(p, slot::DLL_STATE_CHANGED),
        }
    }

    fn glitch(&mut self, c: usize) {
        let node = self.ctrls[c].node;
        self.pci.nodes[node].glitch_id = true;
        self.ctrls[c].dev.glitch_csts = true;
    }

    pub(crate) fn set_ignore_config_writes(&mut self, c: usize, on: bool) {
        let node = self.ctrls[c].node;
        self.pci.nodes[node].ignore_writes = on;
    }

    fn memory_decoding_off(&mut self, c: usize) {
        let cfg = &mut self.pci.nodes[self.ctrls[c].node].cfg;
        let command = cfg.command() & !cmd::MEMORY;
        cfg.set16(off::COMMAND, command);
    }

    /// Sets a Slot Status change bit while nothing changed in the slot.
    fn bounce(&mut self, port: PortId, bit: u16) {
        self.pci.set_slot_status(self.ports[port.0], bit);
    }

    /// Whether controller `c` may write memory now: present, bus mastering
    /// on along the path, and CC.EN or CSTS.RDY set.
    pub(crate) fn can_dma(&self, c: usize) -> bool {
        self.present(c) && self.pci.bus_master(self.ctrls[c].node) && self.ctrls[c].dev.may_dma()
    }

    pub(crate) fn config_read(&mut self, bus: u8, dev: u8, func: u8, offset: u16) -> u32 {
        self.begin_access();
        self.stats.c.config_reads += 1;
        if !offset.is_multiple_of(4) || offset >= 4096 {
            self.stats
                .protocol(format!("config read at unaligned offset {offset:#x}"));
            return !0;
        }
        match self.pci.route_config(bus, dev, func) {
            Some(n) if self.retrying(n) => {
                let port = self.pci.nodes[n].parent.expect("in a slot");
                if offset == 0 && self.pci.crs_visible(port) {
                    // Retry Status as the root port shows it to software.
                    0xFFFF_0001
                } else {
                    !0
                }
            }
            Some(n) if offset == 0 && self.pci.nodes[n].glitch_id => {
                self.pci.nodes[n].glitch_id = false;
                !0
            }
            Some(n) => self.pci.nodes[n].cfg.get32(offset as usize),
            None => !0,
        }
    }

    pub(crate) fn config_write(&mut self, bus: u8, dev: u8, func: u8, offset: u16, value: u32) {
        self.begin_access();
        self.stats.c.config_writes += 1;
        if !offset.is_multiple_of(4) || offset >= 4096 {
            self.stats
                .protocol(format!("config write at unaligned offset {offset:#x}"));
            return;
        }
        let Some(n) = self.pci.route_config(bus, dev, func) else {
            return;
        };
        if self.pci.nodes[n].ignore_writes || self.retrying(n) {
            return;
        }
        match self.pci.config_write(n, offset as usize, value) {
            SlotAction::None => {}
            SlotAction::Remove(child) => self.remove_node(child),
            SlotAction::PowerOff(child) => {
                let c = self.ctrl_of(child);
                self.ctrls[c]
                    .dev
                    .namespaces
                    .iter_mut()
                    .for_each(|n| n.lose_cache());
                self.device_reset(c);
                let port = self.pci.nodes[child].parent.expect("in a slot");
                self.pci.refresh_port(port, true);
            }
            SlotAction::PowerOn(child) => {
                // The card was dark: it comes up as after reset.
                let c = self.ctrl_of(child);
                self.device_reset(c);
                let port = self.pci.nodes[child].parent.expect("in a slot");
                self.pci.refresh_port(port, true);
            }
        }
    }

    /// Whether `node` sits in a root port's slot and still answers with
    /// Retry Status.
    fn retrying(&self, node: usize) -> bool {
        self.pci.nodes[node]
            .parent
            .filter(|&p| matches!(self.pci.nodes[p].kind, Kind::RootPort(_)))
            .is_some_and(|p| self.pci.retrying(p))
    }

    fn ctrl_of(&self, node: usize) -> usize {
        match self.pci.nodes[node].kind {
            Kind::Nvme(c) => c,
            _ => panic!("node {node} is not a controller"),
        }
    }

    fn route_mmio(&self, addr: u64) -> Option<(usize, u64)> {
        let ctrls = &self.ctrls;
        self.pci.route_mmio(addr, |c| ctrls[c].dev.spec.bar_len())
    }

    pub(crate) fn mmio_read(&mut self, addr: u64) -> u32 {
        self.begin_access();
        self.stats.c.mmio_reads += 1;
        match self.route_mmio(addr) {
            Some((node, offset)) => {
                let c = self.ctrl_of(node);
                self.with_ctrl(c, |dev, env| dev.read_reg(offset, env))
            }
            None => match self.removed_reads {
                RemovedReads::Zero => 0,
                RemovedReads::AllOnes => !0,
            },
        }
    }

    pub(crate) fn mmio_write(&mut self, addr: u64, value: u32) {
        self.begin_access();
        self.stats.c.mmio_writes += 1;
        if let Some((node, offset)) = self.route_mmio(addr) {
            let c = self.ctrl_of(node);
            self.with_ctrl(c, |dev, env| dev.write_reg(offset, value, env));
        }
    }

    /// The device went through reset (link loss, power cycle): config space
    /// as after reset, controller at power-on values.
    fn device_reset(&mut self, c: usize) {
        let node = self.ctrls[c].node;
        self.pci.nodes[node].cfg = nvme_config(&self.ctrls[c].dev.spec);
        self.ctrls[c].dev.power_on_reset();
    }

    fn remove_node(&mut self, node: usize) {
        let c = self.ctrl_of(node);
        self.pci.nodes[node].present = false;
        // In-flight commands never complete: the device is gone.
        self.ctrls[c].dev.reset_queues();
        if let Some(port) = self.pci.nodes[node].parent {
            if matches!(self.pci.nodes[port].kind, Kind::RootPort(_)) {
                self.pci.refresh_port(port, true);
            }
        }
    }

    pub(crate) fn surprise_remove(&mut self, c: usize) {
        let node = self.ctrls[c].node;
        if self.pci.nodes[node].present {
            self.remove_node(node);
        }
    }

    pub(crate) fn set_link(&mut self, port: PortId, up: bool) {
        let p = self.ports[port.0];
        let was_up = self.pci.link_up(p);
        self.pci.port_mut(p).link_held_down = !up;
        if was_up && !up {
            if let Some(child) = self.pci.port(p).child {
                let c = self.ctrl_of(child);
                self.device_reset(c);
            }
        }
        self.pci.refresh_port(p, true);
    }

    /// Adds a controller at `loc`; it comes up as after reset unless
    /// `firmware` (build time) says otherwise.
    pub(crate) fn add_controller(&mut self, loc: Location, spec: ControllerSpec) -> CtrlId {
        let parent = match loc {
            Location::Bus0 => None,
            Location::Port(p) => Some(self.ports[p.0]),
            Location::Bridge(b) => Some(self.bridges[b.0]),
        };
        let device = match loc {
            Location::Port(p) => {
                let port = self.ports[p.0];
                let occupied = self
                    .pci
                    .port(port)
                    .child
                    .is_some_and(|c| self.pci.nodes[c].present);
                assert!(!occupied, "port {} already holds a controller", p.0);
                0
            }
            _ => self.pci.next_device(parent),
        };
        let c = self.ctrls.len();
        let node = self
            .pci
            .add(parent, device, nvme_config(&spec), Kind::Nvme(c));
        self.ctrls.push(Slot {
            node,
            dev: Controller::new(spec),
        });
        if let Location::Port(p) = loc {
            let port = self.ports[p.0];
            self.pci.port_mut(port).child = Some(node);
        }
        CtrlId(c)
    }

    pub(crate) fn hot_add(&mut self, loc: Location, spec: ControllerSpec) -> CtrlId {
        self.pci.now = self.now;
        let id = self.add_controller(loc, spec);
        if let Location::Port(p) = loc {
            let port = self.ports[p.0];
            if self.pci.port(port).spec.power_controller {
                // The card stays dark until software powers the slot on;
                // a slot left powered trains its link at once.
                if self.pci.slot_powered(port) {
                    self.pci.start_link(port);
                }
            } else {
                // No power controller (Slot Capabilities PCP 0): a card
                // inserted after a power-off write is powered at once, as
                // with QEMU's power_controller_present=off.
                self.pci.power_slot_on(port);
                self.pci.start_link(port);
            }
            self.pci.refresh_port(port, true);
        }
        id
    }

    /// The slot's power controller reports a fault and cuts power: the
    /// card is reset and unreachable until software switches the slot off
    /// and on again.
    pub(crate) fn power_fault(&mut self, port: PortId) {
        let p = self.ports[port.0];
        self.pci.port_mut(p).faulted = true;
        if let Some(child) = self
            .pci
            .port(p)
            .child
            .filter(|&c| self.pci.nodes[c].present)
        {
            let c = self.ctrl_of(child);
            self.device_reset(c);
        }
        self.pci.set_slot_status(p, slot::POWER_FAULT_DETECTED);
        self.pci.refresh_port(p, true);
    }

    /// The port triggers Downstream Port Containment: DPC Trigger Status
    /// set, the link held down (the card, if still there, is reset) until
    /// software clears it.
    pub(crate) fn contain(&mut self, port: PortId) {
        let p = self.ports[port.0];
        assert!(self.pci.port(p).spec.dpc, "port {} has no DPC", port.0);
        self.pci.now = self.now;
        self.pci.port_mut(p).contained = true;
        if let Some(child) = self
            .pci
            .port(p)
            .child
            .filter(|&c| self.pci.nodes[c].present)
        {
            let c = self.ctrl_of(child);
            self.device_reset(c);
        }
        let cfg = &mut self.pci.nodes[p].cfg;
        // Trigger Status, reason 00b: an unmasked uncorrectable error
        // (what a surprise removal's completion timeouts raise).
        let status = cfg.get16(crate::pci::DPC_STATUS) | 1;
        cfg.set16(crate::pci::DPC_STATUS, status);
        self.pci.refresh_port(p, true);
    }

    /// Whether the port still holds its link down for containment.
    pub(crate) fn contained(&self, port: PortId) -> bool {
        self.pci.port(self.ports[port.0]).contained
    }

    /// Opens (or closes) the slot's retention latch: MRL Sensor State and
    /// MRL Sensor Changed. The card stays until it is pulled.
    pub(crate) fn set_latch(&mut self, port: PortId, open: bool) {
        let p = self.ports[port.0];
        let at = crate::pci::PORT_PCIE_CAP + crate::pci::pcie::SLOT_STATUS;
        let cfg = &mut self.pci.nodes[p].cfg;
        let mut status = cfg.get16(at) | slot::MRL_SENSOR_CHANGED;
        if open {
            status |= slot::MRL_SENSOR_OPEN;
        } else {
            status &= !slot::MRL_SENSOR_OPEN;
        }
        cfg.set16(at, status);
    }

    /// Plugs a new controller made like the removed controller `c`, with a
    /// copy of `c`'s media as it was at the removal (durable blocks only:
    /// the volatile write cache went with the power), into `loc`.
    pub(crate) fn reinsert(&mut self, c: usize, loc: Location, spec: ControllerSpec) -> CtrlId {
        assert!(!self.present(c), "controller {c} is still present");
        let mut media = self.ctrls[c].dev.namespaces.clone();
        for namespace in &mut media {
            namespace.lose_cache();
        }
        let id = self.hot_add(loc, spec);
        self.ctrls[id.0].dev.namespaces = media;
        id
    }

    pub(crate) fn press_attention_button(&mut self, port: PortId) {
        self.pci
            .set_slot_status(self.ports[port.0], slot::ATTENTION_BUTTON_PRESSED);
    }

    /// The bus and device number a node's config space answers at now.
    pub(crate) fn address_of(&self, node: usize) -> Option<(u8, u8)> {
        let dev = self.pci.nodes[node].device;
        (0..=255u8)
            .find(|&bus| self.pci.route_config(bus, dev, 0) == Some(node))
            .map(|bus| (bus, dev))
    }

    pub(crate) fn bar_addr(&self, c: usize) -> u64 {
        self.pci.nodes[self.ctrls[c].node].cfg.bar64_addr()
    }

    pub(crate) fn command_register(&self, c: usize) -> u16 {
        self.pci.nodes[self.ctrls[c].node].cfg.get16(off::COMMAND)
    }

    /// Releases the oldest held command of any controller.
    pub(crate) fn release_one(&mut self) -> bool {
        let oldest = (0..self.ctrls.len())
            .filter(|&c| self.present(c))
            .filter_map(|c| self.ctrls[c].dev.held.front().map(|h| (h.seq, c)))
            .min();
        match oldest {
            Some((_, c)) => self.with_ctrl(c, |dev, env| dev.release_held(env)),
            None => false,
        }
    }
}
