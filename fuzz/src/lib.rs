//! A device that lies, driven by fuzz input.
//!
//! The simulated machine (`bare-nvme-sim`) provides a working controller so
//! that the driver gets deep into bring-up and I/O; every interaction of the
//! driver with the machine goes through wrappers of the platform, the mapped
//! registers and configuration space that consult the fuzz input:
//!
//! - any register or config read can return a fuzz value (replaced, XORed,
//!   all-ones or zero),
//! - any register write (doorbells included) can be followed by the "device"
//!   writing fuzz bytes into DMA memory the driver allocated: raw bytes, a
//!   forged completion entry, or a page of garbage (identify data, rings),
//! - any clock read can jump the virtual clock so deadlines expire,
//! - any DMA allocation or register mapping can fail.
//!
//! On top of that the input picks the controller's capabilities and timing
//! (slow disable, slow shutdown), the namespace geometry (512 or 4096 byte
//! blocks, sizes, count), the topology (bus 0, or one or two hot-plug root
//! ports with a second controller present or hot-added later), a
//! misbehaviour rule of the simulated controller and a script of operations
//! (submissions up to 64 KiB from unaligned buffers, so PRP lists; polls,
//! ticks, blocking I/O, removal, CFS, link flaps and bounces, presence
//! bounces, hangs, glitches, memory decoding off, config writes ignored so
//! bus mastering cannot be switched off, hot-add, detach).
//!
//! Invariants checked (a panic is a finding):
//! - no panic and no out-of-bounds access in the driver (the sim panics on a
//!   double or bogus DMA free),
//! - no hang: at most [`CALL_BUDGET`] platform calls per input, and the final
//!   detach reaches a terminal state within a bounded number of ticks,
//! - every submitted command completes exactly once (a ledger of tags: a
//!   second completion, or one for a tag never submitted, fails; after
//!   teardown every command has been delivered),
//! - no event lost: every controller reported attached reports exactly one
//!   end (Removed or Failed), `Quarantined` at most once and only after it,
//! - memory comes back only when the device provably cannot DMA: no region
//!   (ring, PRP list, caller buffer) handed back while the simulated device
//!   could still write it, no device access outside memory it owned, no
//!   protocol error, and at the end every DMA region is back except those
//!   the driver declared quarantined (`Event::Quarantined`) and blocking-I/O
//!   buffers it refused with `Error::Quarantined`. Lies that defeat any
//!   proof excuse what they can cause: a lying register or config read
//!   excuses memory handed back early, wild DMA and protocol errors;
//!   device writes into driver memory excuse wild DMA and protocol errors,
//! - once the device behaves again (lies stop, rules cleared, hang lifted,
//!   config writes accepted, held commands completed) every controller
//!   settles, Ready or ended, within bounded virtual time, and a Ready one
//!   serves a read from its first I/O queue.
//!
//! Input layout: [`HEADER`] bytes of configuration, then `ops` operations of
//! [`OP_BYTES`] each, then events of [`EVENT_BYTES`] each (a skip count, a
//! kind and two payload words): event `k` fires at platform call
//! `at(k-1) + skip + 1`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use bare_nvme::{
    Completion, Config, ControllerId, DmaRegion, Driver, DriverConfig, Event, Instant, IoOp,
    PhysAddr, Platform, RegisterAccess, State,
};
use bare_nvme_sim::{
    ControllerSpec, CtrlId, Hold, Misbehaviour, NamespaceSpec, PortId, Queues, Rule, Sim,
    SimConfig, SimPlatform, SimRegisters,
};
use pci_types::{ConfigRegionAccess, PciAddress};

/// Most platform calls one input may cause; more means the driver hangs.
pub const CALL_BUDGET: u64 = 3_000_000;
/// Bytes of configuration at the start of the input.
pub const HEADER: usize = 10;
/// Bytes per scripted operation.
pub const OP_BYTES: usize = 4;
/// Bytes per device event.
pub const EVENT_BYTES: usize = 11;
/// Most ticks the final detach may take.
const DETACH_TICKS: usize = 100_000;

/// One lie of the device, applied at a given platform call.
#[derive(Clone, Copy, Debug)]
struct Lie {
    at: u64,
    kind: u8,
    a: u32,
    b: u32,
}

/// What the fuzz input makes the device do, shared by all wrappers.
struct Chaos {
    lies: Vec<Lie>,
    next: usize,
    calls: u64,
    /// DMA regions the driver (or the harness) holds: CPU address and length.
    live: Vec<(usize, usize)>,
    sim: Sim,
    /// The device stopped lying (the end of the script).
    quiet: bool,
    /// A register or config read lied: the driver's proofs of a stopped
    /// device may have been forged.
    read_lied: bool,
    /// The device wrote into driver memory by itself.
    scribbled: bool,
}

