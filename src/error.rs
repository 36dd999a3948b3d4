//! The one error type of the driver.

use core::fmt;

use crate::spec::command::Status;

/// What the driver was waiting for when a deadline passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// CSTS.RDY to become 0 after clearing CC.EN.
    Disable,
    /// CSTS.RDY to become 1 after setting CC.EN.
    Enable,
    /// CSTS.SHST to report shutdown complete.
    Shutdown,
    /// An admin command's completion.
    AdminCommand,
    /// An I/O command's completion.
    IoCommand,
}

/// Every way a driver call can fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    // ---- caller mistakes: nothing was submitted ----
    /// A buffer's device address is not aligned as required.
    BufferMisaligned {
        /// The buffer's physical address.
        addr: u64,
        /// The required alignment in bytes.
        required: u32,
    },
    /// A buffer is shorter than the transfer needs.
    BufferTooSmall {
        /// Bytes the transfer needs.
        needed: usize,
        /// Bytes the buffer has.
        got: usize,
    },
    /// A transfer longer than one command may carry (use the blocking wrappers,
    /// which split).
    TransferTooLarge {
        /// Blocks asked for.
        blocks: u64,
        /// Most blocks one command may carry.
        max: u32,
    },
    /// A transfer of zero blocks.
    EmptyTransfer,
    /// The LBA range does not fit in the namespace.
    LbaOutOfRange {
        /// First LBA asked for.
        lba: u64,
        /// Number of blocks asked for.
        blocks: u64,
        /// Namespace size in blocks.
        capacity: u64,
    },
    /// No such active namespace on this controller, or one the driver
    /// refused to serve (`Controller::refused_namespaces` says why).
    UnknownNamespace {
        /// The namespace ID asked for.
        nsid: u32,
    },
    /// No such I/O queue.
    UnknownQueue {
        /// The queue index asked for.
        queue: u16,
    },
    /// The submission queue has no free slot; poll for completions first.
    QueueFull {
        /// The queue index.
        queue: u16,
    },
    /// The controller does not support the operation (ONCS, VWC, ...).
    Unsupported {
        /// What is missing.
        what: &'static str,
    },
    /// The handle or token refers to a controller that has since been removed,
    /// detached or replaced.
    StaleHandle,
    /// The controller is not in a state that serves this call (still coming up,
    /// resetting, being removed).
    NotReady,
    /// A fixed capacity of the driver is exhausted.
    CapacityExceeded {
        /// Which capacity.
        what: &'static str,
        /// Its limit.
        limit: u32,
    },
    /// A caller-supplied parameter is out of its range.
    InvalidArgument {
        /// Which parameter.
        what: &'static str,
    },

    // ---- the platform ----
    /// The platform could not provide DMA memory.
    OutOfDmaMemory {
        /// Bytes asked for.
        bytes: usize,
    },
    /// The platform could not map a BAR.
    MapFailed {
        /// The BAR's physical address.
        addr: u64,
    },

    // ---- the device ----
    /// The controller completed a command with an error status.
    CommandFailed {
        /// The decoded NVMe status.
        status: Status,
        /// The opcode of the failed command.
        opcode: u8,
    },
    /// A deadline passed.
    Timeout {
        /// What was awaited.
        what: Wait,
        /// How long the driver waited, in milliseconds.
        after_ms: u32,
    },
    /// The device is gone (surprise removal or an emptied slot).
    DeviceRemoved,
    /// The controller reported a fatal status or could not be recovered.
    ControllerFailed,
    /// The command was aborted because its controller is being reset, detached
    /// or removed in an orderly way.
    Aborted,
    /// A driver invariant did not hold: a defect of the driver, neither the
    /// caller's nor the device's doing. Nothing was sent to the device.
    Internal {
        /// Which invariant.
        what: &'static str,
    },
    /// A blocking call's command ended with its controller, and the device
    /// could not be proven unable to reach memory: the buffer the call
    /// borrowed may still be written by the device. Do not reuse or free it
    /// (leak it); the controller's other memory is quarantined the same way.
    Quarantined,
    /// A value read from the device is out of its valid range.
    BadDeviceValue {
        /// The register or data structure field.
        field: &'static str,
        /// The value read.
        value: u64,
    },
    /// The device lacks something the driver requires.
    DeviceUnsupported {
        /// What is missing.
        what: &'static str,
    },
}

impl Error {
    /// A timeout while waiting for `what` after `waited`.
    pub fn timeout(what: Wait, waited: core::time::Duration) -> Self {
        Error::Timeout {
            what,
            after_ms: waited.as_millis().min(u32::MAX as u128) as u32,
        }
    }

    /// Whether the error means the device can no longer be used at all.
    pub fn is_fatal(&self) -> bool {
        matches!(self, Error::DeviceRemoved | Error::ControllerFailed)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::BufferMisaligned { addr, required } => {
                write!(f, "buffer at {addr:#x} is not {required}-byte aligned")
            }
            Error::BufferTooSmall { needed, got } => {
                write!(f, "buffer of {got} bytes, transfer needs {needed}")
            }
            Error::TransferTooLarge { blocks, max } => {
                write!(
                    f,
                    "{blocks} blocks exceed the {max}-block limit of one command"
                )
            }
            Error::EmptyTransfer => write!(f, "transfer of zero blocks"),
            Error::LbaOutOfRange {
                lba,
                blocks,
                capacity,
            } => write!(
                f,
                "LBA {lba} + {blocks} blocks past the namespace end ({capacity} blocks)"
            ),
            Error::UnknownNamespace { nsid } => write!(f, "no active namespace {nsid}"),
            Error::UnknownQueue { queue } => write!(f, "no I/O queue {queue}"),
            Error::QueueFull { queue } => write!(f, "I/O queue {queue} is full"),
            Error::Unsupported { what } => write!(f, "controller does not support {what}"),
            Error::StaleHandle => write!(f, "handle refers to a controller that is gone"),
            Error::NotReady => write!(f, "controller is not ready"),
            Error::CapacityExceeded { what, limit } => {
                write!(f, "more than {limit} {what}")
            }
            Error::InvalidArgument { what } => write!(f, "invalid argument: {what}"),
            Error::OutOfDmaMemory { bytes } => write!(f, "no DMA memory for {bytes} bytes"),
            Error::MapFailed { addr } => write!(f, "cannot map registers at {addr:#x}"),
            Error::CommandFailed { status, opcode } => {
                write!(f, "command {opcode:#04x} failed: {status}")
            }
            Error::Timeout { what, after_ms } => {
                write!(f, "timeout after {after_ms} ms waiting for {what:?}")
            }
            Error::DeviceRemoved => write!(f, "device removed"),
            Error::ControllerFailed => write!(f, "controller failed"),
            Error::Aborted => write!(f, "command aborted"),
            Error::Internal { what } => write!(f, "driver invariant broken: {what}"),
            Error::Quarantined => write!(f, "buffer quarantined: the device may still write it"),
            Error::BadDeviceValue { field, value } => {
                write!(f, "device reported invalid {field} = {value:#x}")
            }
            Error::DeviceUnsupported { what } => write!(f, "device lacks {what}"),
        }
    }
}

impl core::error::Error for Error {}

/// Shorthand for results of driver calls.
pub type Result<T> = core::result::Result<T, Error>;
