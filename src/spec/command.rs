//! Submission and completion queue entries and the status they carry
//! (NVMe Base Specification 2.0, sections 4.2 and 4.6).

use core::fmt;

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
    /// Namespace Attachment.
    pub const NAMESPACE_ATTACHMENT: u8 = 0x15;
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
            cdw0: opcode as u32,
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
        self.cdw0 as u8
    }

    /// The command identifier.
    pub const fn cid(&self) -> u16 {
        (self.cdw0 >> 16) as u16
    }

    /// Sets the command identifier.
    pub fn set_cid(&mut self, cid: u16) {
        self.cdw0 = (self.cdw0 & 0xFFFF) | ((cid as u32) << 16);
    }

    /// The starting LBA of an NVM command (CDW10/11).
    pub const fn slba(&self) -> u64 {
        self.cdw10 as u64 | ((self.cdw11 as u64) << 32)
    }

    /// Sets the starting LBA and the block count (1-based) of an NVM command.
    pub fn set_lba_range(&mut self, slba: u64, blocks: u16) {
        self.cdw10 = slba as u32;
        self.cdw11 = (slba >> 32) as u32;
        self.cdw12 = (self.cdw12 & !0xFFFF) | (blocks as u32).wrapping_sub(1) & 0xFFFF;
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
        Self {
            sc: field as u8,
            sct: ((field >> 8) & 0x7) as u8,
            crd: ((field >> 11) & 0x3) as u8,
            more: field & (1 << 13) != 0,
            dnr: field & (1 << 14) != 0,
        }
    }

    /// Encodes the status back into a 15-bit field.
    pub const fn to_field(self) -> u16 {
        self.sc as u16
            | ((self.sct as u16 & 0x7) << 8)
            | ((self.crd as u16 & 0x3) << 11)
            | ((self.more as u16) << 13)
            | ((self.dnr as u16) << 14)
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
