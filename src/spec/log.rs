//! Log pages and asynchronous events (NVMe Base Specification 2.0,
//! sections 5.2 and 5.16): identifiers, layouts and parsers that validate
//! what the controller wrote before any of it is believed.
//!
//! A log page is read into a zeroed buffer, so bytes a controller did not
//! transfer read as zero; each parser rejects a page whose mandatory fields
//! are zero or out of their range, which catches short transfers as well as
//! garbage.

use core::fmt;

use crate::spec::bits::Field;

/// Log page identifiers.
pub mod lid {
    /// Error Information (64-byte entries, newest first).
    pub const ERROR_INFORMATION: u8 = 0x01;
    /// SMART / Health Information (512 bytes).
    pub const SMART_HEALTH: u8 = 0x02;
    /// Firmware Slot Information (512 bytes).
    pub const FIRMWARE_SLOT: u8 = 0x03;
    /// Changed Namespace List (up to 1024 NSIDs).
    pub const CHANGED_NAMESPACES: u8 = 0x04;
}

/// Bytes of the SMART / Health Information log page.
pub const SMART_LOG_SIZE: usize = 512;
/// Bytes of the Firmware Slot Information log page.
pub const FIRMWARE_LOG_SIZE: usize = 512;
/// Bytes of one Error Information log entry.
pub const ERROR_ENTRY_SIZE: usize = 64;
/// Bytes of the Changed Namespace List log page.
pub const CHANGED_NAMESPACES_SIZE: usize = 4096;
/// NSID that names every namespace (the controller-wide SMART log).
pub const ALL_NAMESPACES: u32 = 0xFFFF_FFFF;

/// Get Log Page CDW10 bit 15: Retain Asynchronous Event. Clear, the read
/// acknowledges the event that pointed at the page (unmasks its type).
pub const RETAIN_ASYNC_EVENT: u32 = 1 << 15;

/// Fields of Get Log Page CDW10 and CDW11 (NVMe Base Specification 2.0,
/// section 5.16): the dword count is 0-based and split over both.
pub mod get_log_page {
    use super::Field;

    /// CDW10 Log Page Identifier (7:0).
    pub const LID: Field = Field::new(0, 8);
    /// CDW10 Retain Asynchronous Event (15).
    pub const RAE: Field = Field::new(15, 1);
    /// CDW10 Number of Dwords Lower (31:16).
    pub const NUMDL: Field = Field::new(16, 16);
    /// CDW11 Number of Dwords Upper (15:0).
    pub const NUMDU: Field = Field::new(0, 16);
}

/// CDW10 and CDW11 of Get Log Page for `bytes` (a multiple of 4) of page
/// `lid`; `retain`: keep the asynchronous event pending.
pub const fn get_log_page_dwords(lid: u8, bytes: usize, retain: bool) -> (u32, u32) {
    let numd = (bytes / 4).saturating_sub(1) as u32;
    let cdw10 = get_log_page::LID.of(lid as u32)
        | get_log_page::RAE.of(retain as u32)
        | get_log_page::NUMDL.of(numd);
    (cdw10, get_log_page::NUMDU.of(numd >> 16))
}

/// Why a log page was not believed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogPageError {
    /// Fewer bytes than the page needs.
    Short {
        /// Bytes the page needs.
        needed: usize,
        /// Bytes there were.
        got: usize,
    },
    /// A field holds a value outside its range (zero where the controller
    /// must report something counts: the page was not fully written).
    Field {
        /// The field.
        field: &'static str,
        /// The value read.
        value: u64,
    },
}

impl fmt::Display for LogPageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            LogPageError::Short { needed, got } => {
                write!(f, "log page of {got} bytes, {needed} needed")
            }
            LogPageError::Field { field, value } => write!(f, "log page {field} = {value:#x}"),
        }
    }
}

fn le16(p: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([p[at], p[at + 1]])
}

