//! Identify data: parsing and validation of the pages a controller returns
//! (their layout is in [`crate::spec::identify`], re-exported here).
//!
//! Identify pages come from the device and are untrusted: every field that later
//! becomes an index, a length or a loop bound is range-checked here.

use core::fmt;

use crate::error::{Error, Result};
use crate::spec::command::Status;

pub use crate::spec::identify::{
    csi, ctrl, nid, ns, IdString, ACTIVE_LIST_ENTRIES, FLBAS_EXTENDED_METADATA, IDENTIFY_SIZE,
    OACS_DOORBELL_BUFFER_CONFIG, ONCS_DATASET_MANAGEMENT, ONCS_WRITE_ZEROES,
};
use crate::spec::identify::{FR_LEN, LBAF_COUNT, LBAF_LEN, MN_LEN, SN_LEN};

fn le16(page: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([page[at], page[at + 1]])
}

fn le32(page: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([page[at], page[at + 1], page[at + 2], page[at + 3]])
}

fn le64(page: &[u8], at: usize) -> u64 {
    le32(page, at) as u64 | (le32(page, at + 4) as u64) << 32
}

/// What the driver keeps of Identify Controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControllerInfo {
    /// PCI vendor ID as reported by the controller.
    pub vendor_id: u16,
    /// Serial number.
    pub serial: IdString<20>,
    /// Model number.
    pub model: IdString<40>,
    /// Firmware revision.
    pub firmware: IdString<8>,
    /// MDTS exponent (0 means no limit).
    pub mdts: u8,
    /// Controller ID.
    pub controller_id: u16,
    /// Optional admin command support.
    pub oacs: u16,
    /// Abort command limit (1-based).
    pub abort_limit: u16,
    /// Asynchronous Event Requests the controller accepts at once (1-based).
    pub async_event_limit: u16,
    /// Number of namespaces (the highest valid NSID).
    pub namespace_count: u32,
    /// Optional NVM command support.
    pub oncs: u16,
    /// A volatile write cache is present (flush matters).
    pub volatile_write_cache: bool,
}

impl ControllerInfo {
    /// Parses and validates an Identify Controller page.
    pub fn parse(page: &[u8]) -> Result<Self> {
        if page.len() < IDENTIFY_SIZE {
            return Err(Error::InvalidArgument {
                what: "identify page shorter than 4096 bytes",
            });
        }
        // SQES/CQES: the 64/16-byte entries the driver uses must be within the
        // required..maximum range the controller states.
        let sqes = page[ctrl::SQES];
        if sqes & 0xF > 6 || sqes >> 4 < 6 {
            return Err(Error::BadDeviceValue {
                field: "SQES",
                value: sqes as u64,
            });
        }
        let cqes = page[ctrl::CQES];
        if cqes & 0xF > 4 || cqes >> 4 < 4 {
            return Err(Error::BadDeviceValue {
                field: "CQES",
                value: cqes as u64,
            });
        }
        Ok(Self {
            vendor_id: le16(page, ctrl::VID),
            serial: IdString::from_field(&page[ctrl::SN..ctrl::SN + SN_LEN]),
            model: IdString::from_field(&page[ctrl::MN..ctrl::MN + MN_LEN]),
            firmware: IdString::from_field(&page[ctrl::FR..ctrl::FR + FR_LEN]),
            mdts: page[ctrl::MDTS],
            controller_id: le16(page, ctrl::CNTLID),
            oacs: le16(page, ctrl::OACS),
            abort_limit: page[ctrl::ACL] as u16 + 1,
            async_event_limit: page[ctrl::AERL] as u16 + 1,
            namespace_count: le32(page, ctrl::NN),
            oncs: le16(page, ctrl::ONCS),
            volatile_write_cache: page[ctrl::VWC] & 1 != 0,
        })
    }

    /// Whether Write Zeroes is supported.
    pub fn supports_write_zeroes(&self) -> bool {
        self.oncs & ONCS_WRITE_ZEROES != 0
    }

    /// Whether Dataset Management (deallocate) is supported.
    pub fn supports_deallocate(&self) -> bool {
        self.oncs & ONCS_DATASET_MANAGEMENT != 0
    }

    /// Whether Doorbell Buffer Config (shadow doorbells) is supported.
    pub fn supports_shadow_doorbells(&self) -> bool {
        self.oacs & OACS_DOORBELL_BUFFER_CONFIG != 0
    }
}

