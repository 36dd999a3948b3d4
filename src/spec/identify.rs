//! Identify data structures (NVMe Base Specification 2.0, section 5.17.2;
//! NVM Command Set Specification 1.0, section 4.1.5): byte offsets of the
//! fields the driver reads, the bits it tests, the Namespace Identification
//! Descriptor types, Command Set Identifiers, and the ASCII string type of
//! the identification fields. The layout only: parsing and validation of
//! what a device wrote are the driver's (`crate::nvme::identify`).
//!
//! Field widths are checked below against the next field's offset, so a
//! mistyped offset fails to compile.

/// Size of every Identify data structure.
pub const IDENTIFY_SIZE: usize = 4096;

/// Byte offsets in the Identify Controller data structure (CNS 01h; NVMe
/// Base Specification 2.0, figure "Identify - Identify Controller Data
/// Structure").
pub mod ctrl {
    /// PCI vendor ID (2 bytes).
    pub const VID: usize = 0;
    /// Serial number (20 ASCII bytes).
    pub const SN: usize = 4;
    /// Model number (40 ASCII bytes).
    pub const MN: usize = 24;
    /// Firmware revision (8 ASCII bytes).
    pub const FR: usize = 64;
    /// Maximum data transfer size, a power of two in units of CAP.MPSMIN.
    pub const MDTS: usize = 77;
    /// Controller ID (2 bytes).
    pub const CNTLID: usize = 78;
    /// Version (4 bytes).
    pub const VER: usize = 80;
    /// Optional admin command support (2 bytes).
    pub const OACS: usize = 256;
    /// Abort command limit (0-based).
    pub const ACL: usize = 258;
    /// Asynchronous event request limit (0-based).
    pub const AERL: usize = 259;
    /// Submission queue entry size (required 3:0, max 7:4).
    pub const SQES: usize = 512;
    /// Completion queue entry size.
    pub const CQES: usize = 513;
    /// Number of namespaces (4 bytes).
    pub const NN: usize = 516;
    /// Optional NVM command support (2 bytes).
    pub const ONCS: usize = 520;
    /// Volatile write cache.
    pub const VWC: usize = 525;
}

/// Byte offsets in the Identify Namespace data structure of the NVM command
/// set (CNS 00h; NVM Command Set Specification 1.0, section 4.1.5.1).
pub mod ns {
    /// Namespace size in logical blocks (8 bytes).
    pub const NSZE: usize = 0;
    /// Namespace capacity (8 bytes).
    pub const NCAP: usize = 8;
    /// Number of LBA formats, 0-based.
    pub const NLBAF: usize = 25;
    /// Formatted LBA size.
    pub const FLBAS: usize = 26;
    /// Metadata capabilities.
    pub const MC: usize = 27;
    /// End-to-end data protection capabilities.
    pub const DPC: usize = 28;
    /// End-to-end data protection type settings.
    pub const DPS: usize = 29;
    /// Namespace globally unique identifier (16 bytes).
    pub const NGUID: usize = 104;
    /// IEEE extended unique identifier (8 bytes).
    pub const EUI64: usize = 120;
    /// First LBA format descriptor (4 bytes each).
    pub const LBAF0: usize = 128;
}

/// FLBAS bit 4: metadata is transferred inline at the end of each block's
/// data (an extended LBA) rather than in a separate buffer.
pub const FLBAS_EXTENDED_METADATA: u8 = 1 << 4;

/// Namespace Identification Descriptor list (Identify CNS 03h, NVMe Base
/// Specification 2.0, section 5.17.2.3): each descriptor is a 4-byte header
/// (NIDT, NIDL, two reserved bytes) followed by NIDL bytes of identifier; a
/// NIDL of 0 ends the list, which otherwise ends with the 4 KiB page.
pub mod nid {
    /// Header bytes before the identifier.
    pub const HEADER: usize = 4;
    /// Type: IEEE EUI-64 (8 bytes).
    pub const EUI64: u8 = 0x1;
    /// Type: namespace GUID (16 bytes).
    pub const NGUID: u8 = 0x2;
    /// Type: namespace UUID (16 bytes).
    pub const UUID: u8 = 0x3;
    /// Type: Command Set Identifier (1 byte).
    pub const CSI: u8 = 0x4;
    /// The identifier length each defined type must have.
    pub const fn length(nidt: u8) -> Option<usize> {
        match nidt {
            EUI64 => Some(8),
            NGUID | UUID => Some(16),
            CSI => Some(1),
            _ => None,
        }
    }
}

