//! Features a caller can read and change (temperature threshold, volatile
//! write cache), the blocking admin exchange they share with the
//! passthrough, and the cache flush an orderly detach starts with.

use log::warn;

use crate::error::{Error, Result};
use crate::link::DeviceLink;
use crate::nvme::command::{admin, feature, SubmissionEntry};
use crate::nvme::controller::{Controller, MAX_NAMESPACES};
use crate::nvme::engine::Engine;
use crate::nvme::io::IoOp;
use crate::platform::Platform;
use spin::Mutex;

/// Temperature Threshold dword 11 bits 21:20: an under-temperature
/// threshold (clear: over-temperature).
const UNDER_TEMPERATURE: u32 = 1 << 20;

/// Which temperature threshold (composite temperature).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Threshold {
    /// Warn above this temperature.
    Over,
    /// Warn below this temperature.
    Under,
}

impl Threshold {
    fn select(self) -> u32 {
        match self {
            Threshold::Over => 0,
            Threshold::Under => UNDER_TEMPERATURE,
        }
    }
}

impl<P: Platform, L: DeviceLink, const QUEUES: usize, const DEPTH: usize>
    Controller<P, L, QUEUES, DEPTH>
{
    /// Runs one admin command for a caller, blocking until it completes
    /// (within the admin deadline). A command that times out resets the
    /// controller, and this returns only once the reset proved the device
    /// stopped (it may have written memory the command named), with the
    /// timeout, or [`Error::Quarantined`] if no proof came.
    pub(crate) fn admin_blocking(&mut self, sqe: SubmissionEntry) -> Result<u32> {
        self.ensure_ready()?;
        let epoch = self.owned.events.epoch();
        let kept = self.owned.lifecycle.quarantine().regions;
        let ticket =
            self.owned
                .admin
                .submit(&self.shared.platform, &self.shared.regs, sqe, self.now())?;
        let mut cause = Error::Aborted;
        loop {
            if self.owned.events.epoch() != epoch {
                // A reset or the end of the controller abandoned the
                // command: wait for the device to be proven stopped.
                while self.holding() {
                    let _ = self.advance();
                }
                if self.owned.lifecycle.quarantine().regions != kept {
                    return Err(Error::Quarantined);
                }
                return Err(self.owned.lifecycle.failure().unwrap_or(cause));
            }
            match self.owned.admin.poll(
                &self.shared.platform,
                &self.shared.regs,
                ticket,
                self.now(),
            ) {
                None => {}
                Some(Err(e @ Error::Timeout { .. })) => {
                    warn!(
                        "nvme: admin command {:#04x} timed out, resetting",
                        sqe.opcode()
                    );
                    cause = e;
                    self.reset(e);
                }
                Some(result) => {
                    if result.is_ok() {
                        self.note_success();
                    }
                    return result;
                }
            }
        }
    }

    fn get_feature(&mut self, fid: u32, cdw11: u32) -> Result<u32> {
        let mut sqe = SubmissionEntry::new(admin::GET_FEATURES);
        sqe.cdw10 = fid;
        sqe.cdw11 = cdw11;
        self.admin_blocking(sqe)
    }

    fn set_feature(&mut self, fid: u32, cdw11: u32) -> Result<u32> {
        let mut sqe = SubmissionEntry::new(admin::SET_FEATURES);
        sqe.cdw10 = fid;
        sqe.cdw11 = cdw11;
        self.admin_blocking(sqe)
    }

    /// The composite temperature threshold `which`, in kelvins (Get
    /// Features, blocking).
    pub fn temperature_threshold(&mut self, which: Threshold) -> Result<u16> {
        Ok(self.get_feature(feature::TEMPERATURE_THRESHOLD, which.select())? as u16)
    }

    /// Sets the composite temperature threshold `which` to `kelvins` (Set
    /// Features, blocking). Crossing it raises a SMART / Health event,
    /// reported as `Event::Health`.
    pub fn set_temperature_threshold(&mut self, which: Threshold, kelvins: u16) -> Result<()> {
        if kelvins == 0 {
            return Err(Error::InvalidArgument {
                what: "temperature threshold of 0 K",
            });
        }
        let cdw11 = kelvins as u32 | which.select();
        self.set_feature(feature::TEMPERATURE_THRESHOLD, cdw11)
            .map(|_| ())
    }

    fn require_volatile_cache(&self) -> Result<()> {
        match self.shared.info {
            Some(info) if info.volatile_write_cache => Ok(()),
            _ => Err(Error::Unsupported {
                what: "a volatile write cache",
            }),
        }
    }

    /// Whether the volatile write cache is enabled (Get Features, blocking).
    /// `Unsupported` for a controller without one.
    pub fn volatile_write_cache(&mut self) -> Result<bool> {
        self.require_volatile_cache()?;
        Ok(self.get_feature(feature::VOLATILE_WRITE_CACHE, 0)? & 1 != 0)
    }

    /// Enables or disables the volatile write cache (Set Features,
    /// blocking). Disabling makes every later write durable when it
    /// completes; the controller writes back what the cache holds.
    /// `Unsupported` for a controller without one.
    pub fn set_volatile_write_cache(&mut self, enabled: bool) -> Result<()> {
        self.require_volatile_cache()?;
        self.set_feature(feature::VOLATILE_WRITE_CACHE, enabled as u32)
            .map(|_| ())
    }

    /// At the start of an orderly detach of a controller with a volatile
    /// write cache: a Flush per namespace served, which the drain waits
    /// for, so cached writes are durable even if the shutdown that follows
    /// does not complete. Nothing for a controller without such a cache.
    pub(crate) fn flush_before_detach(&mut self) {
        if self.require_volatile_cache().is_err() {
            return;
        }
        let nsids: heapless::Vec<u32, MAX_NAMESPACES> = self
            .shared
            .namespaces
            .list()
            .iter()
            .map(|n| n.id())
            .collect();
        for nsid in nsids {
            match self.prepare(0, IoOp::Flush { nsid }, None, 0, true, &mut None) {
                Ok(cid) => self.owned.detach_flushes.submitted(cid),
                Err(e) => warn!("nvme: flush of namespace {nsid} before detach: {e}"),
            }
        }
    }

    /// Takes the detach's flushes that ended from the command table
    /// (nobody else collects a driver's own command); those still in flight
    /// are left to the teardown.
    pub(crate) fn collect_detach_flushes(&mut self) {
        match self.shared.io.first_mut().map(Mutex::get_mut) {
            Some(q) => self.owned.detach_flushes.collect(&mut q.tracker),
            None => {
                self.owned.detach_flushes.forget::<DEPTH>(None);
            }
        }
    }
}

impl<P: Platform, L: DeviceLink, const QUEUES: usize, const DEPTH: usize>
    Engine<'_, P, L, QUEUES, DEPTH>
{
    /// The detach's own flushes still in flight (not caller commands, so a
    /// teardown does not count them); forgets them.
    pub(crate) fn own_commands_in_flight(&mut self) -> usize {
        match self.shared.io.first() {
            Some(q) => self
                .owned
                .detach_flushes
                .forget(Some(&mut q.lock().tracker)),
            None => self.owned.detach_flushes.forget::<DEPTH>(None),
        }
    }
}
