//! A namespace handle: what I/O on one namespace needs, validated once.

use crate::error::{Error, Result};
use crate::event::ControllerId;
use crate::nvme::identify::NamespaceInfo;
use crate::nvme::{Namespace, State};

/// One namespace of one controller, as it was when the handle was made:
/// its controller, namespace ID, block size, capacity, largest transfer and
/// the controller's attach generation.
///
/// I/O through a handle checks it against the controller first (a few
/// comparisons, no device access): once the controller is removed, failed or
/// detached, its driver entry was reused by a new attach (even of the same
/// device in the same slot: the generation differs), or the namespace
/// changed (gone, or reading differently after a reset: format, size,
/// EUI-64), the handle fails with
/// [`Error::StaleHandle`]. A new handle must then be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NamespaceHandle {
    controller: Option<ControllerId>,
    /// What Identify Namespace said when the handle was made: a namespace
    /// that reads differently after a reset (another format or size,
    /// another EUI-64) is not the one the handle was made for.
    info: NamespaceInfo,
    max_transfer: u32,
    /// The controller's namespace list when the handle was made (see
    /// `Controller::namespace_stamp`) and the namespace's place in it: while
    /// the stamp holds, the place holds, and the check is two comparisons.
    stamp: u32,
    slot: u16,
}

impl NamespaceHandle {
    /// A handle on `ns` of a serving controller (`controller` is `None` for a
    /// controller used without the driver).
    pub(crate) fn new(
        controller: Option<ControllerId>,
        state: State,
        ns: &Namespace,
        max_transfer: u32,
        (stamp, slot): (u32, u16),
    ) -> Result<Self> {
        if state != State::Ready {
            return Err(Error::NotReady);
        }
        Ok(Self {
            controller,
            info: ns.info,
            max_transfer,
            stamp,
            slot,
        })
    }

    /// The namespace list stamp and the namespace's place in that list.
    #[inline(always)]
    pub(crate) fn place(&self) -> (u32, u16) {
        (self.stamp, self.slot)
    }

    /// The controller, as the driver names it; `None` for a controller used
    /// without the driver.
    pub fn controller(&self) -> Option<ControllerId> {
        self.controller
    }

    /// The namespace ID.
    pub fn nsid(&self) -> u32 {
        self.info.nsid
    }

    /// Logical block size in bytes (a power of two, 512 to 64 KiB).
    pub fn block_size(&self) -> u32 {
        1 << self.info.block_shift
    }

    /// log2 of the block size.
    pub fn block_shift(&self) -> u8 {
        self.info.block_shift
    }

    /// Capacity in logical blocks.
    pub fn blocks(&self) -> u64 {
        self.info.blocks
    }

    /// Largest transfer one command carries, in bytes; larger requests are
    /// split.
    pub fn max_transfer(&self) -> u32 {
        self.max_transfer
    }

    /// The controller's attach generation (0 for a controller used without
    /// the driver).
    pub fn generation(&self) -> u32 {
        self.controller.map_or(0, |c| c.generation())
    }

    /// `Ok` if the controller, now serving, still serves this namespace as
    /// it was when the handle was made; else `StaleHandle`.
    pub(crate) fn check(&self, ns: Option<&Namespace>) -> Result<()> {
        match ns {
            Some(ns) if ns.info == self.info => Ok(()),
            _ => Err(Error::StaleHandle),
        }
    }
}
