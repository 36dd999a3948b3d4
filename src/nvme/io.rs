//! Block I/O: split-phase submit and poll, and blocking wrappers on top.
//!
//! The hot path builds the SQE once and stores it into the ring slot with a
//! single 64-byte write, reads no register, rings each doorbell at most once
//! per batch (the SQ doorbell when the caller polls, the CQ head doorbell
//! once per drained batch when a quarter of the ring was consumed) and keeps
//! per-command state in a table indexed by CID. Completions go to the caller
//! straight from the ring, with one table lookup each.

use crate::error::{Error, Result};
use crate::link::DeviceLink;
use crate::nvme::command::{nvm, sc, sct, SubmissionEntry};
use crate::nvme::controller::Controller;
use crate::nvme::handle::NamespaceHandle;
use crate::nvme::identify::ControllerInfo;
use crate::nvme::lifecycle::{State, Step};
use crate::nvme::namespaces::Namespace;
use crate::nvme::prp;
use crate::nvme::qpair::{QueuePair, TransferEntry};
use crate::nvme::queue::DoorbellBuffers;
use crate::nvme::tracker::{Delivered, Taken};
use spin::Mutex;

use crate::platform::{DmaRegion, DmaView, DmaViewMut, PhysAddr, Platform};

/// Write Zeroes: deallocate the blocks too if the device can (CDW12 bit 25).
const WRITE_ZEROES_DEAC: u32 = 1 << 25;
/// Dataset Management attribute: deallocate (CDW11 bit 2).
const DSM_DEALLOCATE: u32 = 1 << 2;
/// How often a blocking wait with no progress checks CSTS, in nanoseconds.
const STATUS_CHECK_NS: u64 = 1_000_000;

/// A block operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoOp {
    /// Read `blocks` blocks at `lba` into the buffer.
    Read {
        /// Namespace ID.
        nsid: u32,
        /// First block.
        lba: u64,
        /// Number of blocks.
        blocks: u32,
    },
    /// Write `blocks` blocks at `lba` from the buffer.
    Write {
        /// Namespace ID.
        nsid: u32,
        /// First block.
        lba: u64,
        /// Number of blocks.
        blocks: u32,
    },
    /// Write `blocks` blocks at `lba` from the buffer with Force Unit
    /// Access: the data is on non-volatile media when the command completes,
    /// whatever the volatile write cache holds.
    WriteFua {
        /// Namespace ID.
        nsid: u32,
        /// First block.
        lba: u64,
        /// Number of blocks.
        blocks: u32,
    },
    /// Make every completed write durable.
    Flush {
        /// Namespace ID.
        nsid: u32,
    },
    /// Set blocks to zero without a data buffer.
    WriteZeroes {
        /// Namespace ID.
        nsid: u32,
        /// First block.
        lba: u64,
        /// Number of blocks.
        blocks: u32,
    },
    /// Tell the device the blocks' contents are no longer needed (TRIM).
    Deallocate {
        /// Namespace ID.
        nsid: u32,
        /// First block.
        lba: u64,
        /// Number of blocks.
        blocks: u32,
    },
}

impl IoOp {
    fn nsid(&self) -> u32 {
        match *self {
            IoOp::Read { nsid, .. }
            | IoOp::Write { nsid, .. }
            | IoOp::WriteFua { nsid, .. }
            | IoOp::Flush { nsid }
            | IoOp::WriteZeroes { nsid, .. }
            | IoOp::Deallocate { nsid, .. } => nsid,
        }
    }

    fn opcode(&self) -> u8 {
        match self {
            IoOp::Read { .. } => nvm::READ,
            IoOp::Write { .. } | IoOp::WriteFua { .. } => nvm::WRITE,
            IoOp::Flush { .. } => nvm::FLUSH,
            IoOp::WriteZeroes { .. } => nvm::WRITE_ZEROES,
            IoOp::Deallocate { .. } => nvm::DATASET_MANAGEMENT,
        }
    }
}

/// One of a controller's I/O queue pairs, by index: `0 ..`
/// [`Controller::io_queue_count`] (see [`Controller::queues`]). A queue that
/// does not exist is refused with [`Error::UnknownQueue`] when used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueId(u16);

impl QueueId {
    /// The first I/O queue, which every serving controller has.
    pub const FIRST: QueueId = QueueId(0);

