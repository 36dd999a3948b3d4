//! Asynchronous events, collected by polling: no interrupt is needed.
//!
//! Bring-up ends by enabling the events the driver understands (SMART /
//! Health critical warnings, namespace attribute notices) and submitting up
//! to [`MAX_ASYNC_EVENTS`] Asynchronous Event Requests (bounded by the
//! controller's AERL). They sit on the admin queue without a deadline: they
//! complete only when something happens, so they are never a hang, are not
//! aborted, and are not caller commands (a teardown ends them silently and
//! does not count them). The tick reaps them from the admin completion queue
//! (memory reads, no register read) and re-arms each one.
//!
//! Each event is followed up with its log page, read with "retain
//! asynchronous event" clear so the controller unmasks that event type:
//! - SMART / Health: the SMART log; reported as [`Notice::Health`] with the
//!   critical warning bits and the composite temperature.
//! - Namespace attribute changed: the Changed Namespace List, then the active
//!   namespace list, then Identify of each new namespace; reported as
//!   [`Notice::NamespaceRemoved`] and [`Notice::NamespaceAdded`]. I/O naming a
//!   removed namespace fails with `UnknownNamespace` without reaching the
//!   device; commands already in flight to it complete once, with what the
//!   controller answers for them.
//! - Error status: the newest Error Information entry is logged.
//! - Anything else: counted ([`Controller::unknown_events`]) and re-armed.
//!
//! A log page that fails validation is counted ([`Controller::bad_log_pages`])
//! and reported nowhere. A controller that floods events (more than
//! [`STORM_BURST`] within [`STORM_WINDOW`]) gets its requests re-armed only
//! when the window ends: the flood costs at most that many follow-ups per
//! window, and is logged once per controller.

use log::{info, warn};

use crate::error::Error;
use crate::link::DeviceLink;
use crate::nvme::admin::Ticket;
use crate::nvme::command::{admin, cns, SubmissionEntry};
use crate::nvme::controller::Controller;
use crate::nvme::event_state::Work;
pub use crate::nvme::event_state::{Notice, MAX_ASYNC_EVENTS, STORM_BURST, STORM_WINDOW};
use crate::nvme::identify::{self, NamespaceInfo, NamespaceRefusal};
use crate::nvme::lifecycle::State;
use crate::nvme::namespaces::{Namespace, MAX_NAMESPACES};
use crate::nvme::prp::PAGE_SIZE;
use crate::platform::{Instant, Platform};
use crate::spec::log::{
    async_config, event_type, get_log_page_dwords, lid, AsyncEvent, ChangedNamespaces, SmartLog,
    ALL_NAMESPACES, CHANGED_NAMESPACES_SIZE, ERROR_ENTRY_SIZE, NOTICE_NAMESPACE_ATTRIBUTE,
    SMART_LOG_SIZE,
};

