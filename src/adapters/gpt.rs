//! `gpt_disk_io::BlockIo` for a block device.

use gpt_disk_io::gpt_disk_types::{BlockSize, Lba};
use gpt_disk_io::BlockIo;

use crate::block::{BlockTarget, NamespaceDisk};
use crate::error::Error;

#[cfg_attr(docsrs, doc(cfg(feature = "gpt_disk_io")))]
impl<T: BlockTarget> BlockIo for NamespaceDisk<T> {
    type Error = Error;

    fn block_size(&self) -> BlockSize {
        // Block sizes are powers of two from 512 bytes (validated at
        // identify), which BlockSize always accepts.
        BlockSize::new(NamespaceDisk::block_size(self)).unwrap_or(BlockSize::BS_512)
    }

    fn num_blocks(&mut self) -> Result<u64, Error> {
        Ok(self.capacity())
    }

    fn read_blocks(&mut self, start_lba: Lba, dst: &mut [u8]) -> Result<(), Error> {
        self.read(start_lba.0, dst)
    }

    fn write_blocks(&mut self, start_lba: Lba, src: &[u8]) -> Result<(), Error> {
        self.write(start_lba.0, src)
    }

    fn flush(&mut self) -> Result<(), Error> {
        NamespaceDisk::flush(self)
    }
}

/// So that a `gpt_disk_io::Disk` may borrow the device instead of owning it.
#[cfg_attr(docsrs, doc(cfg(feature = "gpt_disk_io")))]
impl<T: BlockTarget> BlockIo for &mut NamespaceDisk<T> {
    type Error = Error;

    fn block_size(&self) -> BlockSize {
        BlockIo::block_size(&**self)
    }

    fn num_blocks(&mut self) -> Result<u64, Error> {
        BlockIo::num_blocks(&mut **self)
    }

    fn read_blocks(&mut self, start_lba: Lba, dst: &mut [u8]) -> Result<(), Error> {
        BlockIo::read_blocks(&mut **self, start_lba, dst)
    }

    fn write_blocks(&mut self, start_lba: Lba, src: &[u8]) -> Result<(), Error> {
        BlockIo::write_blocks(&mut **self, start_lba, src)
    }

    fn flush(&mut self) -> Result<(), Error> {
        BlockIo::flush(&mut **self)
    }
}
