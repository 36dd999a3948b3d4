//! A submission/completion queue pair with its command table and PRP list
//! storage: the unit of the I/O path.

use crate::error::{Error, Result};
use crate::nvme::command::SubmissionEntry;
use crate::nvme::kept::Kept;
use crate::nvme::prp::{self, ListArea, PAGE_SIZE};
use crate::nvme::queue::{
    alloc_ring, CompletionRing, DoorbellBuffers, SubmissionRing, CQE_SIZE, SQE_SIZE,
};
use crate::nvme::shared_memory::SharedMemory;
use crate::nvme::tracker::{Finished, Taken, Tracker, INDEX_BITS};
use crate::platform::{DmaRegion, Instant, PhysAddr, Platform, RegisterAccess};

/// Counts of what the device got wrong on one queue; each bad entry is
/// dropped, never trusted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct QueueFaults {
    /// Completions naming another submission queue.
    pub wrong_queue: u32,
    /// Completions with an SQ head outside the ring, past the tail the
    /// driver published, or behind the head reported before.
    pub bad_sq_head: u32,
    /// Completions naming no command in flight (unknown, stale or duplicate).
    pub unknown_cid: u32,
}

impl QueueFaults {
    /// Total bad completions.
    pub fn total(&self) -> u32 {
        self.wrong_queue + self.bad_sq_head + self.unknown_cid
    }
}

#[derive(Debug)]
pub(crate) struct QueuePair<const N: usize> {
    pub(crate) qid: u16,
    rings: Option<(SubmissionRing, CompletionRing)>,
    lists: Option<SharedMemory>,
    list_stride: usize,
    pub(crate) tracker: Tracker<N>,
    /// Completions consumed from the ring, ever (a liveness sign for the tick).
    pub(crate) reaped: u64,
    pub(crate) faults: QueueFaults,
    /// The deadline of the commands written since the SQ doorbell was last
    /// rung: stamped by the first of them, so the clock is read once per
    /// batch and every command's deadline starts no later than its submit.
    batch_deadline: Instant,
    /// The rings and lists when quarantined (see [`Kept`]).
    pub(crate) kept: Kept<3>,
}

/// A read or write as [`QueuePair::queue_transfer`] writes it.
#[derive(Clone, Copy)]
pub(crate) struct TransferEntry {
    pub(crate) opcode: u8,
    pub(crate) nsid: u32,
    pub(crate) lba: u64,
    /// Command dword 12: the block count (0's based) and flags (FUA).
    pub(crate) cdw12: u32,
}

impl TransferEntry {
    /// The SQE of this transfer as command `cid` with its PRPs.
    #[inline(always)]
    fn entry(self, cid: u16, prp1: u64, prp2: u64) -> SubmissionEntry {
        let mut sqe = SubmissionEntry::new(self.opcode);
        sqe.set_cid(cid);
        sqe.nsid = self.nsid;
        sqe.prp1 = prp1;
        sqe.prp2 = prp2;
        sqe.cdw10 = self.lba as u32;
        sqe.cdw11 = (self.lba >> 32) as u32;
        sqe.cdw12 = self.cdw12;
        sqe
    }
}

impl<const N: usize> QueuePair<N> {
    /// A queue pair without memory yet; its table holds `entries - 1`
    /// commands, as one ring slot always stays empty.
    pub(crate) fn new(qid: u16, entries: u16) -> Self {
        Self {
            qid,
            rings: None,
            lists: None,
            list_stride: 0,
            tracker: Tracker::new((entries as usize).min(N).saturating_sub(1)),
            reaped: 0,
            faults: QueueFaults::default(),
            batch_deadline: Instant::from_nanos(0),
            kept: Kept::new(),
        }
    }