fn le32(p: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([p[at], p[at + 1], p[at + 2], p[at + 3]])
}

fn le64(p: &[u8], at: usize) -> u64 {
    let mut b = [0; 8];
    b.copy_from_slice(&p[at..at + 8]);
    u64::from_le_bytes(b)
}

fn le128(p: &[u8], at: usize) -> u128 {
    let mut b = [0; 16];
    b.copy_from_slice(&p[at..at + 16]);
    u128::from_le_bytes(b)
}

fn need(page: &[u8], needed: usize) -> Result<(), LogPageError> {
    if page.len() < needed {
        return Err(LogPageError::Short {
            needed,
            got: page.len(),
        });
    }
    Ok(())
}

bitflags::bitflags! {
    /// SMART / Health critical warning bits (log byte 0).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct CriticalWarning: u8 {
        /// Available spare fell below its threshold.
        const SPARE_BELOW_THRESHOLD = 1 << 0;
        /// A temperature is above an over- or below an under-temperature
        /// threshold.
        const TEMPERATURE = 1 << 1;
        /// Reliability degraded by media or internal errors.
        const RELIABILITY_DEGRADED = 1 << 2;
        /// The media was placed in read-only mode.
        const READ_ONLY = 1 << 3;
        /// The volatile memory backup device failed.
        const VOLATILE_BACKUP_FAILED = 1 << 4;
        /// The persistent memory region became read-only or unreliable.
        const PMR_READ_ONLY = 1 << 5;
    }
}

/// The SMART / Health Information log page (02h), validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SmartLog {
    /// Critical warnings (reserved bits dropped).
    pub critical_warning: CriticalWarning,
    /// Composite temperature in kelvins (non-zero).
    pub temperature: u16,
    /// Available spare capacity, percent (0..=100).
    pub available_spare: u8,
    /// The spare threshold below which a warning is raised, percent (0..=100).
    pub spare_threshold: u8,
    /// Estimate of the life used, percent (may exceed 100).
    pub percentage_used: u8,
    /// Data read, in thousands of 512-byte units.
    pub data_units_read: u128,
    /// Data written, in thousands of 512-byte units.
    pub data_units_written: u128,
    /// Read commands completed.
    pub host_reads: u128,
    /// Write commands completed.
    pub host_writes: u128,
    /// Power cycles.
    pub power_cycles: u128,
    /// Hours powered on.
    pub power_on_hours: u128,
    /// Shutdowns without a completed shutdown notification.
    pub unsafe_shutdowns: u128,
    /// Unrecovered data integrity errors.
    pub media_errors: u128,
    /// Error Information log entries over the controller's life.
    pub error_log_entries: u128,
}

impl SmartLog {
    /// Parses and validates the page: at least 512 bytes, a non-zero
    /// composite temperature, spare and threshold within 0..=100.
    pub fn parse(page: &[u8]) -> Result<Self, LogPageError> {
        need(page, SMART_LOG_SIZE)?;
        let temperature = le16(page, 1);
        if temperature == 0 {
            return Err(LogPageError::Field {
                field: "composite temperature",
                value: 0,
            });
        }
        for (field, at) in [("available spare", 3), ("spare threshold", 4)] {
            if page[at] > 100 {
                return Err(LogPageError::Field {
                    field,
                    value: page[at] as u64,
                });
            }
        }
        Ok(Self {
            critical_warning: CriticalWarning::from_bits_truncate(page[0]),
            temperature,
            available_spare: page[3],
            spare_threshold: page[4],
            percentage_used: page[5],
            data_units_read: le128(page, 32),
            data_units_written: le128(page, 48),
            host_reads: le128(page, 64),
            host_writes: le128(page, 80),
            power_cycles: le128(page, 112),
            power_on_hours: le128(page, 128),
            unsafe_shutdowns: le128(page, 144),
            media_errors: le128(page, 160),
            error_log_entries: le128(page, 176),
        })
    }

