//! How a block device moves one request: in pieces, each in its own bounce
//! buffer (or a part of the caller's DMA memory) and split at the largest
//! transfer, as many pieces in flight as there are buffers. A write's piece
//! is filled before it is submitted; a read's is copied out once its
//! commands are done, in request order; the buffer then takes the next
//! piece. Every command submitted is waited for before the call returns.

use heapless::{Deque, Vec};

use crate::block::device::{NamespaceDisk, MAX_BOUNCE_BUFFERS};
use crate::block::target::{BlockTarget, Direction, Private};
use crate::error::{Error, Result};
use crate::platform::{PhysAddr, Platform};

/// Most commands one call keeps in flight (a bounce buffer larger than the
/// controller's largest transfer is sent as several).
const MAX_IN_FLIGHT: usize = 64;

/// Where a request's data is on the device's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Memory {
    /// In the bounce buffers, copied from or to the caller.
    Bounce,
    /// In the caller's DMA memory at this address.
    Caller(PhysAddr),
}

/// A part of a request on its way.
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

/// One request and what it has on its way.
struct Flight {
    lba: u64,
    len: usize,
    direction: Direction,
    memory: Memory,
    /// Largest transfer, whole blocks.
    max_transfer: usize,
    /// Bytes handed to pieces so far.
    next: usize,
    /// Pieces started and not yet retired, in request order.
    pieces: Deque<Piece, MAX_BOUNCE_BUFFERS>,
    /// Most pieces at once.
    window: usize,
    /// Commands in flight, and the piece (its offset) of each.
    cids: Vec<u16, MAX_IN_FLIGHT>,
    owners: Vec<usize, MAX_IN_FLIGHT>,
    /// Bounce buffers free for a new piece, lowest index on top.
    free: Vec<usize, MAX_BOUNCE_BUFFERS>,
    /// The first error: no piece or command starts after it.
    error: Option<Error>,
    /// A command ended while the device may still reach its memory: the
    /// call says `Quarantined` whatever else failed, so that the caller
    /// never frees memory the device may write.
    kept: bool,
}

impl<T: BlockTarget> NamespaceDisk<T> {
    /// Moves `len` bytes (whole blocks) at `lba` to or from `memory`; for
    /// the bounce buffers, `fill` fills each piece of a write before it is
    /// submitted and `drain` takes each piece of a read once it is done,
    /// both given the piece's offset in the request, in request order. A
    /// piece in flight per usable bounce buffer (per configured buffer for
    /// the caller's memory). Returns the first error of a piece once no
    /// command of the request is in flight.
    pub(super) fn pipeline(
        &mut self,
        lba: u64,
        len: usize,
        direction: Direction,
        memory: Memory,
        mut fill: impl FnMut(usize, &mut [u8]),
        mut drain: impl FnMut(usize, &[u8]),
    ) -> Result<()> {
        self.blocks_of(lba, len)?;
        // A stale handle says so whatever the pool holds.
        self.check_handle()?;
        let block = self.handle.block_size() as usize;
        let max_transfer = (self.handle.max_transfer() as usize & !(block - 1)).max(block);
        let mut free: Vec<usize, MAX_BOUNCE_BUFFERS> = self.usable().collect();
        free.reverse();
        let window = match memory {
            Memory::Caller(_) => self.pool.len(),
            Memory::Bounce if free.is_empty() => {
                return Err(Error::OutOfDmaMemory { bytes: self.piece })
            }
            Memory::Bounce => free.len(),
        };
        let mut flight = Flight {
            lba,
            len,
            direction,
            memory,
            max_transfer,
            next: 0,
            pieces: Deque::new(),
            window,
            cids: Vec::new(),
            owners: Vec::new(),
            free,
            error: None,
            kept: false,
        };
        loop {
            self.start_pieces(&mut flight, &mut fill);
            if flight.error.is_none() {
                if let Err(e) = self.submit(&mut flight) {
                    flight.error = Some(e);
                }
            }
            if flight.cids.is_empty() {
                break;
            }
            self.reap_one(&mut flight);
            // Finished pieces leave in request order.
            while let Some(front) = flight.pieces.front() {
                let unsent = front.sent < front.len && flight.error.is_none();
                if front.pending > 0 || unsent {
                    break;
                }
                if let Some(piece) = flight.pieces.pop_front() {
                    self.retire(&mut flight, piece, &mut drain);
                }
            }
        }
        // Nothing in flight: what is left ended with the error.
        while let Some(piece) = flight.pieces.pop_front() {
            self.retire(&mut flight, piece, &mut drain);
        }
        match flight.error {
            _ if flight.kept => Err(Error::Quarantined),
            Some(e) => Err(e),
            None if flight.next == len => Ok(()),
            None => Err(Error::Internal {
                what: "a block request ended before its last piece",
            }),
        }
    }

