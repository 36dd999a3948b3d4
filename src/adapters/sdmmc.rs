//! `embedded_sdmmc::BlockDevice` for a namespace of 512-byte blocks.
//!
//! embedded-sdmmc opens volumes only through an MBR partition table. For a
//! GPT disk, [`SdmmcDevice::partition`] shows one partition (found with the
//! `gpt_disk_io` adapter, say) as the only entry, FAT32 with LBA addressing,
//! of an MBR that block 0 reads as; every other block outside the partition
//! is out of reach.
//!
//! embedded-sdmmc reports some failures of the block device under its own
//! names: an error while it allocates a cluster (a file write that grows
//! the file) comes back as `DiskFull`, so a controller pulled in the middle
//! of a write reads as a full disk. The device keeps the last error it
//! returned: after a failed filesystem call, [`SdmmcDevice::take_last_error`]
//! (through `VolumeManager::device`) says what the block device met
//! (`DeviceRemoved` then), and `None` when the failure was the
//! filesystem's own.

use core::cell::{Cell, RefCell};

use embedded_sdmmc::{Block, BlockCount, BlockIdx};

use crate::adapters::AdapterError;
use crate::block::{BlockTarget, Geometry, NamespaceDisk};
use crate::error::Error;

const BLOCK: usize = Block::LEN;
/// MBR layout: first partition entry, its type and LBA fields, signature.
const ENTRY: usize = 446;
const TYPE: usize = 4;
const FIRST_LBA: usize = 8;
const SECTORS: usize = 12;
const SIGNATURE: usize = 510;
/// Partition type of FAT32 with LBA addressing.
const FAT32_LBA: u8 = 0x0C;

/// A partition shown as an MBR's only entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct MbrView {
    first: u32,
    blocks: u32,
}

/// A [`NamespaceDisk`] of 512-byte blocks as an `embedded_sdmmc::BlockDevice`.
///
/// The trait reads and writes through `&self`; the device sits in a
/// `RefCell` (embedded-sdmmc never calls it re-entrantly).
pub struct SdmmcDevice<T: BlockTarget> {
    disk: RefCell<NamespaceDisk<T>>,
    view: Option<MbrView>,
    /// The last error returned to embedded-sdmmc, until taken.
    last_error: Cell<Option<Error>>,
}

impl<T: BlockTarget> SdmmcDevice<T> {
    /// The whole namespace. `InvalidArgument` unless its blocks are 512
    /// bytes, the only size embedded-sdmmc knows; the device keeps refusing
    /// to be rebound ([`NamespaceDisk::rebind`] through
    /// [`SdmmcDevice::with_disk`]) to a namespace of another block size.
    pub fn new(disk: NamespaceDisk<T>) -> Result<Self, Error> {
        Self::over(disk, None)
    }

    /// The device over `disk`, which must keep 512-byte blocks and, with a
    /// view, the view's blocks, on every rebind.
    fn over(mut disk: NamespaceDisk<T>, view: Option<MbrView>) -> Result<Self, Error> {
        let min_blocks = view.map_or(0, |v| v.first as u64 + v.blocks as u64);
        disk.require(Some(Geometry {
            block_size: BLOCK as u32,
            min_blocks,
            what: "embedded-sdmmc needs 512-byte blocks (and its partition view)",
        }))?;
        Ok(Self {
            disk: RefCell::new(disk),
            view,
            last_error: Cell::new(None),
        })
    }

    /// Only the `blocks` blocks at `first` (a GPT partition), shown as the
    /// first entry of an MBR that block 0 reads as (`VolumeIdx(0)`). Block 0
    /// cannot be written, blocks outside the partition neither read nor
    /// written.
    pub fn partition(disk: NamespaceDisk<T>, first: u64, blocks: u64) -> Result<Self, Error> {
        let end = first.checked_add(blocks);
        if first == 0 || blocks == 0 || end.is_none_or(|end| end > disk.capacity()) {
            return Err(Error::LbaOutOfRange {
                lba: first,
                blocks,
                capacity: disk.capacity(),
            });
        }
        let (Ok(first), Ok(blocks)) = (u32::try_from(first), u32::try_from(blocks)) else {
            return Err(Error::InvalidArgument {
                what: "an MBR entry addresses at most 2^32 blocks",
            });
        };
        Self::over(disk, Some(MbrView { first, blocks }))
    }

    /// Runs `f` on the block device (to flush it, say). A rebind there to
    /// a namespace this device cannot show is refused (see
    /// [`SdmmcDevice::new`]).
    pub fn with_disk<R>(&self, f: impl FnOnce(&mut NamespaceDisk<T>) -> R) -> R {
        f(&mut self.disk.borrow_mut())
    }

