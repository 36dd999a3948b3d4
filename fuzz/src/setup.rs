//! Building the machine, the driver and the script from the fuzz input:
//! [`HEADER`](crate::HEADER) bytes of configuration, the operations, then
//! the device's lies.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use bare_nvme::{ControllerConfig, Driver, DriverConfig, PhysAddr};
use bare_nvme_sim::{ControllerSpec, CtrlId, Hold, NamespaceSpec, PortId, Sim};

use crate::device::{Chaos, FuzzConfig, FuzzPlatform, Lie, Shared};
use crate::input::{rule, Input};
use crate::ledger::Ledger;
use crate::rig::Rig;
use crate::{FuzzDriver, EVENT_BYTES, MAX_TRANSFER, OP_BYTES};

/// Delays of a slow disable or shutdown: the last one outlasts the
/// driver's ready timeout, so the device cannot be proven stopped in time.
const DELAYS_MS: [u64; 4] = [0, 2, 30, 400];
/// Most blocks of a namespace beyond its base size (geometry byte).
const SIZE_STEP: u64 = 61;
/// Virtual time each platform clock read takes: coarse, so that the
/// driver's waits (tens of milliseconds) take few iterations.
const CLOCK_STEP_US: u64 = 1_000;
/// DMA arena of the simulated machine: rings, PRP lists, a few transfers
/// and what a quarantine keeps.
const ARENA_BYTES: usize = 1 << 20;

/// The configuration bytes at the start of the input.
struct Header {
    flags: u8,
    mqes: u8,
    timeout: u8,
    mdts: u8,
    queues: u8,
    geometry: u8,
    shape: u8,
    ops: u8,
    rule: (u8, u8),
}

impl Header {
    fn read(input: &mut Input<'_>) -> Self {
        Self {
            flags: input.u8(),
            mqes: input.u8(),
            timeout: input.u8(),
            mdts: input.u8(),
            queues: input.u8(),
            geometry: input.u8(),
            shape: input.u8(),
            ops: input.u8() % 48,
            rule: (input.u8(), input.u8()),
        }
    }
}

/// Everything one input runs on.
pub(crate) struct Setup {
    pub(crate) rig: Rig,
    pub(crate) driver: FuzzDriver,
    pub(crate) ledger: Ledger,
    pub(crate) chaos: Shared,
    pub(crate) script: Vec<[u8; OP_BYTES]>,
}

/// Builds the machine, the lying device and the driver `data` describes.
pub(crate) fn build(data: &[u8]) -> Setup {
    let mut input = Input { data };
    let header = Header::read(&mut input);
    let spec = controller_spec(&header);
    let (sim, ctrls, ports) = machine(&header, &spec);
    let script: Vec<[u8; OP_BYTES]> = (0..header.ops)
        .map(|_| [input.u8(), input.u8(), input.u8(), input.u8()])
        .collect();
    let chaos = Rc::new(RefCell::new(Chaos {
        lies: lies(&mut input),
        next: 0,
        calls: 0,
        live: Vec::new(),
        sim: sim.clone(),
        quiet: false,
        read_lied: false,
        scribbled: false,
    }));
    let platform = FuzzPlatform {
        inner: sim.platform(),
        chaos: chaos.clone(),
    };
    let access = FuzzConfig {
        inner: sim.config_access(),
        chaos: chaos.clone(),
    };
    let driver: FuzzDriver = Driver::new(platform.clone(), access, driver_config(&header));
    let ledger = Ledger::new(&sim);
    let rig = Rig {
        sim,
        platform,
        ports,
        ctrls,
        spec: spec.serial("fuzz-h"),
        down: Vec::new(),
        reset_behind: false,
    };
    Setup {
        rig,
        driver,
        ledger,
        chaos,
        script,
    }
}

