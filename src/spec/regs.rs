//! Controller registers (NVMe Base Specification 2.0, section 3.1.4).

use bitflags::bitflags;

/// Controller Capabilities (64-bit).
pub const CAP: usize = 0x00;
/// Version.
pub const VS: usize = 0x08;
/// Interrupt Mask Set.
pub const INTMS: usize = 0x0C;
/// Controller Configuration.
pub const CC: usize = 0x14;
/// Controller Status.
pub const CSTS: usize = 0x1C;
/// NVM Subsystem Reset.
pub const NSSR: usize = 0x20;
/// Admin Queue Attributes.
pub const AQA: usize = 0x24;
/// Admin Submission Queue base address (64-bit).
pub const ASQ: usize = 0x28;
/// Admin Completion Queue base address (64-bit).
pub const ACQ: usize = 0x30;
/// First doorbell register.
pub const DOORBELL_BASE: usize = 0x1000;
/// The value that starts an NVM subsystem reset when written to NSSR ("NVMe").
pub const NSSR_RESET: u32 = 0x4E56_4D65;

/// Decoded Controller Capabilities.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cap(pub u64);

impl Cap {
    /// Maximum queue entries supported, as a count (MQES is 0-based).
    pub fn max_queue_entries(self) -> u32 {
        (self.0 & 0xFFFF) as u32 + 1
    }
    /// Contiguous queues required.
    pub fn contiguous_queues_required(self) -> bool {
        self.0 & (1 << 16) != 0
    }
    /// Worst-case time for CSTS.RDY to change, in 500 ms units.
    pub fn timeout_units(self) -> u8 {
        (self.0 >> 24) as u8
    }
    /// Doorbell stride exponent: doorbells are `4 << dstrd` bytes apart.
    pub fn doorbell_stride_exp(self) -> u8 {
        ((self.0 >> 32) & 0xF) as u8
    }
    /// NVM subsystem reset supported.
    pub fn nssr_supported(self) -> bool {
        self.0 & (1 << 36) != 0
    }
    /// Command sets supported (CSS field).
    pub fn command_sets(self) -> u8 {
        ((self.0 >> 37) & 0xFF) as u8
    }
    /// Whether the NVM command set is supported (CSS bit 0).
    pub fn nvm_command_set(self) -> bool {
        self.command_sets() & 1 != 0
    }
    /// Minimum memory page size exponent, page size = `1 << (12 + mpsmin)`.
    pub fn mpsmin(self) -> u8 {
        ((self.0 >> 48) & 0xF) as u8
    }
    /// Maximum memory page size exponent.
    pub fn mpsmax(self) -> u8 {
        ((self.0 >> 52) & 0xF) as u8
    }
}

bitflags! {
    /// Controller Configuration single-bit fields; multi-bit fields have helpers.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Cc: u32 {
        /// Enable.
        const EN = 1 << 0;
        /// Shutdown notification, normal.
        const SHN_NORMAL = 1 << 14;
        /// Shutdown notification, abrupt.
        const SHN_ABRUPT = 2 << 14;
    }
}

impl Cc {
    /// Mask of the SHN field.
    pub const SHN_MASK: u32 = 3 << 14;

    /// The configuration the driver enables a controller with: NVM command set,
    /// 4 KiB memory pages, round-robin arbitration, 64-byte SQ and 16-byte CQ
    /// entries.
    pub fn enable_value(mps_exp: u8) -> u32 {
        const IOSQES: u32 = 6 << 16; // 2^6 = 64 bytes
        const IOCQES: u32 = 4 << 20; // 2^4 = 16 bytes
        Cc::EN.bits() | ((mps_exp as u32 & 0xF) << 7) | IOSQES | IOCQES
    }
}

bitflags! {
    /// Controller Status.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Csts: u32 {
        /// Ready.
        const RDY = 1 << 0;
        /// Controller fatal status.
        const CFS = 1 << 1;
        /// Shutdown status bit 0 (shutdown occurring).
        const SHST_OCCURRING = 1 << 2;
        /// Shutdown status bit 1 (shutdown complete).
        const SHST_COMPLETE = 1 << 3;
        /// NVM subsystem reset occurred.
        const NSSRO = 1 << 4;
        /// Processing paused.
        const PP = 1 << 5;
        // Reserved bits may be set by a misbehaving device: keep them visible.
        const _ = !0;
    }
}

impl Csts {
    /// Mask of the shutdown status field.
    pub const SHST_MASK: u32 = 3 << 2;

    /// Whether the shutdown status field says "complete".
    pub fn shutdown_complete(self) -> bool {
        self.bits() & Self::SHST_MASK == Self::SHST_COMPLETE.bits()
    }
}

/// Admin Queue Attributes value for the given entry counts (1-based).
pub fn aqa_value(sq_entries: u16, cq_entries: u16) -> u32 {
    ((cq_entries as u32 - 1) << 16) | (sq_entries as u32 - 1)
}

/// Byte offset of the submission queue `qid` tail doorbell.
pub fn sq_tail_doorbell(qid: u16, dstrd: u8) -> usize {
    DOORBELL_BASE + (2 * qid as usize) * (4usize << dstrd)
}

/// Byte offset of the completion queue `qid` head doorbell.
pub fn cq_head_doorbell(qid: u16, dstrd: u8) -> usize {
    DOORBELL_BASE + (2 * qid as usize + 1) * (4usize << dstrd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_fields_decode() {
        // MQES 2047, CQR, TO 20, DSTRD 0, NSSRS, CSS NVM, MPSMIN 0, MPSMAX 4.
        let cap = Cap(0x07FF | 1 << 16 | 20 << 24 | 1 << 36 | 1 << 37 | 4 << 52);
        assert_eq!(cap.max_queue_entries(), 2048);
        assert!(cap.contiguous_queues_required());
        assert_eq!(cap.timeout_units(), 20);
        assert_eq!(cap.doorbell_stride_exp(), 0);
        assert!(cap.nssr_supported());
        assert!(cap.nvm_command_set());
        assert_eq!(cap.mpsmin(), 0);
        assert_eq!(cap.mpsmax(), 4);
    }

    #[test]
    fn doorbells_follow_stride() {
        assert_eq!(sq_tail_doorbell(0, 0), 0x1000);
        assert_eq!(cq_head_doorbell(0, 0), 0x1004);
        assert_eq!(sq_tail_doorbell(1, 0), 0x1008);
        assert_eq!(cq_head_doorbell(1, 2), 0x1000 + 3 * 16);
    }

    #[test]
    fn cc_enable_value_has_entry_sizes() {
        assert_eq!(Cc::enable_value(0), 0x0046_0001);
    }
}
