//! The end of a controller, and the stop inside a reset: the device's DMA is
//! stopped with proof before anything it could reach is handed back.
//!
//! The rule: memory the device may write (rings, PRP lists, shadow doorbell
//! pages, the identify page, caller buffers of outstanding commands) returns
//! to the platform or to a caller only once the device provably cannot DMA:
//! it is gone (config space silent and the slot or link says empty or down),
//! or bus mastering was switched off and read back off, or CC.EN = 0 was
//! written and CSTS.RDY = 0 seen. Until then failed commands are held, not
//! delivered. If no proof comes within CAP.TO the memory is quarantined:
//! kept, counted ([`Controller::quarantined`]) and logged. The driver's own
//! regions are held, not dropped: once a later look finds the proof
//! ([`Engine::lift_quarantine`], from the driver's tick) they return to the
//! platform, each once. Caller buffers in quarantine are kept for good.
//!
//! Every teardown runs exactly once ([`Controller::begin_teardown`] ignores
//! later calls); every outstanding caller command is failed once, at its
//! start.

use log::warn;

use crate::error::{Error, Wait};
use crate::link::{DeviceLink, DmaStop, Presence};
use crate::nvme::controller::Controller;
use crate::nvme::engine::Engine;
use crate::nvme::lifecycle::{refusal_of, Quarantine, State, Step};
use crate::nvme::regs::{self, Cap, Cc, Csts};
use crate::nvme::shared::{Phase, Refusal};
use crate::platform::{DmaRegion, Instant, Platform, RegisterAccess};