type Shared = Rc<RefCell<Chaos>>;

impl Chaos {
    /// Counts a platform call; returns the lie for it, if any.
    fn call(&mut self) -> Option<Lie> {
        self.calls += 1;
        assert!(
            self.calls < CALL_BUDGET,
            "the driver hangs: {} platform calls",
            self.calls
        );
        if self.quiet {
            return None;
        }
        let lie = *self.lies.get(self.next)?;
        if lie.at > self.calls {
            return None;
        }
        self.next += 1;
        Some(lie)
    }

    /// The device writes into DMA memory the driver gave it.
    fn scribble(&mut self, lie: Lie) {
        if self.live.is_empty() {
            return;
        }
        let (virt, len) = self.live[(lie.kind >> 2) as usize % self.live.len()];
        let mut bytes = [0u8; 64];
        let (offset, n) = match lie.kind & 3 {
            // Four raw bytes anywhere.
            0 => {
                bytes[..4].copy_from_slice(&lie.b.to_le_bytes());
                (lie.a as usize, 4)
            }
            // A forged completion entry in slot `a & 0xFF`.
            1 => {
                let cqe: [u32; 4] = [
                    lie.b,
                    0,
                    (lie.a >> 8) & 0xFFFF | ((lie.a >> 24) & 0x7) << 16,
                    (lie.b & 0xFFFF_0000) | (lie.b & 0x1) << 16 | (lie.a & 0xFE) << 16,
                ];
                for (i, w) in cqe.iter().enumerate() {
                    bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
                }
                ((lie.a as usize & 0xFF) * 16, 16)
            }
            // 64 bytes of garbage (identify fields, ring entries).
            2 => {
                let mut x = u64::from(lie.b) << 1 | 1;
                for chunk in bytes.chunks_mut(8) {
                    x ^= x >> 12;
                    x ^= x << 25;
                    x ^= x >> 27;
                    chunk.copy_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
                }
                (lie.a as usize, 64)
            }
            // One byte.
            _ => {
                bytes[0] = lie.b as u8;
                (lie.a as usize, 1)
            }
        };
        if len < n {
            return;
        }
        let offset = offset % (len - n + 1);
        self.scribbled = true;
        for (i, &byte) in bytes[..n].iter().enumerate() {
            // SAFETY: `virt .. virt + len` is a live allocation of the sim's
            // arena (removed from `live` when freed); `offset + i < len`. The
            // driver holds no reference into DMA memory across a platform
            // call, so this is the device writing by DMA, as hardware would.
            unsafe { ((virt + offset + i) as *mut u8).write_volatile(byte) };
        }
    }
}

/// A read value as the lying device reports it.
fn lie_about(value: u32, lie: Lie) -> u32 {
    match lie.kind & 3 {
        0 => lie.a,
        1 => value ^ lie.a,
        2 => !0,
        _ => 0,
    }
}

/// The platform: the sim's, with failing allocations and clock jumps.
#[derive(Clone)]
pub struct FuzzPlatform {
    inner: SimPlatform,
    chaos: Shared,
}

/// Mapped registers whose reads lie and whose writes may be followed by
/// device writes into DMA memory.
pub struct FuzzRegisters {
    inner: SimRegisters,
    chaos: Shared,
}

/// Configuration space whose reads lie.
#[derive(Clone)]
pub struct FuzzConfig {
    inner: SimConfig,
    chaos: Shared,
}

impl Platform for FuzzPlatform {
    type Registers = FuzzRegisters;

    fn dma_alloc(&self, len: usize, align: usize) -> Option<DmaRegion> {
        if self.chaos.borrow_mut().call().is_some() {
            return None;
        }
        let region = self.inner.dma_alloc(len, align)?;
        self.chaos
            .borrow_mut()
            .live
            .push((region.virt().as_ptr() as usize, region.len()));
        Some(region)
    }

    fn dma_free(&self, region: DmaRegion) {
        if tracing() {
            eprintln!("free {:#x}+{:#x}", region.phys().as_u64(), region.len());
        }
        {
            let mut chaos = self.chaos.borrow_mut();
            chaos.call();
            let virt = region.virt().as_ptr() as usize;
            let i = chaos
                .live
                .iter()
                .position(|&(v, _)| v == virt)
                .expect("freeing a region that is not allocated");
            chaos.live.swap_remove(i);
        }
        self.inner.dma_free(region);
    }

