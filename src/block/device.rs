//! A blocking block device over ordinary memory: whole blocks from and to
//! `&mut [u8]` / `&[u8]` through a DMA bounce buffer, or straight from and to
//! a caller's [`DmaRegion`] without a copy.

use crate::block::handle::NamespaceHandle;
use crate::block::target::{BlockTarget, Direction, Private};
use crate::error::{Error, Result};
use crate::event::ControllerId;
use crate::platform::{DmaRegion, Platform};

/// Default size of the bounce buffer: 128 KiB.
pub const DEFAULT_BOUNCE_BYTES: usize = 128 << 10;

/// Alignment of the bounce buffer: a page, so that a transfer of up to two
/// pages needs no PRP list.
const BOUNCE_ALIGN: usize = 4096;

/// How a [`BlockDevice`] moves data between the caller's memory and the
/// device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BounceConfig {
    /// Size of the DMA bounce buffer, allocated once from the platform when
    /// the device is made and returned when it is dropped. Rounded down to
    /// whole blocks (at least one). A request larger than the buffer is
    /// moved in pieces of this size, each split again at the controller's
    /// largest transfer.
    pub bytes: usize,
}

impl Default for BounceConfig {
    fn default() -> Self {
        Self {
            bytes: DEFAULT_BOUNCE_BYTES,
        }
    }
}

/// A namespace as a blocking block device.
///
/// `read` and `write` take ordinary memory and copy it through a bounce
/// buffer of DMA memory allocated once; `read_dma` and `write_dma` take the
/// caller's DMA memory and copy nothing. Every call validates the whole
/// request (whole blocks, inside the namespace) before the first command,
/// checks the [`NamespaceHandle`] (so it fails with
/// [`Error::StaleHandle`] once the controller is gone or replaced) and
/// returns only when the device is done with the memory.
///
/// The target is a [`crate::Driver`] (the device names its controller by
/// [`ControllerId`]), a standalone [`crate::Controller`], or a `&mut` of
/// either (to keep ticking the driver between calls, drop the device or
/// use [`BlockDevice::target`]).
pub struct BlockDevice<T: BlockTarget> {
    target: T,
    handle: NamespaceHandle,
    /// `None` once the bounce buffer was quarantined (the device could not
    /// be proven stopped while it held it): it is never reused or freed.
    bounce: Option<DmaRegion>,
    copied: u64,
}

impl<T: BlockTarget> BlockDevice<T> {
    /// A block device on namespace `nsid` of `controller` (`None` for a
    /// standalone controller), with a bounce buffer as `config` says.
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
        let bounce = target
            .platform()
            .dma_alloc(bytes, BOUNCE_ALIGN)
            .ok_or(Error::OutOfDmaMemory { bytes })?;
        Ok(Self {
            target,
            handle,
            bounce: Some(bounce),
            copied: 0,
        })
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

    /// Size of the bounce buffer in bytes (0 once it was quarantined).
    pub fn bounce_bytes(&self) -> usize {
        self.bounce.as_ref().map_or(0, DmaRegion::len)
    }

    /// Bytes copied through the bounce buffer so far (the zero-copy calls
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
        self.blocks_of(lba, buffer.len())?;
        let (phys, len) = (buffer.phys(), buffer.len());
        self.target
            .transfer(&self.handle, lba, phys, len, Direction::Read, Private(()))
    }

    /// Writes `buffer` (whole blocks) at `lba` straight from the caller's
    /// DMA memory.
    pub fn write_dma(&mut self, lba: u64, buffer: &DmaRegion) -> Result<()> {
        self.blocks_of(lba, buffer.len())?;
        let (phys, len) = (buffer.phys(), buffer.len());
        self.target
            .transfer(&self.handle, lba, phys, len, Direction::Write, Private(()))
    }

    /// Makes every completed write durable.
    pub fn flush(&mut self) -> Result<()> {
        self.target.flush(&self.handle)
    }

    /// Reads `len` bytes (whole blocks) at `lba` through the bounce buffer,
    /// handing each piece to `sink` with its offset in the request.
    pub(crate) fn read_with(
        &mut self,
        lba: u64,
        len: usize,
        mut sink: impl FnMut(usize, &[u8]),
    ) -> Result<()> {
        self.blocks_of(lba, len)?;
        let mut done = 0;
        while done < len {
            let piece = self.piece(len - done)?;
            let at = lba + (done >> self.handle.block_shift()) as u64;
            self.bounce_transfer(at, piece, Direction::Read)?;
            if let Some(bounce) = &self.bounce {
                sink(done, &bounce.as_slice()[..piece]);
            }
            self.copied += piece as u64;
            done += piece;
        }
        Ok(())
    }

    /// Writes `len` bytes (whole blocks) at `lba` through the bounce buffer,
    /// asking `source` to fill each piece, given its offset in the request.
    pub(crate) fn write_with(
        &mut self,
        lba: u64,
        len: usize,
        mut source: impl FnMut(usize, &mut [u8]),
    ) -> Result<()> {
        self.blocks_of(lba, len)?;
        let mut done = 0;
        while done < len {
            let piece = self.piece(len - done)?;
            if let Some(bounce) = &mut self.bounce {
                source(done, &mut bounce.as_mut_slice()[..piece]);
            }
            self.copied += piece as u64;
            let at = lba + (done >> self.handle.block_shift()) as u64;
            self.bounce_transfer(at, piece, Direction::Write)?;
            done += piece;
        }
        Ok(())
    }

    /// Reads `len` bytes (whole blocks, at most the bounce buffer) at `lba`,
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
        if len > self.piece(len)? {
            return Err(Error::InvalidArgument {
                what: "update larger than the bounce buffer",
            });
        }
        self.bounce_transfer(lba, len, Direction::Read)?;
        if let Some(bounce) = &mut self.bounce {
            change(&mut bounce.as_mut_slice()[..len]);
        }
        self.copied += 2 * len as u64;
        self.bounce_transfer(lba, len, Direction::Write)
    }

    /// Validates a request of `len` bytes at `lba`: whole blocks, at least
    /// one, inside the namespace. Returns its blocks.
    fn blocks_of(&self, lba: u64, len: usize) -> Result<u64> {
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

    /// The next piece of a request with `left` bytes to go.
    fn piece(&self, left: usize) -> Result<usize> {
        // Without its bounce buffer the device's controller has ended.
        let bounce = self.bounce.as_ref().ok_or(Error::StaleHandle)?;
        Ok(left.min(bounce.len()))
    }

    fn bounce_transfer(&mut self, lba: u64, len: usize, direction: Direction) -> Result<()> {
        let phys = self.bounce.as_ref().ok_or(Error::StaleHandle)?.phys();
        let result = self
            .target
            .transfer(&self.handle, lba, phys, len, direction, Private(()));
        if result == Err(Error::Quarantined) {
            // The device may still write it: keep it out of use for good,
            // never handed back to the platform.
            if let Some(region) = self.bounce.take() {
                let _kept = core::mem::ManuallyDrop::new(region);
            }
        }
        result
    }
}

impl<T: BlockTarget> Drop for BlockDevice<T> {
    fn drop(&mut self) {
        // Only lent to blocking calls, which return once the device is done
        // with it (or it was quarantined above): safe to hand back.
        if let Some(bounce) = self.bounce.take() {
            self.target.platform().dma_free(bounce);
        }
    }
}

impl<T: BlockTarget> core::fmt::Debug for BlockDevice<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BlockDevice")
            .field("handle", &self.handle)
            .field("bounce_bytes", &self.bounce_bytes())
            .finish()
    }
}
