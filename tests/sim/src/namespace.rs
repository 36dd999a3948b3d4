//! Namespace storage: sparse blocks, a volatile write cache in front of the
//! durable media, and injected media errors.

use std::collections::HashMap;
use std::ops::Range;

use crate::spec::{Metadata, NamespaceSpec};

#[derive(Clone)]
pub(crate) struct Namespace {
    pub(crate) spec: NamespaceSpec,
    /// What survives power loss. Missing blocks read as zeroes.
    durable: HashMap<u64, Box<[u8]>>,
    /// Writes not yet flushed; `None` is a zeroed or deallocated block.
    cache: HashMap<u64, Option<Box<[u8]>>>,
    pub(crate) read_errors: Vec<Range<u64>>,
    pub(crate) write_errors: Vec<Range<u64>>,
    /// Attached to the controller (Namespace Attachment detaches it).
    pub(crate) attached: bool,
}

impl Namespace {
    pub(crate) fn new(spec: NamespaceSpec) -> Self {
        Self {
            spec,
            durable: HashMap::new(),
            cache: HashMap::new(),
            read_errors: Vec::new(),
            write_errors: Vec::new(),
            attached: true,
        }
    }

    pub(crate) fn blocks(&self) -> u64 {
        self.spec.blocks
    }

    pub(crate) fn block_size(&self) -> usize {
        self.spec.block_size as usize
    }

    /// Bytes one block moves in the data transfer: its data, plus its
    /// metadata when that is inline (extended LBAs).
    pub(crate) fn transfer_block_size(&self) -> usize {
        match self.spec.metadata {
            Some(Metadata::Extended(ms)) => self.block_size() + ms as usize,
            _ => self.block_size(),
        }
    }

    /// Metadata bytes per block that travel in a separate buffer (MPTR).
    pub(crate) fn separate_metadata(&self) -> Option<usize> {
        match self.spec.metadata {
            Some(Metadata::Separate(ms)) => Some(ms as usize),
            _ => None,
        }
    }

    /// Whether `[lba, lba + n)` lies inside the namespace.
    pub(crate) fn in_range(&self, lba: u64, n: u64) -> bool {
        lba.checked_add(n).is_some_and(|end| end <= self.blocks())
    }

    pub(crate) fn read_fails(&self, lba: u64, n: u64) -> bool {
        overlaps(&self.read_errors, lba, n)
    }

    pub(crate) fn write_fails(&self, lba: u64, n: u64) -> bool {
        overlaps(&self.write_errors, lba, n)
    }

    pub(crate) fn read_block(&self, lba: u64, out: &mut [u8]) {
        let data = match self.cache.get(&lba) {
            Some(cached) => cached.as_deref(),
            None => self.durable.get(&lba).map(|b| &b[..]),
        };
        match data {
            Some(d) => out.copy_from_slice(d),
            None => out.fill(0),
        }
    }

    /// Stores a block; `data = None` zeroes (or deallocates) it.
    pub(crate) fn write_block(&mut self, lba: u64, data: Option<&[u8]>, volatile: bool) {
        let data = data.filter(|d| d.iter().any(|&b| b != 0)).map(Box::from);
        if volatile {
            self.cache.insert(lba, data);
        } else {
            self.cache.remove(&lba);
            match data {
                Some(d) => self.durable.insert(lba, d),
                None => self.durable.remove(&lba),
            };
        }
    }

    /// Zeroes `[lba, lba + n)`; costs what is stored there, not the range.
    pub(crate) fn zero_range(&mut self, lba: u64, n: u64, volatile: bool) {
        let end = lba.saturating_add(n);
        let mut keys: Vec<u64> = self
            .durable
            .keys()
            .chain(self.cache.keys())
            .copied()
            .filter(|k| (lba..end).contains(k))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        for k in keys {
            self.write_block(k, None, volatile);
        }
    }

    /// Makes every cached write durable.
    pub(crate) fn flush(&mut self) {
        for (lba, data) in self.cache.drain() {
            match data {
                Some(d) => self.durable.insert(lba, d),
                None => self.durable.remove(&lba),
            };
        }
    }

    /// Drops every write that was not flushed.
    pub(crate) fn lose_cache(&mut self) {
        self.cache.clear();
    }

    /// Blocks written but not yet durable.
    pub(crate) fn dirty_blocks(&self) -> usize {
        self.cache.len()
    }
}

fn overlaps(ranges: &[Range<u64>], lba: u64, n: u64) -> bool {
    let end = lba.saturating_add(n);
    ranges.iter().any(|r| r.start < end && lba < r.end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_is_lost_unless_flushed() {
        let mut ns = Namespace::new(NamespaceSpec::new(8, 512));
        let mut buf = [0u8; 512];
        ns.write_block(1, Some(&[7; 512]), true);
        ns.flush();
        ns.write_block(2, Some(&[9; 512]), true);
        ns.write_block(1, None, true);
        ns.lose_cache();
        ns.read_block(1, &mut buf);
        assert_eq!(buf, [7; 512]);
        ns.read_block(2, &mut buf);
        assert_eq!(buf, [0; 512]);
    }
}
