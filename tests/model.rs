//! A model-based test of the driver's lifecycle: random sequences of API
//! calls (split-phase and blocking I/O, polls, ticks, detach, scan) and
//! device events (removal, glitch, fatal status, hang, memory decoding off,
//! config writes ignored, slot bounces, link flaps, re-insertion, held
//! completions, slow disable and shutdown) run against the simulated
//! machine, each outcome checked against a small reference model of what
//! the driver may report:
//!
//! - every command is delivered exactly once (a ledger of tags), with a
//!   result the events so far allow: an error only after a device fault,
//!   a detach or a held completion; `Ok` never for a command submitted after
//!   its device vanished; the data a read returns equals the last data
//!   written there by a write that completed `Ok` (unless a write to that
//!   block is in an unknown state); a buffer withheld only in quarantine,
//! - a submission to a serving controller is accepted unless its queue is
//!   full,
//! - each controller reports `Attached` once, `Ready` at most once (and
//!   whenever it served), at most one terminal event and at most one
//!   `Quarantined`, after the terminal one,
//! - once every device behaves again, each present device is served (after
//!   a reset or a re-attach) and reads back what was written,
//! - at the end the simulation's own check runs: no wild DMA, no memory
//!   handed back while the device could write it, no protocol error, no
//!   region leaked unless the driver reported a quarantine.
//!
//! The runs are deterministic (a fixed seed). `MODEL_CASES=N cargo test
//! --test model` runs N cases instead of the default; `MODEL_SEED=S` picks
//! another seed (any u64), to explore further locally.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bare_nvme::QueueId;
use bare_nvme::{
    Completion, ControllerConfig, ControllerId, Driver, DriverConfig, Error, Event, IoOp, Platform,
    State,
};
use bare_nvme_sim::{ControllerSpec, CtrlId, Hold, Location, NamespaceSpec, PortId, Sim};
use bare_nvme_sim::{SimConfig, SimPlatform};
use proptest::prelude::*;
use proptest::test_runner::{Config as PropConfig, RngAlgorithm, TestRng, TestRunner};

type Drv = Driver<SimPlatform, SimConfig>;

/// Cases per run by default: keeps `cargo test --test model` short in CI.
const DEFAULT_CASES: u32 = 96;
/// The fixed seed of the default run.
const DEFAULT_SEED: u64 = 0x6e76_6d65_6d6f_6465;

const BLOCK: usize = 512;
const NS_BLOCKS: u64 = 256;
/// LBAs the scenario touches: few, so that commands overlap often.
const LBAS: u64 = 48;
const IO_TIMEOUT: Duration = Duration::from_millis(50);
/// Virtual time each clock read takes: deadlines pass in few loop rounds.
const CLOCK_STEP: Duration = Duration::from_micros(10);

// ---- the scenario ----

/// How one simulated controller behaves.
#[derive(Clone, Copy, Debug)]
struct Knobs {
    /// MQES + 1 (the driver clamps its queue depth to it).
    depth: u16,
    /// 0: disables at once, 1: within CAP.TO, 2: slower than CAP.TO.
    slow_disable: u8,
    /// 0: at once, 1: within the shutdown deadline, 2: past it.
    slow_shutdown: u8,
    /// Becomes ready after 20 ms instead of at once.
    slow_ready: bool,
    /// Offers Doorbell Buffer Config.
    shadow: bool,
}

/// A controller quick at every step, with 4-entry queues: the regression
/// tests' default.
const QUICK: Knobs = Knobs {
    depth: 4,
    slow_disable: 0,
    slow_shutdown: 0,
    slow_ready: false,
    shadow: false,
};

impl Knobs {
    fn spec(&self, serial: &str) -> ControllerSpec {
        let mut spec = ControllerSpec::default()
            .serial(serial)
            .namespace(NamespaceSpec::new(NS_BLOCKS, BLOCK as u32))
            .mqes(self.depth - 1)
            // CAP.TO = 1: 500 ms to enable or disable.
            .timeout(1)
            .shadow_doorbells(self.shadow);
        match self.slow_disable {
            0 => {}
            1 => spec = spec.disable_delay(Duration::from_millis(30)),
            _ => spec = spec.disable_delay(Duration::from_secs(2)),
        }
        match self.slow_shutdown {
            0 => {}
            1 => spec = spec.shutdown_delay(Duration::from_millis(30)),
            _ => spec = spec.shutdown_delay(Duration::from_millis(400)),
        }
        if self.slow_ready {
            spec = spec.ready_delay(Duration::from_millis(20));
        }
        spec
    }
}

#[derive(Clone, Copy, Debug)]
enum Blocking {
    Read,
    Write,
    Flush,
}

#[derive(Clone, Copy, Debug)]
enum Device {
    Remove,
    Glitch,
    Cfs,
    Hang,
    Unhang,
    MemoryDecodingOff,
    IgnoreConfigWrites(bool),
    BouncePresence,
    BounceLink,
    LinkFlap,
    /// A controller into the device's slot if it is empty (the same serial
    /// again when `same`, so the driver reports it returned).
    Insert {
        same: bool,
    },
    AttentionButton,
    Hold(bool),
}

#[derive(Clone, Copy, Debug)]
enum Step {
    /// A split-phase read or write of `blocks` at `lba` on queue `q` of the
    /// `c`-th attached controller; the buffer 512-byte aligned when
    /// `unaligned` (a first PRP entry with an offset), else page aligned.
    Submit {
        c: u8,
        q: u8,
        write: bool,
        lba: u8,
        blocks: u8,
        unaligned: bool,
    },
    Blocking {
        c: u8,
        op: Blocking,
        lba: u8,
        blocks: u8,
    },
    Poll {
        c: u8,
        q: u8,
    },
    /// `ring_doorbells` of the `c`-th controller.
    Ring {
        c: u8,
    },
    /// Advance the clock by `ms`, let the device do background work, tick.
    Tick {
        ms: u16,
    },
    Detach {
        c: u8,
    },
    Scan,
    /// Event `ev` on the `d`-th simulated controller.
    Device {
        d: u8,
        ev: Device,
    },
    /// Complete up to `n` held commands.
    Release {
        n: u8,
    },
}

#[derive(Clone, Debug)]
struct Scenario {
    first: Knobs,
    second: Option<Knobs>,
    bus0: Option<Knobs>,
    depth: u16,
    steps: Vec<Step>,
}

fn knobs() -> impl Strategy<Value = Knobs> {
    (
        prop_oneof![Just(4u16), Just(8), Just(64)],
        prop_oneof![6 => Just(0u8), 2 => Just(1), 1 => Just(2)],
        prop_oneof![6 => Just(0u8), 2 => Just(1), 1 => Just(2)],
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(depth, slow_disable, slow_shutdown, slow_ready, shadow)| Knobs {
                depth,
                slow_disable,
                slow_shutdown,
                slow_ready,
                shadow,
            },
        )
}

