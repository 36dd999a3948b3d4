//! A controller's asynchronous event state: the requests outstanding, the
//! follow-up in progress, who holds the scratch page, the notices waiting
//! for the tick, and the counters. The event handling that drives it is in
//! `events`.

use core::time::Duration;

use crate::nvme::admin::Ticket;
use crate::nvme::namespaces::MAX_NAMESPACES;
use crate::platform::Instant;
use crate::spec::log::{AsyncEvent, CriticalWarning};

/// Most Asynchronous Event Requests kept outstanding per controller.
pub const MAX_ASYNC_EVENTS: usize = 4;
/// Events followed up per [`STORM_WINDOW`] before re-arming waits.
pub const STORM_BURST: u32 = 16;
/// The window over which [`STORM_BURST`] is counted.
pub const STORM_WINDOW: Duration = Duration::from_secs(1);
/// Notices waiting for the tick. A completed request is taken from the
/// admin queue only while what its follow-up can add still fits, so none is
/// dropped.
const NOTICES: usize = 3 * MAX_NAMESPACES;

/// What a controller reported on its own, through an asynchronous event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notice {
    /// A SMART / Health event, with the SMART log read after it.
    Health {
        /// Critical warning bits set now.
        warning: CriticalWarning,
        /// Composite temperature in kelvins.
        temperature: u16,
    },
    /// A namespace became active (attached, created) and is served.
    NamespaceAdded {
        /// Its ID.
        nsid: u32,
    },
    /// A namespace is no longer active (detached, deleted).
    NamespaceRemoved {
        /// Its ID.
        nsid: u32,
    },
}

/// Who holds the controller's scratch page (log pages and identify data
/// land there while the controller serves).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PageUser {
    /// An event's follow-up.
    Events,
    /// A caller's log page read: its lease (one per read), its command,
    /// and when it began.
    Caller {
        lease: u32,
        ticket: Ticket,
        since: Instant,
    },
}

/// The follow-up of one event in progress.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Work {
    /// Reading the event's log page (retain clear).
    Log { ticket: Ticket, event: AsyncEvent },
    /// After a namespace change: reading the active namespace list.
    ActiveList { ticket: Ticket },
    /// Learning the command set of a new namespace.
    Descriptors { ticket: Ticket, nsid: u32 },
    /// Identifying a new NVM namespace.
    Identify { ticket: Ticket, nsid: u32 },
}

/// The controller's asynchronous event state.
#[derive(Debug)]
pub(crate) struct AsyncEvents {
    armed: heapless::Vec<Ticket, MAX_ASYNC_EVENTS>,
    /// Requests to keep outstanding (the controller's AERL, bounded).
    wanted: u8,
    work: Option<Work>,
    /// New namespaces still to identify after a namespace change.
    to_identify: heapless::Vec<u32, MAX_NAMESPACES>,
    page: Option<PageUser>,
    /// Caller reads lent the page so far: names each read's lease.
    leases: u32,
    notices: heapless::Deque<Notice, NOTICES>,
    /// Changes with every reset or teardown: requests made before are void.
    epoch: u32,
    window_start: Instant,
    in_window: u32,
    storms: u32,
    unknown: u32,
    bad_logs: u32,
    received: u64,
}

impl AsyncEvents {
    pub(crate) const fn new() -> Self {
        Self {
            armed: heapless::Vec::new(),
            wanted: 0,
            work: None,
            to_identify: heapless::Vec::new(),
            page: None,
            leases: 0,
            notices: heapless::Deque::new(),
            epoch: 0,
            window_start: Instant::from_nanos(0),
            in_window: 0,
            storms: 0,
            unknown: 0,
            bad_logs: 0,
            received: 0,
        }
    }

    /// Every admin command was abandoned (reset, teardown): nothing is
    /// outstanding any more, and requests made before are void.
    pub(crate) fn abandon(&mut self) {
        self.armed.clear();
        self.wanted = 0;
        self.work = None;
        self.to_identify.clear();
        self.page = None;
        self.epoch = self.epoch.wrapping_add(1);
    }

    /// Whether the scratch page is free for a caller's read.
    pub(crate) fn page_free(&self) -> bool {
        self.page.is_none()
    }

    /// A caller's read, command `ticket` submitted at `since`, takes the
    /// free scratch page; returns the read's lease.
    pub(crate) fn lend_page_to_caller(&mut self, ticket: Ticket, since: Instant) -> u32 {
        self.leases = self.leases.wrapping_add(1);
        let lease = self.leases;
        self.page = Some(PageUser::Caller {
            lease,
            ticket,
            since,
        });
        lease
    }

    /// Whether the caller's read of `lease`, started in `epoch`, still
    /// holds the page (no reset, teardown or reclaim voided it since).
    pub(crate) fn caller_holds_page(&self, epoch: u32, lease: u32) -> bool {
        let held = matches!(self.page, Some(PageUser::Caller { lease: l, .. }) if l == lease);
        epoch == self.epoch && held
    }