    /// The queue with index `index`.
    pub const fn new(index: u16) -> Self {
        Self(index)
    }

    /// Its index.
    pub const fn index(self) -> u16 {
        self.0
    }
}

/// Names a submitted command until it completes.
#[must_use = "the token names the command until its completion is polled"]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Token {
    /// The I/O queue.
    pub queue: QueueId,
    /// The command identifier.
    pub cid: u16,
}

/// A finished command. It holds the caller's buffer: hand it back to the
/// platform or reuse it (dropping it leaks the memory).
#[must_use = "a completion carries the command's buffer"]
#[derive(Debug)]
pub struct Completion {
    /// The token `submit` returned.
    pub token: Token,
    /// The caller's tag given to `submit`.
    pub tag: u64,
    /// Success, or why the command failed.
    pub result: Result<()>,
    /// The buffer given to `submit`, handed back.
    pub buffer: Option<DmaRegion>,
}

/// A submission the driver refused; nothing reached the device, and the
/// buffer comes back here (`?` does not apply: take `buffer` first, then
/// return `error`, as README's "Using it" shows).
#[must_use = "a rejected submission carries the caller's buffer"]
#[derive(Debug)]
pub struct Rejected {
    /// Why.
    pub error: Error,
    /// The buffer given to `submit`, handed back.
    pub buffer: Option<DmaRegion>,
}

