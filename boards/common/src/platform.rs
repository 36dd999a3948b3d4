//! `bare_nvme::Platform` for every board, over the installed [`crate::Board`].

use core::ptr::NonNull;

use crate::counters;
use bare_nvme::{DmaRegion, Instant, MmioRegisters, PhysAddr, Platform, RegisterAccess};

use crate::board::board;
use crate::{clock, dma};

/// The board as the driver sees it: DMA from [`dma`], identity-mapped
/// registers (uncached, see [`crate::Board::is_mapped`]), the board's clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct QemuPlatform;

impl Platform for QemuPlatform {
    type Registers = CountedRegisters;

    fn dma_alloc(&self, len: usize, align: usize) -> Option<DmaRegion> {
        dma::alloc(len, align)
    }

    fn dma_free(&self, region: DmaRegion) {
        dma::free(region);
    }

    fn map_registers(&self, phys: PhysAddr, len: usize) -> Option<CountedRegisters> {
        let addr = phys.as_u64();
        if !phys.is_aligned(4) || !board().is_mapped(addr, len as u64) {
            return None;
        }
        let base = NonNull::new(addr as *mut u8)?;
        // SAFETY: the range is inside the identity map, 4-byte aligned, and
        // uncached because it holds no RAM (`Board::is_mapped`'s contract);
        // the map is never torn down.
        Some(CountedRegisters(unsafe { MmioRegisters::new(base, len) }))
    }

    fn now(&self) -> Instant {
        clock::now()
    }
}

/// The driver's registers: plain MMIO, with reads counted (see
/// [`counters`]).
#[derive(Debug)]
pub struct CountedRegisters(MmioRegisters);

impl RegisterAccess for CountedRegisters {
    fn read32(&self, offset: usize) -> u32 {
        counters::count_mmio_read();
        self.0.read32(offset)
    }

    fn write32(&self, offset: usize, value: u32) {
        self.0.write32(offset, value);
    }
}
