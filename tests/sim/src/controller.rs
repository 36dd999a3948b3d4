//! The NVMe controller: registers, enable/reset/shutdown, doorbells.
//! Queue mechanics live in `queues.rs`, commands in `admin.rs` and `io.rs`.

use std::collections::{BTreeMap, VecDeque};

use bare_nvme::spec::regs;

use crate::counters::Stats;
use crate::memory::Arena;
use crate::namespace::Namespace;
use crate::queues::{Cq, Held, Rule, Sq};
use crate::spec::{ControllerSpec, Hold};

/// NVMe version 1.4.
const VERSION: u32 = 0x0001_0400;
/// Start of the MSI-X table in BAR0 (see the capability in `pci.rs`).
const MSIX_TABLE: u64 = 0x3000;

/// What the controller needs from the rest of the simulation for one access.
pub(crate) struct Env<'a> {
    pub(crate) mem: &'a Arena,
    pub(crate) stats: &'a mut Stats,
    pub(crate) now: u64,
    pub(crate) bus_master: bool,
    /// Memory completions returned to their callers (see `dma_refs.rs`).
    pub(crate) caller_owned: &'a mut Vec<crate::dma_refs::Range>,
}

pub(crate) struct Controller {
    pub(crate) spec: ControllerSpec,
    pub(crate) cc: u32,
    /// CSTS bits other than RDY (CFS, SHST, NSSRO).
    csts: u32,
    rdy: bool,
    /// Where RDY is heading and when it gets there.
    rdy_target: bool,
    rdy_at: u64,
    /// The last enable was refused (bad configuration): RDY stays 0.
    enable_failed: bool,
    /// CC.EN went 1 -> 0: queues and held commands go when RDY drops.
    reset_pending: bool,
    /// When a shutdown in progress reports complete.
    shst_at: Option<u64>,
    /// The next CSTS read returns 0 (a transient glitch).
    pub(crate) glitch_csts: bool,
    aqa: u32,
    asq: u64,
    acq: u64,
    intms: u32,
    pub(crate) sqs: BTreeMap<u16, Sq>,
    pub(crate) cqs: BTreeMap<u16, Cq>,
    /// Doorbell Buffer Config: (shadow doorbells, EventIdx) buffers.
    pub(crate) shadow: Option<(u64, u64)>,
    pub(crate) held: VecDeque<Held>,
    pub(crate) hold: Hold,
    pub(crate) hung: bool,
    /// The EventIdx slots are no longer updated (see
    /// [`crate::Sim::freeze_event_idx`]).
    pub(crate) event_idx_frozen: bool,
    /// Granted (SQs, CQs), 1-based, once Set Features Number of Queues ran.
    pub(crate) queues_granted: Option<(u16, u16)>,
    pub(crate) write_cache_enabled: bool,
    pub(crate) namespaces: Vec<Namespace>,
    pub(crate) rules: Vec<Rule>,
    /// The last CID completed on each SQ (for stale-CID misbehaviour).
    pub(crate) last_cid: BTreeMap<u16, u16>,
    /// Asynchronous events, SMART state, namespace changes, log lies.
    pub(crate) events: crate::events::Events,
}

impl Controller {
    pub(crate) fn new(spec: ControllerSpec) -> Self {
        let namespaces = spec
            .namespaces
            .iter()
            .cloned()
            .map(Namespace::new)
            .collect();
        let hold = spec.hold;
        let mut c = Self {
            spec,
            cc: 0,
            csts: 0,
            rdy: false,
            rdy_target: false,
            rdy_at: 0,
            enable_failed: false,
            reset_pending: false,
            shst_at: None,
            glitch_csts: false,
            aqa: 0,
            asq: 0,
            acq: 0,
            intms: 0,
            sqs: BTreeMap::new(),
            cqs: BTreeMap::new(),
            shadow: None,
            held: VecDeque::new(),
            hold,
            hung: false,
            event_idx_frozen: false,
            queues_granted: None,
            write_cache_enabled: true,
            namespaces,
            rules: Vec::new(),
            last_cid: BTreeMap::new(),
            events: crate::events::Events::new(),
        };
        c.write_cache_enabled = c.spec.volatile_cache;
        c
    }

    /// Puts the controller in the state firmware leaves behind: enabled, with
    /// 32-entry admin queues at `asq`/`acq` that already carried two commands.
    pub(crate) fn firmware_enable(&mut self, asq: u64, acq: u64) {
        self.cc = regs::Cc::enable_value(0);
        self.aqa = regs::aqa_value(32, 32);
        self.asq = asq;
        self.acq = acq;
        self.rdy = true;
        self.rdy_target = true;
        self.create_admin_queues();
        let sq = self.sqs.get_mut(&0).expect("admin SQ");
        sq.head = 2;
        sq.tail = 2;
        let cq = self.cqs.get_mut(&0).expect("admin CQ");
        cq.head = 2;
        cq.tail = 2;
    }

