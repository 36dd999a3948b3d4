//! Admin commands a caller builds (vendor-specific ones, Namespace
//! Attachment, ...), with a caller buffer, blocking.
//!
//! The driver knows how many bytes each standard admin command moves
//! ([`crate::spec::admin_data`]) and refuses a buffer shorter than that, so
//! the device never writes past the caller's memory. A command whose length
//! the specification leaves to the vendor is only sent by
//! [`Controller::admin_passthrough_unchecked`], an `unsafe fn`: its caller
//! vouches for the length.
//!
//! Commands that would break what the driver relies on are refused without
//! reaching the device (see [`refusal`]).

use crate::error::{Error, Result};
use crate::link::DeviceLink;
use crate::nvme::command::{admin, feature, SubmissionEntry};
use crate::nvme::controller::Controller;
use crate::nvme::prp::{self, PAGE_SIZE};
use crate::platform::{DmaRegion, Platform};
use crate::spec::admin_data::{admin_data, AdminData};

/// Why the driver refuses to pass `sqe` through, if it does: the command
/// would change queues, outstanding commands or the served namespaces
/// behind the driver's back, or hand the device memory the driver does not
/// own.
///
/// - Queue creation and deletion, Abort, Asynchronous Event Request,
///   Doorbell Buffer Config, Virtualization Management, Set Features Number
///   of Queues: the driver's own queue management.
/// - Set Features Host Memory Buffer with EHM = 1: the device would keep
///   using host memory chosen by the caller after the driver's teardown
///   returned it.
/// - Set Features Keep Alive Timer to a non-zero time: the driver sends no
///   Keep Alive, so the controller would fail.
/// - Set Features Asynchronous Event Configuration: the driver relies on
///   the notices it enabled (a namespace attached or detached, by this host
///   or another, is followed up from its Namespace Attribute Notice).
/// - Format NVM, Sanitize, Namespace Management, and Firmware Commit with
///   an activation (commit actions 001b, 010b, 011b and the reserved
///   100b, 101b): they change the block size, the data or the controller
///   under namespaces the driver serves, with handles and block devices
///   still holding the old geometry. The driver does not follow them with
///   a re-identify because a served namespace's geometry is fixed for the
///   life of its handles; such maintenance belongs before bring-up or with
///   the controller detached.
///
/// Namespace Attachment passes: it changes no namespace's geometry, and the
/// driver follows the Namespace Attribute Notice it raises (the handles of
/// a namespace detached go stale).
pub fn refusal(sqe: &SubmissionEntry) -> Option<&'static str> {
    match sqe.opcode() {
        admin::DELETE_SQ
        | admin::CREATE_SQ
        | admin::DELETE_CQ
        | admin::CREATE_CQ
        | admin::ABORT
        | admin::ASYNC_EVENT_REQUEST
        | admin::DOORBELL_BUFFER_CONFIG
        | admin::VIRTUALIZATION_MANAGEMENT => {
            Some("admin opcode reserved to the driver's queue management")
        }
        admin::SET_FEATURES => match sqe.cdw10 & 0xFF {
            feature::NUMBER_OF_QUEUES => {
                Some("admin opcode reserved to the driver's queue management")
            }
            feature::HOST_MEMORY_BUFFER if sqe.cdw11 & 1 == 1 => {
                Some("a host memory buffer the driver does not own")
            }
            feature::KEEP_ALIVE_TIMER if sqe.cdw11 != 0 => {
                Some("a keep alive timer the driver does not serve")
            }
            feature::ASYNC_EVENT_CONFIG => {
                Some("the driver's own asynchronous event configuration")
            }
            _ => None,
        },
        admin::FORMAT_NVM | admin::SANITIZE | admin::NAMESPACE_MANAGEMENT => {
            Some("a command that changes served namespaces under their handles")
        }
        // Commit Action (CDW10 5:3): 000b replaces an image without
        // activating it; 110b and 111b act on boot partitions.
        admin::FIRMWARE_COMMIT => match (sqe.cdw10 >> 3) & 0x7 {
            0b000 | 0b110 | 0b111 => None,
            _ => Some("a firmware activation under the served namespaces"),
        },
        _ => None,
    }
}

/// `InvalidArgument` with the reason if `sqe` is refused.
fn refuse(sqe: &SubmissionEntry) -> Result<()> {
    match refusal(sqe) {
        Some(what) => Err(Error::InvalidArgument { what }),
        None => Ok(()),
    }
}

impl<P: Platform, L: DeviceLink, const QUEUES: usize, const DEPTH: usize>
    Controller<P, L, QUEUES, DEPTH>
{
    /// Sends the standard admin command `sqe` with `buffer` as its data (at
    /// most two memory pages: the driver builds PRP1 and PRP2), blocking
    /// until it completes; returns completion dword 0. The driver sets the
    /// command identifier, the data pointer and clears the fused and
    /// metadata fields; everything else is the caller's. A command the
    /// controller fails returns `CommandFailed` with its status.
    ///
    /// The driver reads from the command how many bytes it moves (Identify:
    /// 4096; Get Log Page: NUMD; Get / Set Features: the feature's data
    /// structure; Firmware Image Download, Directive Send / Receive: NUMD;
    /// Security Send / Receive: the transfer length; ...) and refuses a
    /// buffer shorter than that ([`Error::BufferTooSmall`], no buffer
    /// counting as 0 bytes). A command whose length the specification does
    /// not define (vendor-specific opcodes and feature identifiers) is
    /// refused with `InvalidArgument`: send it with
    /// [`Controller::admin_passthrough_unchecked`]. Commands in [`refusal`]
    /// are refused with `InvalidArgument` on both paths.
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
        refuse(&sqe)?;
        let needed =
            match admin_data(&sqe) {
                AdminData::None => 0,
                AdminData::Bytes(bytes) => bytes,
                AdminData::Unknown => return Err(Error::InvalidArgument {
                    what:
                        "admin command of unknown transfer length: see admin_passthrough_unchecked",
                }),
            };
        let got = buffer.as_ref().map_or(0, |b| b.len());
        if got < needed {
            return Err(Error::BufferTooSmall { needed, got });
        }
        self.passthrough(sqe, buffer)
    }

    /// Like [`Controller::admin_passthrough`], for a command whose transfer
    /// length the driver cannot know (a vendor-specific opcode or feature):
    /// the buffer's length is not checked against the command.
    ///
    /// # Safety
    ///
    /// The device writes or reads as many bytes as the command says, from
    /// the start of `buffer`: the caller guarantees that `sqe` moves at most
    /// `buffer.len()` bytes (none without a buffer), that it moves data only
    /// through PRP1 and PRP2, and that it does not otherwise make the device
    /// reach host memory (a command that names memory of its own in other
    /// dwords). Otherwise the device may write memory that is not the
    /// buffer's.
    pub unsafe fn admin_passthrough_unchecked(
        &mut self,
        sqe: SubmissionEntry,
        buffer: Option<&mut DmaRegion>,
    ) -> Result<u32> {
        refuse(&sqe)?;
        if let AdminData::Bytes(needed) = admin_data(&sqe) {
            // Known after all: the check costs nothing.
            let got = buffer.as_ref().map_or(0, |b| b.len());
            if got < needed {
                return Err(Error::BufferTooSmall { needed, got });
            }
        }
        self.passthrough(sqe, buffer)
    }

    /// Sends `sqe` with `buffer`, both already checked.
    fn passthrough(&mut self, sqe: SubmissionEntry, buffer: Option<&mut DmaRegion>) -> Result<u32> {
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
