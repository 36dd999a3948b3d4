//! The owner's split-phase submit: [`Controller::submit`] validates a
//! command and writes its SQE into the ring; the doorbell is rung later (see
//! [`super::poll`]).

use super::checks::check_blocks;
use super::transfer::{transfer_into, Transfer};
use super::{IoOp, QueueId, Rejected, Token};
use crate::error::{Error, Result};
use crate::link::DeviceLink;
use crate::nvme::command::{nvm, SubmissionEntry};
use crate::nvme::controller::Controller;
use crate::nvme::identify::ControllerInfo;
use crate::nvme::lifecycle::State;
use crate::nvme::namespaces::Namespace;
use crate::nvme::prp;
use crate::nvme::qpair::QueuePair;
use crate::platform::{DmaRegion, PhysAddr, Platform};
use spin::Mutex;

/// Write Zeroes: deallocate the blocks too if the device can (CDW12 bit 25).
const WRITE_ZEROES_DEAC: u32 = 1 << 25;
/// Dataset Management attribute: deallocate (CDW11 bit 2).
const DSM_DEALLOCATE: u32 = 1 << 2;

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

    /// `Ok` while the controller serves I/O, else why not.
    pub(super) fn serving(&self) -> Result<()> {
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
    let (sqe, transfer) = build_entry(context, op, data)?;
    queue_entry(context, q, queue, op, sqe, transfer, tag, internal, buffer)
}

/// Checks `op` (not a read or write) against its namespace and the
/// controller's features and builds its SQE; also returns the data a
/// transfer would carry.
fn build_entry<P>(
    context: &Context<'_, P>,
    op: IoOp,
    data: Option<(PhysAddr, usize)>,
) -> Result<(SubmissionEntry, Option<(PhysAddr, usize)>)> {
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
    Ok((sqe, transfer))
}

/// Reserves a command slot in `q` for `sqe` (built from `op`), points it at
/// its data and writes it into the ring; on failure the slot is freed and
/// `buffer` stays with the caller.
#[allow(clippy::too_many_arguments)]
fn queue_entry<P: Platform, const DEPTH: usize>(
    context: &Context<'_, P>,
    q: &mut QueuePair<DEPTH>,
    queue: u16,
    op: IoOp,
    mut sqe: SubmissionEntry,
    transfer: Option<(PhysAddr, usize)>,
    tag: u64,
    internal: bool,
    buffer: &mut Option<DmaRegion>,
) -> Result<u16> {
    let opcode = op.opcode();
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