impl<P: Platform, L: DeviceLink, const QUEUES: usize, const DEPTH: usize>
    Controller<P, L, QUEUES, DEPTH>
{
    /// Queues `op` on I/O queue `queue` with `buffer` (required for reads and
    /// writes, ignored otherwise) and the caller's `tag`. The command reaches
    /// the device at the next [`Controller::poll`] (or
    /// [`Controller::ring_doorbells`]), so a batch costs one doorbell write.
    /// The buffer is held by the driver until the command completes.
    pub fn submit(
        &mut self,
        queue: QueueId,
        op: IoOp,
        buffer: Option<DmaRegion>,
        tag: u64,
    ) -> core::result::Result<Token, Rejected> {
        let data = buffer.as_ref().map(|b| (b.phys(), b.len()));
        let mut buffer = buffer;
        match self.prepare(queue.0, op, data, tag, false, &mut buffer) {
            Ok(cid) => Ok(Token { queue, cid }),
            Err(error) => Err(Rejected { error, buffer }),
        }
    }

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
    fn rings_live(&self) -> bool {
        matches!(
            self.owned.lifecycle.step(),
            Step::Ready | Step::Drain { .. }
        )
    }

    /// Rings `queue`'s doorbell if needed, consumes its completions and hands
    /// each finished command to `on_complete`, exactly once. Returns how many
    /// were delivered. After removal or failure, delivers the commands that
    /// were outstanding, each with its error, once the device is proven
    /// unable to reach their buffers (until then, during a reset's disable or
    /// a teardown's stop, nothing is delivered). A command whose buffer was
    /// quarantined (see [`Controller::quarantined`]) is delivered without it.
    pub fn poll(&mut self, queue: QueueId, mut on_complete: impl FnMut(Completion)) -> usize {
        if self.holding() {
            return 0;
        }
        let live = self.rings_live();
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

    /// Reads `buffer.len()` bytes (a multiple of the block size) at `lba`,
    /// blocking. Splits transfers larger than one command may carry.
    /// `buffer` is a whole region (`&mut region`) or part of one
    /// (`region.view_mut(range)`).
    pub fn read<'b>(
        &mut self,
        nsid: u32,
        lba: u64,
        buffer: impl Into<DmaViewMut<'b>>,
    ) -> Result<()> {
        let buffer = buffer.into();
        let read = |nsid, lba, blocks| IoOp::Read { nsid, lba, blocks };
        self.transfer_blocking(nsid, lba, buffer.phys(), buffer.len(), read)
    }

    /// Writes `buffer.len()` bytes (a multiple of the block size) at `lba`,
    /// blocking. Splits transfers larger than one command may carry.
    /// `buffer` is a whole region (`&region`) or part of one
    /// (`region.view(range)`).
    pub fn write<'b>(&mut self, nsid: u32, lba: u64, buffer: impl Into<DmaView<'b>>) -> Result<()> {
        let buffer = buffer.into();
        let write = |nsid, lba, blocks| IoOp::Write { nsid, lba, blocks };
        self.transfer_blocking(nsid, lba, buffer.phys(), buffer.len(), write)
    }

    /// Like [`Controller::write`], with Force Unit Access: the data is
    /// durable when this returns, without a flush.
    pub fn write_fua<'b>(
        &mut self,
        nsid: u32,
        lba: u64,
        buffer: impl Into<DmaView<'b>>,
    ) -> Result<()> {
        let buffer = buffer.into();
        let write = |nsid, lba, blocks| IoOp::WriteFua { nsid, lba, blocks };
        self.transfer_blocking(nsid, lba, buffer.phys(), buffer.len(), write)
    }

    /// Makes every completed write to `nsid` durable, blocking.
    pub fn flush(&mut self, nsid: u32) -> Result<()> {
        self.execute_blocking(IoOp::Flush { nsid }, None)
    }

    /// Sets `blocks` blocks at `lba` to zero, blocking.
    pub fn write_zeroes(&mut self, nsid: u32, lba: u64, blocks: u64) -> Result<()> {
        self.ranged_blocking(nsid, lba, blocks, |nsid, lba, blocks| IoOp::WriteZeroes {
            nsid,
            lba,
            blocks,
        })
    }

    /// Deallocates (trims) `blocks` blocks at `lba`, blocking.
    pub fn deallocate(&mut self, nsid: u32, lba: u64, blocks: u64) -> Result<()> {
        self.ranged_blocking(nsid, lba, blocks, |nsid, lba, blocks| IoOp::Deallocate {
            nsid,
            lba,
            blocks,
        })
    }

    pub(crate) fn transfer_blocking(
        &mut self,
        nsid: u32,
        lba: u64,
        phys: PhysAddr,
        len: usize,
        op: fn(u32, u64, u32) -> IoOp,
    ) -> Result<()> {
        // A controller that is not serving has no namespaces worth naming.
        self.ensure_ready()?;
        let ns = *self.namespace(nsid)?;
        let block = ns.block_size() as usize;
        if len == 0 {
            return Err(Error::EmptyTransfer);
        }
        // Block sizes are powers of two (validated at identify): masks and
        // shifts, no division.
        if len & (block - 1) != 0 {
            return Err(Error::InvalidArgument {
                what: "buffer length must be a multiple of the block size",
            });
        }
        let total = (len >> ns.info.block_shift) as u64;
        check_range(lba, total, ns.blocks())?;
        let reads = matches!(op(nsid, lba, 0), IoOp::Read { .. });
        let mut done = 0u64;
        while done < total {
            let blocks = (total - done).min(ns.max_blocks as u64) as u32;
            let offset = (done as usize) * block;
            let at = phys
                .checked_add(offset as u64)
                .ok_or(Error::InvalidArgument {
                    what: "buffer address overflows",
                })?;
            let command = op(nsid, lba + done, blocks);
            let bytes = blocks as usize * block;
            self.execute_blocking(command, Some((at, bytes)))?;
            if reads {
                self.shared.platform.dma_invalidate(at, bytes);
            }
            done += blocks as u64;
        }
        Ok(())
    }

    fn ranged_blocking(
        &mut self,
        nsid: u32,
        lba: u64,
        blocks: u64,
        op: impl Fn(u32, u64, u32) -> IoOp,
    ) -> Result<()> {
        self.ensure_ready()?;
        let ns = *self.namespace(nsid)?;
        if blocks == 0 {
            return Err(Error::EmptyTransfer);
        }
        check_range(lba, blocks, ns.blocks())?;
        let mut done = 0;
        while done < blocks {
            let n = (blocks - done).min(1 << 16) as u32;
            self.execute_blocking(op(nsid, lba + done, n), None)?;
            done += n as u64;
        }
        Ok(())
    }

    /// Submits one command on queue 0 for a caller who waits, and waits for it
    /// with the I/O deadline. Completions of other commands that arrive
    /// meanwhile stay queued for the caller's next `poll`.
    fn execute_blocking(&mut self, op: IoOp, data: Option<(PhysAddr, usize)>) -> Result<()> {
        let cid = self.submit_waited(op, data)?;
        self.wait_blocking(&[cid]).1
    }

    /// Queues one command on queue 0 for a caller who waits for it with
    /// [`Controller::wait_blocking`] (never delivered through `poll`; the
    /// data memory stays the caller's). It reaches the device at the wait.
    pub(crate) fn submit_waited(
        &mut self,
        op: IoOp,
        data: Option<(PhysAddr, usize)>,
    ) -> Result<u16> {
        self.ensure_ready()?;
        self.prepare(0, op, data, 0, true, &mut None)
    }

    /// Waits with the I/O deadline until one of `cids` (commands from
    /// [`Controller::submit_waited`], not yet waited for) is done: returns its
    /// index in `cids` and its result. Completions of other commands that
    /// arrive meanwhile stay queued for the caller's next `poll`. The index
    /// is `None` only if the controller ended without any of them done.
    pub(crate) fn wait_blocking(&mut self, cids: &[u16]) -> (Option<usize>, Result<()>) {
        if cids.is_empty() {
            return (
                None,
                Err(Error::Internal {
                    what: "a wait for no command",
                }),
            );
        }
        let mut last_progress = self.now();
        loop {
            if self.holding() {
                // Failed, but the device may still reach the buffer: drive
                // the stop this command waits for (bounded by CAP.TO).
                let _ = self.advance();
                continue;
            }
            let live = self.rings_live();
            let q = self.shared.io[0].get_mut();
            let shadow = self.owned.pages.doorbells();
            if live {
                q.publish(&self.shared.platform, &self.shared.regs, shadow);
                if q.reap(&self.shared.platform, &self.shared.regs, shadow) > 0 {
                    last_progress = self.shared.platform.now();
                }
            }
            // Done also covers a command failed by a reset or a removal.
            let found = cids
                .iter()
                .enumerate()
                .find_map(|(i, &cid)| q.tracker.take_done_cid(cid).map(|done| (i, done)));
            if let Some((index, done)) = found {
                if done.result.is_ok() {
                    self.note_success();
                }
                if self.owned.lifecycle.quarantine().regions > 0 {
                    // The device may still write the caller's buffer.
                    return (Some(index), Err(Error::Quarantined));
                }
                let result = aborted_means_timeout(done.result, self.shared.config.io_timeout);
                return (Some(index), result);
            }
            if self.owned.lifecycle.state().is_finished() {
                if self.owned.lifecycle.quarantine().regions > 0 {
                    return (None, Err(Error::Quarantined));
                }
                return (
                    None,
                    Err(self.owned.lifecycle.failure().unwrap_or(Error::NotReady)),
                );
            }
            if !cids
                .iter()
                .any(|&cid| q.tracker.in_flight_mut(cid).is_some())
            {
                // Neither done nor in flight: nothing would end this wait.
                return (
                    None,
                    Err(Error::Internal {
                        what: "a wait for a command not in flight",
                    }),
                );
            }
            let now = self.now();
            self.expire(now);
            if now.as_nanos().saturating_sub(last_progress.as_nanos()) > STATUS_CHECK_NS {
                last_progress = now;
                if let Some(error) = self.check_health() {
                    self.lost(error);
                }
            }
        }
    }

    /// `Ok` while the controller serves I/O, else why not.
    fn serving(&self) -> Result<()> {
        match self.owned.lifecycle.state() {
            State::Ready => Ok(()),
            State::Removed => Err(Error::DeviceRemoved),
            State::Failed => Err(Error::ControllerFailed),
            _ => Err(Error::NotReady),
        }
    }

    /// Validates `op` and writes its SQE into `queue`'s ring. On success the
    /// command's slot holds `buffer` (taken) until the command completes;
    /// nothing is submitted when it fails, and `buffer` stays with the caller.
    pub(crate) fn prepare(
        &mut self,
        queue: u16,
        op: IoOp,
        data: Option<(PhysAddr, usize)>,
        tag: u64,
        internal: bool,
        buffer: &mut Option<DmaRegion>,
    ) -> Result<u16> {
        self.serving()?;
        let Some(q) = self.shared.io.get_mut(queue as usize).map(Mutex::get_mut) else {
            return Err(Error::UnknownQueue { queue });
        };
        let context = Context {
            platform: &self.shared.platform,
            io_timeout: self.shared.config.io_timeout,
            io_timeout_ns: self.shared.io_timeout_ns,
            info: self.shared.info.as_ref(),
            namespaces: self.shared.namespaces.list(),
        };
        prepare_in(&context, q, queue, op, data, tag, internal, buffer)
    }
}

