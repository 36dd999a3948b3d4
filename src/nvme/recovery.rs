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
//!
//! A command's result is what the device reported for it, whatever the order
//! of the caller's polls and the tick: one that completes successfully while
//! its Abort is outstanding is `Ok`; one the Abort ended ("Command Abort
//! Requested") is `Timeout`; one still in flight when the Abort completes is
//! failed by the reset that follows, with `Timeout`.

use log::warn;

use crate::error::{Error, Result, Wait};
use crate::link::{DeviceLink, Presence};
use crate::nvme::command::queue_fields::{ABORT_CID, ABORT_SQID};
use crate::nvme::command::{admin, SubmissionEntry};
pub use crate::nvme::config::MAX_RESETS;
use crate::nvme::controller::Controller;
use crate::nvme::engine::Engine;
use crate::nvme::lifecycle::State;
use crate::nvme::regs::{self, Cap, Csts};
use crate::nvme::shared::Refusal;
use crate::platform::{Instant, Platform, RegisterAccess};

impl<P: Platform, L: DeviceLink, const QUEUES: usize, const DEPTH: usize>
    Engine<'_, P, L, QUEUES, DEPTH>
{
    /// One CSTS read when the controller looks healthy; when it does not, a
    /// second read (one odd read can be a glitch on the bus, counted in
    /// [`Controller::glitches`]) and then configuration space to tell a
    /// removed device (silent, or reset behind the driver's back) from a
    /// failed one. `None` if healthy.
    pub(crate) fn check_health(&mut self) -> Option<Error> {
        if self.status_healthy() {
            return None;
        }
        if self.status_healthy() {
            self.owned.recovery.note_glitch();
            return None;
        }
        // All-ones (real hardware) and all-zero (an unassigned address in
        // QEMU) both happen after removal: the config space tells which.
        Some(match self.owned.link.presence() {
            Presence::Present => Error::ControllerFailed,
            Presence::Reset | Presence::Absent => Error::DeviceRemoved,
        })
    }

    fn status_healthy(&self) -> bool {
        let csts = self.read_status();
        csts.contains(Csts::RDY)
            && !csts.contains(Csts::CFS)
            && !csts.contains(Csts::NSSRO)
            && csts.bits() != u32::MAX
    }

    /// Acts on a problem found by a health check or the I/O path: a removed
    /// device is torn down, a failed one reset (or given up once resets are
    /// exhausted). Returns how many commands were failed.
    pub(crate) fn lost(&mut self, error: Error) -> usize {
        if error == Error::DeviceRemoved {
            self.remove()
        } else {
            self.reset(error)
        }
    }

    /// Handles I/O commands past their deadline (the tick and the blocking
    /// wrappers call it): abort first, reset if the abort does not help.
    pub(crate) fn expire(&mut self, now: Instant) {
        if !self.owned.lifecycle.serving() {
            return;
        }
        if let Some(pending) = self.owned.recovery.abort() {
            match self.owned.admin.poll(
                &self.shared.platform,
                &self.shared.regs,
                pending.ticket(),
                now,
            ) {
                None => {}
                Some(Ok(_)) | Some(Err(Error::CommandFailed { .. })) => {
                    self.owned.recovery.drop_abort();
                    let shadow = self.owned.pages.doorbells();
                    let Some(q) = self.shared.io.get(pending.queue() as usize) else {
                        return;
                    };
                    let mut q = q.lock();
                    q.reap(&self.shared.platform, &self.shared.regs, shadow);
                    // A command that completed keeps the result the device
                    // gave it (Abort Requested reads as a timeout).
                    let stuck = q.tracker.in_flight_mut(pending.cid()).is_some();
                    drop(q);
                    if stuck {
                        warn!("nvme: abort did not end the command, resetting");
                        self.reset(self.timeout_error());
                    }
                }
                Some(Err(_)) => {
                    self.owned.recovery.drop_abort();
                    self.reset(self.timeout_error());
                }
            }
            return;
        }
        let shadow = self.owned.pages.doorbells();
        let overdue = self.shared.io.iter().enumerate().find_map(|(i, q)| {
            let mut q = q.lock();
            q.tracker.overdue(now)?;
            // Completions the owner has not polled for yet are no timeout:
            // take them in (they wait for its poll), then look again.
            q.reap(&self.shared.platform, &self.shared.regs, shadow);
            q.tracker.overdue(now).map(|cid| (i as u16, q.qid, cid))
        });
        let Some((queue, qid, cid)) = overdue else {
            return;
        };
        warn!("nvme: I/O command timed out, aborting it");
        let mut sqe = SubmissionEntry::new(admin::ABORT);
        sqe.cdw10 = ABORT_CID.of(cid as u32) | ABORT_SQID.of(qid as u32);
        match self
            .owned
            .admin
            .submit(&self.shared.platform, &self.shared.regs, sqe, now)
        {
            Ok(ticket) => self.owned.recovery.abort_sent(queue, cid, ticket),
            Err(_) => {
                self.reset(self.timeout_error());
            }
        }
    }

    /// Forgets the abort in progress (its completion is discarded).
    pub(crate) fn forget_abort(&mut self) {
        if let Some(pending) = self.owned.recovery.take_abort() {
            self.owned.admin.forget(pending.ticket());
        }
    }

    pub(crate) fn timeout_error(&self) -> Error {
        Error::timeout(Wait::IoCommand, self.shared.config.io_timeout)
    }

    /// Resets the controller after `cause`: fails what was in flight once
    /// with `cause` (held until the controller is seen disabled, after which
    /// it does no DMA), clears CC.EN, and schedules a fresh bring-up after a
    /// backoff; the disable wait is a step of [`Controller::advance`], never a
    /// spin. Gives the controller up when it has been reset too often in a
    /// row, does not stop, or is being detached. Returns how many commands
    /// were failed.
    pub(crate) fn reset(&mut self, cause: Error) -> usize {
        if self.owned.lifecycle.ending() {
            return 0;
        }
        if self.owned.link.presence() != Presence::Present {
            return self.remove();
        }
        if self.owned.lifecycle.state() == State::Detaching {
            // A reset would bring back what is being detached: the detach
            // ends here, without its shutdown, as a failure.
            warn!("nvme: controller failed during its detach: {cause}");
            return self.fail(cause);
        }
        if self.owned.recovery.exhausted() {
            warn!(
                "nvme: giving up after {} resets: {cause}",
                self.owned.recovery.resets_in_a_row()
            );
            return self.fail(cause);
        }
        let failed = self.fail_outstanding(cause, Refusal::NotReady);
        self.clear_enable();
        let backoff = self.owned.recovery.count_reset();
        warn!(
            "nvme: controller reset {} of {MAX_RESETS} after {cause}, {failed} commands failed",
            self.owned.recovery.resets_in_a_row()
        );
        let deadline = self.now() + self.ready_timeout();
        self.owned.lifecycle.begin_reset(deadline, backoff);
        self.reset_disable_step(deadline, backoff);
        failed
    }

    /// Clears CSTS.NSSRO (write 1 to clear) left by an NVM subsystem reset.
    pub(crate) fn clear_subsystem_reset(&mut self) {
        let csts = self.read_status();
        if csts.bits() != u32::MAX && csts.contains(Csts::NSSRO) {
            self.shared.regs.write32(regs::CSTS, Csts::NSSRO.bits());
        }
    }
}

