//! Barriers between the driver's accesses to memory the device shares (rings,
//! PRP lists, shadow doorbell and EventIdx slots) and the doorbells, per
//! target.
//!
//! `core::sync::atomic::fence` orders one CPU against another (on aarch64 it
//! emits `dmb ish`, inner shareable), not against a device. These are the
//! device-facing barriers, chosen as Linux chooses them for the same job, each
//! with its reference. On a target not listed, each falls back to a
//! sequentially consistent fence: correct for CPUs only, so a port must add
//! its device barrier here.
//!
//! Under Miri (which runs no inline assembly) the x86_64 full barrier is the
//! equivalent `SeqCst` fence.

#[allow(unused_imports)] // which ones a target uses depends on the target
use core::sync::atomic::{compiler_fence, fence, Ordering};

/// Before a doorbell write (the MMIO register or its shadow slot): every
/// earlier store to shared memory (submission entries, PRP lists, a DSM
/// range) is visible to the device before the doorbell is.
#[inline(always)]
pub(crate) fn before_doorbell() {
    // Linux arm64: `writel` = `__iowmb()` (= `dma_wmb()`, `dmb oshst`) then the
    // store (arch/arm64/include/asm/io.h, barrier.h). DMB ST orders all
    // earlier stores before all later ones, normal memory and device memory
    // alike, as the outer shareable domain (where the device is) sees them.
    #[cfg(target_arch = "aarch64")]
    // SAFETY: a barrier instruction: no memory access, no stack, no flags.
    unsafe {
        core::arch::asm!("dmb oshst", options(nostack, preserves_flags));
    }
    // Linux riscv: `writel` = `__io_bw()` (`fence w,o`) then the store
    // (arch/riscv/include/asm/io.h); the shadow slot is memory, for which
    // Linux's `nvme_dbbuf_update_and_check_event` issues `wmb()` =
    // `fence ow,ow` (arch/riscv/include/asm/barrier.h). `fence ow,ow` covers
    // both, and also DMA memory an embedder maps with an I/O memory type.
    #[cfg(target_arch = "riscv64")]
    // SAFETY: a fence instruction: no memory access, no stack.
    unsafe {
        core::arch::asm!("fence ow, ow", options(nostack, preserves_flags));
    }
    // x86: stores are not reordered with other stores, including a later
    // store to uncached (MMIO) memory (Intel SDM vol. 3A, "Memory
    // Ordering in P6 and More Recent Processor Families"); Linux x86
    // `dma_wmb()` is `barrier()`. Only the compiler must keep the order.
    #[cfg(target_arch = "x86_64")]
    compiler_fence(Ordering::SeqCst);
    #[cfg(not(any(
        target_arch = "aarch64",
        target_arch = "riscv64",
        target_arch = "x86_64"
    )))]
    fence(Ordering::SeqCst);
}

/// After a completion entry's phase tag was seen and before its other fields
/// are read: the device writes the tag last, so the fields read after this
/// are at least as new as the tag.
#[inline(always)]
pub(crate) fn after_phase_tag() {
    // Linux arm64 `dma_rmb()` = `dmb oshld` (arch/arm64/include/asm/barrier.h).
    #[cfg(target_arch = "aarch64")]
    // SAFETY: a barrier instruction: no memory access, no stack, no flags.
    unsafe {
        core::arch::asm!("dmb oshld", options(nostack, preserves_flags));
    }
    // Linux riscv defines no `__dma_rmb`, so `dma_rmb()` is `rmb()` =
    // `fence ir,ir` (include/asm-generic/barrier.h, arch/riscv/include/asm/
    // barrier.h): it orders memory and I/O-typed loads alike.
    #[cfg(target_arch = "riscv64")]
    // SAFETY: a fence instruction: no memory access, no stack.
    unsafe {
        core::arch::asm!("fence ir, ir", options(nostack, preserves_flags));
    }
    // x86: loads are not reordered with other loads (Intel SDM vol. 3A,
    // "Memory Ordering in P6 and More Recent Processor Families"); Linux x86
    // `dma_rmb()` is `barrier()`.
    #[cfg(target_arch = "x86_64")]
    compiler_fence(Ordering::SeqCst);
    #[cfg(not(any(
        target_arch = "aarch64",
        target_arch = "riscv64",
        target_arch = "x86_64"
    )))]
    fence(Ordering::SeqCst);
}

