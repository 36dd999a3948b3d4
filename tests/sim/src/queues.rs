//! Queue mechanics: doorbells (MMIO and shadow), fetching submissions,
//! posting completions with phase and backpressure, held commands, and the
//! completion misbehaviours a test can inject.

use bare_nvme::spec::command::{admin, sc, sct, CompletionEntry, Status, SubmissionEntry};

use crate::controller::{Controller, Env};
use crate::spec::Hold;

/// A way to corrupt a completion, for testing the driver's validation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Misbehaviour {
    /// The command is consumed but its completion is never posted.
    NeverComplete,
    /// The completion is posted twice.
    CompleteTwice,
    /// The completion carries a CID that is not outstanding.
    UnknownCid,
    /// The completion carries the CID of the previous, already completed
    /// command of the same SQ (instead of its own).
    StaleCid,
    /// The completion names another submission queue.
    WrongSqId,
    /// The completion is written with the previous phase tag, so the host
    /// cannot see it (nor anything after it in that queue).
    WrongPhase,
    /// The completion reports an SQ head beyond the queue size.
    SqHeadOutOfRange,
    /// The completion reports an SQ head one past the tail the host wrote:
    /// inside the ring, but naming entries the host never submitted.
    SqHeadPastTail,
    /// The completion reports an SQ head one behind the head this queue's
    /// previous completion reported.
    SqHeadBackwards,
}

/// Which queues a [`Rule`] applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Queues {
    /// The admin queue only.
    Admin,
    /// I/O queues only.
    Io,
    /// Every queue.
    Any,
}

/// A misbehaviour applied to the next `times` completions of some queues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// What goes wrong.
    pub what: Misbehaviour,
    /// Where.
    pub queues: Queues,
    /// How many more completions it hits (`u32::MAX`: forever).
    pub times: u32,
}

impl Misbehaviour {
    /// The next I/O completion misbehaves.
    pub fn once(self) -> Rule {
        Rule {
            what: self,
            queues: Queues::Io,
            times: 1,
        }
    }
    /// Every I/O completion misbehaves.
    pub fn always(self) -> Rule {
        Rule {
            what: self,
            queues: Queues::Io,
            times: u32::MAX,
        }
    }
}

impl Rule {
    /// Applies the rule to `queues` instead of I/O queues.
    pub fn on(mut self, queues: Queues) -> Self {
        self.queues = queues;
        self
    }
    /// Applies the rule to the next `n` completions.
    pub fn times(mut self, n: u32) -> Self {
        self.times = n;
        self
    }
}

pub(crate) struct Sq {
    pub(crate) base: u64,
    pub(crate) size: u16,
    pub(crate) cqid: u16,
    pub(crate) head: u16,
    pub(crate) tail: u16,
    /// The SQ head the last completion of this queue carried.
    pub(crate) reported: u16,
}

impl Sq {
    pub(crate) fn new(base: u64, size: u16, cqid: u16) -> Self {
        Self {
            base,
            size,
            cqid,
            head: 0,
            tail: 0,
            reported: 0,
        }
    }
}

pub(crate) struct Cq {
    pub(crate) base: u64,
    pub(crate) size: u16,
    pub(crate) head: u16,
    pub(crate) tail: u16,
    pub(crate) phase: bool,
    /// Completions waiting for room (the CQ was full).
    pub(crate) backlog: std::collections::VecDeque<(CompletionEntry, bool)>,
}

impl Cq {
    pub(crate) fn new(base: u64, size: u16) -> Self {
        Self {
            base,
            size,
            head: 0,
            tail: 0,
            phase: true,
            backlog: Default::default(),
        }
    }
    fn full(&self) -> bool {
        (self.tail + 1) % self.size == self.head
    }
    fn used(&self) -> u16 {
        (self.tail + self.size - self.head) % self.size
    }
}

/// A command fetched but not completed (held mode).
pub(crate) struct Held {
    pub(crate) seq: u64,
    pub(crate) sqid: u16,
    pub(crate) sqe: SubmissionEntry,
}

/// What executing a command yields.
pub(crate) struct Outcome {
    pub(crate) status: Status,
    pub(crate) dw0: u32,
}

impl Outcome {
    pub(crate) fn ok(dw0: u32) -> Self {
        Self {
            status: Status::new(sct::GENERIC, sc::SUCCESS),
            dw0,
        }
    }
    pub(crate) fn err(status: Status) -> Self {
        Self { status, dw0: 0 }
    }
}

