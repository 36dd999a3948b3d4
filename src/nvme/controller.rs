//! One NVMe controller: its configuration, state, queues and namespaces.
//!
//! Bring-up and orderly detach are non-blocking state machines
//! ([`Controller::advance`]), so a tick can drive many controllers at once;
//! [`Controller::bring_up`] and [`Controller::detach`] are thin blocking loops
//! over them for embedders that want simple code.

use core::time::Duration;

use crate::error::{Error, Result};
use crate::link::{DeviceLink, DmaStop};
use crate::nvme::admin::AdminChannel;
pub use crate::nvme::admin::ADMIN_QUEUE_DEPTH;
pub use crate::nvme::config::{
    ControllerConfig, MAX_IO_QUEUES, MAX_QUEUE_DEPTH, MAX_TRANSFER_LIMIT,
};
use crate::nvme::identify::{ControllerInfo, NamespaceRefusal};
use crate::nvme::lifecycle::Lifecycle;
pub use crate::nvme::lifecycle::{Quarantine, State};
use crate::nvme::namespaces::Discovery;
pub use crate::nvme::namespaces::{Namespace, MAX_NAMESPACES};
use crate::nvme::pages::OwnPages;
use crate::nvme::qpair::QueueFaults;
use crate::nvme::regs::Csts;
use crate::nvme::shared::Shared;
use crate::platform::{Instant, Platform};
use spin::Mutex;

/// One NVMe controller, driven by polling: what the embedder does I/O with.
///
/// It brings the controller up, serves its namespaces with blocking calls
/// ([`Controller::read`], [`Controller::write`], [`Controller::flush`]) and
/// split-phase ones ([`Controller::submit`], then [`Controller::poll`]
/// hands each command back once with its buffer), reads log pages, sets
/// features and passes admin commands through; a missed deadline is
/// aborted, then the controller reset, from its own tick.
///
/// The [`Driver`](crate::Driver) makes one for every controller it finds and
/// lends it by id ([`Driver::controller`](crate::Driver::controller)), ticking
/// it itself. Firmware that found the controller on its own makes one with
/// [`Controller::new`] (the registers mapped, their length, and a
/// [`DeviceLink`], or `()`), then calls
/// [`Controller::bring_up`] and [`Controller::tick`] every few milliseconds.
/// [`Controller::share`] lends its I/O queues to other cores.
///
/// Inside, its state is in two parts: `Shared`, what every I/O queue reads
/// (the platform, the registers, the settings, the queue pairs each behind
/// its own lock, the served namespaces, the gate), and `Owned`, what only
/// the controller's owner changes (the lifecycle, recovery, the admin
/// channel, events); a share lends the first to queue handles and the
/// second to a monitor.
pub struct Controller<
    P: Platform,
    L: DeviceLink = (),
    const QUEUES: usize = MAX_IO_QUEUES,
    const DEPTH: usize = MAX_QUEUE_DEPTH,
> {
    pub(crate) shared: Shared<P, QUEUES, DEPTH>,
    pub(crate) owned: Owned<L>,
}

/// What only the controller's owner changes: the exclusive caller, or the
/// monitor of a share.
pub(crate) struct Owned<L> {
    pub(crate) link: L,
    /// State, step, and what a teardown left behind.
    pub(crate) lifecycle: Lifecycle,
    pub(crate) admin: AdminChannel,
    /// The scratch page and the shadow doorbell pages.
    pub(crate) pages: OwnPages,
    /// What the last namespace scan found.
    pub(crate) discovery: Discovery,
    /// Resets, the abort waited for, glitches.
    pub(crate) recovery: crate::nvme::recovery_state::Recovery,
    /// Asynchronous events: requests outstanding, follow-ups, notices.
    pub(crate) events: crate::nvme::event_state::AsyncEvents,
    /// Flushes the orderly detach in progress waits for.
    pub(crate) detach_flushes: crate::nvme::detach_flushes::DetachFlushes,
}