    /// The composite temperature in degrees Celsius.
    pub fn temperature_celsius(&self) -> i32 {
        self.temperature as i32 - 273
    }
}

/// One Error Information log entry (01h).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorEntry {
    /// The controller's error count when the entry was made (unique,
    /// non-zero).
    pub error_count: u64,
    /// Submission queue of the failed command (0xFFFF: none).
    pub sqid: u16,
    /// Command identifier of the failed command (0xFFFF: none).
    pub cid: u16,
    /// The status field of its completion (phase tag dropped).
    pub status: u16,
    /// Byte and bit of the command parameter in error.
    pub parameter: u16,
    /// The first LBA in error.
    pub lba: u64,
    /// The namespace of the error.
    pub nsid: u32,
}

/// Parses the entries of an Error Information log page: newest first, an
/// entry with error count 0 ends the list. The error counts must strictly
/// decrease; the first entry that breaks this ends the list with an error.
/// At most `page.len() / 64` entries, so a lying page cannot make this loop
/// longer than the buffer.
pub fn error_entries(page: &[u8]) -> impl Iterator<Item = Result<ErrorEntry, LogPageError>> + '_ {
    let mut last = u64::MAX;
    let mut failed = false;
    page.chunks_exact(ERROR_ENTRY_SIZE).map_while(move |e| {
        let error_count = le64(e, 0);
        if failed || error_count == 0 {
            return None;
        }
        if error_count >= last {
            failed = true;
            return Some(Err(LogPageError::Field {
                field: "error count (not decreasing)",
                value: error_count,
            }));
        }
        last = error_count;
        Some(Ok(ErrorEntry {
            error_count,
            sqid: le16(e, 8),
            cid: le16(e, 10),
            status: le16(e, 12) >> 1,
            parameter: le16(e, 14),
            lba: le64(e, 16),
            nsid: le32(e, 24),
        }))
    })
}

/// Firmware slots a controller can have.
pub const FIRMWARE_SLOTS: usize = 7;

/// The Firmware Slot Information log page (03h), validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FirmwareLog {
    /// The slot the running firmware came from (1..=7).
    pub active_slot: u8,
    /// The slot activated at the next reset (1..=7), if one was chosen.
    pub next_slot: Option<u8>,
    /// Raw revision field of each slot (index 0 is slot 1); see
    /// [`FirmwareLog::revision`].
    pub revisions: [[u8; 8]; FIRMWARE_SLOTS],
}

impl FirmwareLog {
    /// Parses and validates the page: at least 512 bytes, an active slot of
    /// 1..=7, a next slot of 0 (none) or 1..=7, and a revision in the active
    /// slot.
    pub fn parse(page: &[u8]) -> Result<Self, LogPageError> {
        need(page, FIRMWARE_LOG_SIZE)?;
        let afi = page[0];
        let active_slot = afi & 0x7;
        if active_slot == 0 || afi & 0x88 != 0 {
            return Err(LogPageError::Field {
                field: "active firmware info",
                value: afi as u64,
            });
        }
        let next = (afi >> 4) & 0x7;
        let revisions = core::array::from_fn(|i| {
            let mut r = [0; 8];
            r.copy_from_slice(&page[8 + 8 * i..16 + 8 * i]);
            r
        });
        let log = Self {
            active_slot,
            next_slot: (next != 0).then_some(next),
            revisions,
        };
        if log.revision(active_slot).is_empty() {
            return Err(LogPageError::Field {
                field: "revision of the active slot",
                value: 0,
            });
        }
        Ok(log)
    }

    /// The revision in `slot` (1..=7), trailing spaces and NULs dropped;
    /// empty for no firmware, a slot out of range or bytes that are not
    /// printable ASCII.
    pub fn revision(&self, slot: u8) -> &str {
        let Some(raw) = self.revisions.get((slot as usize).wrapping_sub(1)) else {
            return "";
        };
        let end = raw
            .iter()
            .rposition(|&b| b != b' ' && b != 0)
            .map_or(0, |i| i + 1);
        let text = &raw[..end];
        if !text.iter().all(|b| (0x20..0x7F).contains(b)) {
            return "";
        }
        core::str::from_utf8(text).unwrap_or("")
    }
}