/// Command Set Identifiers (NVMe Base Specification 2.0, figure 286).
pub mod csi {
    /// NVM command set.
    pub const NVM: u8 = 0x0;
    /// Key Value command set.
    pub const KEY_VALUE: u8 = 0x1;
    /// Zoned Namespace command set.
    pub const ZONED: u8 = 0x2;
}

/// OACS bit: Doorbell Buffer Config supported.
pub const OACS_DOORBELL_BUFFER_CONFIG: u16 = 1 << 8;
/// ONCS bit: Dataset Management supported.
pub const ONCS_DATASET_MANAGEMENT: u16 = 1 << 2;
/// ONCS bit: Write Zeroes supported.
pub const ONCS_WRITE_ZEROES: u16 = 1 << 3;

/// Most namespaces one Active Namespace ID list page names.
pub const ACTIVE_LIST_ENTRIES: usize = IDENTIFY_SIZE / 4;

/// Bytes of the Serial Number field.
pub const SN_LEN: usize = 20;
/// Bytes of the Model Number field.
pub const MN_LEN: usize = 40;
/// Bytes of the Firmware Revision field.
pub const FR_LEN: usize = 8;
/// Bytes of one LBA Format descriptor (LBAF0..LBAF63).
pub const LBAF_LEN: usize = 4;
/// LBA Format descriptors an Identify Namespace page holds (NLBAF is
/// 0-based and at most 63).
pub const LBAF_COUNT: usize = 64;

// Adjacent fields meet exactly where the specification puts them, and
// everything lies inside the page.
const _: () = assert!(ctrl::SN + SN_LEN == ctrl::MN);
const _: () = assert!(ctrl::MN + MN_LEN == ctrl::FR);
const _: () = assert!(ctrl::FR + FR_LEN + 5 == ctrl::MDTS); // RAB, IEEE OUI, CMIC between
const _: () = assert!(ctrl::MDTS + 1 == ctrl::CNTLID);
const _: () = assert!(ctrl::CNTLID + 2 == ctrl::VER);
const _: () = assert!(ctrl::OACS + 2 == ctrl::ACL && ctrl::ACL + 1 == ctrl::AERL);
const _: () = assert!(ctrl::SQES + 1 == ctrl::CQES);
const _: () = assert!(ctrl::NN + 4 == ctrl::ONCS);
const _: () = assert!(ctrl::VWC < IDENTIFY_SIZE);
const _: () = assert!(ns::NSZE + 8 == ns::NCAP);
const _: () = assert!(ns::NLBAF + 1 == ns::FLBAS && ns::FLBAS + 1 == ns::MC);
const _: () = assert!(ns::MC + 1 == ns::DPC && ns::DPC + 1 == ns::DPS);
const _: () = assert!(ns::NGUID + 16 == ns::EUI64 && ns::EUI64 + 8 == ns::LBAF0);
const _: () = assert!(ns::LBAF0 + LBAF_COUNT * LBAF_LEN <= IDENTIFY_SIZE);
const _: () = assert!(ACTIVE_LIST_ENTRIES * 4 == IDENTIFY_SIZE);

/// An ASCII identification string with the padding spaces trimmed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct IdString<const N: usize> {
    bytes: [u8; N],
    len: u8,
}

impl<const N: usize> IdString<N> {
    /// Takes the field, replaces non-printable bytes with `?` and trims
    /// trailing spaces and NULs.
    pub fn from_field(field: &[u8]) -> Self {
        let mut bytes = [b' '; N];
        let n = field.len().min(N);
        for (dst, &src) in bytes.iter_mut().zip(&field[..n]) {
            *dst = if src.is_ascii_graphic() || src == b' ' {
                src
            } else if src == 0 {
                b' '
            } else {
                b'?'
            };
        }
        let len = bytes.iter().rposition(|&b| b != b' ').map_or(0, |p| p + 1);
        Self {
            bytes,
            len: len as u8,
        }
    }

    /// The trimmed string.
    pub fn as_str(&self) -> &str {
        // Only printable ASCII is stored, so this never fails.
        core::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("")
    }
}

impl<const N: usize> core::fmt::Debug for IdString<N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl<const N: usize> core::fmt::Display for IdString<N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}
