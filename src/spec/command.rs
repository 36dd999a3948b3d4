//! Submission and completion queue entries and the status they carry
//! (NVMe Base Specification 2.0, sections 4.2 and 4.6).

use core::fmt;

use crate::spec::bits::Field;

/// Admin command opcodes used by the driver.
pub mod admin {
    /// Delete I/O Submission Queue.
    pub const DELETE_SQ: u8 = 0x00;
    /// Create I/O Submission Queue.
    pub const CREATE_SQ: u8 = 0x01;
    /// Get Log Page.
    pub const GET_LOG_PAGE: u8 = 0x02;
    /// Delete I/O Completion Queue.
    pub const DELETE_CQ: u8 = 0x04;
    /// Create I/O Completion Queue.
    pub const CREATE_CQ: u8 = 0x05;
    /// Identify.
    pub const IDENTIFY: u8 = 0x06;
    /// Abort.
    pub const ABORT: u8 = 0x08;
    /// Set Features.
    pub const SET_FEATURES: u8 = 0x09;
    /// Get Features.
    pub const GET_FEATURES: u8 = 0x0A;
    /// Asynchronous Event Request.
    pub const ASYNC_EVENT_REQUEST: u8 = 0x0C;
    /// Namespace Management (creates and deletes namespaces).
    pub const NAMESPACE_MANAGEMENT: u8 = 0x0D;
    /// Firmware Commit.
    pub const FIRMWARE_COMMIT: u8 = 0x10;
    /// Firmware Image Download.
    pub const FIRMWARE_IMAGE_DOWNLOAD: u8 = 0x11;
    /// Device Self-test.
    pub const DEVICE_SELF_TEST: u8 = 0x14;
    /// Namespace Attachment.
    pub const NAMESPACE_ATTACHMENT: u8 = 0x15;
    /// Keep Alive.
    pub const KEEP_ALIVE: u8 = 0x18;
    /// Directive Send.
    pub const DIRECTIVE_SEND: u8 = 0x19;
    /// Directive Receive.
    pub const DIRECTIVE_RECEIVE: u8 = 0x1A;
    /// Capacity Management.
    pub const CAPACITY_MANAGEMENT: u8 = 0x20;
    /// Lockdown.
    pub const LOCKDOWN: u8 = 0x24;
    /// Format NVM.
    pub const FORMAT_NVM: u8 = 0x80;
    /// Security Send.
    pub const SECURITY_SEND: u8 = 0x81;
    /// Security Receive.
    pub const SECURITY_RECEIVE: u8 = 0x82;
    /// Sanitize.
    pub const SANITIZE: u8 = 0x84;
    /// Get LBA Status.
    pub const GET_LBA_STATUS: u8 = 0x86;
    /// First vendor-specific admin opcode (C0h to FFh).
    pub const VENDOR_FIRST: u8 = 0xC0;
    /// Virtualization Management (moves queue resources between controllers).
    pub const VIRTUALIZATION_MANAGEMENT: u8 = 0x1C;
    /// Doorbell Buffer Config (shadow doorbells).
    pub const DOORBELL_BUFFER_CONFIG: u8 = 0x7C;
}

/// NVM command set opcodes used by the driver.
pub mod nvm {
    /// Flush.
    pub const FLUSH: u8 = 0x00;
    /// Write.
    pub const WRITE: u8 = 0x01;
    /// Read.
    pub const READ: u8 = 0x02;
    /// Write Zeroes.
    pub const WRITE_ZEROES: u8 = 0x08;
    /// Dataset Management (deallocate).
    pub const DATASET_MANAGEMENT: u8 = 0x09;
    /// Read and Write CDW12 bit 30: Force Unit Access (the data reaches
    /// non-volatile media before the command completes).
    pub const FUA: u32 = 1 << 30;
    /// Read, Write and Write Zeroes CDW12 bits 15:0: Number of Logical
    /// Blocks, 0-based.
    pub const NLB: super::Field = super::Field::new(0, 16);
}

/// Fields of command dword 0 (NVMe Base Specification 2.0, figure "Command
/// Dword 0").
pub mod cdw0 {
    use super::Field;