impl<P: Platform, L: DeviceLink, const QUEUES: usize, const DEPTH: usize>
    Controller<P, L, QUEUES, DEPTH>
{
    /// The monitor of a controller used on its own (the driver's tick does
    /// this for its controllers; call it every 1-10 ms): advances bring-up,
    /// detach, resets and stops; for a serving controller, checks its health
    /// (one CSTS read), handles commands past their deadline (abort, then
    /// reset) and collects asynchronous events ([`Controller::next_notice`]).
    /// Returns the state reached.
    pub fn tick(&mut self) -> State {
        match self.owned.lifecycle.state() {
            State::Ready => match self.check_health() {
                Some(error) => {
                    self.lost(error);
                }
                None => {
                    self.expire(self.now());
                    self.service_events();
                }
            },
            s if s.is_finished() => {
                let _ = self.lift_quarantine();
            }
            _ => {
                let _ = self.advance();
            }
        }
        self.owned.lifecycle.state()
    }

    /// For the blocking wrappers: finishes a bring-up in progress (after a
    /// reset, say), or says why the controller cannot serve.
    pub(crate) fn ensure_ready(&mut self) -> Result<()> {
        match self.owned.lifecycle.state() {
            State::Ready => Ok(()),
            State::Discovered | State::Resetting | State::Enabling | State::Initializing => {
                self.bring_up()
            }
            State::Removed => Err(Error::DeviceRemoved),
            // Why it failed is in `failure()` and the Failed event.
            State::Failed => Err(Error::ControllerFailed),
            State::Stopping => Err(self
                .owned
                .lifecycle
                .ending_error()
                .unwrap_or(Error::NotReady)),
            State::Detaching | State::Detached => Err(Error::NotReady),
        }
    }

    /// See [`Engine::check_health`].
    pub(crate) fn check_health(&mut self) -> Option<Error> {
        self.engine().check_health()
    }

    /// See [`Engine::lost`].
    pub(crate) fn lost(&mut self, error: Error) -> usize {
        self.engine().lost(error)
    }

    /// See [`Engine::expire`].
    pub(crate) fn expire(&mut self, now: Instant) {
        self.engine().expire(now)
    }

    /// See [`Engine::forget_abort`].
    pub(crate) fn forget_abort(&mut self) {
        self.engine().forget_abort()
    }

    /// See [`Engine::reset`].
    pub(crate) fn reset(&mut self, cause: Error) -> usize {
        self.engine().reset(cause)
    }

    /// A command succeeded: the controller works, forget earlier resets.
    pub(crate) fn note_success(&mut self) {
        self.owned.recovery.note_success();
    }

    /// See [`Engine::clear_subsystem_reset`].
    pub(crate) fn clear_subsystem_reset(&mut self) {
        self.engine().clear_subsystem_reset()
    }

    /// Whether the device still is the controller the driver configured:
    /// its function answers with memory decoding on, and CAP reads back as
    /// it did at bring-up (two register reads, some config reads).
    pub(crate) fn answers_as_configured(&self) -> bool {
        self.owned.link.presence() == Presence::Present
            && self.shared.cap.0 != 0
            && Cap(self.shared.regs.read64(regs::CAP)) == self.shared.cap
    }
}