/// The controller the header describes: capabilities, timing, namespaces.
fn controller_spec(header: &Header) -> ControllerSpec {
    let (flags, shape, geometry) = (header.flags, header.shape, header.geometry);
    let block_size = if geometry & 1 == 0 { 512 } else { 4096 };
    let base_blocks = 64 + u64::from(geometry >> 3) * SIZE_STEP;
    let mut spec = ControllerSpec::default()
        .serial("fuzz")
        .mqes(if header.mqes == 0 {
            2047
        } else {
            u16::from(header.mqes) - 1
        })
        .timeout(header.timeout)
        .mdts(header.mdts)
        .max_ioqpairs(u16::from(header.queues >> 4).max(1))
        .dstrd(shape & 3)
        .firmware_enabled(flags & 1 != 0)
        .shadow_doorbells(flags & 2 != 0)
        .volatile_cache(flags & 4 != 0)
        .hold(if flags & 8 != 0 { Hold::Io } else { Hold::None })
        .shutdown_delay(Duration::from_millis(DELAYS_MS[usize::from(shape >> 6)]));
    if shape >> 4 & 3 != 0 {
        spec = spec.disable_delay(Duration::from_millis(
            DELAYS_MS[usize::from(shape >> 4 & 3)],
        ));
    }
    for n in 0..1 + (geometry >> 1) % 3 {
        spec = spec.namespace(NamespaceSpec::new(
            base_blocks + u64::from(n) * 32,
            block_size,
        ));
    }
    spec
}

/// The simulated machine: the controller on bus 0, or behind one or two
/// hot-plug root ports with a second controller. Returns it with every
/// controller plugged in (and its port) and the number of ports.
fn machine(header: &Header, spec: &ControllerSpec) -> (Sim, Vec<(CtrlId, Option<PortId>)>, usize) {
    let (flags, shape) = (header.flags, header.shape);
    let on_bus0 = flags & 16 != 0;
    let two_ports = !on_bus0 && shape & 4 != 0;
    let second = two_ports && shape & 8 != 0;
    let mut builder = Sim::builder()
        .clock_step(Duration::from_micros(CLOCK_STEP_US))
        .arena_size(ARENA_BYTES);
    let mut ctrls = vec![(CtrlId(0), None)];
    if on_bus0 {
        builder = builder.controller_on_bus0(spec.clone());
    } else {
        builder = builder
            .root_port(true)
            .controller_on_port(PortId(0), spec.clone());
        ctrls[0].1 = Some(PortId(0));
        if two_ports {
            builder = builder.root_port(true);
        }
        if second {
            builder = builder.controller_on_port(PortId(1), spec.clone().serial("fuzz-b"));
            ctrls.push((CtrlId(1), Some(PortId(1))));
        }
    }
    let sim = builder.build();
    // The run does the end check itself: which lies excuse what only the
    // harness knows.
    sim.unchecked();
    if let Some(rule) = rule(header.rule.0, header.rule.1) {
        sim.misbehave(CtrlId(0), rule);
    }
    let ports = if on_bus0 {
        0
    } else {
        1 + usize::from(two_ports)
    };
    (sim, ctrls, ports)
}

/// The device's lies: the rest of the input, [`EVENT_BYTES`] each.
fn lies(input: &mut Input<'_>) -> Vec<Lie> {
    let mut lies = Vec::new();
    let mut at = 0u64;
    while input.data.len() >= EVENT_BYTES {
        at += u64::from(input.u16()) + 1;
        lies.push(Lie {
            at,
            kind: input.u8(),
            a: input.u32(),
            b: input.u32(),
        });
    }
    lies
}

/// The driver's configuration: short timeouts and polls so that the
/// virtual time an input takes stays small.
fn driver_config(header: &Header) -> DriverConfig {
    let (flags, queues) = (header.flags, header.queues);
    DriverConfig::default()
        .controller(
            ControllerConfig::default()
                .io_queues(u16::from(queues & 7).max(1))
                .queue_depth(2 + u16::from(queues >> 3 & 1) * 30)
                .max_transfer(MAX_TRANSFER as u32)
                .admin_timeout(Duration::from_millis(20))
                .io_timeout(Duration::from_millis(50))
                .ready_timeout_limit(Duration::from_millis(100))
                .shutdown_timeout(Duration::from_millis(20))
                .shadow_doorbells(flags & 32 != 0),
        )
        .slot_poll_interval(Duration::from_millis(1))
        .bus_rescan_interval(Some(Duration::from_millis(5)))
        .root_window(Some((PhysAddr::new(0xC000_0000), 0x3000_0000)))
}