/// Entries of the Changed Namespace List.
pub const CHANGED_NAMESPACES_ENTRIES: usize = CHANGED_NAMESPACES_SIZE / 4;

/// What the Changed Namespace List says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangedNamespaces<'a> {
    /// More namespaces changed than the list holds: look at all of them.
    All,
    /// These namespaces changed (raw little-endian entries, zero-ended; use
    /// [`ChangedNamespaces::iter`]).
    Some(&'a [u8]),
}

impl<'a> ChangedNamespaces<'a> {
    /// Parses the list: NSIDs in increasing order, ended by 0 or the end of
    /// the page; a first entry of FFFFFFFFh means "more than 1024". Every
    /// NSID must be at most `nn` (Identify Controller NN) and larger than the
    /// one before.
    pub fn parse(page: &'a [u8], nn: u32) -> Result<Self, LogPageError> {
        let page = &page[..page.len().min(CHANGED_NAMESPACES_SIZE) & !3];
        if page.len() >= 4 && le32(page, 0) == ALL_NAMESPACES {
            return Ok(ChangedNamespaces::All);
        }
        let mut last = 0;
        for at in (0..page.len()).step_by(4) {
            let nsid = le32(page, at);
            if nsid == 0 {
                break;
            }
            if nsid > nn || nsid <= last {
                return Err(LogPageError::Field {
                    field: "changed NSID",
                    value: nsid as u64,
                });
            }
            last = nsid;
        }
        Ok(ChangedNamespaces::Some(page))
    }

    /// The changed NSIDs (nothing for [`ChangedNamespaces::All`]).
    pub fn iter(&self) -> impl Iterator<Item = u32> + 'a {
        let page: &'a [u8] = match *self {
            ChangedNamespaces::All => &[],
            ChangedNamespaces::Some(p) => p,
        };
        page.chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .take_while(|&n| n != 0)
    }

    /// Whether namespace `nsid` is named (always for `All`).
    pub fn contains(&self, nsid: u32) -> bool {
        matches!(self, ChangedNamespaces::All) || self.iter().any(|n| n == nsid)
    }
}

/// Asynchronous event types (completion dword 0 bits 2:0).
pub mod event_type {
    /// Error status.
    pub const ERROR: u8 = 0;
    /// SMART / Health status.
    pub const SMART_HEALTH: u8 = 1;
    /// Notice.
    pub const NOTICE: u8 = 2;
    /// I/O command specific status.
    pub const IO_COMMAND_SPECIFIC: u8 = 6;
    /// Vendor specific.
    pub const VENDOR: u8 = 7;
}

/// Notice event information: namespace attribute changed.
pub const NOTICE_NAMESPACE_ATTRIBUTE: u8 = 0x00;

/// Fields of an Asynchronous Event Request completion's dword 0 (NVMe Base
/// Specification 2.0, section 5.2).
pub mod async_event {
    use super::Field;

    /// Asynchronous Event Type (2:0).
    pub const TYPE: Field = Field::new(0, 3);
    /// Asynchronous Event Information (15:8).
    pub const INFO: Field = Field::new(8, 8);
    /// Log Page Identifier (23:16).
    pub const LOG_PAGE: Field = Field::new(16, 8);
}

/// What an Asynchronous Event Request completion reports (its dword 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AsyncEvent {
    /// Event type (see [`event_type`]).
    pub kind: u8,
    /// Event information, meaning per type.
    pub info: u8,
    /// The log page that tells more (and whose read acknowledges the event).
    pub log_page: u8,
}

