//! Input checks, and the errors a refused command or a failed one yields.
//! The error builders are cold: only a caller mistake or a device failure
//! gets there.

use crate::error::{Error, Result};
use crate::nvme::command::{sc, sct};
use crate::nvme::tracker::Taken;

/// The queue pair knows its NVMe queue ID; the caller knows the index.
#[cold]
pub(super) fn queue_error(error: Error, queue: u16) -> Error {
    match error {
        Error::QueueFull { .. } => Error::QueueFull { queue },
        other => other,
    }
}

#[cold]
pub(super) fn unknown_queue(queue: u16) -> Error {
    Error::UnknownQueue { queue }
}

/// Why a block range was refused (cold: only a caller mistake gets here).
#[cold]
pub(super) fn bad_blocks(lba: u64, blocks: u32, capacity: u64, max: u32) -> Error {
    match check_blocks(lba, blocks, capacity, max) {
        Err(e) => e,
        Ok(()) => Error::Internal {
            what: "block range refused and accepted",
        },
    }
}

/// Why a buffer was refused (a missing one has length 0).
#[cold]
pub(super) fn bad_buffer(addr: u64, needed: usize, got: usize) -> Error {
    if got < needed {
        Error::BufferTooSmall { needed, got }
    } else {
        Error::BufferMisaligned { addr, required: 4 }
    }
}

/// The error of a command the device completed with status field `status`
/// (not 0). Takes the numbers, not the completion: nothing of the hot path
/// has its address taken, so the completion need not be built in memory.
#[cold]
#[inline(never)]
pub(super) fn device_failure(
    status: u16,
    opcode: u8,
    io_timeout: core::time::Duration,
) -> Result<()> {
    aborted_means_timeout(Taken::failure(status, opcode), io_timeout)
}

/// The driver sends Abort only for commands past their deadline, so a command
/// that ended with "Command Abort Requested" timed out.
pub(super) fn aborted_means_timeout(
    result: Result<u32>,
    io_timeout: core::time::Duration,
) -> Result<()> {
    match result {
        Err(Error::CommandFailed { status, .. })
            if status.sct == sct::GENERIC && status.sc == sc::ABORT_REQUESTED =>
        {
            Err(Error::timeout(crate::error::Wait::IoCommand, io_timeout))
        }
        r => r.map(|_| ()),
    }
}

pub(super) fn check_range(lba: u64, blocks: u64, capacity: u64) -> Result<()> {
    match lba.checked_add(blocks) {
        Some(end) if end <= capacity => Ok(()),
        _ => Err(Error::LbaOutOfRange {
            lba,
            blocks,
            capacity,
        }),
    }
}

pub(super) fn check_blocks(lba: u64, blocks: u32, capacity: u64, max: u32) -> Result<()> {
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