impl<P: Platform, L: DeviceLink, const QUEUES: usize, const DEPTH: usize>
    Controller<P, L, QUEUES, DEPTH>
{
    /// A controller whose registers (`regs_len` bytes of BAR0) are mapped at
    /// `regs`, reached through `link`. Nothing is touched until
    /// [`Controller::advance`] or [`Controller::bring_up`].
    pub fn new(
        platform: P,
        link: L,
        regs: P::Registers,
        regs_len: usize,
        config: ControllerConfig,
    ) -> Self {
        Self {
            shared: Shared::new(platform, regs, regs_len, config),
            owned: Owned {
                link,
                lifecycle: Lifecycle::new(),
                admin: AdminChannel::new(config.admin_timeout),
                pages: OwnPages::new(),
                discovery: Discovery::new(),
                recovery: crate::nvme::recovery_state::Recovery::default(),
                events: crate::nvme::event_state::AsyncEvents::new(),
                detach_flushes: crate::nvme::detach_flushes::DetachFlushes::new(),
            },
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.owned.lifecycle.state()
    }

    /// Identify Controller data, once read.
    pub fn info(&self) -> Option<&ControllerInfo> {
        self.shared.info.as_ref()
    }

    /// The active namespaces the driver serves, once discovered.
    pub fn namespaces(&self) -> &[Namespace] {
        self.shared.namespaces.list()
    }

    /// The active namespaces the driver does not serve, with the reason
    /// (each is logged once per bring-up). I/O naming one fails with
    /// [`Error::UnknownNamespace`] without reaching the device.
    pub fn refused_namespaces(&self) -> &[(u32, NamespaceRefusal)] {
        self.owned.discovery.refused()
    }

    /// The namespace `nsid`.
    pub fn namespace(&self, nsid: u32) -> Result<&Namespace> {
        self.shared
            .namespaces
            .find(nsid)
            .ok_or(Error::UnknownNamespace { nsid })
    }

    /// See [`Served::place`](crate::nvme::namespaces::Served::place).
    pub(crate) fn namespace_place(&self, nsid: u32) -> (u32, u16) {
        self.shared.namespaces.place(nsid)
    }

    /// Number of I/O queues in use.
    pub fn io_queue_count(&self) -> u16 {
        self.shared.io.len() as u16
    }

    /// The I/O queues in use.
    pub fn queues(&self) -> impl Iterator<Item = crate::nvme::QueueId> {
        (0..self.shared.io.len() as u16).map(crate::nvme::QueueId::new)
    }

    /// Entries per I/O queue.
    pub fn queue_depth(&self) -> u16 {
        self.shared.queue_entries
    }

    /// Largest transfer one command may carry, in bytes.
    pub fn max_transfer(&self) -> u32 {
        self.shared.max_transfer
    }

    /// The error that failed the controller, if it failed.
    pub fn failure(&self) -> Option<Error> {
        self.owned.lifecycle.failure()
    }

    /// Resets the driver made since the controller was attached (after a
    /// timeout the abort could not cure, fatal status, a subsystem reset).
    pub fn reset_count(&self) -> u32 {
        self.owned.recovery.reset_count()
    }

    /// Caller I/O commands the teardown failed (removal, failure or the end
    /// of a detach). The driver's own admin commands are not counted.
    pub fn failed_commands(&self) -> u32 {
        self.owned.lifecycle.failed_commands()
    }

    /// How the end of the controller made sure the device can no longer
    /// reach memory; `None` while it is not finished, or when no proof could
    /// be had and the memory was quarantined.
    pub fn dma_stop(&self) -> Option<DmaStop> {
        self.owned.lifecycle.dma_stop()
    }

    /// Memory quarantined because the device could not be proven unable to
    /// reach it (what was kept, including what a later proof returned).
    pub fn quarantined(&self) -> Quarantine {
        self.owned.lifecycle.quarantine()
    }

    /// The driver's own quarantined regions (rings, PRP lists, scratch and
    /// shadow doorbell pages) returned to the platform, each once, after a
    /// later [`Controller::tick`] found proof through the [`DeviceLink`]
    /// that the device cannot reach memory (gone, or bus mastering read back
    /// off). Never with `()` as the link, which has no such proof. Caller
    /// buffers are not among them: they stay quarantined.
    pub fn quarantine_returned(&self) -> Quarantine {
        self.owned.lifecycle.returned()
    }

    /// Odd status reads (CSTS without RDY, a silent config read) that a
    /// second read contradicted: glitches, not failures.
    pub fn glitches(&self) -> u32 {
        self.owned.recovery.glitches()
    }

    /// Bad completions the device posted on all queues (each dropped).
    pub fn faults(&self) -> QueueFaults {
        let mut total = self.owned.admin.faults();
        for q in &self.shared.io {
            let q = q.lock();
            total.wrong_queue += q.faults.wrong_queue;
            total.bad_sq_head += q.faults.bad_sq_head;
            total.unknown_cid += q.faults.unknown_cid;
        }
        total
    }

    /// Completions consumed from all rings since the controller was created: a
    /// cheap liveness sign (if it moved, the device is alive).
    pub fn completions_seen(&self) -> u64 {
        self.shared.io.iter().map(|q| q.lock().reaped).sum::<u64>() + self.owned.admin.reaped()
    }

    /// Finished commands on all I/O queues that `poll` has not delivered yet
    /// (after a removal: the failed ones).
    pub fn undelivered(&self) -> usize {
        self.shared
            .io
            .iter()
            .map(|q| q.lock().tracker.undelivered())
            .sum()
    }

    /// Commands in flight on all I/O queues.
    pub fn in_flight(&self) -> usize {
        self.shared
            .io
            .iter()
            .map(|q| q.lock().tracker.in_flight())
            .sum()
    }

    /// Reads CSTS (one register read).
    pub fn read_status(&self) -> Csts {
        self.shared.read_status()
    }

    pub(crate) fn now(&self) -> Instant {
        self.shared.now()
    }

    /// The ready timeout from CAP.TO, validated and bounded.
    pub(crate) fn ready_timeout(&self) -> Duration {
        self.shared.ready_timeout()
    }

    /// Brings the controller up, blocking until it is ready or failed. Every
    /// step has its own deadline, so this returns in bounded time.
    pub fn bring_up(&mut self) -> Result<()> {
        loop {
            let state = match self.advance() {
                Ok(state) => state,
                // A transient failure scheduled a reset with backoff: retry.
                Err(_)
                    if matches!(
                        self.owned.lifecycle.state(),
                        State::Resetting | State::Stopping
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(e),
            };
            match state {
                State::Ready => return Ok(()),
                State::Failed | State::Removed | State::Detached => {
                    return Err(self.owned.lifecycle.failure().unwrap_or(Error::NotReady))
                }
                _ => {}
            }
        }
    }

    /// The platform this controller uses.
    pub fn platform(&self) -> &P {
        &self.shared.platform
    }

    /// See [`Lifecycle::holding`].
    pub(crate) fn holding(&self) -> bool {
        self.owned.lifecycle.holding()
    }
}

impl<P: Platform, L: DeviceLink, const QUEUES: usize, const DEPTH: usize> Drop
    for Controller<P, L, QUEUES, DEPTH>
{
    fn drop(&mut self) {
        // Stop the device before its memory goes back, even when the
        // embedder just drops the value: bounded by CAP.TO; memory the
        // device could still reach after that is kept (leaked), not freed.
        self.fail_blocking(Error::Aborted);
        // Quarantined buffers were taken out already; the rest go back.
        for q in self.shared.io.iter_mut().map(Mutex::get_mut) {
            while let Some(done) = q.tracker.take_done() {
                if let Some(buffer) = done.buffer {
                    self.shared.platform.dma_free(buffer);
                }
            }
        }
    }
}

/// The lifecycle's internals are not API: a safe caller cannot end a
/// controller, or hand its memory back, behind the DMA-stop rule. This
/// compiles:
///
/// ```
/// fn f<P: bare_nvme::Platform>(c: &mut bare_nvme::Controller<P>) {
///     c.begin_detach();
/// }
/// ```
///
/// and none of these do:
///
/// ```compile_fail
/// fn f<P: bare_nvme::Platform>(c: &mut bare_nvme::Controller<P>) {
///     c.surprise_removed();
/// }
/// ```
/// ```compile_fail
/// fn f<P: bare_nvme::Platform>(c: &mut bare_nvme::Controller<P>) {
///     c.remove();
/// }
/// ```
/// ```compile_fail
/// fn f<P: bare_nvme::Platform>(c: &mut bare_nvme::Controller<P>) {
///     c.fail(bare_nvme::Error::Aborted);
/// }
/// ```
/// ```compile_fail
/// fn f<P: bare_nvme::Platform>(c: &mut bare_nvme::Controller<P>) {
///     c.lost(bare_nvme::Error::DeviceRemoved);
/// }
/// ```
/// ```compile_fail
/// fn f<P: bare_nvme::Platform>(c: &mut bare_nvme::Controller<P>, now: bare_nvme::Instant) {
///     c.expire(now);
/// }
/// ```
/// ```compile_fail
/// fn f<P: bare_nvme::Platform>(c: &mut bare_nvme::Controller<P>) {
///     c.release_memory();
/// }
/// ```
#[cfg(doctest)]
pub struct LifecycleInternalsArePrivate;