    /// Opcode (7:0).
    pub const OPCODE: Field = Field::new(0, 8);
    /// Fused operation (9:8).
    pub const FUSE: Field = Field::new(8, 2);
    /// PRP or SGL for data transfer (15:14).
    pub const PSDT: Field = Field::new(14, 2);
    /// Command identifier (31:16).
    pub const CID: Field = Field::new(16, 16);
}

/// Fields of the queue management commands' dwords (NVMe Base
/// Specification 2.0, "Create I/O Completion Queue", "Create I/O Submission
/// Queue", "Abort", "Number of Queues").
pub mod queue_fields {
    use super::Field;

    /// Create I/O CQ/SQ dword 10: queue identifier (15:0).
    pub const QID: Field = Field::new(0, 16);
    /// Create I/O CQ/SQ dword 10: queue size, 0-based (31:16).
    pub const QSIZE: Field = Field::new(16, 16);
    /// Create I/O CQ/SQ dword 11: physically contiguous (0).
    pub const PC: Field = Field::new(0, 1);
    /// Create I/O CQ dword 11: interrupts enabled (1).
    pub const IEN: Field = Field::new(1, 1);
    /// Create I/O SQ dword 11: the completion queue it posts to (31:16).
    pub const CQID: Field = Field::new(16, 16);
    /// Abort dword 10: the submission queue of the command (15:0).
    pub const ABORT_SQID: Field = Field::new(0, 16);
    /// Abort dword 10: the command identifier (31:16).
    pub const ABORT_CID: Field = Field::new(16, 16);
    /// Number of Queues dword 11 and completion dword 0: submission queues,
    /// 0-based (15:0).
    pub const NSQ: Field = Field::new(0, 16);
    /// Number of Queues dword 11 and completion dword 0: completion queues,
    /// 0-based (31:16).
    pub const NCQ: Field = Field::new(16, 16);
}

/// Fields of the completion status field, the CQE's status word without its
/// phase tag (NVMe Base Specification 2.0, figure "Completion Queue Entry:
/// Status Field").
pub mod status_field {
    use super::Field;

    /// Status code (7:0).
    pub const SC: Field = Field::new(0, 8);
    /// Status code type (10:8).
    pub const SCT: Field = Field::new(8, 3);
    /// Command retry delay (12:11).
    pub const CRD: Field = Field::new(11, 2);
    /// More (13).
    pub const MORE: Field = Field::new(13, 1);
    /// Do not retry (14).
    pub const DNR: Field = Field::new(14, 1);
}

/// Identify CNS values.
pub mod cns {
    /// Identify Namespace.
    pub const NAMESPACE: u32 = 0x00;
    /// Identify Controller.
    pub const CONTROLLER: u32 = 0x01;
    /// Active Namespace ID list.
    pub const ACTIVE_NAMESPACES: u32 = 0x02;
    /// Namespace Identification Descriptor list (NVMe 1.3 and later).
    pub const NAMESPACE_DESCRIPTORS: u32 = 0x03;
}

/// Feature identifiers.
pub mod feature {
    /// LBA Range Type.
    pub const LBA_RANGE_TYPE: u32 = 0x03;
    /// Autonomous Power State Transition.
    pub const AUTONOMOUS_POWER_STATE: u32 = 0x0C;
    /// Host Memory Buffer.
    pub const HOST_MEMORY_BUFFER: u32 = 0x0D;
    /// Timestamp.
    pub const TIMESTAMP: u32 = 0x0E;
    /// Keep Alive Timer.
    pub const KEEP_ALIVE_TIMER: u32 = 0x0F;
    /// Predictable Latency Mode Config.
    pub const PREDICTABLE_LATENCY_CONFIG: u32 = 0x13;
    /// Host Behavior Support.
    pub const HOST_BEHAVIOR_SUPPORT: u32 = 0x16;
    /// Enhanced Controller Metadata.
    pub const ENHANCED_CONTROLLER_METADATA: u32 = 0x7D;
    /// Controller Metadata.
    pub const CONTROLLER_METADATA: u32 = 0x7E;
    /// Namespace Metadata.
    pub const NAMESPACE_METADATA: u32 = 0x7F;
    /// Host Identifier.
    pub const HOST_IDENTIFIER: u32 = 0x81;
    /// Temperature Threshold.
    pub const TEMPERATURE_THRESHOLD: u32 = 0x04;
    /// Volatile Write Cache.
    pub const VOLATILE_WRITE_CACHE: u32 = 0x06;
    /// Asynchronous Event Configuration.
    pub const ASYNC_EVENT_CONFIG: u32 = 0x0B;
    /// Number of Queues.
    pub const NUMBER_OF_QUEUES: u32 = 0x07;
}

