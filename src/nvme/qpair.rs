//! A submission/completion queue pair with its command table and PRP list
//! storage: the unit of the I/O path.

use crate::error::{Error, Result};
use crate::nvme::command::SubmissionEntry;
use crate::nvme::prp::{ListArea, PAGE_SIZE};
use crate::nvme::queue::{
    alloc_ring, CompletionRing, DoorbellBuffers, SubmissionRing, CQE_SIZE, SQE_SIZE,
};
use crate::nvme::shared_memory::SharedMemory;
use crate::nvme::tracker::{Finished, Taken, Tracker, INDEX_BITS};
use crate::platform::{DmaRegion, Instant, Platform, RegisterAccess};

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
        self.rings = Some((
            SubmissionRing::new(sq_mem, entries, self.qid, dstrd),
            CompletionRing::new(cq_mem, entries, self.qid, dstrd),
        ));
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
    /// `QueueFull` when the table or ring is full.
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
        self.tracker
            .allocate(opcode, tag, deadline, internal, buffer)
            .ok_or(Error::QueueFull { queue: self.qid })
    }

    /// The PRP list storage of the command `cid`.
    pub(crate) fn list_area(&self, cid: u16) -> Option<ListArea<'_>> {
        let memory = self.lists.as_ref()?;
        let index = (cid & ((1 << INDEX_BITS) - 1)) as usize;
        Some(ListArea::new(
            memory,
            index * self.list_stride,
            self.list_stride,
        ))
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
        self.drain(platform, regs, shadow, false, |_| {})
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
        self.drain(platform, regs, shadow, true, deliver)
    }

    fn drain<P: Platform, R: RegisterAccess>(
        &mut self,
        platform: &P,
        regs: &R,
        shadow: Option<&DoorbellBuffers>,
        take: bool,
        mut deliver: impl FnMut(Taken),
    ) -> usize {
        let Some((sq, cq)) = self.rings.as_mut() else {
            return 0;
        };
        let entries = sq.entries();
        let mut completed = 0;
        for _ in 0..entries {
            let Some(cqe) = cq.pop(platform) else { break };
            self.reaped += 1;
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
                    .complete(cqe.cid, cqe.status >> 1, cqe.dw0, take, &mut deliver);
            if finished == Finished::Unknown {
                self.faults.unknown_cid += 1;
                continue;
            }
            sq.set_head(cqe.sq_head);
            completed += 1;
        }
        cq.acknowledge(platform, regs, shadow);
        completed
    }

    /// Returns the ring and list memory to the platform. The command table
    /// stays, so failed commands can still be delivered.
    pub(crate) fn release<P: Platform>(&mut self, platform: &P) {
        self.release_with(|region| platform.dma_free(region));
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

fn sq_phys(sq: &SubmissionRing) -> u64 {
    sq.phys().as_u64()
}

fn cq_phys(cq: &CompletionRing) -> u64 {
    cq.phys().as_u64()
}