    /// Allocates fresh rings of `entries` each and, when `list_stride` is
    /// non-zero, PRP list storage for every command slot. The command table
    /// is kept (a reset keeps undelivered completions).
    pub(crate) fn attach_rings<P: Platform>(
        &mut self,
        platform: &P,
        entries: u16,
        dstrd: u8,
        list_stride: usize,
    ) -> Result<()> {
        self.release(platform);
        let entries = entries.min(N as u16);
        let sq_mem = alloc_ring(platform, entries, SQE_SIZE)?;
        let cq_mem = match alloc_ring(platform, entries, CQE_SIZE) {
            Ok(m) => m,
            Err(e) => {
                sq_mem.release(platform);
                return Err(e);
            }
        };
        if list_stride > 0 {
            let bytes = (list_stride * entries as usize).next_multiple_of(PAGE_SIZE);
            match SharedMemory::alloc(platform, bytes, PAGE_SIZE) {
                Ok(m) => self.lists = Some(m),
                Err(e) => {
                    sq_mem.release(platform);
                    cq_mem.release(platform);
                    return Err(e);
                }
            }
        }
        self.list_stride = list_stride;
        // The platform gave at least the bytes asked for, page aligned; a
        // ring refuses memory that does not hold its entries all the same.
        let sq = SubmissionRing::new(sq_mem, entries, self.qid, dstrd);
        let cq = CompletionRing::new(cq_mem, entries, self.qid, dstrd);
        match (sq, cq) {
            (Ok(sq), Ok(cq)) => self.rings = Some((sq, cq)),
            (sq, cq) => {
                let sq = sq.map_or_else(|m| m, SubmissionRing::into_memory);
                let cq = cq.map_or_else(|m| m, CompletionRing::into_memory);
                sq.release(platform);
                cq.release(platform);
                if let Some(lists) = self.lists.take() {
                    lists.release(platform);
                }
                return Err(Error::Internal {
                    what: "ring memory does not hold its entries",
                });
            }
        }
        Ok(())
    }

    /// Number of ring entries.
    pub(crate) fn entries(&self) -> u16 {
        self.rings.as_ref().map_or(0, |(sq, _)| sq.entries())
    }

    /// Device addresses of the SQ and CQ rings, for the create commands.
    pub(crate) fn ring_addresses(&self) -> Option<(u64, u64)> {
        self.rings
            .as_ref()
            .map(|(sq, cq)| (sq_phys(sq), cq_phys(cq)))
    }

    /// Reserves a command slot, which takes `buffer` on success.
    /// `QueueFull` when the table or ring is full. A command that opens a
    /// batch stamps its deadline as the batch's (see `batch_deadline`).
    #[inline(always)]
    pub(crate) fn reserve(
        &mut self,
        opcode: u8,
        tag: u64,
        deadline: Instant,
        internal: bool,
        buffer: &mut Option<DmaRegion>,
    ) -> Result<u16> {
        let (sq, _) = self.rings.as_ref().ok_or(Error::Internal {
            what: "queue without rings",
        })?;
        if sq.is_full() {
            return Err(Error::QueueFull { queue: self.qid });
        }
        if !sq.has_unpublished() {
            // This command opens the batch: its deadline (taken from the
            // clock just now) stamps the transfers queued after it.
            self.batch_deadline = deadline;
        }
        self.tracker
            .allocate(opcode, tag, deadline, internal, buffer)
            .ok_or(Error::QueueFull { queue: self.qid })
    }

