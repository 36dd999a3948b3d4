//! A minimal hand-written driver that talks to the simulation only through
//! the boundary traits, to prove the model behaves like the hardware.
#![allow(dead_code)]

use std::time::Duration;

use bare_nvme::nvme::command::{admin, CompletionEntry, SubmissionEntry};
use bare_nvme::nvme::regs;
use bare_nvme::{DmaRegion, Platform, RegisterAccess};
use bare_nvme_sim::{Sim, SimConfig, SimPlatform, SimRegisters};
use pci_types::{ConfigRegionAccess, PciAddress};

pub const QSIZE: u16 = 16;

pub fn cfg_read(cfg: &SimConfig, a: PciAddress, off: u16) -> u32 {
    // SAFETY: the simulated config space accepts any address.
    unsafe { cfg.read(a, off) }
}

pub fn cfg_write(cfg: &SimConfig, a: PciAddress, off: u16, v: u32) {
    // SAFETY: as above.
    unsafe { cfg.write(a, off, v) }
}

pub fn addr(bus: u8, dev: u8) -> PciAddress {
    PciAddress::new(0, bus, dev, 0)
}

/// Every NVMe function reachable from bus 0 through one level of bridges.
pub fn find_nvme(cfg: &SimConfig) -> Vec<PciAddress> {
    let mut found = Vec::new();
    let mut buses = vec![0u8];
    let mut i = 0;
    while i < buses.len() {
        let bus = buses[i];
        i += 1;
        for dev in 0..32 {
            let a = addr(bus, dev);
            let id = cfg_read(cfg, a, 0);
            if id == 0xFFFF_FFFF {
                continue;
            }
            let class = cfg_read(cfg, a, 8) >> 8;
            let header = (cfg_read(cfg, a, 0x0C) >> 16) as u8 & 0x7F;
            if class == 0x01_08_02 {
                found.push(a);
            } else if header == 1 {
                let sec = (cfg_read(cfg, a, 0x18) >> 8) as u8;
                if sec != 0 && !buses.contains(&sec) {
                    buses.push(sec);
                }
            }
        }
    }
    found
}

/// Writes an SQE into ring memory.
pub fn put_sqe(ring: &mut DmaRegion, slot: u16, e: &SubmissionEntry) {
    let mut b = [0u8; 64];
    let dws = [e.cdw0, e.nsid, e.cdw2, e.cdw3];
    for (i, d) in dws.iter().enumerate() {
        b[i * 4..i * 4 + 4].copy_from_slice(&d.to_le_bytes());
    }
    b[16..24].copy_from_slice(&e.mptr.to_le_bytes());
    b[24..32].copy_from_slice(&e.prp1.to_le_bytes());
    b[32..40].copy_from_slice(&e.prp2.to_le_bytes());
    let rest = [e.cdw10, e.cdw11, e.cdw12, e.cdw13, e.cdw14, e.cdw15];
    for (i, d) in rest.iter().enumerate() {
        b[40 + i * 4..44 + i * 4].copy_from_slice(&d.to_le_bytes());
    }
    let at = slot as usize * 64;
    ring.as_mut_slice()[at..at + 64].copy_from_slice(&b);
}

pub fn get_cqe(ring: &DmaRegion, slot: u16) -> CompletionEntry {
    let at = slot as usize * 16;
    let b = &ring.as_slice()[at..at + 16];
    let d = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
    let w = |i: usize| u16::from_le_bytes(b[i..i + 2].try_into().unwrap());
    CompletionEntry {
        dw0: d(0),
        dw1: d(4),
        sq_head: w(8),
        sq_id: w(10),
        cid: w(12),
        status: w(14),
    }
}

/// One SQ/CQ pair as the host sees it.
pub struct Queue {
    pub qid: u16,
    pub sq: DmaRegion,
    pub cq: DmaRegion,
    pub tail: u16,
    pub head: u16,
    pub phase: bool,
    pub size: u16,
}

impl Queue {
    pub fn new(p: &SimPlatform, qid: u16, size: u16) -> Self {
        Self {
            qid,
            sq: p.dma_alloc(size as usize * 64, 4096).unwrap(),
            cq: p.dma_alloc(size as usize * 16, 4096).unwrap(),
            tail: 0,
            head: 0,
            phase: true,
            size,
        }
    }

