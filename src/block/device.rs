//! A blocking block device over ordinary memory: whole blocks from and to
//! `&mut [u8]` / `&[u8]` through a pool of DMA bounce buffers, or straight
//! from and to a caller's [`DmaRegion`] without a copy.
//!
//! A request is moved in pieces, up to one per bounce buffer in flight at
//! once: a write fills a buffer and submits its piece while earlier pieces
//! are still on the device; a read copies a piece out when its commands
//! are done, in request order, and the buffer takes the next piece.

use heapless::{Deque, Vec};

use crate::block::handle::NamespaceHandle;
use crate::block::target::{BlockTarget, Direction, Private};
use crate::error::{Error, Result};
use crate::event::ControllerId;
use crate::platform::{DmaRegion, PhysAddr, Platform};

/// Default size of each bounce buffer: 128 KiB.
pub const DEFAULT_BOUNCE_BYTES: usize = 128 << 10;

/// Default number of bounce buffers: 4, so a large request keeps four
/// pieces in flight.
pub const DEFAULT_BOUNCE_BUFFERS: usize = 4;

/// Most bounce buffers a block device keeps.
pub const MAX_BOUNCE_BUFFERS: usize = 16;

/// Most commands one call keeps in flight (a bounce buffer larger than the
/// controller's largest transfer is sent as several).
const MAX_IN_FLIGHT: usize = 64;

/// Alignment of each bounce buffer: a page, so that a transfer of up to two
/// pages needs no PRP list.
const BOUNCE_ALIGN: usize = 4096;

/// How a [`BlockDevice`] moves data between the caller's memory and the
/// device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
        Self {
            buffers: DEFAULT_BOUNCE_BUFFERS,
            bytes: DEFAULT_BOUNCE_BYTES,
        }
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
/// done with every piece, failed ones included: the first error of a piece
/// is the call's.
///
/// A bounce buffer the device might still write (a call failed with
/// [`Error::Quarantined`]) is never reused nor freed; the device goes on
/// with the others ([`BlockDevice::bounce_buffers`]) and fails with
/// [`Error::OutOfDmaMemory`] once none is left.
///
/// The target is a [`crate::Driver`] (the device names its controller by
/// [`ControllerId`]), a standalone [`crate::Controller`], or a `&mut` of
/// either (to keep ticking the driver between calls, drop the device or
/// use [`BlockDevice::target`]).
pub struct BlockDevice<T: BlockTarget> {
    target: T,
    handle: NamespaceHandle,
    /// The bounce buffers, `piece` bytes each. `None` where one was
    /// quarantined (the device could not be proven stopped while it held
    /// it): it is never reused or freed.
    pool: Vec<Option<DmaRegion>, MAX_BOUNCE_BUFFERS>,
    piece: usize,
    copied: u64,
}

/// A part of a request on its way: in its own bounce buffer (or in the
/// caller's DMA memory), sent as one command or, past the largest
/// transfer, several.
struct Piece {
    /// Offset in the request.
    at: usize,
    len: usize,
    /// Bytes submitted so far.
    sent: usize,
    /// Its commands in flight.
    pending: u16,
    /// Its bounce buffer; `None`: the caller's memory.
    slot: Option<usize>,
    /// A command of it ended while the device may still write its memory.
    kept: bool,
}