    /// The PRP list storage of the command `cid`.
    pub(crate) fn list_area(&self, cid: u16) -> Option<ListArea<'_>> {
        list_area(self.lists.as_ref(), self.list_stride, cid)
    }

    /// Queues a validated read or write of `bytes` at `phys`: reserves a
    /// command slot (which takes `buffer`), builds the PRPs, flushes the
    /// buffer for the device and writes the SQE (no doorbell yet). The
    /// deadline is `timeout_ns` from the first command of the batch (see
    /// `batch_deadline`). On failure nothing was queued and `buffer` stays.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn queue_transfer<P: Platform>(
        &mut self,
        platform: &P,
        command: TransferEntry,
        phys: PhysAddr,
        bytes: usize,
        tag: u64,
        internal: bool,
        timeout_ns: u64,
        buffer: &mut Option<DmaRegion>,
    ) -> Result<u16> {
        let Some((sq, _)) = self.rings.as_mut() else {
            return Err(no_rings());
        };
        let Some(next_tail) = sq.room() else {
            return Err(Error::QueueFull { queue: self.qid });
        };
        if !sq.has_unpublished() {
            self.batch_deadline =
                Instant::from_nanos(platform.now().as_nanos().saturating_add(timeout_ns));
        }
        let deadline = self.batch_deadline;
        let Some(cid) = self
            .tracker
            .allocate(command.opcode, tag, deadline, internal, buffer)
        else {
            return Err(Error::QueueFull { queue: self.qid });
        };
        // One or two pages inline; a list (or a refusal) out of line.
        let (prp1, prp2) = match prp::direct(phys, bytes) {
            Some(prps) => prps,
            None => match list_prps(
                platform,
                phys,
                bytes,
                self.lists.as_ref(),
                self.list_stride,
                cid,
            ) {
                Ok(prps) => prps,
                Err(e) => {
                    *buffer = self.tracker.cancel(cid);
                    return Err(e);
                }
            },
        };
        // Both directions, like a streaming DMA mapping: a write's data
        // reaches memory, and no dirty line of a read's buffer is evicted
        // over what the device writes.
        platform.dma_flush(phys, bytes);
        sq.push_then(&command.entry(cid, prp1, prp2), next_tail);
        Ok(cid)
    }

    /// Writes a prepared entry into the ring (no doorbell yet).
    pub(crate) fn push(&mut self, entry: &SubmissionEntry) {
        if let Some((sq, _)) = self.rings.as_mut() {
            sq.push(entry);
        }
    }

    /// Moves both doorbells to their shadow slots (after Doorbell Buffer
    /// Config succeeded); the rings' next MMIO writes depend on EventIdx.
    pub(crate) fn use_shadow_doorbells(&mut self) {
        if let Some((sq, cq)) = self.rings.as_mut() {
            sq.use_shadow();
            cq.use_shadow();
        }
    }

    /// Rings the SQ doorbell if entries are waiting (`shadow`: the
    /// controller's shadow doorbell buffers, if configured). Returns whether
    /// it wrote the MMIO register.
    pub(crate) fn publish<P: Platform, R: RegisterAccess>(
        &mut self,
        platform: &P,
        regs: &R,
        shadow: Option<&DoorbellBuffers>,
    ) -> bool {
        self.rings
            .as_mut()
            .is_some_and(|(sq, _)| sq.publish(platform, regs, shadow))
    }

    /// Whether nothing waits to be handed over: the done queue is empty and
    /// the device has posted no completion at the ring's head (peeked, not
    /// consumed). Most polls find this, and stop here.
    #[inline(always)]
    pub(crate) fn quiet<P: Platform>(&self, platform: &P) -> bool {
        !self.tracker.has_done()
            && self
                .rings
                .as_ref()
                .is_some_and(|(_, cq)| !cq.posted(platform))
    }

    /// Consumes posted completions (at most one ring's worth, so a device that
    /// keeps posting cannot hold the caller), validates each, and marks the
    /// commands done. Writes the CQ head doorbell at most once (see
    /// `CompletionRing::acknowledge`). Returns the number of
    /// commands completed.
    pub(crate) fn reap<P: Platform, R: RegisterAccess>(
        &mut self,
        platform: &P,
        regs: &R,
        shadow: Option<&DoorbellBuffers>,
    ) -> usize {
        self.drain::<false, _, _>(platform, regs, shadow, |_| {})
    }

    /// Like [`QueuePair::reap`], but hands each caller's command to
    /// `deliver` at once instead of queueing it (commands of blocking
    /// wrappers are still queued for their waiters).
    #[inline(always)]
    pub(crate) fn reap_delivering<P: Platform, R: RegisterAccess>(
        &mut self,
        platform: &P,
        regs: &R,
        shadow: Option<&DoorbellBuffers>,
        deliver: impl FnMut(Taken),
    ) -> usize {
        self.drain::<true, _, _>(platform, regs, shadow, deliver)
    }

    /// `TAKE`: hand callers' commands to `deliver` (else queue them).
    #[inline(always)]
    fn drain<const TAKE: bool, P: Platform, R: RegisterAccess>(
        &mut self,
        platform: &P,
        regs: &R,
        shadow: Option<&DoorbellBuffers>,
        mut deliver: impl FnMut(Taken),
    ) -> usize {
        let Some((sq, cq)) = self.rings.as_mut() else {
            return 0;
        };
        let entries = sq.entries();
        let mut completed = 0;
        let mut popped = 0;
        while popped < entries {
            let Some(cqe) = cq.pop(platform) else { break };
            popped += 1;
            if cqe.sq_id != self.qid {
                self.faults.wrong_queue += 1;
                continue;
            }
            if !sq.head_is_valid(cqe.sq_head) {
                self.faults.bad_sq_head += 1;
                continue;
            }
            let finished =
                self.tracker
                    .complete(cqe.cid, cqe.status >> 1, cqe.dw0, TAKE, &mut deliver);
            if finished == Finished::Unknown {
                self.faults.unknown_cid += 1;
                continue;
            }
            sq.set_head(cqe.sq_head);
            completed += 1;
        }
        self.reaped += popped as u64;
        cq.acknowledge(platform, regs, shadow);
        completed
    }

    /// Returns the ring and list memory to the platform. The command table
    /// stays, so failed commands can still be delivered.
    pub(crate) fn release<P: Platform>(&mut self, platform: &P) {
        self.release_with(|region| platform.dma_free(region));
    }

    /// Moves the ring and list memory into `kept`, counting it into
    /// `count` (quarantine).
    pub(crate) fn quarantine(&mut self, count: &mut impl FnMut(&DmaRegion)) {
        let mut kept = Kept::new();
        self.release_with(|region| {
            count(&region);
            kept.keep(region);
        });
        self.kept = kept;
    }

    /// Hands the ring and list memory to `keep` (quarantine, or the
    /// platform).
    pub(crate) fn release_with(&mut self, mut keep: impl FnMut(DmaRegion)) {
        if let Some((sq, cq)) = self.rings.take() {
            keep(sq.into_memory().into_region());
            keep(cq.into_memory().into_region());
        }
        if let Some(lists) = self.lists.take() {
            keep(lists.into_region());
        }
    }
}

