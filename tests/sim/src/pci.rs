//! The PCI topology: functions on bus 0, PCIe root ports with hot-plug slots,
//! plain PCI-PCI bridges, and NVMe endpoints below them.
//!
//! Config accesses and memory accesses are routed the way hardware routes
//! them: by the bus numbers and windows currently programmed in the bridges, so
//! a driver that renumbers buses or moves windows moves the devices with them.

use crate::config::{cmd, off, ConfigSpace};
use crate::spec::ControllerSpec;

/// Offset of the PCI Express capability in root ports.
pub(crate) const PORT_PCIE_CAP: usize = 0x40;

/// PCIe capability register offsets (PCIe Base 4.0, section 7.5.3).
pub(crate) mod pcie {
    pub const LINK_CAP: usize = 0x0C;
    pub const LINK_STATUS: usize = 0x12;
    pub const SLOT_CAP: usize = 0x14;
    pub const SLOT_CONTROL: usize = 0x18;
    pub const SLOT_STATUS: usize = 0x1A;
}

/// Slot Status bits.
pub(crate) mod slot {
    pub const ATTENTION_BUTTON_PRESSED: u16 = 1 << 0;
    pub const POWER_FAULT_DETECTED: u16 = 1 << 1;
    pub const MRL_SENSOR_CHANGED: u16 = 1 << 2;
    pub const MRL_SENSOR_OPEN: u16 = 1 << 5;
    pub const PRESENCE_DETECT_CHANGED: u16 = 1 << 3;
    pub const COMMAND_COMPLETED: u16 = 1 << 4;
    pub const PRESENCE_DETECT_STATE: u16 = 1 << 6;
    pub const DLL_STATE_CHANGED: u16 = 1 << 8;
    /// Slot Control: power controller control (1 = power off).
    pub const CTL_POWER_OFF: u16 = 1 << 10;
    /// Slot Control: power indicator control field.
    pub const CTL_PIC_MASK: u16 = 3 << 8;
    /// Slot Control: power indicator off.
    pub const CTL_PIC_OFF: u16 = 3 << 8;
}

/// Link Status: Data Link Layer Link Active.
pub(crate) const LINK_DLLLA: u16 = 1 << 13;

/// Where root ports with [`crate::SlotSpec::dpc`] have the DPC extended
/// capability, and its DPC Status register.
pub(crate) const DPC_CAP: usize = 0x100;
pub(crate) const DPC_STATUS: usize = DPC_CAP + 8;

/// Root Control: CRS Software Visibility Enable.
pub(crate) const ROOT_CRS_VISIBLE: u16 = 1 << 4;

/// State of one PCIe root port's slot beyond its config bytes.
pub(crate) struct Port {
    pub(crate) hot_plug: bool,
    /// What the slot models.
    pub(crate) spec: crate::SlotSpec,
    /// When the link comes (came) up after power-on or insertion; `None`:
    /// it will not (unpowered, or it never trains).
    pub(crate) link_at: Option<u64>,
    /// Until when the function answers Retry Status (`None`: it answers).
    pub(crate) ready_at: Option<u64>,
    /// Command Completed is due then.
    pub(crate) command_at: Option<u64>,
    /// A power fault cut the slot's power; cleared by a power-off write.
    pub(crate) faulted: bool,
    /// Downstream Port Containment holds the link down until software
    /// clears DPC Trigger Status.
    pub(crate) contained: bool,
    /// The node plugged into the slot (present or not yet torn down).
    pub(crate) child: Option<usize>,
    /// The link is held down by the test (`link_down`).
    pub(crate) link_held_down: bool,
}

pub(crate) enum Kind {
    HostBridge,
    RootPort(Port),
    PciBridge,
    Nvme(usize),
    /// A function built from a [`crate::FunctionSpec`]: config space only.
    Function,
}

pub(crate) struct Node {
    /// The bridge node this function sits behind (None: bus 0).
    pub(crate) parent: Option<usize>,
    pub(crate) device: u8,
    /// Function number (0 for everything but [`crate::FunctionSpec`] functions).
    pub(crate) function: u8,
    pub(crate) cfg: ConfigSpace,
    pub(crate) kind: Kind,
    /// False once removed: the node stays so that ids remain stable.
    pub(crate) present: bool,
    /// The next read of the vendor/device dword returns all-ones.
    pub(crate) glitch_id: bool,
    /// Config writes are dropped; reads stay normal.
    pub(crate) ignore_writes: bool,
}