impl AsyncEvent {
    /// Decodes completion dword 0.
    pub const fn from_dw0(dw0: u32) -> Self {
        Self {
            kind: async_event::TYPE.get(dw0) as u8,
            info: async_event::INFO.get(dw0) as u8,
            log_page: async_event::LOG_PAGE.get(dw0) as u8,
        }
    }

    /// Encodes completion dword 0.
    pub const fn to_dw0(self) -> u32 {
        async_event::TYPE.of(self.kind as u32)
            | async_event::INFO.of(self.info as u32)
            | async_event::LOG_PAGE.of(self.log_page as u32)
    }
}

/// Asynchronous Event Configuration (Set Features 0Bh) dword 11: which
/// events the controller reports.
pub mod async_config {
    /// Every SMART / Health critical warning bit (7:0).
    pub const SMART_ALL: u32 = 0xFF;
    /// Namespace Attribute Notices.
    pub const NAMESPACE_ATTRIBUTE: u32 = 1 << 8;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smart_page() -> [u8; 512] {
        let mut p = [0u8; 512];
        p[0] = 0x02;
        p[1..3].copy_from_slice(&323u16.to_le_bytes());
        p[3] = 100;
        p[4] = 10;
        p[5] = 3;
        p[144] = 7;
        p
    }

    #[test]
    fn smart_log_parses_and_validates() {
        let log = SmartLog::parse(&smart_page()).unwrap();
        assert_eq!(log.critical_warning, CriticalWarning::TEMPERATURE);
        assert_eq!(log.temperature_celsius(), 50);
        assert_eq!(log.unsafe_shutdowns, 7);
        assert!(matches!(
            SmartLog::parse(&smart_page()[..100]),
            Err(LogPageError::Short { .. })
        ));
        let mut p = smart_page();
        p[1] = 0;
        p[2] = 0;
        assert!(SmartLog::parse(&p).is_err(), "no temperature: not written");
        let mut p = smart_page();
        p[3] = 101;
        assert!(SmartLog::parse(&p).is_err());
    }

    #[test]
    fn error_entries_end_at_zero_and_must_decrease() {
        let mut p = [0u8; 256];
        p[0] = 9;
        p[64] = 8;
        assert_eq!(error_entries(&p).count(), 2);
        p[128] = 8;
        let all: heapless::Vec<_, 4> = error_entries(&p).collect();
        assert_eq!(all.len(), 3);
        assert!(all[2].is_err());
    }

    #[test]
    fn firmware_log_needs_a_valid_active_slot() {
        let mut p = [0u8; 512];
        p[0] = 0x21;
        p[8..11].copy_from_slice(b"1.0");
        let log = FirmwareLog::parse(&p).unwrap();
        assert_eq!((log.active_slot, log.next_slot), (1, Some(2)));
        assert_eq!(log.revision(1), "1.0");
        p[0] = 0x02;
        assert!(FirmwareLog::parse(&p).is_err(), "slot 2 has no revision");
        p[0] = 0;
        assert!(FirmwareLog::parse(&p).is_err());
    }

    #[test]
    fn changed_namespaces_are_bounded_and_ordered() {
        let mut p = [0u8; 16];
        p[0] = 2;
        p[4] = 5;
        let c = ChangedNamespaces::parse(&p, 8).unwrap();
        assert!(c.contains(5) && !c.contains(3));
        assert!(ChangedNamespaces::parse(&p, 4).is_err(), "beyond NN");
        p[4] = 1;
        assert!(ChangedNamespaces::parse(&p, 8).is_err(), "not increasing");
        p[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            ChangedNamespaces::parse(&p, 8).unwrap(),
            ChangedNamespaces::All
        );
    }

    #[test]
    fn async_event_round_trips() {
        let e = AsyncEvent {
            kind: 2,
            info: 0,
            log_page: 4,
        };
        assert_eq!(AsyncEvent::from_dw0(e.to_dw0()), e);
    }
}
