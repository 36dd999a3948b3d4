//! The `hvm_start_info` handed over by the PVH loader: command line and memory map.

use core::fmt;

/// `hvm_start_info.magic` (Xen public header arch-x86/hvm/start_info.h).
const START_INFO_MAGIC: u32 = 0x336e_c578;

/// E820 type of usable RAM.
const E820_RAM: u32 = 1;

/// Most memory map entries kept.
const MAX_REGIONS: usize = 64;

/// Longest command line kept, in bytes.
const MAX_CMDLINE: usize = 1024;

/// One entry of the memory map.
#[derive(Clone, Copy, Debug, Default)]
pub struct MemoryRegion {
    /// Physical start.
    pub addr: u64,
    /// Length in bytes.
    pub len: u64,
    /// E820 type (1 = usable RAM).
    pub kind: u32,
}

impl MemoryRegion {
    /// Whether the region is usable RAM.
    pub fn is_ram(&self) -> bool {
        self.kind == E820_RAM
    }
}

impl fmt::Display for MemoryRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            1 => "usable",
            2 => "reserved",
            3 => "ACPI data",
            4 => "ACPI NVS",
            5 => "bad",
            _ => "other",
        };
        write!(
            f,
            "{:#012x}-{:#012x} {:>8} KiB {}",
            self.addr,
            self.addr.saturating_add(self.len),
            self.len / 1024,
            kind
        )
    }
}

/// The memory map, copied out of loader memory.
pub struct MemoryMap {
    regions: [MemoryRegion; MAX_REGIONS],
    len: usize,
}

impl MemoryMap {
    /// All entries, in loader order.
    pub fn regions(&self) -> &[MemoryRegion] {
        &self.regions[..self.len]
    }

    /// The usable RAM entries.
    pub fn usable(&self) -> impl Iterator<Item = &MemoryRegion> + '_ {
        self.regions().iter().filter(|r| r.is_ram())
    }
}

/// What the loader told the kernel, copied into kernel memory.
pub struct BootInfo {
    /// The memory map.
    pub memory_map: MemoryMap,
    /// Physical address of the ACPI RSDP the loader found (0: none given).
    pub rsdp: u64,
    cmdline: [u8; MAX_CMDLINE],
    cmdline_len: usize,
}

impl BootInfo {
    /// The kernel command line (`-append`), empty when absent or not UTF-8.
    pub fn cmdline(&self) -> &str {
        core::str::from_utf8(&self.cmdline[..self.cmdline_len]).unwrap_or("")
    }
}

/// Why the start info could not be read.
#[derive(Debug)]
pub enum StartInfoError {
    /// The magic number did not match.
    BadMagic(u32),
}

impl fmt::Display for StartInfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartInfoError::BadMagic(magic) => {
                write!(f, "magic {magic:#x}, not {START_INFO_MAGIC:#x}")
            }
        }
    }
}

// Layout of struct hvm_start_info (version 1).
const OFF_MAGIC: u64 = 0;
const OFF_VERSION: u64 = 4;
const OFF_CMDLINE: u64 = 24;
const OFF_RSDP: u64 = 32;
const OFF_MEMMAP: u64 = 40;
const OFF_MEMMAP_ENTRIES: u64 = 48;
/// Size of struct hvm_memmap_table_entry.
const MEMMAP_ENTRY_SIZE: u64 = 24;

/// Reads the start info at physical address `phys` and copies what the kernel
/// needs into `out`.
pub fn read(phys: u32, out: &mut BootInfo) -> Result<(), StartInfoError> {
    let base = u64::from(phys);
    // SAFETY (all `peek`s): the loader placed the start info and what it
    // points to in memory that the identity map covers and nothing else uses
    // while it is copied.
    let magic: u32 = unsafe { peek(base + OFF_MAGIC) };
    if magic != START_INFO_MAGIC {
        return Err(StartInfoError::BadMagic(magic));
    }
    let version: u32 = unsafe { peek(base + OFF_VERSION) };
    let cmdline: u64 = unsafe { peek(base + OFF_CMDLINE) };
    out.rsdp = unsafe { peek(base + OFF_RSDP) };
    if cmdline != 0 {
        let mut len = 0;
        while len < MAX_CMDLINE {
            let byte: u8 = unsafe { peek(cmdline + len as u64) };
            if byte == 0 {
                break;
            }
            out.cmdline[len] = byte;
            len += 1;
        }
        out.cmdline_len = len;
    }
    if version >= 1 {
        let table: u64 = unsafe { peek(base + OFF_MEMMAP) };
        let entries: u32 = unsafe { peek(base + OFF_MEMMAP_ENTRIES) };
        let count = (entries as usize).min(MAX_REGIONS);
        for i in 0..count {
            let entry = table + i as u64 * MEMMAP_ENTRY_SIZE;
            out.memory_map.regions[i] = MemoryRegion {
                addr: unsafe { peek(entry) },
                len: unsafe { peek(entry + 8) },
                kind: unsafe { peek(entry + 16) },
            };
        }
        out.memory_map.len = count;
    }
    Ok(())
}

impl BootInfo {
    /// An empty record, filled by [`read`].
    pub const fn empty() -> Self {
        Self {
            memory_map: MemoryMap {
                regions: [MemoryRegion {
                    addr: 0,
                    len: 0,
                    kind: 0,
                }; MAX_REGIONS],
                len: 0,
            },
            rsdp: 0,
            cmdline: [0; MAX_CMDLINE],
            cmdline_len: 0,
        }
    }
}

/// Reads a `T` at a physical address.
///
/// # Safety
/// `addr .. addr + size_of::<T>()` must be identity-mapped memory holding a `T`.
unsafe fn peek<T: Copy>(addr: u64) -> T {
    // SAFETY: guaranteed by the caller; unaligned reads are fine on x86.
    unsafe { core::ptr::read_unaligned(addr as *const T) }
}
