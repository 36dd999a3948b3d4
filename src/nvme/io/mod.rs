//! Block I/O: split-phase submit and poll, and blocking wrappers on top.
//!
//! The hot path builds the SQE once and stores it into the ring slot with a
//! single 64-byte write, reads no register, rings each doorbell at most once
//! per batch (the SQ doorbell when the caller polls, the CQ head doorbell
//! once per drained batch when a quarter of the ring was consumed) and keeps
//! per-command state in a table indexed by CID. Completions go to the caller
//! straight from the ring, with one table lookup each.
//!
//! This file holds the public I/O types; the code is split by path:
//! `submit` queues a command on the owner's split-phase path, `poll`
//! rings doorbells and delivers completions, `transfer` is the lean read
//! and write path with namespace handles, `blocking` the blocking calls on
//! top, and `checks` the input checks and the errors they yield.

mod blocking;
mod checks;
mod poll;
mod submit;
mod transfer;

pub(crate) use poll::take_finished;
pub(crate) use submit::{prepare_in, Context};
pub(crate) use transfer::{transfer_into, Transfer};

use crate::error::{Error, Result};
use crate::nvme::command::nvm;
#[cfg(doc)]
use crate::nvme::controller::Controller;
use crate::platform::DmaRegion;

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
/// buffer comes back here (`?` does not apply: take `buffer` first, to
/// free it or submit it again, then return `error`).
#[must_use = "a rejected submission carries the caller's buffer"]
#[derive(Debug)]
pub struct Rejected {
    /// Why.
    pub error: Error,
    /// The buffer given to `submit`, handed back.
    pub buffer: Option<DmaRegion>,
}
