//! The lean transfer path: reads and writes on a [`NamespaceHandle`],
//! checked with a few comparisons and written straight into the ring.

use super::checks::{bad_blocks, bad_buffer, queue_error, unknown_queue};
use super::{QueueId, Rejected, Token};
use crate::error::{Error, Result};
use crate::link::DeviceLink;
use crate::nvme::command::nvm;
use crate::nvme::controller::Controller;
use crate::nvme::handle::NamespaceHandle;
use crate::nvme::lifecycle::State;
use crate::nvme::namespaces::Namespace;
use crate::nvme::qpair::{QueuePair, TransferEntry};
use crate::platform::{DmaRegion, PhysAddr, Platform};
use spin::Mutex;

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
