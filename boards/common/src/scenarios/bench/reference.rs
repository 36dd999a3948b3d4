//! The reference: the least a polled NVMe loop can do on the same controller,
//! so that the driver's IOPS can be set against the limit of this machine.
//!
//! It owns the controller while it runs: a reset, its own admin queue, one
//! I/O queue pair of the same size as the driver's, then 4 KiB reads with the
//! command ID as the buffer index. Its doorbells follow the driver's policy
//! (one SQ tail write per batch of resubmissions, the CQ head written back
//! once a quarter of the ring was consumed), so that the two differ only in
//! the work done per command. It checks nothing the device writes beyond the
//! phase tag (and the status of its two queue-creation commands, so that a
//! refused setup fails the run instead of measuring nothing). It is a
//! measuring instrument, not a driver: no timeouts per command, no recovery,
//! no validation of completions.

use core::ptr::NonNull;
use core::sync::atomic::{compiler_fence, Ordering};
use core::time::Duration;

use bare_nvme::{DmaRegion, Platform, RegisterAccess};
use volatile::VolatilePtr;

use crate::scenarios::Failure;
use crate::{clock, failure};

/// Entries of the admin queues.
const ADMIN_ENTRIES: u16 = 8;
/// Bytes of a submission queue entry.
const SQE: usize = 64;
/// Bytes of a completion queue entry.
const CQE: usize = 16;

const CAP: usize = 0x00;
const CC: usize = 0x14;
const CSTS: usize = 0x1C;
const AQA: usize = 0x24;
const ASQ: usize = 0x28;
const ACQ: usize = 0x30;
const DOORBELLS: usize = 0x1000;

/// CC: enable, NVM command set, 4 KiB pages, 64-byte SQEs, 16-byte CQEs.
const CC_ENABLE: u32 = 1 | (6 << 16) | (4 << 20);

const CREATE_IO_SQ: u8 = 0x01;
const CREATE_IO_CQ: u8 = 0x05;
const READ: u8 = 0x02;

/// Word `index` of `region`, which the device shares.
fn word(region: &DmaRegion, index: usize) -> VolatilePtr<'_, u32> {
    debug_assert!((index + 1) * 4 <= region.len());
    // SAFETY: the rings index only entries below their size, so the word is
    // inside the region (page aligned, so the word is aligned); the region
    // outlives the borrow.
    unsafe {
        VolatilePtr::new(NonNull::new_unchecked(
            region.virt().as_ptr().cast::<u32>().add(index),
        ))
    }
}

/// One submission/completion ring pair in DMA memory.
struct Ring {
    sq: DmaRegion,
    cq: DmaRegion,
    entries: u16,
    sq_tail: u16,
    cq_head: u16,
    phase: bool,
    /// Completions consumed since the CQ head was last written back.
    unacked: u16,
    sq_doorbell: usize,
    cq_doorbell: usize,
}

impl Ring {
    fn new<P: Platform>(platform: &P, entries: u16, qid: usize, stride: usize) -> Option<Self> {
        let sq = platform.dma_alloc(entries as usize * SQE, 4096)?;
        let Some(cq) = platform.dma_alloc(entries as usize * CQE, 4096) else {
            platform.dma_free(sq);
            return None;
        };
        Some(Self {
            sq,
            cq,
            entries,
            sq_tail: 0,
            cq_head: 0,
            phase: true,
            unacked: 0,
            sq_doorbell: DOORBELLS + 2 * qid * stride,
            cq_doorbell: DOORBELLS + (2 * qid + 1) * stride,
        })
    }

    fn free<P: Platform>(self, platform: &P) {
        platform.dma_free(self.sq);
        platform.dma_free(self.cq);
    }

    /// Writes a command at the tail (dwords 0 to 15) without ringing.
    fn push(&mut self, dwords: &[u32; 16]) {
        let at = self.sq_tail as usize * SQE / 4;
        for (i, &d) in dwords.iter().enumerate() {
            // The device reads entries only up to the tail written last, so
            // this one is the reference's own until the doorbell.
            word(&self.sq, at + i).write(d);
        }
        self.sq_tail = if self.sq_tail + 1 == self.entries {
            0
        } else {
            self.sq_tail + 1
        };
    }

