//! What every I/O queue of a controller reads: the platform, the registers,
//! the settings, the served namespaces, the queue pairs (each behind its own
//! lock) and the gate that says whether submissions are taken.
//!
//! The owner of a controller changes these only through `&mut` (bring-up,
//! namespace changes); while the controller is shared ([`crate::nvme::share`])
//! they are read-only but for the queue pairs, which every user locks, and the
//! gate, which only the monitor moves.

use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use core::time::Duration;

use spin::Mutex;

use crate::error::{Error, Result};
use crate::nvme::config::ControllerConfig;
use crate::nvme::identify::ControllerInfo;
use crate::nvme::namespaces::Served;
use crate::nvme::qpair::QueuePair;
use crate::nvme::regs::{self, Cap, Csts};
use crate::platform::{Instant, Platform, RegisterAccess};

/// The part of a controller every I/O queue reads.
pub(crate) struct Shared<P: Platform, const QUEUES: usize, const DEPTH: usize> {
    pub(crate) platform: P,
    pub(crate) regs: P::Registers,
    pub(crate) regs_len: usize,
    pub(crate) config: ControllerConfig,
    pub(crate) cap: Cap,
    /// The I/O queue pairs, each behind its own lock: the owner reaches them
    /// with `Mutex::get_mut` (no atomic operation), a shared queue handle
    /// locks only its own.
    pub(crate) io: heapless::Vec<Mutex<QueuePair<DEPTH>>, QUEUES>,
    pub(crate) info: Option<ControllerInfo>,
    /// The served namespaces.
    pub(crate) namespaces: Served,
    /// `config.io_timeout` in nanoseconds, for the per-command deadline.
    pub(crate) io_timeout_ns: u64,
    pub(crate) queue_entries: u16,
    pub(crate) max_transfer: u32,
    /// Whether shared queues take submissions; see [`Gate`].
    pub(crate) gate: Gate,
}

impl<P: Platform, const QUEUES: usize, const DEPTH: usize> Shared<P, QUEUES, DEPTH> {
    pub(crate) fn new(
        platform: P,
        regs: P::Registers,
        regs_len: usize,
        config: ControllerConfig,
    ) -> Self {
        Self {
            platform,
            regs,
            regs_len,
            config,
            cap: Cap(0),
            io: heapless::Vec::new(),
            info: None,
            namespaces: Served::new(),
            io_timeout_ns: u64::try_from(config.io_timeout.as_nanos()).unwrap_or(u64::MAX),
            queue_entries: 0,
            max_transfer: 0,
            gate: Gate::new(),
        }
    }

    pub(crate) fn now(&self) -> Instant {
        self.platform.now()
    }

    /// Reads CSTS (one register read).
    pub(crate) fn read_status(&self) -> Csts {
        Csts::from_bits_retain(self.regs.read32(regs::CSTS))
    }

    /// CAP as a bring-up read and validated it.
    pub(crate) fn set_cap(&mut self, cap: Cap) {
        self.cap = cap;
    }

    /// Identify Controller data, and the largest transfer per command
    /// derived from it.
    pub(crate) fn set_identity(&mut self, info: ControllerInfo, max_transfer: u32) {
        self.info = Some(info);
        self.max_transfer = max_transfer;
    }

    /// Gives `count` queue pairs of `entries` each fresh rings (doorbell
    /// stride `dstrd`, PRP lists of `stride` bytes). Queue pairs of another
    /// geometry are replaced, but only when they are idle: after a reset the
    /// old command tables may still hold commands the reset failed, waiting
    /// for the caller's poll with their buffers, and must not be dropped.
    pub(crate) fn build_queues(
        &mut self,
        count: u16,
        entries: u16,
        dstrd: u8,
        stride: usize,
    ) -> Result<()> {
        if self.io.len() != count as usize || self.queue_entries != entries {
            if self.io.iter_mut().any(|q| !q.get_mut().tracker.is_idle()) {
                return Err(Error::BadDeviceValue {
                    field: "queue geometry after reset",
                    value: ((count as u64) << 16) | entries as u64,
                });
            }
            for q in self.io.iter_mut().map(Mutex::get_mut) {
                q.release(&self.platform);
            }
            self.io.clear();
            for qid in 1..=count {
                // count <= QUEUES, so this always fits.
                let _ = self.io.push(Mutex::new(QueuePair::new(qid, entries)));
            }
        }
        self.queue_entries = entries;
        for q in self.io.iter_mut().map(Mutex::get_mut) {
            q.attach_rings(&self.platform, entries, dstrd, stride)?;
        }
        Ok(())
    }

