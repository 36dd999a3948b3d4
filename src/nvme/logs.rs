//! Reading log pages for a caller: SMART / Health, Error Information and
//! Firmware Slot Information, typed and validated (see [`crate::spec::log`]).
//!
//! The page lands in the controller's own scratch page (zeroed first), never
//! in caller memory, and is parsed from a copy. One read runs at a time, and
//! not while an asynchronous event's follow-up uses the page. A caller's read
//! leaves asynchronous events pending ("retain asynchronous event" set), so
//! it never acknowledges an event the tick has not followed up yet.

use crate::error::{Error, Result};
use crate::link::DeviceLink;
use crate::nvme::admin::Ticket;
use crate::nvme::controller::{Controller, State};
use crate::nvme::prp::PAGE_SIZE;
use crate::platform::Platform;
use crate::spec::log::{
    error_entries, lid, ErrorEntry, FirmwareLog, LogPageError, SmartLog, ERROR_ENTRY_SIZE,
    FIRMWARE_LOG_SIZE, SMART_LOG_SIZE,
};

/// Error Information entries read at most (newest first).
pub const ERROR_LOG_ENTRIES: usize = 16;

/// A log page a caller can read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogPage {
    /// SMART / Health Information, controller-wide.
    SmartHealth,
    /// The newest Error Information entries.
    ErrorInformation,
    /// Firmware Slot Information.
    FirmwareSlot,
}

impl LogPage {
    fn id_and_size(self) -> (u8, usize) {
        match self {
            LogPage::SmartHealth => (lid::SMART_HEALTH, SMART_LOG_SIZE),
            LogPage::ErrorInformation => {
                (lid::ERROR_INFORMATION, ERROR_LOG_ENTRIES * ERROR_ENTRY_SIZE)
            }
            LogPage::FirmwareSlot => (lid::FIRMWARE_SLOT, FIRMWARE_LOG_SIZE),
        }
    }
}

/// A log page read and validated.
// No allocator to box the entries with; some 500 bytes by value are fine.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogData {
    /// SMART / Health Information.
    SmartHealth(SmartLog),
    /// Error Information entries, newest first (empty: no errors logged).
    ErrorInformation(heapless::Vec<ErrorEntry, ERROR_LOG_ENTRIES>),
    /// Firmware Slot Information.
    FirmwareSlot(FirmwareLog),
}

/// A log page read in progress (split phase): pass it to
/// [`Controller::poll_log_page`] until that returns a result.
#[must_use = "the request is needed to collect the log page"]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogRequest {
    page: LogPage,
    ticket: Ticket,
    epoch: u32,
    lease: u32,
}

fn invalid(e: LogPageError) -> Error {
    let (field, value) = match e {
        LogPageError::Short { got, .. } => ("log page length", got as u64),
        LogPageError::Field { field, value } => (field, value),
    };
    Error::BadDeviceValue { field, value }
}

