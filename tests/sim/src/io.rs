//! NVM command set I/O: Read, Write, Flush, Write Zeroes, Dataset Management.

use bare_nvme::spec::command::{nvm, sc, sct, Status, SubmissionEntry};
use bare_nvme::spec::identify::csi;

use crate::controller::{Controller, Env};
use crate::queues::Outcome;

/// Flush applies to all namespaces when NSID is all-ones.
const ALL_NAMESPACES: u32 = 0xFFFF_FFFF;
/// CDW12 bit 30: Force Unit Access.
const FUA: u32 = 1 << 30;
/// DSM CDW11 bit 2: deallocate.
const DSM_DEALLOCATE: u32 = 1 << 2;
/// Command specific status of the Zoned Namespace command set: Zone Invalid
/// Write.
const ZONE_INVALID_WRITE: u8 = 0xBC;

fn generic(code: u8) -> Outcome {
    Outcome::err(Status::new(sct::GENERIC, code))
}

impl Controller {
    pub(crate) fn execute_io(&mut self, sqe: SubmissionEntry, env: &mut Env) -> Option<Outcome> {
        let op = sqe.opcode();
        if op == nvm::FLUSH && sqe.nsid == ALL_NAMESPACES {
            self.namespaces.iter_mut().for_each(|n| n.flush());
            return Some(Outcome::ok(0));
        }
        let nn = self.namespaces.len() as u32;
        if !(1..=nn).contains(&sqe.nsid) || !self.namespaces[sqe.nsid as usize - 1].attached {
            return Some(generic(sc::INVALID_NAMESPACE));
        }
        let ns = sqe.nsid as usize - 1;
        match self.namespaces[ns].spec.csi {
            csi::NVM => {}
            // No write pointers are kept: every write is off the pointer.
            csi::ZONED if matches!(op, nvm::WRITE | nvm::WRITE_ZEROES) => {
                let status = Status::new(sct::COMMAND_SPECIFIC, ZONE_INVALID_WRITE);
                return Some(Outcome::err(status));
            }
            csi::ZONED => {}
            _ => return Some(generic(sc::INVALID_OPCODE)),
        }
        Some(match op {
            nvm::FLUSH => {
                self.namespaces[ns].flush();
                Outcome::ok(0)
            }
            nvm::READ => self.read_cmd(ns, &sqe, env),
            nvm::WRITE => self.write_cmd(ns, &sqe, env),
            nvm::WRITE_ZEROES => {
                let (lba, n) = (sqe.slba(), (sqe.cdw12 & 0xFFFF) as u64 + 1);
                let volatile = self.write_cache_enabled && sqe.cdw12 & FUA == 0;
                let ns = &mut self.namespaces[ns];
                if !ns.in_range(lba, n) {
                    generic(sc::LBA_OUT_OF_RANGE)
                } else if ns.write_fails(lba, n) {
                    Outcome::err(Status::new(sct::MEDIA, sc::media::WRITE_FAULT))
                } else {
                    ns.zero_range(lba, n, volatile);
                    Outcome::ok(0)
                }
            }
            nvm::DATASET_MANAGEMENT => self.dataset_management(ns, &sqe, env),
            _ => generic(sc::INVALID_OPCODE),
        })
    }

    /// Validates range and MDTS; returns (lba, blocks, bytes).
    fn rw_range(&self, ns: usize, sqe: &SubmissionEntry) -> Result<(u64, u64, usize), Outcome> {
        let n = &self.namespaces[ns];
        let (lba, blocks) = (sqe.slba(), (sqe.cdw12 & 0xFFFF) as u64 + 1);
        if !n.in_range(lba, blocks) {
            return Err(generic(sc::LBA_OUT_OF_RANGE));
        }
        let bytes = blocks as usize * n.transfer_block_size();
        // MDTS is a power of two of minimum pages; past 2^63 bytes it is no limit.
        let shift = 12 + u32::from(self.spec.mpsmin) + u32::from(self.spec.mdts);
        if self.spec.mdts != 0 && shift < usize::BITS && bytes > 1usize << shift {
            return Err(generic(sc::INVALID_FIELD));
        }
        Ok((lba, blocks, bytes))
    }

