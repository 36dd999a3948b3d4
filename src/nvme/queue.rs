//! Submission and completion rings in DMA memory, and their doorbells.
//!
//! The rings are shared with the device: the driver only touches them through
//! volatile accesses, publishes submissions with a release fence before the
//! doorbell write, and reads a completion's body only after its phase tag was
//! seen, behind an acquire fence.
//!
//! With shadow doorbells (Doorbell Buffer Config, NVMe Base Specification
//! 2.0, section 5.8) an I/O queue's tail or head goes to a slot in memory
//! instead, and the MMIO doorbell is written only when the device asked for
//! it through the EventIdx slot.

use core::sync::atomic::{fence, Ordering};

use volatile::map_field;

use crate::error::{Error, Result};
use crate::nvme::command::{CompletionEntry, SubmissionEntry};
use crate::nvme::prp::PAGE_SIZE;
use crate::nvme::regs;
use crate::platform::{DmaRegion, PhysAddr, Platform, RegisterAccess};

/// The shadow doorbell and EventIdx buffers of a controller, one page each,
/// laid out like the doorbell registers (slot = register offset - 0x1000).
#[derive(Debug)]
pub(crate) struct DoorbellBuffers {
    shadow: DmaRegion,
    event_idx: DmaRegion,
}

impl DoorbellBuffers {
    /// Allocates both pages (zeroed).
    pub(crate) fn alloc<P: Platform>(platform: &P) -> Result<Self> {
        let oom = Error::OutOfDmaMemory { bytes: PAGE_SIZE };
        let shadow = platform.dma_alloc(PAGE_SIZE, PAGE_SIZE).ok_or(oom)?;
        let Some(event_idx) = platform.dma_alloc(PAGE_SIZE, PAGE_SIZE) else {
            platform.dma_free(shadow);
            return Err(oom);
        };
        Ok(Self { shadow, event_idx })
    }

    /// Whether every doorbell up to `last_doorbell` (a register offset) has
    /// its slot inside the pages.
    pub(crate) fn covers(last_doorbell: usize) -> bool {
        last_doorbell
            .checked_sub(regs::DOORBELL_BASE)
            .is_some_and(|slot| slot + 4 <= PAGE_SIZE)
    }

    /// Zeroes both pages: fresh queues start with tail and head 0, and a
    /// previous configuration (before a reset) must not leak into this one.
    pub(crate) fn clear(&mut self) {
        self.shadow.as_mut_slice().fill(0);
        self.event_idx.as_mut_slice().fill(0);
    }

    /// Device addresses of the shadow doorbell and EventIdx pages (PRP1, PRP2
    /// of Doorbell Buffer Config).
    pub(crate) fn addresses(&self) -> (u64, u64) {
        (self.shadow.phys().as_u64(), self.event_idx.phys().as_u64())
    }

    /// Returns both pages to the platform.
    pub(crate) fn release<P: Platform>(self, platform: &P) {
        platform.dma_free(self.shadow);
        platform.dma_free(self.event_idx);
    }

    /// Stores `new` in the shadow slot of the doorbell at register offset
    /// `doorbell` and says whether the MMIO doorbell must be written too.
    /// `old` is the value the slot held before.
    fn update(&self, doorbell: usize, new: u16, old: u16) -> bool {
        let slot = doorbell.wrapping_sub(regs::DOORBELL_BASE);
        let (Some(shadow), Some(event_idx)) = (
            self.shadow.volatile_at::<u32>(slot),
            self.event_idx.volatile_at::<u32>(slot),
        ) else {
            // No slot (checked at configuration, so not expected): the MMIO
            // doorbell is always correct.
            return true;
        };
        shadow.write((new as u32).to_le());
        // The device may read the shadow value and then write EventIdx; a
        // store followed by a load needs a full barrier, or the load may be
        // satisfied before the store is visible and a wake-up is lost.
        fence(Ordering::SeqCst);
        let event_idx = u32::from_le(event_idx.read()) as u16;
        need_event(event_idx, new, old)
    }
}

/// The EventIdx rule (NVMe Base Specification 2.0, section 5.8; Linux
/// `nvme_dbbuf_need_event`, virtio `vring_need_event`): the device wants an
/// MMIO doorbell write when moving the value from `old` to `new` passed
/// `event_idx`, i.e. `event_idx` lies in `[old, new)` modulo 2^16.
pub(crate) fn need_event(event_idx: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event_idx).wrapping_sub(1) < new.wrapping_sub(old)
}

/// Writes `value` to the doorbell at `offset`: to its shadow slot when
/// `shadow` is given, and by MMIO unless EventIdx says the device does not
/// need it. `old` is the value last written. Returns whether it wrote MMIO.
fn ring<R: RegisterAccess>(
    regs: &R,
    shadow: Option<&DoorbellBuffers>,
    offset: usize,
    value: u16,
    old: u16,
) -> bool {
    if let Some(buffers) = shadow {
        if !buffers.update(offset, value, old) {
            return false;
        }
    }
    regs.write32(offset, value as u32);
    true
}

