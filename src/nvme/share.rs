//! One I/O queue per core: a controller lends its queues to handles that other
//! cores drive, each taking only its own queue's lock, while a monitor keeps
//! watching the device.
//!
//! [`Controller::share`] splits a controller into a [`Monitor`] (the owned
//! part: lifecycle, recovery, the admin channel) and one [`IoQueue`] per I/O
//! queue (the shared part: platform, registers, served namespaces, and that
//! queue's pair behind its lock). Both borrow the controller, so nothing a
//! handle can reach is freed while it exists: after a teardown a handle sees
//! a closed gate and the failed commands it has not delivered yet, never
//! memory handed back.
//!
//! What the monitor does while the queues are shared ([`Monitor::tick`],
//! every 1-10 ms):
//! - Health: one CSTS read per tick, and configuration space (the link)
//!   when CSTS looks wrong, exactly as [`Controller::tick`].
//! - Deadlines: a command past its deadline is aborted, and the controller
//!   reset if the abort does not end it.
//! - Removal and failure: the monitor closes the gate (an atomic store with
//!   Release ordering) before it locks each queue in turn and fails every
//!   outstanding command. A handle reads the gate (Acquire) after taking its
//!   queue's lock and refuses submissions once it is closed
//!   ([`Error::DeviceRemoved`] after a removal, the buffer handed back in
//!   [`Rejected`]). So every command either was in its queue's table when the
//!   monitor reached that queue, and is failed there, or was refused; the
//!   failed ones are delivered by the owning handle's next
//!   [`IoQueue::poll`], each exactly once, and only once the device is
//!   proven unable to reach their buffers (the DMA-stop rule of
//!   `teardown.rs`): until then the gate says "holding" and `poll` delivers
//!   nothing and touches no ring. Ring memory goes back to the platform
//!   under each queue's lock, after that proof.
//! - A reset: as a removal up to the proof that the controller is disabled
//!   (the commands in flight fail with the reset's cause and are delivered
//!   after it); bringing the controller up again rewrites the queue geometry
//!   and the namespace list, which the handles read, so it waits until the
//!   share ends. Meanwhile submissions are refused with [`Error::NotReady`]
//!   and the monitor reports [`State::Resetting`]: drop the handles and the
//!   monitor, and [`Controller::tick`] carries on with the bring-up.
//! - Orderly detach and namespace changes need the whole controller too:
//!   they wait until the share ends. Asynchronous events stay armed on the
//!   device and are collected by the first [`Controller::tick`] after it
//!   (none is lost; the device holds them).
//!
//! The driver's tick cannot run while one of its controllers is shared
//! ([`crate::Driver::share`] borrows the driver): hot-add is seen, and
//! attached, once the share ends; a removal of the shared controller is seen
//! by its monitor.
//!
//! Outside a share nothing of this costs anything: the owner reaches each
//! queue with `Mutex::get_mut`, no atomic operation on the I/O path.

use crate::error::{Error, Result};
use crate::link::{DeviceLink, Presence};
use crate::nvme::controller::Controller;
use crate::nvme::engine::Engine;
use crate::nvme::handle::NamespaceHandle;
use crate::nvme::io::{
    prepare_in, take_finished, transfer_into, Completion, Context, IoOp, QueueId, Rejected, Token,
    Transfer,
};
use crate::nvme::lifecycle::{State, Step};
use crate::nvme::qpair::QueuePair;
use crate::nvme::shared::{Phase, Shared};
use crate::platform::{DmaRegion, Platform};

/// The monitor of a shared controller: the owned part of the controller.
/// See the module docs for what it does.
pub struct Monitor<'a, P: Platform, L: DeviceLink, const QUEUES: usize, const DEPTH: usize> {
    engine: Engine<'a, P, L, QUEUES, DEPTH>,
}

/// Most finished commands [`IoQueue::poll`] takes from its queue under the
/// queue's lock before it hands them over with the lock released.
pub const POLL_BATCH: usize = 16;

/// One I/O queue of a shared controller, for one core: it submits, rings its
/// doorbell and polls its completions, taking only its own queue's lock.
/// `Send` and `Sync` when the platform and its register mapping are `Sync`.
pub struct IoQueue<'a, P: Platform, const QUEUES: usize, const DEPTH: usize> {
    shared: &'a Shared<P, QUEUES, DEPTH>,
    queue: QueueId,
}

/// The queue handles of a shared controller, one per I/O queue.
pub type IoQueues<'a, P, const QUEUES: usize, const DEPTH: usize> =
    heapless::Vec<IoQueue<'a, P, QUEUES, DEPTH>, QUEUES>;

/// What [`Controller::share`] returns: the monitor and the queue handles.
pub type Share<'a, P, L, const QUEUES: usize, const DEPTH: usize> = (
    Monitor<'a, P, L, QUEUES, DEPTH>,
    IoQueues<'a, P, QUEUES, DEPTH>,
);