/// What the driver keeps of Identify Namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NamespaceInfo {
    /// Namespace ID.
    pub nsid: u32,
    /// Size in logical blocks.
    pub blocks: u64,
    /// log2 of the logical block size.
    pub block_shift: u8,
    /// IEEE EUI-64 (zero when not reported).
    pub eui64: u64,
    /// Metadata bytes per block of the formatted LBA format (LBAF.MS).
    pub metadata_size: u16,
    /// Metadata travels inline after each block's data (FLBAS bit 4), not
    /// in a separate buffer.
    pub inline_metadata: bool,
    /// End-to-end data protection type settings (DPS): bits 2:0 the
    /// protection information type (0 = none), bit 3 its position.
    pub protection: u8,
}

/// Why the driver does not serve an active namespace
/// ([`crate::Controller::refused_namespaces`]). I/O naming it fails with
/// [`Error::UnknownNamespace`] and nothing is sent to the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NamespaceRefusal {
    /// One logical block is larger than one command may carry (MDTS, or the
    /// embedder's `ControllerConfig::max_transfer`).
    BlockLargerThanTransfer {
        /// Logical block size in bytes.
        block_size: u32,
        /// Largest transfer of one command in bytes.
        max_transfer: u32,
    },
    /// Formatted with metadata in a separate buffer: every Read and Write
    /// would need a metadata pointer (MPTR), which the driver does not
    /// provide.
    SeparateMetadata {
        /// Metadata bytes per block.
        bytes_per_block: u16,
    },
    /// Formatted with metadata inline after each block (extended LBAs):
    /// every transfer would be larger than the blocks' data.
    InlineMetadata {
        /// Metadata bytes per block.
        bytes_per_block: u16,
    },
    /// End-to-end protection information is enabled (DPS type 1 to 3, or a
    /// reserved type): the controller checks or generates it in metadata.
    ProtectionInformation {
        /// The DPS byte.
        dps: u8,
    },
    /// The namespace belongs to an I/O command set other than NVM: key
    /// value (CSI 1), zoned (CSI 2) or one the driver does not know.
    CommandSet {
        /// The Command Set Identifier ([`csi`]).
        csi: u8,
    },
    /// The Namespace Identification Descriptor list breaks its format, so
    /// the namespace's command set is not known.
    BadDescriptorList {
        /// Byte offset of the offending descriptor in the list.
        offset: u16,
    },
    /// The controller failed Identify of the Namespace Identification
    /// Descriptor list with a status other than Invalid Field (which an
    /// older controller that only has NVM namespaces answers).
    DescriptorListFailed {
        /// The status it completed with.
        status: Status,
    },
}

impl fmt::Display for NamespaceRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            NamespaceRefusal::BlockLargerThanTransfer {
                block_size,
                max_transfer,
            } => write!(
                f,
                "{block_size}-byte blocks exceed the {max_transfer}-byte transfer limit"
            ),
            NamespaceRefusal::SeparateMetadata { bytes_per_block } => write!(
                f,
                "formatted with {bytes_per_block} bytes of separate metadata per block"
            ),
            NamespaceRefusal::InlineMetadata { bytes_per_block } => write!(
                f,
                "formatted with {bytes_per_block} bytes of inline metadata per block"
            ),
            NamespaceRefusal::ProtectionInformation { dps } => {
                write!(f, "end-to-end protection enabled (DPS {dps:#x})")
            }
            NamespaceRefusal::CommandSet { csi: id } => {
                let name = match id {
                    csi::KEY_VALUE => "key value",
                    csi::ZONED => "zoned namespace",
                    _ => "unknown",
                };
                write!(f, "{name} command set (CSI {id:#x})")
            }
            NamespaceRefusal::BadDescriptorList { offset } => {
                write!(f, "malformed identification descriptor at byte {offset}")
            }
            NamespaceRefusal::DescriptorListFailed { status } => {
                write!(f, "identification descriptors failed: {status}")
            }
        }
    }
}

impl NamespaceInfo {
    /// Smallest block size the driver accepts (512 bytes).
    pub const MIN_BLOCK_SHIFT: u8 = 9;
    /// Largest block size the driver accepts (64 KiB).
    pub const MAX_BLOCK_SHIFT: u8 = 16;

