//! The identity map built by the boot stub, refined once the memory map is known.

use crate::boot::{MAPPED_BYTES, PAGE_2M, PD_ENTRIES};
use crate::start_info::MemoryMap;

/// Page-level cache disable and write-through: the page is uncached whatever
/// the PAT says (PAT index 3 is UC at reset).
const UNCACHED: u64 = (1 << 4) | (1 << 3);

extern "C" {
    /// The page directories the boot stub filled (see `boot.rs`).
    static mut boot_pd: [u64; PD_ENTRIES];
}

/// Marks every 2 MiB page that holds no RAM as uncached, so device registers
/// (BARs, ECAM, LAPIC) are never cached even where the firmware's MTRRs leave
/// a window write-back (64-bit windows above RAM). Pages holding any RAM keep
/// write-back: the MTRRs already make the legacy holes below 1 MiB uncached.
///
/// Returns the number of pages marked.
pub fn mark_non_ram_uncached(map: &MemoryMap) -> usize {
    // SAFETY: boot_pd is the live page directory array the boot stub filled;
    // nothing else refers to it while the board starts. Setting cache bits of
    // an identity mapping changes no address translation.
    let directory = unsafe { &mut *core::ptr::addr_of_mut!(boot_pd) };
    let mut marked = 0;
    for (index, entry) in directory.iter_mut().enumerate() {
        let start = index as u64 * PAGE_2M;
        let end = start + PAGE_2M;
        let holds_ram = map
            .usable()
            .any(|r| r.addr < end && r.addr.saturating_add(r.len) > start);
        if !holds_ram {
            *entry |= UNCACHED;
            marked += 1;
        }
    }
    flush_tlb();
    marked
}

/// Whether `[addr, addr + len)` lies inside the identity map.
pub fn is_mapped(addr: u64, len: u64) -> bool {
    addr.checked_add(len).is_some_and(|end| end <= MAPPED_BYTES)
}

/// Whether the 2 MiB page holding `addr` is mapped uncached (for registers
/// the board reaches itself, such as the local APIC).
pub fn is_uncached(addr: u64) -> bool {
    if !is_mapped(addr, 1) {
        return false;
    }
    let index = (addr / PAGE_2M) as usize;
    // SAFETY: a read of one entry of the live page directories; entries only
    // change in `mark_non_ram_uncached`, which runs once before any caller.
    let entry = unsafe { core::ptr::addr_of!(boot_pd[index]).read() };
    entry & UNCACHED == UNCACHED
}

fn flush_tlb() {
    // SAFETY: reloading CR3 with its own value only flushes the TLB.
    unsafe {
        core::arch::asm!("mov {0}, cr3", "mov cr3, {0}", out(reg) _, options(nostack));
    }
}