fn sqe_from_bytes(b: &[u8; 64]) -> SubmissionEntry {
    let d = |i: usize| u32::from_le_bytes(b[i * 4..i * 4 + 4].try_into().expect("4"));
    let q = |i: usize| d(i) as u64 | (d(i + 1) as u64) << 32;
    SubmissionEntry {
        cdw0: d(0),
        nsid: d(1),
        cdw2: d(2),
        cdw3: d(3),
        mptr: q(4),
        prp1: q(6),
        prp2: q(8),
        cdw10: d(10),
        cdw11: d(11),
        cdw12: d(12),
        cdw13: d(13),
        cdw14: d(14),
        cdw15: d(15),
    }
}

impl Controller {
    fn shadow_slot(&self, qid: u16, is_cq: bool) -> Option<(u64, u64)> {
        let (dbs, eis) = self.shadow?;
        // The admin queue always uses MMIO doorbells (as Linux uses them).
        if qid == 0 {
            return None;
        }
        let stride = 4u64 << self.spec.dstrd;
        let off = (2 * qid as u64 + is_cq as u64) * stride;
        Some((dbs + off, eis + off))
    }

    /// Reads a shadow doorbell value, validated against the queue size.
    fn shadow_value(&self, qid: u16, is_cq: bool, size: u16, env: &mut Env) -> Option<u16> {
        let (db, _) = self.shadow_slot(qid, is_cq)?;
        let Ok(v) = env.mem.read_u32(db) else {
            env.stats.c.wild_dma += 1;
            return None;
        };
        if v >= size as u32 {
            env.stats.protocol(format!(
                "{}: shadow doorbell of queue {qid} holds {v}, size {size}",
                self.spec.serial
            ));
            return None;
        }
        Some(v as u16)
    }

    fn write_event_idx(&self, qid: u16, is_cq: bool, value: u16, env: &mut Env) {
        if self.event_idx_frozen {
            return;
        }
        if let Some((_, ei)) = self.shadow_slot(qid, is_cq) {
            if env.write_into_caller_memory(&self.spec.serial, ei, 4) {
                return;
            }
            if env.mem.write_u32(ei, value as u32).is_err() {
                env.stats.c.wild_dma += 1;
            }
        }
    }

    pub(crate) fn sq_tail_doorbell(&mut self, qid: u16, value: u32, env: &mut Env) {
        let Some(sq) = self.sqs.get_mut(&qid) else {
            env.stats.protocol(format!(
                "{}: SQ {qid} doorbell, no such queue",
                self.spec.serial
            ));
            return;
        };
        if value >= sq.size as u32 {
            let size = sq.size;
            env.stats.protocol(format!(
                "{}: SQ {qid} tail {value} beyond size {size}",
                self.spec.serial
            ));
            return;
        }
        sq.tail = value as u16;
        self.process_sq(qid, env);
    }

    pub(crate) fn cq_head_doorbell(&mut self, qid: u16, value: u32, env: &mut Env) {
        let serial = self.spec.serial.clone();
        let Some(cq) = self.cqs.get_mut(&qid) else {
            env.stats
                .protocol(format!("{serial}: CQ {qid} doorbell, no such queue"));
            return;
        };
        if value >= cq.size as u32 {
            let size = cq.size;
            env.stats.protocol(format!(
                "{serial}: CQ {qid} head {value} beyond size {size}"
            ));
            return;
        }
        let advance = (value as u16 + cq.size - cq.head) % cq.size;
        if advance > cq.used() {
            let (head, used) = (cq.head, cq.used());
            env.stats.protocol(format!(
                "{serial}: CQ {qid} head {value} passes posted entries (head {head}, {used} posted)"
            ));
            return;
        }
        cq.head = value as u16;
        self.drain_backlog(qid, env);
    }