    fn map_registers(&self, phys: PhysAddr, len: usize) -> Option<FuzzRegisters> {
        if self.chaos.borrow_mut().call().is_some() {
            return None;
        }
        Some(FuzzRegisters {
            inner: self.inner.map_registers(phys, len)?,
            chaos: self.chaos.clone(),
        })
    }

    fn now(&self) -> Instant {
        let lie = self.chaos.borrow_mut().call();
        if let Some(lie) = lie {
            let sim = self.chaos.borrow().sim.clone();
            sim.advance(Duration::from_micros(u64::from(lie.a % 2_000_000)));
        }
        self.inner.now()
    }
}

impl RegisterAccess for FuzzRegisters {
    fn read32(&self, offset: usize) -> u32 {
        let lie = self.chaos.borrow_mut().call();
        let value = self.inner.read32(offset);
        lie.map_or(value, |lie| {
            self.chaos.borrow_mut().read_lied = true;
            lie_about(value, lie)
        })
    }

    fn write32(&self, offset: usize, value: u32) {
        let lie = self.chaos.borrow_mut().call();
        self.inner.write32(offset, value);
        if let Some(lie) = lie {
            self.chaos.borrow_mut().scribble(lie);
        }
    }
}

impl ConfigRegionAccess for FuzzConfig {
    unsafe fn read(&self, address: PciAddress, offset: u16) -> u32 {
        let lie = self.chaos.borrow_mut().call();
        // SAFETY: forwarded as received; the sim has no unsafe requirements.
        let value = unsafe { self.inner.read(address, offset) };
        lie.map_or(value, |lie| {
            self.chaos.borrow_mut().read_lied = true;
            lie_about(value, lie)
        })
    }

    unsafe fn write(&self, address: PciAddress, offset: u16, value: u32) {
        self.chaos.borrow_mut().call();
        // SAFETY: as for `read`.
        unsafe { self.inner.write(address, offset, value) }
    }
}

/// A cursor over the input that yields zeroes once exhausted.
struct Input<'a> {
    data: &'a [u8],
}

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
}

const MISBEHAVIOURS: [Misbehaviour; 7] = [
    Misbehaviour::NeverComplete,
    Misbehaviour::CompleteTwice,
    Misbehaviour::UnknownCid,
    Misbehaviour::StaleCid,
    Misbehaviour::WrongSqId,
    Misbehaviour::WrongPhase,
    Misbehaviour::SqHeadOutOfRange,
];

fn rule(byte: u8, times: u8) -> Option<Rule> {
    let what = *MISBEHAVIOURS.get((byte & 7) as usize)?;
    let queues = match (byte >> 3) & 3 {
        0 => Queues::Io,
        1 => Queues::Admin,
        _ => Queues::Any,
    };
    let times = if times == 0xFF {
        u32::MAX
    } else {
        u32::from(times)
    };
    Some(Rule {
        what,
        queues,
        times,
    })
}

type FuzzDriver = Driver<FuzzPlatform, FuzzConfig, 2, 4, 32>;

/// Whether `FUZZ_TRACE` asks for the operations to be printed (read once).
fn tracing() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("FUZZ_TRACE").is_some())
}

/// What the harness knows about the commands it submitted and the events
/// it was told.
struct Ledger {
    sim: Sim,
    next_tag: u64,
    /// Submitted, not yet delivered: which controller has them.
    outstanding: HashMap<u64, ControllerId>,
    delivered: u64,
    /// Successful deliveries per tag (for the recovery check).
    succeeded: Vec<u64>,
    /// Buffers handed back, to be freed at the end.
    returned: Vec<DmaRegion>,
    attached: Vec<ControllerId>,
    ended: Vec<ControllerId>,
    /// Regions the driver declared quarantined, per controller.
    quarantined: HashMap<ControllerId, u32>,
    /// Blocking-I/O buffers the driver refused with `Error::Quarantined`:
    /// kept for good, as the driver asks.
    kept: u32,
}

impl Ledger {
    fn new(sim: &Sim) -> Ledger {
        Ledger {
            sim: sim.clone(),
            next_tag: 0,
            outstanding: HashMap::new(),
            delivered: 0,
            succeeded: Vec::new(),
            returned: Vec::new(),
            attached: Vec::new(),
            ended: Vec::new(),
            quarantined: HashMap::new(),
            kept: 0,
        }
    }

    fn tag(&mut self) -> u64 {
        self.next_tag += 1;
        self.next_tag
    }

