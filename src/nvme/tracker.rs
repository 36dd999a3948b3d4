//! Per-queue table of commands in flight, indexed by command identifier.
//!
//! A CID is `index | generation << INDEX_BITS`. The generation changes every
//! time a slot is reused, so a completion that names a command which already
//! completed (a duplicate, a stale or a made-up CID) is recognised and dropped
//! instead of completing somebody else's request.

use heapless::Deque;

use crate::error::Error;
use crate::platform::{DmaRegion, Instant};

/// Bits of a CID that index the table.
pub const INDEX_BITS: u32 = 10;
const INDEX_MASK: u16 = (1 << INDEX_BITS) - 1;
const GENERATION_MASK: u8 = (1 << (16 - INDEX_BITS)) - 1;

/// What a slot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotState {
    /// Unused.
    Free,
    /// Submitted, awaiting its completion.
    InFlight,
    /// Completed (or failed by the driver), awaiting delivery to the caller.
    Done,
}

/// One command's bookkeeping.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) state: SlotState,
    generation: u8,
    pub(crate) opcode: u8,
    pub(crate) tag: u64,
    pub(crate) deadline: Instant,
    /// The caller's buffer, held while the device may access it.
    pub(crate) buffer: Option<DmaRegion>,
    pub(crate) result: Result<u32, Error>,
    /// Issued by a blocking wrapper: never delivered through `poll`.
    pub(crate) internal: bool,
}

impl Slot {
    const EMPTY: Slot = Slot {
        state: SlotState::Free,
        generation: 0,
        opcode: 0,
        tag: 0,
        deadline: Instant::from_nanos(0),
        buffer: None,
        result: Ok(0),
        internal: false,
    };
}

/// Fixed-capacity command table with `N` slots (`N <= 1 << INDEX_BITS`).
#[derive(Debug)]
pub(crate) struct Tracker<const N: usize> {
    slots: [Slot; N],
    free: heapless::Vec<u16, N>,
    done: Deque<u16, N>,
    in_flight: usize,
    /// No command in flight has a deadline before this (a lower bound), so
    /// `overdue` scans the table only once a deadline may have passed.
    next_deadline: Instant,
}

impl<const N: usize> Tracker<N> {
    const FITS: () = assert!(N <= 1 << INDEX_BITS && N > 0);