    fn ring_sq(&self, regs: &impl RegisterAccess) {
        // The SQEs must be in memory before the device hears of them (x86
        // keeps stores in order; the compiler must too). A weakly ordered CPU
        // would need a barrier here: the contest runs only where firmware
        // placed the BAR, on x86 (the catalog skips it on aarch64).
        compiler_fence(Ordering::SeqCst);
        regs.write32(self.sq_doorbell, u32::from(self.sq_tail));
    }

    /// The next completion if the device posted it: (command ID, status).
    fn pop(&mut self) -> Option<(u16, u16)> {
        // A word the device may be writing: read once, volatile.
        let dw3 = word(&self.cq, self.cq_head as usize * CQE / 4 + 3).read();
        if (dw3 >> 16) & 1 != self.phase as u32 {
            return None;
        }
        compiler_fence(Ordering::SeqCst);
        self.cq_head += 1;
        if self.cq_head == self.entries {
            self.cq_head = 0;
            self.phase = !self.phase;
        }
        self.unacked += 1;
        Some((dw3 as u16, ((dw3 >> 17) & 0x7FFF) as u16))
    }

    fn ack(&mut self, regs: &impl RegisterAccess) {
        regs.write32(self.cq_doorbell, u32::from(self.cq_head));
        self.unacked = 0;
    }
}

/// The reference on one controller, set up and serving one I/O queue pair.
pub struct Reference<'a, P: Platform> {
    platform: &'a P,
    regs: &'a P::Registers,
    admin: Option<Ring>,
    io: Option<Ring>,
    nsid: u32,
}

impl<'a, P: Platform> Reference<'a, P> {
    /// Resets the controller behind `regs` and sets up an I/O queue pair of
    /// `entries` entries, for reads of namespace `nsid`.
    pub fn new(
        platform: &'a P,
        regs: &'a P::Registers,
        entries: u16,
        nsid: u32,
    ) -> Result<Self, Failure> {
        let mut me = Self {
            platform,
            regs,
            admin: None,
            io: None,
            nsid,
        };
        me.bring_up(entries)?;
        Ok(me)
    }

    fn bring_up(&mut self, entries: u16) -> Result<(), Failure> {
        let regs = self.regs;
        let cap = u64::from(regs.read32(CAP)) | (u64::from(regs.read32(CAP + 4)) << 32);
        let stride = 4usize << ((cap >> 32) & 0xF);
        let timeout = Duration::from_millis(500 * ((cap >> 24) & 0xFF).max(1));
        regs.write32(CC, 0);
        self.wait_ready(false, timeout)?;
        let admin = Ring::new(self.platform, ADMIN_ENTRIES, 0, stride)
            .ok_or_else(|| failure!("reference: no DMA memory"))?;
        let (asq, acq) = (admin.sq.phys().as_u64(), admin.cq.phys().as_u64());
        self.admin = Some(admin);
        let size = u32::from(ADMIN_ENTRIES - 1);
        regs.write32(AQA, size | (size << 16));
        regs.write32(ASQ, asq as u32);
        regs.write32(ASQ + 4, (asq >> 32) as u32);
        regs.write32(ACQ, acq as u32);
        regs.write32(ACQ + 4, (acq >> 32) as u32);
        regs.write32(CC, CC_ENABLE);
        self.wait_ready(true, timeout)?;
        let io = Ring::new(self.platform, entries, 1, stride)
            .ok_or_else(|| failure!("reference: no DMA memory"))?;
        let (sq, cq) = (io.sq.phys().as_u64(), io.cq.phys().as_u64());
        self.io = Some(io);
        let qsize = u32::from(entries - 1) << 16;
        // Physically contiguous, interrupts off; the SQ completes on CQ 1.
        self.admin_command(CREATE_IO_CQ, cq, qsize | 1, 1)?;
        self.admin_command(CREATE_IO_SQ, sq, qsize | 1, (1 << 16) | 1)
    }

    fn wait_ready(&self, ready: bool, timeout: Duration) -> Result<(), Failure> {
        let deadline = clock::now() + timeout;
        while (self.regs.read32(CSTS) & 1 == 1) != ready {
            if clock::now() > deadline {
                return Err(failure!("reference: CSTS.RDY not {}", ready as u8));
            }
            core::hint::spin_loop();
        }
        Ok(())
    }

