//! `embedded_io` `Read`, `Write` and `Seek` over a namespace's bytes.

use embedded_io::{ErrorKind, ErrorType, Read, Seek, SeekFrom, Write};

use crate::adapters::AdapterError;
use crate::block::{BlockTarget, NamespaceDisk};
use crate::error::Error;

impl embedded_io::Error for AdapterError {
    fn kind(&self) -> ErrorKind {
        match self.0 {
            Error::InvalidArgument { .. } | Error::LbaOutOfRange { .. } => ErrorKind::InvalidInput,
            Error::Timeout { .. } => ErrorKind::TimedOut,
            Error::OutOfDmaMemory { .. } => ErrorKind::OutOfMemory,
            Error::Unsupported { .. } => ErrorKind::Unsupported,
            _ => ErrorKind::Other,
        }
    }
}

/// A namespace as a stream of bytes with a position, for filesystem crates
/// that address bytes. Reads and writes of whole, aligned blocks go through
/// the bounce buffers once; a write of part of a block reads the block
/// first. One call moves at most the bounce buffers' worth, pipelined
/// (`read` and `write` may return less than asked, as the traits allow;
/// `read_exact` and `write_all` loop). Reads at the end return 0; writes
/// there fail with `LbaOutOfRange`.
pub struct ByteStream<T: BlockTarget> {
    disk: NamespaceDisk<T>,
    position: u64,
}

impl<T: BlockTarget> ByteStream<T> {
    /// A stream over the whole namespace, at position 0.
    pub fn new(disk: NamespaceDisk<T>) -> Self {
        Self { disk, position: 0 }
    }

    /// The namespace's size in bytes.
    pub fn len(&self) -> u64 {
        self.disk.capacity() << self.disk.handle().block_shift()
    }

    /// Whether the namespace is empty (never, for a served namespace).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The block device.
    pub fn disk(&mut self) -> &mut NamespaceDisk<T> {
        &mut self.disk
    }

    /// The block device back.
    pub fn into_inner(self) -> NamespaceDisk<T> {
        self.disk
    }

    /// The block of the position, the offset in it, and how many bytes of
    /// `asked` one call moves: up to the end of the namespace and at most
    /// what the bounce buffers hold from that offset (the rest of the block
    /// when none is left, so that the call fails as the device says rather
    /// than read as the end).
    fn span(&self, asked: usize) -> (u64, usize, usize) {
        let shift = self.disk.handle().block_shift();
        let block = self.position >> shift;
        let offset = (self.position & ((1 << shift) - 1)) as usize;
        let left = self.len().saturating_sub(self.position);
        let room = self
            .disk
            .bounce_bytes()
            .max(1 << shift)
            .saturating_sub(offset);
        let n = (asked as u64).min(left).min(room as u64) as usize;
        (block, offset, n)
    }

    /// Bytes of `n` at `offset` rounded out to whole blocks.
    fn whole_blocks(&self, offset: usize, n: usize) -> usize {
        let block = self.disk.block_size() as usize;
        (offset + n).next_multiple_of(block)
    }
}

impl<T: BlockTarget> ErrorType for ByteStream<T> {
    type Error = AdapterError;
}

impl<T: BlockTarget> Read for ByteStream<T> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, AdapterError> {
        let (block, offset, n) = self.span(buf.len());
        if n == 0 {
            return Ok(0);
        }
        let len = self.whole_blocks(offset, n);
        self.disk.read_with(block, len, |at, data| {
            // The part of this piece that falls in [offset, offset + n).
            let from = offset.max(at);
            let to = (offset + n).min(at + data.len());
            if from < to {
                buf[from - offset..to - offset].copy_from_slice(&data[from - at..to - at]);
            }
        })?;
        self.position += n as u64;
        Ok(n)
    }
}

impl<T: BlockTarget> Write for ByteStream<T> {
    fn write(&mut self, buf: &[u8]) -> Result<usize, AdapterError> {
        if buf.is_empty() {
            return Ok(0);
        }
        let (block, offset, n) = self.span(buf.len());
        if n == 0 {
            return Err(AdapterError(Error::LbaOutOfRange {
                lba: block,
                blocks: 1,
                capacity: self.disk.capacity(),
            }));
        }
        let size = self.disk.block_size() as usize;
        if offset == 0 && n >= size {
            // Whole blocks: no read first.
            let n = n - n % size;
            self.disk.write_with(block, n, |at, data| {
                data.copy_from_slice(&buf[at..at + data.len()])
            })?;
            self.position += n as u64;
            return Ok(n);
        }
        // Part of a block: read it, change it, write it back. The head
        // block only, so a long write continues with whole blocks.
        let n = n.min(size - offset);
        self.disk.update(block, size, |data| {
            data[offset..offset + n].copy_from_slice(&buf[..n])
        })?;
        self.position += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> Result<(), AdapterError> {
        Ok(self.disk.flush()?)
    }
}

impl<T: BlockTarget> Seek for ByteStream<T> {
    fn seek(&mut self, pos: SeekFrom) -> Result<u64, AdapterError> {
        let invalid = AdapterError(Error::InvalidArgument {
            what: "seek before the start",
        });
        let target = match pos {
            SeekFrom::Start(at) => Some(at),
            SeekFrom::End(delta) => self.len().checked_add_signed(delta),
            SeekFrom::Current(delta) => self.position.checked_add_signed(delta),
        };
        self.position = target.ok_or(invalid)?;
        Ok(self.position)
    }
}