impl<P: Platform, L: DeviceLink, const QUEUES: usize, const DEPTH: usize>
    Engine<'_, P, L, QUEUES, DEPTH>
{
    /// Starts the end of the controller in `end` (removed, failed or
    /// detached): fails every outstanding caller command once with `error`,
    /// then stops the device's DMA (see the module docs). Most teardowns get
    /// their proof at once and finish within this call; the others finish in
    /// later [`Controller::advance`] calls. Later calls do nothing. Returns
    /// how many caller commands were failed.
    pub(crate) fn begin_teardown(&mut self, end: State, error: Error) -> usize {
        self.end(end, error, false)
    }

    /// [`Engine::begin_teardown`], clearing CC.EN first if `disable`.
    fn end(&mut self, end: State, error: Error, disable: bool) -> usize {
        if self.owned.lifecycle.ending() {
            return 0;
        }
        let failed = self.fail_outstanding(error, refusal_of(end));
        if disable {
            // Only now: the gate is closed and every queue's lock was taken
            // since, so no queue handle rings a doorbell after this write.
            self.clear_enable();
        }
        let deadline = self.now() + self.ready_timeout();
        self.owned.lifecycle.begin_end(end, error, failed, deadline);
        self.stop_dma_step(deadline);
        failed
    }

    /// The device is gone (or was reset behind the driver's back): tear down
    /// without talking to the controller, once.
    pub(crate) fn remove(&mut self) -> usize {
        self.begin_teardown(State::Removed, Error::DeviceRemoved)
    }

    /// Gives the controller up: stops it if it still listens, fails every
    /// outstanding command once with `error`, and returns the memory once
    /// its DMA is proven stopped.
    pub(crate) fn fail(&mut self, error: Error) -> usize {
        self.end(State::Failed, error, true)
    }

    /// Gives the controller up and waits (bounded by CAP.TO on the platform
    /// clock) until its DMA stop finished: for `Drop`, which cannot come back
    /// later. Nothing for a controller already finished.
    pub(crate) fn fail_blocking(&mut self, error: Error) {
        self.fail(error);
        while let Step::StopDma { deadline } = self.owned.lifecycle.step() {
            self.stop_dma_step(deadline);
        }
    }

    /// Fails what is outstanding: caller I/O commands once with `error`
    /// (held, not delivered, while the caller's next step waits for proof
    /// that the device stopped), the driver's own admin commands silently.
    /// Returns the caller commands. Shared queues refuse submissions with
    /// `refusal` from before the first queue is locked.
    pub(crate) fn fail_outstanding(&mut self, error: Error, refusal: Refusal) -> usize {
        self.owned.recovery.drop_abort();
        self.owned.admin.abandon_all();
        self.owned.events.abandon();
        let own = self.own_commands_in_flight();
        // Closed first (Release), so a queue the loop has not reached yet
        // takes no submission that it would miss.
        self.shared.gate.set(Phase::Holding, refusal);
        let failed: usize = self
            .shared
            .io
            .iter()
            .map(|q| q.lock().tracker.fail_all(error))
            .sum();
        failed.saturating_sub(own)
    }

    /// One look for the proof; finishes the teardown when it is there or
    /// its deadline passed. Returns whether the teardown finished.
    pub(crate) fn stop_dma_step(&mut self, deadline: Instant) -> bool {
        let proof = self.owned.link.stop_dma().or_else(|| self.disabled_proof());
        if proof.is_none() && self.now() <= deadline {
            return false;
        }
        self.finish_teardown(proof);
        true
    }

    /// Clears CC.EN (if it reads set) without waiting.
    pub(crate) fn clear_enable(&mut self) {
        let cc = self.shared.regs.read32(regs::CC);
        if cc != u32::MAX && cc & Cc::EN.bits() != 0 {
            self.shared.regs.write32(regs::CC, cc & !Cc::EN.bits());
        }
    }

    /// Clears CC.EN and looks for CSTS.RDY = 0. A removed device's registers
    /// may read all-zero, which must not pass for RDY = 0: CAP must read back
    /// as a controller's (neither all-zero nor all-ones, NVM command set
    /// supported). At most five register reads.
    pub(crate) fn disabled_proof(&mut self) -> Option<DmaStop> {
        self.clear_enable();
        // One odd status read can be a glitch on the bus: RDY = 0 is proof
        // only when a second read says so too.
        for _ in 0..2 {
            let csts = self.read_status();
            if csts.bits() == u32::MAX || csts.contains(Csts::RDY) {
                return None;
            }
        }
        let cap = Cap(self.shared.regs.read64(regs::CAP));
        let intact = cap.0 != 0 && cap.0 != u64::MAX && cap.nvm_command_set();
        intact.then_some(DmaStop::Disabled)
    }

    fn finish_teardown(&mut self, proof: Option<DmaStop>) {
        if self.owned.lifecycle.finish(proof).is_none() {
            return;
        }
        if proof.is_some() {
            self.release_memory();
        } else {
            self.quarantine_memory();
        }
    }

    /// Returns every region the controller holds to the platform; the
    /// command tables stay, so failed commands can still be delivered.
    pub(crate) fn release_memory(&mut self) {
        let platform = &self.shared.platform;
        self.owned.admin.release(platform);
        for q in self.shared.io.iter() {
            q.lock().release(platform);
        }
        self.owned.pages.release(platform);
    }

    /// No proof came: keep every region the device could reach. The
    /// driver's own regions are held (not dropped) so that
    /// [`Engine::lift_quarantine`] can free them on a later proof; caller
    /// buffers of failed commands are kept for good (they are delivered
    /// without their buffer).
    fn quarantine_memory(&mut self) {
        let mut kept = Quarantine::default();
        let mut count = |region: &DmaRegion| {
            kept.regions = kept.regions.saturating_add(1);
            kept.bytes = kept.bytes.saturating_add(region.len() as u64);
        };
        self.owned.admin.quarantine(&mut count);
        for q in self.shared.io.iter() {
            let mut q = q.lock();
            q.quarantine(&mut count);
            q.tracker.take_buffers(|region| {
                count(&region);
                // Dropping the handle frees nothing: a caller buffer in
                // flight is never given back, so nothing can reuse what the
                // device may still write.
                let _kept = region;
            });
        }
        self.owned.pages.quarantine(&mut count);
        if kept.regions > 0 {
            warn!(
                "nvme: the device could not be proven stopped within {} ms: {} regions ({} bytes) quarantined",
                self.ready_timeout().as_millis(),
                kept.regions,
                kept.bytes,
            );
        }
        self.owned
            .lifecycle
            .add_quarantine(kept.regions, kept.bytes);
    }

    /// On a finished controller whose own regions are quarantined, one look
    /// for proof that the device can no longer reach memory (gone, or bus
    /// mastering off and read back off); with it, frees those regions, each
    /// once. Returns what was freed (nothing without proof). A few config
    /// accesses, never a wait.
    pub(crate) fn lift_quarantine(&mut self) -> Quarantine {
        let mut freed = Quarantine::default();
        let holds = self.owned.admin.has_kept()
            || self.owned.pages.has_kept()
            || self.shared.io.iter().any(|q| !q.lock().kept.is_empty());
        if !self.owned.lifecycle.state().is_finished() || !holds {
            return freed;
        }
        let Some(proof) = self.owned.link.stop_dma() else {
            return freed;
        };
        let platform = &self.shared.platform;
        freed.merge(self.owned.admin.free_kept(platform));
        for q in self.shared.io.iter() {
            freed.merge(q.lock().kept.free(platform));
        }
        freed.merge(self.owned.pages.free_kept(platform));
        self.owned.lifecycle.note_returned(freed);
        log::info!(
            "nvme: DMA stopped later ({proof:?}): {} quarantined regions ({} bytes) returned",
            freed.regions,
            freed.bytes,
        );
        freed
    }

    /// One step of a reset's disable: once CSTS.RDY = 0 is seen the failed
    /// commands may be handed back and bring-up starts after `backoff`; a
    /// controller that does not stop by `deadline` is given up. Returns
    /// whether the step moved on.
    pub(crate) fn reset_disable_step(
        &mut self,
        deadline: Instant,
        backoff: core::time::Duration,
    ) -> bool {
        if self.disabled_proof().is_some() {
            let until = self.now() + backoff;
            self.owned.lifecycle.go(Step::Backoff { until });
            return true;
        }
        if self.owned.link.presence() != Presence::Present {
            self.remove();
            return true;
        }
        if self.now() > deadline {
            warn!("nvme: controller does not stop for its reset");
            self.fail(Error::timeout(Wait::Disable, self.ready_timeout()));
            return true;
        }
        false
    }
}