    /// The command of the caller's read holding the page, and when it
    /// began.
    pub(crate) fn caller_read(&self) -> Option<(Ticket, Instant)> {
        match self.page {
            Some(PageUser::Caller { ticket, since, .. }) => Some((ticket, since)),
            _ => None,
        }
    }

    /// The caller's read ended: the page is free.
    pub(crate) fn page_returned(&mut self) {
        self.page = None;
    }

    /// A log page the device returned did not parse; true for the first.
    pub(crate) fn note_bad_log(&mut self) -> bool {
        self.bad_logs = self.bad_logs.saturating_add(1);
        self.bad_logs == 1
    }

    /// Asynchronous Event Requests outstanding.
    pub(crate) fn outstanding(&self) -> usize {
        self.armed.len()
    }

    /// Requests changes with every reset or teardown: a caller's log page
    /// read started before is void.
    pub(crate) fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Keeps `limit` requests outstanding (the controller's AERL), at most
    /// [`MAX_ASYNC_EVENTS`] and at most `room` (admin entries left for them).
    pub(crate) fn keep_outstanding(&mut self, limit: u16, room: u16) {
        self.wanted = limit.clamp(1, MAX_ASYNC_EVENTS as u16).min(room) as u8;
    }

    /// Whether another request should be submitted at `now`: fewer than
    /// wanted are outstanding and no storm holds re-arming back.
    pub(crate) fn wants_request(&self, now: Instant) -> bool {
        let storming = self.in_window >= STORM_BURST && now < self.window_start + STORM_WINDOW;
        !storming && self.armed.len() < self.wanted as usize
    }

    /// A request was submitted as `ticket`.
    pub(crate) fn armed(&mut self, ticket: Ticket) {
        // Fits: submitted only while fewer than `wanted` are armed.
        let _ = self.armed.push(ticket);
    }

    /// The `i`th outstanding request.
    pub(crate) fn request(&self, i: usize) -> Option<Ticket> {
        self.armed.get(i).copied()
    }

    /// The `i`th request completed; `refused`: with an error, so one fewer
    /// is kept outstanding from now on.
    pub(crate) fn request_ended(&mut self, i: usize, refused: bool) {
        if i < self.armed.len() {
            self.armed.swap_remove(i);
        }
        if refused {
            self.wanted = self.wanted.saturating_sub(1);
        }
    }

    /// Whether another completed request may be taken now: no follow-up
    /// runs, the scratch page is free, and the notices one follow-up can
    /// produce fit.
    pub(crate) fn may_take_event(&self) -> bool {
        self.work.is_none()
            && self.page.is_none()
            && self.notices.len() + 2 * MAX_NAMESPACES <= NOTICES
    }

    /// Counts an event arrived at `now`; true when it starts the
    /// controller's first storm (logged once).
    pub(crate) fn arrived(&mut self, now: Instant) -> bool {
        self.received += 1;
        if now >= self.window_start + STORM_WINDOW {
            self.window_start = now;
            self.in_window = 0;
        }
        self.in_window += 1;
        if self.in_window == STORM_BURST {
            self.storms = self.storms.saturating_add(1);
            return self.storms == 1;
        }
        false
    }

    /// An event of a type the driver does not follow up.
    pub(crate) fn note_unknown(&mut self) {
        self.unknown = self.unknown.saturating_add(1);
    }

    /// A follow-up command was submitted: it holds the scratch page.
    pub(crate) fn begin_work(&mut self, work: Work) {
        self.page = Some(PageUser::Events);
        self.work = Some(work);
    }

    /// The follow-up in progress.
    pub(crate) fn work(&self) -> Option<Work> {
        self.work
    }

    /// The follow-up's command completed: the scratch page is free.
    pub(crate) fn end_work(&mut self) {
        self.work = None;
        self.page = None;
    }

    /// New namespaces to identify one by one, `ids` in the order given.
    pub(crate) fn identify_next(&mut self, ids: impl DoubleEndedIterator<Item = u32>) {
        self.to_identify.clear();
        for id in ids.rev() {
            // At most MAX_NAMESPACES: the active list holds no more.
            let _ = self.to_identify.push(id);
        }
    }

    /// The next new namespace to identify.
    pub(crate) fn next_to_identify(&mut self) -> Option<u32> {
        self.to_identify.pop()
    }

    /// Keeps `notice` for the tick.
    pub(crate) fn notify(&mut self, notice: Notice) {
        // Fits: see `may_take_event`.
        let _ = self.notices.push_back(notice);
    }

    /// Takes the oldest notice.
    pub(crate) fn next_notice(&mut self) -> Option<Notice> {
        self.notices.pop_front()
    }

    /// The oldest notice, not taken.
    pub(crate) fn peek_notice(&self) -> Option<Notice> {
        self.notices.front().copied()
    }

    /// Events received.
    pub(crate) fn received(&self) -> u64 {
        self.received
    }

    /// Events of a type not followed up.
    pub(crate) fn unknown(&self) -> u32 {
        self.unknown
    }

    /// Log pages that failed validation.
    pub(crate) fn bad_logs(&self) -> u32 {
        self.bad_logs
    }

    /// Storms seen.
    pub(crate) fn storms(&self) -> u32 {
        self.storms
    }
}