    /// One admin command, waited for with a deadline; its status must be 0.
    fn admin_command(
        &mut self,
        opcode: u8,
        prp1: u64,
        cdw10: u32,
        cdw11: u32,
    ) -> Result<(), Failure> {
        let regs = self.regs;
        let admin = self
            .admin
            .as_mut()
            .ok_or_else(|| failure!("no admin queue"))?;
        let mut sqe = [0u32; 16];
        sqe[0] = u32::from(opcode) | (u32::from(admin.sq_tail) << 16);
        sqe[6] = prp1 as u32;
        sqe[7] = (prp1 >> 32) as u32;
        sqe[10] = cdw10;
        sqe[11] = cdw11;
        admin.push(&sqe);
        admin.ring_sq(regs);
        let deadline = clock::now() + Duration::from_secs(5);
        loop {
            if let Some((_, status)) = admin.pop() {
                admin.ack(regs);
                if status != 0 {
                    return Err(failure!("reference: admin {opcode:#x} status {status:#x}"));
                }
                return Ok(());
            }
            if clock::now() > deadline {
                return Err(failure!("reference: admin {opcode:#x} timed out"));
            }
        }
    }

    /// Keeps `qd` random reads of `blocks` blocks in flight, into
    /// `buffers[0..qd]` (command ID = buffer index), for `time`; then drains.
    /// Returns the completions and the time taken.
    pub fn stream(
        &mut self,
        buffers: &[Option<DmaRegion>],
        qd: usize,
        mut next_lba: impl FnMut() -> u64,
        blocks: u32,
        time: Duration,
    ) -> Result<(u64, Duration), Failure> {
        let (regs, nsid) = (self.regs, self.nsid);
        let io = self.io.as_mut().ok_or_else(|| failure!("no I/O queue"))?;
        let mut prp = [0u64; super::MAX_QD];
        for (p, b) in prp.iter_mut().zip(buffers) {
            *p = b.as_ref().map_or(0, |b| b.phys().as_u64());
        }
        let read = |io: &mut Ring, cid: u16, lba: u64| {
            let mut sqe = [0u32; 16];
            sqe[0] = u32::from(READ) | (u32::from(cid) << 16);
            sqe[1] = nsid;
            let p = prp[cid as usize];
            sqe[6] = p as u32;
            sqe[7] = (p >> 32) as u32;
            sqe[10] = lba as u32;
            sqe[11] = (lba >> 32) as u32;
            sqe[12] = blocks - 1;
            io.push(&sqe);
        };
        let quarter = io.entries / 4;
        let start = clock::now();
        let end = start + time;
        for cid in 0..qd as u16 {
            read(io, cid, next_lba());
        }
        io.ring_sq(regs);
        let mut in_flight = qd;
        let mut ios = 0u64;
        let mut stopping = false;
        loop {
            let mut submitted = false;
            while let Some((cid, _)) = io.pop() {
                ios += 1;
                if stopping {
                    in_flight -= 1;
                } else {
                    read(io, cid, next_lba());
                    submitted = true;
                }
            }
            if io.unacked >= quarter {
                io.ack(regs);
            }
            if submitted {
                io.ring_sq(regs);
            }
            if stopping {
                if in_flight == 0 {
                    break;
                }
            } else if clock::now() >= end {
                stopping = true;
            }
            if clock::now() > end + Duration::from_secs(10) {
                return Err(failure!("reference: I/O stalled"));
            }
        }
        Ok((ios, clock::now() - start))
    }
}

impl<P: Platform> Drop for Reference<'_, P> {
    fn drop(&mut self) {
        // Disable and wait for it (bounded), so the rings can go back: the
        // device no longer fetches or posts once CSTS.RDY is 0.
        self.regs.write32(CC, 0);
        let stopped = self.wait_ready(false, Duration::from_secs(5)).is_ok();
        if !stopped {
            // Not handed back: the allocator keeps them, and the scenario's
            // DMA check reports them.
            log::error!("reference: controller did not stop; its rings are kept");
            return;
        }
        for ring in [self.admin.take(), self.io.take()].into_iter().flatten() {
            ring.free(self.platform);
        }
    }
}
