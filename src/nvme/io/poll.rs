//! Doorbells and completions: [`Controller::ring_doorbells`] sends what
//! was queued, [`Controller::poll`] hands each finished command back once.

use super::checks::{aborted_means_timeout, device_failure};
use super::{Completion, QueueId, Token};
use crate::link::DeviceLink;
use crate::nvme::command::nvm;
use crate::nvme::controller::Controller;
use crate::nvme::lifecycle::Rings;
use crate::nvme::qpair::QueuePair;
use crate::nvme::queue::DoorbellBuffers;
use crate::nvme::tracker::Delivered;
use crate::platform::{DmaRegion, Platform};
use spin::Mutex;

impl<P: Platform, L: DeviceLink, const QUEUES: usize, const DEPTH: usize>
    Controller<P, L, QUEUES, DEPTH>
{
    /// Rings the submission doorbells of queues with new entries.
    pub fn ring_doorbells(&mut self) {
        if !self.rings_live() {
            return;
        }
        for q in self.shared.io.iter_mut().map(Mutex::get_mut) {
            q.publish(
                &self.shared.platform,
                &self.shared.regs,
                self.owned.pages.doorbells(),
            );
        }
    }

    /// Whether the I/O rings are live on the device: serving, or draining
    /// for a detach. Outside that no doorbell is written and no ring read
    /// (a reset may have the controller disabled).
    #[inline(always)]
    pub(super) fn rings_live(&self) -> bool {
        self.owned.lifecycle.rings() == Rings::Live
    }

    /// Rings `queue`'s doorbell if needed, consumes its completions and hands
    /// each finished command to `on_complete`, exactly once. Returns how many
    /// were delivered. After removal or failure, delivers the commands that
    /// were outstanding, each with its error, once the device is proven
    /// unable to reach their buffers (until then, during a reset's disable or
    /// a teardown's stop, nothing is delivered). A command whose buffer was
    /// quarantined (see [`Controller::quarantined`]) is delivered without it.
    ///
    /// `on_complete` cannot reach the controller: `poll` borrows it, so a
    /// callback that would submit again or ask the controller anything does
    /// not compile (and cannot wait for a lock `poll` holds). Stream by
    /// collecting the buffers in the callback and submitting them after
    /// `poll` returns, or share the controller ([`Controller::share`]): an
    /// [`crate::IoQueue`]'s callback may submit on its own queue.
    ///
    /// ```compile_fail
    /// # use bare_nvme::{Controller, Platform, QueueId};
    /// fn stream<P: Platform>(c: &mut Controller<P>) {
    ///     c.poll(QueueId::FIRST, |done| {
    ///         let _ = c.in_flight(); // the controller is borrowed by `poll`
    ///     });
    /// }
    /// ```
    #[inline(always)]
    pub fn poll(&mut self, queue: QueueId, on_complete: impl FnMut(Completion)) -> usize {
        // Inline, and out of the caller's way: most polls ring a doorbell
        // at most and find nothing posted.
        if self.owned.lifecycle.rings() == Rings::Live {
            if let Some(q) = self.shared.io.get_mut(queue.0 as usize).map(Mutex::get_mut) {
                q.publish(
                    &self.shared.platform,
                    &self.shared.regs,
                    self.owned.pages.doorbells(),
                );
                if q.quiet(&self.shared.platform) {
                    return 0;
                }
            }
        }
        self.poll_finished(queue, on_complete)
    }

    /// [`Controller::poll`] past the doorbell, when something may be
    /// delivered (or the rings are not live).
    #[inline(never)]
    fn poll_finished(&mut self, queue: QueueId, mut on_complete: impl FnMut(Completion)) -> usize {
        let rings = self.owned.lifecycle.rings();
        if rings == Rings::Holding {
            return 0;
        }
        let live = rings == Rings::Live;
        let Some(q) = self.shared.io.get_mut(queue.0 as usize).map(Mutex::get_mut) else {
            return 0;
        };
        let (delivered, succeeded) = poll_queue(
            &self.shared.platform,
            &self.shared.regs,
            self.owned.pages.doorbells(),
            self.shared.config.io_timeout,
            q,
            queue,
            live,
            &mut on_complete,
        );
        if succeeded {
            self.note_success();
        }
        delivered
    }
}