/// Rings `q`'s doorbell if needed and hands its finished commands to
/// `on_complete` (see [`Controller::poll`]); with `live` false the rings are
/// not touched and only what finished earlier is delivered. Returns how many
/// were delivered and whether one succeeded.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn poll_queue<P: Platform, const DEPTH: usize>(
    platform: &P,
    regs: &P::Registers,
    shadow: Option<&DoorbellBuffers>,
    io_timeout: core::time::Duration,
    q: &mut QueuePair<DEPTH>,
    queue: QueueId,
    live: bool,
    on_complete: &mut impl FnMut(Completion),
) -> (usize, bool) {
    if live {
        q.publish(platform, regs, shadow);
    }
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
            if let (Some(buffer), nvm::READ) = (&done.buffer, done.opcode) {
                // The device is done with it: the CPU sees what it wrote,
                // not lines cached before.
                platform.dma_invalidate(buffer.phys(), buffer.len());
            }
            on_complete(Completion {
                token: Token {
                    queue,
                    cid: done.cid,
                },
                tag: done.tag,
                result,
                buffer: done.buffer,
            });
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

/// The parts of a controller a command is checked and built with, besides
/// its queue: read-only while the controller serves.
pub(crate) struct Context<'a, P> {
    pub(crate) platform: &'a P,
    pub(crate) io_timeout: core::time::Duration,
    pub(crate) io_timeout_ns: u64,
    pub(crate) info: Option<&'a ControllerInfo>,
    pub(crate) namespaces: &'a [Namespace],
}

