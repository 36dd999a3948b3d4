//! Quarantined memory: how much was kept, and the driver's own regions held
//! (not dropped) until a proof that DMA stopped lets them return.

use crate::platform::{DmaRegion, Platform};

/// Memory the driver kept because it could not prove that the device can no
/// longer reach it (the device did not stop within its deadline). Caller
/// buffers among it are never handed back; the driver's own regions return to
/// the platform if a later proof comes (see [`crate::Driver::quarantine_returned`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Quarantine {
    /// DMA regions kept.
    pub regions: u32,
    /// Their total size in bytes.
    pub bytes: u64,
}

impl Quarantine {
    /// Counts `region`.
    fn add(&mut self, region: &DmaRegion) {
        self.regions = self.regions.saturating_add(1);
        self.bytes = self.bytes.saturating_add(region.len() as u64);
    }

    /// Adds `other` to these counts.
    pub(crate) fn merge(&mut self, other: Quarantine) {
        self.regions = self.regions.saturating_add(other.regions);
        self.bytes = self.bytes.saturating_add(other.bytes);
    }
}

/// The driver's own regions of one structure, kept in quarantine: held, not
/// dropped, so that a later proof that DMA stopped can free them. `K` fits
/// every region the structure owns, so nothing is ever dropped here.
#[derive(Debug, Default)]
pub(crate) struct Kept<const K: usize>(heapless::Vec<DmaRegion, K>);

impl<const K: usize> Kept<K> {
    /// Nothing kept.
    pub(crate) const fn new() -> Self {
        Self(heapless::Vec::new())
    }

    /// Keeps `region`; beyond `K` (never, by construction) it is leaked,
    /// which is still safe: the memory is not reused.
    pub(crate) fn keep(&mut self, region: DmaRegion) {
        let _leaked_if_full = self.0.push(region);
    }

    /// Whether anything is kept.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Frees everything kept, once: the caller has proof that DMA stopped.
    pub(crate) fn free<P: Platform>(&mut self, platform: &P) -> Quarantine {
        let mut freed = Quarantine::default();
        while let Some(region) = self.0.pop() {
            freed.add(&region);
            platform.dma_free(region);
        }
        freed
    }
}
