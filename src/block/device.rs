//! A blocking block device over ordinary memory: whole blocks from and to
//! `&mut [u8]` / `&[u8]` through a pool of DMA bounce buffers, or straight
//! from and to a caller's [`DmaRegion`] without a copy.
//!
//! A request is moved in pieces, up to one per bounce buffer in flight at
//! once: a write fills a buffer and submits its piece while earlier pieces
//! are still on the device; a read copies a piece out when its commands
//! are done, in request order, and the buffer takes the next piece.

use heapless::Vec;

use crate::block::pipeline::Memory;
use crate::block::target::{BlockTarget, Direction};
use crate::error::{Error, Result};
use crate::event::ControllerId;
use crate::nvme::NamespaceHandle;
use crate::platform::{DmaRegion, Platform};

/// Default size of each bounce buffer: 128 KiB.
pub const DEFAULT_BOUNCE_BYTES: usize = 128 << 10;

/// Default number of bounce buffers: 4, so a large request keeps four
/// pieces in flight.
pub const DEFAULT_BOUNCE_BUFFERS: usize = 4;

/// Most bounce buffers a block device keeps.
pub const MAX_BOUNCE_BUFFERS: usize = 16;

/// Alignment of each bounce buffer: a page, so that a transfer of up to two
/// pages needs no PRP list.
const BOUNCE_ALIGN: usize = 4096;

/// How a [`NamespaceDisk`] moves data between the caller's memory and the
/// device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BounceConfig {
    /// Number of DMA bounce buffers (1 to [`MAX_BOUNCE_BUFFERS`], clamped),
    /// each its own allocation: as many pieces of a request are in flight
    /// at once. Default [`DEFAULT_BOUNCE_BUFFERS`].
    pub buffers: usize,
    /// Size of each bounce buffer, rounded down to whole blocks (at least
    /// one). A request larger than a buffer is moved in pieces of this
    /// size, each split again at the controller's largest transfer.
    /// Default [`DEFAULT_BOUNCE_BYTES`].
    pub bytes: usize,
}

impl Default for BounceConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl BounceConfig {
    /// The defaults (as [`Default`]), usable in a `const` or `static`.
    pub const fn new() -> Self {
        Self {
            buffers: DEFAULT_BOUNCE_BUFFERS,
            bytes: DEFAULT_BOUNCE_BYTES,
        }
    }

    /// Sets [`BounceConfig::buffers`].
    pub const fn buffers(mut self, buffers: usize) -> Self {
        self.buffers = buffers;
        self
    }

    /// Sets [`BounceConfig::bytes`].
    pub const fn bytes(mut self, bytes: usize) -> Self {
        self.bytes = bytes;
        self
    }
}

/// A namespace as a blocking block device.
///
/// `read` and `write` take ordinary memory and copy it through a pool of
/// bounce buffers of DMA memory, allocated from the platform once when the
/// device is made and returned when it is dropped; a large request keeps
/// one piece in flight per buffer. `read_dma` and `write_dma` take the
/// caller's DMA memory and copy nothing (as many commands in flight as
/// there are bounce buffers). Every call validates the whole request
/// (whole blocks, inside the namespace) before the first command, checks
/// the [`NamespaceHandle`] (so it fails with [`Error::StaleHandle`] once
/// the controller is gone or replaced) and returns only when the device is
/// done with every piece, failed ones included: [`Error::Quarantined`] if
/// the device may still reach the memory of any piece (whatever else
/// failed), else the first error of a piece.
///
/// A bounce buffer the device might still write (a call failed with
/// [`Error::Quarantined`]) is never reused nor freed; the device goes on
/// with the others ([`NamespaceDisk::bounce_buffers`]) and fails with
/// [`Error::OutOfDmaMemory`] once none is left.
///
/// The target is a [`crate::Driver`] (the device names its controller by
/// [`ControllerId`]), a standalone [`crate::Controller`], or a `&mut` of
/// either (to keep ticking the driver between calls, drop the device or
/// use [`NamespaceDisk::target`]).
pub struct NamespaceDisk<T: BlockTarget> {
    pub(super) target: T,
    pub(super) handle: NamespaceHandle,
    /// The bounce buffers, `piece` bytes each. `None` where one was
    /// quarantined (the device could not be proven stopped while it held
    /// it): it is never reused or freed.
    pub(super) pool: Vec<Option<DmaRegion>, MAX_BOUNCE_BUFFERS>,
    pub(super) piece: usize,
    pub(super) copied: u64,
    /// What an adapter on top needs of every namespace the device is bound
    /// to (see [`BlockDevice::rebind`]).
    pub(super) needs: Option<Geometry>,
}