/// Before the completion queue head doorbell: the entries it frees were read
/// before the device can see that their slots may be reused.
#[inline(always)]
pub(crate) fn before_head_doorbell() {
    // DMB LD orders earlier loads against later loads and stores (Arm ARM,
    // "Data Memory Barrier"); outer shareable, as `dma_rmb()` (`dmb oshld`).
    #[cfg(target_arch = "aarch64")]
    // SAFETY: a barrier instruction: no memory access, no stack, no flags.
    unsafe {
        core::arch::asm!("dmb oshld", options(nostack, preserves_flags));
    }
    // Earlier loads (memory or I/O) before later stores (memory or I/O).
    #[cfg(target_arch = "riscv64")]
    // SAFETY: a fence instruction: no memory access, no stack.
    unsafe {
        core::arch::asm!("fence ir, ow", options(nostack, preserves_flags));
    }
    // x86: loads are not reordered with later stores (Intel SDM vol. 3A,
    // "Memory Ordering in P6 and More Recent Processor Families").
    #[cfg(target_arch = "x86_64")]
    compiler_fence(Ordering::SeqCst);
    #[cfg(not(any(
        target_arch = "aarch64",
        target_arch = "riscv64",
        target_arch = "x86_64"
    )))]
    fence(Ordering::SeqCst);
}

/// Between the store of a shadow doorbell and the load of its EventIdx: the
/// device may read the shadow slot and then write EventIdx, so the store must
/// be visible before the load is satisfied, or a wake-up is lost.
#[inline(always)]
pub(crate) fn store_then_load() {
    // Linux `nvme_dbbuf_update_and_check_event` (drivers/nvme/host/pci.c)
    // issues `mb()`, on arm64 `dsb sy`, which also waits for every access to
    // complete. Ordering is all this needs, against a device that is a
    // coherent observer in the outer shareable domain: `dmb osh`, Linux
    // arm64 `dma_mb()` / `__iomb()` (arch/arm64/include/asm/barrier.h, io.h).
    #[cfg(target_arch = "aarch64")]
    // SAFETY: a barrier instruction: no memory access, no stack, no flags.
    unsafe {
        core::arch::asm!("dmb osh", options(nostack, preserves_flags));
    }
    // Linux riscv `mb()` = `fence iorw,iorw` (arch/riscv/include/asm/barrier.h),
    // as `nvme_dbbuf_update_and_check_event` issues it.
    #[cfg(target_arch = "riscv64")]
    // SAFETY: a fence instruction: no memory access, no stack.
    unsafe {
        core::arch::asm!("fence iorw, iorw", options(nostack, preserves_flags));
    }
    // x86: a load may pass an earlier store (Intel SDM vol. 3A, "Loads May Be
    // Reordered with Earlier Stores to Different Locations"); Linux x86
    // `mb()` is `mfence` (arch/x86/include/asm/barrier.h).
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    // SAFETY: a fence instruction: no memory access, no stack, no flags.
    unsafe {
        core::arch::asm!("mfence", options(nostack, preserves_flags));
    }
    #[cfg(all(target_arch = "x86_64", miri))]
    fence(Ordering::SeqCst);
    #[cfg(not(any(
        target_arch = "aarch64",
        target_arch = "riscv64",
        target_arch = "x86_64"
    )))]
    fence(Ordering::SeqCst);
}

/// Every barrier once, in code the library compiles for itself: elsewhere
/// they are inlined only into generic code that a user of the crate
/// instantiates, so building the library for a target would not assemble
/// them (and so not check them).
#[used]
static ASSEMBLE_EVERY_BARRIER: fn() = every_barrier;

fn every_barrier() {
    before_doorbell();
    after_phase_tag();
    before_head_doorbell();
    store_then_load();
}