/// A submission queue entry: 64 bytes, laid out as the controller reads it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct SubmissionEntry {
    /// Opcode (7:0), fused (9:8), PSDT (15:14), command identifier (31:16).
    pub cdw0: u32,
    /// Namespace identifier.
    pub nsid: u32,
    /// Command dword 2.
    pub cdw2: u32,
    /// Command dword 3.
    pub cdw3: u32,
    /// Metadata pointer.
    pub mptr: u64,
    /// PRP entry 1.
    pub prp1: u64,
    /// PRP entry 2 (a second page or a PRP list).
    pub prp2: u64,
    /// Command dword 10.
    pub cdw10: u32,
    /// Command dword 11.
    pub cdw11: u32,
    /// Command dword 12.
    pub cdw12: u32,
    /// Command dword 13.
    pub cdw13: u32,
    /// Command dword 14.
    pub cdw14: u32,
    /// Command dword 15.
    pub cdw15: u32,
}

const _: () = assert!(core::mem::size_of::<SubmissionEntry>() == 64);

impl SubmissionEntry {
    /// An entry with the given opcode and everything else zero.
    pub const fn new(opcode: u8) -> Self {
        Self {
            cdw0: cdw0::OPCODE.of(opcode as u32),
            nsid: 0,
            cdw2: 0,
            cdw3: 0,
            mptr: 0,
            prp1: 0,
            prp2: 0,
            cdw10: 0,
            cdw11: 0,
            cdw12: 0,
            cdw13: 0,
            cdw14: 0,
            cdw15: 0,
        }
    }

    /// The opcode.
    pub const fn opcode(&self) -> u8 {
        cdw0::OPCODE.get(self.cdw0) as u8
    }

    /// The command identifier.
    pub const fn cid(&self) -> u16 {
        cdw0::CID.get(self.cdw0) as u16
    }

    /// Sets the command identifier.
    pub fn set_cid(&mut self, cid: u16) {
        self.cdw0 = cdw0::CID.set(self.cdw0, cid as u32);
    }

    /// The starting LBA of an NVM command (CDW10/11).
    pub const fn slba(&self) -> u64 {
        split_u64::join(self.cdw10, self.cdw11)
    }

    /// Sets the starting LBA and the block count (1-based) of an NVM command.
    pub fn set_lba_range(&mut self, slba: u64, blocks: u16) {
        (self.cdw10, self.cdw11) = split_u64::split(slba);
        self.cdw12 = nvm::NLB.set(self.cdw12, (blocks as u32).wrapping_sub(1));
    }
}

/// A 64-bit value carried in two consecutive dwords, low dword first (a
/// starting LBA in CDW10/11, a PRP entry).
pub mod split_u64 {
    /// The low and the high dword of `value`.
    pub const fn split(value: u64) -> (u32, u32) {
        (value as u32, (value >> 32) as u32)
    }

    /// The value of `low` and `high`.
    pub const fn join(low: u32, high: u32) -> u64 {
        low as u64 | (high as u64) << 32
    }
}

/// A completion queue entry: 16 bytes, as the controller posts it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct CompletionEntry {
    /// Command specific dword 0.
    pub dw0: u32,
    /// Command specific dword 1.
    pub dw1: u32,
    /// Submission queue head pointer.
    pub sq_head: u16,
    /// Submission queue identifier.
    pub sq_id: u16,
    /// Command identifier.
    pub cid: u16,
    /// Phase tag (bit 0) and status field (15:1).
    pub status: u16,
}

const _: () = assert!(core::mem::size_of::<CompletionEntry>() == 16);

impl CompletionEntry {
    /// The phase tag.
    pub const fn phase(&self) -> bool {
        self.status & 1 != 0
    }

    /// The decoded status.
    pub const fn status(&self) -> Status {
        Status::from_field(self.status >> 1)
    }
}

