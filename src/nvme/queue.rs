//! Submission and completion rings in DMA memory, and their doorbells.
//!
//! The rings are shared with the device: the driver only touches them through
//! volatile accesses ([`SharedMemory`]), publishes submissions behind a DMA
//! write barrier before the doorbell write, and reads a completion's body only
//! after its phase tag was seen, behind a DMA read barrier (see `barrier`).
//!
//! With shadow doorbells (Doorbell Buffer Config, NVMe Base Specification
//! 2.0, section 5.8) an I/O queue's tail or head goes to a slot in memory
//! instead, and the MMIO doorbell is written only when the device asked for
//! it through the EventIdx slot.

use crate::error::Result;
use crate::nvme::barrier;
use crate::nvme::command::SubmissionEntry;
use crate::nvme::prp::PAGE_SIZE;
use crate::nvme::regs;
use crate::nvme::shared_memory::SharedMemory;
use crate::platform::{PhysAddr, Platform, RegisterAccess};

/// The shadow doorbell and EventIdx buffers of a controller, one page each,
/// laid out like the doorbell registers (slot = register offset - 0x1000).
#[derive(Debug)]
pub(crate) struct DoorbellBuffers {
    shadow: SharedMemory,
    event_idx: SharedMemory,
}

impl DoorbellBuffers {
    /// Allocates both pages (zeroed).
    pub(crate) fn alloc<P: Platform>(platform: &P) -> Result<Self> {
        let shadow = SharedMemory::alloc(platform, PAGE_SIZE, PAGE_SIZE)?;
        let event_idx = match SharedMemory::alloc(platform, PAGE_SIZE, PAGE_SIZE) {
            Ok(m) => m,
            Err(e) => {
                shadow.release(platform);
                return Err(e);
            }
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
    /// Flushed: the device reads both pages once they are configured.
    pub(crate) fn clear<P: Platform>(&mut self, platform: &P) {
        self.shadow.zero();
        self.event_idx.zero();
        self.shadow.flush(platform, 0, PAGE_SIZE);
        self.event_idx.flush(platform, 0, PAGE_SIZE);
    }

    /// Device addresses of the shadow doorbell and EventIdx pages (PRP1, PRP2
    /// of Doorbell Buffer Config).
    pub(crate) fn addresses(&self) -> (u64, u64) {
        (self.shadow.phys().as_u64(), self.event_idx.phys().as_u64())
    }

    /// Returns both pages to the platform.
    pub(crate) fn release<P: Platform>(self, platform: &P) {
        self.release_with(|region| platform.dma_free(region));
    }

    /// Hands both pages to `keep` (quarantine, or the platform).
    pub(crate) fn release_with(self, mut keep: impl FnMut(crate::platform::DmaRegion)) {
        keep(self.shadow.into_region());
        keep(self.event_idx.into_region());
    }

    /// Stores `new` in the shadow slot of the doorbell at register offset
    /// `doorbell` and says whether the MMIO doorbell must be written too.
    /// `old` is the value the slot held before.
    fn update<P: Platform>(&self, platform: &P, doorbell: usize, new: u16, old: u16) -> bool {
        let slot = doorbell.wrapping_sub(regs::DOORBELL_BASE);
        let (Some(shadow), Some(event_idx)) =
            (self.shadow.at::<u32>(slot), self.event_idx.at::<u32>(slot))
        else {
            // No slot (checked at configuration, so not expected): the MMIO
            // doorbell is always correct.
            return true;
        };
        shadow.write((new as u32).to_le());
        self.shadow.flush(platform, slot, 4);
        // The device may read the shadow value and then write EventIdx; a
        // store followed by a load needs a full barrier, or the load may be
        // satisfied before the store is visible and a wake-up is lost.
        barrier::store_then_load();
        self.event_idx.invalidate(platform, slot, 4);
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
fn ring<P: Platform, R: RegisterAccess>(
    platform: &P,
    regs: &R,
    shadow: Option<&DoorbellBuffers>,
    offset: usize,
    value: u16,
    old: u16,
) -> bool {
    if let Some(buffers) = shadow {
        if !buffers.update(platform, offset, value, old) {
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
    mem: SharedMemory,
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
    /// A ring of `entries` (at least 2) in `mem`; `Err(mem)` when the memory
    /// does not hold that many 8-byte aligned entries. Checked once here, so
    /// that `push` needs no check: `tail < entries` by construction.
    pub(crate) fn new(
        mem: SharedMemory,
        entries: u16,
        qid: u16,
        dstrd: u8,
    ) -> core::result::Result<Self, SharedMemory> {
        if entries < 2 || !mem.holds(entries as usize, SQE_SIZE, 8) {
            return Err(mem);
        }
        Ok(Self {
            mem,
            entries,
            tail: 0,
            head: 0,
            published: 0,
            doorbell: regs::sq_tail_doorbell(qid, dstrd),
            shadowed: false,
        })
    }

    pub(crate) fn entries(&self) -> u16 {
        self.entries
    }

    pub(crate) fn phys(&self) -> PhysAddr {
        self.mem.phys()
    }

    #[inline(always)]
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
    #[inline(always)]
    pub(crate) fn is_full(&self) -> bool {
        self.next(self.tail) == self.head
    }

    /// Writes `entry` at the tail. The caller checked `is_full`.
    #[inline(always)]
    pub(crate) fn push(&mut self, entry: &SubmissionEntry) {
        let next = NextTail(self.next(self.tail));
        self.push_then(entry, next);
    }

    /// Room for one more entry: the tail after it, `None` when the ring is
    /// full. For [`SubmissionRing::push_then`], so that the wrap is
    /// computed once per entry.
    #[inline(always)]
    pub(crate) fn room(&self) -> Option<NextTail> {
        let next = self.next(self.tail);
        (next != self.head).then_some(NextTail(next))
    }

    /// Writes `entry` at the tail and moves the tail to `next`, from
    /// [`SubmissionRing::room`] since the tail last moved.
    #[inline(always)]
    pub(crate) fn push_then(&mut self, entry: &SubmissionEntry, next: NextTail) {
        let offset = self.tail as usize * SQE_SIZE;
        // Eight word stores straight from the fields, not a field-by-field
        // copy through the stack.
        let words = sqe_words(entry);
        // SAFETY: `tail < entries`: it starts at 0 and takes only values of
        // `next`, which wraps at `entries` (a `NextTail` holds nothing
        // else); `new` checked that the memory holds `entries` 8-byte
        // aligned entries of SQE_SIZE bytes.
        unsafe { self.mem.write_words_unchecked(offset, words) };
        self.tail = next.0;
    }

    /// Whether entries were written since the doorbell was last rung.
    #[inline(always)]
    pub(crate) fn has_unpublished(&self) -> bool {
        self.tail != self.published
    }

    /// Uses the shadow slot of this queue's doorbell from now on.
    pub(crate) fn use_shadow(&mut self) {
        self.shadowed = true;
    }

    /// Rings the tail doorbell if anything was pushed since the last ring:
    /// the shadow slot (if configured) and the MMIO register when needed.
    /// Returns whether it wrote the MMIO register.
    #[inline(always)]
    pub(crate) fn publish<P: Platform, R: RegisterAccess>(
        &mut self,
        platform: &P,
        regs: &R,
        shadow: Option<&DoorbellBuffers>,
    ) -> bool {
        // Checked inline: most polls have nothing to publish.
        self.tail != self.published && self.publish_now(platform, regs, shadow)
    }

    /// [`SubmissionRing::publish`] once entries wait.
    #[inline(never)]
    fn publish_now<P: Platform, R: RegisterAccess>(
        &mut self,
        platform: &P,
        regs: &R,
        shadow: Option<&DoorbellBuffers>,
    ) -> bool {
        // The new slots, published..tail, in at most two pieces (the ring
        // may have wrapped); a command's PRP list was flushed when it was
        // written.
        let (from, to) = (self.published as usize, self.tail as usize);
        if from < to {
            self.mem
                .flush(platform, from * SQE_SIZE, (to - from) * SQE_SIZE);
        } else {
            let end = self.entries as usize;
            self.mem
                .flush(platform, from * SQE_SIZE, (end - from) * SQE_SIZE);
            self.mem.flush(platform, 0, to * SQE_SIZE);
        }
        // The entries (and PRP lists) must be visible in memory before the
        // device can fetch them; the doorbell (MMIO or shadow) write is what
        // lets it.
        barrier::before_doorbell();
        let old = self.published;
        self.published = self.tail;
        ring(
            platform,
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
    #[inline(always)]
    pub(crate) fn head_is_valid(&self, head: u16) -> bool {
        let (from, to) = (self.head, self.published);
        if from <= to {
            // Not wrapped (the common case): `to < entries` bounds it too.
            from <= head && head <= to
        } else {
            head < self.entries && (head >= from || head <= to)
        }
    }

    /// Records the SQ head reported by a completion. The caller validated it
    /// (`head_is_valid`).
    #[inline(always)]
    pub(crate) fn set_head(&mut self, head: u16) {
        self.head = head;
    }

    pub(crate) fn into_memory(self) -> SharedMemory {
        self.mem
    }
}

/// A tail value `SubmissionRing::next` computed, so below the ring's entry
/// count: only this module makes one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NextTail(u16);

/// Two 32-bit fields as the 64-bit word they occupy in memory.
#[inline(always)]
const fn pair(first: u32, second: u32) -> u64 {
    if cfg!(target_endian = "little") {
        first as u64 | (second as u64) << 32
    } else {
        (first as u64) << 32 | second as u64
    }
}

/// A submission entry as the eight 64-bit words of its `repr(C)` layout.
#[inline(always)]
fn sqe_words(e: &SubmissionEntry) -> [u64; 8] {
    [
        pair(e.cdw0, e.nsid),
        pair(e.cdw2, e.cdw3),
        e.mptr,
        e.prp1,
        e.prp2,
        pair(e.cdw10, e.cdw11),
        pair(e.cdw12, e.cdw13),
        pair(e.cdw14, e.cdw15),
    ]
}

/// A completion ring: the device produces entries with a phase tag that flips
/// on every wrap; the driver consumes at `head`.
#[derive(Debug)]
pub(crate) struct CompletionRing {
    mem: SharedMemory,
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
    /// A ring of `entries` (at least 2) in `mem`; `Err(mem)` when the memory
    /// does not hold that many 4-byte aligned entries. Checked once here, so
    /// that `pop` needs no check: `head < entries` by construction.
    pub(crate) fn new(
        mem: SharedMemory,
        entries: u16,
        qid: u16,
        dstrd: u8,
    ) -> core::result::Result<Self, SharedMemory> {
        if entries < 2 || !mem.holds(entries as usize, CQE_SIZE, 4) {
            return Err(mem);
        }
        Ok(Self {
            mem,
            entries,
            head: 0,
            phase: true,
            unacked: 0,
            acked: 0,
            doorbell: regs::cq_head_doorbell(qid, dstrd),
            shadowed: false,
        })
    }

    pub(crate) fn phys(&self) -> PhysAddr {
        self.mem.phys()
    }

    /// Whether the device has posted the next entry (its phase tag is
    /// current), without consuming it.
    #[inline(always)]
    pub(crate) fn posted<P: Platform>(&self, platform: &P) -> bool {
        let offset = self.head as usize * CQE_SIZE;
        self.mem.invalidate(platform, offset + 12, 4);
        // SAFETY: as in `pop`.
        let dw3 = u32::from_le(unsafe { self.mem.read_u32_unchecked(offset + 12) });
        (dw3 & 1 << 16 != 0) == self.phase
    }

    /// The next entry if the device has posted it, consuming it.
    #[inline(always)]
    pub(crate) fn pop<P: Platform>(&mut self, platform: &P) -> Option<Posted> {
        let offset = self.head as usize * CQE_SIZE;
        // The whole entry: its body is read after the tag without another
        // invalidate, which the barrier below keeps in order.
        self.mem.invalidate(platform, offset, CQE_SIZE);
        // SAFETY (all three reads): `head < entries` (it starts at 0 and
        // wraps at `entries`), and `new` checked that the memory holds
        // `entries` 4-byte aligned entries of CQE_SIZE bytes.
        // Dword 3: command identifier (15:0), status and phase tag (31:16).
        let dw3 = u32::from_le(unsafe { self.mem.read_u32_unchecked(offset + 12) });
        if (dw3 & 1 << 16 != 0) != self.phase {
            return None;
        }
        // Read the body only after seeing the phase tag: the device may write
        // the entry in more than one transaction, the tag last.
        barrier::after_phase_tag();
        // Dword 2: SQ head (15:0), SQ identifier (31:16).
        let dw2 = u32::from_le(unsafe { self.mem.read_u32_unchecked(offset + 8) });
        let dw0 = u32::from_le(unsafe { self.mem.read_u32_unchecked(offset) });
        self.head += 1;
        if self.head == self.entries {
            self.head = 0;
            self.phase = !self.phase;
        }
        self.unacked += 1;
        Some(Posted {
            dw0,
            sq_head: dw2 as u16,
            sq_id: (dw2 >> 16) as u16,
            cid: dw3 as u16,
            status: (dw3 >> 16) as u16,
        })
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
    #[inline(always)]
    pub(crate) fn acknowledge<P: Platform, R: RegisterAccess>(
        &mut self,
        platform: &P,
        regs: &R,
        shadow: Option<&DoorbellBuffers>,
    ) -> bool {
        // Checked inline: most polls write no head.
        self.unacked != 0
            && self.unacked >= self.entries / ACK_FRACTION
            && self.acknowledge_now(platform, regs, shadow)
    }

    /// [`CompletionRing::acknowledge`] once a quarter of the ring waits.
    #[inline(never)]
    fn acknowledge_now<P: Platform, R: RegisterAccess>(
        &mut self,
        platform: &P,
        regs: &R,
        shadow: Option<&DoorbellBuffers>,
    ) -> bool {
        self.unacked = 0;
        let old = self.acked;
        self.acked = self.head;
        // The entries this frees were read before the device may reuse them.
        barrier::before_head_doorbell();
        ring(
            platform,
            regs,
            shadow.filter(|_| self.shadowed),
            self.doorbell,
            self.head,
            old,
        )
    }

    pub(crate) fn into_memory(self) -> SharedMemory {
        self.mem
    }
}

/// The fields of a completion entry the driver uses, as `pop` read them
/// (Dword 1 is reserved). Nothing here is trusted yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Posted {
    /// Command specific Dword 0.
    pub(crate) dw0: u32,
    /// SQ head pointer.
    pub(crate) sq_head: u16,
    /// SQ identifier.
    pub(crate) sq_id: u16,
    /// Command identifier.
    pub(crate) cid: u16,
    /// Phase tag (bit 0) and status field (15:1).
    pub(crate) status: u16,
}

/// Allocates ring memory of `entries * entry_size` bytes, page aligned.
pub(crate) fn alloc_ring<P: Platform>(
    platform: &P,
    entries: u16,
    entry_size: usize,
) -> Result<SharedMemory> {
    let bytes = (entries as usize * entry_size).next_multiple_of(4096);
    SharedMemory::alloc(platform, bytes, 4096)
}

#[cfg(test)]
impl DoorbellBuffers {
    /// Buffers over given memory (the tests' heap pages).
    pub(crate) fn from_memory(shadow: SharedMemory, event_idx: SharedMemory) -> Self {
        Self { shadow, event_idx }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nvme::command::CompletionEntry;
    use crate::nvme::test_memory::{CoherentPlatform, HeapDma, RecordingRegisters};

    const QID: u16 = 1;
    const ENTRIES: u16 = 4;

    fn sqe(cid: u16) -> SubmissionEntry {
        let mut e = SubmissionEntry::new(0x02);
        e.set_cid(cid);
        e
    }

    /// The device posts a completion for `cid` at `slot` with `phase`.
    fn post(heap: &HeapDma, slot: u16, cid: u16, sq_head: u16, phase: bool) {
        let cqe = CompletionEntry {
            dw0: 0,
            dw1: 0,
            sq_head,
            sq_id: QID,
            cid,
            status: phase as u16,
        };
        heap.device_write(slot as usize * CQE_SIZE, cqe);
    }

    #[test]
    fn submissions_reach_the_device_and_the_doorbell_once_per_batch() {
        let regs = RecordingRegisters::default();
        let mut heap = HeapDma::new(4096, 0x1_0000);
        let mut sq = SubmissionRing::new(heap.shared(), ENTRIES, QID, 0).unwrap();
        let doorbell = regs::sq_tail_doorbell(QID, 0);
        assert!(
            !sq.publish(&CoherentPlatform, &regs, None),
            "nothing pushed, nothing rung"
        );
        for cid in 0..3 {
            assert!(!sq.is_full());
            sq.push(&sqe(cid));
        }
        assert!(sq.is_full(), "one slot stays empty");
        assert!(sq.publish(&CoherentPlatform, &regs, None));
        assert_eq!(regs.take(), [(doorbell, 3)]);
        for i in 0..3 {
            let seen: SubmissionEntry = heap.device_read(i * SQE_SIZE);
            assert_eq!(seen, sqe(i as u16));
        }
        // The device consumed two: two slots free, and the tail wraps.
        assert!(sq.head_is_valid(2));
        sq.set_head(2);
        sq.push(&sqe(3));
        sq.push(&sqe(4));
        assert!(sq.is_full());
        assert!(sq.publish(&CoherentPlatform, &regs, None));
        assert_eq!(regs.take(), [(doorbell, 1)]);
        assert_eq!(
            heap.device_read::<SubmissionEntry>(0),
            sqe(4),
            "wrapped to slot 0"
        );
    }

    #[test]
    fn a_ring_refuses_memory_that_does_not_hold_its_entries() {
        // Ring accesses are unchecked: the constructors are the check.
        let mut short = HeapDma::new(ENTRIES as usize * SQE_SIZE - 8, 0x1_0000);
        assert!(SubmissionRing::new(short.shared(), ENTRIES, QID, 0).is_err());
        let mut short = HeapDma::new(ENTRIES as usize * CQE_SIZE - 4, 0x1_0000);
        assert!(CompletionRing::new(short.shared(), ENTRIES, QID, 0).is_err());
        let mut misaligned = HeapDma::new(4096, 0x1_0000);
        assert!(SubmissionRing::new(misaligned.shared_from(4), ENTRIES, QID, 0).is_err());
        let mut misaligned = HeapDma::new(4096, 0x1_0000);
        assert!(CompletionRing::new(misaligned.shared_from(2), ENTRIES, QID, 0).is_err());
        let mut tiny = HeapDma::new(4096, 0x1_0000);
        assert!(
            CompletionRing::new(tiny.shared(), 1, QID, 0).is_err(),
            "one entry cannot wrap"
        );
        // Exactly enough, and aligned.
        let mut exact = HeapDma::new(ENTRIES as usize * SQE_SIZE, 0x1_0000);
        assert!(SubmissionRing::new(exact.shared(), ENTRIES, QID, 0).is_ok());
        let mut exact = HeapDma::new(4096, 0x1_0000);
        assert!(CompletionRing::new(exact.shared_from(4), ENTRIES, QID, 0).is_ok());
    }

    #[test]
    fn an_sq_head_is_valid_only_between_the_head_and_the_published_tail() {
        let regs = RecordingRegisters::default();
        let mut heap = HeapDma::new(4096, 0x1_0000);
        let mut sq = SubmissionRing::new(heap.shared(), ENTRIES, QID, 0).unwrap();
        sq.push(&sqe(0));
        sq.push(&sqe(1));
        assert!(!sq.head_is_valid(1), "pushed but not published");
        sq.publish(&CoherentPlatform, &regs, None);
        assert!((0..=2).all(|h| sq.head_is_valid(h)));
        assert!(!sq.head_is_valid(3), "past the tail");
        assert!(!sq.head_is_valid(ENTRIES), "outside the ring");
        sq.set_head(2);
        sq.push(&sqe(2));
        sq.push(&sqe(3));
        sq.publish(&CoherentPlatform, &regs, None);
        // Head 2, tail 0 (wrapped): 2, 3 and 0 are valid.
        assert!([2, 3, 0].iter().all(|&h| sq.head_is_valid(h)));
        assert!(!sq.head_is_valid(1), "behind the head");
    }

    #[test]
    fn completions_pop_in_phase_across_the_wrap_and_free_slots_by_doorbell() {
        let regs = RecordingRegisters::default();
        let mut heap = HeapDma::new(4096, 0x2_0000);
        let mut cq = CompletionRing::new(heap.shared(), ENTRIES, QID, 0).unwrap();
        let doorbell = regs::cq_head_doorbell(QID, 0);
        assert_eq!(
            cq.pop(&CoherentPlatform),
            None,
            "zeroed ring: nothing posted"
        );
        for slot in 0..ENTRIES {
            post(&heap, slot, 10 + slot, slot + 1, true);
        }
        for slot in 0..ENTRIES {
            let e = cq.pop(&CoherentPlatform).expect("posted");
            assert_eq!((e.cid, e.sq_head), (10 + slot, slot + 1));
        }
        // Slot 0 still holds the old phase: not new.
        assert_eq!(cq.pop(&CoherentPlatform), None);
        assert!(cq.acknowledge(&CoherentPlatform, &regs, None));
        assert_eq!(regs.take(), [(doorbell, 0)]);
        // Second lap: phase 0.
        post(&heap, 0, 20, 1, false);
        assert_eq!(cq.pop(&CoherentPlatform).map(|e| e.cid), Some(20));
        assert_eq!(cq.pop(&CoherentPlatform), None);
        assert!(
            cq.acknowledge(&CoherentPlatform, &regs, None),
            "a quarter of 4 is one entry"
        );
        assert_eq!(regs.take(), [(doorbell, 1)]);
        assert!(
            !cq.acknowledge(&CoherentPlatform, &regs, None),
            "nothing new"
        );
    }

    #[test]
    fn shadow_doorbells_write_the_slot_and_ring_mmio_only_when_event_idx_asks() {
        let regs = RecordingRegisters::default();
        let mut shadow_page = HeapDma::new(PAGE_SIZE, 0x3_0000);
        let mut event_page = HeapDma::new(PAGE_SIZE, 0x4_0000);
        let buffers = DoorbellBuffers::from_memory(shadow_page.shared(), event_page.shared());
        assert_eq!(buffers.addresses(), (0x3_0000, 0x4_0000));
        let mut ring = HeapDma::new(4096, 0x1_0000);
        let mut sq = SubmissionRing::new(ring.shared(), ENTRIES, QID, 0).unwrap();
        sq.use_shadow();
        let doorbell = regs::sq_tail_doorbell(QID, 0);
        let slot = doorbell - regs::DOORBELL_BASE;
        // The device last asked to hear about tail 0 (EventIdx 0): 0 -> 1
        // passes it, so the MMIO doorbell is written too.
        sq.push(&sqe(0));
        assert!(sq.publish(&CoherentPlatform, &regs, Some(&buffers)));
        assert_eq!(shadow_page.device_read::<u32>(slot), 1u32.to_le());
        assert_eq!(regs.take(), [(doorbell, 1)]);
        // EventIdx still 0: 1 -> 2 does not pass it; only the shadow slot.
        sq.push(&sqe(1));
        assert!(!sq.publish(&CoherentPlatform, &regs, Some(&buffers)));
        assert_eq!(shadow_page.device_read::<u32>(slot), 2u32.to_le());
        assert!(regs.take().is_empty());
        // The device caught up and asks for anything past 2.
        event_page.device_write(slot, 2u32.to_le());
        sq.push(&sqe(2));
        assert!(sq.publish(&CoherentPlatform, &regs, Some(&buffers)));
        assert_eq!(regs.take(), [(doorbell, 3)]);
        // A reset clears both pages.
        let mut buffers = buffers;
        buffers.clear(&CoherentPlatform);
        assert_eq!(shadow_page.device_read::<u32>(slot), 0);
        assert_eq!(event_page.device_read::<u32>(slot), 0);
    }

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
