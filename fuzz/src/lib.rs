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
//! On top of that the input picks the controller's capabilities, a
//! misbehaviour rule of the simulated controller and a script of operations
//! (submissions, polls, ticks, blocking I/O, removal, CFS, link flaps, hangs,
//! detach).
//!
//! Invariants checked (a panic is a finding):
//! - no panic and no out-of-bounds access in the driver (the sim panics on a
//!   double or bogus DMA free),
//! - no hang: at most [`CALL_BUDGET`] platform calls per input, and the final
//!   detach reaches a terminal state within a bounded number of ticks,
//! - every submitted command completes exactly once (a ledger of tags: a
//!   second completion, or one for a tag never submitted, fails; after
//!   teardown every command has been delivered),
//! - each controller reports at most one terminal event (Removed or Failed),
//! - no DMA memory leaked once the driver is dropped.
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
    Config, ControllerId, DmaRegion, Driver, DriverConfig, Event, Instant, IoOp, PhysAddr,
    Platform, RegisterAccess, State,
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
        let lie = *self.lies.get(self.next)?;
        if lie.at > self.calls {
            return None;
        }
        self.next += 1;
        Some(lie)
    }

    /// The device writes into DMA memory the driver gave it.
    fn scribble(&self, lie: Lie) {
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
        lie.map_or(value, |lie| lie_about(value, lie))
    }

    fn write32(&self, offset: usize, value: u32) {
        let lie = self.chaos.borrow_mut().call();
        self.inner.write32(offset, value);
        if let Some(lie) = lie {
            self.chaos.borrow().scribble(lie);
        }
    }
}

