//! Asynchronous events and the log pages behind them: outstanding
//! Asynchronous Event Requests, events masked until their log page is read
//! with "retain asynchronous event" clear, SMART / Health state, namespace
//! attachment and the Changed Namespace List, and the ways a lying
//! controller can answer (short or garbage log pages, event storms,
//! events of unknown types).

use std::collections::{BTreeSet, VecDeque};

use bare_nvme::spec::command::{sc, sct, Status, SubmissionEntry};
use bare_nvme::spec::log::{async_config, event_type, lid, AsyncEvent, RETAIN_ASYNC_EVENT};

use crate::controller::{Controller, Env};
use crate::queues::Outcome;
use crate::spec::garbage_bytes;

/// Command specific status: Asynchronous Event Request Limit Exceeded.
const AER_LIMIT_EXCEEDED: u8 = 0x05;
/// Asynchronous Event Request limit (0-based), as QEMU 7.2's default.
pub(crate) const AERL: u8 = 3;
/// Composite temperature the controller reports, as QEMU 7.2 (50 C).
const TEMPERATURE: u16 = 323;
/// Default over-temperature threshold, as QEMU 7.2 (70 C).
const OVER_THRESHOLD: u16 = 343;

/// How a controller lies about its log pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLie {
    /// Only this many bytes of each log page are transferred (the rest of
    /// the host buffer keeps what it held).
    Short(usize),
    /// Log pages are pseudo-random bytes from this seed.
    Garbage(u64),
}

/// The event state of one controller.
#[derive(Debug, Default)]
pub(crate) struct Events {
    /// CIDs of outstanding Asynchronous Event Requests, oldest first.
    pub(crate) aers: VecDeque<u16>,
    /// Events waiting for a request (or for their type to be unmasked).
    queue: VecDeque<AsyncEvent>,
    /// Event types reported and not yet acknowledged by a log page read.
    masked: u8,
    /// Asynchronous Event Configuration (Set Features 0Bh).
    pub(crate) config: u32,
    /// SMART critical warning bits.
    pub(crate) warning: u8,
    pub(crate) over_threshold: u16,
    pub(crate) under_threshold: u16,
    /// Namespaces changed since the list was last read.
    changed: BTreeSet<u32>,
    pub(crate) lie: Option<LogLie>,
    /// Events still to fire at every request, ignoring masks.
    pub(crate) storm: u32,
    /// Requests refused for exceeding the limit.
    pub(crate) over_limit: u32,
}

impl Events {
    pub(crate) fn new() -> Self {
        Self {
            over_threshold: OVER_THRESHOLD,
            ..Self::default()
        }
    }

    /// A controller reset: outstanding requests are gone, masks cleared,
    /// the configuration back to its default.
    pub(crate) fn reset(&mut self) {
        self.aers.clear();
        self.masked = 0;
        self.config = 0;
    }
}

impl Controller {
    /// An Asynchronous Event Request arrived: held until an event, or
    /// refused beyond the limit (no completion now otherwise).
    pub(crate) fn async_event_request(
        &mut self,
        sqe: &SubmissionEntry,
        env: &mut Env,
    ) -> Option<Outcome> {
        if self.events.aers.len() > AERL as usize {
            self.events.over_limit += 1;
            return Some(Outcome::err(Status::new(
                sct::COMMAND_SPECIFIC,
                AER_LIMIT_EXCEEDED,
            )));
        }
        self.events.aers.push_back(sqe.cid());
        self.deliver_events(env);
        None
    }

    /// Queues an event and completes a request with it if one is
    /// outstanding and its type is not masked.
    pub(crate) fn raise(&mut self, event: AsyncEvent, env: &mut Env) {
        self.events.queue.push_back(event);
        self.deliver_events(env);
    }

    pub(crate) fn deliver_events(&mut self, env: &mut Env) {
        if !self.running() {
            return;
        }
        while !self.events.aers.is_empty() {
            if self.events.storm > 0 {
                self.events.storm -= 1;
                let storm = AsyncEvent {
                    kind: event_type::SMART_HEALTH,
                    info: 0,
                    log_page: lid::SMART_HEALTH,
                };
                self.post_event(storm, env);
                continue;
            }
            let masked = self.events.masked;
            let Some(i) = self
                .events
                .queue
                .iter()
                .position(|e| masked & (1 << e.kind) == 0)
            else {
                return;
            };
            let event = self.events.queue.remove(i).expect("found");
            self.events.masked |= 1 << event.kind;
            self.post_event(event, env);
        }
    }

    fn post_event(&mut self, event: AsyncEvent, env: &mut Env) {
        let cid = self
            .events
            .aers
            .pop_front()
            .expect("an outstanding request");
        self.complete(0, cid, Outcome::ok(event.to_dw0()), env);
    }

    /// Sets the SMART critical warning bits; each newly set bit raises a
    /// SMART / Health event when the configuration enables it (as QEMU's
    /// `smart_critical_warning` property does).
    pub(crate) fn set_critical_warning(&mut self, bits: u8, env: &mut Env) {
        let new = bits & !self.events.warning;
        self.events.warning = bits;
        for bit in 0..8 {
            if new & (1 << bit) != 0
                && self.events.config & async_config::SMART_ALL & (1 << bit) != 0
            {
                let info = match bit {
                    0 => 2, // spare below threshold
                    1 => 1, // temperature threshold
                    _ => 0, // reliability
                };
                let event = AsyncEvent {
                    kind: event_type::SMART_HEALTH,
                    info,
                    log_page: lid::SMART_HEALTH,
                };
                self.raise(event, env);
            }
        }
    }