impl<P: Platform, L: DeviceLink, const QUEUES: usize, const DEPTH: usize>
    Controller<P, L, QUEUES, DEPTH>
{
    /// Lends the controller's I/O queues to handles (one per queue, to be
    /// driven from different cores) and returns them with the monitor that
    /// keeps watching the device; see [`crate::nvme::share`] for what each
    /// does. The share ends when the monitor and every handle are dropped.
    /// A controller that is not serving can be shared too: its handles
    /// refuse submissions until the share ends. Refused with
    /// [`Error::Unsupported`] while shadow doorbells are in effect: their
    /// pages are one for all queues.
    pub fn share(&mut self) -> Result<Share<'_, P, L, QUEUES, DEPTH>> {
        if self.owned.pages.doorbells().is_some() {
            return Err(Error::Unsupported {
                what: "shared queues with shadow doorbells",
            });
        }
        let engine = self.engine();
        engine.sync_gate();
        let shared = engine.shared;
        let queues = (0..shared.io.len() as u16)
            .map(|i| IoQueue {
                shared,
                queue: QueueId::new(i),
            })
            .collect();
        Ok((Monitor { engine }, queues))
    }
}

impl<P: Platform, L: DeviceLink, const QUEUES: usize, const DEPTH: usize>
    Monitor<'_, P, L, QUEUES, DEPTH>
{
    /// Watches the device once (call every 1-10 ms): health, deadlines,
    /// removal, the stop of a teardown or a reset. Returns the state
    /// reached.
    pub fn tick(&mut self) -> State {
        let e = &mut self.engine;
        if e.shared.gate.take_success() {
            e.owned.recovery.note_success();
        }
        match (e.owned.lifecycle.state(), e.owned.lifecycle.step()) {
            (State::Ready, Step::Ready) => match e.check_health() {
                Some(error) => {
                    e.lost(error);
                }
                None => e.expire(e.now()),
            },
            (s, _) if s.is_finished() => {}
            (_, Step::ResetDisable { deadline, backoff }) => {
                e.reset_disable_step(deadline, backoff);
            }
            (_, Step::StopDma { deadline }) => {
                e.stop_dma_step(deadline);
            }
            _ => {
                // Bring-up and detach wait for the share to end; a removal
                // meanwhile is still seen.
                if e.owned.link.presence() != Presence::Present {
                    e.remove();
                }
            }
        }
        e.sync_gate();
        e.owned.lifecycle.state()
    }

    /// The controller's state.
    pub fn state(&self) -> State {
        self.engine.owned.lifecycle.state()
    }

    /// Caller I/O commands teardowns failed (see
    /// [`Controller::failed_commands`]).
    pub fn failed_commands(&self) -> u32 {
        self.engine.owned.lifecycle.failed_commands()
    }

    /// Resets the driver made since the controller was attached.
    pub fn reset_count(&self) -> u32 {
        self.engine.owned.recovery.reset_count()
    }
}