/// The geometry an adapter over a block device relies on: checked when it
/// is put on the device and on every later rebind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    /// The only block size it works with.
    pub(crate) block_size: u32,
    /// Fewest blocks the namespace may have (a partition view's end).
    pub(crate) min_blocks: u64,
    /// Why, for the error.
    pub(crate) what: &'static str,
}

impl Geometry {
    /// `InvalidArgument` unless `handle`'s namespace has this geometry.
    fn check(&self, handle: &NamespaceHandle) -> Result<()> {
        if handle.block_size() != self.block_size || handle.blocks() < self.min_blocks {
            return Err(Error::InvalidArgument { what: self.what });
        }
        Ok(())
    }
}

impl<T: BlockTarget> NamespaceDisk<T> {
    /// A block device on namespace `nsid` of `controller` (`None` for a
    /// standalone controller), with bounce buffers as `config` says.
    pub fn open(
        mut target: T,
        controller: Option<ControllerId>,
        nsid: u32,
        config: BounceConfig,
    ) -> Result<Self> {
        let handle = target.namespace_handle(controller, nsid)?;
        Self::with_handle(target, handle, config)
    }

    /// A block device for a handle made earlier (see
    /// [`BlockTarget::namespace_handle`]).
    pub fn with_handle(target: T, handle: NamespaceHandle, config: BounceConfig) -> Result<Self> {
        let block = handle.block_size() as usize;
        let bytes = (config.bytes & !(block - 1)).max(block);
        let mut pool = Vec::new();
        for _ in 0..config.buffers.clamp(1, MAX_BOUNCE_BUFFERS) {
            let Some(region) = target.platform().dma_alloc(bytes, BOUNCE_ALIGN) else {
                // Never lent to the device yet: all go back.
                for region in pool.into_iter().flatten() {
                    target.platform().dma_free(region);
                }
                return Err(Error::OutOfDmaMemory { bytes });
            };
            // Cannot fail: at most MAX_BOUNCE_BUFFERS.
            let _ = pool.push(Some(region));
        }
        Ok(Self {
            target,
            handle,
            pool,
            piece: bytes,
            copied: 0,
            needs: None,
        })
    }

    /// Points the device at another namespace handle of its target (the
    /// namespace of a controller attached again, say), keeping its bounce
    /// buffers. `InvalidArgument` if they are not whole blocks of that
    /// namespace, or if an adapter holds the device (an
    /// `adapters::sdmmc::SdmmcDevice`) and the namespace does not have the
    /// geometry it relies on (512-byte blocks, enough of them for its
    /// partition view): the device then stays on its namespace.
    pub fn rebind(&mut self, handle: NamespaceHandle) -> Result<()> {
        if self.piece & (handle.block_size() as usize - 1) != 0 {
            return Err(Error::InvalidArgument {
                what: "bounce buffers are not whole blocks of that namespace",
            });
        }
        if let Some(needs) = &self.needs {
            needs.check(&handle)?;
        }
        self.handle = handle;
        Ok(())
    }

