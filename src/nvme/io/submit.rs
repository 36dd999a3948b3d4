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
/// `queue`) of a serving controller; see [`Controller::prepare`]. Reads and
/// writes take the transfer path; the other commands are checked against
/// their namespace and the controller's features here.
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
    let ns = *context.namespace(op.nsid())?;
    let sqe = match op {
        IoOp::Read { lba, blocks, .. }
        | IoOp::Write { lba, blocks, .. }
        | IoOp::WriteFua { lba, blocks, .. } => {
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
        IoOp::Flush { .. } => entry(&ns, op),
        IoOp::WriteZeroes { lba, blocks, .. } => {
            if !context.info.is_some_and(|i| i.supports_write_zeroes()) {
                return Err(Error::Unsupported {
                    what: "Write Zeroes",
                });
            }
            check_blocks(lba, blocks, ns.blocks(), 1 << 16)?;
            let mut sqe = entry(&ns, op);
            sqe.set_lba_range(lba, blocks as u16);
            sqe.cdw12 |= WRITE_ZEROES_DEAC;
            sqe
        }
        IoOp::Deallocate { lba, blocks, .. } => {
            if !context.info.is_some_and(|i| i.supports_deallocate()) {
                return Err(Error::Unsupported {
                    what: "Dataset Management",
                });
            }
            check_blocks(lba, blocks, ns.blocks(), u32::MAX)?;
            let mut sqe = entry(&ns, op);
            sqe.cdw10 = 0; // one range
            sqe.cdw11 = DSM_DEALLOCATE;
            sqe
        }
    };
    queue_entry(context, q, queue, op, sqe, tag, internal, buffer)
}

/// The SQE of `op` on `ns`, before its command-specific fields.
fn entry(ns: &Namespace, op: IoOp) -> SubmissionEntry {
    let mut sqe = SubmissionEntry::new(op.opcode());
    sqe.nsid = ns.id();
    sqe
}

/// Reserves a command slot in `q` for `sqe` (built from `op`, which
/// carries no data buffer) and writes it into the ring; on failure the slot is freed and
/// `buffer` stays with the caller.
#[allow(clippy::too_many_arguments)]
fn queue_entry<P: Platform, const DEPTH: usize>(
    context: &Context<'_, P>,
    q: &mut QueuePair<DEPTH>,
    queue: u16,
    op: IoOp,
    mut sqe: SubmissionEntry,
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
    q.push(&sqe);
    Ok(cid)
}