fn device_event() -> impl Strategy<Value = Device> {
    prop_oneof![
        3 => Just(Device::Remove),
        3 => Just(Device::Glitch),
        2 => Just(Device::Cfs),
        2 => Just(Device::Hang),
        2 => Just(Device::Unhang),
        1 => Just(Device::MemoryDecodingOff),
        2 => any::<bool>().prop_map(Device::IgnoreConfigWrites),
        2 => Just(Device::BouncePresence),
        2 => Just(Device::BounceLink),
        2 => Just(Device::LinkFlap),
        3 => any::<bool>().prop_map(|same| Device::Insert { same }),
        1 => Just(Device::AttentionButton),
        3 => any::<bool>().prop_map(Device::Hold),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        10 => (any::<u8>(), 0..2u8, any::<bool>(), 0..LBAS as u8, 1..=24u8, any::<bool>())
            .prop_map(|(c, q, write, lba, blocks, unaligned)| Step::Submit {
                c, q, write, lba, blocks, unaligned
            }),
        3 => (
            any::<u8>(),
            prop_oneof![Just(Blocking::Read), Just(Blocking::Write), Just(Blocking::Flush)],
            0..LBAS as u8,
            1..=16u8
        )
            .prop_map(|(c, op, lba, blocks)| Step::Blocking { c, op, lba, blocks }),
        6 => (any::<u8>(), 0..2u8).prop_map(|(c, q)| Step::Poll { c, q }),
        2 => any::<u8>().prop_map(|c| Step::Ring { c }),
        // Mostly short ticks; some past the I/O and admin deadlines.
        5 => prop_oneof![4 => 1..20u16, 1 => 60..1500u16].prop_map(|ms| Step::Tick { ms }),
        1 => any::<u8>().prop_map(|c| Step::Detach { c }),
        1 => Just(Step::Scan),
        6 => (any::<u8>(), device_event()).prop_map(|(d, ev)| Step::Device { d, ev }),
        2 => (1..8u8).prop_map(|n| Step::Release { n }),
    ]
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        knobs(),
        proptest::option::of(knobs()),
        proptest::option::weighted(0.3, knobs()),
        prop_oneof![Just(2u16), Just(4), Just(32)],
        proptest::collection::vec(step(), 1..40),
    )
        .prop_map(|(first, second, bus0, depth, steps)| Scenario {
            first,
            second,
            bus0,
            depth,
            steps,
        })
}

// ---- the reference model ----

/// What the model knows about one block of a device.
#[derive(Clone, Copy, Debug, Default)]
struct BlockModel {
    /// The version last written by a write that completed `Ok` (0: never
    /// written, zeroes); `None` when a write to it ended in an unknown state.
    known: Option<u64>,
    /// Writes to it submitted and not yet delivered.
    in_flight: u32,
    /// Counts writes submitted to it: a read across a change cannot know.
    epoch: u64,
    /// The version of the last write submitted.
    last_writer: u64,
    /// Two writes to it were outstanding at once: the device may execute
    /// them in either order (NVMe orders no two outstanding commands), so
    /// the content is unknown until a later write alone settles it.
    contended: bool,
}

impl BlockModel {
    fn fresh() -> Self {
        Self {
            known: Some(0),
            ..Self::default()
        }
    }
}

/// One simulated controller.
struct DeviceModel {
    location: Location,
    /// Where its function answered when last looked at.
    address: Option<pci_types::PciAddress>,
    knobs: Knobs,
    serial: String,
    blocks: HashMap<u64, BlockModel>,
    /// Faults so far (removal, link flap, fatal status, hang, memory
    /// decoding off): commands may fail after one.
    faults: u32,
    /// Events that make the device lose its queues or vanish: no command
    /// submitted after one can succeed.
    lost: u32,
    /// Held-completion periods begun: commands may time out.
    holds: u32,
    held: bool,
    hung: bool,
    ignoring_config: bool,
    present: bool,
}

impl DeviceModel {
    fn block(&mut self, lba: u64) -> &mut BlockModel {
        self.blocks.entry(lba).or_insert_with(BlockModel::fresh)
    }
}

/// One controller identity the driver reported.
struct IdModel {
    dev: usize,
    /// `DeviceModel::faults` / `holds` when it attached.
    faults_base: u32,
    holds_base: u32,
    /// `DeviceModel::lost` when it attached.
    lost_base: u32,
    /// A command never rung ended with an error: its timeout reset the
    /// controller, failing the others too.
    unrung_failed: bool,
    detach_requested: bool,
    ready: bool,
    seen_serving: bool,
    ended: bool,
    quarantined: bool,
}

/// A command the driver accepted and has not delivered yet.
struct Pending {
    id: ControllerId,
    queue: u16,
    cid: u16,
    write: bool,
    lba: u64,
    blocks: u64,
    /// For a write: its version.
    version: u64,
    /// For a read: per block, the expected version and the epoch then.
    expect: Vec<(Option<u64>, u64)>,
    /// `DeviceModel::lost` at submission.
    lost_at_submit: u32,
    /// Whether its doorbell was rung (a poll of its queue or
    /// `ring_doorbells`): until then the device has not seen it, and the
    /// deadline, counted from submission, may pass without a fault.
    rung: bool,
    /// Its I/O deadline: rung only after it is as good as never rung.
    deadline: bare_nvme::Instant,
}

struct Model {
    sim: Sim,
    driver: Box<Drv>,
    devices: Vec<DeviceModel>,
    ids: BTreeMap<(u32, u8), (ControllerId, IdModel)>,
    ledger: HashMap<u64, Pending>,
    next_tag: u64,
    next_version: u64,
    quarantine_reported: bool,
    trace: Vec<String>,
    /// The simulation's violation counters last seen, to trace where they
    /// moved.
    bad: (u64, u64, u64),
}

