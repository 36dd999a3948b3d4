//! The processors the firmware lists: ACPI RSDP, RSDT or XSDT, and the MADT.
//!
//! Firmware tables are input like any device register: every address must lie
//! in the identity map, every length is bounded and every table's checksum
//! must hold before a byte of it is believed.

use core::fmt;

use crate::paging;

/// Most local APIC entries kept from the MADT.
pub const MAX_LISTED: usize = 16;

/// Longest table accepted (QEMU's are a few KiB).
const MAX_TABLE: u32 = 1 << 20;
/// Most RSDT/XSDT entries looked at.
const MAX_TABLES: usize = 64;
/// Size of the common table header.
const HEADER: u32 = 36;
/// Where the MADT's entries start (header, local APIC address, flags).
const MADT_ENTRIES: u32 = HEADER + 8;
/// The BIOS area searched when the loader gave no RSDP.
const BIOS_AREA: (u64, u64) = (0xE_0000, 0x10_0000);

/// MADT entry types.
const LOCAL_APIC: u8 = 0;
const LAPIC_ADDRESS_OVERRIDE: u8 = 5;
const LOCAL_X2APIC: u8 = 9;
/// Local APIC flag: the processor is enabled (an online-capable one stays
/// off until an OS turns it on; this board starts only enabled ones).
const ENABLED: u32 = 1;

/// What the MADT says about the processors.
pub struct Madt {
    /// Physical address of the local APIC registers.
    pub lapic_base: u64,
    /// APIC ids of the usable processors, in table order.
    pub apic_ids: heapless::Vec<u8, MAX_LISTED>,
    /// Processors listed but not kept: disabled, x2APIC-only ids, or beyond
    /// [`MAX_LISTED`].
    pub skipped: usize,
}

/// Why the tables could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcpiError {
    /// No RSDP from the loader and none in the BIOS area.
    NoRsdp,
    /// A table lies outside the identity map or has an impossible length.
    BadTable(&'static str),
    /// A table's bytes do not sum to zero.
    Checksum(&'static str),
    /// The RSDT/XSDT lists no MADT.
    NoMadt,
    /// An MADT entry runs past the table or is shorter than its header.
    BadEntry(u32),
    /// Not read: the command line said `madt=off`.
    Ignored,
}

impl fmt::Display for AcpiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AcpiError::NoRsdp => f.write_str("no ACPI RSDP"),
            AcpiError::BadTable(what) => write!(f, "{what} outside the map or of bad length"),
            AcpiError::Checksum(what) => write!(f, "{what} checksum wrong"),
            AcpiError::NoMadt => f.write_str("no MADT"),
            AcpiError::BadEntry(at) => write!(f, "malformed MADT entry at offset {at}"),
            AcpiError::Ignored => f.write_str("MADT ignored (madt=off)"),
        }
    }
}

/// Reads the MADT through the RSDP at `hint` (from the PVH start info; 0 or
/// a bad one: the BIOS area is searched).
pub fn read_madt(hint: u64) -> Result<Madt, AcpiError> {
    let rsdp = if hint != 0 && rsdp_valid(hint) {
        hint
    } else {
        let found = search_rsdp().ok_or(AcpiError::NoRsdp)?;
        log::debug!("RSDP at {found:#x} in the BIOS area (start info gave {hint:#x})");
        found
    };
    let madt = find_table(rsdp, *b"APIC")?;
    parse_madt(madt)
}

/// Reads the MADT at `addr` on its own (checks as in [`read_madt`]).
pub fn madt_at(addr: u64) -> Result<Madt, AcpiError> {
    checked_table(addr, "MADT")?;
    parse_madt(addr)
}

/// Whether a valid RSDP (signature and the ACPI 1.0 checksum) is at `addr`.
fn rsdp_valid(addr: u64) -> bool {
    paging::is_mapped(addr, 20) && read_bytes::<8>(addr) == *b"RSD PTR " && sums_to_zero(addr, 20)
}

/// Searches the BIOS area on 16-byte boundaries, as the ACPI spec says.
fn search_rsdp() -> Option<u64> {
    (BIOS_AREA.0..BIOS_AREA.1)
        .step_by(16)
        .find(|&addr| rsdp_valid(addr))
}

