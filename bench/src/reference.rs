//! The reference: the least a polled NVMe loop can do per I/O. Write an SQE,
//! ring the doorbell once per batch, poll the phase bit, ring the CQ head
//! doorbell once per drained batch. No validation, no per-command state, no
//! buffer ownership. Doorbells go through the same [`BenchRegisters`] as the
//! driver's, so both pay the same for a register write.

use core::ptr::NonNull;
use core::sync::atomic::{fence, Ordering};

use volatile::VolatilePtr;

use bare_nvme::nvme::command::{nvm, CompletionEntry, SubmissionEntry};
use bare_nvme::nvme::regs;
use bare_nvme::{DmaRegion, PhysAddr, Platform, RegisterAccess};
use bare_nvme_sim::Sim;

use crate::device::{deferred, BenchPlatform, BenchRegisters};

/// Ring entries.
pub const ENTRIES: u16 = 256;

/// A bare queue pair and the memory it reads into.
pub struct Reference {
    platform: BenchPlatform,
    regs: BenchRegisters,
    sq: DmaRegion,
    cq: DmaRegion,
    buffer: DmaRegion,
    tail: u16,
    head: u16,
    phase: bool,
    /// Device side: next SQ entry to consume, next CQ slot, its phase.
    dev_head: u16,
    dev_tail: u16,
    dev_phase: bool,
    _sim: Sim,
}

impl Reference {
    /// Allocates the rings and a buffer.
    pub fn new() -> Reference {
        let sim = Sim::builder().build();
        let (platform, _device) = deferred(&sim);
        let regs = platform
            .map_registers(PhysAddr::new(0xF000_0000), 0x2000)
            .expect("map");
        let sq = platform.dma_alloc(ENTRIES as usize * 64, 4096).expect("sq");
        let cq = platform.dma_alloc(ENTRIES as usize * 16, 4096).expect("cq");
        let buffer = platform.dma_alloc(4096, 4096).expect("buffer");
        Reference {
            platform,
            regs,
            sq,
            cq,
            buffer,
            tail: 0,
            head: 0,
            phase: true,
            dev_head: 0,
            dev_tail: 0,
            dev_phase: true,
            _sim: sim,
        }
    }

    /// Plays the device: completes every submitted entry (not measured).
    pub fn device(&mut self) {
        let sq = self.sq.virt().as_ptr().cast::<SubmissionEntry>();
        let cq = self.cq.virt().as_ptr().cast::<CompletionEntry>();
        while self.dev_head != self.tail {
            // SAFETY: the index is below ENTRIES, inside the ring regions
            // allocated for ENTRIES entries; single-threaded, so nothing else
            // accesses the entries meanwhile.
            let cid = unsafe { entry(sq, self.dev_head) }.read().cid();
            self.dev_head = (self.dev_head + 1) % ENTRIES;
            let cqe = CompletionEntry {
                sq_head: self.dev_head,
                sq_id: 1,
                cid,
                status: self.dev_phase as u16,
                ..CompletionEntry::default()
            };
            // SAFETY: as above, for the completion ring.
            unsafe { entry(cq, self.dev_tail) }.write(cqe);
            self.dev_tail = (self.dev_tail + 1) % ENTRIES;
            if self.dev_tail == 0 {
                self.dev_phase = !self.dev_phase;
            }
        }
    }

    /// Releases the memory.
    pub fn finish(self) {
        self.platform.dma_free(self.sq);
        self.platform.dma_free(self.cq);
        self.platform.dma_free(self.buffer);
    }
}

impl Default for Reference {
    fn default() -> Self {
        Self::new()
    }
}

/// A volatile pointer to entry `index` of a ring at `base`.
///
/// # Safety
/// `index` must be inside the ring (below [`ENTRIES`] entries of `T`) and the ring memory
/// alive; nothing else may access the entry concurrently.
unsafe fn entry<'a, T: Copy>(base: *mut T, index: u16) -> VolatilePtr<'a, T> {
    // SAFETY: promised by the caller; the base is non-null (a DMA region).
    unsafe { VolatilePtr::new(NonNull::new_unchecked(base.add(index as usize))) }
}

/// Writes one read SQE per LBA and rings the SQ doorbell once.
#[inline(never)]
pub fn reference_submit(r: &mut Reference, lbas: &[u64]) {
    let sq = r.sq.virt().as_ptr().cast::<SubmissionEntry>();
    let prp1 = r.buffer.phys().as_u64();
    for &lba in lbas {
        let mut sqe = SubmissionEntry::new(nvm::READ);
        sqe.set_cid(r.tail);
        sqe.nsid = 1;
        sqe.prp1 = prp1;
        sqe.cdw10 = lba as u32;
        sqe.cdw11 = (lba >> 32) as u32;
        // SAFETY: tail < ENTRIES, inside the ring; single-threaded.
        unsafe { entry(sq, r.tail) }.write(sqe);
        r.tail += 1;
        if r.tail == ENTRIES {
            r.tail = 0;
        }
    }
    fence(Ordering::Release);
    r.regs.write32(regs::sq_tail_doorbell(1, 0), r.tail as u32);
}

/// Consumes completions by phase bit and rings the CQ head doorbell once.
/// Returns how many it consumed.
#[inline(never)]
pub fn reference_poll(r: &mut Reference) -> usize {
    let cq = r.cq.virt().as_ptr().cast::<CompletionEntry>();
    let mut n = 0;
    loop {
        // SAFETY: head < ENTRIES, inside the ring; single-threaded.
        // The status word is the last of the entry's eight u16s.
        let status = unsafe { entry(cq.cast::<u16>(), r.head * 8 + 7) }.read();
        if (status & 1 != 0) != r.phase {
            break;
        }
        fence(Ordering::Acquire);
        r.head += 1;
        if r.head == ENTRIES {
            r.head = 0;
            r.phase = !r.phase;
        }
        n += 1;
    }
    if n > 0 {
        r.regs.write32(regs::cq_head_doorbell(1, 0), r.head as u32);
    }
    n
}

/// Runs `rounds` batches of `batch`: submit, (device), poll.
pub fn run_batches(r: &mut Reference, batch: usize, rounds: usize, lbas: &[u64]) -> usize {
    let mut done = 0;
    for round in 0..rounds {
        let at = (round * batch) % (lbas.len() - batch);
        reference_submit(r, &lbas[at..at + batch]);
        r.device();
        done += reference_poll(r);
    }
    done
}