impl<P> Context<'_, P> {
    fn namespace(&self, nsid: u32) -> Result<&Namespace> {
        self.namespaces
            .iter()
            .find(|n| n.id() == nsid)
            .ok_or(Error::UnknownNamespace { nsid })
    }
}

/// Validates `op` and writes its SQE into `q` (the I/O queue with index
/// `queue`) of a serving controller; see [`Controller::prepare`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn prepare_in<P: Platform, const DEPTH: usize>(
    context: &Context<'_, P>,
    q: &mut QueuePair<DEPTH>,
    queue: u16,
    op: IoOp,
    data: Option<(PhysAddr, usize)>,
    tag: u64,
    internal: bool,
    buffer: &mut Option<DmaRegion>,
) -> Result<u16> {
    if let IoOp::Read { nsid, lba, blocks }
    | IoOp::Write { nsid, lba, blocks }
    | IoOp::WriteFua { nsid, lba, blocks } = op
    {
        let ns = *context.namespace(nsid)?;
        let fua = if matches!(op, IoOp::WriteFua { .. }) {
            nvm::FUA
        } else {
            0
        };
        let command = Transfer {
            opcode: op.opcode(),
            cdw12: fua,
            lba,
            blocks,
        };
        let (phys, len) = data.unwrap_or((PhysAddr::new(0), 0));
        return transfer_into(
            context.platform,
            context.io_timeout_ns,
            q,
            queue,
            &ns,
            command,
            phys,
            len,
            tag,
            internal,
            buffer,
        );
    }
    // Only the few fields used, not copies of whole identify structures.
    let ns = context.namespace(op.nsid())?;
    let (nsid, capacity, block_shift, max_blocks) =
        (ns.id(), ns.blocks(), ns.info.block_shift, ns.max_blocks);
    let opcode = op.opcode();
    let mut sqe = SubmissionEntry::new(opcode);
    sqe.nsid = nsid;
    let mut transfer = None;
    match op {
        IoOp::Read { lba, blocks, .. }
        | IoOp::Write { lba, blocks, .. }
        | IoOp::WriteFua { lba, blocks, .. } => {
            check_blocks(lba, blocks, capacity, max_blocks)?;
            let bytes = (blocks as usize) << block_shift;
            let (phys, len) = data.ok_or(Error::BufferTooSmall {
                needed: bytes,
                got: 0,
            })?;
            if len < bytes {
                return Err(Error::BufferTooSmall {
                    needed: bytes,
                    got: len,
                });
            }
            if phys.as_u64() & 3 != 0 {
                return Err(Error::BufferMisaligned {
                    addr: phys.as_u64(),
                    required: 4,
                });
            }
            sqe.set_lba_range(lba, blocks as u16);
            if matches!(op, IoOp::WriteFua { .. }) {
                sqe.cdw12 |= nvm::FUA;
            }
            transfer = Some((phys, bytes));
        }
        IoOp::Flush { .. } => {}
        IoOp::WriteZeroes { lba, blocks, .. } => {
            if !context.info.is_some_and(|i| i.supports_write_zeroes()) {
                return Err(Error::Unsupported {
                    what: "Write Zeroes",
                });
            }
            check_blocks(lba, blocks, capacity, 1 << 16)?;
            sqe.set_lba_range(lba, blocks as u16);
            sqe.cdw12 |= WRITE_ZEROES_DEAC;
        }
        IoOp::Deallocate { lba, blocks, .. } => {
            if !context.info.is_some_and(|i| i.supports_deallocate()) {
                return Err(Error::Unsupported {
                    what: "Dataset Management",
                });
            }
            check_blocks(lba, blocks, capacity, u32::MAX)?;
            sqe.cdw10 = 0; // one range
            sqe.cdw11 = DSM_DEALLOCATE;
        }
    }
    let deadline = context.platform.now() + context.io_timeout;
    // The queue pair knows its NVMe queue ID; the caller knows the index.
    let cid = q
        .reserve(opcode, tag, deadline, internal, buffer)
        .map_err(|e| match e {
            Error::QueueFull { .. } => Error::QueueFull { queue },
            other => other,
        })?;
    sqe.set_cid(cid);
    if let IoOp::Deallocate { lba, blocks, .. } = op {
        // The single range lives in the command's PRP list storage.
        let range = q.list_area(cid).and_then(|area| {
            area.write::<[u32; 4]>(
                0,
                [
                    0,
                    blocks.to_le(),
                    (lba as u32).to_le(),
                    ((lba >> 32) as u32).to_le(),
                ],
            )?;
            area.flush(context.platform, 16);
            area.phys()
        });
        match range {
            Some(addr) => sqe.prp1 = addr,
            None => {
                *buffer = q.tracker.cancel(cid);
                return Err(Error::Internal {
                    what: "no room for the Dataset Management range",
                });
            }
        }
    }
    if let Some((phys, bytes)) = transfer {
        match prp::build(context.platform, phys, bytes, || q.list_area(cid)) {
            Ok((prp1, prp2)) => {
                sqe.prp1 = prp1;
                sqe.prp2 = prp2;
                // Both directions, like a streaming DMA mapping: a write's
                // data reaches memory, and no dirty line of a read's
                // buffer is evicted over what the device writes.
                context.platform.dma_flush(phys, bytes);
            }
            Err(e) => {
                *buffer = q.tracker.cancel(cid);
                return Err(e);
            }
        }
    }
    q.push(&sqe);
    Ok(cid)
}

