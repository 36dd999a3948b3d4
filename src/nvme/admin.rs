//! The admin channel: the admin queue pair with its own submit and poll.
//!
//! Several parties use the admin queue at once: the lifecycle (identify,
//! queue creation and deletion) and recovery (Abort). Each submission gets
//! its own ticket (the CID), and each party polls for its own ticket, so a
//! completion can never be taken for another party's command. A ticket its
//! owner gave up ([`AdminChannel::forget`]) is discarded when it completes.

use core::time::Duration;

use crate::error::{Error, Result, Wait};
use crate::nvme::command::SubmissionEntry;
use crate::nvme::qpair::{QueueFaults, QueuePair};
use crate::platform::{Instant, Platform, RegisterAccess};

/// Entries of the admin queue.
pub const ADMIN_QUEUE_DEPTH: usize = 32;

/// Admin entries event requests never take: an Abort and one other command
/// (an event's follow-up, a caller's log page read, or a detach's queue
/// deletion) always find room, however many requests the controller takes.
pub(crate) const RESERVED_ENTRIES: u16 = 2;

/// Tickets given up by their owners and not completed yet. More than the
/// lifecycle command and one Abort are never outstanding.
const FORGOTTEN: usize = 4;

/// A submitted admin command, named by its CID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ticket(u16);

/// The admin queue pair and the tickets nobody waits for any more.
#[derive(Debug)]
pub(crate) struct AdminChannel {
    queue: QueuePair<ADMIN_QUEUE_DEPTH>,
    forgotten: heapless::Vec<Ticket, FORGOTTEN>,
    /// The command the lifecycle waits for ([`AdminChannel::exchange`]).
    exchange: Option<Ticket>,
    /// Each command's deadline, for the timeout error's message.
    timeout: Duration,
}

impl AdminChannel {
    /// A channel without memory yet, whose commands are given `timeout`.
    pub(crate) fn new(timeout: Duration) -> Self {
        Self {
            queue: QueuePair::new(0, ADMIN_QUEUE_DEPTH as u16),
            forgotten: heapless::Vec::new(),
            exchange: None,
            timeout,
        }
    }

    /// Allocates fresh rings of `entries` (after the controller was
    /// disabled); device addresses of the SQ and CQ for ASQ and ACQ.
    pub(crate) fn attach_rings<P: Platform>(
        &mut self,
        platform: &P,
        entries: u16,
        dstrd: u8,
    ) -> Result<(u64, u64)> {
        self.queue.attach_rings(platform, entries, dstrd, 0)?;
        self.queue.ring_addresses().ok_or(Error::Internal {
            what: "admin queue without rings",
        })
    }

    /// Writes `sqe` into the ring and rings the doorbell (the admin queue
    /// always uses its MMIO doorbell). The command must complete within the
    /// admin timeout from `now`.
    pub(crate) fn submit<P: Platform, R: RegisterAccess>(
        &mut self,
        platform: &P,
        regs: &R,
        mut sqe: SubmissionEntry,
        now: Instant,
    ) -> Result<Ticket> {
        let deadline = now + self.timeout;
        let cid = self
            .queue
            .reserve(sqe.opcode(), 0, deadline, true, &mut None)
            .map_err(|e| self.full(e))?;
        sqe.set_cid(cid);
        self.queue.push(&sqe);
        self.queue.publish(platform, regs, None);
        Ok(Ticket(cid))
    }

    /// Submits `sqe` without a deadline: for Asynchronous Event Requests,
    /// which complete only when something happens.
    pub(crate) fn submit_unbounded<P: Platform, R: RegisterAccess>(
        &mut self,
        platform: &P,
        regs: &R,
        mut sqe: SubmissionEntry,
    ) -> Result<Ticket> {
        let never = Instant::from_nanos(u64::MAX);
        let cid = self
            .queue
            .reserve(sqe.opcode(), 0, never, true, &mut None)
            .map_err(|e| self.full(e))?;
        sqe.set_cid(cid);
        self.queue.push(&sqe);
        self.queue.publish(platform, regs, None);
        Ok(Ticket(cid))
    }

    /// Commands the admin queue holds at once (one entry stays empty).
    pub(crate) fn capacity(&self) -> u16 {
        self.queue.entries().saturating_sub(1)
    }

    /// Event requests that leave [`RESERVED_ENTRIES`] free.
    pub(crate) fn room_for_event_requests(&self) -> u16 {
        self.capacity().saturating_sub(RESERVED_ENTRIES)
    }