    /// A buffer is the caller's again (the sim checks that the device can
    /// no longer write it); freed at the end.
    fn give_back(&mut self, buffer: Option<DmaRegion>) {
        if let Some(buffer) = buffer {
            self.sim.caller_owns(&buffer);
            self.returned.push(buffer);
        }
    }

    fn delivered(&mut self, id: ControllerId, done: Completion) {
        let tag = done.tag;
        if tracing() {
            let at = done.buffer.as_ref().map(|b| b.phys().as_u64());
            eprintln!("delivered {tag} {:?} buffer {at:#x?}", done.result);
        }
        assert_eq!(
            self.outstanding.remove(&tag),
            Some(id),
            "command {tag} completed twice, on the wrong controller, or was never submitted"
        );
        self.delivered += 1;
        if done.result.is_ok() {
            self.succeeded.push(tag);
        }
        self.give_back(done.buffer);
    }

    fn events(&mut self, events: &[Event]) {
        for e in events {
            if tracing() {
                eprintln!("event {e:?}");
            }
            match *e {
                Event::Attached { id, .. } => {
                    assert!(
                        !self.attached.contains(&id),
                        "{id:?} attached twice: {events:?}"
                    );
                    self.attached.push(id);
                }
                Event::Removed { id, .. } | Event::Failed { id, .. } => {
                    assert!(
                        !self.ended.contains(&id),
                        "{id:?} reported its end twice: {events:?}"
                    );
                    self.ended.push(id);
                }
                Event::Quarantined { id, regions, .. } => {
                    assert!(
                        self.ended.contains(&id),
                        "{id:?} quarantined before its end was reported: {events:?}"
                    );
                    assert!(
                        self.quarantined.insert(id, regions).is_none(),
                        "{id:?} reported quarantine twice: {events:?}"
                    );
                }
                Event::Ready { .. } | Event::Returned { .. } => {}
            }
        }
    }
}

fn poll_all(driver: &mut FuzzDriver, ledger: &mut Ledger) {
    let ids: Vec<ControllerId> = driver.controllers().collect();
    for id in ids {
        let Ok(c) = driver.controller(id) else {
            continue;
        };
        for q in 0..c.io_queue_count() {
            c.poll(q, |done| ledger.delivered(id, done));
        }
    }
}

fn tick(driver: &mut FuzzDriver, ledger: &mut Ledger) {
    let events = driver.tick();
    ledger.events(&events);
}

/// How far one input got, for checking that the harness reaches I/O.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reached {
    /// A controller became ready.
    pub ready: bool,
    /// Submissions attempted (accepted or refused).
    pub submitted: u64,
    /// Commands delivered back through `poll`.
    pub delivered: u64,
    /// Lies the device told.
    pub lies: usize,
    /// Platform calls made.
    pub calls: u64,
    /// Controllers the driver reported attached.
    pub attached: usize,
    /// Reads served after the device behaved again (the recovery check).
    pub recovered: usize,
    /// DMA regions the driver declared quarantined.
    pub quarantined: u32,
}

/// The simulated machine as the script sees it.
struct Rig {
    sim: Sim,
    platform: FuzzPlatform,
    /// Hot-plug root ports (none: the controller sits on bus 0).
    ports: usize,
    /// Every controller ever plugged in, with its port.
    ctrls: Vec<(CtrlId, Option<PortId>)>,
    /// For hot-added controllers.
    spec: ControllerSpec,
    /// Ports whose link the script took down.
    down: Vec<PortId>,
    /// A device was reset behind the driver's back (power loss, link
    /// down): until the driver notices, its doorbell writes reach a
    /// disabled controller, which the sim counts as protocol errors.
    reset_behind: bool,
}

impl Rig {
    fn ctrl(&self, pick: u8) -> CtrlId {
        self.ctrls[usize::from(pick) % self.ctrls.len()].0
    }

    fn port(&self, pick: u8) -> Option<PortId> {
        (self.ports > 0).then(|| PortId(usize::from(pick) % self.ports))
    }
}

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
/// Longest transfer the driver is configured for: PRP lists beyond 8 KiB.
const MAX_TRANSFER: usize = 64 << 10;
/// Ticks, each 1 ms of virtual time, for controllers to settle once the
/// device behaves again.
const SETTLE_TICKS: usize = 3_000;