    /// Consumes new submissions of one SQ (shadow tail first, if configured).
    pub(crate) fn process_sq(&mut self, qid: u16, env: &mut Env) {
        if !self.running() {
            return;
        }
        if !env.bus_master {
            env.stats.c.dma_blocked += 1;
            return;
        }
        let Some(size) = self.sqs.get(&qid).map(|s| s.size) else {
            return;
        };
        if let Some(t) = self.shadow_value(qid, false, size, env) {
            self.sqs.get_mut(&qid).expect("exists").tail = t;
        }
        if qid != 0 {
            self.note_io_in_flight(env);
        }
        loop {
            let Some(sq) = self.sqs.get_mut(&qid) else {
                return;
            };
            if sq.head == sq.tail {
                let tail = sq.tail;
                self.write_event_idx(qid, false, tail, env);
                return;
            }
            let addr = sq.base + sq.head as u64 * 64;
            sq.head = (sq.head + 1) % sq.size;
            let mut raw = [0u8; 64];
            if env.mem.read(addr, &mut raw).is_err() {
                env.stats.c.wild_dma += 1;
                env.stats.protocol(format!(
                    "{}: SQ {qid} entry at {addr:#x} is not DMA memory",
                    self.spec.serial
                ));
                continue;
            }
            let sqe = sqe_from_bytes(&raw);
            let named = self.command_memory(qid, &sqe, env.mem);
            env.fetched(&named);
            // A request for events waits for one, whatever is held.
            let event_request = qid == 0 && sqe.opcode() == admin::ASYNC_EVENT_REQUEST;
            let held = !event_request
                && match self.hold {
                    Hold::None => false,
                    Hold::Io => qid != 0,
                    Hold::All => true,
                };
            if held {
                let seq = env.stats.next_seq;
                env.stats.next_seq += 1;
                self.held.push_back(Held {
                    seq,
                    sqid: qid,
                    sqe,
                });
            } else {
                self.execute_and_post(qid, sqe, env);
            }
        }
    }

    /// Counts the I/O commands announced and not yet completed: entries
    /// between head and tail of every I/O submission queue, and the held
    /// ones (executed commands complete at once).
    fn note_io_in_flight(&self, env: &mut Env) {
        let announced: u64 = self
            .sqs
            .iter()
            .filter(|(&qid, _)| qid != 0)
            .map(|(_, sq)| ((sq.tail + sq.size - sq.head) % sq.size) as u64)
            .sum();
        let held = self.held.iter().filter(|h| h.sqid != 0).count() as u64;
        let c = &mut env.stats.c;
        c.io_in_flight_max = c.io_in_flight_max.max(announced + held);
    }

    /// Runs whatever the shadow doorbells announce, and posts backlogs.
    pub(crate) fn poll_shadow(&mut self, env: &mut Env) {
        if self.shadow.is_none() || !self.running() {
            return;
        }
        let cqids: Vec<u16> = self.cqs.keys().copied().collect();
        for qid in cqids {
            self.drain_backlog(qid, env);
        }
        let sqids: Vec<u16> = self.sqs.keys().copied().collect();
        for qid in sqids {
            self.process_sq(qid, env);
        }
    }

    pub(crate) fn execute_and_post(&mut self, sqid: u16, sqe: SubmissionEntry, env: &mut Env) {
        let outcome = if sqid == 0 {
            env.stats.c.admin_commands[sqe.opcode() as usize] += 1;
            self.execute_admin(sqe, env)
        } else {
            env.stats.c.io_commands[sqe.opcode() as usize] += 1;
            self.execute_io(sqe, env)
        };
        if let Some(o) = outcome {
            self.complete(sqid, sqe.cid(), o, env);
        }
    }

    /// Builds the completion of command `cid` from `sqid` and posts it,
    /// applying any misbehaviour rule that matches.
    pub(crate) fn complete(&mut self, sqid: u16, cid: u16, o: Outcome, env: &mut Env) {
        let Some(sq) = self.sqs.get(&sqid) else {
            return;
        };
        let (cqid, sq_head, sq_size) = (sq.cqid, sq.head, sq.size);
        let (sq_tail, reported) = (sq.tail, sq.reported);
        let mut cqe = CompletionEntry {
            dw0: o.dw0,
            dw1: 0,
            sq_head,
            sq_id: sqid,
            cid,
            status: o.status.to_field() << 1,
        };
        let previous = self.last_cid.insert(sqid, cid);
        let mut copies = 1;
        let mut wrong_phase = false;
        if let Some(rule) = self.take_rule(sqid) {
            match rule {
                Misbehaviour::NeverComplete => copies = 0,
                Misbehaviour::CompleteTwice => copies = 2,
                Misbehaviour::UnknownCid => {
                    let outstanding: Vec<u16> = self
                        .held
                        .iter()
                        .filter(|h| h.sqid == sqid)
                        .map(|h| h.sqe.cid())
                        .collect();
                    let mut c = cid ^ 0x8000;
                    while c == cid || outstanding.contains(&c) {
                        c = c.wrapping_add(1);
                    }
                    cqe.cid = c;
                }
                Misbehaviour::StaleCid => cqe.cid = previous.unwrap_or(cid ^ 0x8000),
                Misbehaviour::WrongSqId => cqe.sq_id = sqid.wrapping_add(1),
                Misbehaviour::WrongPhase => wrong_phase = true,
                Misbehaviour::SqHeadOutOfRange => cqe.sq_head = sq_size.wrapping_add(5),
                Misbehaviour::SqHeadPastTail => cqe.sq_head = (sq_tail + 1) % sq_size,
                Misbehaviour::SqHeadBackwards => {
                    cqe.sq_head = (reported + sq_size - 1) % sq_size;
                }
            }
        }
        if copies > 0 {
            if let Some(sq) = self.sqs.get_mut(&sqid) {
                sq.reported = cqe.sq_head;
            }
        }
        for _ in 0..copies {
            self.post(cqid, cqe, wrong_phase, env);
        }
    }