/// Status code types.
pub mod sct {
    /// Generic command status.
    pub const GENERIC: u8 = 0;
    /// Command specific status.
    pub const COMMAND_SPECIFIC: u8 = 1;
    /// Media and data integrity errors.
    pub const MEDIA: u8 = 2;
    /// Path related status.
    pub const PATH: u8 = 3;
}

/// Selected generic status codes (status code type [`sct::GENERIC`]).
pub mod sc {
    /// Successful completion.
    pub const SUCCESS: u8 = 0x00;
    /// Invalid command opcode.
    pub const INVALID_OPCODE: u8 = 0x01;
    /// Invalid field in command.
    pub const INVALID_FIELD: u8 = 0x02;
    /// Data transfer error.
    pub const DATA_TRANSFER_ERROR: u8 = 0x04;
    /// Internal error.
    pub const INTERNAL_ERROR: u8 = 0x06;
    /// Command abort requested.
    pub const ABORT_REQUESTED: u8 = 0x07;
    /// Command aborted due to SQ deletion.
    pub const ABORTED_SQ_DELETION: u8 = 0x08;
    /// Invalid namespace or format.
    pub const INVALID_NAMESPACE: u8 = 0x0B;
    /// LBA out of range.
    pub const LBA_OUT_OF_RANGE: u8 = 0x80;

    /// Selected media and data integrity status codes (status code type
    /// [`super::sct::MEDIA`]): the same values mean other things there.
    pub mod media {
        /// Write fault.
        pub const WRITE_FAULT: u8 = 0x80;
        /// Unrecovered read error.
        pub const UNRECOVERED_READ_ERROR: u8 = 0x81;
    }
}

/// A decoded NVMe completion status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Status {
    /// Status code type.
    pub sct: u8,
    /// Status code.
    pub sc: u8,
    /// Command retry delay index.
    pub crd: u8,
    /// More information in the error log.
    pub more: bool,
    /// Do not retry.
    pub dnr: bool,
}

impl Status {
    /// Decodes the 15-bit status field (the CQE status word shifted right by one).
    pub const fn from_field(field: u16) -> Self {
        let field = field as u32;
        Self {
            sc: status_field::SC.get(field) as u8,
            sct: status_field::SCT.get(field) as u8,
            crd: status_field::CRD.get(field) as u8,
            more: status_field::MORE.is_set(field),
            dnr: status_field::DNR.is_set(field),
        }
    }

    /// Encodes the status back into a 15-bit field.
    pub const fn to_field(self) -> u16 {
        let field = status_field::SC.of(self.sc as u32)
            | status_field::SCT.of(self.sct as u32)
            | status_field::CRD.of(self.crd as u32)
            | status_field::MORE.of(self.more as u32)
            | status_field::DNR.of(self.dnr as u32);
        field as u16
    }

    /// A status of the given type and code.
    pub const fn new(sct: u8, sc: u8) -> Self {
        Self {
            sct,
            sc,
            crd: 0,
            more: false,
            dnr: false,
        }
    }

    /// Whether the command succeeded.
    pub const fn is_success(self) -> bool {
        self.sct == sct::GENERIC && self.sc == sc::SUCCESS
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.sct {
            sct::GENERIC => "generic",
            sct::COMMAND_SPECIFIC => "command-specific",
            sct::MEDIA => "media",
            sct::PATH => "path",
            _ => "vendor",
        };
        write!(f, "{kind} status {:#04x}", self.sc)?;
        if self.dnr {
            write!(f, " (do not retry)")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_roundtrips() {
        let s = Status {
            sct: 2,
            sc: 0x81,
            crd: 1,
            more: true,
            dnr: true,
        };
        assert_eq!(Status::from_field(s.to_field()), s);
    }

    #[test]
    fn cid_and_lba_fields() {
        let mut e = SubmissionEntry::new(nvm::READ);
        e.set_cid(0xBEEF);
        e.set_lba_range(0x1_2345_6789, 8);
        assert_eq!(e.opcode(), nvm::READ);
        assert_eq!(e.cid(), 0xBEEF);
        assert_eq!(e.slba(), 0x1_2345_6789);
        assert_eq!(e.cdw12 & 0xFFFF, 7);
    }
}
