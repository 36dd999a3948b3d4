//! `bare_nvme::Platform` for this board.

use core::ptr::NonNull;

use bare_nvme::{DmaRegion, Instant, MmioRegisters, PhysAddr, Platform};

use crate::{clock, dma, paging};

/// The board as the driver sees it: DMA from [`dma`], identity-mapped
/// registers (uncached, see [`paging`]), the TSC clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct QemuPlatform;

impl Platform for QemuPlatform {
    type Registers = MmioRegisters;

    fn dma_alloc(&self, len: usize, align: usize) -> Option<DmaRegion> {
        dma::alloc(len, align)
    }

    fn dma_free(&self, region: DmaRegion) {
        dma::free(region);
    }

    fn map_registers(&self, phys: PhysAddr, len: usize) -> Option<MmioRegisters> {
        let addr = phys.as_u64();
        if !phys.is_aligned(4) || !paging::is_mapped(addr, len as u64) {
            return None;
        }
        let base = NonNull::new(addr as *mut u8)?;
        // SAFETY: the range is inside the identity map, 4-byte aligned, and
        // uncached because it holds no RAM (`paging::mark_non_ram_uncached`);
        // the map is never torn down.
        Some(unsafe { MmioRegisters::new(base, len) })
    }

    fn now(&self) -> Instant {
        clock::now()
    }
}