/// `BLOCK` bytes of block `lba` at `version` (0: zeroes).
fn content(lba: u64, version: u64) -> Vec<u8> {
    if version == 0 {
        return vec![0; BLOCK];
    }
    let mut x = (version << 20) ^ lba ^ 0x9E37_79B9_7F4A_7C15;
    (0..BLOCK)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn key(id: ControllerId) -> (u32, u8) {
    // ControllerId's index is private: the generation alone is unique.
    (id.generation(), 0)
}

impl Model {
    fn new(s: &Scenario) -> Self {
        let mut builder = Sim::builder()
            .clock_step(CLOCK_STEP)
            .root_port(true)
            .root_port(true);
        let mut devices = Vec::new();
        let mut add = |builder: bare_nvme_sim::SimBuilder, location: Location, knobs: Knobs| {
            let serial = format!("model{}", devices.len());
            devices.push(DeviceModel {
                location,
                address: None,
                knobs,
                serial: serial.clone(),
                blocks: HashMap::new(),
                faults: 0,
                lost: 0,
                holds: 0,
                held: false,
                hung: false,
                ignoring_config: false,
                present: true,
            });
            builder.controller_at(location, knobs.spec(&serial))
        };
        builder = add(builder, Location::Port(PortId(0)), s.first);
        if let Some(k) = s.second {
            builder = add(builder, Location::Port(PortId(1)), k);
        }
        if let Some(k) = s.bus0 {
            builder = add(builder, Location::Bus0, k);
        }
        let sim = builder.build();
        for (d, m) in devices.iter_mut().enumerate() {
            m.address = sim.address(CtrlId(d));
        }
        let config = DriverConfig {
            controller: ControllerConfig {
                io_queues: 2,
                queue_depth: s.depth,
                io_timeout: IO_TIMEOUT,
                admin_timeout: Duration::from_millis(50),
                ready_timeout_limit: Duration::from_secs(1),
                shutdown_timeout: Duration::from_millis(100),
                // The controller's knob decides whether they are offered.
                shadow_doorbells: true,
                ..ControllerConfig::default()
            },
            bus_rescan_interval: Some(Duration::from_millis(50)),
            // Room for BARs of functions hot-added on bus 0.
            root_window: Some((
                bare_nvme::PhysAddr::new(bare_nvme_sim::MMIO_APERTURE.0 + (64 << 20)),
                1 << 20,
            )),
            ..DriverConfig::default()
        };
        let driver = Box::new(Drv::new(sim.platform(), sim.config_access(), config));
        Self {
            sim,
            driver,
            devices,
            ids: BTreeMap::new(),
            ledger: HashMap::new(),
            next_tag: 1,
            next_version: 1,
            quarantine_reported: false,
            trace: Vec::new(),
            bad: (0, 0, 0),
        }
    }

    fn fail(&self, what: String) -> ! {
        panic!("{what}\ntrace:\n{}", self.trace.join("\n"));
    }

    /// Whether the driver's last controller of device `d` ended `Failed`.
    fn driver_gave_up_on(&mut self, d: usize) -> bool {
        let last = self
            .ids
            .values()
            .filter(|(_, m)| m.dev == d)
            .map(|(id, _)| *id)
            .max_by_key(|id| id.generation());
        last.is_some_and(|id| {
            self.driver
                .controller(id)
                .is_ok_and(|c| c.state() == State::Failed)
        })
    }

    fn check(&self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.fail(what());
        }
    }

    fn id_model(&mut self, id: ControllerId) -> &mut IdModel {
        &mut self.ids.get_mut(&key(id)).expect("known id").1
    }

    /// The `c`-th controller the driver holds (any state).
    fn pick(&self, c: u8) -> Option<ControllerId> {
        // Only those whose Attached event was seen.
        let ids: Vec<ControllerId> = self
            .driver
            .controllers()
            .filter(|id| self.ids.contains_key(&key(*id)))
            .collect();
        (!ids.is_empty()).then(|| ids[c as usize % ids.len()])
    }

    // ---- events ----

    fn absorb(&mut self, events: &[Event]) {
        for &e in events {
            self.trace.push(format!("  event {e:?}"));
            match e {
                Event::Attached { id, address } => {
                    // The device answering there now, or the last one seen
                    // there (attached by a scan, removed before the tick).
                    let dev = (0..self.devices.len())
                        .find(|&d| self.sim.address(CtrlId(d)) == Some(address))
                        .or_else(|| {
                            (0..self.devices.len())
                                .rev()
                                .find(|&d| self.devices[d].address == Some(address))
                        });
                    let Some(dev) = dev else {
                        self.fail(format!("{id} attached at {address}: no device there"));
                    };
                    self.check(!self.ids.contains_key(&key(id)), || {
                        format!("{id} attached twice")
                    });
                    let m = IdModel {
                        dev,
                        faults_base: self.devices[dev].faults,
                        // A hold already in effect counts for this attach
                        // too, also once healing lifts it.
                        holds_base: self.devices[dev].holds - u32::from(self.devices[dev].held),
                        lost_base: self.devices[dev].lost,
                        unrung_failed: false,
                        detach_requested: false,
                        ready: false,
                        seen_serving: false,
                        ended: false,
                        quarantined: false,
                    };
                    self.ids.insert(key(id), (id, m));
                }
                Event::Health { .. }
                | Event::NamespaceAdded { .. }
                | Event::NamespaceRemoved { .. } => {
                    self.fail(format!("{e:?}: the model raises no asynchronous event"));
                }
                Event::Ready { id, serial, .. } => {
                    let known = self.ids.contains_key(&key(id));
                    self.check(known, || format!("Ready of {id} before Attached"));
                    let dev = self.id_model(id).dev;
                    let expected = self.devices[dev].serial.clone();
                    let m = self.id_model(id);
                    let (ready, ended) = (m.ready, m.ended);
                    m.ready = true;
                    self.check(!ready && !ended, || format!("{id}: Ready again or late"));
                    self.check(serial.as_str() == expected, || {
                        format!("{id}: serial {serial:?}, device has {expected}")
                    });
                }
                Event::Removed { id, .. } | Event::Failed { id, .. } => {
                    let known = self.ids.contains_key(&key(id));
                    self.check(known, || format!("end of {id} before Attached"));
                    let m = self.id_model(id);
                    let ended = m.ended;
                    m.ended = true;
                    self.check(!ended, || format!("{id}: a second terminal event"));
                }
                Event::Quarantined { id, regions, .. } => {
                    let m = self.id_model(id);
                    let (ended, quarantined) = (m.ended, m.quarantined);
                    m.quarantined = true;
                    self.check(ended && !quarantined && regions > 0, || {
                        format!("{id}: Quarantined twice, early or empty")
                    });
                    self.quarantine_reported = true;
                    self.sim.expect_quarantined();
                }
                Event::Returned { id, previous } => {
                    let ok = self.ids.get(&key(previous)).is_some_and(|p| p.1.ended)
                        && self.ids.get(&key(id)).is_some_and(|m| m.1.ready);
                    self.check(ok, || format!("{id} returned as {previous}, not ended"));
                    let same = self.ids[&key(previous)].1.dev;
                    let now = self.ids[&key(id)].1.dev;
                    self.check(
                        self.devices[same].serial == self.devices[now].serial,
                        || format!("{id} returned as {previous} with another serial"),
                    );
                }
            }
        }
    }

    fn tick(&mut self) {
        let events = self.driver.tick();
        self.absorb(&events);
    }

    /// Notes which controllers serve, and collects what finished
    /// controllers failed: an embedder collects before the entry is reused.
    fn observe(&mut self) {
        for d in 0..self.devices.len() {
            if let Some(a) = self.sim.address(CtrlId(d)) {
                self.devices[d].address = Some(a);
            }
        }
        let c = self.sim.counters();
        let bad = (c.wild_dma, c.freed_while_dma_possible, c.protocol_errors);
        if bad != self.bad {
            self.bad = bad;
            let log = self.sim.protocol_log();
            self.trace.push(format!(
                "  wild DMA, memory handed back early, protocol errors: {bad:?}: {:?}",
                log.last()
            ));
        }
        let serving: Vec<ControllerId> = self.driver.ready_controllers().collect();
        for id in serving {
            if let Some(m) = self.ids.get_mut(&key(id)) {
                m.1.seen_serving = true;
            }
        }
        let finished: Vec<ControllerId> = self
            .ids
            .values()
            .map(|(id, _)| *id)
            .filter(|&id| {
                self.driver
                    .controller(id)
                    .is_ok_and(|c| c.state().is_finished() && c.undelivered() > 0)
            })
            .collect();
        for id in finished {
            for q in 0..2 {
                self.poll(id, q);
            }
        }
    }

    // ---- commands ----

    fn submit(
        &mut self,
        id: ControllerId,
        q: u16,
        write: bool,
        lba: u64,
        blocks: u64,
        unaligned: bool,
    ) {
        let dev = self.id_model(id).dev;
        let len = blocks as usize * BLOCK;
        let align = if unaligned { BLOCK } else { 4096 };
        let platform = self.sim.platform();
        let mut buffer = if unaligned {
            // An allocation that starts 512 bytes into a page: a first PRP
            // entry with an offset.
            let pad = platform.dma_alloc(BLOCK, 4096).expect("dma");
            let b = platform.dma_alloc(len, align).expect("dma");
            platform.dma_free(pad);
            b
        } else {
            platform.dma_alloc(len, align).expect("dma")
        };
        let version = self.next_version;
        if write {
            self.next_version += 1;
            for i in 0..blocks {
                buffer.as_mut_slice()[i as usize * BLOCK..][..BLOCK]
                    .copy_from_slice(&content(lba + i, version));
            }
        }
        let tag = self.next_tag;
        self.next_tag += 1;
        let op = if write {
            IoOp::Write {
                nsid: 1,
                lba,
                blocks: blocks as u32,
            }
        } else {
            IoOp::Read {
                nsid: 1,
                lba,
                blocks: blocks as u32,
            }
        };
        let outstanding = self
            .ledger
            .values()
            .filter(|p| p.id == id && p.queue == q)
            .count();
        let c = self.driver.controller(id).expect("picked from the driver");
        let serving = c.state() == State::Ready;
        let depth = c.queue_depth() as usize;
        let queues = c.io_queue_count();
        match c.submit(QueueId::new(q), op, Some(buffer), tag) {
            Ok(token) => {
                self.trace.push(format!("  tag {tag} -> {token:?}"));
                self.check(serving, || format!("{id}: accepted while not serving"));
                let d = &mut self.devices[dev];
                let lost_at_submit = d.lost;
                let mut expect = Vec::new();
                for i in 0..blocks {
                    let b = d.block(lba + i);
                    if write {
                        b.contended |= b.in_flight > 0;
                        b.in_flight += 1;
                        b.epoch += 1;
                        b.last_writer = version;
                        b.known = None;
                    } else {
                        let known = if b.in_flight == 0 { b.known } else { None };
                        expect.push((known, b.epoch));
                    }
                }
                self.ledger.insert(
                    tag,
                    Pending {
                        id,
                        queue: q,
                        cid: token.cid,
                        write,
                        lba,
                        blocks,
                        version,
                        expect,
                        lost_at_submit,
                        rung: false,
                        deadline: self.sim.now() + IO_TIMEOUT,
                    },
                );
            }
            Err(rejected) => {
                self.trace.push(format!("  rejected: {:?}", rejected.error));
                let ok = match rejected.error {
                    Error::QueueFull { .. } => outstanding + 1 >= depth,
                    Error::UnknownQueue { .. } => q >= queues,
                    Error::NotReady | Error::DeviceRemoved | Error::ControllerFailed => !serving,
                    _ => false,
                };
                self.check(ok, || {
                    format!(
                        "{id}: submit rejected with {:?} (serving {serving}, {outstanding} \
                         outstanding on queue {q} of depth {depth})",
                        rejected.error
                    )
                });
                let buffer = rejected.buffer.expect("a rejection hands the buffer back");
                self.sim.platform().dma_free(buffer);
            }
        }
    }

    /// The doorbell of `id`'s commands (on `queue`, or all) was rung: the
    /// device sees them now, unless their deadline passed already.
    fn mark_rung(&mut self, id: ControllerId, queue: Option<u16>) {
        let now = self.sim.now();
        for p in self.ledger.values_mut() {
            if p.id == id && queue.is_none_or(|q| q == p.queue) && now <= p.deadline {
                p.rung = true;
            }
        }
    }

    /// Whether `error` may end a command of `id`; `unrung`: a split-phase
    /// command whose doorbell the caller never rang.
    fn error_allowed(&self, id: ControllerId, error: Error, unrung: bool) -> bool {
        let m = &self.ids[&key(id)].1;
        let d = &self.devices[m.dev];
        // Since it attached, or still in effect from before.
        let faulted = d.faults > m.faults_base || d.hung;
        // A command the caller never rang times out and resets the
        // controller: every command of it may then fail the same way.
        let unrung =
            unrung || m.unrung_failed || self.ledger.values().any(|p| p.id == id && !p.rung);
        let held = d.holds > m.holds_base || d.held;
        match error {
            Error::DeviceRemoved | Error::ControllerFailed => faulted,
            Error::Timeout { .. } => faulted || held || unrung,
            Error::Aborted => m.detach_requested || faulted || held || unrung,
            _ => false,
        }
    }

    fn poll(&mut self, id: ControllerId, q: u16) {
        let Ok(c) = self.driver.controller(id) else {
            let left = self.ledger.values().filter(|p| p.id == id).count();
            self.check(left == 0, || {
                format!("{id} gone with {left} commands undelivered")
            });
            return;
        };
        let mut got: Vec<Completion> = Vec::new();
        c.poll(QueueId::new(q), |done| got.push(done));
        let quarantined = c.quarantined().regions > 0;
        for done in got {
            self.deliver(id, done, quarantined);
        }
        // What is still outstanding on the queue reached the doorbell now.
        self.mark_rung(id, Some(q));
    }

    fn deliver(&mut self, id: ControllerId, done: Completion, quarantined: bool) {
        self.trace
            .push(format!("  delivered tag {} {:?}", done.tag, done.result));
        let Some(p) = self.ledger.remove(&done.tag) else {
            self.fail(format!(
                "{id}: tag {} delivered twice or never submitted",
                done.tag
            ));
        };
        self.check(
            p.id == id && p.queue == done.token.queue.index() && p.cid == done.token.cid,
            || format!("tag {} delivered by {id} {:?}", done.tag, done.token),
        );
        let dev = self.ids[&key(id)].1.dev;
        match done.result {
            Ok(()) => self.check(self.ids[&key(id)].1.lost_base == p.lost_at_submit, || {
                format!(
                    "tag {}: Ok though its device vanished before it was sent",
                    done.tag
                )
            }),
            Err(e) => self.check(self.error_allowed(id, e, !p.rung), || {
                format!(
                    "tag {}: {e:?}, which nothing that happened explains",
                    done.tag
                )
            }),
        }
        let ok = done.result.is_ok();
        if !ok && !p.rung {
            self.id_model(id).unrung_failed = true;
        }
        if p.write {
            let d = &mut self.devices[dev];
            for i in 0..p.blocks {
                let b = d.block(p.lba + i);
                b.in_flight -= 1;
                b.known = (ok && b.last_writer == p.version && b.in_flight == 0 && !b.contended)
                    .then_some(p.version);
                if b.in_flight == 0 {
                    b.contended = false;
                }
            }
        }
        match done.buffer {
            None => self.check(quarantined, || {
                format!("tag {}: no buffer, and no quarantine", done.tag)
            }),
            Some(buffer) => {
                self.sim.caller_owns(&buffer);
                if ok && !p.write {
                    self.verify(dev, p.lba, &p.expect, buffer.as_slice(), done.tag);
                }
                self.sim.platform().dma_free(buffer);
            }
        }
    }

    /// A read that succeeded returned what the model knows of each block.
    fn verify(
        &mut self,
        dev: usize,
        lba: u64,
        expect: &[(Option<u64>, u64)],
        data: &[u8],
        tag: u64,
    ) {
        for (i, &(known, epoch)) in expect.iter().enumerate() {
            let lba = lba + i as u64;
            let b = *self.devices[dev].block(lba);
            let Some(version) = known.filter(|_| b.epoch == epoch) else {
                continue;
            };
            let got = &data[i * BLOCK..][..BLOCK];
            self.check(got == content(lba, version).as_slice(), || {
                format!("tag {tag}: block {lba} read back other data than version {version}")
            });
        }
    }

    fn blocking(&mut self, id: ControllerId, op: Blocking, lba: u64, blocks: u64) {
        let dev = self.id_model(id).dev;
        let platform = self.sim.platform();
        let len = blocks as usize * BLOCK;
        let lost_before = self.devices[dev].lost;
        let lost_base = self.id_model(id).lost_base;
        let outstanding = self
            .ledger
            .values()
            .filter(|p| p.id == id && p.queue == 0)
            .count();
        let c = self.driver.controller(id).unwrap();
        let serving = c.state() == State::Ready;
        let depth = c.queue_depth() as usize;
        let version = self.next_version;
        let mut buffer = None;
        let mut expect = Vec::new();
        match op {
            Blocking::Write => {
                self.next_version += 1;
                let mut b = platform.dma_alloc(len, 4096).expect("dma");
                for i in 0..blocks {
                    b.as_mut_slice()[i as usize * BLOCK..][..BLOCK]
                        .copy_from_slice(&content(lba + i, version));
                    let m = self.devices[dev].block(lba + i);
                    m.contended |= m.in_flight > 0;
                    m.in_flight += 1;
                    m.epoch += 1;
                    m.last_writer = version;
                    m.known = None;
                }
                buffer = Some(b);
            }
            Blocking::Read => {
                for i in 0..blocks {
                    let m = *self.devices[dev].block(lba + i);
                    let known = if m.in_flight == 0 { m.known } else { None };
                    expect.push((known, m.epoch));
                }
                buffer = Some(platform.dma_alloc(len, 4096).expect("dma"));
            }
            Blocking::Flush => {}
        }
        let c = self.driver.controller(id).unwrap();
        let result = match (op, buffer.as_mut()) {
            (Blocking::Write, Some(b)) => c.write(1, lba, b),
            (Blocking::Read, Some(b)) => c.read(1, lba, b),
            _ => c.flush(1),
        };
        let quarantined = c.quarantined().regions > 0;
        self.trace.push(format!("  -> {result:?}"));
        match result {
            Ok(()) => self.check(lost_base == lost_before, || {
                "blocking call Ok though its device vanished before".to_string()
            }),
            Err(Error::Quarantined) => self.check(quarantined, || {
                "Quarantined without a quarantine".to_string()
            }),
            Err(Error::QueueFull { queue: 0 }) => self.check(outstanding + 1 >= depth, || {
                format!("blocking call: queue 0 full with {outstanding} of {depth} outstanding")
            }),
            Err(Error::NotReady) => self.check(
                !serving || self.error_allowed(id, Error::Aborted, false),
                || "NotReady from a serving controller".to_string(),
            ),
            // Not serving when called: a bring-up to finish (which may fail
            // in any of the lifecycle's ways) or a controller that ended.
            Err(
                e @ (Error::DeviceRemoved
                | Error::ControllerFailed
                | Error::Timeout { .. }
                | Error::Aborted),
            ) if !serving => self.trace.push(format!("  (not serving: {e:?} allowed)")),
            Err(e) => self.check(self.error_allowed(id, e, false), || {
                format!("blocking call: {e:?}, which nothing that happened explains")
            }),
        }
        let ok = result.is_ok();
        if let Blocking::Write = op {
            let d = &mut self.devices[dev];
            for i in 0..blocks {
                let b = d.block(lba + i);
                b.in_flight -= 1;
                b.known = (ok && b.last_writer == version && b.in_flight == 0 && !b.contended)
                    .then_some(version);
                if b.in_flight == 0 {
                    b.contended = false;
                }
            }
        }
        if let Some(b) = buffer {
            if result == Err(Error::Quarantined) {
                // The device may still write it: never freed (leaked), as
                // documented; the quarantine lets the end check allow it.
                return;
            }
            self.sim.caller_owns(&b);
            if ok && matches!(op, Blocking::Read) {
                self.verify(dev, lba, &expect, b.as_slice(), 0);
            }
            platform.dma_free(b);
        }
    }

    // ---- device events ----

    fn port_of(&self, d: usize) -> Option<PortId> {
        match self.devices[d].location {
            Location::Port(p) => Some(p),
            _ => None,
        }
    }

    fn device(&mut self, d: usize, ev: Device) {
        let ctrl = CtrlId(d);
        let present = self.devices[d].present && self.sim.is_present(ctrl);
        let port = self.port_of(d);
        if !present && !matches!(ev, Device::Insert { .. }) {
            self.trace.push("  (device absent: nothing)".into());
            return;
        }
        let fault = |m: &mut DeviceModel| m.faults += 1;
        match ev {
            Device::Remove => {
                self.sim.surprise_remove(ctrl);
                let m = &mut self.devices[d];
                fault(m);
                m.lost += 1;
                m.present = false;
            }
            Device::Glitch => self.sim.glitch(ctrl),
            Device::Cfs => {
                self.sim.set_cfs(ctrl);
                fault(&mut self.devices[d]);
            }
            Device::Hang => {
                self.sim.hang(ctrl);
                let m = &mut self.devices[d];
                fault(m);
                m.hung = true;
            }
            Device::Unhang => {
                self.sim.unhang(ctrl);
                self.devices[d].hung = false;
            }
            Device::MemoryDecodingOff => {
                self.sim.memory_decoding_off(ctrl);
                fault(&mut self.devices[d]);
            }
            Device::IgnoreConfigWrites(on) => {
                self.sim.ignore_config_writes(ctrl, on);
                self.devices[d].ignoring_config = on;
            }
            Device::BouncePresence => {
                if let Some(p) = port {
                    self.sim.bounce_presence(p);
                }
            }
            Device::BounceLink => {
                if let Some(p) = port {
                    self.sim.bounce_link(p);
                }
            }
            Device::LinkFlap => {
                if let Some(p) = port {
                    self.sim.link_flap(p);
                    let m = &mut self.devices[d];
                    fault(m);
                    m.lost += 1;
                    // The device comes back reset, released from any hang.
                }
            }
            Device::Insert { same } => {
                let occupied = self
                    .devices
                    .iter()
                    .any(|m| m.present && m.location == self.devices[d].location);
                if occupied {
                    self.trace.push("  (slot occupied: nothing)".into());
                    return;
                }
                let location = self.devices[d].location;
                let knobs = self.devices[d].knobs;
                let serial = if same {
                    self.devices[d].serial.clone()
                } else {
                    format!("model{}", self.devices.len())
                };
                let new = self.sim.hot_add_at(location, knobs.spec(&serial));
                assert_eq!(new.0, self.devices.len());
                self.devices.push(DeviceModel {
                    location,
                    address: None,
                    knobs,
                    serial,
                    blocks: HashMap::new(),
                    faults: 0,
                    lost: 0,
                    holds: 0,
                    held: false,
                    hung: false,
                    ignoring_config: false,
                    present: true,
                });
            }
            Device::AttentionButton => {
                if let Some(p) = port {
                    self.sim.press_attention_button(p);
                    // An orderly detach of whatever the driver runs there.
                    for (_, m) in self.ids.values_mut() {
                        if m.dev == d {
                            m.detach_requested = true;
                        }
                    }
                }
            }
            Device::Hold(on) => {
                self.sim.hold(ctrl, if on { Hold::Io } else { Hold::None });
                let m = &mut self.devices[d];
                if on && !m.held {
                    m.holds += 1;
                }
                m.held = on;
            }
        }
    }

    // ---- running a scenario ----

    fn run(&mut self, steps: &[Step]) {
        self.driver.scan().expect("scan");
        self.observe();
        for (n, &step) in steps.iter().enumerate() {
            self.trace.push(format!("step {n}: {step:?}"));
            self.step(step);
            self.observe();
        }
        self.heal_and_check_service();
        self.finish();
    }

    fn step(&mut self, step: Step) {
        match step {
            Step::Submit {
                c,
                q,
                write,
                lba,
                blocks,
                unaligned,
            } => {
                if let Some(id) = self.pick(c) {
                    let blocks = (blocks as u64).min(NS_BLOCKS - lba as u64);
                    self.submit(id, q as u16, write, lba as u64, blocks, unaligned);
                }
            }
            Step::Blocking { c, op, lba, blocks } => {
                if let Some(id) = self.pick(c) {
                    self.blocking(id, op, lba as u64, blocks as u64);
                }
            }
            Step::Poll { c, q } => {
                if let Some(id) = self.pick(c) {
                    self.poll(id, q as u16);
                }
            }
            Step::Tick { ms } => {
                self.sim.advance(Duration::from_millis(ms as u64));
                self.sim.process();
                self.tick();
            }
            Step::Ring { c } => {
                if let Some(id) = self.pick(c) {
                    self.driver.controller(id).unwrap().ring_doorbells();
                    self.mark_rung(id, None);
                }
            }
            Step::Detach { c } => {
                if let Some(id) = self.pick(c) {
                    self.driver
                        .begin_detach(id)
                        .expect("a controller the driver holds");
                    self.id_model(id).detach_requested = true;
                }
            }
            Step::Scan => {
                self.driver.scan().expect("scan");
            }
            Step::Device { d, ev } => {
                let d = d as usize % self.devices.len();
                self.device(d, ev);
            }
            Step::Release { n } => {
                self.sim.complete_held(n as usize);
            }
        }
    }

    /// Ticks for `span` of virtual time, 5 ms apart (the slot poll
    /// interval is 10 ms), observing.
    fn run_for(&mut self, span: Duration) {
        let end = self.sim.now() + span;
        while self.sim.now() < end {
            self.sim.advance(Duration::from_millis(5));
            self.sim.process();
            self.tick();
            self.observe();
        }
    }

    /// Collects every completion of every controller.
    fn poll_all(&mut self) {
        let ids: Vec<ControllerId> = self.ids.values().map(|(id, _)| *id).collect();
        for id in ids {
            if self.driver.controller(id).is_ok() {
                for q in 0..2 {
                    self.poll(id, q);
                }
            }
        }
    }

    /// Every device behaves again: each present one is served once the
    /// driver rescans, and serves I/O that reads back what was written.
    fn heal_and_check_service(&mut self) {
        self.trace.push("heal".into());
        for d in 0..self.devices.len() {
            if !self.sim.is_present(CtrlId(d)) {
                continue;
            }
            self.sim.unhang(CtrlId(d));
            self.sim.ignore_config_writes(CtrlId(d), false);
            self.sim.hold(CtrlId(d), Hold::None);
            self.devices[d].hung = false;
            self.devices[d].held = false;
        }
        self.sim.release_all();
        // A glitch still pending would hide the function from the scan
        // below (see `a_scan_finds_a_function_whose_first_config_read_glitches`):
        // behaving again means it passed.
        let access = self.sim.config_access();
        for d in 0..self.devices.len() {
            if let Some(address) = self.sim.address(CtrlId(d)) {
                // SAFETY: a read of the simulated configuration space.
                let _ = unsafe { pci_types::ConfigRegionAccess::read(&access, address, 0) };
            }
        }
        // Long enough for any reset (CAP.TO 500 ms, backoffs), stop or
        // detach under way to end.
        self.run_for(Duration::from_secs(2));
        self.driver.scan().expect("scan");
        self.run_for(Duration::from_secs(2));
        self.poll_all();
        for d in 0..self.devices.len() {
            if !self.sim.is_present(CtrlId(d)) {
                continue;
            }
            let serving = self
                .ids
                .values()
                .map(|(id, m)| (*id, m.dev))
                .find(|&(id, dev)| {
                    dev == d
                        && self
                            .driver
                            .controller(id)
                            .is_ok_and(|c| c.state() == State::Ready)
                });
            let Some((id, _)) = serving else {
                if self.devices[d].knobs.slow_disable == 2 && self.driver_gave_up_on(d) {
                    // Its disable takes longer than its CAP.TO: a reset
                    // cannot finish in time, and the driver gives such a
                    // device up, as it must.
                    self.trace
                        .push(format!("device {d}: given up (disable slower than CAP.TO)"));
                    continue;
                }
                self.fail(format!(
                    "device {d} behaves again but no controller serves it"
                ));
            };
            self.trace.push(format!("service check of {id}"));
            // Write then read back a block nothing else touches now.
            let lba = NS_BLOCKS - 1;
            self.blocking(id, Blocking::Write, lba, 1);
            let known = self.devices[d].block(lba).known;
            self.check(known.is_some(), || {
                format!("{id}: write after healing failed")
            });
            self.blocking(id, Blocking::Read, lba, 1);
        }
    }

    /// Detaches everything, collects every command and checks the books.
    fn finish(&mut self) {
        self.trace.push("finish".into());
        let ids: Vec<ControllerId> = self.driver.controllers().collect();
        for id in ids {
            let state = self.driver.controller(id).unwrap().state();
            if !state.is_finished() {
                self.driver.begin_detach(id).unwrap();
                self.id_model(id).detach_requested = true;
            }
        }
        self.run_for(Duration::from_secs(2));
        self.poll_all();
        let books: Vec<(ControllerId, bool, bool, bool)> = self
            .ids
            .values()
            .map(|(id, m)| (*id, m.ended, m.seen_serving, m.ready))
            .collect();
        for (id, ended, seen_serving, ready) in books {
            let stale = self.driver.controller(id).is_err();
            self.check(ended || stale, || format!("{id} never reported its end"));
            self.check(!seen_serving || ready, || {
                format!("{id} served without a Ready event")
            });
        }
        self.check(self.ledger.is_empty(), || {
            format!(
                "commands never delivered: {:?}",
                self.ledger.keys().collect::<Vec<_>>()
            )
        });
        // What completed Ok is on the medium.
        for (d, m) in self.devices.iter().enumerate() {
            for (&lba, b) in &m.blocks {
                if let Some(version) = b.known {
                    self.check(
                        self.sim.read_block(CtrlId(d), 1, lba) == content(lba, version),
                        || format!("device {d} block {lba} lost version {version}"),
                    );
                }
            }
        }
    }
}