/// A read or write as the lean path queues it.
#[derive(Clone, Copy)]
pub(crate) struct Transfer {
    pub(crate) opcode: u8,
    /// Flags of command dword 12 besides the block count (FUA).
    pub(crate) cdw12: u32,
    pub(crate) lba: u64,
    pub(crate) blocks: u32,
}

impl<P: Platform, L: DeviceLink, const QUEUES: usize, const DEPTH: usize>
    Controller<P, L, QUEUES, DEPTH>
{
    /// Queues a read of `blocks` blocks at `lba` of the namespace `ns` into
    /// `buffer` on I/O queue `queue`, with the caller's `tag`: the lean form
    /// of [`Controller::submit`] for the common command. The handle was
    /// validated when it was made; here it costs two comparisons while the
    /// controller's namespace list is unchanged (and the full check of
    /// [`NamespaceHandle`] otherwise). The range, the buffer's length and
    /// alignment, the queue and the controller's state are checked as by
    /// `submit`, and the command reaches the device at the next
    /// [`Controller::poll`] (or [`Controller::ring_doorbells`]). The I/O
    /// timeout runs from the first command queued on `queue` since its
    /// doorbell was last rung (so from no later than this submit): the clock
    /// is read once per batch.
    #[inline]
    pub fn submit_read(
        &mut self,
        queue: QueueId,
        ns: &NamespaceHandle,
        lba: u64,
        blocks: u32,
        buffer: DmaRegion,
        tag: u64,
    ) -> core::result::Result<Token, Rejected> {
        let command = Transfer {
            opcode: nvm::READ,
            cdw12: 0,
            lba,
            blocks,
        };
        self.submit_transfer(queue, ns, command, buffer, tag)
    }

    /// Queues a write of `blocks` blocks at `lba` of the namespace `ns` from
    /// `buffer`; otherwise as [`Controller::submit_read`].
    #[inline]
    pub fn submit_write(
        &mut self,
        queue: QueueId,
        ns: &NamespaceHandle,
        lba: u64,
        blocks: u32,
        buffer: DmaRegion,
        tag: u64,
    ) -> core::result::Result<Token, Rejected> {
        let command = Transfer {
            opcode: nvm::WRITE,
            cdw12: 0,
            lba,
            blocks,
        };
        self.submit_transfer(queue, ns, command, buffer, tag)
    }

    #[inline(always)]
    fn submit_transfer(
        &mut self,
        queue: QueueId,
        handle: &NamespaceHandle,
        command: Transfer,
        buffer: DmaRegion,
        tag: u64,
    ) -> core::result::Result<Token, Rejected> {
        let (phys, len) = (buffer.phys(), buffer.len());
        let mut buffer = Some(buffer);
        let (stamp, slot) = handle.place();
        let queued = match self.shared.namespaces.at(stamp, slot) {
            // The list is the one the handle was made on, and serving.
            Some(&ns) if self.owned.lifecycle.state() == State::Ready => {
                self.queue_transfer(queue.0, &ns, command, phys, len, tag, false, &mut buffer)
            }
            _ => {
                // The command goes as numbers: no copy of it is built in
                // memory for this branch on the hot path.
                let Transfer {
                    opcode,
                    cdw12,
                    lba,
                    blocks,
                } = command;
                let (at, data) = (phys, len);
                self.submit_transfer_checked(
                    queue.0,
                    handle,
                    [opcode as u64, cdw12 as u64, lba, blocks as u64],
                    at,
                    data,
                    tag,
                    &mut buffer,
                )
            }
        };
        match queued {
            Ok(cid) => Ok(Token { queue, cid }),
            Err(error) => Err(Rejected { error, buffer }),
        }
    }

    /// The handle's full check (the namespace list changed since it was
    /// made, or the controller is not serving), then the transfer.
    #[cold]
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn submit_transfer_checked(
        &mut self,
        queue: u16,
        handle: &NamespaceHandle,
        [opcode, cdw12, lba, blocks]: [u64; 4],
        phys: PhysAddr,
        len: usize,
        tag: u64,
        buffer: &mut Option<DmaRegion>,
    ) -> Result<u16> {
        let command = Transfer {
            opcode: opcode as u8,
            cdw12: cdw12 as u32,
            lba,
            blocks: blocks as u32,
        };
        if self.owned.lifecycle.state().is_finished() {
            return Err(Error::StaleHandle);
        }
        self.serving()?;
        handle.check(self.namespace(handle.nsid()).ok())?;
        let ns = *self.namespace(handle.nsid())?;
        self.queue_transfer(queue, &ns, command, phys, len, tag, false, buffer)
    }

    /// Validates a transfer on namespace `ns` (served by this controller,
    /// which serves) and writes its SQE into `queue`'s ring. On success the
    /// command's slot holds `buffer` (taken); on failure nothing was
    /// submitted and `buffer` stays.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn queue_transfer(
        &mut self,
        queue: u16,
        ns: &Namespace,
        command: Transfer,
        phys: PhysAddr,
        len: usize,
        tag: u64,
        internal: bool,
        buffer: &mut Option<DmaRegion>,
    ) -> Result<u16> {
        let Some(q) = self.shared.io.get_mut(queue as usize).map(Mutex::get_mut) else {
            return Err(unknown_queue(queue));
        };
        transfer_into(
            &self.shared.platform,
            self.shared.io_timeout_ns,
            q,
            queue,
            ns,
            command,
            phys,
            len,
            tag,
            internal,
            buffer,
        )
    }
}