    /// The ready timeout from CAP.TO, validated and bounded.
    pub(crate) fn ready_timeout(&self) -> Duration {
        // TO = 0 is invalid; give such a controller the shortest legal wait.
        let units = self.cap.timeout_units().max(1) as u64;
        Duration::from_millis(units * 500).min(self.config.ready_timeout_limit)
    }
}

/// What a shared I/O queue may do, as the monitor last set it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Serving: submissions are taken, the rings are live.
    Open,
    /// An orderly detach drains: no submissions, completions still reaped.
    Draining,
    /// Commands were failed and the device is not yet proven unable to reach
    /// their buffers: no submissions, no ring access, nothing delivered.
    Holding,
    /// Not serving; the rings are not touched, commands already finished are
    /// delivered.
    Down,
}

/// Why a closed gate refuses submissions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    NotReady,
    Removed,
    Failed,
}

impl Refusal {
    pub(crate) fn error(self) -> Error {
        match self {
            Refusal::NotReady => Error::NotReady,
            Refusal::Removed => Error::DeviceRemoved,
            Refusal::Failed => Error::ControllerFailed,
        }
    }
}

/// The serving gate of shared queues. The monitor moves it (Release) before
/// it takes any queue lock to fail commands; a queue handle reads it
/// (Acquire) after taking its queue's lock. So once a teardown started
/// failing commands, no submission gets past a queue the teardown has not
/// reached yet, and every command failed is in a queue's table for its
/// owner's next poll.
pub(crate) struct Gate {
    /// Phase in bits 0-1, refusal in bits 2-3.
    word: AtomicU8,
    /// Set by a queue handle that saw a command succeed; the monitor takes
    /// it (a working controller forgets earlier resets).
    succeeded: AtomicBool,
}

impl Gate {
    const fn new() -> Self {
        Self {
            word: AtomicU8::new(Self::encode(Phase::Down, Refusal::NotReady)),
            succeeded: AtomicBool::new(false),
        }
    }

    const fn encode(phase: Phase, refusal: Refusal) -> u8 {
        (phase as u8) | ((refusal as u8) << 2)
    }

    /// Sets the gate (Release: what was written before is seen by whoever
    /// reads the new value).
    pub(crate) fn set(&self, phase: Phase, refusal: Refusal) {
        self.word
            .store(Self::encode(phase, refusal), Ordering::Release);
    }

    /// The gate as it is (Acquire).
    pub(crate) fn get(&self) -> (Phase, Refusal) {
        let word = self.word.load(Ordering::Acquire);
        let phase = match word & 3 {
            0 => Phase::Open,
            1 => Phase::Draining,
            2 => Phase::Holding,
            _ => Phase::Down,
        };
        let refusal = match (word >> 2) & 3 {
            1 => Refusal::Removed,
            2 => Refusal::Failed,
            _ => Refusal::NotReady,
        };
        (phase, refusal)
    }

    /// Notes that a command succeeded (one load, and a store only the first
    /// time until the monitor takes it).
    pub(crate) fn note_success(&self) {
        if !self.succeeded.load(Ordering::Relaxed) {
            self.succeeded.store(true, Ordering::Relaxed);
        }
    }

    /// Whether a command succeeded since the last call.
    pub(crate) fn take_success(&self) -> bool {
        self.succeeded.load(Ordering::Relaxed) && self.succeeded.swap(false, Ordering::Relaxed)
    }
}