fn run_scenario(s: &Scenario) {
    let mut model = Model::new(s);
    model.run(&s.steps);
    let Model { sim, driver, .. } = model;
    drop(driver);
    // The simulation checks itself as the last handle goes.
    drop(sim);
}

fn cases() -> u32 {
    std::env::var("MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

fn seed() -> u64 {
    std::env::var("MODEL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_SEED)
}

#[test]
fn the_driver_keeps_the_lifecycle_model() {
    let config = PropConfig {
        cases: cases(),
        rng_algorithm: RngAlgorithm::ChaCha,
        failure_persistence: None,
        max_shrink_iters: 4096,
        ..PropConfig::default()
    };
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed().to_le_bytes());
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes);
    let mut runner = TestRunner::new_with_rng(config, rng);
    let result = runner.run(&scenario(), |s| {
        run_scenario(&s);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Found by the model: a controller brought up by a blocking call (between
/// ticks) and removed before the next tick served I/O, yet its `Ready` was
/// never reported, so neither was its return when the device came back.
#[test]
fn a_controller_that_came_up_between_ticks_reports_ready_before_its_removal() {
    let scenario = Scenario {
        first: QUICK,
        second: None,
        bus0: None,
        depth: 2,
        steps: Vec::new(),
    };
    let mut model = Model::new(&scenario);
    model.driver.scan().expect("scan");
    let events = model.driver.tick();
    let [Event::Attached { id, .. }] = events[..] else {
        panic!("{events:?}");
    };
    let mut buffer = model.sim.platform().dma_alloc(BLOCK, 4096).unwrap();
    // The blocking call finishes the bring-up and serves the read.
    model
        .driver
        .controller(id)
        .unwrap()
        .read(1, 0, &mut buffer)
        .unwrap();
    model.sim.platform().dma_free(buffer);
    model.sim.link_flap(PortId(0));
    // The next tick polls the slot first (its interval passed).
    model.sim.advance(Duration::from_millis(60));
    let mut events = Vec::new();
    for _ in 0..200 {
        model.sim.advance(Duration::from_millis(1));
        events.extend(model.driver.tick());
    }
    let ready = events
        .iter()
        .position(|e| matches!(e, Event::Ready { id: r, .. } if *r == id));
    let removed = events
        .iter()
        .position(|e| matches!(e, Event::Removed { id: r, .. } if *r == id));
    assert!(
        ready.is_some() && ready < removed,
        "Ready of {id} before its removal: {events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Returned { previous, .. } if *previous == id)),
        "the same device back is reported as returned: {events:?}"
    );
}

/// Found by the model: a controller that could not be disabled within
/// CAP.TO is given up, its memory returned on the proof that bus mastering
/// is off; then the bus re-probe attaches the same function again and turns
/// bus mastering back on while the old controller still runs (CSTS.RDY = 1,
/// its queue registers naming the returned memory), which voids that proof:
/// the device may write memory the platform has since handed to someone
/// else (the simulation saw it with another controller's rings).
#[test]
fn a_failed_controller_still_running_gets_no_bus_mastering_back() {
    let sim = Sim::builder()
        .clock_step(CLOCK_STEP)
        .controller_on_bus0(
            ControllerSpec::default()
                .serial("slow")
                .namespace(NamespaceSpec::new(NS_BLOCKS, BLOCK as u32))
                .timeout(1)
                .disable_delay(Duration::from_secs(2)),
        )
        .build();
    let ctrl = CtrlId(0);
    let config = DriverConfig {
        controller: ControllerConfig {
            ready_timeout_limit: Duration::from_secs(1),
            ..ControllerConfig::default()
        },
        bus_rescan_interval: Some(Duration::from_millis(50)),
        ..DriverConfig::default()
    };
    let mut driver = Box::new(Drv::new(sim.platform(), sim.config_access(), config));
    driver.scan().expect("scan");
    // Fatal status once enabled: the reset clears CC.EN, but CSTS.RDY stays
    // 1 for 2 s, longer than CAP.TO (500 ms): the controller is given up.
    sim.set_cfs(ctrl);
    let mut events = Vec::new();
    let mut violation = None;
    for ms in 0..3000 {
        sim.advance(Duration::from_millis(1));
        events.extend(driver.tick());
        let failed = events.iter().any(|e| matches!(e, Event::Failed { .. }));
        // The old controller runs until about 2 s (its disable, begun in the
        // first ticks, takes 2 s); after that RDY = 1 is a new enable.
        let old_one_runs = ms < 1900;
        // `can_dma` brings the device's state up to the current time.
        let can_dma = sim.can_dma(ctrl);
        if failed && old_one_runs && can_dma && violation.is_none() {
            violation = Some(ms);
        }
    }
    drop(driver);
    sim.unchecked();
    assert!(
        violation.is_none(),
        "bus mastering back on at {violation:?} ms while the given-up controller \
         still runs: {events:?}"
    );
}

/// Found by the model: a detach whose shutdown does not complete in time
/// ends `Failed`; the function was then released, and the bus re-probe
/// attached it again at once, serving a device the embedder had detached.
#[test]
fn a_detach_that_fails_its_shutdown_does_not_attach_the_device_again() {
    let sim = Sim::builder()
        .clock_step(CLOCK_STEP)
        .controller_on_bus0(
            Knobs {
                slow_shutdown: 2,
                ..QUICK
            }
            .spec("slow"),
        )
        .build();
    let config = DriverConfig {
        controller: ControllerConfig {
            shutdown_timeout: Duration::from_millis(100),
            ..ControllerConfig::default()
        },
        bus_rescan_interval: Some(Duration::from_millis(50)),
        ..DriverConfig::default()
    };
    let mut driver = Box::new(Drv::new(sim.platform(), sim.config_access(), config));
    driver.scan().expect("scan");
    let mut events = driver.wait_ready(Duration::from_secs(5)).to_vec();
    let id = driver.ready_controllers().next().expect("ready");
    driver.begin_detach(id).unwrap();
    for _ in 0..2000 {
        sim.advance(Duration::from_millis(1));
        events.extend(driver.tick());
    }
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Failed { id: f, .. } if *f == id)),
        "the shutdown timed out: {events:?}"
    );
    let attaches = events
        .iter()
        .filter(|e| matches!(e, Event::Attached { .. }))
        .count();
    assert_eq!(attaches, 1, "attached again after its detach: {events:?}");
    assert_eq!(driver.controllers().count(), 1);
}

/// Found by the model: an orderly detach ends with the controller shut
/// down but still enabled (CC.EN = 1, CSTS.RDY = 1), its memory returned on
/// the proof that bus mastering is off. A scan then attaches the function
/// again and turns bus mastering back on: until the new bring-up disables
/// the controller, it can reach the returned memory through the queue
/// addresses it still holds.
#[test]
fn a_detached_controller_is_disabled_before_a_scan_attaches_it_again() {
    let sim = Sim::single(QUICK.spec("again"));
    let mut driver = Box::new(Drv::new(
        sim.platform(),
        sim.config_access(),
        DriverConfig::default(),
    ));
    driver.scan().expect("scan");
    driver.wait_ready(Duration::from_secs(5));
    let id = driver.ready_controllers().next().expect("ready");
    driver.begin_detach(id).unwrap();
    let mut events = Vec::new();
    for _ in 0..100 {
        sim.advance(Duration::from_millis(1));
        events.extend(driver.tick());
    }
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Removed { id: r, .. } if *r == id)),
        "{events:?}"
    );
    assert_eq!(driver.scan().expect("scan"), 1, "attached again");
    assert!(
        !sim.can_dma(CtrlId(0)),
        "bus mastering is on and the controller still enabled from the last attach"
    );
}