/// Validates a transfer on namespace `ns` (served by a serving controller)
/// and writes its SQE into `q`, the I/O queue with index `queue`. On success
/// the command's slot holds `buffer` (taken); on failure nothing was
/// submitted and `buffer` stays.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn transfer_into<P: Platform, const DEPTH: usize>(
    platform: &P,
    io_timeout_ns: u64,
    q: &mut QueuePair<DEPTH>,
    queue: u16,
    ns: &Namespace,
    command: Transfer,
    phys: PhysAddr,
    len: usize,
    tag: u64,
    internal: bool,
    buffer: &mut Option<DmaRegion>,
) -> Result<u16> {
    let Transfer {
        opcode,
        cdw12,
        lba,
        blocks,
    } = command;
    if blocks.wrapping_sub(1) >= ns.max_blocks
        || lba
            .checked_add(blocks as u64)
            .is_none_or(|end| end > ns.info.blocks)
    {
        return Err(bad_blocks(lba, blocks, ns.info.blocks, ns.max_blocks));
    }
    let bytes = (blocks as usize) << ns.info.block_shift;
    let addr = phys.as_u64();
    if len < bytes || addr & 3 != 0 {
        return Err(bad_buffer(addr, bytes, len));
    }
    let entry = TransferEntry {
        opcode,
        nsid: ns.info.nsid,
        lba,
        cdw12: cdw12 | (blocks - 1),
    };
    match q.queue_transfer(
        platform,
        entry,
        phys,
        bytes,
        tag,
        internal,
        io_timeout_ns,
        buffer,
    ) {
        Ok(cid) => Ok(cid),
        Err(e) => Err(queue_error(e, queue)),
    }
}