    /// Starts pieces while there is room and, for the bounce buffers, a
    /// free buffer; a write's is filled now.
    fn start_pieces(&mut self, flight: &mut Flight, fill: &mut impl FnMut(usize, &mut [u8])) {
        while flight.error.is_none()
            && flight.next < flight.len
            && flight.pieces.len() < flight.window
        {
            let (slot, size) = match flight.memory {
                Memory::Caller(_) => (None, flight.max_transfer),
                Memory::Bounce => match flight.free.pop() {
                    Some(slot) => (Some(slot), self.piece),
                    None => return,
                },
            };
            let at = flight.next;
            let len = (flight.len - at).min(size);
            if let (Some(slot), Direction::Write) = (slot, flight.direction) {
                if let Some(bounce) = &mut self.pool[slot] {
                    fill(at, &mut bounce.as_mut_slice()[..len]);
                }
                self.copied += len as u64;
            }
            let piece = Piece {
                at,
                len,
                sent: 0,
                pending: 0,
                slot,
                kept: false,
            };
            if flight.pieces.push_back(piece).is_err() {
                // Cannot happen: the window is at most the deque's size.
                if let Some(slot) = slot {
                    let _ = flight.free.push(slot);
                }
                return;
            }
            flight.next += len;
        }
    }

    /// Submits what the pieces still have to send, oldest first, one
    /// command per largest transfer, until the queue or the command list is
    /// full. A full queue is an error only with nothing of this request in
    /// flight (the embedder's own commands fill it).
    fn submit(&mut self, flight: &mut Flight) -> Result<()> {
        let shift = self.handle.block_shift();
        let io = self.target.io_of(&self.handle)?;
        for piece in flight.pieces.iter_mut() {
            while piece.sent < piece.len {
                if flight.cids.is_full() {
                    return Ok(());
                }
                let bytes = (piece.len - piece.sent).min(flight.max_transfer);
                let offset = piece.at + piece.sent;
                let phys = match (piece.slot, flight.memory) {
                    (Some(slot), _) => self.pool[slot]
                        .as_ref()
                        .and_then(|b| b.phys().checked_add(piece.sent as u64)),
                    (None, Memory::Caller(base)) => base.checked_add(offset as u64),
                    (None, Memory::Bounce) => None,
                }
                .ok_or(Error::Internal {
                    what: "a piece without memory",
                })?;
                let lba = flight.lba + (offset >> shift) as u64;
                let direction = flight.direction;
                match io.submit(&self.handle, lba, phys, bytes, direction, Private(())) {
                    Ok(cid) => {
                        // Cannot fail: both have room (checked above).
                        let _ = flight.cids.push(cid);
                        let _ = flight.owners.push(piece.at);
                        piece.sent += bytes;
                        piece.pending += 1;
                    }
                    Err(Error::QueueFull { .. }) if !flight.cids.is_empty() => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Waits for one command of the request and books its result on its
    /// piece; the first error becomes the request's.
    fn reap_one(&mut self, flight: &mut Flight) {
        let (index, result) = match self.target.io_of(&self.handle) {
            Ok(io) => io.wait(&flight.cids, Private(())),
            Err(e) => (None, Err(e)),
        };
        match index.filter(|&i| i < flight.cids.len()) {
            Some(i) => {
                flight.cids.swap_remove(i);
                let owner = flight.owners.swap_remove(i);
                if let Some(piece) = flight.pieces.iter_mut().find(|p| p.at == owner) {
                    piece.pending = piece.pending.saturating_sub(1);
                    piece.kept |= result == Err(Error::Quarantined);
                }
                flight.kept |= result == Err(Error::Quarantined);
            }
            None => {
                // None of them will be delivered: the device may still
                // reach the memory of each.
                for piece in flight.pieces.iter_mut().filter(|p| p.pending > 0) {
                    piece.pending = 0;
                    piece.kept = true;
                }
                flight.kept = true;
                flight.cids.clear();
                flight.owners.clear();
            }
        }
        if let Err(e) = result {
            flight.error.get_or_insert(e);
        }
    }

    /// Ends a piece with nothing in flight: a read that went well is made
    /// visible to the CPU and, from a bounce buffer, handed to `drain`; its
    /// bounce buffer goes back to the free ones, or into quarantine.
    fn retire(&mut self, flight: &mut Flight, piece: Piece, drain: &mut impl FnMut(usize, &[u8])) {
        let read = flight.error.is_none()
            && piece.sent == piece.len
            && flight.direction == Direction::Read;
        match (piece.slot, flight.memory) {
            (None, Memory::Caller(base)) => {
                if let (true, Some(phys)) = (read, base.checked_add(piece.at as u64)) {
                    self.target.platform().dma_invalidate(phys, piece.len);
                }
            }
            (None, Memory::Bounce) => {}
            (Some(slot), _) if piece.kept => self.quarantine(slot),
            (Some(slot), _) => {
                if let (true, Some(bounce)) = (read, &self.pool[slot]) {
                    self.target
                        .platform()
                        .dma_invalidate(bounce.phys(), piece.len);
                    drain(piece.at, &bounce.as_slice()[..piece.len]);
                    self.copied += piece.len as u64;
                }
                // Cannot fail: it came from there.
                let _ = flight.free.push(slot);
            }
        }
    }
}