/// Size of a submission queue entry.
pub const SQE_SIZE: usize = 64;
/// Size of a completion queue entry.
pub const CQE_SIZE: usize = 16;
/// The CQ head is written back once `entries / ACK_FRACTION` entries were
/// consumed (and at least one).
const ACK_FRACTION: u16 = 4;

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
    /// Whether the doorbell has a shadow slot (an I/O queue after Doorbell
    /// Buffer Config succeeded).
    shadowed: bool,
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
            shadowed: false,
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

    /// Uses the shadow slot of this queue's doorbell from now on.
    pub(crate) fn use_shadow(&mut self) {
        self.shadowed = true;
    }

    /// Rings the tail doorbell if anything was pushed since the last ring:
    /// the shadow slot (if configured) and the MMIO register when needed.
    /// Returns whether it wrote the MMIO register.
    pub(crate) fn publish<R: RegisterAccess>(
        &mut self,
        regs: &R,
        shadow: Option<&DoorbellBuffers>,
    ) -> bool {
        if self.tail == self.published {
            return false;
        }
        // The entries must be visible in memory before the device can fetch
        // them; the doorbell (MMIO or shadow) write is what lets it.
        fence(Ordering::Release);
        let old = self.published;
        self.published = self.tail;
        ring(
            regs,
            shadow.filter(|_| self.shadowed),
            self.doorbell,
            self.tail,
            old,
        )
    }

    /// Whether `head`, reported by a completion, lies between the head last
    /// recorded and the tail last published, circularly, both included: the
    /// device consumes only entries the doorbell announced, and never gives
    /// one back. Anything else (past the tail, or going backwards) would make
    /// the ring's free space a lie.
    pub(crate) fn head_is_valid(&self, head: u16) -> bool {
        // Distance from the recorded head, modulo the ring size, without a
        // division.
        let ahead = |i: u16| {
            if i >= self.head {
                i - self.head
            } else {
                self.entries - (self.head - i)
            }
        };
        head < self.entries && ahead(head) <= ahead(self.published)
    }

    /// Records the SQ head reported by a completion. The caller validated it
    /// (`head_is_valid`).
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
    /// The head last written to the doorbell.
    acked: u16,
    doorbell: usize,
    /// Whether the doorbell has a shadow slot.
    shadowed: bool,
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
            acked: 0,
            doorbell: regs::cq_head_doorbell(qid, dstrd),
            shadowed: false,
        }
    }

    pub(crate) fn phys(&self) -> PhysAddr {
        self.mem.phys()
    }

    /// The next entry if the device has posted it, consuming it.
    pub(crate) fn pop(&mut self) -> Option<CompletionEntry> {
        let offset = self.head as usize * CQE_SIZE;
        let slot = self.mem.volatile_at::<CompletionEntry>(offset)?;
        let status = map_field!(slot.status).read();
        if (status & 1 != 0) != self.phase {
            return None;
        }
        // Read the body only after seeing the phase tag: the device may write
        // the entry in more than one transaction, the tag last.
        fence(Ordering::Acquire);
        let entry = slot.read();
        self.head += 1;
        if self.head == self.entries {
            self.head = 0;
            self.phase = !self.phase;
        }
        self.unacked += 1;
        Some(entry)
    }

    /// Uses the shadow slot of this queue's doorbell from now on.
    pub(crate) fn use_shadow(&mut self) {
        self.shadowed = true;
    }

    /// Tells the device which entries it may reuse, at most once per drained
    /// batch, and only once a quarter of the ring waits: the device needs the
    /// head only to reuse slots, so a small batch need not cost a doorbell.
    /// A full ring cannot stall: the device posts nothing more, the driver
    /// consumes what is there, and then more than a quarter waits. Returns
    /// whether it wrote the MMIO register.
    pub(crate) fn acknowledge<R: RegisterAccess>(
        &mut self,
        regs: &R,
        shadow: Option<&DoorbellBuffers>,
    ) -> bool {
        if self.unacked == 0 || self.unacked < self.entries / ACK_FRACTION {
            return false;
        }
        self.unacked = 0;
        let old = self.acked;
        self.acked = self.head;
        ring(
            regs,
            shadow.filter(|_| self.shadowed),
            self.doorbell,
            self.head,
            old,
        )
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

#[cfg(test)]
mod tests {
    use super::need_event;

    #[test]
    fn event_idx_inside_the_moved_range_asks_for_mmio() {
        // The device consumed up to 5 and asked to hear about anything past it.
        assert!(need_event(5, 6, 5));
        assert!(need_event(5, 9, 5));
        // It has not caught up with 5 yet (EventIdx 3): moving 5 -> 9 is
        // covered by the notification it will see anyway.
        assert!(!need_event(3, 9, 5));
        // EventIdx exactly at the new value is not passed yet.
        assert!(!need_event(9, 9, 5));
        assert!(need_event(8, 9, 5));
        // Nothing moved.
        assert!(!need_event(5, 5, 5));
    }

    #[test]
    fn event_idx_rule_wraps_modulo_2_16() {
        assert!(need_event(0xFFFF, 2, 0xFFFE));
        assert!(need_event(0, 2, 0xFFFE));
        assert!(!need_event(2, 2, 0xFFFE));
        assert!(!need_event(0xFFFD, 2, 0xFFFE));
    }
}