/// The queue pair knows its NVMe queue ID; the caller knows the index.
#[cold]
fn queue_error(error: Error, queue: u16) -> Error {
    match error {
        Error::QueueFull { .. } => Error::QueueFull { queue },
        other => other,
    }
}

#[cold]
fn unknown_queue(queue: u16) -> Error {
    Error::UnknownQueue { queue }
}

/// Why a block range was refused (cold: only a caller mistake gets here).
#[cold]
fn bad_blocks(lba: u64, blocks: u32, capacity: u64, max: u32) -> Error {
    match check_blocks(lba, blocks, capacity, max) {
        Err(e) => e,
        Ok(()) => Error::Internal {
            what: "block range refused and accepted",
        },
    }
}

/// Why a buffer was refused (a missing one has length 0).
#[cold]
fn bad_buffer(addr: u64, needed: usize, got: usize) -> Error {
    if got < needed {
        Error::BufferTooSmall { needed, got }
    } else {
        Error::BufferMisaligned { addr, required: 4 }
    }
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
    *succeeded |= done.result.is_ok();
    if done.internal {
        return;
    }
    if let (Some(buffer), nvm::READ) = (&done.buffer, done.opcode) {
        // The device is done with it (or proven unable to reach it): the CPU
        // sees what it wrote, not lines cached before.
        platform.dma_invalidate(buffer.phys(), buffer.len());
    }
    *delivered += 1;
    on_complete(Completion {
        token: Token {
            queue,
            cid: done.cid,
        },
        tag: done.tag,
        result: aborted_means_timeout(done.result, io_timeout),
        buffer: done.buffer,
    });
}

/// The error of a command the device completed with status field `status`
/// (not 0). Takes the numbers, not the completion: nothing of the hot path
/// has its address taken, so the completion need not be built in memory.
#[cold]
#[inline(never)]
fn device_failure(status: u16, opcode: u8, io_timeout: core::time::Duration) -> Result<()> {
    aborted_means_timeout(Taken::failure(status, opcode), io_timeout)
}

/// The driver sends Abort only for commands past their deadline, so a command
/// that ended with "Command Abort Requested" timed out.
fn aborted_means_timeout(result: Result<u32>, io_timeout: core::time::Duration) -> Result<()> {
    match result {
        Err(Error::CommandFailed { status, .. })
            if status.sct == sct::GENERIC && status.sc == sc::ABORT_REQUESTED =>
        {
            Err(Error::timeout(crate::error::Wait::IoCommand, io_timeout))
        }
        r => r.map(|_| ()),
    }
}

fn check_range(lba: u64, blocks: u64, capacity: u64) -> Result<()> {
    match lba.checked_add(blocks) {
        Some(end) if end <= capacity => Ok(()),
        _ => Err(Error::LbaOutOfRange {
            lba,
            blocks,
            capacity,
        }),
    }
}

fn check_blocks(lba: u64, blocks: u32, capacity: u64, max: u32) -> Result<()> {
    if blocks == 0 {
        return Err(Error::EmptyTransfer);
    }
    if blocks > max {
        return Err(Error::TransferTooLarge {
            blocks: blocks as u64,
            max,
        });
    }
    check_range(lba, blocks as u64, capacity)
}