    /// Attaches or detaches namespace `nsid`; a change raises a Namespace
    /// Attribute Notice unless one is already pending for it.
    pub(crate) fn set_attached(&mut self, nsid: u32, attached: bool, env: &mut Env) -> bool {
        let Some(ns) = self.namespaces.get_mut(nsid as usize - 1) else {
            return false;
        };
        if ns.attached == attached {
            return false;
        }
        ns.attached = attached;
        if !attached {
            // What the cache held is written back as the namespace goes.
            ns.flush();
        }
        let first = self.events.changed.insert(nsid);
        if first && self.events.config & async_config::NAMESPACE_ATTRIBUTE != 0 {
            let event = AsyncEvent {
                kind: event_type::NOTICE,
                info: 0,
                log_page: lid::CHANGED_NAMESPACES,
            };
            self.raise(event, env);
        }
        true
    }

    /// Get Log Page.
    pub(crate) fn get_log_page(&mut self, sqe: &SubmissionEntry, env: &mut Env) -> Outcome {
        let page = (sqe.cdw10 & 0xFF) as u8;
        let dwords = ((sqe.cdw11 & 0xFFFF) << 16 | sqe.cdw10 >> 16) as usize + 1;
        let retain = sqe.cdw10 & RETAIN_ASYNC_EVENT != 0;
        let mut data = match page {
            lid::SMART_HEALTH => self.smart_log(),
            lid::FIRMWARE_SLOT => self.firmware_log(),
            lid::ERROR_INFORMATION => vec![0; 64],
            lid::CHANGED_NAMESPACES => {
                let mut p = vec![0u8; 4096];
                for (i, nsid) in self.events.changed.iter().take(1024).enumerate() {
                    p[i * 4..i * 4 + 4].copy_from_slice(&nsid.to_le_bytes());
                }
                if !retain {
                    self.events.changed.clear();
                }
                p
            }
            _ => vec![0; dwords * 4],
        };
        if !retain {
            let kind = match page {
                lid::SMART_HEALTH => Some(event_type::SMART_HEALTH),
                lid::CHANGED_NAMESPACES => Some(event_type::NOTICE),
                lid::ERROR_INFORMATION => Some(event_type::ERROR),
                _ => None,
            };
            if let Some(kind) = kind {
                self.events.masked &= !(1 << kind);
                // Events of the type still queued are answered by this read.
                self.events.queue.retain(|e| e.kind != kind);
            }
        }
        match self.events.lie {
            Some(LogLie::Garbage(seed)) => garbage_bytes(seed, &mut data),
            Some(LogLie::Short(n)) => data.truncate(n),
            None => {}
        }
        data.truncate(dwords * 4);
        let outcome = match self.transfer_out(sqe, &data, env) {
            Ok(()) => Outcome::ok(0),
            Err(s) => Outcome::err(s),
        };
        if !retain {
            self.deliver_events(env);
        }
        outcome
    }

    fn smart_log(&self) -> Vec<u8> {
        let mut p = vec![0u8; 512];
        let over = TEMPERATURE >= self.events.over_threshold;
        let under = self.events.under_threshold != 0 && TEMPERATURE <= self.events.under_threshold;
        p[0] = self.events.warning | if over || under { 0x02 } else { 0 };
        p[1..3].copy_from_slice(&TEMPERATURE.to_le_bytes());
        p[3] = 100;
        p[4] = 10;
        p[128] = 42; // power-on hours
        p
    }

    fn firmware_log(&self) -> Vec<u8> {
        let mut p = vec![0u8; 512];
        p[0] = 1;
        let fw = self.spec.firmware.as_bytes();
        let n = fw.len().min(8);
        p[8..16].fill(b' ');
        p[8..8 + n].copy_from_slice(&fw[..n]);
        p
    }

    /// Namespace Attachment (select 0: attach, 1: detach) for the
    /// controllers in the list, which must name this one.
    pub(crate) fn namespace_attachment(&mut self, sqe: &SubmissionEntry, env: &mut Env) -> Outcome {
        let mut list = vec![0u8; 4096];
        if let Err(s) = self.transfer_in(sqe, &mut list, env) {
            return Outcome::err(s);
        }
        let count = u16::from_le_bytes([list[0], list[1]]) as usize;
        let names_us = (0..count.min(2047))
            .any(|i| u16::from_le_bytes([list[2 + 2 * i], list[3 + 2 * i]]) == CONTROLLER_ID);
        let nsid = sqe.nsid;
        if !names_us || nsid == 0 || nsid as usize > self.namespaces.len() {
            return Outcome::err(Status::new(sct::GENERIC, sc::INVALID_FIELD));
        }
        let attach = match sqe.cdw10 & 0xF {
            0 => true,
            1 => false,
            _ => return Outcome::err(Status::new(sct::GENERIC, sc::INVALID_FIELD)),
        };
        // Attaching an attached namespace (or detaching a detached one)
        // fails as on QEMU.
        if self.set_attached(nsid, attach, env) {
            Outcome::ok(0)
        } else {
            // Namespace Already Attached / Namespace Not Attached.
            let code = if attach { 0x18 } else { 0x1A };
            Outcome::err(Status::new(sct::COMMAND_SPECIFIC, code))
        }
    }
}

/// The controller ID in Identify Controller.
pub(crate) const CONTROLLER_ID: u16 = 1;
