//! The flushes an orderly detach of a controller with a volatile write
//! cache waits for: one per namespace served, submitted as the detach
//! starts (see `features`).

use log::warn;

use crate::nvme::namespaces::MAX_NAMESPACES;
use crate::nvme::tracker::Tracker;

/// Flushes an orderly detach waits for (one per namespace served), by CID
/// on the first I/O queue.
#[derive(Debug, Default)]
pub(crate) struct DetachFlushes {
    cids: heapless::Vec<u16, MAX_NAMESPACES>,
}

impl DetachFlushes {
    /// None.
    pub(crate) const fn new() -> Self {
        Self {
            cids: heapless::Vec::new(),
        }
    }

    /// The flush `cid` was submitted.
    pub(crate) fn submitted(&mut self, cid: u16) {
        // As many as namespaces: fits.
        let _ = self.cids.push(cid);
    }

    /// Takes the flushes that ended from `tracker` (nobody else collects a
    /// driver's own command), logging failures; keeps those in flight.
    pub(crate) fn collect<const DEPTH: usize>(&mut self, tracker: &mut Tracker<DEPTH>) {
        self.cids.retain(|&cid| match tracker.take_done_cid(cid) {
            Some(done) => {
                if let Err(e) = done.result {
                    warn!("nvme: flush before detach failed: {e}");
                }
                false
            }
            None => tracker.in_flight_mut(cid).is_some(),
        });
    }

    /// Forgets every flush; returns how many of them `tracker` still has in
    /// flight.
    pub(crate) fn forget<const DEPTH: usize>(
        &mut self,
        tracker: Option<&mut Tracker<DEPTH>>,
    ) -> usize {
        let own = tracker.map_or(0, |t| {
            self.cids
                .iter()
                .filter(|&&cid| t.in_flight_mut(cid).is_some())
                .count()
        });
        self.cids.clear();
        own
    }
}
