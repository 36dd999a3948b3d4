//! Submission and completion rings in DMA memory, and their doorbells.
//!
//! The rings are shared with the device: the driver only touches them through
//! volatile accesses, publishes submissions with a release fence before the
//! doorbell write, and reads a completion's body only after its phase tag was
//! seen, behind an acquire fence.

use core::sync::atomic::{fence, Ordering};

use crate::error::{Error, Result};
use crate::nvme::command::{CompletionEntry, SubmissionEntry};
use crate::nvme::regs;
use crate::platform::{DmaRegion, PhysAddr, Platform, RegisterAccess};

/// Size of a submission queue entry.
pub const SQE_SIZE: usize = 64;
/// Size of a completion queue entry.
pub const CQE_SIZE: usize = 16;

/// A submission ring: the driver produces at `tail`, the device consumes up to
/// the head it reports in completions.
#[derive(Debug)]
pub(crate) struct SubmissionRing {
    mem: DmaRegion,
    entries: u16,
    tail: u16,
    head: u16,
    /// The tail last written to the doorbell.
    published: u16,
    doorbell: usize,
}

impl SubmissionRing {
    pub(crate) fn new(mem: DmaRegion, entries: u16, qid: u16, dstrd: u8) -> Self {
        debug_assert!(mem.len() >= entries as usize * SQE_SIZE);
        Self {
            mem,
            entries,
            tail: 0,
            head: 0,
            published: 0,
            doorbell: regs::sq_tail_doorbell(qid, dstrd),
        }
    }

    pub(crate) fn entries(&self) -> u16 {
        self.entries
    }

    pub(crate) fn phys(&self) -> PhysAddr {
        self.mem.phys()
    }

    fn next(&self, i: u16) -> u16 {
        // Entries never exceed 65536, and a compare is cheaper than a division.
        if i + 1 == self.entries {
            0
        } else {
            i + 1
        }
    }

    /// Whether another entry fits (one slot always stays empty: head == tail
    /// means empty).
    pub(crate) fn is_full(&self) -> bool {
        self.next(self.tail) == self.head
    }

    /// Writes `entry` at the tail. The caller checked `is_full`.
    pub(crate) fn push(&mut self, entry: &SubmissionEntry) {
        let offset = self.tail as usize * SQE_SIZE;
        if let Some(slot) = self.mem.volatile_at::<SubmissionEntry>(offset) {
            slot.write(*entry);
        }
        self.tail = self.next(self.tail);
    }

    /// Rings the tail doorbell if anything was pushed since the last ring.
    pub(crate) fn publish<R: RegisterAccess>(&mut self, regs: &R) -> bool {
        if self.tail == self.published {
            return false;
        }
        // The entries must be visible in memory before the device can fetch
        // them; the doorbell write is what lets it.
        fence(Ordering::Release);
        regs.write32(self.doorbell, self.tail as u32);
        self.published = self.tail;
        true
    }

    /// Records the SQ head reported by a completion. The caller validated it
    /// (`head < entries`).
    pub(crate) fn set_head(&mut self, head: u16) {
        self.head = head;
    }

    pub(crate) fn into_memory(self) -> DmaRegion {
        self.mem
    }
}

/// A completion ring: the device produces entries with a phase tag that flips
/// on every wrap; the driver consumes at `head`.
#[derive(Debug)]
pub(crate) struct CompletionRing {
    mem: DmaRegion,
    entries: u16,
    head: u16,
    phase: bool,
    /// Entries consumed since the head doorbell was last written.
    unacked: u16,
    doorbell: usize,
}

impl CompletionRing {
    pub(crate) fn new(mem: DmaRegion, entries: u16, qid: u16, dstrd: u8) -> Self {
        debug_assert!(mem.len() >= entries as usize * CQE_SIZE);
        Self {
            mem,
            entries,
            head: 0,
            phase: true,
            unacked: 0,
            doorbell: regs::cq_head_doorbell(qid, dstrd),
        }
    }

    pub(crate) fn phys(&self) -> PhysAddr {
        self.mem.phys()
    }

    /// The next entry if the device has posted it, consuming it.
    pub(crate) fn pop(&mut self) -> Option<CompletionEntry> {
        let offset = self.head as usize * CQE_SIZE;
        let status = self.mem.volatile_at::<u16>(offset + 14)?.read();
        if (status & 1 != 0) != self.phase {
            return None;
        }
        // Read the body only after seeing the phase tag: the device may write
        // the entry in more than one transaction, the tag last.
        fence(Ordering::Acquire);
        let entry = self.mem.volatile_at::<CompletionEntry>(offset)?.read();
        self.head += 1;
        if self.head == self.entries {
            self.head = 0;
            self.phase = !self.phase;
        }
        self.unacked += 1;
        Some(entry)
    }

    /// Tells the device which entries it may reuse, once per drained batch.
    pub(crate) fn acknowledge<R: RegisterAccess>(&mut self, regs: &R) -> bool {
        if self.unacked == 0 {
            return false;
        }
        regs.write32(self.doorbell, self.head as u32);
        self.unacked = 0;
        true
    }

    pub(crate) fn into_memory(self) -> DmaRegion {
        self.mem
    }
}

/// Allocates ring memory of `entries * entry_size` bytes, page aligned.
pub(crate) fn alloc_ring<P: Platform>(
    platform: &P,
    entries: u16,
    entry_size: usize,
) -> Result<DmaRegion> {
    let bytes = (entries as usize * entry_size).next_multiple_of(4096);
    platform
        .dma_alloc(bytes, 4096)
        .ok_or(Error::OutOfDmaMemory { bytes })
}
