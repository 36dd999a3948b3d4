//! The controller's own DMA pages besides its queues: the scratch page that
//! identify data and log pages land in, and the shadow doorbell pages.
//!
//! Both are allocated once and reused across resets; they go back to the
//! platform (or into quarantine) only at the controller's end, with its
//! queues.

use crate::error::{Error, Result};
use crate::nvme::kept::{Kept, Quarantine};
use crate::nvme::prp::PAGE_SIZE;
use crate::nvme::queue::DoorbellBuffers;
use crate::nvme::shared_memory::SharedMemory;
use crate::platform::{DmaRegion, Platform};

/// The scratch page and the shadow doorbell pages, while they exist.
#[derive(Debug, Default)]
pub(crate) struct OwnPages {
    scratch: Option<SharedMemory>,
    /// Shadow doorbell and EventIdx pages, while Doorbell Buffer Config is
    /// in effect (or about to be).
    doorbells: Option<DoorbellBuffers>,
    /// The pages when quarantined (see [`Kept`]).
    kept: Kept<3>,
}

impl OwnPages {
    /// No pages yet.
    pub(crate) const fn new() -> Self {
        Self {
            scratch: None,
            doorbells: None,
            kept: Kept::new(),
        }
    }

    /// Allocates the scratch page unless it exists.
    pub(crate) fn ensure_scratch<P: Platform>(&mut self, platform: &P) -> Result<()> {
        if self.scratch.is_none() {
            self.scratch = Some(SharedMemory::alloc(platform, PAGE_SIZE, PAGE_SIZE)?);
        }
        Ok(())
    }

    /// The scratch page's device address.
    pub(crate) fn scratch_address(&self) -> Result<u64> {
        self.scratch
            .as_ref()
            .map(|s| s.phys().as_u64())
            .ok_or(Error::Internal {
                what: "scratch page missing",
            })
    }

    /// Zeroes the scratch page (the zeroes reach memory, so a device writing
    /// fewer bytes than asked leaves zeroes, not stale data) and returns its
    /// device address.
    pub(crate) fn zeroed_scratch<P: Platform>(&self, platform: &P) -> Result<u64> {
        let scratch = self.scratch.as_ref().ok_or(Error::Internal {
            what: "scratch page missing",
        })?;
        scratch.zero();
        scratch.flush(platform, 0, PAGE_SIZE);
        Ok(scratch.phys().as_u64())
    }

    /// Copies the scratch page into `page` and returns the bytes copied:
    /// device data is parsed from the copy, which the device cannot change.
    pub(crate) fn read_scratch<'a, P: Platform>(
        &self,
        platform: &P,
        page: &'a mut [u8; PAGE_SIZE],
    ) -> &'a [u8] {
        let n = self.scratch.as_ref().map_or(0, |s| {
            // What the device wrote, not stale lines of an earlier command.
            s.invalidate(platform, 0, PAGE_SIZE);
            s.copy_out(0, page)
        });
        &page[..n]
    }

    /// The shadow doorbell pages, while in use.
    pub(crate) fn doorbells(&self) -> Option<&DoorbellBuffers> {
        self.doorbells.as_ref()
    }

    /// Zeroed shadow doorbell pages (the new queues' tails and heads are
    /// 0): the existing ones cleared, or fresh ones.
    pub(crate) fn fresh_doorbells<P: Platform>(&mut self, platform: &P) -> Result<()> {
        match self.doorbells.as_mut() {
            Some(buffers) => buffers.clear(platform),
            None => self.doorbells = Some(DoorbellBuffers::alloc(platform)?),
        }
        Ok(())
    }

    /// Returns the shadow doorbell pages (the controller does not use them).
    pub(crate) fn release_doorbells<P: Platform>(&mut self, platform: &P) {
        if let Some(buffers) = self.doorbells.take() {
            buffers.release(platform);
        }
    }

    /// Returns every page to the platform.
    pub(crate) fn release<P: Platform>(&mut self, platform: &P) {
        if let Some(s) = self.scratch.take() {
            s.release(platform);
        }
        self.release_doorbells(platform);
    }

    /// Moves every page into quarantine, counting it into `count`.
    pub(crate) fn quarantine(&mut self, count: &mut impl FnMut(&DmaRegion)) {
        let mut kept = Kept::new();
        self.release_with(|region| {
            count(&region);
            kept.keep(region);
        });
        self.kept = kept;
    }

    /// Frees the quarantined pages (the caller has proof that DMA stopped).
    pub(crate) fn free_kept<P: Platform>(&mut self, platform: &P) -> Quarantine {
        self.kept.free(platform)
    }

    /// Whether pages are in quarantine.
    pub(crate) fn has_kept(&self) -> bool {
        !self.kept.is_empty()
    }

    /// Hands every page to `keep` (quarantine).
    pub(crate) fn release_with(&mut self, mut keep: impl FnMut(DmaRegion)) {
        if let Some(s) = self.scratch.take() {
            keep(s.into_region());
        }
        if let Some(buffers) = self.doorbells.take() {
            buffers.release_with(keep);
        }
    }
}