impl<P: Platform, L: DeviceLink, const QUEUES: usize, const DEPTH: usize>
    Controller<P, L, QUEUES, DEPTH>
{
    /// The Set Features that enables the events the driver follows up.
    pub(crate) fn async_event_config() -> SubmissionEntry {
        let mut sqe = SubmissionEntry::new(admin::SET_FEATURES);
        sqe.cdw10 = crate::nvme::command::feature::ASYNC_EVENT_CONFIG;
        sqe.cdw11 = async_config::SMART_ALL | async_config::NAMESPACE_ATTRIBUTE;
        sqe
    }

    /// Submits the Asynchronous Event Requests at the end of bring-up: as
    /// many as the controller accepts (AERL), at most [`MAX_ASYNC_EVENTS`].
    pub(crate) fn arm_async_events(&mut self) {
        let limit = self.shared.info.map_or(1, |i| i.async_event_limit);
        let room = self.owned.admin.room_for_event_requests();
        self.owned.events.keep_outstanding(limit, room);
        self.rearm();
    }

    fn rearm(&mut self) {
        let now = self.now();
        while self.owned.events.wants_request(now) {
            let sqe = SubmissionEntry::new(admin::ASYNC_EVENT_REQUEST);
            match self
                .owned
                .admin
                .submit_unbounded(&self.shared.platform, &self.shared.regs, sqe)
            {
                Ok(ticket) => self.owned.events.armed(ticket),
                Err(e) => {
                    warn!("nvme: cannot submit an Asynchronous Event Request: {e}");
                    return;
                }
            }
        }
    }

    /// The tick's share of event work: reaps completed requests, re-arms
    /// them, and advances the follow-up in progress by at most one admin
    /// command. No register read; a doorbell write per command submitted.
    pub(crate) fn service_events(&mut self) {
        if !self.owned.lifecycle.serving() {
            return;
        }
        let now = self.now();
        let mut i = 0;
        while self.owned.events.may_take_event() {
            let Some(ticket) = self.owned.events.request(i) else {
                break;
            };
            match self
                .owned
                .admin
                .poll(&self.shared.platform, &self.shared.regs, ticket, now)
            {
                None => i += 1,
                Some(result) => {
                    // Refused (limit exceeded, aborted): one fewer request
                    // from now on.
                    self.owned.events.request_ended(i, result.is_err());
                    match result {
                        Ok(dw0) => self.event_arrived(AsyncEvent::from_dw0(dw0), now),
                        Err(e) => warn!("nvme: Asynchronous Event Request failed: {e}"),
                    }
                }
            }
        }
        self.reclaim_page(now);
        self.advance_work(now);
        if self.owned.lifecycle.state() == State::Ready {
            self.rearm();
        }
    }

    /// Ends a caller's log read that began an admin timeout ago or more, so
    /// that a read nobody polls does not keep the scratch page from event
    /// follow-ups: once its command completed the page is free (the read,
    /// polled later, ends `Aborted`); a command past its deadline resets
    /// the controller, as the caller's poll would.
    fn reclaim_page(&mut self, now: Instant) {
        let Some((ticket, since)) = self.owned.events.caller_read() else {
            return;
        };
        if now < since + self.shared.config.admin_timeout {
            return;
        }
        let result = self
            .owned
            .admin
            .poll(&self.shared.platform, &self.shared.regs, ticket, now);
        match result {
            None => {}
            Some(Err(e @ Error::Timeout { .. })) => {
                self.owned.events.page_returned();
                self.reset(e);
            }
            Some(_) => self.owned.events.page_returned(),
        }
    }

    fn event_arrived(&mut self, event: AsyncEvent, now: Instant) {
        if self.owned.events.arrived(now) {
            warn!(
                "nvme: the controller floods asynchronous events: at most {STORM_BURST} per {} ms are followed up",
                STORM_WINDOW.as_millis()
            );
        }
        let follow = match event.kind {
            event_type::SMART_HEALTH => Some(lid::SMART_HEALTH),
            event_type::NOTICE if event.info == NOTICE_NAMESPACE_ATTRIBUTE => {
                Some(lid::CHANGED_NAMESPACES)
            }
            event_type::ERROR => Some(lid::ERROR_INFORMATION),
            _ => None,
        };
        let Some(page) = follow else {
            self.owned.events.note_unknown();
            warn!(
                "nvme: asynchronous event of type {} (info {:#x}, log {:#x}) not handled",
                event.kind, event.info, event.log_page
            );
            return;
        };
        let bytes = match page {
            lid::SMART_HEALTH => SMART_LOG_SIZE,
            lid::CHANGED_NAMESPACES => CHANGED_NAMESPACES_SIZE,
            _ => ERROR_ENTRY_SIZE,
        };
        if let Some(ticket) = self.read_log(page, bytes, false) {
            self.owned.events.begin_work(Work::Log { ticket, event });
        }
    }

    /// Submits Get Log Page of `bytes` of `page` into the scratch page
    /// (zeroed first, so what the device does not write reads as zero) for
    /// the event follow-up. `None` when it could not be submitted.
    fn read_log(&mut self, page: u8, bytes: usize, retain: bool) -> Option<Ticket> {
        let sqe = self.log_command(page, bytes, retain)?;
        match self
            .owned
            .admin
            .submit(&self.shared.platform, &self.shared.regs, sqe, self.now())
        {
            Ok(ticket) => Some(ticket),
            Err(e) => {
                warn!("nvme: cannot read log page {page:#x}: {e}");
                None
            }
        }
    }

    /// A Get Log Page command into the zeroed scratch page.
    pub(crate) fn log_command(
        &self,
        page: u8,
        bytes: usize,
        retain: bool,
    ) -> Option<SubmissionEntry> {
        // The device writes `bytes` at most: the rest reads as zeroes.
        let scratch = self
            .owned
            .pages
            .zeroed_scratch(&self.shared.platform)
            .ok()?;
        let mut sqe = SubmissionEntry::new(admin::GET_LOG_PAGE);
        sqe.nsid = ALL_NAMESPACES;
        sqe.prp1 = scratch;
        (sqe.cdw10, sqe.cdw11) = get_log_page_dwords(page, bytes.min(PAGE_SIZE), retain);
        Some(sqe)
    }

    /// Submits an Identify of `cns` for `nsid` into the scratch page.
    fn identify_for_events(&mut self, cns: u32, nsid: u32) -> Option<Ticket> {
        let scratch = self.owned.pages.scratch_address().ok()?;
        let mut sqe = SubmissionEntry::new(admin::IDENTIFY);
        sqe.prp1 = scratch;
        sqe.nsid = nsid;
        sqe.cdw10 = cns;
        match self
            .owned
            .admin
            .submit(&self.shared.platform, &self.shared.regs, sqe, self.now())
        {
            Ok(ticket) => Some(ticket),
            Err(e) => {
                warn!("nvme: cannot identify after a namespace change: {e}");
                None
            }
        }
    }

    fn advance_work(&mut self, now: Instant) {
        let Some(work) = self.owned.events.work() else {
            return;
        };
        let ticket = match work {
            Work::Log { ticket, .. }
            | Work::ActiveList { ticket }
            | Work::Descriptors { ticket, .. }
            | Work::Identify { ticket, .. } => ticket,
        };
        let Some(result) =
            self.owned
                .admin
                .poll(&self.shared.platform, &self.shared.regs, ticket, now)
        else {
            return;
        };
        self.owned.events.end_work();
        let result = match result {
            Err(e @ Error::Timeout { .. }) => {
                // The device may still write the scratch page: only a reset
                // (which waits for it to stop) makes the page safe again.
                warn!("nvme: event follow-up timed out, resetting");
                self.reset(e);
                return;
            }
            r => r,
        };
        let mut page = [0; PAGE_SIZE];
        let data = self
            .owned
            .pages
            .read_scratch(&self.shared.platform, &mut page);
        match work {
            Work::Log { event, .. } => match result {
                Ok(_) => self.log_arrived(event, data),
                Err(e) => warn!("nvme: reading log page {:#x} failed: {e}", event.log_page),
            },
            Work::ActiveList { .. } => match result {
                Ok(_) => self.active_list_arrived(data),
                Err(e) => warn!("nvme: reading the active namespace list failed: {e}"),
            },
            Work::Descriptors { nsid, .. } => {
                let refusal = match result {
                    Ok(_) => match identify::namespace_command_set(data) {
                        Ok(identify::csi::NVM) => None,
                        Ok(csi) => Some(NamespaceRefusal::CommandSet { csi }),
                        Err(reason) => Some(reason),
                    },
                    Err(Error::CommandFailed { status, .. })
                        if status.sct == crate::nvme::command::sct::GENERIC
                            && status.sc == crate::nvme::command::sc::INVALID_FIELD =>
                    {
                        None
                    }
                    Err(Error::CommandFailed { status, .. }) => {
                        Some(NamespaceRefusal::DescriptorListFailed { status })
                    }
                    Err(e) => {
                        warn!("nvme: namespace {nsid}: {e}");
                        return self.next_identification();
                    }
                };
                match refusal {
                    Some(reason) => {
                        self.refuse_new_namespace(nsid, reason);
                        self.next_identification();
                    }
                    None => match self.identify_for_events(cns::NAMESPACE, nsid) {
                        Some(ticket) => self
                            .owned
                            .events
                            .begin_work(Work::Identify { ticket, nsid }),
                        None => self.next_identification(),
                    },
                }
            }
            Work::Identify { nsid, .. } => {
                match result.and_then(|_| NamespaceInfo::parse(nsid, data)) {
                    Ok(Some(info)) => match info.refusal(self.shared.max_transfer) {
                        Some(reason) => self.refuse_new_namespace(nsid, reason),
                        None => {
                            let max_blocks =
                                (self.shared.max_transfer >> info.block_shift).min(1 << 16);
                            if self.shared.namespaces.add(Namespace { info, max_blocks }) {
                                info!("nvme: namespace {nsid} added");
                                self.notify(Notice::NamespaceAdded { nsid });
                            }
                        }
                    },
                    // Inactive after all (a race with another change).
                    Ok(None) => {}
                    Err(e) => warn!("nvme: namespace {nsid} not served: {e}"),
                }
                self.next_identification();
            }
        }
    }

    fn log_arrived(&mut self, event: AsyncEvent, data: &[u8]) {
        match event.kind {
            event_type::SMART_HEALTH => match SmartLog::parse(data) {
                Ok(log) => {
                    warn!(
                        "nvme: health event: critical warning {:#04x}, {} K",
                        log.critical_warning.bits(),
                        log.temperature
                    );
                    self.notify(Notice::Health {
                        warning: log.critical_warning,
                        temperature: log.temperature,
                    });
                }
                Err(e) => self.bad_log(e),
            },
            event_type::ERROR => match crate::spec::log::error_entries(data).next() {
                Some(Ok(entry)) => warn!(
                    "nvme: error event: error {} on queue {} command {:#x}, status {:#x}",
                    entry.error_count, entry.sqid, entry.cid, entry.status
                ),
                Some(Err(e)) => self.bad_log(e),
                None => {}
            },
            _ => {
                let nn = self.shared.info.map_or(0, |i| i.namespace_count);
                match ChangedNamespaces::parse(data, nn) {
                    Ok(_) => {
                        // Which namespaces exist now is decided by the
                        // active list, whatever the change list named.
                        if let Some(ticket) = self.identify_for_events(cns::ACTIVE_NAMESPACES, 0) {
                            self.owned.events.begin_work(Work::ActiveList { ticket });
                        }
                    }
                    Err(e) => self.bad_log(e),
                }
            }
        }
    }

    fn bad_log(&mut self, e: crate::spec::log::LogPageError) {
        if self.owned.events.note_bad_log() {
            warn!("nvme: the controller sent an invalid log page ({e}); ignored");
        }
    }

    /// Compares the active namespace list with what is served: namespaces
    /// gone are removed (and reported), new ones identified one by one.
    /// The list may hold more namespaces than the driver serves: a served
    /// (or refused) one counts as active wherever it stands in the list,
    /// and only new ones beyond the room to look at them are left out.
    fn active_list_arrived(&mut self, data: &[u8]) {
        let nn = self.shared.info.map_or(0, |i| i.namespace_count);
        // Served and refused namespaces still active: at most MAX_NAMESPACES
        // of each.
        let mut known: heapless::Vec<u32, { 2 * MAX_NAMESPACES }> = heapless::Vec::new();
        let mut new: heapless::Vec<u32, MAX_NAMESPACES> = heapless::Vec::new();
        for id in identify::active_namespaces(data, nn) {
            match id {
                Ok(id) => {
                    let served = self.shared.namespaces.find(id).is_some();
                    if served || self.owned.discovery.is_refused(id) {
                        // Cannot fail: each id is at most once in the list
                        // (it ascends) and in at most one of the two.
                        let _ = known.push(id);
                    } else {
                        // No room to look at more: left for a later list.
                        let _ = new.push(id);
                    }
                }
                Err(e) => {
                    warn!("nvme: active namespace list after a change: {e}");
                    self.owned.events.note_bad_log();
                    return;
                }
            }
        }
        let gone = self.shared.namespaces.keep_active(&known);
        self.owned.discovery.keep_active(&known);
        for nsid in gone {
            info!("nvme: namespace {nsid} removed");
            self.notify(Notice::NamespaceRemoved { nsid });
        }
        self.owned.events.identify_next(new.into_iter());
        self.next_identification();
    }

    fn next_identification(&mut self) {
        while let Some(nsid) = self.owned.events.next_to_identify() {
            if let Some(ticket) = self.identify_for_events(cns::NAMESPACE_DESCRIPTORS, nsid) {
                self.owned
                    .events
                    .begin_work(Work::Descriptors { ticket, nsid });
                return;
            }
        }
    }

    fn refuse_new_namespace(&mut self, nsid: u32, reason: NamespaceRefusal) {
        warn!("nvme: namespace {nsid} not served: {reason}");
        self.owned.discovery.refuse(nsid, reason);
    }

    fn notify(&mut self, notice: Notice) {
        self.owned.events.notify(notice);
    }

    /// The oldest notice the controller's asynchronous events produced and
    /// nobody took yet (the driver's tick takes them and reports them as
    /// events; a controller used on its own is asked here after its tick).
    #[must_use = "each notice is returned once: a notice dropped here is lost"]
    pub fn next_notice(&mut self) -> Option<Notice> {
        self.owned.events.next_notice()
    }

    /// The oldest notice without taking it.
    pub(crate) fn peek_notice(&self) -> Option<Notice> {
        self.owned.events.peek_notice()
    }

    /// Asynchronous Event Requests outstanding now.
    pub fn async_events_outstanding(&self) -> usize {
        self.owned.events.outstanding()
    }

    /// Asynchronous events received since the controller was created.
    pub fn async_events_received(&self) -> u64 {
        self.owned.events.received()
    }

    /// Asynchronous events of a type the driver does not follow up.
    pub fn unknown_events(&self) -> u32 {
        self.owned.events.unknown()
    }

    /// Log pages (and lists read after an event) that failed validation.
    pub fn bad_log_pages(&self) -> u32 {
        self.owned.events.bad_logs()
    }

    /// Times the controller flooded events and was rate-limited.
    pub fn event_storms(&self) -> u32 {
        self.owned.events.storms()
    }
}