    fn take_rule(&mut self, sqid: u16) -> Option<Misbehaviour> {
        let rule = self.rules.iter_mut().find(|r| {
            r.times > 0
                && match r.queues {
                    Queues::Admin => sqid == 0,
                    Queues::Io => sqid != 0,
                    Queues::Any => true,
                }
        })?;
        if rule.times != u32::MAX {
            rule.times -= 1;
        }
        let what = rule.what;
        self.rules.retain(|r| r.times > 0);
        Some(what)
    }

    fn post(&mut self, cqid: u16, cqe: CompletionEntry, wrong_phase: bool, env: &mut Env) {
        let Some(cq) = self.cqs.get_mut(&cqid) else {
            return;
        };
        cq.backlog.push_back((cqe, wrong_phase));
        self.drain_backlog(cqid, env);
    }

    /// Takes the CQ head from the shadow doorbell, if configured, and
    /// publishes it as EventIdx.
    fn sync_cq_shadow(&mut self, cqid: u16, env: &mut Env) {
        let Some(size) = self.cqs.get(&cqid).map(|c| c.size) else {
            return;
        };
        if self.shadow.is_some() && !env.bus_master {
            // Reading the shadow head and writing EventIdx are DMA too.
            env.stats.c.dma_blocked += 1;
            return;
        }
        let Some(h) = self.shadow_value(cqid, true, size, env) else {
            return;
        };
        let cq = self.cqs.get_mut(&cqid).expect("exists");
        let advance = (h + cq.size - cq.head) % cq.size;
        if advance > cq.used() {
            let (head, used) = (cq.head, cq.used());
            env.stats.protocol(format!(
                "{}: shadow CQ {cqid} head {h} passes posted entries (head {head}, {used} posted)",
                self.spec.serial
            ));
            return;
        }
        cq.head = h;
        self.write_event_idx(cqid, true, h, env);
    }

    /// Writes waiting completions while the CQ has room.
    fn drain_backlog(&mut self, cqid: u16, env: &mut Env) {
        self.sync_cq_shadow(cqid, env);
        match self.cqs.get(&cqid) {
            Some(cq) if !cq.backlog.is_empty() => {}
            _ => return,
        }
        let cq = self.cqs.get_mut(&cqid).expect("exists");
        while !cq.full() {
            let Some((cqe, wrong_phase)) = cq.backlog.pop_front() else {
                break;
            };
            if !env.bus_master {
                env.stats.c.dma_blocked += 1;
                continue;
            }
            // The phase tag is decided when the entry is written.
            let phase = cq.phase != wrong_phase;
            let mut b = [0u8; 16];
            b[0..4].copy_from_slice(&cqe.dw0.to_le_bytes());
            b[4..8].copy_from_slice(&cqe.dw1.to_le_bytes());
            b[8..10].copy_from_slice(&cqe.sq_head.to_le_bytes());
            b[10..12].copy_from_slice(&cqe.sq_id.to_le_bytes());
            b[12..14].copy_from_slice(&cqe.cid.to_le_bytes());
            b[14..16].copy_from_slice(&(cqe.status & !1 | phase as u16).to_le_bytes());
            let addr = cq.base + cq.tail as u64 * 16;
            if env.write_into_caller_memory(&self.spec.serial, addr, 16) {
                continue;
            }
            if env.mem.write(addr, &b).is_err() {
                env.stats.c.wild_dma += 1;
                continue;
            }
            env.stats.c.completions_posted += 1;
            cq.tail = (cq.tail + 1) % cq.size;
            if cq.tail == 0 {
                cq.phase = !cq.phase;
            }
        }
    }

    /// Executes and completes the oldest held command.
    pub(crate) fn release_held(&mut self, env: &mut Env) -> bool {
        if !self.running() || !env.bus_master {
            return false;
        }
        let Some(h) = self.held.pop_front() else {
            return false;
        };
        self.execute_and_post(h.sqid, h.sqe, env);
        true
    }
}