    /// A table that hands out at most `capacity` slots at once.
    pub(crate) fn new(capacity: usize) -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::FITS;
        let mut free = heapless::Vec::new();
        // Lowest index on top, so a lightly loaded queue reuses hot slots.
        for i in (0..capacity.min(N) as u16).rev() {
            let _ = free.push(i);
        }
        Self {
            slots: [const { Slot::EMPTY }; N],
            free,
            done: Deque::new(),
            in_flight: 0,
            next_deadline: Instant::from_nanos(u64::MAX),
        }
    }

    /// Takes a free slot, which takes `buffer`, and returns its CID.
    /// `internal`: issued by a blocking wrapper, never delivered by `poll`.
    pub(crate) fn allocate(
        &mut self,
        opcode: u8,
        tag: u64,
        deadline: Instant,
        internal: bool,
        buffer: &mut Option<DmaRegion>,
    ) -> Option<u16> {
        let index = self.free.pop()?;
        let slot = self.slots.get_mut(index as usize)?;
        slot.generation = slot.generation.wrapping_add(1) & GENERATION_MASK;
        slot.state = SlotState::InFlight;
        slot.opcode = opcode;
        slot.tag = tag;
        slot.deadline = deadline;
        slot.result = Ok(0);
        slot.internal = internal;
        slot.buffer = buffer.take();
        self.in_flight += 1;
        self.next_deadline = self.next_deadline.min(deadline);
        Some(index | (slot.generation as u16) << INDEX_BITS)
    }

    /// Gives back a slot that was allocated but never submitted.
    pub(crate) fn cancel(&mut self, cid: u16) -> Option<DmaRegion> {
        let index = self.lookup(cid, SlotState::InFlight)?;
        let slot = &mut self.slots[index];
        slot.state = SlotState::Free;
        self.in_flight -= 1;
        let _ = self.free.push(index as u16);
        slot.buffer.take()
    }

    fn lookup(&self, cid: u16, state: SlotState) -> Option<usize> {
        let index = (cid & INDEX_MASK) as usize;
        let slot = self.slots.get(index)?;
        (slot.state == state && slot.generation as u16 == cid >> INDEX_BITS).then_some(index)
    }

    /// The slot of an in-flight command, or `None` when `cid` names no
    /// command in flight (the device sent garbage or a duplicate).
    pub(crate) fn in_flight_mut(&mut self, cid: u16) -> Option<&mut Slot> {
        let index = self.lookup(cid, SlotState::InFlight)?;
        Some(&mut self.slots[index])
    }

    /// Marks an in-flight command done with `result`; it waits in the done
    /// queue until delivered. Returns false for an unknown CID.
    pub(crate) fn finish(&mut self, cid: u16, result: Result<u32, Error>) -> bool {
        self.finish_with(cid, |_| result)
    }

    /// Like [`Tracker::finish`], with the result computed from the
    /// command's opcode (one lookup for the whole completion).
    pub(crate) fn finish_with(
        &mut self,
        cid: u16,
        result: impl FnOnce(u8) -> Result<u32, Error>,
    ) -> bool {
        let Some(index) = self.lookup(cid, SlotState::InFlight) else {
            return false;
        };
        let slot = &mut self.slots[index];
        slot.state = SlotState::Done;
        slot.result = result(slot.opcode);
        self.in_flight -= 1;
        // Cannot overflow: at most N slots are done at once.
        let _ = self
            .done
            .push_back(index as u16 | (slot.generation as u16) << INDEX_BITS);
        true
    }

    /// Completes an in-flight command with the result computed from its
    /// opcode. A command from a caller (not `internal`) is handed back at
    /// once when `take` is set, freeing its slot; otherwise it waits in the
    /// done queue. One lookup for the whole completion.
    pub(crate) fn complete(
        &mut self,
        cid: u16,
        take: bool,
        result: impl FnOnce(u8) -> Result<u32, Error>,
        deliver: impl FnOnce(Delivered),
    ) -> Finished {
        let Some(index) = self.lookup(cid, SlotState::InFlight) else {
            return Finished::Unknown;
        };
        let slot = &mut self.slots[index];
        let result = result(slot.opcode);
        if !take || slot.internal {
            slot.state = SlotState::Done;
            slot.result = result;
            self.in_flight -= 1;
            // Cannot overflow: at most N slots are done at once.
            let _ = self.done.push_back(cid);
            return Finished::Queued;
        }
        slot.state = SlotState::Free;
        self.in_flight -= 1;
        let _ = self.free.push(index as u16);
        deliver(Delivered {
            cid,
            tag: slot.tag,
            result,
            buffer: slot.buffer.take(),
            internal: false,
        });
        Finished::Taken
    }

    /// Delivers the oldest done command, freeing its slot.
    pub(crate) fn take_done(&mut self) -> Option<Delivered> {
        let cid = self.done.pop_front()?;
        self.take(cid)
    }

    /// Delivers the done command `cid`, out of order (a blocking wait).
    pub(crate) fn take_done_cid(&mut self, cid: u16) -> Option<Delivered> {
        // One full rotation removes `cid` and keeps the others in order.
        let mut found = false;
        for _ in 0..self.done.len() {
            let c = self.done.pop_front()?;
            if !found && c == cid {
                found = true;
            } else {
                let _ = self.done.push_back(c);
            }
        }
        if found {
            self.take(cid)
        } else {
            None
        }
    }

    fn take(&mut self, cid: u16) -> Option<Delivered> {
        let index = self.lookup(cid, SlotState::Done)?;
        let slot = &mut self.slots[index];
        slot.state = SlotState::Free;
        let _ = self.free.push(index as u16);
        Some(Delivered {
            cid,
            tag: slot.tag,
            result: slot.result,
            buffer: slot.buffer.take(),
            internal: slot.internal,
        })
    }

    /// Commands done but not yet delivered.
    pub(crate) fn undelivered(&self) -> usize {
        self.done.len()
    }

    /// Commands in flight.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Whether no command is in flight or waiting for delivery.
    pub(crate) fn is_idle(&self) -> bool {
        self.in_flight == 0 && self.done.is_empty()
    }

    /// Fails every in-flight command with `error`, each exactly once. Returns
    /// how many were failed.
    pub(crate) fn fail_all(&mut self, error: Error) -> usize {
        let mut failed = 0;
        for index in 0..N {
            let slot = &self.slots[index];
            if slot.state == SlotState::InFlight {
                let cid = index as u16 | (slot.generation as u16) << INDEX_BITS;
                if self.finish(cid, Err(error)) {
                    failed += 1;
                }
            }
        }
        failed
    }

    /// Hands the buffers of every command not yet delivered to `keep`
    /// (quarantine: they are delivered without their buffer).
    pub(crate) fn take_buffers(&mut self, mut keep: impl FnMut(DmaRegion)) {
        for slot in self.slots.iter_mut() {
            if slot.state != SlotState::Free {
                if let Some(buffer) = slot.buffer.take() {
                    keep(buffer);
                }
            }
        }
    }

    /// An in-flight command whose deadline is before `now`. Scans the
    /// table only when the earliest deadline may have passed, and then
    /// learns the next one, so the tick and the blocking waits pay for a
    /// scan about once per deadline, not once per call.
    pub(crate) fn overdue(&mut self, now: Instant) -> Option<u16> {
        if now <= self.next_deadline {
            return None;
        }
        let mut next = Instant::from_nanos(u64::MAX);
        for (i, s) in self.slots.iter().enumerate() {
            if s.state != SlotState::InFlight {
                continue;
            }
            if s.deadline < now {
                // Stays a lower bound: this command is still in flight.
                self.next_deadline = s.deadline;
                return Some(i as u16 | (s.generation as u16) << INDEX_BITS);
            }
            next = next.min(s.deadline);
        }
        self.next_deadline = next;
        None
    }
}

