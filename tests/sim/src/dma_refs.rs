//! Which memory a controller may still write, so that memory handed back
//! while the device can reach it is caught where it happens: at
//! `dma_free`, when a completion returns a buffer to its caller, and when
//! the device later writes into a buffer its caller owns again.

use bare_nvme::spec::command::{admin, nvm, SubmissionEntry};
use bare_nvme::DmaRegion;

use crate::controller::{Controller, Env};
use crate::memory::Arena;
use crate::prp;
use crate::state::State;

/// A byte range of physical memory, end exclusive.
pub(crate) type Range = (u64, u64);

fn overlaps(a: Range, b: Range) -> bool {
    a.0 < b.1 && b.0 < a.1
}

fn range_of(region: &DmaRegion) -> Range {
    let p = region.phys().as_u64();
    (p, p + region.len() as u64)
}

impl Controller {
    /// Bytes a command moves, as far as the model executes it (0: none).
    fn transfer_len(&self, sqid: u16, sqe: &SubmissionEntry) -> usize {
        let op = sqe.opcode();
        if sqid == 0 {
            return match op {
                admin::IDENTIFY => 4096,
                admin::GET_LOG_PAGE => {
                    (((sqe.cdw11 & 0xFFFF) << 16 | sqe.cdw10 >> 16) as usize + 1) * 4
                }
                _ => 0,
            };
        }
        let blocks = (sqe.cdw12 & 0xFFFF) as usize + 1;
        match op {
            nvm::READ | nvm::WRITE => sqe
                .nsid
                .checked_sub(1)
                .and_then(|n| self.namespaces.get(n as usize))
                .map_or(0, |ns| blocks * ns.block_size()),
            nvm::DATASET_MANAGEMENT => ((sqe.cdw10 & 0xFF) as usize + 1) * 16,
            _ => 0,
        }
    }

    /// The memory one command names: its data pages and PRP list entries,
    /// or the queue or buffers a creation or Doorbell Buffer Config hands
    /// over. Lenient: a broken PRP walk yields what it reached.
    pub(crate) fn command_memory(
        &self,
        sqid: u16,
        sqe: &SubmissionEntry,
        mem: &Arena,
    ) -> Vec<Range> {
        let page = self.page_size() as u64;
        let queue = |entry: u64| {
            let entries = (sqe.cdw10 >> 16) as u64 + 1;
            vec![(sqe.prp1, sqe.prp1.saturating_add(entries * entry))]
        };
        if sqid == 0 {
            match sqe.opcode() {
                admin::CREATE_SQ => return queue(64),
                admin::CREATE_CQ => return queue(16),
                admin::DOORBELL_BUFFER_CONFIG => {
                    return [sqe.prp1, sqe.prp2]
                        .iter()
                        .map(|&p| (p, p.saturating_add(page)))
                        .collect();
                }
                _ => {}
            }
        }
        let len = self.transfer_len(sqid, sqe);
        let mut lists = Vec::new();
        let segs = prp::walk(
            mem,
            &mut (),
            sqe.prp1,
            sqe.prp2,
            len,
            self.page_size(),
            &mut lists,
        )
        .unwrap_or_else(|_| {
            // A list the walk cannot follow (freed already, say): the
            // pages PRP1 and PRP2 name directly are still the command's.
            let first = page - sqe.prp1 % page;
            let mut direct = vec![(sqe.prp1, (len as u64).min(first) as usize)];
            if len as u64 > first {
                direct.push((sqe.prp2 & !(page - 1), page as usize));
            }
            direct
        });
        segs.iter()
            .map(|&(p, n)| (p, p.saturating_add(n as u64)))
            .chain(lists.iter().map(|&e| (e, e + 8)))
            .collect()
    }

    /// Everything the controller may still write: queue rings, shadow
    /// doorbell and EventIdx pages, and the memory of held commands.
    fn referenced(&self, mem: &Arena) -> Vec<(Range, String)> {
        let mut out = Vec::new();
        for (q, sq) in &self.sqs {
            out.push((
                (sq.base, sq.base + sq.size as u64 * 64),
                format!("SQ {q} ring"),
            ));
        }
        for (q, cq) in &self.cqs {
            out.push((
                (cq.base, cq.base + cq.size as u64 * 16),
                format!("CQ {q} ring"),
            ));
        }
        if let Some((dbs, eis)) = self.shadow {
            let page = self.page_size() as u64;
            out.push(((dbs, dbs + page), "shadow doorbell page".into()));
            out.push(((eis, eis + page), "EventIdx page".into()));
        }
        for h in &self.held {
            let what = format!("held command {} of SQ {}", h.sqe.cid(), h.sqid);
            for r in self.command_memory(h.sqid, &h.sqe, mem) {
                out.push((r, what.clone()));
            }
        }
        out
    }
}

impl State {
    /// Counts and logs `region` if a controller that can still DMA
    /// references it; `how` says how it was handed back.
    pub(crate) fn check_handed_back(&mut self, region: &DmaRegion, how: &str) {
        let range = range_of(region);
        let now = self.now;
        self.ctrls.iter_mut().for_each(|c| c.dev.update(now));
        for c in 0..self.ctrls.len() {
            if !self.can_dma(c) {
                continue;
            }
            let dev = &self.ctrls[c].dev;
            let hit = dev
                .referenced(&self.mem)
                .into_iter()
                .find(|(r, _)| overlaps(*r, range));
            if let Some((_, what)) = hit {
                let line = format!(
                    "{}: DMA region {:#x}+{:#x} {how} while the controller can still write it ({what})",
                    dev.spec.serial,
                    range.0,
                    range.1 - range.0
                );
                self.stats.c.freed_while_dma_possible += 1;
                self.stats.note(line);
            }
        }
    }

    /// The caller owns `region` again (a completion returned it).
    pub(crate) fn caller_owns(&mut self, region: &DmaRegion) {
        self.check_handed_back(region, "returned to its caller");
        let range = range_of(region);
        self.caller_owned.retain(|&r| !overlaps(r, range));
        self.caller_owned.push(range);
    }

    /// `region` goes back to the platform: no longer the caller's.
    pub(crate) fn forget_caller_owned(&mut self, region: &DmaRegion) {
        let range = range_of(region);
        self.caller_owned.retain(|&r| !overlaps(r, range));
    }
}

impl Env<'_> {
    /// A fetched command names this memory: it is the device's again.
    pub(crate) fn fetched(&mut self, memory: &[Range]) {
        self.caller_owned
            .retain(|&r| !memory.iter().any(|&m| overlaps(r, m)));
    }

    /// Whether a device write to `[phys, phys + len)` lands in memory the
    /// caller owns; if so it is counted as wild DMA and logged.
    pub(crate) fn write_into_caller_memory(&mut self, serial: &str, phys: u64, len: usize) -> bool {
        let range = (phys, phys.saturating_add(len as u64));
        if !self.caller_owned.iter().any(|&r| overlaps(r, range)) {
            return false;
        }
        self.stats.c.wild_dma += 1;
        self.stats.note(format!(
            "{serial}: write into memory the caller owns at {phys:#x}+{len:#x}"
        ));
        true
    }
}