/// What a Slot Control write asked the slot to do with its device.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SlotAction {
    None,
    /// Power and indicator off: the device is destroyed (QEMU unplugs it).
    Remove(usize),
    /// Power off with the indicator on: the device loses power, stays.
    PowerOff(usize),
    /// Power back on: the device returns from reset.
    PowerOn(usize),
}

#[derive(Default)]
pub(crate) struct Topology {
    /// The simulated time of the access being served.
    pub(crate) now: u64,
    pub(crate) nodes: Vec<Node>,
    /// The nodes of [`crate::FunctionId`] 0, 1, ...
    pub(crate) functions: Vec<usize>,
    /// Config writes that reached a [`crate::FunctionId`] function.
    pub(crate) function_writes: Vec<crate::ConfigWrite>,
}

/// Config space of an NVMe function as QEMU's nvme presents it.
pub(crate) fn nvme_config(spec: &ControllerSpec) -> ConfigSpace {
    let header = spec.header_type.unwrap_or(0);
    let mut c = ConfigSpace::new(0x1b36, 0x0010, [0x02, 0x08, 0x01], header);
    c.bar64(spec.bar_len());
    // Power management capability (version 3).
    c.add_cap(0x40, 0x01, 8);
    c.set16(0x42, 0x0003);
    if spec.msix {
        // MSI-X: 8 vectors, table at BAR0 + 0x3000, PBA at BAR0 + 0x3800.
        c.add_cap(0x50, 0x11, 12);
        c.set16(0x52, 7);
        c.mask16(0x52, 0xC000);
        c.set32(0x54, 0x3000);
        c.set32(0x58, 0x3800);
    }
    // PCI Express capability, version 2, endpoint.
    c.add_cap(0x60, 0x10, 0x3C);
    c.set16(0x62, 0x0002);
    c.mask16(0x68, 0xFFFF);
    c.set32(0x6C, 1 << 4 | 1);
    c.set16(0x72, 1 << 4 | 1);
    if spec.cap_cycle {
        c.close_cap_cycle();
    }
    c
}

pub(crate) fn host_bridge_config() -> ConfigSpace {
    ConfigSpace::new(0x8086, 0x29c0, [0x00, 0x00, 0x06], 0)
}

pub(crate) fn pci_bridge_config() -> ConfigSpace {
    let mut c = ConfigSpace::new(0x1b36, 0x0001, [0x00, 0x04, 0x06], 1);
    c.bridge_header();
    c.add_cap(0x40, 0x01, 8);
    c
}

/// A QEMU-like pcie-root-port with its PCIe capability.
pub(crate) fn root_port_config(slot_number: u16, spec: &crate::SlotSpec) -> ConfigSpace {
    let hot_plug = spec.hot_plug;
    let mut c = ConfigSpace::new(0x1b36, 0x000c, [0x00, 0x04, 0x06], 1);
    c.bridge_header();
    let p = PORT_PCIE_CAP;
    c.add_cap(p, 0x10, 0x3C);
    // Version 2, type root port (4), slot implemented.
    c.set16(p + 2, 0x0002 | 4 << 4 | 1 << 8);
    c.mask16(p + 8, 0xFFFF);
    c.w1c16(p + 0x0A, 0x000F);
    // Link capabilities: 2.5 GT/s, x1, DLL Link Active Reporting Capable,
    // port number.
    c.set32(
        p + pcie::LINK_CAP,
        1 | 1 << 4 | 1 << 20 | (slot_number as u32 & 0xFF) << 24,
    );
    c.mask16(p + 0x10, 0x0FFF);
    c.set16(p + pcie::LINK_STATUS, 1 | 1 << 4);
    let mut slot_cap = (slot_number as u32) << 19;
    if hot_plug {
        // Attention button, attention and power indicators, hot-plug capable;
        // a power controller only when asked for (QEMU's
        // power_controller_present).
        slot_cap |= 1 | 1 << 3 | 1 << 4 | 1 << 6;
        if spec.power_controller {
            slot_cap |= 1 << 1;
        }
        if spec.mrl_sensor {
            slot_cap |= 1 << 2;
        }
        if spec.no_command_completed {
            slot_cap |= 1 << 18;
        }
    }
    c.set32(p + pcie::SLOT_CAP, slot_cap);
    c.mask16(p + pcie::SLOT_CONTROL, 0x1FFF);
    c.set16(p + pcie::SLOT_CONTROL, 0x03C0);
    c.w1c16(p + pcie::SLOT_STATUS, 0x011F);
    // Root control, Root Capabilities (CRS Software Visibility) and a power
    // management capability after it.
    c.mask16(p + 0x1C, 0x001F);
    c.set16(p + 0x1E, 1);
    if spec.dpc {
        // DPC extended capability, version 1, the last in the list;
        // Trigger Status and Trigger Reason are RW1C.
        c.set32(DPC_CAP, 0x001D | 1 << 16);
        c.w1c16(DPC_STATUS, 0x0007);
    }
    c.add_cap(0x80, 0x01, 8);
    c.set16(0x82, 0x0003);
    c
}

