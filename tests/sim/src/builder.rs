//! Building a simulated machine: topology, firmware configuration, options.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::counters::Stats;
use crate::memory::{Arena, Owner, DEFAULT_ARENA_SIZE};
use crate::pci::{self, Kind, Port, Topology};
use crate::sim::Sim;
use crate::spec::ControllerSpec;
use crate::state::State;
use crate::{BridgeId, Location, PortId, RemovedReads};

/// Builds a [`Sim`]. Ports, bridges and controllers are numbered in the
/// order they are added; a controller may name a port added later.
pub struct SimBuilder {
    ports: Vec<crate::SlotSpec>,
    bridges: usize,
    ctrls: Vec<(Location, ControllerSpec)>,
    arena: usize,
    step: Duration,
    removed_reads: RemovedReads,
    firmware: bool,
    host_bridge: bool,
    non_coherent: bool,
}

impl SimBuilder {
    /// Defaults: no ports, firmware-configured, 64 MiB arena, 1 µs clock step.
    pub(crate) fn new() -> SimBuilder {
        SimBuilder {
            ports: Vec::new(),
            bridges: 0,
            ctrls: Vec::new(),
            arena: DEFAULT_ARENA_SIZE,
            step: Duration::from_micros(1),
            removed_reads: RemovedReads::Zero,
            firmware: true,
            host_bridge: true,
            non_coherent: false,
        }
    }

    /// Adds a PCIe root port; `hot_plug` sets Slot Capabilities HPC.
    pub fn root_port(mut self, hot_plug: bool) -> Self {
        self.ports.push(crate::SlotSpec {
            hot_plug,
            ..crate::SlotSpec::default()
        });
        self
    }
    /// Adds a PCIe root port whose slot models `spec` (a power controller,
    /// latencies, an MRL sensor).
    pub fn slot(mut self, spec: crate::SlotSpec) -> Self {
        self.ports.push(spec);
        self
    }
    /// Adds a plain PCI-PCI bridge on bus 0.
    pub fn pci_bridge(mut self) -> Self {
        self.bridges += 1;
        self
    }
    /// Plugs a controller into a root port's slot.
    pub fn controller_on_port(self, port: PortId, spec: ControllerSpec) -> Self {
        self.controller_at(Location::Port(port), spec)
    }
    /// Adds a controller directly on bus 0.
    pub fn controller_on_bus0(self, spec: ControllerSpec) -> Self {
        self.controller_at(Location::Bus0, spec)
    }
    /// Adds a controller behind a PCI-PCI bridge.
    pub fn controller_on_bridge(self, bridge: BridgeId, spec: ControllerSpec) -> Self {
        self.controller_at(Location::Bridge(bridge), spec)
    }
    /// Adds a controller at `loc`.
    pub fn controller_at(mut self, loc: Location, spec: ControllerSpec) -> Self {
        self.ctrls.push((loc, spec));
        self
    }
    /// DMA arena size in bytes (default 64 MiB).
    pub fn arena_size(mut self, bytes: usize) -> Self {
        self.arena = bytes;
        self
    }
    /// How far each `Platform::now()` call advances the clock (default 1 µs).
    pub fn clock_step(mut self, step: Duration) -> Self {
        self.step = step;
        self
    }
    /// What reads of a removed device's BAR return (default zero, as QEMU).
    pub fn removed_reads(mut self, mode: RemovedReads) -> Self {
        self.removed_reads = mode;
        self
    }
    /// Whether firmware numbered the buses, opened bridge windows and
    /// assigned BARs (default yes, as SeaBIOS). Without it every bridge has
    /// bus numbers 0 and closed windows, and the driver assigns everything.
    pub fn firmware_configured(mut self, on: bool) -> Self {
        self.firmware = on;
        self
    }
    /// Whether bus 0 device 0 holds a host bridge (default yes). Without it
    /// the slot is free for a function added with [`Sim::add_function`].
    pub fn host_bridge(mut self, on: bool) -> Self {
        self.host_bridge = on;
        self
    }

    /// Non-coherent DMA (default off): the devices see only what the driver
    /// flushed (`Platform::dma_flush`), and the driver sees what they wrote
    /// only after invalidating it (`Platform::dma_invalidate`).
    pub fn non_coherent_dma(mut self, on: bool) -> Self {
        self.non_coherent = on;
        self
    }

    /// Builds the machine.
    pub fn build(self) -> Sim {
        let mut st = State {
            mem: Arena::new(self.arena),
            now: 0,
            step: self.step.as_nanos() as u64,
            pci: Topology::default(),
            ctrls: Vec::new(),
            ports: Vec::new(),
            bridges: Vec::new(),
            stats: Stats::default(),
            faults: BTreeMap::new(),
            accesses: 0,
            removed_reads: self.removed_reads,
            caller_owned: Vec::new(),
            expect: Default::default(),
        };
        if self.non_coherent {
            st.mem.make_non_coherent();
        }
        if self.host_bridge {
            st.pci
                .add(None, 0, pci::host_bridge_config(), Kind::HostBridge);
        }
        for (i, spec) in self.ports.iter().enumerate() {
            let dev = st.pci.next_device(None);
            let port = Port {
                hot_plug: spec.hot_plug,
                spec: spec.clone(),
                child: None,
                // Cards present at build are up (or dark, below).
                link_at: Some(0),
                // Firmware time: a card there finished its initialisation,
                // unless the spec says it is still booting.
                ready_at: spec.booting.then_some(spec.crs.as_nanos() as u64),
                command_at: None,
                faulted: false,
                contained: false,
                link_held_down: false,
            };
            let node = st.pci.add(
                None,
                dev,
                pci::root_port_config(i as u16 + 1, spec),
                Kind::RootPort(port),
            );
            st.ports.push(node);
        }
        for _ in 0..self.bridges {
            let dev = st.pci.next_device(None);
            let node = st
                .pci
                .add(None, dev, pci::pci_bridge_config(), Kind::PciBridge);
            st.bridges.push(node);
        }
        for (loc, spec) in self.ctrls {
            st.add_controller(loc, spec);
        }
        if self.firmware {
            let bars: Vec<(u64, bool)> = st
                .ctrls
                .iter()
                .map(|s| {
                    let spec = &s.dev.spec;
                    (spec.bar_len(), spec.bar_assigned || spec.firmware_enabled)
                })
                .collect();
            st.pci.firmware_assign(|c| bars[c]);
        }
        for (i, &p) in st.ports.clone().iter().enumerate() {
            st.pci.power_at_build(p, &self.ports[i]);
            st.pci.refresh_port(p, false);
        }
        for c in 0..st.ctrls.len() {
            if self.firmware && st.ctrls[c].dev.spec.firmware_enabled {
                let asq = st.mem.alloc(4096, 4096, Owner::Firmware).expect("arena");
                let acq = st.mem.alloc(4096, 4096, Owner::Firmware).expect("arena");
                st.ctrls[c]
                    .dev
                    .firmware_enable(asq.phys().as_u64(), acq.phys().as_u64());
            }
        }
        Sim::from_state(Arc::new(Mutex::new(st)))
    }
}
