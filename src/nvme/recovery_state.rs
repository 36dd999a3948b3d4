//! What recovery keeps for a controller: resets in a row and in all, the
//! Abort it waits for, status glitches seen. The escalation that uses it is
//! in `recovery`.

use core::time::Duration;

use crate::nvme::admin::Ticket;

use crate::nvme::config::MAX_RESETS;
/// Wait before bring-up after the first reset; doubled for each further one.
const BACKOFF: Duration = Duration::from_millis(50);

/// What recovery keeps: resets in a row and in all, the abort it waits
/// for, glitches seen. Changed only here; others ask.
#[derive(Debug, Default)]
pub(crate) struct Recovery {
    /// Resets in a row without a successful command.
    resets: u8,
    /// Resets since the controller was attached.
    reset_count: u32,
    /// The abort the recovery waits for.
    abort: Option<PendingAbort>,
    /// Odd status reads that a second read contradicted.
    glitches: u32,
}

impl Recovery {
    /// A command succeeded: the controller works, earlier resets are
    /// forgotten.
    pub(crate) fn note_success(&mut self) {
        self.resets = 0;
    }

    /// Whether another reset would pass the budget of [`MAX_RESETS`].
    pub(crate) fn exhausted(&self) -> bool {
        self.resets >= MAX_RESETS
    }

    /// Resets since the controller was attached.
    pub(crate) fn reset_count(&self) -> u32 {
        self.reset_count
    }

    /// Odd status reads a second read contradicted.
    pub(crate) fn glitches(&self) -> u32 {
        self.glitches
    }

    /// Drops the abort waited for without telling the admin channel (a
    /// teardown abandons every admin command at once).
    pub(crate) fn drop_abort(&mut self) {
        self.abort = None;
    }

    /// Resets in a row without a successful command.
    pub(crate) fn resets_in_a_row(&self) -> u8 {
        self.resets
    }

    /// Counts a reset; returns the backoff before its bring-up (doubled for
    /// each reset in a row).
    pub(crate) fn count_reset(&mut self) -> Duration {
        let backoff = BACKOFF * (1u32 << self.resets.min(MAX_RESETS));
        self.resets = self.resets.saturating_add(1);
        self.reset_count = self.reset_count.saturating_add(1);
        backoff
    }

    /// An odd status read that a second read contradicted.
    pub(crate) fn note_glitch(&mut self) {
        self.glitches = self.glitches.saturating_add(1);
    }

    /// The abort waited for.
    pub(crate) fn abort(&self) -> Option<PendingAbort> {
        self.abort
    }

    /// An Abort of command `cid` on I/O queue index `queue` was submitted
    /// as `ticket`.
    pub(crate) fn abort_sent(&mut self, queue: u16, cid: u16, ticket: Ticket) {
        self.abort = Some(PendingAbort { queue, cid, ticket });
    }

    /// Takes the abort waited for (it ended, or is given up).
    pub(crate) fn take_abort(&mut self) -> Option<PendingAbort> {
        self.abort.take()
    }
}

/// An abort the driver waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PendingAbort {
    queue: u16,
    cid: u16,
    ticket: Ticket,
}

impl PendingAbort {
    /// The I/O queue (index) of the command.
    pub(crate) fn queue(&self) -> u16 {
        self.queue
    }

    /// The command's identifier.
    pub(crate) fn cid(&self) -> u16 {
        self.cid
    }

    /// The Abort command's ticket.
    pub(crate) fn ticket(&self) -> Ticket {
        self.ticket
    }
}
