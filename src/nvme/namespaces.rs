//! The namespaces a controller serves, and what its last namespace scan
//! found: the active namespaces still to be looked at and those refused.

use crate::nvme::identify::{NamespaceInfo, NamespaceRefusal};

/// Most namespaces served per controller.
pub const MAX_NAMESPACES: usize = 16;

/// A namespace as the driver serves it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Namespace {
    /// Identify data.
    pub info: NamespaceInfo,
    /// Most blocks one command may carry.
    pub max_blocks: u32,
}

impl Namespace {
    /// Namespace ID.
    pub fn id(&self) -> u32 {
        self.info.nsid
    }
    /// Logical block size in bytes.
    pub fn block_size(&self) -> u32 {
        self.info.block_size()
    }
    /// Size in logical blocks.
    pub fn blocks(&self) -> u64 {
        self.info.blocks
    }
}

/// The served namespaces and the stamp that names this version of the list.
/// Namespace handles remember the stamp and their place in the list, so the
/// I/O path checks a handle with one comparison.
#[derive(Debug)]
pub(crate) struct Served {
    list: heapless::Vec<Namespace, MAX_NAMESPACES>,
    /// 0 while none was served.
    stamp: u32,
}

impl Served {
    /// None served.
    pub(crate) const fn new() -> Self {
        Self {
            list: heapless::Vec::new(),
            stamp: 0,
        }
    }

    /// The list.
    pub(crate) fn list(&self) -> &[Namespace] {
        &self.list
    }

    /// The namespace `nsid`.
    pub(crate) fn find(&self, nsid: u32) -> Option<&Namespace> {
        self.list.iter().find(|n| n.id() == nsid)
    }

    /// The namespace at `slot` if the list is still the version `stamp`
    /// names: what a namespace handle made on that version points at.
    #[inline]
    pub(crate) fn at(&self, stamp: u32, slot: u16) -> Option<&Namespace> {
        match self.list.get(slot as usize) {
            Some(ns) if stamp == self.stamp => Some(ns),
            _ => None,
        }
    }

    /// The stamp and the place of `nsid` in the list, for a namespace
    /// handle (`(0, 0)`, which never matches, when not served).
    pub(crate) fn place(&self, nsid: u32) -> (u32, u16) {
        match self.list.iter().position(|n| n.id() == nsid) {
            Some(slot) => (self.stamp, slot as u16),
            None => (0, 0),
        }
    }

    /// Forgets every namespace (a new scan starts).
    pub(crate) fn forget_all(&mut self) {
        self.list.clear();
        self.renew_stamp();
    }

    /// Serves `namespace`; false when the list is full.
    pub(crate) fn add(&mut self, namespace: Namespace) -> bool {
        let added = self.list.push(namespace).is_ok();
        self.renew_stamp();
        added
    }

    /// Keeps only the namespaces in `active`; returns the ids dropped.
    pub(crate) fn keep_active(&mut self, active: &[u32]) -> heapless::Vec<u32, MAX_NAMESPACES> {
        let gone = self
            .list
            .iter()
            .map(|n| n.id())
            .filter(|id| !active.contains(id))
            .collect();
        self.list.retain(|n| active.contains(&n.id()));
        self.renew_stamp();
        gone
    }

    /// Gives the list a new stamp, unique in the program: handles made on
    /// an earlier list (or on another controller) take the full check.
    /// Called whenever the list may have changed.
    fn renew_stamp(&mut self) {
        use core::sync::atomic::{AtomicU32, Ordering};
        static STAMPS: AtomicU32 = AtomicU32::new(1);
        let mut stamp = STAMPS.fetch_add(1, Ordering::Relaxed);
        if stamp == 0 {
            // Wrapped: 0 means "no stamp".
            stamp = STAMPS.fetch_add(1, Ordering::Relaxed);
        }
        self.stamp = stamp;
    }
}

/// What a namespace scan found: the active ids still to be looked at during
/// bring-up, and the active namespaces not served, with the reason.
#[derive(Debug)]
pub(crate) struct Discovery {
    pending: heapless::Vec<u32, MAX_NAMESPACES>,
    refused: heapless::Vec<(u32, NamespaceRefusal), MAX_NAMESPACES>,
}

impl Discovery {
    /// Nothing found yet.
    pub(crate) const fn new() -> Self {
        Self {
            pending: heapless::Vec::new(),
            refused: heapless::Vec::new(),
        }
    }

    /// A new scan found `active`: all to be looked at, none refused.
    pub(crate) fn begin(&mut self, active: heapless::Vec<u32, MAX_NAMESPACES>) {
        self.pending = active;
        self.refused.clear();
    }

    /// The `k`th active namespace of the scan.
    pub(crate) fn pending(&self, k: u16) -> Option<u32> {
        self.pending.get(k as usize).copied()
    }

    /// `nsid` is not served, for `reason`.
    pub(crate) fn refuse(&mut self, nsid: u32, reason: NamespaceRefusal) {
        // At most MAX_NAMESPACES are active at once, as this holds.
        let _ = self.refused.push((nsid, reason));
    }

    /// The namespaces refused, with the reason.
    pub(crate) fn refused(&self) -> &[(u32, NamespaceRefusal)] {
        &self.refused
    }

    /// Whether `nsid` was refused.
    pub(crate) fn is_refused(&self, nsid: u32) -> bool {
        self.refused.iter().any(|(r, _)| *r == nsid)
    }

    /// Forgets refusals of namespaces no longer in `active`.
    pub(crate) fn keep_active(&mut self, active: &[u32]) {
        self.refused.retain(|(id, _)| active.contains(id));
    }
}
