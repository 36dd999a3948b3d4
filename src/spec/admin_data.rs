//! How many bytes of host memory each admin command moves, read from its
//! command dwords (NVMe Base Specification 2.0, each command's figures).
//! The driver checks a passed-through command's buffer against it.

use crate::spec::command::{admin, feature, SubmissionEntry};

/// The data an admin command moves to or from host memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminData {
    /// No data: the command's data pointer is not used.
    None,
    /// Exactly this many bytes.
    Bytes(usize),
    /// The specification does not say: a vendor-specific opcode or feature,
    /// or one this table does not know.
    Unknown,
}

/// Bytes named by a 0-based count of dwords.
fn dwords(zero_based: u32) -> AdminData {
    AdminData::Bytes((zero_based as usize + 1) * 4)
}

/// The data `sqe` moves, if the specification defines it.
pub fn admin_data(sqe: &SubmissionEntry) -> AdminData {
    match sqe.opcode() {
        // Every Identify data structure is one 4 KiB page.
        admin::IDENTIFY => AdminData::Bytes(4096),
        // NUMDL (CDW10 31:16) and NUMDU (CDW11 15:0).
        admin::GET_LOG_PAGE => dwords((sqe.cdw10 >> 16) | ((sqe.cdw11 & 0xFFFF) << 16)),
        admin::GET_FEATURES => get_feature_data(sqe),
        admin::SET_FEATURES => set_feature_data(sqe),
        // NUMD (CDW10), 0-based dwords.
        admin::FIRMWARE_IMAGE_DOWNLOAD | admin::DIRECTIVE_SEND | admin::DIRECTIVE_RECEIVE => {
            dwords(sqe.cdw10)
        }
        // A controller list: one page.
        admin::NAMESPACE_ATTACHMENT => AdminData::Bytes(4096),
        // Transfer Length in bytes (CDW11).
        admin::SECURITY_SEND | admin::SECURITY_RECEIVE => match sqe.cdw11 {
            0 => AdminData::None,
            bytes => AdminData::Bytes(bytes as usize),
        },
        // MNDW (CDW12), 0-based dwords.
        admin::GET_LBA_STATUS => dwords(sqe.cdw12),
        admin::DELETE_SQ
        | admin::DELETE_CQ
        | admin::ABORT
        | admin::ASYNC_EVENT_REQUEST
        | admin::FIRMWARE_COMMIT
        | admin::DEVICE_SELF_TEST
        | admin::KEEP_ALIVE
        | admin::CAPACITY_MANAGEMENT
        | admin::LOCKDOWN
        | admin::FORMAT_NVM
        | admin::SANITIZE => AdminData::None,
        // Queue creation points PRP1 at a whole queue, not at data.
        _ => AdminData::Unknown,
    }
}

/// Get Features: the feature's data structure, none with SEL = 11b
/// (supported capabilities, in completion dword 0).
fn get_feature_data(sqe: &SubmissionEntry) -> AdminData {
    if (sqe.cdw10 >> 8) & 0x7 == 0b11 {
        return AdminData::None;
    }
    match sqe.cdw10 & 0xFF {
        feature::LBA_RANGE_TYPE | feature::HOST_MEMORY_BUFFER => AdminData::Bytes(4096),
        fid => feature_data(fid, sqe.cdw11),
    }
}

/// Set Features: the feature's data structure.
fn set_feature_data(sqe: &SubmissionEntry) -> AdminData {
    match sqe.cdw10 & 0xFF {
        // NUM (CDW11 5:0): 0-based count of 64-byte entries.
        feature::LBA_RANGE_TYPE => AdminData::Bytes(((sqe.cdw11 & 0x3F) as usize + 1) * 64),
        // The descriptor list's address travels in CDW13 and CDW14.
        feature::HOST_MEMORY_BUFFER => AdminData::None,
        fid => feature_data(fid, sqe.cdw11),
    }
}

/// The data of feature `fid` both ways, where it is the same.
fn feature_data(fid: u32, cdw11: u32) -> AdminData {
    match fid {
        feature::AUTONOMOUS_POWER_STATE => AdminData::Bytes(256),
        feature::TIMESTAMP => AdminData::Bytes(8),
        feature::PREDICTABLE_LATENCY_CONFIG | feature::HOST_BEHAVIOR_SUPPORT => {
            AdminData::Bytes(512)
        }
        feature::ENHANCED_CONTROLLER_METADATA
        | feature::CONTROLLER_METADATA
        | feature::NAMESPACE_METADATA => AdminData::Bytes(4096),
        // EXHID (CDW11 bit 0): a 128-bit identifier instead of 64 bits.
        feature::HOST_IDENTIFIER if cdw11 & 1 == 1 => AdminData::Bytes(16),
        feature::HOST_IDENTIFIER => AdminData::Bytes(8),
        // Arbitration, power management, thresholds, error recovery, cache,
        // queues, interrupt settings, event configuration, keep alive and
        // the thermal, power state, recovery, latency window, sanitize,
        // endurance, command set profile and spinup settings; software
        // progress, reservation settings and write protection: a value in
        // the command and completion dwords only.
        0x01..=0x0B | 0x0F..=0x12 | 0x14 | 0x15 | 0x17..=0x1A | 0x80 | 0x82..=0x84 => {
            AdminData::None
        }
        _ => AdminData::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(opcode: u8, cdw10: u32, cdw11: u32) -> SubmissionEntry {
        let mut sqe = SubmissionEntry::new(opcode);
        (sqe.cdw10, sqe.cdw11) = (cdw10, cdw11);
        sqe
    }

    #[test]
    fn log_page_length_comes_from_both_halves_of_numd() {
        let smart = entry(admin::GET_LOG_PAGE, 0x02 | (127 << 16), 0);
        assert_eq!(admin_data(&smart), AdminData::Bytes(512));
        let eight_k = entry(admin::GET_LOG_PAGE, 0x02 | (2047 << 16), 0);
        assert_eq!(admin_data(&eight_k), AdminData::Bytes(8192));
        let huge = entry(admin::GET_LOG_PAGE, 0xFFFF << 16, 0xFFFF);
        assert_eq!(admin_data(&huge), AdminData::Bytes(1 << 34));
    }

    #[test]
    fn features_move_their_data_structure_and_vendor_ones_are_unknown() {
        let get = |fid: u32| admin_data(&entry(admin::GET_FEATURES, fid, 0));
        assert_eq!(get(feature::VOLATILE_WRITE_CACHE), AdminData::None);
        assert_eq!(get(feature::LBA_RANGE_TYPE), AdminData::Bytes(4096));
        assert_eq!(get(feature::AUTONOMOUS_POWER_STATE), AdminData::Bytes(256));
        assert_eq!(get(0xC5), AdminData::Unknown);
        let supported = entry(admin::GET_FEATURES, feature::LBA_RANGE_TYPE | (3 << 8), 0);
        assert_eq!(admin_data(&supported), AdminData::None);
        let ranges = entry(admin::SET_FEATURES, feature::LBA_RANGE_TYPE, 1);
        assert_eq!(admin_data(&ranges), AdminData::Bytes(128));
        let host_id = entry(admin::SET_FEATURES, feature::HOST_IDENTIFIER, 1);
        assert_eq!(admin_data(&host_id), AdminData::Bytes(16));
        assert_eq!(admin_data(&entry(0xC1, 0, 0)), AdminData::Unknown);
    }
}