/// Found by the model: one config read of a present device that glitches
/// (all-ones once) during a scan must not hide the function, since nothing
/// looks again (a hot-plug slot is only re-read on slot events) until the
/// embedder scans again. The walk reads twice before it believes a device
/// number empty.
#[test]
fn a_scan_finds_a_function_whose_first_config_read_glitches() {
    let sim = Sim::single(QUICK.spec("glitchy"));
    let mut driver = Box::new(Drv::new(
        sim.platform(),
        sim.config_access(),
        DriverConfig::default(),
    ));
    sim.glitch(CtrlId(0));
    let found = driver.scan().expect("scan");
    driver.wait_ready(Duration::from_secs(5));
    let ready = driver.ready_controllers().count();
    drop(driver);
    assert_eq!((found, ready), (1, 1), "the glitched function was missed");
}

/// Found by the model (a simulation defect): a controller given up because
/// it does not disable within CAP.TO has its bus mastering turned off and
/// its memory returned; the simulated device then still read its shadow
/// doorbells and wrote EventIdx there (counted as wild DMA), though with bus
/// mastering off it can reach no memory.
#[test]
fn a_given_up_controller_with_shadow_doorbells_reaches_no_memory() {
    let knobs = Knobs {
        slow_disable: 2,
        shadow: true,
        ..QUICK
    };
    run_scenario(&Scenario {
        first: knobs,
        second: None,
        bus0: None,
        depth: 2,
        steps: vec![
            Step::Tick { ms: 1 },
            Step::Blocking {
                c: 0,
                op: Blocking::Read,
                lba: 0,
                blocks: 1,
            },
            // Never rung, so it times out: abort, reset, the disable takes
            // longer than CAP.TO, the controller is given up.
            Step::Submit {
                c: 0,
                q: 0,
                write: false,
                lba: 0,
                blocks: 1,
                unaligned: false,
            },
        ],
    });
}

/// Found by the model: a controller whose bus mastering cannot be turned
/// off (the function ignores config writes) is detached while it is still
/// coming up; its teardown took one CSTS read with RDY = 0 (a glitch) for
/// proof that it stopped and returned its admin queues while it still ran.
#[test]
fn a_glitched_status_read_is_no_proof_that_the_controller_stopped() {
    run_scenario(&Scenario {
        first: QUICK,
        second: None,
        bus0: Some(Knobs {
            slow_ready: true,
            ..QUICK
        }),
        depth: 2,
        steps: vec![
            Step::Tick { ms: 1 },
            Step::Tick { ms: 15 },
            Step::Device {
                d: 1,
                ev: Device::IgnoreConfigWrites(true),
            },
            Step::Detach { c: 1 },
            Step::Tick { ms: 5 },
            Step::Device {
                d: 1,
                ev: Device::Glitch,
            },
            Step::Tick { ms: 1 },
        ],
    });
}