    /// Parses and validates an Identify Namespace page for namespace `nsid`.
    ///
    /// Returns `Ok(None)` for an inactive namespace (all zero size), which a
    /// controller may report for an ID that was in its active list a moment ago.
    pub fn parse(nsid: u32, page: &[u8]) -> Result<Option<Self>> {
        if page.len() < IDENTIFY_SIZE {
            return Err(Error::InvalidArgument {
                what: "identify page shorter than 4096 bytes",
            });
        }
        let blocks = le64(page, ns::NSZE);
        if blocks == 0 {
            return Ok(None);
        }
        let capacity = le64(page, ns::NCAP);
        if capacity > blocks {
            return Err(Error::BadDeviceValue {
                field: "NCAP",
                value: capacity,
            });
        }
        let nlbaf = page[ns::NLBAF] as usize + 1;
        if nlbaf > LBAF_COUNT {
            return Err(Error::BadDeviceValue {
                field: "NLBAF",
                value: nlbaf as u64 - 1,
            });
        }
        let flbas = page[ns::FLBAS];
        // Format index: bits 3:0, with bits 6:5 as the high bits when more
        // than 16 formats exist.
        let index = (flbas & 0xF) as usize | (((flbas >> 5) & 0x3) as usize) << 4;
        if index >= nlbaf {
            return Err(Error::BadDeviceValue {
                field: "FLBAS",
                value: flbas as u64,
            });
        }
        let lbaf = le32(page, ns::LBAF0 + LBAF_LEN * index);
        let metadata_size = lbaf as u16;
        let block_shift = (lbaf >> 16) as u8;
        if !(Self::MIN_BLOCK_SHIFT..=Self::MAX_BLOCK_SHIFT).contains(&block_shift) {
            return Err(Error::BadDeviceValue {
                field: "LBADS",
                value: block_shift as u64,
            });
        }
        if blocks.checked_shl(block_shift as u32).is_none() || blocks >> (64 - block_shift) != 0 {
            return Err(Error::BadDeviceValue {
                field: "NSZE",
                value: blocks,
            });
        }
        Ok(Some(Self {
            nsid,
            blocks,
            block_shift,
            eui64: le64(page, ns::EUI64),
            metadata_size,
            inline_metadata: flbas & FLBAS_EXTENDED_METADATA != 0,
            protection: page[ns::DPS],
        }))
    }

    /// Logical block size in bytes.
    pub fn block_size(&self) -> u32 {
        1 << self.block_shift
    }

    /// Why the driver cannot serve this namespace when one command carries
    /// at most `max_transfer` bytes, or `None` if it can. Reads and writes
    /// carry data only (no metadata pointer, no protection information), so
    /// the format must have neither.
    pub fn refusal(&self, max_transfer: u32) -> Option<NamespaceRefusal> {
        if self.protection & 0x7 != 0 {
            return Some(NamespaceRefusal::ProtectionInformation {
                dps: self.protection,
            });
        }
        if self.metadata_size != 0 {
            let bytes_per_block = self.metadata_size;
            return Some(if self.inline_metadata {
                NamespaceRefusal::InlineMetadata { bytes_per_block }
            } else {
                NamespaceRefusal::SeparateMetadata { bytes_per_block }
            });
        }
        if self.block_size() > max_transfer {
            return Some(NamespaceRefusal::BlockLargerThanTransfer {
                block_size: self.block_size(),
                max_transfer,
            });
        }
        None
    }
}

/// The command set a Namespace Identification Descriptor list names: its
/// CSI descriptor, or NVM when it has none (a controller without other I/O
/// command sets need not report one).
///
/// The list is untrusted: every descriptor must lie inside the page, a
/// defined type must have its defined length, the command set may be named
/// only once, and bytes too few for a header must be zero padding.
/// Descriptors of types the driver does not know are skipped. The walk
/// advances at least five bytes per descriptor, so it ends within the page.
pub fn namespace_command_set(page: &[u8]) -> core::result::Result<u8, NamespaceRefusal> {
    let len = page.len().min(IDENTIFY_SIZE);
    let bad = |at: usize| NamespaceRefusal::BadDescriptorList { offset: at as u16 };
    let mut found = None;
    let mut at = 0;
    while at < len {
        if len - at < nid::HEADER {
            if page[at..len].iter().any(|&b| b != 0) {
                return Err(bad(at));
            }
            break;
        }
        let (nidt, nidl) = (page[at], page[at + 1] as usize);
        if nidl == 0 {
            // The end of the list.
            break;
        }
        let end = at + nid::HEADER + nidl;
        if end > len || nid::length(nidt).is_some_and(|l| l != nidl) {
            return Err(bad(at));
        }
        if nidt == nid::CSI {
            if found.is_some() {
                return Err(bad(at));
            }
            found = Some(page[at + nid::HEADER]);
        }
        at = end;
    }
    Ok(found.unwrap_or(csi::NVM))
}