    fn read_cmd(&mut self, ns: usize, sqe: &SubmissionEntry, env: &mut Env) -> Outcome {
        let (lba, blocks, bytes) = match self.rw_range(ns, sqe) {
            Ok(r) => r,
            Err(o) => return o,
        };
        let n = &self.namespaces[ns];
        if n.read_fails(lba, blocks) {
            return Outcome::err(Status::new(sct::MEDIA, sc::media::UNRECOVERED_READ_ERROR));
        }
        let (bs, tbs) = (n.block_size(), n.transfer_block_size());
        let mut data = vec![0u8; bytes];
        // Inline metadata (the tail of each chunk) reads as zeroes.
        for (i, chunk) in data.chunks_mut(tbs).enumerate() {
            n.read_block(lba + i as u64, &mut chunk[..bs]);
        }
        if let Err(o) = self.metadata_transfer(ns, sqe, blocks, true, env) {
            return o;
        }
        match self.transfer_out(sqe, &data, env) {
            Ok(()) => Outcome::ok(0),
            Err(s) => Outcome::err(s),
        }
    }

    /// The separate metadata buffer of a Read (`to_host`) or Write on a
    /// namespace formatted with one: MPTR must name DMA memory for
    /// `blocks` times the metadata size. Metadata is not stored; reads
    /// return zeroes.
    fn metadata_transfer(
        &self,
        ns: usize,
        sqe: &SubmissionEntry,
        blocks: u64,
        to_host: bool,
        env: &mut Env,
    ) -> Result<(), Outcome> {
        let Some(ms) = self.namespaces[ns].separate_metadata() else {
            return Ok(());
        };
        let (serial, nsid, mptr) = (&self.spec.serial, sqe.nsid, sqe.mptr);
        if mptr == 0 || mptr & 3 != 0 {
            // A real controller would move the metadata to or from this
            // address: physical address 0 for MPTR = 0.
            env.stats.protocol(format!(
                "{serial}: opcode {:#04x} to namespace {nsid} with {ms}-byte separate \
                 metadata has MPTR {mptr:#x}",
                sqe.opcode()
            ));
            return Err(generic(sc::INVALID_FIELD));
        }
        let len = blocks as usize * ms;
        if !env.mem.contains(mptr, len) {
            env.stats.c.wild_dma += 1;
            return Err(generic(sc::DATA_TRANSFER_ERROR));
        }
        let mut metadata = vec![0u8; len];
        let moved = if to_host {
            env.mem.write(mptr, &metadata)
        } else {
            env.mem.read(mptr, &mut metadata)
        };
        moved.map_err(|_| generic(sc::DATA_TRANSFER_ERROR))
    }

    fn write_cmd(&mut self, ns: usize, sqe: &SubmissionEntry, env: &mut Env) -> Outcome {
        let (lba, blocks, bytes) = match self.rw_range(ns, sqe) {
            Ok(r) => r,
            Err(o) => return o,
        };
        if let Err(o) = self.metadata_transfer(ns, sqe, blocks, false, env) {
            return o;
        }
        let mut data = vec![0u8; bytes];
        if let Err(s) = self.transfer_in(sqe, &mut data, env) {
            return Outcome::err(s);
        }
        let volatile = self.write_cache_enabled && sqe.cdw12 & FUA == 0;
        let n = &mut self.namespaces[ns];
        if n.write_fails(lba, blocks) {
            return Outcome::err(Status::new(sct::MEDIA, sc::media::WRITE_FAULT));
        }
        let (bs, tbs) = (n.block_size(), n.transfer_block_size());
        // Inline metadata (the tail of each chunk) is not stored.
        for (i, chunk) in data.chunks(tbs).enumerate() {
            n.write_block(lba + i as u64, Some(&chunk[..bs]), volatile);
        }
        Outcome::ok(0)
    }

    fn dataset_management(&mut self, ns: usize, sqe: &SubmissionEntry, env: &mut Env) -> Outcome {
        let ranges = (sqe.cdw10 & 0xFF) as usize + 1;
        let mut list = vec![0u8; ranges * 16];
        if let Err(s) = self.transfer_in(sqe, &mut list, env) {
            return Outcome::err(s);
        }
        let parsed: Vec<(u64, u64)> = list
            .chunks(16)
            .map(|r| {
                let len = u32::from_le_bytes(r[4..8].try_into().expect("4")) as u64;
                let lba = u64::from_le_bytes(r[8..16].try_into().expect("8"));
                (lba, len)
            })
            .collect();
        let n = &mut self.namespaces[ns];
        if parsed.iter().any(|&(lba, len)| !n.in_range(lba, len)) {
            return generic(sc::LBA_OUT_OF_RANGE);
        }
        if sqe.cdw11 & DSM_DEALLOCATE != 0 {
            // Deallocated blocks read as zeroes (DLFEAT-style behaviour).
            let volatile = self.write_cache_enabled;
            for (lba, len) in parsed {
                n.zero_range(lba, len, volatile);
            }
        }
        Outcome::ok(0)
    }
}
