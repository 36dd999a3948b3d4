//! Recovery: health checks, command deadlines and resets.
//!
//! Escalation, each step bounded: a command past its deadline is aborted; if
//! the abort does not finish it within the admin timeout, the controller is
//! reset; a reset that cannot disable the controller, or more than
//! [`MAX_RESETS`] resets in a row without a successful command between them,
//! fail the controller for good (reported once, bus mastering off). Resets
//! back off exponentially, so a broken device cannot make the driver spin.
//!
//! Commands in flight during a reset complete once with the error that caused
//! it (`Timeout` or `ControllerFailed`); they are not requeued. A write that
//! timed out may or may not have reached the media, and only the caller knows
//! whether repeating it is safe (ordering with later writes, idempotence).

use core::time::Duration;

use log::warn;

use crate::error::{Error, Result, Wait};
use crate::nvme::command::{admin, SubmissionEntry};
use crate::nvme::controller::{Controller, DeviceLink, State, Step};
use crate::nvme::regs::{self, Csts};
use crate::platform::{Instant, Platform, RegisterAccess};

/// Resets in a row (without a successful command between them) before the
/// controller is given up.
pub const MAX_RESETS: u8 = 3;
/// Wait before bring-up after the first reset; doubled for each further one.
const BACKOFF: Duration = Duration::from_millis(50);

/// An abort the driver waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PendingAbort {
    queue: u16,
    cid: u16,
}

impl<P: Platform, L: DeviceLink> Controller<P, L> {
    /// One CSTS read: `None` if the controller looks healthy, else what it
    /// looks like (removed or failed).
    pub fn check_health(&self) -> Option<Error> {
        let csts = self.read_status();
        let healthy = csts.contains(Csts::RDY)
            && !csts.contains(Csts::CFS)
            && !csts.contains(Csts::NSSRO)
            && csts.bits() != u32::MAX;
        if healthy {
            return None;
        }
        // All-ones (real hardware) and all-zero (an unassigned address in
        // QEMU) both happen after removal: the config space tells which.
        Some(if self.link.is_present() {
            Error::ControllerFailed
        } else {
            Error::DeviceRemoved
        })
    }

    /// Acts on a problem found by a health check or the I/O path: a removed
    /// device is torn down, a failed one reset (or given up once resets are
    /// exhausted). Returns how many commands were failed.
    pub fn lost(&mut self, error: Error) -> usize {
        if error == Error::DeviceRemoved {
            self.surprise_removed()
        } else {
            self.reset(error)
        }
    }

    /// Handles I/O commands past their deadline (the tick and the blocking
    /// wrappers call it): abort first, reset if the abort does not help.
    pub fn expire(&mut self, now: Instant) {
        if self.state != State::Ready {
            return;
        }
        if let Some(pending) = self.abort {
            let outcome = self.admin_exchange(SubmissionEntry::new(admin::ABORT));
            match outcome {
                Ok(None) => {}
                Ok(Some(_)) | Err(Error::CommandFailed { .. }) => {
                    self.abort = None;
                    let error = self.timeout_error();
                    let shadow = self.doorbell_buffers.as_ref();
                    let q = &mut self.io[pending.queue as usize];
                    q.reap(&self.regs, shadow);
                    if q.tracker.in_flight_mut(pending.cid).is_some() {
                        warn!("nvme: abort did not end the command, resetting");
                        self.reset(error);
                    } else {
                        q.tracker.override_done(pending.cid, Err(error));
                    }
                }
                Err(_) => {
                    self.abort = None;
                    self.reset(self.timeout_error());
                }
            }
            return;
        }
        let overdue = self.io.iter().enumerate().find_map(|(i, q)| {
            q.tracker.overdue(now).map(|cid| PendingAbort {
                queue: i as u16,
                cid,
            })
        });
        let Some(pending) = overdue else {
            return;
        };
        warn!("nvme: I/O command timed out, aborting it");
        let mut sqe = SubmissionEntry::new(admin::ABORT);
        let qid = self.io[pending.queue as usize].qid;
        sqe.cdw10 = ((pending.cid as u32) << 16) | qid as u32;
        match self.admin_exchange(sqe) {
            Ok(_) => self.abort = Some(pending),
            Err(_) => {
                self.reset(self.timeout_error());
            }
        }
    }

    pub(crate) fn timeout_error(&self) -> Error {
        Error::timeout(Wait::IoCommand, self.config.io_timeout)
    }

    /// Resets the controller after `cause`: disables it (after which it does
    /// no DMA), fails what was in flight once with `cause`, and schedules a
    /// fresh bring-up after a backoff. Gives the controller up when it cannot
    /// be disabled or has been reset too often in a row. Returns how many
    /// commands were failed.
    pub(crate) fn reset(&mut self, cause: Error) -> usize {
        if self.state.is_finished() {
            return 0;
        }
        if !self.link.is_present() {
            return self.surprise_removed();
        }
        if self.resets >= MAX_RESETS {
            warn!("nvme: giving up after {} resets: {cause}", self.resets);
            return self.fail(cause);
        }
        if let Err(e) = self.disable_blocking() {
            warn!("nvme: controller does not stop: {e}");
            return self.fail(cause);
        }
        let mut failed = 0;
        for q in self.io.iter_mut() {
            failed += q.tracker.fail_all(cause);
        }
        self.admin.tracker.fail_all(cause);
        while self.admin.tracker.take_done().is_some() {}
        self.abandon_admin_command();
        self.abort = None;
        let backoff = BACKOFF * (1u32 << self.resets);
        self.resets += 1;
        self.reset_count = self.reset_count.saturating_add(1);
        warn!(
            "nvme: controller reset {} of {MAX_RESETS} after {cause}, {failed} commands failed",
            self.resets
        );
        self.state = State::Resetting;
        self.step = Step::Backoff {
            until: self.now() + backoff,
        };
        failed
    }

    /// A command succeeded: the controller works, forget earlier resets.
    pub(crate) fn note_success(&mut self) {
        self.resets = 0;
    }

    /// Clears CSTS.NSSRO (write 1 to clear) left by an NVM subsystem reset.
    pub(crate) fn clear_subsystem_reset(&mut self) {
        let csts = self.read_status();
        if csts.bits() != u32::MAX && csts.contains(Csts::NSSRO) {
            self.regs.write32(regs::CSTS, Csts::NSSRO.bits());
        }
    }

    /// For the blocking wrappers: finishes a bring-up in progress (after a
    /// reset, say), or says why the controller cannot serve.
    pub(crate) fn ensure_ready(&mut self) -> Result<()> {
        match self.state {
            State::Ready => Ok(()),
            State::Resetting | State::Enabling | State::Initializing => self.bring_up(),
            State::Removed => Err(Error::DeviceRemoved),
            // Why it failed is in `failure()` and the Failed event.
            State::Failed => Err(Error::ControllerFailed),
            State::Detaching | State::Detached => Err(Error::NotReady),
        }
    }
}