impl<T: BlockTarget> BlockDevice<T> {
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
        })
    }

    /// Points the device at another namespace handle of its target (the
    /// namespace of a controller attached again, say), keeping its bounce
    /// buffers. `InvalidArgument` if they are not whole blocks of that
    /// namespace.
    pub fn rebind(&mut self, handle: NamespaceHandle) -> Result<()> {
        if self.piece & (handle.block_size() as usize - 1) != 0 {
            return Err(Error::InvalidArgument {
                what: "bounce buffers are not whole blocks of that namespace",
            });
        }
        self.handle = handle;
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
        let memory = Some(buffer.phys());
        self.pipeline(
            lba,
            buffer.len(),
            Direction::Read,
            memory,
            |_, _| {},
            |_, _| {},
        )
    }

    /// Writes `buffer` (whole blocks) at `lba` straight from the caller's
    /// DMA memory. On [`Error::Quarantined`] the device may still read the
    /// buffer: leak it.
    pub fn write_dma(&mut self, lba: u64, buffer: &DmaRegion) -> Result<()> {
        let memory = Some(buffer.phys());
        self.pipeline(
            lba,
            buffer.len(),
            Direction::Write,
            memory,
            |_, _| {},
            |_, _| {},
        )
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
        self.pipeline(lba, len, Direction::Read, None, |_, _| {}, sink)
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
        self.pipeline(lba, len, Direction::Write, None, source, |_, _| {})
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
        let phys = self.pool[slot].as_ref().map(DmaRegion::phys);
        let result = self.pipeline(lba, len, direction, phys, |_, _| {}, |_, _| {});
        if result == Err(Error::Quarantined) {
            self.quarantine(slot);
        }
        result
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

    /// `Ok` if the handle still holds (see [`NamespaceHandle`]).
    fn check_handle(&mut self) -> Result<()> {
        self.target.io_of(&self.handle)?.check(&self.handle)
    }

    /// The bounce buffers not quarantined, by index.
    fn usable(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.pool.len()).filter(|&i| self.pool[i].is_some())
    }

    /// Keeps bounce buffer `slot` out of use for good: the device may still
    /// write it, so it is never handed back to the platform either.
    fn quarantine(&mut self, slot: usize) {
        if let Some(region) = self.pool.get_mut(slot).and_then(Option::take) {
            let _kept = core::mem::ManuallyDrop::new(region);
        }
    }

    /// Moves `len` bytes (whole blocks) at `lba`: from or to the caller's DMA
    /// memory at `memory`, or, without it, through the bounce buffers
    /// (`fill` fills a piece of a write before it is submitted, `drain`
    /// takes a piece of a read once it is done; both in request order).
    /// Keeps a piece in flight per bounce buffer (per configured buffer for
    /// the caller's memory), each split at the largest transfer; waits for
    /// every command it submitted before it returns, failed or not.
    fn pipeline(
        &mut self,
        lba: u64,
        len: usize,
        direction: Direction,
        memory: Option<PhysAddr>,
        mut fill: impl FnMut(usize, &mut [u8]),
        mut drain: impl FnMut(usize, &[u8]),
    ) -> Result<()> {
        self.blocks_of(lba, len)?;
        // A stale handle says so whatever the pool holds.
        self.check_handle()?;
        let block = self.handle.block_size() as usize;
        let max_transfer = (self.handle.max_transfer() as usize & !(block - 1)).max(block);
        // Lowest index on top.
        let mut free: Vec<usize, MAX_BOUNCE_BUFFERS> = self.usable().collect();
        free.reverse();
        let (piece_size, window) = match memory {
            Some(_) => (max_transfer, self.pool.len()),
            None if free.is_empty() => return Err(Error::OutOfDmaMemory { bytes: self.piece }),
            None => (self.piece, free.len()),
        };
        let mut pieces: Deque<Piece, MAX_BOUNCE_BUFFERS> = Deque::new();
        // Commands in flight, and the piece (its offset) of each.
        let mut cids: Vec<u16, MAX_IN_FLIGHT> = Vec::new();
        let mut owners: Vec<usize, MAX_IN_FLIGHT> = Vec::new();
        let mut next = 0;
        let mut error = None;
        loop {
            // New pieces while buffers are free; a write's is filled first.
            while error.is_none() && next < len && pieces.len() < window {
                let slot = match memory {
                    Some(_) => None,
                    None => match free.pop() {
                        Some(slot) => Some(slot),
                        None => break,
                    },
                };
                let piece = (len - next).min(piece_size);
                if let (Some(slot), Direction::Write) = (slot, direction) {
                    if let Some(bounce) = &mut self.pool[slot] {
                        fill(next, &mut bounce.as_mut_slice()[..piece]);
                    }
                    self.copied += piece as u64;
                }
                let new = Piece {
                    at: next,
                    len: piece,
                    sent: 0,
                    pending: 0,
                    slot,
                    kept: false,
                };
                if pieces.push_back(new).is_err() {
                    break;
                }
                next += piece;
            }
            // Their commands, oldest piece first, while the queue takes them.
            if error.is_none() {
                let submitted = self.submit(
                    &mut pieces,
                    &mut cids,
                    &mut owners,
                    lba,
                    memory,
                    max_transfer,
                    direction,
                );
                if let Err(e) = submitted {
                    error = Some(e);
                }
            }
            if cids.is_empty() {
                break;
            }
            let (index, result) = match self.target.io_of(&self.handle) {
                Ok(io) => io.wait(&cids, Private(())),
                Err(e) => (None, Err(e)),
            };
            match index.filter(|&i| i < cids.len()) {
                Some(i) => {
                    cids.swap_remove(i);
                    let owner = owners.swap_remove(i);
                    if let Some(piece) = pieces.iter_mut().find(|p| p.at == owner) {
                        piece.pending = piece.pending.saturating_sub(1);
                        piece.kept |= result == Err(Error::Quarantined);
                    }
                }
                None => {
                    // None of them will be delivered: the device may still
                    // reach the memory of each.
                    for piece in pieces.iter_mut().filter(|p| p.pending > 0) {
                        piece.pending = 0;
                        piece.kept = true;
                    }
                    cids.clear();
                    owners.clear();
                }
            }
            if let Err(e) = result {
                error.get_or_insert(e);
            }
            // Finished pieces leave in request order: a read's is copied out.
            while let Some(front) = pieces.front() {
                if front.pending > 0 || (front.sent < front.len && error.is_none()) {
                    break;
                }
                if let Some(piece) = pieces.pop_front() {
                    self.retire(
                        piece,
                        &mut free,
                        error.is_none(),
                        memory,
                        direction,
                        &mut drain,
                    );
                }
            }
        }
        // Nothing in flight: what is left ended with the error.
        while let Some(piece) = pieces.pop_front() {
            self.retire(piece, &mut free, false, memory, direction, &mut drain);
        }
        match error {
            Some(e) => Err(e),
            None if next == len => Ok(()),
            None => Err(Error::Internal {
                what: "a block request ended before its last piece",
            }),
        }
    }

    /// Submits what `pieces` still have to send, one command per largest
    /// transfer, until the queue or `cids` is full. A full queue is an
    /// error only with nothing of this call in flight.
    #[allow(clippy::too_many_arguments)]
    fn submit(
        &mut self,
        pieces: &mut Deque<Piece, MAX_BOUNCE_BUFFERS>,
        cids: &mut Vec<u16, MAX_IN_FLIGHT>,
        owners: &mut Vec<usize, MAX_IN_FLIGHT>,
        lba: u64,
        memory: Option<PhysAddr>,
        max_transfer: usize,
        direction: Direction,
    ) -> Result<()> {
        let shift = self.handle.block_shift();
        let io = self.target.io_of(&self.handle)?;
        for piece in pieces.iter_mut() {
            while piece.sent < piece.len {
                if cids.is_full() {
                    return Ok(());
                }
                let bytes = (piece.len - piece.sent).min(max_transfer);
                let offset = piece.at + piece.sent;
                let phys = match piece.slot {
                    Some(slot) => self.pool[slot]
                        .as_ref()
                        .and_then(|b| b.phys().checked_add(piece.sent as u64)),
                    None => memory.and_then(|m| m.checked_add(offset as u64)),
                }
                .ok_or(Error::Internal {
                    what: "a piece without memory",
                })?;
                let at = lba + (offset >> shift) as u64;
                match io.submit(&self.handle, at, phys, bytes, direction, Private(())) {
                    Ok(cid) => {
                        // Cannot fail: both have room (checked above).
                        let _ = cids.push(cid);
                        let _ = owners.push(piece.at);
                        piece.sent += bytes;
                        piece.pending += 1;
                    }
                    Err(Error::QueueFull { .. }) if !cids.is_empty() => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Ends a piece with nothing in flight: a read that went well is made
    /// visible to the CPU and, from a bounce buffer, handed to `drain`; its
    /// bounce buffer goes back to `free`, or into quarantine.
    fn retire(
        &mut self,
        piece: Piece,
        free: &mut Vec<usize, MAX_BOUNCE_BUFFERS>,
        ok: bool,
        memory: Option<PhysAddr>,
        direction: Direction,
        drain: &mut impl FnMut(usize, &[u8]),
    ) {
        let done = ok && piece.sent == piece.len && direction == Direction::Read;
        match piece.slot {
            None => {
                let phys = memory.and_then(|m| m.checked_add(piece.at as u64));
                if let (true, Some(phys)) = (done, phys) {
                    self.target.platform().dma_invalidate(phys, piece.len);
                }
            }
            Some(slot) if piece.kept => self.quarantine(slot),
            Some(slot) => {
                if let (true, Some(bounce)) = (done, &self.pool[slot]) {
                    self.target
                        .platform()
                        .dma_invalidate(bounce.phys(), piece.len);
                    drain(piece.at, &bounce.as_slice()[..piece.len]);
                    self.copied += piece.len as u64;
                }
                // Cannot fail: it came from there.
                let _ = free.push(slot);
            }
        }
    }
}

impl<T: BlockTarget> Drop for BlockDevice<T> {
    fn drop(&mut self) {
        // Only lent to blocking calls, which return once the device is done
        // with them (or quarantined them above): safe to hand back.
        for bounce in self.pool.iter_mut().filter_map(Option::take) {
            self.target.platform().dma_free(bounce);
        }
    }
}

impl<T: BlockTarget> core::fmt::Debug for BlockDevice<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BlockDevice")
            .field("handle", &self.handle)
            .field("bounce_buffers", &self.bounce_buffers())
            .field("bounce_bytes", &self.bounce_bytes())
            .finish()
    }
}