    /// Makes every later [`BlockDevice::rebind`] keep `needs` (checked on
    /// the namespace now too); `None` lifts it.
    #[cfg_attr(not(feature = "embedded-sdmmc"), allow(dead_code))]
    pub(crate) fn require(&mut self, needs: Option<Geometry>) -> Result<()> {
        if let Some(needs) = &needs {
            needs.check(&self.handle)?;
        }
        self.needs = needs;
        Ok(())
    }

    /// The namespace handle.
    pub fn handle(&self) -> &NamespaceHandle {
        &self.handle
    }

    /// Logical block size in bytes.
    pub fn block_size(&self) -> u32 {
        self.handle.block_size()
    }

    /// Capacity in logical blocks.
    pub fn capacity(&self) -> u64 {
        self.handle.blocks()
    }

    /// Bytes of the bounce buffers still in use: their number times their
    /// size (0 once every one was quarantined).
    pub fn bounce_bytes(&self) -> usize {
        self.bounce_buffers() * self.piece
    }

    /// Bounce buffers still in use (those quarantined are not counted).
    pub fn bounce_buffers(&self) -> usize {
        self.pool.iter().flatten().count()
    }

    /// Bytes copied through the bounce buffers so far (the zero-copy calls
    /// add nothing).
    pub fn bytes_copied(&self) -> u64 {
        self.copied
    }

    /// The target, e.g. to tick the driver between calls.
    pub fn target(&mut self) -> &mut T {
        &mut self.target
    }

    /// Reads `buffer.len()` bytes (whole blocks) at `lba` into `buffer`.
    pub fn read(&mut self, lba: u64, buffer: &mut [u8]) -> Result<()> {
        self.read_with(lba, buffer.len(), |offset, data| {
            buffer[offset..offset + data.len()].copy_from_slice(data)
        })
    }

    /// Writes `buffer` (whole blocks) at `lba`.
    pub fn write(&mut self, lba: u64, buffer: &[u8]) -> Result<()> {
        self.write_with(lba, buffer.len(), |offset, data| {
            data.copy_from_slice(&buffer[offset..offset + data.len()])
        })
    }

    /// Reads `buffer.len()` bytes (whole blocks) at `lba` straight into the
    /// caller's DMA memory. On [`Error::Quarantined`] the buffer may still be
    /// written by the device: leak it.
    pub fn read_dma(&mut self, lba: u64, buffer: &mut DmaRegion) -> Result<()> {
        let (memory, len) = (Memory::Caller(buffer.phys()), buffer.len());
        self.pipeline(lba, len, Direction::Read, memory, |_, _| {}, |_, _| {})
    }

    /// Writes `buffer` (whole blocks) at `lba` straight from the caller's
    /// DMA memory. On [`Error::Quarantined`] the device may still read the
    /// buffer: leak it.
    pub fn write_dma(&mut self, lba: u64, buffer: &DmaRegion) -> Result<()> {
        let (memory, len) = (Memory::Caller(buffer.phys()), buffer.len());
        self.pipeline(lba, len, Direction::Write, memory, |_, _| {}, |_, _| {})
    }

    /// Makes every completed write durable.
    pub fn flush(&mut self) -> Result<()> {
        self.target.flush(&self.handle)
    }

    /// Reads `len` bytes (whole blocks) at `lba` through the bounce buffers,
    /// handing each piece to `sink` with its offset in the request, in
    /// request order.
    pub(crate) fn read_with(
        &mut self,
        lba: u64,
        len: usize,
        sink: impl FnMut(usize, &[u8]),
    ) -> Result<()> {
        self.pipeline(lba, len, Direction::Read, Memory::Bounce, |_, _| {}, sink)
    }

    /// Writes `len` bytes (whole blocks) at `lba` through the bounce
    /// buffers, asking `source` to fill each piece, given its offset in the
    /// request, in request order.
    pub(crate) fn write_with(
        &mut self,
        lba: u64,
        len: usize,
        source: impl FnMut(usize, &mut [u8]),
    ) -> Result<()> {
        self.pipeline(
            lba,
            len,
            Direction::Write,
            Memory::Bounce,
            source,
            |_, _| {},
        )
    }

