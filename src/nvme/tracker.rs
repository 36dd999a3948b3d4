//! Per-queue table of commands in flight, indexed by command identifier.
//!
//! A CID is `index | generation << INDEX_BITS`. The generation changes every
//! time a slot is reused, so a completion that names a command which already
//! completed (a duplicate, a stale or a made-up CID) is recognised and dropped
//! instead of completing somebody else's request.

use heapless::Deque;

use crate::error::Error;
use crate::platform::{DmaRegion, Instant};
use crate::spec::command::Status;

/// The end of the free list (no slot has this index).
const NO_SLOT: u32 = u32::MAX;

/// Bits of a CID that index the table.
pub const INDEX_BITS: u32 = 10;
const INDEX_MASK: u16 = (1 << INDEX_BITS) - 1;
const GENERATION_MASK: u8 = (1 << (16 - INDEX_BITS)) - 1;

/// What a slot holds; a done slot also says how to read its `value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotState {
    /// Unused.
    Free,
    /// Submitted, awaiting its completion.
    InFlight,
    /// Completed successfully; `value` is Dword 0 of the completion.
    Succeeded,
    /// Completed with an error status; `value` is the completion's status
    /// field (without the phase bit).
    DeviceError,
    /// Failed by the driver; `value` indexes the table's failure list.
    Failed,
}

impl SlotState {
    /// Completed (or failed by the driver), awaiting delivery.
    fn is_done(self) -> bool {
        matches!(
            self,
            SlotState::Succeeded | SlotState::DeviceError | SlotState::Failed
        )
    }
}

/// One command's bookkeeping, kept small (48 bytes on 64-bit targets): the
/// result is stored as a state and a 32-bit value, never as an `Error`.
#[derive(Debug)]
pub(crate) struct Slot {
    /// The caller's buffer, held while the device may access it.
    pub(crate) buffer: Option<DmaRegion>,
    pub(crate) tag: u64,
    pub(crate) deadline: Instant,
    /// Done: the result (see [`SlotState`]); free: the next free slot's
    /// index ([`NO_SLOT`] at the end of the list).
    value: u32,
    pub(crate) state: SlotState,
    generation: u8,
    pub(crate) opcode: u8,
    /// Issued by a blocking wrapper: never delivered through `poll`.
    pub(crate) internal: bool,
}

/// Distinct errors that failed commands not yet delivered. Every reset and
/// the one teardown of a controller fail commands once each, and a
/// controller is given up after `MAX_RESETS` resets in a row, so this many
/// always suffice; failures with an error already listed share its entry.
const FAILURES: usize = crate::nvme::config::MAX_RESETS as usize + 1;

/// An error that failed commands, and how many of them are undelivered.
#[derive(Debug, Clone, Copy)]
struct Failure {
    error: Error,
    undelivered: u16,
}