impl Topology {
    pub(crate) fn add(
        &mut self,
        parent: Option<usize>,
        device: u8,
        cfg: ConfigSpace,
        kind: Kind,
    ) -> usize {
        self.nodes.push(Node {
            parent,
            device,
            function: 0,
            cfg,
            kind,
            present: true,
            glitch_id: false,
            ignore_writes: false,
        });
        self.nodes.len() - 1
    }

    /// The next free device number behind `parent`.
    pub(crate) fn next_device(&self, parent: Option<usize>) -> u8 {
        let used = self
            .nodes
            .iter()
            .filter(|n| n.parent == parent && n.present)
            .map(|n| n.device as u32 + 1)
            .max()
            .unwrap_or(0);
        u8::try_from(used)
            .ok()
            .filter(|&d| d < 32)
            .expect("bus full")
    }

    pub(crate) fn port(&self, node: usize) -> &Port {
        match &self.nodes[node].kind {
            Kind::RootPort(p) => p,
            _ => panic!("node {node} is not a root port"),
        }
    }

    pub(crate) fn port_mut(&mut self, node: usize) -> &mut Port {
        match &mut self.nodes[node].kind {
            Kind::RootPort(p) => p,
            _ => panic!("node {node} is not a root port"),
        }
    }

    fn is_bridge(&self, node: usize) -> bool {
        matches!(self.nodes[node].kind, Kind::RootPort(_) | Kind::PciBridge)
    }

    /// Whether the slot's power controller is on (Slot Control PCC clear).
    pub(crate) fn slot_powered(&self, port: usize) -> bool {
        let ctl = self.nodes[port]
            .cfg
            .get16(PORT_PCIE_CAP + pcie::SLOT_CONTROL);
        ctl & slot::CTL_POWER_OFF == 0
    }

    /// Whether the link below `port` is up: a present, powered device
    /// whose link finished training.
    pub(crate) fn link_up(&self, port: usize) -> bool {
        let p = self.port(port);
        !p.link_held_down
            && !p.faulted
            && !p.contained
            && self.slot_powered(port)
            && p.child.is_some_and(|c| self.nodes[c].present)
            && p.link_at.is_some_and(|t| self.now >= t)
    }

    /// Whether the function in `port`'s slot still answers configuration
    /// requests with Retry Status.
    pub(crate) fn retrying(&self, port: usize) -> bool {
        self.port(port).ready_at.is_some_and(|t| self.now < t)
    }

    /// Whether the root port turns Retry Status into vendor ID 0x0001.
    pub(crate) fn crs_visible(&self, port: usize) -> bool {
        self.nodes[port].cfg.get16(PORT_PCIE_CAP + 0x1C) & ROOT_CRS_VISIBLE != 0
    }

    /// Power reached the slot's card (power-on, or an insertion into a
    /// powered slot): its link trains from now.
    pub(crate) fn start_link(&mut self, port: usize) {
        let now = self.now;
        let p = self.port_mut(port);
        p.link_at = if p.spec.link_never_up {
            None
        } else {
            Some(now + p.spec.link_training.as_nanos() as u64)
        };
        p.ready_at = p.link_at.map(|t| t + p.spec.crs.as_nanos() as u64);
    }