impl<P: Platform, L: DeviceLink, const QUEUES: usize, const DEPTH: usize>
    Controller<P, L, QUEUES, DEPTH>
{
    /// Starts reading `page`. `CapacityExceeded` while another read (or an
    /// event's follow-up) uses the page: poll it to the end, or let the
    /// tick run, and try again. Poll it within the admin timeout: after
    /// that the tick ends it (see [`Controller::poll_log_page`]).
    pub fn begin_log_page(&mut self, page: LogPage) -> Result<LogRequest> {
        match self.owned.lifecycle.state() {
            State::Ready => {}
            State::Removed => return Err(Error::DeviceRemoved),
            State::Failed => return Err(Error::ControllerFailed),
            _ => return Err(Error::NotReady),
        }
        let busy = Error::CapacityExceeded {
            what: "log page reads in progress",
            limit: 1,
        };
        if !self.owned.events.page_free() {
            return Err(busy);
        }
        let (id, bytes) = page.id_and_size();
        let now = self.now();
        let ticket = self
            .log_command(id, bytes, true)
            .ok_or(Error::Internal {
                what: "log page buffer missing",
            })
            .and_then(|sqe| {
                self.owned
                    .admin
                    .submit(&self.shared.platform, &self.shared.regs, sqe, now)
            })?;
        let lease = self.owned.events.lend_page_to_caller(ticket, now);
        Ok(LogRequest {
            page,
            ticket,
            epoch: self.owned.events.epoch(),
            lease,
        })
    }

    /// The result of `request` once it completed, `None` while it runs.
    /// Past the admin deadline the controller is reset (the device may still
    /// write the page) and the read ends with the timeout. A reset or the
    /// end of the controller ends it with [`Error::Aborted`], and so does
    /// the tick once the admin timeout passed since the read began: a read
    /// nobody polls gives the page back to event follow-ups.
    #[must_use = "a finished read is returned once"]
    pub fn poll_log_page(&mut self, request: &LogRequest) -> Option<Result<LogData>> {
        if !self
            .owned
            .events
            .caller_holds_page(request.epoch, request.lease)
        {
            return Some(Err(Error::Aborted));
        }
        let result = self.owned.admin.poll(
            &self.shared.platform,
            &self.shared.regs,
            request.ticket,
            self.now(),
        )?;
        self.owned.events.page_returned();
        if let Err(e @ Error::Timeout { .. }) = result {
            self.reset(e);
            return Some(Err(e));
        }
        if let Err(e) = result {
            return Some(Err(e));
        }
        let mut copy = [0; PAGE_SIZE];
        let data = self
            .owned
            .pages
            .read_scratch(&self.shared.platform, &mut copy);
        let parsed = match request.page {
            LogPage::SmartHealth => SmartLog::parse(data).map(LogData::SmartHealth),
            LogPage::FirmwareSlot => FirmwareLog::parse(data).map(LogData::FirmwareSlot),
            LogPage::ErrorInformation => {
                let mut entries = heapless::Vec::new();
                let bytes = ERROR_LOG_ENTRIES * ERROR_ENTRY_SIZE;
                for entry in error_entries(&data[..bytes.min(data.len())]) {
                    match entry {
                        // At most ERROR_LOG_ENTRIES: the slice holds no more.
                        Ok(e) => {
                            let _ = entries.push(e);
                        }
                        Err(e) => return Some(Err(invalid(e))),
                    }
                }
                Ok(LogData::ErrorInformation(entries))
            }
        };
        Some(parsed.map_err(|e| {
            self.owned.events.note_bad_log();
            invalid(e)
        }))
    }

    /// Reads `page`, blocking (bounded by the admin timeout, plus a reset's
    /// disable if the read times out). Waits for an event follow-up that
    /// holds the page to finish first.
    pub fn log_page(&mut self, page: LogPage) -> Result<LogData> {
        self.ensure_ready()?;
        let deadline = self.now() + self.shared.config.admin_timeout;
        let request = loop {
            match self.begin_log_page(page) {
                Err(Error::CapacityExceeded { .. }) if self.now() <= deadline => {
                    self.service_events();
                }
                r => break r?,
            }
        };
        loop {
            if let Some(result) = self.poll_log_page(&request) {
                return result;
            }
        }
    }

    /// Reads the SMART / Health Information log, blocking.
    pub fn smart_log(&mut self) -> Result<SmartLog> {
        match self.log_page(LogPage::SmartHealth)? {
            LogData::SmartHealth(log) => Ok(log),
            _ => Err(Error::Internal {
                what: "log page of another kind",
            }),
        }
    }

    /// Reads the newest Error Information entries, blocking.
    pub fn error_log(&mut self) -> Result<heapless::Vec<ErrorEntry, ERROR_LOG_ENTRIES>> {
        match self.log_page(LogPage::ErrorInformation)? {
            LogData::ErrorInformation(entries) => Ok(entries),
            _ => Err(Error::Internal {
                what: "log page of another kind",
            }),
        }
    }

    /// Reads the Firmware Slot Information log, blocking.
    pub fn firmware_log(&mut self) -> Result<FirmwareLog> {
        match self.log_page(LogPage::FirmwareSlot)? {
            LogData::FirmwareSlot(log) => Ok(log),
            _ => Err(Error::Internal {
                what: "log page of another kind",
            }),
        }
    }
}