/// Runs one input; panics when the driver breaks an invariant.
pub fn run(data: &[u8]) -> Reached {
    let mut input = Input { data };
    let flags = input.u8();
    let mqes = input.u8();
    let timeout = input.u8();
    let mdts = input.u8();
    let queues = input.u8();
    let geometry = input.u8();
    let shape = input.u8();
    let ops = input.u8() % 48;
    let (rule_kind, rule_times) = (input.u8(), input.u8());

    let block_size = if geometry & 1 == 0 { 512 } else { 4096 };
    let base_blocks = 64 + u64::from(geometry >> 3) * SIZE_STEP;
    let mut spec = ControllerSpec::default()
        .serial("fuzz")
        .mqes(if mqes == 0 { 2047 } else { u16::from(mqes) - 1 })
        .timeout(timeout)
        .mdts(mdts)
        .max_ioqpairs(u16::from(queues >> 4).max(1))
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
    // The run does the end check itself (below): which lies excuse what
    // only the harness knows.
    sim.unchecked();
    if let Some(rule) = rule(rule_kind, rule_times) {
        sim.misbehave(CtrlId(0), rule);
    }

    let script: Vec<[u8; OP_BYTES]> = (0..ops)
        .map(|_| [input.u8(), input.u8(), input.u8(), input.u8()])
        .collect();
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

    let chaos = Rc::new(RefCell::new(Chaos {
        lies,
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
    let config = DriverConfig {
        controller: Config {
            io_queues: u16::from(queues & 7).max(1),
            queue_depth: 2 + u16::from(queues >> 3 & 1) * 30,
            max_transfer: MAX_TRANSFER as u32,
            admin_timeout: Duration::from_millis(20),
            io_timeout: Duration::from_millis(50),
            ready_timeout_limit: Duration::from_millis(100),
            shutdown_timeout: Duration::from_millis(20),
            shadow_doorbells: flags & 32 != 0,
        },
        slot_poll_interval: Duration::from_millis(1),
        bus_rescan_interval: Some(Duration::from_millis(5)),
        root_window: Some((PhysAddr::new(0xC000_0000), 0x3000_0000)),
    };
    let mut driver: FuzzDriver = Driver::new(platform.clone(), access, config);
    let mut ledger = Ledger::new(&sim);
    let mut rig = Rig {
        sim: sim.clone(),
        platform: platform.clone(),
        ports: if on_bus0 {
            0
        } else {
            1 + usize::from(two_ports)
        },
        ctrls,
        spec: spec.serial("fuzz-h"),
        down: Vec::new(),
        reset_behind: false,
    };

    let mut reached = Reached::default();
    if driver.scan().is_ok() {
        let events = driver.wait_ready(Duration::from_millis(200));
        ledger.events(&events);
        reached.ready = driver.ready_controllers().next().is_some();
        for op in &script {
            step(&mut rig, &mut driver, &mut ledger, *op);
        }
    }

    // The device behaves again: a controller still in service must serve.
    chaos.borrow_mut().quiet = true;
    reached.recovered = recover(&rig, &mut driver, &mut ledger, &chaos);

    // Teardown: detach everything, wait for the end, collect every command.
    // A detach that cannot shut the controller down ends Failed and
    // releases the function, which the bus rescan then attaches again; after
    // a few such rounds the devices are pulled, which ends the cycle.
    let mut asked: Vec<ControllerId> = Vec::new();
    let mut ticks = 0;
    let mut quiet_ticks = 0;
    let mut rounds = 0;
    while quiet_ticks < 4 {
        let ids: Vec<ControllerId> = driver.controllers().collect();
        let mut fresh = false;
        for id in ids {
            let Ok(c) = driver.controller(id) else {
                continue;
            };
            if !c.state().is_finished() && !asked.contains(&id) {
                asked.push(id);
                fresh = true;
                let _ = driver.begin_detach(id);
            }
        }
        if fresh && ticks > 0 {
            rounds += 1;
            if rounds == 3 {
                for &(c, _) in &rig.ctrls {
                    sim.surprise_remove(c);
                }
            }
        }
        tick(&mut driver, &mut ledger);
        let all_finished = driver
            .controllers()
            .collect::<Vec<_>>()
            .into_iter()
            .all(|id| {
                driver
                    .controller(id)
                    .map_or(true, |c| c.state().is_finished())
            });
        quiet_ticks = if all_finished { quiet_ticks + 1 } else { 0 };
        ticks += 1;
        assert!(ticks < DETACH_TICKS, "detach never finishes");
    }
    poll_all(&mut driver, &mut ledger);
    // A finished controller's entry may be recycled for a new attach once
    // the table is full; what it still held for the caller went back to the
    // platform with it (the memory check below covers it).
    ledger
        .outstanding
        .retain(|_, id| driver.controller(*id).is_ok());
    assert!(
        ledger.outstanding.is_empty(),
        "commands never completed after teardown: {:?}",
        ledger.outstanding
    );
    // No event lost: every controller attached reported its end, and the
    // quarantine of each one still known.
    for id in &ledger.attached {
        assert!(
            ledger.ended.contains(id),
            "{id:?} attached but never reported its end (ended: {:?})",
            ledger.ended
        );
        if let Ok(c) = driver.controller(*id) {
            let kept = c.quarantined().regions;
            assert_eq!(
                ledger.quarantined.get(id).copied().unwrap_or(0),
                kept,
                "{id:?} quarantined {kept} regions, reported otherwise"
            );
        }
    }
    drop(driver);
    for buffer in ledger.returned.drain(..) {
        platform.dma_free(buffer);
    }
    let declared = ledger.quarantined.values().sum::<u32>() + ledger.kept;
    let c = sim.counters();
    let chaos = chaos.borrow();
    // A lying read can forge any proof that the device stopped; device
    // writes into the rings can make it fetch or write anything.
    let forged = chaos.read_lied || chaos.scribbled;
    assert!(
        c.freed_while_dma_possible == 0 || chaos.read_lied,
        "memory handed back while the device could still write it: {:?}\n{:#?}",
        sim.violations(),
        sim.protocol_log()
    );
    assert!(
        c.wild_dma == 0 || forged,
        "the device reached memory it did not own: {:?}",
        sim.violations()
    );
    assert!(
        c.protocol_errors == 0 || forged || rig.reset_behind,
        "the device was driven wrongly: {:?}\n{:#?}",
        sim.violations(),
        sim.protocol_log()
    );
    if declared == 0 {
        assert_eq!(
            (c.dma_regions, c.dma_bytes),
            (0, 0),
            "DMA memory leaked after teardown (nothing was declared quarantined)"
        );
    } else {
        assert!(
            c.dma_regions <= u64::from(declared),
            "{} DMA regions outstanding after teardown, {declared} declared quarantined",
            c.dma_regions
        );
    }
    reached.submitted = ledger.next_tag;
    reached.delivered = ledger.delivered;
    reached.lies = chaos.next;
    reached.calls = chaos.calls;
    reached.attached = ledger.attached.len();
    reached.quarantined = declared;
    reached
}

/// The device stops misbehaving: every controller must settle (Ready, or
/// ended) within [`SETTLE_TICKS`] of virtual milliseconds, and, unless a
/// lie may have left the driver misconfigured, every Ready controller must
/// serve a read of block 0 from its first I/O queue. Returns how many did.
fn recover(rig: &Rig, driver: &mut FuzzDriver, ledger: &mut Ledger, chaos: &Shared) -> usize {
    let sim = &rig.sim;
    for &(c, _) in &rig.ctrls {
        sim.behave(c);
        sim.unhang(c);
        sim.ignore_config_writes(c, false);
        sim.hold(c, Hold::None);
    }
    sim.release_all();
    for &port in &rig.down {
        sim.link_up(port);
    }
    let settled = |driver: &mut FuzzDriver| {
        let ids: Vec<ControllerId> = driver.controllers().collect();
        ids.into_iter().all(|id| {
            driver.controller(id).map_or(true, |c| {
                c.state() == State::Ready || c.state().is_finished()
            })
        })
    };
    let mut ticks = 0;
    while !settled(driver) {
        sim.advance(Duration::from_millis(1));
        tick(driver, ledger);
        poll_all(driver, ledger);
        ticks += 1;
        if ticks == SETTLE_TICKS {
            let states: Vec<_> = driver
                .controllers()
                .collect::<Vec<_>>()
                .into_iter()
                .map(|id| driver.controller(id).map(|c| c.state()))
                .collect();
            panic!("controllers never settle with a device that behaves: {states:?}");
        }
    }
    {
        let chaos = chaos.borrow();
        if chaos.read_lied || chaos.scribbled {
            return 0;
        }
    }
    // Commands the misbehaving device lost time out and come back.
    let mut ticks = 0;
    while ledger.outstanding.values().any(|id| {
        driver
            .controller(*id)
            .is_ok_and(|c| c.state() == State::Ready)
    }) {
        poll_all(driver, ledger);
        sim_tick(rig, driver, ledger);
        ticks += 1;
        assert!(
            ticks < SETTLE_TICKS,
            "commands never complete on a Ready controller once the device behaves: {:?}",
            ledger.outstanding
        );
    }
    let ids: Vec<ControllerId> = driver.ready_controllers().collect();
    let mut served = 0;
    for id in ids {
        if serve_one(rig, driver, ledger, id) {
            served += 1;
        }
    }
    served
}

/// Reads block 0 of the first namespace through queue 0, up to three
/// times (the first may be what makes the driver notice a reset device);
/// true once one read succeeds, false if the controller ends meanwhile.
fn serve_one(rig: &Rig, driver: &mut FuzzDriver, ledger: &mut Ledger, id: ControllerId) -> bool {
    for _ in 0..3 {
        let Ok(ctrl) = driver.controller(id) else {
            return false;
        };
        if ctrl.state() != State::Ready {
            return false;
        }
        let Some(ns) = ctrl.namespaces().first().copied() else {
            return false;
        };
        let Some(buffer) = rig.platform.dma_alloc(ns.block_size() as usize, 4096) else {
            // The arena is full of quarantined memory.
            return false;
        };
        let tag = ledger.tag();
        let op = IoOp::Read {
            nsid: ns.id(),
            lba: 0,
            blocks: 1,
        };
        match ctrl.submit(0, op, Some(buffer), tag) {
            Ok(_) => {
                ledger.outstanding.insert(tag, id);
            }
            Err(rejected) => {
                let error = rejected.error;
                ledger.give_back(rejected.buffer);
                panic!("a Ready controller refuses a read once the device behaves: {error:?}");
            }
        }
        let mut ticks = 0;
        while ledger.outstanding.contains_key(&tag) {
            poll_all(driver, ledger);
            sim_tick(rig, driver, ledger);
            ticks += 1;
            assert!(
                ticks < SETTLE_TICKS,
                "a read never completes once the device behaves"
            );
        }
        if ledger.succeeded.contains(&tag) {
            return true;
        }
    }
    let state = driver.controller(id).map(|c| c.state());
    assert!(
        !matches!(state, Ok(State::Ready)),
        "a Ready controller fails every read once the device behaves"
    );
    false
}

fn sim_tick(rig: &Rig, driver: &mut FuzzDriver, ledger: &mut Ledger) {
    rig.sim.advance(Duration::from_millis(1));
    tick(driver, ledger);
}

/// Allocates `len` bytes for a transfer, `pad` bytes past where the
/// arena's first fit would put it (so not page aligned when `pad > 0`).
fn transfer_buffer(platform: &FuzzPlatform, len: usize, pad: usize) -> Option<DmaRegion> {
    let spacer = if pad > 0 {
        Some(platform.dma_alloc(pad, 4)?)
    } else {
        None
    };
    let buffer = platform.dma_alloc(len, if pad > 0 { 4 } else { 4096 });
    if let Some(spacer) = spacer {
        platform.dma_free(spacer);
    }
    buffer
}

/// One scripted operation: `kind % OPS` picks it, `kind / OPS` the
/// controller (driver's or simulated) it is about.
fn step(rig: &mut Rig, driver: &mut FuzzDriver, ledger: &mut Ledger, op: [u8; OP_BYTES]) {
    const OPS: u8 = 24;
    let [kind, a, b, c] = op;
    let pick = kind / OPS;
    let id = driver.controllers().nth(usize::from(pick & 1));
    if tracing() {
        let state = id.map(|id| driver.controller(id).map(|c| c.state()));
        eprintln!("op {} {a} {b} {c} on {pick} in {state:?}", kind % OPS);
    }
    let sim = rig.sim.clone();
    let target = rig.ctrl(pick);
    match kind % OPS {
        0 | 1 | 21 => {
            let Some(id) = id else { return };
            let Ok(ctrl) = driver.controller(id) else {
                return;
            };
            let Some(ns) = ctrl.namespaces().first().copied() else {
                return;
            };
            let queue = u16::from(a & 3);
            let bs = ns.block_size() as usize;
            // Up to 8 blocks, or (op 21) up to 64 KiB from a buffer `pad`
            // bytes off a page boundary: PRP lists and offsets.
            let (blocks, pad) = if kind % OPS == 21 {
                let max = (MAX_TRANSFER / bs) as u32;
                (1 + u32::from(b) % max, usize::from(a >> 2) * 4)
            } else {
                (1 + u32::from(b & 7), 0)
            };
            let lba = u64::from(c) % (ns.blocks() + 4);
            let len = blocks as usize * bs;
            let Some(buffer) = transfer_buffer(&rig.platform, len, pad) else {
                return;
            };
            let nsid = ns.id();
            let op = if kind % OPS == 0 || (kind % OPS == 21 && b & 0x80 != 0) {
                IoOp::Read { nsid, lba, blocks }
            } else {
                IoOp::Write { nsid, lba, blocks }
            };
            let tag = ledger.tag();
            match ctrl.submit(queue, op, Some(buffer), tag) {
                Ok(_) => {
                    ledger.outstanding.insert(tag, id);
                }
                Err(rejected) => ledger.give_back(rejected.buffer),
            }
        }
        2 => poll_all(driver, ledger),
        3 => tick(driver, ledger),
        4 | 5 => {
            let Some(id) = id else { return };
            let Ok(ctrl) = driver.controller(id) else {
                return;
            };
            let Some(ns) = ctrl.namespaces().first().copied() else {
                return;
            };
            let len = (1 + usize::from(b & 3)) * ns.block_size() as usize;
            let Some(mut buffer) = transfer_buffer(&rig.platform, len, usize::from(a >> 2) * 4)
            else {
                return;
            };
            let lba = u64::from(c) % ns.blocks();
            let result = if kind % OPS == 4 {
                ctrl.read(ns.id(), lba, &mut buffer)
            } else {
                ctrl.write(ns.id(), lba, &buffer)
            };
            if tracing() {
                eprintln!("blocking {result:?} buffer {:#x}", buffer.phys().as_u64());
            }
            if matches!(result, Err(bare_nvme::Error::Quarantined)) {
                // The device may still write it: never reused.
                ledger.kept += 1;
            } else {
                ledger.give_back(Some(buffer));
            }
        }
        6 => {
            let Some(id) = id else { return };
            if let Ok(ctrl) = driver.controller(id) {
                let nsid = ctrl.namespaces().first().map_or(1, |n| n.id());
                let _ = ctrl.flush(nsid);
            }
        }
        7 => {
            let Some(id) = id else { return };
            let Ok(ctrl) = driver.controller(id) else {
                return;
            };
            let nsid = ctrl.namespaces().first().map_or(1, |n| n.id());
            let (lba, blocks) = (u64::from(b), 1 + u32::from(c));
            let op = match a & 3 {
                0 => IoOp::WriteZeroes { nsid, lba, blocks },
                1 => IoOp::Deallocate { nsid, lba, blocks },
                _ => IoOp::Flush { nsid },
            };
            let tag = ledger.tag();
            match ctrl.submit(u16::from(a >> 2 & 3), op, None, tag) {
                Ok(_) => {
                    ledger.outstanding.insert(tag, id);
                }
                Err(rejected) => ledger.give_back(rejected.buffer),
            }
        }
        8 => {
            sim.complete_held(usize::from(a));
        }
        9 => sim.set_cfs(target),
        10 => sim.surprise_remove(target),
        11 => {
            if let Some(id) = id {
                let _ = driver.begin_detach(id);
            }
        }
        12 => {
            sim.advance(Duration::from_millis(u64::from(a)));
            tick(driver, ledger);
        }
        13 => {
            if let Some(rule) = rule(a, b) {
                sim.misbehave(target, rule);
            } else {
                sim.behave(target);
            }
        }
        14 => {
            let port = rig.ctrls[usize::from(pick) % rig.ctrls.len()].1;
            match port {
                Some(port) if sim.address(target).is_some() && a & 1 == 0 => {
                    rig.reset_behind = true;
                    sim.link_flap(port);
                }
                _ => {
                    let events = driver.wait_ready(Duration::from_millis(u64::from(a)));
                    ledger.events(&events);
                }
            }
        }
        15 => {
            if a & 1 == 0 {
                sim.hang(target);
            } else {
                sim.unhang(target);
            }
        }
        16 => sim.ignore_config_writes(target, a & 1 == 0),
        17 => sim.glitch(target),
        18 => sim.memory_decoding_off(target),
        19 => {
            if let Some(port) = rig.port(a) {
                if b & 1 == 0 {
                    sim.bounce_presence(port);
                } else {
                    sim.bounce_link(port);
                }
            }
        }
        20 => {
            // Hot-add into a port whose slot is empty.
            let Some(port) = rig.port(a) else { return };
            let occupied = rig
                .ctrls
                .iter()
                .any(|&(c, p)| p == Some(port) && sim.is_present(c));
            if !occupied {
                let c = sim.hot_add(port, rig.spec.clone());
                rig.ctrls.push((c, Some(port)));
            }
        }
        22 => {
            if let Some(port) = rig.port(a) {
                if b & 1 == 0 {
                    sim.link_down(port);
                    rig.reset_behind = true;
                    rig.down.push(port);
                } else {
                    sim.link_up(port);
                    rig.down.retain(|&p| p != port);
                }
            }
        }
        _ => {
            rig.reset_behind = true;
            sim.power_loss();
        }
    }
}