    /// Reads `len` bytes (whole blocks, at most one bounce buffer) at `lba`,
    /// lets `change` modify them in the bounce buffer and writes them back:
    /// a read-modify-write for writes of less than a block.
    #[cfg_attr(not(feature = "embedded-io"), allow(dead_code))]
    pub(crate) fn update(
        &mut self,
        lba: u64,
        len: usize,
        change: impl FnOnce(&mut [u8]),
    ) -> Result<()> {
        self.blocks_of(lba, len)?;
        if len > self.piece {
            return Err(Error::InvalidArgument {
                what: "update larger than a bounce buffer",
            });
        }
        self.check_handle()?;
        let slot = self
            .usable()
            .next()
            .ok_or(Error::OutOfDmaMemory { bytes: self.piece })?;
        self.in_slot(slot, lba, len, Direction::Read)?;
        if let Some(bounce) = &mut self.pool[slot] {
            change(&mut bounce.as_mut_slice()[..len]);
        }
        self.copied += 2 * len as u64;
        self.in_slot(slot, lba, len, Direction::Write)
    }

    /// Moves `len` bytes at `lba` to or from bounce buffer `slot` alone,
    /// quarantining it if the device may still write it.
    fn in_slot(&mut self, slot: usize, lba: u64, len: usize, direction: Direction) -> Result<()> {
        let phys = self.pool[slot]
            .as_ref()
            .map(DmaRegion::phys)
            .ok_or(Error::OutOfDmaMemory { bytes: self.piece })?;
        let memory = Memory::Caller(phys);
        let result = self.pipeline(lba, len, direction, memory, |_, _| {}, |_, _| {});
        if result == Err(Error::Quarantined) {
            self.quarantine(slot);
        }
        result
    }

    /// Validates a request of `len` bytes at `lba`: whole blocks, at least
    /// one, inside the namespace. Returns its blocks.
    pub(super) fn blocks_of(&self, lba: u64, len: usize) -> Result<u64> {
        if len == 0 {
            return Err(Error::EmptyTransfer);
        }
        if len & (self.handle.block_size() as usize - 1) != 0 {
            return Err(Error::InvalidArgument {
                what: "buffer length must be a multiple of the block size",
            });
        }
        let blocks = (len >> self.handle.block_shift()) as u64;
        match lba.checked_add(blocks) {
            Some(end) if end <= self.handle.blocks() => Ok(blocks),
            _ => Err(Error::LbaOutOfRange {
                lba,
                blocks,
                capacity: self.handle.blocks(),
            }),
        }
    }

    /// `Ok` if the handle still holds (see [`NamespaceHandle`]).
    pub(super) fn check_handle(&mut self) -> Result<()> {
        self.target.io_of(&self.handle)?.check(&self.handle)
    }

    /// The bounce buffers not quarantined, by index.
    pub(super) fn usable(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.pool.len()).filter(|&i| self.pool[i].is_some())
    }

    /// Keeps bounce buffer `slot` out of use for good: the device may still
    /// write it, so it is never handed back to the platform either.
    pub(super) fn quarantine(&mut self, slot: usize) {
        if let Some(region) = self.pool.get_mut(slot).and_then(Option::take) {
            let _kept = core::mem::ManuallyDrop::new(region);
        }
    }
}

impl<T: BlockTarget> Drop for NamespaceDisk<T> {
    fn drop(&mut self) {
        // Only lent to blocking calls, which return once the device is done
        // with them (or quarantined them above): safe to hand back.
        for bounce in self.pool.iter_mut().filter_map(Option::take) {
            self.target.platform().dma_free(bounce);
        }
    }
}

impl<T: BlockTarget> core::fmt::Debug for NamespaceDisk<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("NamespaceDisk")
            .field("handle", &self.handle)
            .field("bounce_buffers", &self.bounce_buffers())
            .field("bounce_bytes", &self.bounce_bytes())
            .finish()
    }
}