    /// Applies what the passing of time changed in the slots: Command
    /// Completed due, a link that finished training.
    pub(crate) fn advance_ports(&mut self) {
        for node in 0..self.nodes.len() {
            let Kind::RootPort(p) = &self.nodes[node].kind else {
                continue;
            };
            let due = p.command_at.is_some_and(|t| self.now >= t);
            let up_now = self.link_up(node);
            let was_up = self.nodes[node]
                .cfg
                .get16(PORT_PCIE_CAP + pcie::LINK_STATUS)
                & LINK_DLLLA
                != 0;
            if due {
                self.port_mut(node).command_at = None;
                self.set_slot_status(node, slot::COMMAND_COMPLETED);
            }
            if up_now != was_up {
                self.refresh_port(node, true);
            }
        }
    }

    /// Whether the function is reachable: present and every port above it
    /// has its link up.
    pub(crate) fn reachable(&self, node: usize) -> bool {
        let n = &self.nodes[node];
        if !n.present {
            return false;
        }
        match n.parent {
            None => true,
            Some(p) => {
                self.reachable(p)
                    && (!matches!(self.nodes[p].kind, Kind::RootPort(_)) || self.link_up(p))
            }
        }
    }

    /// The function a config access to `bus:device.function` reaches.
    pub(crate) fn route_config(&self, bus: u8, device: u8, function: u8) -> Option<usize> {
        self.route_on(None, 0, bus, device, function)
    }