/// The PRP list storage of the command `cid` in `lists`.
#[inline(always)]
fn list_area(lists: Option<&SharedMemory>, stride: usize, cid: u16) -> Option<ListArea<'_>> {
    let index = (cid & ((1 << INDEX_BITS) - 1)) as usize;
    Some(ListArea::new(lists?, index * stride, stride))
}

/// PRPs of a transfer that needs a list (in `cid`'s list storage), or why
/// it cannot be sent.
#[cold]
#[inline(never)]
fn list_prps<P: Platform>(
    platform: &P,
    phys: PhysAddr,
    bytes: usize,
    lists: Option<&SharedMemory>,
    stride: usize,
    cid: u16,
) -> Result<(u64, u64)> {
    prp::build(platform, phys, bytes, || list_area(lists, stride, cid))
}

#[cold]
fn no_rings() -> Error {
    Error::Internal {
        what: "queue without rings",
    }
}

fn sq_phys(sq: &SubmissionRing) -> u64 {
    sq.phys().as_u64()
}

fn cq_phys(cq: &CompletionRing) -> u64 {
    cq.phys().as_u64()
}

#[cfg(test)]
mod tests {
    use core::cell::Cell;

    use super::*;
    use crate::nvme::test_memory::{HeapDma, RecordingRegisters};

    /// A coherent platform whose clock the test sets.
    #[derive(Default)]
    struct Clock(Cell<u64>);

    impl Platform for Clock {
        type Registers = RecordingRegisters;

        fn dma_alloc(&self, _len: usize, _align: usize) -> Option<DmaRegion> {
            None
        }

        fn dma_free(&self, _region: DmaRegion) {}

        fn map_registers(&self, _phys: PhysAddr, _len: usize) -> Option<RecordingRegisters> {
            None
        }

        fn now(&self) -> Instant {
            Instant::from_nanos(self.0.get())
        }
    }

    const TIMEOUT: u64 = 1000;

    fn read(q: &mut QueuePair<8>, clock: &Clock) -> u16 {
        let entry = TransferEntry {
            opcode: 2,
            nsid: 1,
            lba: 0,
            cdw12: 0,
        };
        q.queue_transfer(
            clock,
            entry,
            PhysAddr::new(0x10_0000),
            512,
            0,
            false,
            TIMEOUT,
            &mut None,
        )
        .expect("queued")
    }

    fn deadline(q: &mut QueuePair<8>, cid: u16) -> u64 {
        q.tracker.in_flight_mut(cid).unwrap().deadline.as_nanos()
    }

    #[test]
    fn a_batch_shares_the_deadline_of_its_first_command_and_the_next_batch_restamps() {
        let mut sq_heap = HeapDma::new(4096, 0x1_0000);
        let mut cq_heap = HeapDma::new(4096, 0x2_0000);
        let mut q: QueuePair<8> = QueuePair::new(1, 8);
        q.rings = Some((
            SubmissionRing::new(sq_heap.shared(), 8, 1, 0).unwrap(),
            CompletionRing::new(cq_heap.shared(), 8, 1, 0).unwrap(),
        ));
        let clock = Clock::default();
        let regs = RecordingRegisters::default();
        clock.0.set(100);
        let first = read(&mut q, &clock);
        clock.0.set(150);
        let second = read(&mut q, &clock);
        assert_eq!(deadline(&mut q, first), 100 + TIMEOUT);
        assert_eq!(
            deadline(&mut q, second),
            100 + TIMEOUT,
            "stamped by the batch's first command, before its own submit"
        );
        assert!(q.publish(&clock, &regs, None));
        clock.0.set(400);
        let third = read(&mut q, &clock);
        assert_eq!(deadline(&mut q, third), 400 + TIMEOUT, "a new batch");
        assert!(q.publish(&clock, &regs, None));
        // A command of the generic path opens the next batch: its deadline,
        // taken from the clock by its caller, stamps the transfers after it.
        clock.0.set(600);
        let opener = q
            .reserve(2, 0, Instant::from_nanos(600 + TIMEOUT), true, &mut None)
            .unwrap();
        q.push(&SubmissionEntry::new(2));
        clock.0.set(700);
        let fourth = read(&mut q, &clock);
        assert_eq!(deadline(&mut q, opener), 600 + TIMEOUT);
        assert_eq!(deadline(&mut q, fourth), 600 + TIMEOUT);
    }
}
