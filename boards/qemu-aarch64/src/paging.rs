//! The MMU: an identity map of the first 1 TiB in 1 GiB blocks. RAM (which
//! on `virt` starts at 1 GiB, and may reach 256 GiB) is normal write-back
//! cacheable memory; everything else (UART, the 32-bit PCI window, ECAM at
//! 256 GiB, the 64-bit PCI window at 512 GiB) is Device-nGnRnE.

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::{ReadWriteable, Writeable, MAIR_EL1, SCTLR_EL1, TCR_EL1, TTBR0_EL1};
use core::cell::UnsafeCell;

/// First and end (exclusive) of the range mapped as normal memory.
const RAM: (u64, u64) = (1 << 30, 256 << 30);
/// End of the identity map.
const MAPPED_END: u64 = 1 << 40;
const GIB: u64 = 1 << 30;

/// MAIR index of Device-nGnRnE and of normal write-back memory.
const DEVICE: u64 = 0;
const NORMAL: u64 = 1;

/// Descriptor bits (VMSAv8-64, stage 1, 4 KiB granule).
const VALID_BLOCK: u64 = 0b01;
const VALID_TABLE: u64 = 0b11;
const ACCESS_FLAG: u64 = 1 << 10;
const INNER_SHAREABLE: u64 = 0b11 << 8;
const PXN: u64 = 1 << 53;
const UXN: u64 = 1 << 54;

#[repr(C, align(4096))]
struct Table(UnsafeCell<[u64; 512]>);

// SAFETY: the tables are written once, on the only CPU, before the MMU uses
// them, and never again.
unsafe impl Sync for Table {}

static LEVEL0: Table = Table(UnsafeCell::new([0; 512]));
static LEVEL1: [Table; 2] = [
    Table(UnsafeCell::new([0; 512])),
    Table(UnsafeCell::new([0; 512])),
];

/// Builds the tables and turns on the MMU and the caches.
pub fn enable() {
    // SAFETY: only this function touches the tables, once, before the MMU is
    // on; the references do not outlive the block.
    unsafe {
        for (half, table) in LEVEL1.iter().enumerate() {
            let entries = &mut *table.0.get();
            for (i, entry) in entries.iter_mut().enumerate() {
                let base = (half as u64 * 512 + i as u64) * GIB;
                *entry = if (RAM.0..RAM.1).contains(&base) {
                    base | VALID_BLOCK | ACCESS_FLAG | INNER_SHAREABLE | (NORMAL << 2)
                } else {
                    base | VALID_BLOCK | ACCESS_FLAG | (DEVICE << 2) | PXN | UXN
                };
            }
            (*LEVEL0.0.get())[half] = table.0.get() as u64 | VALID_TABLE;
        }
    }
    MAIR_EL1.write(
        MAIR_EL1::Attr0_Device::nonGathering_nonReordering_noEarlyWriteAck
            + MAIR_EL1::Attr1_Normal_Outer::WriteBack_NonTransient_ReadWriteAlloc
            + MAIR_EL1::Attr1_Normal_Inner::WriteBack_NonTransient_ReadWriteAlloc,
    );
    TCR_EL1.write(
        TCR_EL1::TBI0::Used
            + TCR_EL1::IPS::Bits_40
            + TCR_EL1::TG0::KiB_4
            + TCR_EL1::SH0::Inner
            + TCR_EL1::ORGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable
            + TCR_EL1::IRGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable
            + TCR_EL1::EPD0::EnableTTBR0Walks
            + TCR_EL1::EPD1::DisableTTBR1Walks
            + TCR_EL1::T0SZ.val(64 - 40),
    );
    TTBR0_EL1.set_baddr(LEVEL0.0.get() as u64);
    barrier::dsb(barrier::ISHST);
    barrier::isb(barrier::SY);
    // SAFETY: invalidating this CPU's TLB has no effect on memory.
    unsafe { core::arch::asm!("tlbi vmalle1", options(nostack)) };
    barrier::dsb(barrier::ISH);
    barrier::isb(barrier::SY);
    SCTLR_EL1.modify(SCTLR_EL1::M::Enable + SCTLR_EL1::C::Cacheable + SCTLR_EL1::I::Cacheable);
    barrier::isb(barrier::SY);
}

/// Whether `[addr, addr + len)` is mapped as device memory (where registers
/// must live).
pub fn is_mapped(addr: u64, len: u64) -> bool {
    let Some(end) = addr.checked_add(len) else {
        return false;
    };
    end <= MAPPED_END && (end <= RAM.0 || addr >= RAM.1)
}