/// The namespace IDs in an Active Namespace ID list page, validated: strictly
/// increasing, non-zero, at most `nn`, ending at the first zero entry.
pub fn active_namespaces(page: &[u8], nn: u32) -> impl Iterator<Item = Result<u32>> + '_ {
    let mut last = 0u32;
    let mut done = false;
    (0..ACTIVE_LIST_ENTRIES.min(page.len() / 4)).map_while(move |i| {
        if done {
            return None;
        }
        let id = le32(page, i * 4);
        if id == 0 {
            return None;
        }
        if id <= last || id > nn || id == u32::MAX {
            done = true;
            return Some(Err(Error::BadDeviceValue {
                field: "active namespace list",
                value: id as u64,
            }));
        }
        last = id;
        Some(Ok(id))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctrl_page() -> [u8; IDENTIFY_SIZE] {
        let mut p = [0u8; IDENTIFY_SIZE];
        p[ctrl::SN..ctrl::SN + 8].copy_from_slice(b"deadbeef");
        p[ctrl::SN + 8..ctrl::SN + 20].fill(b' ');
        p[ctrl::SQES] = 0x66;
        p[ctrl::CQES] = 0x44;
        p[ctrl::NN] = 4;
        p[ctrl::MDTS] = 7;
        p
    }

    #[test]
    fn controller_strings_are_trimmed() {
        let info = ControllerInfo::parse(&ctrl_page()).unwrap();
        assert_eq!(info.serial.as_str(), "deadbeef");
        assert_eq!(info.namespace_count, 4);
        assert_eq!(info.mdts, 7);
    }

    #[test]
    fn controller_rejects_entry_sizes_it_cannot_use() {
        let mut p = ctrl_page();
        p[ctrl::SQES] = 0x77;
        assert_eq!(
            ControllerInfo::parse(&p),
            Err(Error::BadDeviceValue {
                field: "SQES",
                value: 0x77
            })
        );
    }

    fn ns_page(blocks: u64, shift: u8) -> [u8; IDENTIFY_SIZE] {
        let mut p = [0u8; IDENTIFY_SIZE];
        p[ns::NSZE..ns::NSZE + 8].copy_from_slice(&blocks.to_le_bytes());
        p[ns::NCAP..ns::NCAP + 8].copy_from_slice(&blocks.to_le_bytes());
        p[ns::NLBAF] = 1;
        p[ns::FLBAS] = 1;
        p[ns::LBAF0 + 4 + 2] = shift;
        p
    }

    #[test]
    fn namespace_format_is_decoded() {
        let ns = NamespaceInfo::parse(1, &ns_page(1000, 12))
            .unwrap()
            .unwrap();
        assert_eq!(ns.block_size(), 4096);
        assert_eq!(ns.blocks, 1000);
    }

    #[test]
    fn namespace_rejects_bad_format_index_and_size() {
        let mut p = ns_page(1000, 12);
        p[ns::FLBAS] = 5;
        assert!(matches!(
            NamespaceInfo::parse(1, &p),
            Err(Error::BadDeviceValue { field: "FLBAS", .. })
        ));
        let p = ns_page(1000, 30);
        assert!(matches!(
            NamespaceInfo::parse(1, &p),
            Err(Error::BadDeviceValue { field: "LBADS", .. })
        ));
        let p = ns_page(u64::MAX, 12);
        assert!(matches!(
            NamespaceInfo::parse(1, &p),
            Err(Error::BadDeviceValue { field: "NSZE", .. })
        ));
    }

    #[test]
    fn namespace_format_refusals() {
        let ns = |patch: &[(usize, u8)]| {
            let mut p = ns_page(1000, 12);
            for &(at, v) in patch {
                p[at] = v;
            }
            NamespaceInfo::parse(1, &p).unwrap().unwrap()
        };
        assert_eq!(ns(&[]).refusal(4096), None);
        assert_eq!(
            ns(&[]).refusal(2048),
            Some(NamespaceRefusal::BlockLargerThanTransfer {
                block_size: 4096,
                max_transfer: 2048
            })
        );
        // LBAF 1 with 8 bytes of metadata, separate then inline.
        let ms = ns::LBAF0 + 4;
        assert_eq!(
            ns(&[(ms, 8)]).refusal(1 << 20),
            Some(NamespaceRefusal::SeparateMetadata { bytes_per_block: 8 })
        );
        assert_eq!(
            ns(&[(ms, 8), (ns::FLBAS, 0x11)]).refusal(1 << 20),
            Some(NamespaceRefusal::InlineMetadata { bytes_per_block: 8 })
        );
        // Inline without metadata is no metadata at all.
        assert_eq!(ns(&[(ns::FLBAS, 0x11)]).refusal(4096), None);
        assert_eq!(
            ns(&[(ms, 8), (ns::DPS, 0x9)]).refusal(1 << 20),
            Some(NamespaceRefusal::ProtectionInformation { dps: 0x9 })
        );
        // PI first without a PI type enables nothing.
        assert_eq!(ns(&[(ns::DPS, 0x8)]).refusal(4096), None);
    }

    fn descriptors(list: &[&[u8]]) -> [u8; IDENTIFY_SIZE] {
        let mut p = [0u8; IDENTIFY_SIZE];
        let mut at = 0;
        for d in list {
            p[at..at + d.len()].copy_from_slice(d);
            at += d.len();
        }
        p
    }

    #[test]
    fn descriptor_lists_name_the_command_set() {
        let eui = &[nid::EUI64, 8, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8][..];
        let zoned = &[nid::CSI, 1, 0, 0, csi::ZONED][..];
        let unknown = &[0x7F, 3, 0, 0, 9, 9, 9][..];
        assert_eq!(namespace_command_set(&descriptors(&[])), Ok(csi::NVM));
        assert_eq!(namespace_command_set(&descriptors(&[eui])), Ok(csi::NVM));
        assert_eq!(
            namespace_command_set(&descriptors(&[eui, unknown, zoned])),
            Ok(csi::ZONED)
        );
        // Nothing past the terminator counts.
        let mut p = descriptors(&[eui]);
        p[16..21].copy_from_slice(zoned);
        assert_eq!(namespace_command_set(&p), Ok(csi::NVM));
    }

    #[test]
    fn lying_descriptor_lists_are_refused_at_the_offending_descriptor() {
        let bad = |offset| Err(NamespaceRefusal::BadDescriptorList { offset });
        let csi2 = &[nid::CSI, 2, 0, 0, 0, 0][..];
        assert_eq!(namespace_command_set(&descriptors(&[csi2])), bad(0));
        let nvm = &[nid::CSI, 1, 0, 0, 0][..];
        assert_eq!(namespace_command_set(&descriptors(&[nvm, nvm])), bad(5));
        assert_eq!(namespace_command_set(&[0xFF; IDENTIFY_SIZE]), bad(15 * 259));
        // A header cut by the end of the page.
        let mut p = [0u8; IDENTIFY_SIZE];
        p[0] = 0x80;
        p[1] = 250;
        let mut at = 254;
        while at + 256 <= IDENTIFY_SIZE - 2 {
            p[at] = 0x80;
            p[at + 1] = 252;
            at += 256;
        }
        assert_eq!(at, IDENTIFY_SIZE - 2);
        p[at] = 0x80;
        assert_eq!(namespace_command_set(&p), bad(IDENTIFY_SIZE as u16 - 2));
        // A short page is bounded by its length; a full one is valid.
        assert_eq!(namespace_command_set(&[0x80, 8, 0, 0, 0]), bad(0));
        let mut p = [0u8; IDENTIFY_SIZE];
        for at in (0..IDENTIFY_SIZE).step_by(256) {
            p[at] = 0x80;
            p[at + 1] = 252;
        }
        assert_eq!(namespace_command_set(&p), Ok(csi::NVM));
    }

    #[test]
    fn active_list_stops_at_zero_and_rejects_disorder() {
        let mut p = [0u8; IDENTIFY_SIZE];
        for (i, id) in [1u32, 2, 5].iter().enumerate() {
            p[i * 4..i * 4 + 4].copy_from_slice(&id.to_le_bytes());
        }
        let ids: Vec<_> = active_namespaces(&p, 8).collect();
        assert_eq!(ids, vec![Ok(1), Ok(2), Ok(5)]);
        p[12..16].copy_from_slice(&3u32.to_le_bytes());
        let ids: Vec<_> = active_namespaces(&p, 8).collect();
        assert!(ids.last().unwrap().is_err());
        assert_eq!(ids.len(), 4);
    }
}