    pub(crate) fn cap(&self) -> u64 {
        let s = &self.spec;
        s.mqes as u64
            | 1 << 16 // contiguous queues required
            | (s.timeout as u64) << 24
            | (s.dstrd as u64) << 32
            | (s.nssrs as u64) << 36
            | 1 << 37 // NVM command set
            | (s.mpsmin as u64) << 48
            | (s.mpsmax as u64) << 52
    }

    /// The memory page size from CC.MPS.
    pub(crate) fn page_size(&self) -> usize {
        4096 << ((self.cc >> 7) & 0xF)
    }

    pub(crate) fn ready(&self) -> bool {
        self.rdy
    }

    /// Whether the controller fetches and executes commands.
    pub(crate) fn running(&self) -> bool {
        self.rdy && !self.hung && self.csts & regs::Csts::CFS.bits() == 0
    }

    /// Whether the controller may still master DMA as far as its own state
    /// goes: CC.EN or CSTS.RDY set (the bus side is checked by the caller).
    pub(crate) fn may_dma(&self) -> bool {
        self.cc & 1 != 0 || self.rdy
    }

    /// Lets CSTS.RDY follow CC.EN once the delay has passed, finishes a
    /// reset once RDY dropped, and a shutdown once its time came.
    pub(crate) fn update(&mut self, now: u64) {
        if self.shst_at.is_some_and(|at| now >= at) {
            self.shst_at = None;
            self.finish_shutdown();
        }
        let blocked = self.rdy_target && (self.spec.ready_never || self.enable_failed);
        if !self.hung && self.rdy != self.rdy_target && now >= self.rdy_at && !blocked {
            self.rdy = self.rdy_target;
        }
        if self.reset_pending && !self.rdy {
            self.reset_pending = false;
            self.reset_queues();
        }
    }

    fn finish_shutdown(&mut self) {
        self.csts = (self.csts & !regs::Csts::SHST_MASK) | regs::Csts::SHST_COMPLETE.bits();
        for ns in &mut self.namespaces {
            ns.flush();
        }
    }

    pub(crate) fn set_cfs(&mut self) {
        self.csts |= regs::Csts::CFS.bits();
    }

    pub(crate) fn read_reg(&mut self, offset: u64, env: &mut Env) -> u32 {
        self.update(env.now);
        let cap = self.cap();
        match offset {
            0x00 => cap as u32,
            0x04 => (cap >> 32) as u32,
            0x08 => VERSION,
            0x0C | 0x10 => self.intms,
            0x14 => self.cc,
            0x1C if self.glitch_csts => {
                self.glitch_csts = false;
                0
            }
            0x1C => self.csts | self.rdy as u32,
            0x24 => self.aqa,
            0x28 => self.asq as u32,
            0x2C => (self.asq >> 32) as u32,
            0x30 => self.acq as u32,
            0x34 => (self.acq >> 32) as u32,
            o if o % 4 != 0 => {
                env.stats
                    .protocol(format!("unaligned register read at {o:#x}"));
                !0
            }
            _ => 0,
        }
    }

    pub(crate) fn write_reg(&mut self, offset: u64, value: u32, env: &mut Env) {
        self.update(env.now);
        let enabled = self.cc & 1 != 0;
        match offset {
            0x0C => self.intms |= value,
            0x10 => self.intms &= !value,
            0x14 => self.write_cc(value, env),
            0x1C => self.csts &= !(value & regs::Csts::NSSRO.bits()),
            0x20 => {
                if value == regs::NSSR_RESET && self.spec.nssrs {
                    self.subsystem_reset();
                }
            }
            0x24 | 0x28 | 0x2C | 0x30 | 0x34 if enabled => {
                env.stats.protocol(format!(
                    "{}: admin queue register {offset:#x} written while enabled",
                    self.spec.serial
                ));
            }
            0x24 => self.aqa = value,
            0x28 => self.asq = (self.asq & !0xFFFF_FFFF) | value as u64,
            0x2C => self.asq = (self.asq & 0xFFFF_FFFF) | (value as u64) << 32,
            0x30 => self.acq = (self.acq & !0xFFFF_FFFF) | value as u64,
            0x34 => self.acq = (self.acq & 0xFFFF_FFFF) | (value as u64) << 32,
            o if (0x1000..MSIX_TABLE).contains(&o) => self.doorbell(o as usize, value, env),
            o if o >= MSIX_TABLE => {}
            o => env.stats.protocol(format!(
                "{}: write of {value:#x} to register {o:#x}",
                self.spec.serial
            )),
        }
    }

