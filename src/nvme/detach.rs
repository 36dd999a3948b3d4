//! The orderly detach: the steps that let commands in flight finish, delete
//! the I/O queues, shut the controller down (CC.SHN) and end in a teardown
//! that stops its DMA; and the blocking wrapper over them.

use log::{info, warn};
use spin::Mutex;

use crate::error::{Error, Result, Wait};
use crate::link::DeviceLink;
use crate::nvme::command::queue_fields::QID;
use crate::nvme::command::{admin, SubmissionEntry};
use crate::nvme::controller::Controller;
use crate::nvme::lifecycle::{Outcome, State, Step};
use crate::nvme::regs::{self, Cc};
use crate::platform::{Instant, Platform, RegisterAccess};

impl<P: Platform, L: DeviceLink, const QUEUES: usize, const DEPTH: usize>
    Controller<P, L, QUEUES, DEPTH>
{
    /// Detaches in an orderly way, blocking: drains in-flight commands (up to
    /// the I/O timeout), deletes the I/O queues, shuts the controller down
    /// (CC.SHN), stops its DMA and returns all memory. Commands still in
    /// flight at the end complete with [`Error::Aborted`] and are delivered
    /// by `poll`. An error means the detach could not end with a completed
    /// shutdown (the controller is then `Failed`, its memory returned only
    /// if its DMA was proven stopped), or could not delete its queues first.
    pub fn detach(&mut self) -> Result<()> {
        self.begin_detach();
        loop {
            match self.advance()? {
                State::Detached => return self.owned.lifecycle.detach_error().map_or(Ok(()), Err),
                State::Failed | State::Removed => {
                    return Err(self
                        .owned
                        .lifecycle
                        .failure()
                        .unwrap_or(Error::ControllerFailed))
                }
                _ => {}
            }
        }
    }

    /// Starts an orderly detach; [`Controller::advance`] carries it out.
    pub fn begin_detach(&mut self) {
        match self.owned.lifecycle.state() {
            State::Ready => {
                let deadline = self.now() + self.shared.config.io_timeout;
                self.forget_abort();
                self.flush_before_detach();
                self.owned
                    .lifecycle
                    .enter(State::Detaching, Step::Drain { deadline });
            }
            State::Detaching | State::Stopping => {}
            s if s.is_finished() => {}
            State::Discovered | State::Resetting => {
                // Nothing set up yet, or CC.EN is clear (or being cleared):
                // there is nothing to delete or shut down, only the DMA stop
                // to prove.
                self.forget_abort();
                self.begin_teardown(State::Detached, Error::Aborted);
            }
            _ => {
                // Not yet serving I/O (or resetting): no queues to drain;
                // delete what exists and shut down.
                self.owned.admin.abandon_exchange();
                self.forget_abort();
                let queues = self.shared.io.len() as u16;
                self.owned
                    .lifecycle
                    .enter(State::Detaching, Step::DeleteCq(queues));
            }
        }
    }

    /// An orderly detach lets commands in flight finish (up to `deadline`).
    pub(crate) fn drain_step(&mut self, deadline: Instant) -> Result<Outcome> {
        let shadow = self.owned.pages.doorbells();
        for q in self.shared.io.iter_mut().map(Mutex::get_mut) {
            q.publish(&self.shared.platform, &self.shared.regs, shadow);
            q.reap(&self.shared.platform, &self.shared.regs, shadow);
        }
        if self.in_flight() == 0 || self.now() > deadline {
            self.collect_detach_flushes();
            self.owned.lifecycle.go(Step::DeleteSq(0));
            return Ok(Outcome::Progress);
        }
        Ok(Outcome::Waiting)
    }

    /// Delete I/O Submission Queue of the `i`th queue pair.
    pub(crate) fn delete_sq(&mut self, i: u16) -> Result<Outcome> {
        let Some(q) = self.shared.io.get_mut(i as usize).map(Mutex::get_mut) else {
            self.owned.lifecycle.go(Step::DeleteCq(0));
            return Ok(Outcome::Progress);
        };
        let mut sqe = SubmissionEntry::new(admin::DELETE_SQ);
        sqe.cdw10 = QID.of(q.qid as u32);
        if self.admin_exchange(sqe)?.is_none() {
            return Ok(Outcome::Waiting);
        }
        self.owned.lifecycle.go(Step::DeleteSq(i + 1));
        Ok(Outcome::Progress)
    }

    /// Delete I/O Completion Queue of the `i`th queue pair.
    pub(crate) fn delete_cq(&mut self, i: u16) -> Result<Outcome> {
        let Some(q) = self.shared.io.get_mut(i as usize).map(Mutex::get_mut) else {
            self.owned.lifecycle.go(Step::Shutdown);
            return Ok(Outcome::Progress);
        };
        let mut sqe = SubmissionEntry::new(admin::DELETE_CQ);
        sqe.cdw10 = QID.of(q.qid as u32);
        if self.admin_exchange(sqe)?.is_none() {
            return Ok(Outcome::Waiting);
        }
        self.owned.lifecycle.go(Step::DeleteCq(i + 1));
        Ok(Outcome::Progress)
    }

    /// Asks for a normal shutdown (CC.SHN).
    pub(crate) fn shutdown(&mut self) -> Result<Outcome> {
        let cc = self.shared.regs.read32(regs::CC) & !Cc::SHN_MASK;
        self.shared
            .regs
            .write32(regs::CC, cc | Cc::SHN_NORMAL.bits());
        let deadline = self.now() + self.shared.config.shutdown_timeout;
        self.owned.lifecycle.go(Step::WaitShutdown { deadline });
        Ok(Outcome::Progress)
    }

    /// Waits for the shutdown to complete, then stops the device's DMA.
    pub(crate) fn wait_shutdown(&mut self, deadline: Instant) -> Result<Outcome> {
        let csts = self.read_status();
        if csts.bits() != u32::MAX && csts.shutdown_complete() {
            info!("nvme: controller shut down");
            // Shut down is not disabled: a controller left enabled
            // still holds its queue addresses, and whoever turns bus
            // mastering on next (a new attach) would let it reach
            // the memory returned now.
            self.clear_enable();
            self.begin_teardown(State::Detached, Error::Aborted);
            return Ok(Outcome::Progress);
        }
        if self.now() > deadline {
            return Err(Error::timeout(
                Wait::Shutdown,
                self.shared.config.shutdown_timeout,
            ));
        }
        Ok(Outcome::Waiting)
    }

    /// A detach step failed with `e`. A queue deletion that fails does not
    /// skip the shutdown (cached writes would be lost): the detach goes on
    /// with CC.SHN and reports the error at the end. A shutdown that fails
    /// ends the controller as `Failed` with the error: the detach could not
    /// complete. Returns whether the detach goes on.
    pub(crate) fn detach_step_failed(&mut self, e: Error) -> bool {
        match self.owned.lifecycle.step() {
            Step::Drain { .. } | Step::DeleteSq(_) | Step::DeleteCq(_) => {
                warn!(
                    "nvme: detach: {:?} failed ({e}), shutting down anyway",
                    self.owned.lifecycle.step()
                );
                self.owned.admin.abandon_exchange();
                self.owned.lifecycle.note_detach_error(e);
                true
            }
            _ => {
                warn!("nvme: detach could not shut the controller down: {e}");
                self.fail(e);
                false
            }
        }
    }
}