    fn route_on(
        &self,
        parent: Option<usize>,
        this_bus: u8,
        bus: u8,
        device: u8,
        function: u8,
    ) -> Option<usize> {
        // Cheap tests first: `reachable` walks up the tree.
        let mut children = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.parent == parent && n.present);
        if bus == this_bus {
            return children
                .find(|(i, n)| n.device == device && n.function == function && self.reachable(*i))
                .map(|(i, _)| i);
        }
        for (i, n) in children {
            if !self.is_bridge(i) {
                continue;
            }
            let (sec, sub) = n.cfg.bus_range();
            if sec == 0 || sec <= this_bus || bus < sec || bus > sub || !self.reachable(i) {
                continue;
            }
            // A PCIe link reaches device 0 only.
            if bus == sec && matches!(n.kind, Kind::RootPort(_)) && device != 0 {
                return None;
            }
            return self.route_on(Some(i), sec, bus, device, function);
        }
        None
    }

    /// The NVMe node and BAR offset a memory access at `addr` reaches.
    pub(crate) fn route_mmio(
        &self,
        addr: u64,
        bar_len: impl Fn(usize) -> u64,
    ) -> Option<(usize, u64)> {
        self.nodes.iter().enumerate().find_map(|(i, n)| {
            let Kind::Nvme(ctrl) = n.kind else {
                return None;
            };
            if n.cfg.command() & cmd::MEMORY == 0 {
                return None;
            }
            let base = n.cfg.bar64_addr();
            let offset = addr.checked_sub(base)?;
            if offset >= bar_len(ctrl) || !self.reachable(i) || !self.forwarded(n.parent, addr) {
                return None;
            }
            Some((i, offset))
        })
    }

    /// Whether every bridge from `parent` up forwards memory at `addr`.
    fn forwarded(&self, mut parent: Option<usize>, addr: u64) -> bool {
        while let Some(p) = parent {
            let cfg = &self.nodes[p].cfg;
            let in_window = cfg
                .bridge_windows()
                .iter()
                .flatten()
                .any(|&(b, l)| (b..=l).contains(&addr));
            if cfg.command() & cmd::MEMORY == 0 || !in_window {
                return false;
            }
            parent = self.nodes[p].parent;
        }
        true
    }

    /// Whether the function may master the bus: its own BME and every bridge
    /// above it forwarding upstream (BME on bridges).
    pub(crate) fn bus_master(&self, node: usize) -> bool {
        let mut cur = Some(node);
        while let Some(n) = cur {
            if self.nodes[n].cfg.command() & cmd::BUS_MASTER == 0 {
                return false;
            }
            cur = self.nodes[n].parent;
        }
        true
    }

    /// Sets or clears Slot Status / Link Status to match the slot.
    pub(crate) fn refresh_port(&mut self, port: usize, changed: bool) {
        let present = self.port(port).child.is_some_and(|c| self.nodes[c].present);
        let up = self.link_up(port);
        let cfg = &mut self.nodes[port].cfg;
        let p = PORT_PCIE_CAP;
        let mut status = cfg.get16(p + pcie::SLOT_STATUS);
        let was_present = status & slot::PRESENCE_DETECT_STATE != 0;
        status &= !slot::PRESENCE_DETECT_STATE;
        if present {
            status |= slot::PRESENCE_DETECT_STATE;
        }
        if present != was_present && changed {
            status |= slot::PRESENCE_DETECT_CHANGED;
        }
        let mut link = cfg.get16(p + pcie::LINK_STATUS);
        let was_up = link & LINK_DLLLA != 0;
        link &= !LINK_DLLLA;
        if up {
            link |= LINK_DLLLA;
        }
        if up != was_up && changed {
            status |= slot::DLL_STATE_CHANGED;
        }
        cfg.set16(p + pcie::SLOT_STATUS, status);
        cfg.set16(p + pcie::LINK_STATUS, link);
    }

    /// A slot with a power controller at build: a card is powered (power
    /// indicator on) unless the spec leaves it dark; an empty slot is off.
    pub(crate) fn power_at_build(&mut self, port: usize, spec: &crate::SlotSpec) {
        if !spec.power_controller {
            return;
        }
        let populated = self.port(port).child.is_some();
        let on = populated && !spec.unpowered;
        let at = PORT_PCIE_CAP + pcie::SLOT_CONTROL;
        let ctl = self.nodes[port].cfg.get16(at) & !(slot::CTL_POWER_OFF | slot::CTL_PIC_MASK);
        let ctl = if on {
            ctl | 1 << 8
        } else {
            self.port_mut(port).link_at = None;
            ctl | slot::CTL_POWER_OFF | slot::CTL_PIC_OFF
        };
        self.nodes[port].cfg.set16(at, ctl);
    }

    /// Clears Slot Control power-off and turns the power indicator on.
    pub(crate) fn power_slot_on(&mut self, port: usize) {
        let at = PORT_PCIE_CAP + pcie::SLOT_CONTROL;
        let cfg = &mut self.nodes[port].cfg;
        let ctl = cfg.get16(at);
        if ctl & slot::CTL_POWER_OFF != 0 {
            cfg.set16(
                at,
                (ctl & !(slot::CTL_POWER_OFF | slot::CTL_PIC_MASK)) | 1 << 8,
            );
        }
    }

    pub(crate) fn set_slot_status(&mut self, port: usize, bits: u16) {
        let at = PORT_PCIE_CAP + pcie::SLOT_STATUS;
        let cfg = &mut self.nodes[port].cfg;
        let v = cfg.get16(at) | bits;
        cfg.set16(at, v);
    }

    /// A dword config write; returns what a Slot Control change asks for.
    pub(crate) fn config_write(&mut self, node: usize, offset: usize, value: u32) -> SlotAction {
        let ctl_at = PORT_PCIE_CAP + pcie::SLOT_CONTROL;
        let is_port = matches!(self.nodes[node].kind, Kind::RootPort(_));
        let old_ctl = self.nodes[node].cfg.get16(ctl_at);
        self.record_function_write(node, offset, value);
        self.nodes[node].cfg.write32(offset, value);
        if is_port && offset == DPC_STATUS && self.port(node).contained {
            if self.nodes[node].cfg.get16(DPC_STATUS) & 1 == 0 {
                // Containment released: the link trains again.
                self.port_mut(node).contained = false;
                self.start_link(node);
                self.refresh_port(node, true);
            }
            return SlotAction::None;
        }
        if !is_port || offset != ctl_at {
            return SlotAction::None;
        }
        let new_ctl = self.nodes[node].cfg.get16(ctl_at);
        let spec = self.port(node).spec.clone();
        if new_ctl != old_ctl && self.port(node).hot_plug && !spec.no_command_completed {
            if spec.command_latency.is_zero() {
                self.set_slot_status(node, slot::COMMAND_COMPLETED);
            } else {
                let at = self.now + spec.command_latency.as_nanos() as u64;
                self.port_mut(node).command_at = Some(at);
            }
        }
        if new_ctl & slot::CTL_POWER_OFF != 0 && old_ctl & slot::CTL_POWER_OFF == 0 {
            // Power off clears a power fault; power on trains the link anew.
            let p = self.port_mut(node);
            p.faulted = false;
            p.link_at = None;
        } else if new_ctl & slot::CTL_POWER_OFF == 0 && old_ctl & slot::CTL_POWER_OFF != 0 {
            self.start_link(node);
        }
        let Some(child) = self.port(node).child.filter(|&c| self.nodes[c].present) else {
            return SlotAction::None;
        };
        let off_now = new_ctl & slot::CTL_POWER_OFF != 0;
        let off_before = old_ctl & slot::CTL_POWER_OFF != 0;
        let pic_off = |c: u16| c & slot::CTL_PIC_MASK == slot::CTL_PIC_OFF;
        // QEMU's rule (pcie_cap_slot_write_config): power and indicator both
        // switched off unplugs the device.
        let deletes = !self.port(node).spec.keeps_card;
        if deletes && off_now && pic_off(new_ctl) && (!off_before || !pic_off(old_ctl)) {
            SlotAction::Remove(child)
        } else if off_now && !off_before {
            SlotAction::PowerOff(child)
        } else if !off_now && off_before {
            SlotAction::PowerOn(child)
        } else {
            SlotAction::None
        }
    }

    /// Firmware-style bring-up: bus numbers depth-first, a window per bridge,
    /// BARs placed inside. `bars` gives each NVMe node's (size, assign?).
    pub(crate) fn firmware_assign(&mut self, bar: impl Fn(usize) -> (u64, bool)) {
        let mut next_mmio = crate::MMIO_APERTURE.0;
        let bridges: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].parent.is_none() && self.is_bridge(i))
            .collect();
        for (next_bus, b) in (1u8..).zip(bridges) {
            let window = self
                .nodes
                .iter()
                .filter(|n| n.parent == Some(b))
                .filter_map(|n| match n.kind {
                    Kind::Nvme(c) => Some(bar(c)),
                    _ => None,
                })
                .filter(|&(size, assign)| assign && size <= 1 << 30)
                .map(|(size, _)| size)
                .sum::<u64>()
                .max(2 << 20)
                .next_power_of_two();
            next_mmio = next_mmio.next_multiple_of(window);
            let cfg = &mut self.nodes[b].cfg;
            cfg.set8(off::PRIMARY_BUS, 0);
            cfg.set8(off::SECONDARY_BUS, next_bus);
            cfg.set8(off::SUBORDINATE_BUS, next_bus);
            cfg.set_mem_window(next_mmio, window);
            cfg.set16(off::COMMAND, cmd::MEMORY | cmd::BUS_MASTER);
            let mut at = next_mmio;
            for i in 0..self.nodes.len() {
                if self.nodes[i].parent != Some(b) {
                    continue;
                }
                if let Kind::Nvme(c) = self.nodes[i].kind {
                    let (size, assign) = bar(c);
                    if assign && at + size <= next_mmio + window {
                        at = at.next_multiple_of(size);
                        assign_bar(&mut self.nodes[i].cfg, at);
                        at += size;
                    }
                }
            }
            next_mmio += window;
        }
        for i in 0..self.nodes.len() {
            if let (None, Kind::Nvme(c)) = (self.nodes[i].parent, &self.nodes[i].kind) {
                let (size, assign) = bar(*c);
                if assign && size <= 1 << 30 {
                    next_mmio = next_mmio.next_multiple_of(size);
                    assign_bar(&mut self.nodes[i].cfg, next_mmio);
                    next_mmio += size;
                }
            }
        }
    }
}

fn assign_bar(cfg: &mut ConfigSpace, addr: u64) {
    cfg.write32(off::BAR0, addr as u32);
    cfg.write32(off::BAR0 + 4, (addr >> 32) as u32);
    cfg.set16(
        off::COMMAND,
        cmd::MEMORY | cmd::BUS_MASTER | cmd::INTX_DISABLE,
    );
}
