//! Admin commands a caller builds (vendor-specific ones, Namespace
//! Attachment, ...), with a caller buffer, blocking.
//!
//! Opcodes that would break the driver's own management of the controller
//! are refused without reaching the device: queue creation and deletion,
//! Abort, Asynchronous Event Request, Doorbell Buffer Config, Virtualization
//! Management, and Set Features of the number of queues.

use crate::error::{Error, Result};
use crate::link::DeviceLink;
use crate::nvme::command::{admin, feature, SubmissionEntry};
use crate::nvme::controller::Controller;
use crate::nvme::prp::{self, PAGE_SIZE};
use crate::platform::{DmaRegion, Platform};

/// Whether the driver refuses to pass `sqe` through: it would change
/// queues or outstanding commands behind the driver's back.
pub fn refused(sqe: &SubmissionEntry) -> bool {
    match sqe.opcode() {
        admin::DELETE_SQ
        | admin::CREATE_SQ
        | admin::DELETE_CQ
        | admin::CREATE_CQ
        | admin::ABORT
        | admin::ASYNC_EVENT_REQUEST
        | admin::DOORBELL_BUFFER_CONFIG
        | admin::VIRTUALIZATION_MANAGEMENT => true,
        admin::SET_FEATURES => sqe.cdw10 & 0xFF == feature::NUMBER_OF_QUEUES,
        _ => false,
    }
}

impl<P: Platform, L: DeviceLink, const QUEUES: usize, const DEPTH: usize>
    Controller<P, L, QUEUES, DEPTH>
{
    /// Sends the admin command `sqe` with `buffer` as its data (at most two
    /// memory pages: the driver builds PRP1 and PRP2), blocking until it
    /// completes; returns completion dword 0. The driver sets the command
    /// identifier, the data pointer and clears the fused and metadata
    /// fields; everything else is the caller's. A command the controller
    /// fails returns `CommandFailed` with its status.
    ///
    /// The buffer is not touched by the driver; the device may read or
    /// write it until this returns. If the command times out, the
    /// controller is reset and this returns once the device is proven
    /// stopped (or with [`Error::Quarantined`]: leak the buffer).
    pub fn admin_passthrough(
        &mut self,
        sqe: SubmissionEntry,
        buffer: Option<&mut DmaRegion>,
    ) -> Result<u32> {
        if refused(&sqe) {
            return Err(Error::InvalidArgument {
                what: "admin opcode reserved to the driver's queue management",
            });
        }
        let mut cmd = SubmissionEntry::new(sqe.opcode());
        cmd.nsid = sqe.nsid;
        cmd.cdw2 = sqe.cdw2;
        cmd.cdw3 = sqe.cdw3;
        (cmd.cdw10, cmd.cdw11, cmd.cdw12) = (sqe.cdw10, sqe.cdw11, sqe.cdw12);
        (cmd.cdw13, cmd.cdw14, cmd.cdw15) = (sqe.cdw13, sqe.cdw14, sqe.cdw15);
        let mut data = None;
        if let Some(buffer) = buffer {
            if buffer.is_empty() || buffer.len() > 2 * PAGE_SIZE {
                return Err(Error::InvalidArgument {
                    what: "passthrough buffer must hold 1 to 8192 bytes",
                });
            }
            let (phys, len) = (buffer.phys(), buffer.len());
            (cmd.prp1, cmd.prp2) = prp::build(&self.shared.platform, phys, len, || None)?;
            // The direction is the caller's: clean for the device either way,
            // and invalidate afterwards in case the device wrote.
            self.shared.platform.dma_flush(phys, len);
            data = Some((phys, len));
        }
        let result = self.admin_blocking(cmd);
        if let (Some((phys, len)), false) = (data, matches!(result, Err(Error::Quarantined))) {
            self.shared.platform.dma_invalidate(phys, len);
        }
        result
    }
}