    fn write_cc(&mut self, value: u32, env: &mut Env) {
        let old = self.cc;
        self.cc = value;
        let (was, now_en) = (old & 1 != 0, value & 1 != 0);
        match (was, now_en) {
            (false, true) => self.enable(env),
            (true, false) => {
                // Queues (and held commands) live on until RDY drops: until
                // then the controller may still complete them into memory.
                self.reset_pending = true;
                self.shst_at = None;
                self.csts &= !(regs::Csts::CFS.bits() | regs::Csts::SHST_MASK);
                self.enable_failed = false;
                self.rdy_target = false;
                let delay = self.spec.disable_delay.unwrap_or(self.spec.ready_delay);
                self.rdy_at = env.now + delay.as_nanos() as u64;
                self.update(env.now);
            }
            (true, true) => {
                let shn = value & regs::Cc::SHN_MASK;
                if shn != 0 && old & regs::Cc::SHN_MASK == 0 {
                    // Shutdown: processing until the delay passed (or
                    // forever), then complete with the cache flushed.
                    self.csts =
                        (self.csts & !regs::Csts::SHST_MASK) | regs::Csts::SHST_OCCURRING.bits();
                    if !self.spec.shutdown_never {
                        self.shst_at = Some(env.now + self.spec.shutdown_delay.as_nanos() as u64);
                        self.update(env.now);
                    }
                }
                if (old ^ value) & !regs::Cc::SHN_MASK != 0 {
                    env.stats.protocol(format!(
                        "{}: CC changed from {old:#x} to {value:#x} while enabled",
                        self.spec.serial
                    ));
                }
            }
            (false, false) => {}
        }
    }

    fn enable(&mut self, env: &mut Env) {
        if self.reset_pending {
            // Re-enabled before RDY dropped: the reset happens now.
            self.reset_pending = false;
            self.reset_queues();
        }
        let cc = self.cc;
        let mps = ((cc >> 7) & 0xF) as u8;
        let asqs = (self.aqa & 0xFFF) + 1;
        let acqs = ((self.aqa >> 16) & 0xFFF) + 1;
        let page = (4096u64 << mps) - 1;
        let problem = if (cc >> 4) & 7 != 0 {
            Some("CC.CSS is not NVM")
        } else if mps < self.spec.mpsmin || mps > self.spec.mpsmax {
            Some("CC.MPS outside CAP.MPSMIN..MPSMAX")
        } else if (cc >> 16) & 0xF != 6 || (cc >> 20) & 0xF != 4 {
            Some("CC.IOSQES/IOCQES are not 64/16 bytes")
        } else if asqs < 2 || acqs < 2 {
            Some("AQA queue size below 2 entries")
        } else if self.asq == 0 || self.acq == 0 || self.asq & page != 0 || self.acq & page != 0 {
            Some("ASQ/ACQ zero or not page aligned")
        } else if !env.mem.contains(self.asq, asqs as usize * 64)
            || !env.mem.contains(self.acq, acqs as usize * 16)
        {
            Some("ASQ/ACQ not inside allocated DMA memory")
        } else {
            None
        };
        self.rdy_target = true;
        self.rdy_at = env.now + self.spec.ready_delay.as_nanos() as u64;
        self.enable_failed = problem.is_some();
        if let Some(p) = problem {
            env.stats
                .protocol(format!("{}: enable refused: {p}", self.spec.serial));
            return;
        }
        self.create_admin_queues();
        self.update(env.now);
    }

    fn create_admin_queues(&mut self) {
        let asqs = ((self.aqa & 0xFFF) + 1) as u16;
        let acqs = (((self.aqa >> 16) & 0xFFF) + 1) as u16;
        self.cqs.insert(0, Cq::new(self.acq, acqs));
        self.sqs.insert(0, Sq::new(self.asq, asqs, 0));
    }

    /// Controller reset: queues, in-flight commands and negotiated features
    /// are gone.
    pub(crate) fn reset_queues(&mut self) {
        self.sqs.clear();
        self.cqs.clear();
        self.held.clear();
        self.shadow = None;
        self.queues_granted = None;
        self.write_cache_enabled = self.spec.volatile_cache;
        self.last_cid.clear();
        self.events.reset();
    }

    /// Back to power-on register values.
    pub(crate) fn power_on_reset(&mut self) {
        self.reset_queues();
        self.cc = 0;
        self.csts = 0;
        self.rdy = false;
        self.rdy_target = false;
        self.enable_failed = false;
        self.reset_pending = false;
        self.shst_at = None;
        self.glitch_csts = false;
        self.aqa = 0;
        self.asq = 0;
        self.acq = 0;
        self.intms = 0;
    }

    /// NVM subsystem reset: power-on values plus CSTS.NSSRO.
    pub(crate) fn subsystem_reset(&mut self) {
        self.power_on_reset();
        self.csts |= regs::Csts::NSSRO.bits();
    }

    fn doorbell(&mut self, offset: usize, value: u32, env: &mut Env) {
        let serial = &self.spec.serial;
        let Some((qid, is_cq)) = self.spec.doorbell_index(offset) else {
            env.stats
                .protocol(format!("{serial}: write to {offset:#x}, not a doorbell"));
            return;
        };
        if is_cq {
            env.stats.c.cq_doorbell_writes += 1;
        } else {
            env.stats.c.sq_doorbell_writes += 1;
        }
        if self.cc & 1 == 0 || (!self.rdy && !self.hung) {
            env.stats.protocol(format!(
                "{serial}: doorbell {offset:#x} rung while disabled"
            ));
            return;
        }
        if is_cq {
            self.cq_head_doorbell(qid, value, env);
        } else {
            self.sq_tail_doorbell(qid, value, env);
        }
    }
}