impl<P: Platform, const QUEUES: usize, const DEPTH: usize> IoQueue<'_, P, QUEUES, DEPTH> {
    /// The queue this handle drives.
    pub fn id(&self) -> QueueId {
        self.queue
    }

    /// Queues a read of `blocks` blocks at `lba` of the namespace `ns` into
    /// `buffer`, with the caller's `tag`; as [`Controller::submit_read`]. A
    /// handle made on another namespace list than the one served now is
    /// refused with [`Error::StaleHandle`].
    pub fn submit_read(
        &self,
        ns: &NamespaceHandle,
        lba: u64,
        blocks: u32,
        buffer: DmaRegion,
        tag: u64,
    ) -> core::result::Result<Token, Rejected> {
        let opcode = crate::nvme::command::nvm::READ;
        self.submit_transfer(ns, opcode, lba, blocks, buffer, tag)
    }

    /// Queues a write of `blocks` blocks at `lba` of the namespace `ns` from
    /// `buffer`; otherwise as [`IoQueue::submit_read`].
    pub fn submit_write(
        &self,
        ns: &NamespaceHandle,
        lba: u64,
        blocks: u32,
        buffer: DmaRegion,
        tag: u64,
    ) -> core::result::Result<Token, Rejected> {
        let opcode = crate::nvme::command::nvm::WRITE;
        self.submit_transfer(ns, opcode, lba, blocks, buffer, tag)
    }

    fn submit_transfer(
        &self,
        handle: &NamespaceHandle,
        opcode: u8,
        lba: u64,
        blocks: u32,
        buffer: DmaRegion,
        tag: u64,
    ) -> core::result::Result<Token, Rejected> {
        let (phys, len) = (buffer.phys(), buffer.len());
        self.enqueue(Some(buffer), |shared, q, queue, buffer| {
            let (stamp, slot) = handle.place();
            match shared.namespaces.at(stamp, slot) {
                // The list is the one the handle was made on.
                Some(ns) => {
                    let command = Transfer {
                        opcode,
                        cdw12: 0,
                        lba,
                        blocks,
                    };
                    transfer_into(
                        &shared.platform,
                        shared.io_timeout_ns,
                        q,
                        queue,
                        ns,
                        command,
                        phys,
                        len,
                        tag,
                        false,
                        buffer,
                    )
                }
                _ => Err(Error::StaleHandle),
            }
        })
    }

    /// Queues `op` with `buffer` (required for reads and writes, ignored
    /// otherwise) and the caller's `tag`; as [`Controller::submit`].
    pub fn submit(
        &self,
        op: IoOp,
        buffer: Option<DmaRegion>,
        tag: u64,
    ) -> core::result::Result<Token, Rejected> {
        let data = buffer.as_ref().map(|b| (b.phys(), b.len()));
        self.enqueue(buffer, |shared, q, queue, buffer| {
            let context = Context {
                platform: &shared.platform,
                io_timeout: shared.config.io_timeout,
                io_timeout_ns: shared.io_timeout_ns,
                info: shared.info.as_ref(),
                namespaces: shared.namespaces.list(),
            };
            prepare_in(&context, q, queue, op, data, tag, false, buffer)
        })
    }

    /// Takes this queue's lock, then reads the gate, and only while it is
    /// open lets `write` put a command into the queue (`buffer` goes into
    /// its slot); otherwise, or when `write` fails, the buffer comes back in
    /// [`Rejected`]. Reading the gate under the lock is what makes a removal
    /// fail every command exactly once: the monitor closes the gate before
    /// it takes each queue's lock.
    fn enqueue(
        &self,
        buffer: Option<DmaRegion>,
        write: impl FnOnce(
            &Shared<P, QUEUES, DEPTH>,
            &mut QueuePair<DEPTH>,
            u16,
            &mut Option<DmaRegion>,
        ) -> Result<u16>,
    ) -> core::result::Result<Token, Rejected> {
        let shared = self.shared;
        let mut buffer = buffer;
        let mut q = shared.io[self.queue.index() as usize].lock();
        let (phase, refusal) = shared.gate.get();
        let queued = if phase != Phase::Open {
            Err(refusal.error())
        } else {
            write(shared, &mut q, self.queue.index(), &mut buffer)
        };
        match queued {
            Ok(cid) => Ok(Token {
                queue: self.queue,
                cid,
            }),
            Err(error) => Err(Rejected { error, buffer }),
        }
    }

    /// Rings the submission doorbell if new entries wait (nothing while the
    /// controller is not serving).
    pub fn ring_doorbell(&self) {
        let shared = self.shared;
        let mut q = shared.io[self.queue.index() as usize].lock();
        if matches!(shared.gate.get().0, Phase::Open | Phase::Draining) {
            q.publish(&shared.platform, &shared.regs, None);
        }
    }

    /// Rings the doorbell if needed, consumes the queue's completions and
    /// hands each finished command to `on_complete`, exactly once; as
    /// [`Controller::poll`]. After a removal or failure it delivers the
    /// commands the monitor failed, once the device is proven unable to
    /// reach their buffers.
    ///
    /// `on_complete` runs with no lock of the driver held: it may submit on
    /// this queue again (the streaming pattern), ask it
    /// [`IoQueue::in_flight`], poll it, or tick the monitor. Finished
    /// commands are taken from the queue under its lock, up to
    /// [`POLL_BATCH`] at a time, and handed over after the lock is released;
    /// a command submitted by `on_complete` is delivered by a later poll.
    pub fn poll(&self, mut on_complete: impl FnMut(Completion)) -> usize {
        let shared = self.shared;
        let mut delivered = 0;
        let mut reap = true;
        loop {
            let mut batch = heapless::Vec::<Completion, POLL_BATCH>::new();
            {
                let mut q = shared.io[self.queue.index() as usize].lock();
                let live = match shared.gate.get().0 {
                    Phase::Open | Phase::Draining => true,
                    Phase::Holding => return delivered,
                    Phase::Down => false,
                };
                // The ring once per poll: what the callbacks submit waits
                // for the next one, so a poll always ends.
                let succeeded = take_finished(
                    &shared.platform,
                    &shared.regs,
                    shared.config.io_timeout,
                    &mut q,
                    self.queue,
                    live && reap,
                    &mut batch,
                );
                reap = false;
                if succeeded {
                    shared.gate.note_success();
                }
            }
            let more = batch.is_full();
            for completion in batch {
                delivered += 1;
                on_complete(completion);
            }
            if !more {
                return delivered;
            }
        }
    }

    /// Commands in flight on this queue.
    pub fn in_flight(&self) -> usize {
        self.shared.io[self.queue.index() as usize]
            .lock()
            .tracker
            .in_flight()
    }

    /// Finished commands this queue's `poll` has not delivered yet.
    pub fn undelivered(&self) -> usize {
        self.shared.io[self.queue.index() as usize]
            .lock()
            .tracker
            .undelivered()
    }
}