impl<P: Platform, L: DeviceLink, const QUEUES: usize, const DEPTH: usize>
    Controller<P, L, QUEUES, DEPTH>
{
    /// See [`Engine::begin_teardown`].
    pub(crate) fn begin_teardown(&mut self, end: State, error: Error) -> usize {
        self.engine().begin_teardown(end, error)
    }

    /// See [`Engine::remove`].
    pub(crate) fn remove(&mut self) -> usize {
        self.engine().remove()
    }

    /// See [`Engine::fail`].
    pub(crate) fn fail(&mut self, error: Error) -> usize {
        self.engine().fail(error)
    }

    /// See [`Engine::fail_blocking`].
    pub(crate) fn fail_blocking(&mut self, error: Error) {
        self.engine().fail_blocking(error)
    }

    /// Whether the driver's own regions are held in quarantine.
    pub(crate) fn holds_quarantine(&self) -> bool {
        self.owned.admin.has_kept()
            || self.owned.pages.has_kept()
            || self.shared.io.iter().any(|q| !q.lock().kept.is_empty())
    }

    /// See [`Engine::lift_quarantine`].
    pub(crate) fn lift_quarantine(&mut self) -> Quarantine {
        self.engine().lift_quarantine()
    }

    /// See [`Engine::stop_dma_step`].
    pub(crate) fn stop_dma_step(&mut self, deadline: Instant) -> bool {
        self.engine().stop_dma_step(deadline)
    }

    /// See [`Engine::clear_enable`].
    pub(crate) fn clear_enable(&mut self) {
        self.engine().clear_enable()
    }

    /// See [`Engine::disabled_proof`].
    pub(crate) fn disabled_proof(&mut self) -> Option<DmaStop> {
        self.engine().disabled_proof()
    }

    /// See [`Engine::reset_disable_step`].
    pub(crate) fn reset_disable_step(
        &mut self,
        deadline: Instant,
        backoff: core::time::Duration,
    ) -> bool {
        self.engine().reset_disable_step(deadline, backoff)
    }
}