    /// Places an entry without ringing the doorbell.
    pub fn push(&mut self, e: &SubmissionEntry) {
        put_sqe(&mut self.sq, self.tail, e);
        self.tail = (self.tail + 1) % self.size;
    }

    /// The next completion if its phase says it is new.
    pub fn peek(&self) -> Option<CompletionEntry> {
        let e = get_cqe(&self.cq, self.head);
        (e.phase() == self.phase).then_some(e)
    }

    pub fn pop(&mut self) -> Option<CompletionEntry> {
        let e = self.peek()?;
        self.head = (self.head + 1) % self.size;
        if self.head == 0 {
            self.phase = !self.phase;
        }
        Some(e)
    }

    pub fn free(self, p: &SimPlatform) {
        p.dma_free(self.sq);
        p.dma_free(self.cq);
    }
}

/// A controller brought up by hand.
pub struct Mini {
    pub sim: Sim,
    pub p: SimPlatform,
    pub cfg: SimConfig,
    pub regs: SimRegisters,
    pub admin: Queue,
    pub io: Option<Queue>,
    pub cid: u16,
    pub dstrd: u8,
}

pub type R<T> = Result<T, String>;

impl Mini {
    /// Maps the first NVMe function (firmware-assigned BAR), enables bus
    /// mastering.
    pub fn map(sim: &Sim) -> R<(SimPlatform, SimConfig, SimRegisters, PciAddress)> {
        let p = sim.platform();
        let cfg = sim.config_access();
        let a = *find_nvme(&cfg).first().ok_or("no nvme function")?;
        let bar = (cfg_read(&cfg, a, 0x10) & !0xF) as u64 | (cfg_read(&cfg, a, 0x14) as u64) << 32;
        if bar == 0 || bar & 0xFFFF_FFFF == 0xFFFF_FFF0 {
            return Err(format!("BAR0 reads {bar:#x}"));
        }
        cfg_write(&cfg, a, 4, 0x0406);
        let regs = p
            .map_registers(bare_nvme::PhysAddr::new(bar), 0x4000)
            .unwrap();
        Ok((p, cfg, regs, a))
    }

    pub fn wait_csts(&self, want_rdy: bool) -> R<()> {
        let deadline = self.p.now() + Duration::from_millis(20);
        loop {
            let csts = self.regs.read32(regs::CSTS);
            if csts == u32::MAX {
                return Err("CSTS all-ones".into());
            }
            if (csts & 1 != 0) == want_rdy {
                return Ok(());
            }
            if self.p.now() > deadline {
                return Err(format!("timeout waiting RDY={want_rdy}"));
            }
        }
    }

    /// Reset, admin queues, enable.
    pub fn bring_up(sim: &Sim) -> R<Mini> {
        let (p, cfg, regs, _) = Self::map(sim)?;
        let cap = regs::Cap(regs.read64(regs::CAP));
        let admin = Queue::new(&p, 0, QSIZE);
        let mut m = Mini {
            sim: sim.clone(),
            p,
            cfg,
            regs,
            admin,
            io: None,
            cid: 0,
            dstrd: cap.doorbell_stride_exp(),
        };
        match m.enable() {
            Ok(()) => Ok(m),
            Err(e) => {
                m.release();
                Err(e)
            }
        }
    }

    fn enable(&mut self) -> R<()> {
        self.regs.write32(regs::CC, 0);
        self.wait_csts(false)?;
        self.regs.write32(regs::AQA, regs::aqa_value(QSIZE, QSIZE));
        self.regs.write64(regs::ASQ, self.admin.sq.phys().as_u64());
        self.regs.write64(regs::ACQ, self.admin.cq.phys().as_u64());
        self.regs.write32(regs::CC, regs::Cc::enable_value(0));
        self.wait_csts(true)
    }

    fn next_cid(&mut self) -> u16 {
        self.cid = self.cid.wrapping_add(1);
        self.cid
    }

    /// Submits on queue `io` (or admin) and rings the doorbell.
    pub fn submit(&mut self, io: bool, mut e: SubmissionEntry) -> u16 {
        let cid = self.next_cid();
        e.set_cid(cid);
        let dstrd = self.dstrd;
        let q = if io {
            self.io.as_mut().unwrap()
        } else {
            &mut self.admin
        };
        q.push(&e);
        let (qid, tail) = (q.qid, q.tail);
        self.regs
            .write32(regs::sq_tail_doorbell(qid, dstrd), tail as u32);
        cid
    }