/// Fixed-capacity command table with up to `N` slots (`N <= 1 << INDEX_BITS`).
/// Only the slots a queue can use are initialised.
#[derive(Debug)]
pub(crate) struct Tracker<const N: usize> {
    slots: heapless::Vec<Slot, N>,
    /// The first free slot, [`NO_SLOT`] when none is: the free slots form
    /// a list through their `value` (no separate stack, no capacity check).
    free: u32,
    done: Deque<u16, N>,
    failures: heapless::Vec<Failure, FAILURES>,
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
        let capacity = capacity.min(N);
        let mut slots = heapless::Vec::new();
        for i in 0..capacity {
            let _ = slots.push(Slot {
                buffer: None,
                tag: 0,
                deadline: Instant::from_nanos(0),
                // Lowest index first, so a lightly loaded queue reuses hot
                // slots.
                value: if i + 1 < capacity {
                    (i + 1) as u32
                } else {
                    NO_SLOT
                },
                state: SlotState::Free,
                generation: 0,
                opcode: 0,
                internal: false,
            });
        }
        Self {
            slots,
            free: if capacity > 0 { 0 } else { NO_SLOT },
            done: Deque::new(),
            failures: heapless::Vec::new(),
            in_flight: 0,
            next_deadline: Instant::from_nanos(u64::MAX),
        }
    }

    /// Takes a free slot, which takes `buffer`, and returns its CID.
    /// `internal`: issued by a blocking wrapper, never delivered by `poll`.
    #[inline(always)]
    pub(crate) fn allocate(
        &mut self,
        opcode: u8,
        tag: u64,
        deadline: Instant,
        internal: bool,
        buffer: &mut Option<DmaRegion>,
    ) -> Option<u16> {
        let index = self.free;
        let slot = self.slots.get_mut(index as usize)?;
        self.free = slot.value;
        slot.generation = slot.generation.wrapping_add(1) & GENERATION_MASK;
        slot.state = SlotState::InFlight;
        slot.opcode = opcode;
        slot.tag = tag;
        slot.deadline = deadline;
        slot.internal = internal;
        slot.buffer = buffer.take();
        self.in_flight += 1;
        self.next_deadline = self.next_deadline.min(deadline);
        Some(index as u16 | (slot.generation as u16) << INDEX_BITS)
    }

    /// Gives back a slot that was allocated but never submitted.
    pub(crate) fn cancel(&mut self, cid: u16) -> Option<DmaRegion> {
        let index = self.lookup_in_flight(cid)?;
        let slot = &mut self.slots[index];
        slot.state = SlotState::Free;
        self.in_flight -= 1;
        slot.value = core::mem::replace(&mut self.free, index as u32);
        slot.buffer.take()
    }

    #[inline(always)]
    fn lookup(&self, cid: u16, state: impl Fn(SlotState) -> bool) -> Option<usize> {
        let index = (cid & INDEX_MASK) as usize;
        let slot = self.slots.get(index)?;
        (state(slot.state) && slot.generation as u16 == cid >> INDEX_BITS).then_some(index)
    }

    #[inline(always)]
    fn lookup_in_flight(&self, cid: u16) -> Option<usize> {
        let index = (cid & INDEX_MASK) as usize;
        let slot = self.slots.get(index)?;
        (slot.state == SlotState::InFlight && slot.generation as u16 == cid >> INDEX_BITS)
            .then_some(index)
    }

    fn lookup_done(&self, cid: u16) -> Option<usize> {
        self.lookup(cid, SlotState::is_done)
    }

    /// The slot of an in-flight command, or `None` when `cid` names no
    /// command in flight (the device sent garbage or a duplicate).
    pub(crate) fn in_flight_mut(&mut self, cid: u16) -> Option<&mut Slot> {
        let index = self.lookup_in_flight(cid)?;
        Some(&mut self.slots[index])
    }

    /// Completes an in-flight command with a completion's status field
    /// (without the phase bit) and Dword 0. A command from a caller (not
    /// `internal`) is handed back at once when `take` is set, freeing its
    /// slot; otherwise it waits in the done queue. One lookup for the whole
    /// completion.
    #[inline(always)]
    pub(crate) fn complete(
        &mut self,
        cid: u16,
        status: u16,
        dw0: u32,
        take: bool,
        deliver: &mut impl FnMut(Taken),
    ) -> Finished {
        let Some(index) = self.lookup_in_flight(cid) else {
            return Finished::Unknown;
        };
        let slot = &mut self.slots[index];
        self.in_flight -= 1;
        // Success (status field 0) is by far the common case: no decoding.
        let failed = status != 0 && !Status::from_field(status).is_success();
        if !take || slot.internal {
            (slot.state, slot.value) = if failed {
                (SlotState::DeviceError, status as u32)
            } else {
                (SlotState::Succeeded, dw0)
            };
            // Cannot overflow: at most N slots are done at once.
            let _ = self.done.push_back(cid);
            return Finished::Queued;
        }
        slot.state = SlotState::Free;
        slot.value = core::mem::replace(&mut self.free, index as u32);
        // The status stays a number here; only a failure becomes an `Error`,
        // and only where it is handed to the caller.
        deliver(Taken {
            cid,
            status: if failed { status } else { 0 },
            opcode: slot.opcode,
            tag: slot.tag,
            buffer: slot.buffer.take(),
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
        let index = self.lookup_done(cid)?;
        let slot = &mut self.slots[index];
        let result = match slot.state {
            SlotState::Succeeded => Ok(slot.value),
            SlotState::DeviceError => Err(device_error(slot.value as u16, slot.opcode)),
            _ => {
                let failure = self.failures.get_mut(slot.value as usize);
                let error = failure.as_ref().map_or(Error::Aborted, |f| f.error);
                if let Some(f) = failure {
                    f.undelivered = f.undelivered.saturating_sub(1);
                }
                Err(error)
            }
        };
        slot.state = SlotState::Free;
        slot.value = core::mem::replace(&mut self.free, index as u32);
        Some(Delivered {
            cid,
            tag: slot.tag,
            result,
            buffer: slot.buffer.take(),
            opcode: slot.opcode,
            internal: slot.internal,
        })
    }

    /// Whether a command waits in the done queue.
    #[inline(always)]
    pub(crate) fn has_done(&self) -> bool {
        !self.done.is_empty()
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
        if self.in_flight == 0 {
            return 0;
        }
        let entry = self.failure_entry(error);
        let mut failed = 0;
        for (index, slot) in self.slots.iter_mut().enumerate() {
            if slot.state == SlotState::InFlight {
                slot.state = SlotState::Failed;
                slot.value = entry as u32;
                // Cannot overflow: at most N slots are done at once.
                let _ = self
                    .done
                    .push_back(index as u16 | (slot.generation as u16) << INDEX_BITS);
                failed += 1;
            }
        }
        self.in_flight -= failed;
        if let Some(f) = self.failures.get_mut(entry) {
            f.undelivered = f.undelivered.saturating_add(failed as u16);
        }
        failed
    }

    /// The failure list entry for `error`: the one already holding it, else
    /// one whose commands were all delivered, else a new one. Should all be
    /// taken by other undelivered errors (more distinct causes than a
    /// controller's resets and teardown produce), the newest entry is shared.
    fn failure_entry(&mut self, error: Error) -> usize {
        if let Some(i) = self.failures.iter().position(|f| f.error == error) {
            return i;
        }
        let fresh = Failure {
            error,
            undelivered: 0,
        };
        if let Some(i) = self.failures.iter().position(|f| f.undelivered == 0) {
            self.failures[i] = fresh;
            return i;
        }
        match self.failures.push(fresh) {
            Ok(()) => self.failures.len() - 1,
            Err(_) => FAILURES - 1,
        }
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

/// The error of a command the device completed with status field `status`.
fn device_error(status: u16, opcode: u8) -> Error {
    Error::CommandFailed {
        status: Status::from_field(status),
        opcode,
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

/// A caller's command the device completed, handed back straight from the
/// ring: compact, the status a number (0: success).
#[derive(Debug)]
pub(crate) struct Taken {
    pub(crate) cid: u16,
    /// The completion's status field without the phase bit; 0 on success.
    pub(crate) status: u16,
    pub(crate) opcode: u8,
    pub(crate) tag: u64,
    pub(crate) buffer: Option<DmaRegion>,
}

impl Taken {
    /// The result of a command with status field `status` (`Ok` or the
    /// device's error).
    pub(crate) fn failure(status: u16, opcode: u8) -> Result<u32, Error> {
        if status == 0 {
            Ok(0)
        } else {
            Err(device_error(status, opcode))
        }
    }
}

/// A finished command handed back to the caller.
#[derive(Debug)]
pub(crate) struct Delivered {
    pub(crate) cid: u16,
    pub(crate) tag: u64,
    pub(crate) result: Result<u32, Error>,
    pub(crate) buffer: Option<DmaRegion>,
    pub(crate) internal: bool,
    /// The command's opcode: a read's buffer needs an invalidate.
    pub(crate) opcode: u8,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finish<const N: usize>(t: &mut Tracker<N>, cid: u16) -> bool {
        t.complete(cid, 0, 0, false, &mut |_| {}) != Finished::Unknown
    }

    #[test]
    fn a_slot_takes_at_most_48_bytes() {
        #[cfg(target_pointer_width = "64")]
        assert!(
            core::mem::size_of::<Slot>() <= 48,
            "{}",
            core::mem::size_of::<Slot>()
        );
    }

    #[test]
    fn each_failed_batch_keeps_its_own_error() {
        let mut t: Tracker<8> = Tracker::new(8);
        let at = Instant::from_nanos(0);
        let a = t.allocate(1, 1, at, false, &mut None).unwrap();
        assert_eq!(t.fail_all(Error::Aborted), 1);
        let b = t.allocate(1, 2, at, false, &mut None).unwrap();
        let timeout = Error::timeout(
            crate::error::Wait::IoCommand,
            core::time::Duration::from_secs(1),
        );
        assert_eq!(t.fail_all(timeout), 1);
        let c = t.allocate(2, 3, at, false, &mut None).unwrap();
        assert_eq!(t.complete(c, 0x4, 0, false, &mut |_| {}), Finished::Queued);
        let d = t.allocate(2, 4, at, false, &mut None).unwrap();
        assert_eq!(t.complete(d, 0, 77, false, &mut |_| {}), Finished::Queued);
        assert_eq!(t.fail_all(Error::DeviceRemoved), 0, "nothing in flight");
        assert_eq!(t.take_done_cid(b).unwrap().result, Err(timeout));
        assert_eq!(t.take_done_cid(a).unwrap().result, Err(Error::Aborted));
        assert_eq!(
            t.take_done_cid(c).unwrap().result,
            Err(device_error(0x4, 2))
        );
        assert_eq!(t.take_done_cid(d).unwrap().result, Ok(77));
        // Delivered failures free their entry for another cause.
        let e = t.allocate(1, 5, at, false, &mut None).unwrap();
        assert_eq!(t.fail_all(Error::DeviceRemoved), 1);
        assert_eq!(
            t.take_done_cid(e).unwrap().result,
            Err(Error::DeviceRemoved)
        );
        assert!(t.failures.len() <= 2, "entries are reused");
    }

    #[test]
    fn stale_and_duplicate_cids_are_rejected() {
        let mut t: Tracker<4> = Tracker::new(4);
        let cid = t
            .allocate(2, 7, Instant::from_nanos(10), false, &mut None)
            .unwrap();
        assert!(finish(&mut t, cid));
        assert!(!finish(&mut t, cid), "duplicate completion");
        let d = t.take_done().unwrap();
        assert_eq!((d.cid, d.tag), (cid, 7));
        let again = t
            .allocate(2, 8, Instant::from_nanos(10), false, &mut None)
            .unwrap();
        assert_eq!(again & INDEX_MASK, cid & INDEX_MASK, "slot reused");
        assert_ne!(again, cid, "with a new generation");
        assert!(!finish(&mut t, cid), "stale CID");
        assert!(!finish(&mut t, 0x3FF), "index out of range");
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
        finish(&mut t, a);
        assert_eq!(t.overdue(at(15)), None);
        let c = t.allocate(1, 3, at(12), false, &mut None).unwrap();
        assert_eq!(
            t.overdue(at(16)),
            Some(c),
            "an earlier deadline added later"
        );
        finish(&mut t, c);
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
            finish(&mut t, cid);
        }
        assert_eq!(t.take_done_cid(b).unwrap().tag, 2);
        assert_eq!(t.take_done().unwrap().tag, 1);
        assert_eq!(t.take_done().unwrap().tag, 3);
        assert!(t.take_done().is_none());
    }
}