/// The physical address of the table with `signature`, validated.
fn find_table(rsdp: u64, signature: [u8; 4]) -> Result<u64, AcpiError> {
    let revision: u8 = read(rsdp + 15);
    // ACPI 2.0+: the XSDT (64-bit entries) if present, after the extended
    // checksum over the whole RSDP.
    let xsdt: u64 = if revision >= 2 { read(rsdp + 24) } else { 0 };
    let (root, entry_size, name) = if xsdt != 0 {
        let len: u32 = read(rsdp + 20);
        if !(36..=4096).contains(&len) || !paging::is_mapped(rsdp, u64::from(len)) {
            return Err(AcpiError::BadTable("RSDP"));
        }
        if !sums_to_zero(rsdp, len) {
            return Err(AcpiError::Checksum("RSDP"));
        }
        (xsdt, 8, "XSDT")
    } else {
        (u64::from(read::<u32>(rsdp + 16)), 4, "RSDT")
    };
    let len = checked_table(root, name)?;
    let count = ((len - HEADER) / entry_size) as usize;
    for i in 0..count.min(MAX_TABLES) {
        let at = root + u64::from(HEADER) + i as u64 * u64::from(entry_size);
        let table = if entry_size == 8 {
            read::<u64>(at)
        } else {
            u64::from(read::<u32>(at))
        };
        if paging::is_mapped(table, u64::from(HEADER)) && read_bytes::<4>(table) == signature {
            checked_table(table, "MADT")?;
            return Ok(table);
        }
    }
    Err(AcpiError::NoMadt)
}

/// Validates the table at `addr` (mapped, sane length, checksum); its length.
fn checked_table(addr: u64, name: &'static str) -> Result<u32, AcpiError> {
    if !paging::is_mapped(addr, u64::from(HEADER)) {
        return Err(AcpiError::BadTable(name));
    }
    let len: u32 = read(addr + 4);
    if !(HEADER..=MAX_TABLE).contains(&len) || !paging::is_mapped(addr, u64::from(len)) {
        return Err(AcpiError::BadTable(name));
    }
    if !sums_to_zero(addr, len) {
        return Err(AcpiError::Checksum(name));
    }
    Ok(len)
}

/// Walks the MADT's entries (already validated by [`checked_table`]).
fn parse_madt(madt: u64) -> Result<Madt, AcpiError> {
    let len: u32 = read(madt + 4);
    if len < MADT_ENTRIES {
        return Err(AcpiError::BadTable("MADT"));
    }
    let mut out = Madt {
        lapic_base: u64::from(read::<u32>(madt + u64::from(HEADER))),
        apic_ids: heapless::Vec::new(),
        skipped: 0,
    };
    let mut offset = MADT_ENTRIES;
    while offset + 2 <= len {
        let at = madt + u64::from(offset);
        let kind: u8 = read(at);
        let entry_len = u32::from(read::<u8>(at + 1));
        if entry_len < 2 || offset + entry_len > len {
            return Err(AcpiError::BadEntry(offset));
        }
        match kind {
            LOCAL_APIC if entry_len >= 8 => {
                let apic_id: u8 = read(at + 3);
                let flags: u32 = read(at + 4);
                if flags & ENABLED == 0 || out.apic_ids.push(apic_id).is_err() {
                    out.skipped += 1;
                }
            }
            LAPIC_ADDRESS_OVERRIDE if entry_len >= 12 => {
                out.lapic_base = read(at + 4);
            }
            // x2APIC ids do not fit the xAPIC ICR's 8-bit destination.
            LOCAL_X2APIC => out.skipped += 1,
            _ => {}
        }
        offset += entry_len;
    }
    Ok(out)
}

/// Whether the `len` bytes at `addr` (mapped, checked by the caller) sum to
/// zero modulo 256.
fn sums_to_zero(addr: u64, len: u32) -> bool {
    (0..u64::from(len))
        .map(|i| read::<u8>(addr + i))
        .fold(0u8, u8::wrapping_add)
        == 0
}

fn read_bytes<const N: usize>(addr: u64) -> [u8; N] {
    read(addr)
}

/// Reads a `T` from firmware memory at `addr`.
fn read<T: Copy>(addr: u64) -> T {
    // Every caller checked `addr .. addr + size_of::<T>()` against the
    // identity map (table bounds or an explicit `is_mapped`); checked again
    // here so a slip cannot fault.
    assert!(
        paging::is_mapped(addr, core::mem::size_of::<T>() as u64),
        "ACPI read outside the map"
    );
    // SAFETY: the range is identity-mapped RAM or ROM (checked above); the
    // firmware tables are not written by anyone while the board reads them;
    // unaligned reads are fine on x86 and any bit pattern is a valid integer
    // or byte array (the only `T`s used).
    unsafe { core::ptr::read_unaligned(addr as *const T) }
}