impl ConfigRegionAccess for FuzzConfig {
    unsafe fn read(&self, address: PciAddress, offset: u16) -> u32 {
        let lie = self.chaos.borrow_mut().call();
        // SAFETY: forwarded as received; the sim has no unsafe requirements.
        let value = unsafe { self.inner.read(address, offset) };
        lie.map_or(value, |lie| lie_about(value, lie))
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

type FuzzDriver = Driver<FuzzPlatform, FuzzConfig, 2>;

/// What the harness knows about the commands it submitted.
#[derive(Default)]
struct Ledger {
    next_tag: u64,
    /// Submitted, not yet delivered: which controller has them.
    outstanding: HashMap<u64, ControllerId>,
    delivered: u64,
    /// Buffers handed back, to be freed at the end.
    returned: Vec<DmaRegion>,
    terminal: HashMap<ControllerId, u32>,
}

impl Ledger {
    fn delivered(&mut self, id: ControllerId, tag: u64, buffer: Option<DmaRegion>) {
        assert_eq!(
            self.outstanding.remove(&tag),
            Some(id),
            "command {tag} completed twice, on the wrong controller, or was never submitted"
        );
        self.delivered += 1;
        self.returned.extend(buffer);
    }

    fn events(&mut self, events: &[Event]) {
        for e in events {
            if let Event::Removed { id, .. } | Event::Failed { id, .. } = *e {
                let n = self.terminal.entry(id).or_default();
                *n += 1;
                assert_eq!(*n, 1, "{id:?} reported its end twice: {events:?}");
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
            c.poll(q, |done| ledger.delivered(id, done.tag, done.buffer));
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
}

/// Runs one input; panics when the driver breaks an invariant.
pub fn run(data: &[u8]) -> Reached {
    let mut input = Input { data };
    let flags = input.u8();
    let mqes = input.u8();
    let timeout = input.u8();
    let mdts = input.u8();
    let queues = input.u8();
    let geometry = input.u8();
    let dstrd = input.u8();
    let ops = input.u8() % 48;
    let (rule_kind, rule_times) = (input.u8(), input.u8());

    let block_size = if geometry & 1 == 0 { 512 } else { 4096 };
    let mut spec = ControllerSpec::default()
        .serial("fuzz")
        .mqes(if mqes == 0 { 2047 } else { u16::from(mqes) - 1 })
        .timeout(timeout)
        .mdts(mdts)
        .max_ioqpairs(u16::from(queues >> 4).max(1))
        .dstrd(dstrd & 3)
        .firmware_enabled(flags & 1 != 0)
        .shadow_doorbells(flags & 2 != 0)
        .volatile_cache(flags & 4 != 0)
        .hold(if flags & 8 != 0 { Hold::Io } else { Hold::None });
    for n in 0..1 + (geometry >> 1) % 3 {
        spec = spec.namespace(NamespaceSpec::new(64 + u64::from(n) * 32, block_size));
    }
    let sim = if flags & 16 != 0 {
        Sim::builder()
            .controller_on_bus0(spec)
            .clock_step(Duration::from_micros(50))
            .arena_size(2 << 20)
            .build()
    } else {
        Sim::builder()
            .root_port(true)
            .controller_on_port(PortId(0), spec)
            .clock_step(Duration::from_micros(50))
            .arena_size(2 << 20)
            .build()
    };
    // The run checks teardown itself; a lying device may provoke what the
    // simulation's own end check rejects.
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
            max_transfer: 8 << 10,
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
    let mut ledger = Ledger::default();

    let mut reached = Reached::default();
    if driver.scan().is_ok() {
        let events = driver.wait_ready(Duration::from_millis(500));
        ledger.events(&events);
        reached.ready = driver.ready_controllers().next().is_some();
        for op in &script {
            step(
                &sim,
                &platform,
                &mut driver,
                &mut ledger,
                *op,
                flags & 16 == 0,
            );
        }
    }

    // Teardown: detach everything, wait for the end, collect every command.
    let ids: Vec<ControllerId> = driver.controllers().collect();
    for id in &ids {
        let _ = driver.begin_detach(*id);
    }
    let finished = |driver: &mut FuzzDriver| {
        ids.iter().all(|id| {
            driver.controller(*id).map_or(true, |c| {
                matches!(c.state(), State::Detached | State::Removed | State::Failed)
            })
        })
    };
    let mut ticks = 0;
    while !finished(&mut driver) {
        tick(&mut driver, &mut ledger);
        ticks += 1;
        assert!(ticks < DETACH_TICKS, "detach never finishes");
    }
    for _ in 0..4 {
        tick(&mut driver, &mut ledger);
    }
    poll_all(&mut driver, &mut ledger);
    // A finished controller's entry may be recycled for a new attach once
    // the table is full; what it still held for the caller went back to the
    // platform with it (the leak check below covers the memory).
    ledger
        .outstanding
        .retain(|_, id| driver.controller(*id).is_ok());
    assert!(
        ledger.outstanding.is_empty(),
        "commands never completed after teardown: {:?}",
        ledger.outstanding
    );
    drop(driver);
    for buffer in ledger.returned.drain(..) {
        platform.dma_free(buffer);
    }
    let c = sim.counters();
    assert_eq!(
        (c.dma_regions, c.dma_bytes),
        (0, 0),
        "DMA memory leaked after teardown"
    );
    let chaos = chaos.borrow();
    reached.submitted = ledger.next_tag;
    reached.delivered = ledger.delivered;
    reached.lies = chaos.next;
    reached.calls = chaos.calls;
    reached
}

/// One scripted operation.
fn step(
    sim: &Sim,
    platform: &FuzzPlatform,
    driver: &mut FuzzDriver,
    ledger: &mut Ledger,
    op: [u8; OP_BYTES],
    on_port: bool,
) {
    let Some(id) = driver.controllers().next() else {
        return;
    };
    let [kind, a, b, c] = op;
    if std::env::var_os("FUZZ_TRACE").is_some() {
        let state = driver.controller(id).map(|c| c.state());
        eprintln!("op {} {a} {b} {c} in {state:?}", kind % 16);
    }
    match kind % 16 {
        0 | 1 => {
            let Ok(ctrl) = driver.controller(id) else {
                return;
            };
            let Some(ns) = ctrl.namespaces().first().copied() else {
                return;
            };
            let queue = u16::from(a & 3);
            let blocks = 1 + u32::from(b & 7);
            let lba = u64::from(c) % (ns.blocks() + 4);
            let len = blocks as usize * ns.block_size() as usize;
            let Some(buffer) = platform.dma_alloc(len, 4096) else {
                return;
            };
            let nsid = ns.id();
            let op = if kind % 16 == 0 {
                IoOp::Read { nsid, lba, blocks }
            } else {
                IoOp::Write { nsid, lba, blocks }
            };
            let tag = ledger.next_tag;
            ledger.next_tag += 1;
            match ctrl.submit(queue, op, Some(buffer), tag) {
                Ok(_) => {
                    ledger.outstanding.insert(tag, id);
                }
                Err(rejected) => ledger.returned.extend(rejected.buffer),
            }
        }
        2 => poll_all(driver, ledger),
        3 => tick(driver, ledger),
        4 | 5 => {
            let Ok(ctrl) = driver.controller(id) else {
                return;
            };
            let Some(ns) = ctrl.namespaces().first().copied() else {
                return;
            };
            let len = (1 + usize::from(b & 3)) * ns.block_size() as usize;
            let Some(mut buffer) = platform.dma_alloc(len, 4096) else {
                return;
            };
            let lba = u64::from(c) % ns.blocks();
            let _ = if kind % 16 == 4 {
                ctrl.read(ns.id(), lba, &mut buffer)
            } else {
                ctrl.write(ns.id(), lba, &buffer)
            };
            platform.dma_free(buffer);
        }
        6 => {
            if let Ok(ctrl) = driver.controller(id) {
                let nsid = ctrl.namespaces().first().map_or(1, |n| n.id());
                let _ = ctrl.flush(nsid);
            }
        }
        7 => {
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
            let tag = ledger.next_tag;
            ledger.next_tag += 1;
            match ctrl.submit(u16::from(a >> 2 & 3), op, None, tag) {
                Ok(_) => {
                    ledger.outstanding.insert(tag, id);
                }
                Err(rejected) => ledger.returned.extend(rejected.buffer),
            }
        }
        8 => {
            sim.complete_held(usize::from(a));
        }
        9 => sim.set_cfs(CtrlId(0)),
        10 => sim.surprise_remove(CtrlId(0)),
        11 => {
            let _ = driver.begin_detach(id);
        }
        12 => {
            sim.advance(Duration::from_millis(u64::from(a)));
            tick(driver, ledger);
        }
        13 => {
            if let Some(rule) = rule(a, b) {
                sim.misbehave(CtrlId(0), rule);
            } else {
                sim.behave(CtrlId(0));
            }
        }
        14 => {
            if on_port && sim.address(CtrlId(0)).is_some() && a & 1 == 0 {
                sim.link_flap(PortId(0));
            } else {
                let events = driver.wait_ready(Duration::from_millis(u64::from(a)));
                ledger.events(&events);
            }
        }
        _ => {
            if a & 1 == 0 {
                sim.hang(CtrlId(0));
            } else {
                sim.unhang(CtrlId(0));
            }
        }
    }
}