/// What [`Tracker::complete`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Finished {
    /// No command in flight has that CID.
    Unknown,
    /// Done, waiting in the done queue.
    Queued,
    /// Done and handed back.
    Taken,
}

/// A finished command handed back to the caller.
#[derive(Debug)]
pub(crate) struct Delivered {
    pub(crate) cid: u16,
    pub(crate) tag: u64,
    pub(crate) result: Result<u32, Error>,
    pub(crate) buffer: Option<DmaRegion>,
    pub(crate) internal: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_and_duplicate_cids_are_rejected() {
        let mut t: Tracker<4> = Tracker::new(4);
        let cid = t
            .allocate(2, 7, Instant::from_nanos(10), false, &mut None)
            .unwrap();
        assert!(t.finish(cid, Ok(0)));
        assert!(!t.finish(cid, Ok(0)), "duplicate completion");
        let d = t.take_done().unwrap();
        assert_eq!((d.cid, d.tag), (cid, 7));
        let again = t
            .allocate(2, 8, Instant::from_nanos(10), false, &mut None)
            .unwrap();
        assert_eq!(again & INDEX_MASK, cid & INDEX_MASK, "slot reused");
        assert_ne!(again, cid, "with a new generation");
        assert!(!t.finish(cid, Ok(0)), "stale CID");
        assert!(!t.finish(0x3FF, Ok(0)), "index out of range");
    }

    #[test]
    fn fail_all_completes_each_once() {
        let mut t: Tracker<8> = Tracker::new(8);
        for i in 0..5 {
            t.allocate(1, i, Instant::from_nanos(0), false, &mut None)
                .unwrap();
        }
        assert_eq!(t.fail_all(Error::DeviceRemoved), 5);
        assert_eq!(t.fail_all(Error::DeviceRemoved), 0);
        let mut tags = std::vec::Vec::new();
        while let Some(d) = t.take_done() {
            assert_eq!(d.result, Err(Error::DeviceRemoved));
            tags.push(d.tag);
        }
        tags.sort();
        assert_eq!(tags, [0, 1, 2, 3, 4]);
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn overdue_finds_each_passed_deadline_whatever_it_skipped() {
        let mut t: Tracker<8> = Tracker::new(8);
        let at = Instant::from_nanos;
        let a = t.allocate(1, 1, at(10), false, &mut None).unwrap();
        let b = t.allocate(1, 2, at(20), false, &mut None).unwrap();
        assert_eq!(t.overdue(at(5)), None);
        assert_eq!(t.overdue(at(15)), Some(a));
        assert_eq!(t.overdue(at(15)), Some(a), "still in flight, still overdue");
        t.finish(a, Ok(0));
        assert_eq!(t.overdue(at(15)), None);
        let c = t.allocate(1, 3, at(12), false, &mut None).unwrap();
        assert_eq!(
            t.overdue(at(16)),
            Some(c),
            "an earlier deadline added later"
        );
        t.finish(c, Ok(0));
        assert_eq!(t.overdue(at(19)), None);
        assert_eq!(t.overdue(at(25)), Some(b));
    }

    #[test]
    fn out_of_order_delivery_keeps_the_rest() {
        let mut t: Tracker<8> = Tracker::new(8);
        let a = t
            .allocate(1, 1, Instant::from_nanos(0), false, &mut None)
            .unwrap();
        let b = t
            .allocate(1, 2, Instant::from_nanos(0), false, &mut None)
            .unwrap();
        let c = t
            .allocate(1, 3, Instant::from_nanos(0), false, &mut None)
            .unwrap();
        for cid in [a, b, c] {
            t.finish(cid, Ok(0));
        }
        assert_eq!(t.take_done_cid(b).unwrap().tag, 2);
        assert_eq!(t.take_done().unwrap().tag, 1);
        assert_eq!(t.take_done().unwrap().tag, 3);
        assert!(t.take_done().is_none());
    }
}