    /// Polls for one completion with a deadline and acknowledges it.
    pub fn reap(&mut self, io: bool) -> R<CompletionEntry> {
        let deadline = self.p.now() + Duration::from_millis(10);
        let dstrd = self.dstrd;
        loop {
            let q = if io {
                self.io.as_mut().unwrap()
            } else {
                &mut self.admin
            };
            if let Some(e) = q.pop() {
                let (qid, head) = (q.qid, q.head);
                self.regs
                    .write32(regs::cq_head_doorbell(qid, dstrd), head as u32);
                return Ok(e);
            }
            if self.p.now() > deadline {
                return Err("command timeout".into());
            }
        }
    }

    pub fn cmd(&mut self, io: bool, e: SubmissionEntry) -> R<CompletionEntry> {
        let cid = self.submit(io, e);
        let c = self.reap(io)?;
        if c.cid != cid {
            return Err(format!("cid {} for {cid}", c.cid));
        }
        Ok(c)
    }

    /// Runs an admin command that transfers one 4 KiB page to the host.
    pub fn admin_page(&mut self, mut e: SubmissionEntry) -> R<(CompletionEntry, Vec<u8>)> {
        let buf = self.p.dma_alloc(4096, 4096).unwrap();
        e.prp1 = buf.phys().as_u64();
        let r = self.cmd(false, e);
        let data = buf.as_slice().to_vec();
        self.p.dma_free(buf);
        Ok((r?, data))
    }

    /// Set Features Number of Queues, then I/O queue pair 1.
    pub fn create_io(&mut self, size: u16) -> R<()> {
        let mut e = SubmissionEntry::new(admin::SET_FEATURES);
        e.cdw10 = 7;
        e.cdw11 = 0;
        ok(self.cmd(false, e)?)?;
        let q = Queue::new(&self.p, 1, size);
        if let Err(e) = self.create_pair(&q) {
            q.free(&self.p);
            return Err(e);
        }
        self.io = Some(q);
        Ok(())
    }

    fn create_pair(&mut self, q: &Queue) -> R<()> {
        let size = q.size as u32;
        let mut e = SubmissionEntry::new(admin::CREATE_CQ);
        e.prp1 = q.cq.phys().as_u64();
        e.cdw10 = 1 | ((size - 1) << 16);
        e.cdw11 = 1;
        ok(self.cmd(false, e)?)?;
        let mut e = SubmissionEntry::new(admin::CREATE_SQ);
        e.prp1 = q.sq.phys().as_u64();
        e.cdw10 = 1 | ((size - 1) << 16);
        e.cdw11 = 1 | (1 << 16);
        ok(self.cmd(false, e)?)?;
        Ok(())
    }

    /// Deletes the I/O queues, disables, frees everything.
    pub fn shut_down(mut self) -> R<()> {
        if self.io.is_some() {
            let mut e = SubmissionEntry::new(admin::DELETE_SQ);
            e.cdw10 = 1;
            ok(self.cmd(false, e)?)?;
            let mut e = SubmissionEntry::new(admin::DELETE_CQ);
            e.cdw10 = 1;
            ok(self.cmd(false, e)?)?;
        }
        self.regs.write32(regs::CC, 0);
        self.wait_csts(false)?;
        self.release();
        Ok(())
    }

    /// Disables the controller (a bounded wait for RDY to drop, so a dead
    /// or hung device does not stop it) and returns the DMA memory.
    pub fn release(self) {
        self.regs.write32(regs::CC, 0);
        let _ = self.wait_csts(false);
        self.abandon();
    }

    /// Returns the DMA memory without talking to the device.
    pub fn abandon(self) {
        if let Some(q) = self.io {
            q.free(&self.p);
        }
        self.admin.free(&self.p);
    }
}

/// Ok if the completion reports success.
pub fn ok(c: CompletionEntry) -> R<CompletionEntry> {
    if c.status().is_success() {
        Ok(c)
    } else {
        Err(format!("status {:?}", c.status()))
    }
}

/// A Read or Write of `blocks` blocks at `lba` with PRP1/PRP2 given.
pub fn rw(op: u8, nsid: u32, lba: u64, blocks: u16, prp1: u64, prp2: u64) -> SubmissionEntry {
    let mut e = SubmissionEntry::new(op);
    e.nsid = nsid;
    e.set_lba_range(lba, blocks);
    e.prp1 = prp1;
    e.prp2 = prp2;
    e
}