    /// A full admin queue named as such (not as I/O queue 0).
    fn full(&self, error: Error) -> Error {
        match error {
            Error::QueueFull { .. } => Error::CapacityExceeded {
                what: "admin commands outstanding",
                limit: self.capacity().into(),
            },
            e => e,
        }
    }

    /// Consumes posted completions and returns the result of `ticket` once
    /// it completed (`Ok(dw0)` or the command's error), a timeout once its
    /// deadline passed, `None` while it is outstanding.
    pub(crate) fn poll<P: Platform, R: RegisterAccess>(
        &mut self,
        platform: &P,
        regs: &R,
        ticket: Ticket,
        now: Instant,
    ) -> Option<Result<u32>> {
        self.queue.reap(platform, regs, None);
        self.discard_forgotten();
        if let Some(done) = self.queue.tracker.take_done_cid(ticket.0) {
            return Some(done.result);
        }
        let slot = self.queue.tracker.in_flight_mut(ticket.0)?;
        (now > slot.deadline).then_some(Err(Error::timeout(Wait::AdminCommand, self.timeout)))
    }

    /// The lifecycle's one command at a time: submits `sqe` if none is
    /// outstanding, otherwise polls for the outstanding one. `Ok(Some(dw0))`
    /// once it completed successfully, `Ok(None)` while waiting, the
    /// command's error (or its timeout) once it failed.
    pub(crate) fn exchange<P: Platform, R: RegisterAccess>(
        &mut self,
        platform: &P,
        regs: &R,
        sqe: SubmissionEntry,
        now: Instant,
    ) -> Result<Option<u32>> {
        let Some(ticket) = self.exchange else {
            self.exchange = Some(self.submit(platform, regs, sqe, now)?);
            return Ok(None);
        };
        let result = self.poll(platform, regs, ticket, now);
        if result.is_some() {
            self.exchange = None;
        }
        result.transpose()
    }

    /// Whether the lifecycle's command is outstanding.
    pub(crate) fn exchanging(&self) -> bool {
        self.exchange.is_some()
    }

    /// The lifecycle no longer waits for its command: its completion is
    /// discarded when it arrives.
    pub(crate) fn abandon_exchange(&mut self) {
        if let Some(ticket) = self.exchange.take() {
            self.forget(ticket);
        }
    }

    /// Nobody waits for `ticket` any more: its completion is discarded.
    pub(crate) fn forget(&mut self, ticket: Ticket) {
        if self.queue.tracker.take_done_cid(ticket.0).is_none() {
            // When the list is full, the command stays in the table until
            // the next reset clears it: harmless, the table has room.
            let _ = self.forgotten.push(ticket);
        }
    }

    fn discard_forgotten(&mut self) {
        let tracker = &mut self.queue.tracker;
        self.forgotten.retain(|t| {
            tracker.take_done_cid(t.0).is_none() && tracker.in_flight_mut(t.0).is_some()
        });
    }

    /// Ends every outstanding admin command (the controller is being reset
    /// or torn down): nobody outside the driver owns them.
    pub(crate) fn abandon_all(&mut self) {
        self.exchange = None;
        self.queue.tracker.fail_all(Error::Aborted);
        while self.queue.tracker.take_done().is_some() {}
        self.forgotten.clear();
    }

    /// Returns the ring memory to the platform.
    pub(crate) fn release<P: Platform>(&mut self, platform: &P) {
        self.queue.release(platform);
    }

    /// Moves the ring memory into quarantine, counting it into `count`.
    pub(crate) fn quarantine(&mut self, count: &mut impl FnMut(&crate::platform::DmaRegion)) {
        self.queue.quarantine(count);
    }

    /// Frees the quarantined ring memory (the caller has proof that DMA
    /// stopped).
    pub(crate) fn free_kept<P: Platform>(&mut self, platform: &P) -> crate::nvme::Quarantine {
        self.queue.kept.free(platform)
    }

    /// Whether ring memory is in quarantine.
    pub(crate) fn has_kept(&self) -> bool {
        !self.queue.kept.is_empty()
    }

    /// Completions consumed, ever.
    pub(crate) fn reaped(&self) -> u64 {
        self.queue.reaped
    }

    /// Bad completions the device posted.
    pub(crate) fn faults(&self) -> QueueFaults {
        self.queue.faults
    }
}