    /// The last error this device returned to embedded-sdmmc (the block
    /// device's, or a request outside a partition view), kept until taken.
    /// embedded-sdmmc turns an error met while allocating a cluster into
    /// `DiskFull`: ask here what it was.
    pub fn last_error(&self) -> Option<Error> {
        self.last_error.get()
    }

    /// [`SdmmcDevice::last_error`], cleared, so that the next failure is
    /// told apart from this one.
    pub fn take_last_error(&self) -> Option<Error> {
        self.last_error.take()
    }

    /// Keeps `error` as the last one and wraps it for embedded-sdmmc.
    fn failed(&self, error: Error) -> AdapterError {
        self.last_error.set(Some(error));
        AdapterError(error)
    }

    /// The block device back, free to be rebound to any namespace.
    pub fn into_inner(self) -> NamespaceDisk<T> {
        let mut disk = self.disk.into_inner();
        // Lifting a requirement cannot fail.
        let _ = disk.require(None);
        disk
    }

    /// Whether `count` blocks at `start` may be reached: inside the
    /// partition of a view, anywhere on the whole namespace (its own range
    /// check follows).
    fn reachable(&self, start: u32, count: usize) -> Result<(), AdapterError> {
        let Some(view) = self.view else {
            return Ok(());
        };
        let end = start as u64 + count as u64;
        if start >= view.first && end <= view.first as u64 + view.blocks as u64 {
            Ok(())
        } else {
            Err(self.failed(Error::LbaOutOfRange {
                lba: start as u64,
                blocks: count as u64,
                capacity: view.first as u64 + view.blocks as u64,
            }))
        }
    }

    fn mbr(view: MbrView, block: &mut Block) {
        block.contents = [0; BLOCK];
        let entry = &mut block.contents[ENTRY..ENTRY + 16];
        // CHS fields say "use LBA", as for any partition past 8 GiB.
        entry[1..4].copy_from_slice(&[0xFE, 0xFF, 0xFF]);
        entry[TYPE] = FAT32_LBA;
        entry[5..8].copy_from_slice(&[0xFE, 0xFF, 0xFF]);
        entry[FIRST_LBA..FIRST_LBA + 4].copy_from_slice(&view.first.to_le_bytes());
        entry[SECTORS..SECTORS + 4].copy_from_slice(&view.blocks.to_le_bytes());
        block.contents[SIGNATURE..].copy_from_slice(&[0x55, 0xAA]);
    }
}

impl<T: BlockTarget> embedded_sdmmc::BlockDevice for SdmmcDevice<T> {
    type Error = AdapterError;

    fn read(&self, blocks: &mut [Block], start: BlockIdx) -> Result<(), AdapterError> {
        let (mut start, mut blocks) = (start.0, blocks);
        if let (Some(view), 0) = (self.view, start) {
            let Some((first, rest)) = blocks.split_first_mut() else {
                return Ok(());
            };
            Self::mbr(view, first);
            (start, blocks) = (1, rest);
        }
        if blocks.is_empty() {
            return Ok(());
        }
        self.reachable(start, blocks.len())?;
        let len = blocks.len() * BLOCK;
        self.disk
            .borrow_mut()
            .read_with(start as u64, len, |offset, data| {
                for (i, chunk) in data.chunks_exact(BLOCK).enumerate() {
                    blocks[offset / BLOCK + i].contents.copy_from_slice(chunk);
                }
            })
            .map_err(|e| self.failed(e))
    }

    fn write(&self, blocks: &[Block], start: BlockIdx) -> Result<(), AdapterError> {
        if blocks.is_empty() {
            return Ok(());
        }
        if self.view.is_some() && start.0 == 0 {
            return Err(self.failed(Error::InvalidArgument {
                what: "the MBR of a partition view cannot be written",
            }));
        }
        self.reachable(start.0, blocks.len())?;
        let len = blocks.len() * BLOCK;
        self.disk
            .borrow_mut()
            .write_with(start.0 as u64, len, |offset, data| {
                for (i, chunk) in data.chunks_exact_mut(BLOCK).enumerate() {
                    chunk.copy_from_slice(&blocks[offset / BLOCK + i].contents);
                }
            })
            .map_err(|e| self.failed(e))
    }

    fn num_blocks(&self) -> Result<BlockCount, AdapterError> {
        Ok(BlockCount(match self.view {
            Some(view) => view.first + view.blocks,
            None => u32::try_from(self.disk.borrow().capacity()).unwrap_or(u32::MAX),
        }))
    }
}