/// Hands `q`'s finished commands to `on_complete` (see
/// [`Controller::poll`], which rang the doorbell); with `live` false the
/// rings are not touched and only what finished earlier is delivered.
/// Returns how many were delivered and whether one succeeded.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn poll_queue<P: Platform, const DEPTH: usize>(
    platform: &P,
    regs: &P::Registers,
    shadow: Option<&DoorbellBuffers>,
    io_timeout: core::time::Duration,
    q: &mut QueuePair<DEPTH>,
    queue: QueueId,
    live: bool,
    on_complete: &mut impl FnMut(Completion),
) -> (usize, bool) {
    let mut delivered = 0;
    let mut succeeded = false;
    // What completed earlier (failed by a teardown, reaped by a blocking
    // wait) first, in order; then the new completions, straight from the
    // ring without a stop in the done queue.
    while let Some(done) = q.tracker.take_done() {
        hand_over(
            platform,
            queue,
            done,
            io_timeout,
            on_complete,
            &mut delivered,
            &mut succeeded,
        );
    }
    if live {
        q.reap_delivering(platform, regs, shadow, |done| {
            delivered += 1;
            let result = if done.status == 0 {
                succeeded = true;
                Ok(())
            } else {
                device_failure(done.status, done.opcode, io_timeout)
            };
            let token = Token {
                queue,
                cid: done.cid,
            };
            complete(
                platform,
                token,
                done.tag,
                done.opcode,
                done.buffer,
                result,
                on_complete,
            );
        });
        while let Some(done) = q.tracker.take_done() {
            hand_over(
                platform,
                queue,
                done,
                io_timeout,
                on_complete,
                &mut delivered,
                &mut succeeded,
            );
        }
    }
    (delivered, succeeded)
}

/// Hands a command from the done queue to the caller (unless a blocking
/// wrapper issued it); notes whether it succeeded.
fn hand_over<P: Platform>(
    platform: &P,
    queue: QueueId,
    done: Delivered,
    io_timeout: core::time::Duration,
    on_complete: &mut impl FnMut(Completion),
    delivered: &mut usize,
    succeeded: &mut bool,
) {
    if let Some(completion) = finished(platform, queue, done, io_timeout, succeeded) {
        *delivered += 1;
        on_complete(completion);
    }
}

/// Takes up to `batch.capacity()` finished commands of `q` into `batch`
/// (rings `q`'s doorbell and reaps its completion ring first if `live`),
/// for a caller who hands them over once `q`'s lock is released. Returns
/// whether one succeeded.
pub(crate) fn take_finished<P: Platform, const DEPTH: usize, const N: usize>(
    platform: &P,
    regs: &P::Registers,
    io_timeout: core::time::Duration,
    q: &mut QueuePair<DEPTH>,
    queue: QueueId,
    live: bool,
    batch: &mut heapless::Vec<Completion, N>,
) -> bool {
    if live {
        q.publish(platform, regs, None);
        q.reap(platform, regs, None);
    }
    let mut succeeded = false;
    while !batch.is_full() {
        let Some(done) = q.tracker.take_done() else {
            break;
        };
        if let Some(completion) = finished(platform, queue, done, io_timeout, &mut succeeded) {
            // Cannot fail: checked not full above.
            let _ = batch.push(completion);
        }
    }
    succeeded
}

/// The caller's completion of a command from the done queue (`None` if a
/// blocking wrapper issued it); notes whether it succeeded.
fn finished<P: Platform>(
    platform: &P,
    queue: QueueId,
    done: Delivered,
    io_timeout: core::time::Duration,
    succeeded: &mut bool,
) -> Option<Completion> {
    *succeeded |= done.result.is_ok();
    if done.internal {
        return None;
    }
    let token = Token {
        queue,
        cid: done.cid,
    };
    let result = aborted_means_timeout(done.result, io_timeout);
    Some(completion(
        platform,
        token,
        done.tag,
        done.opcode,
        done.buffer,
        result,
    ))
}

/// Hands one finished command to the caller (see [`completion`]).
#[inline(always)]
fn complete<P: Platform>(
    platform: &P,
    token: Token,
    tag: u64,
    opcode: u8,
    buffer: Option<DmaRegion>,
    result: crate::error::Result<()>,
    on_complete: &mut impl FnMut(Completion),
) {
    on_complete(completion(platform, token, tag, opcode, buffer, result));
}

/// One finished command as the caller gets it. A read's buffer is
/// invalidated first: the device is done with it (or proven unable to reach
/// it), so the CPU sees what it wrote, not lines cached before.
#[inline(always)]
fn completion<P: Platform>(
    platform: &P,
    token: Token,
    tag: u64,
    opcode: u8,
    buffer: Option<DmaRegion>,
    result: crate::error::Result<()>,
) -> Completion {
    if let (Some(buffer), nvm::READ) = (&buffer, opcode) {
        platform.dma_invalidate(buffer.phys(), buffer.len());
    }
    Completion {
        token,
        tag,
        result,
        buffer,
    }
}
