//! `bare_nvme::Platform` over one controller's `EFI_PCI_IO_PROTOCOL`: DMA
//! from `AllocateBuffer` + `Map` (common buffer), registers through the
//! protocol's `Mem.Read` / `Mem.Write` on BAR 0, the TSC clock.

use core::cell::RefCell;

use bare_nvme::{DmaRegion, Instant, PhysAddr, Platform, RegisterAccess};

use crate::clock;
use crate::pci_io::{DmaBuffer, PciIo};

/// DMA buffers one controller may hold at once: its queues, the scratch
/// page, PRP lists, the bounce buffer, with room to spare.
const MAX_BUFFERS: usize = 64;

/// The platform of one controller.
pub struct UefiPlatform {
    pci: PciIo,
    /// Every buffer handed out, to find its mapping again when it returns.
    buffers: RefCell<[Option<DmaBuffer>; MAX_BUFFERS]>,
}

impl UefiPlatform {
    /// The platform of the function behind `pci`.
    pub fn new(pci: PciIo) -> Self {
        Self {
            pci,
            buffers: RefCell::new([None; MAX_BUFFERS]),
        }
    }

    /// Buffers currently handed out.
    pub fn outstanding(&self) -> usize {
        self.buffers.borrow().iter().flatten().count()
    }
}

impl Platform for UefiPlatform {
    type Registers = Bar0;

    fn dma_alloc(&self, len: usize, align: usize) -> Option<DmaRegion> {
        // Whole pages are 4096-aligned, which covers every `align` asked.
        if align > 4096 || len == 0 {
            return None;
        }
        let mut buffers = self.buffers.borrow_mut();
        let slot = buffers.iter_mut().find(|b| b.is_none())?;
        let buffer = self.pci.dma_alloc(len.div_ceil(4096))?;
        *slot = Some(buffer);
        // SAFETY: `buffer` is `pages * 4096 >= len` zeroed bytes that only
        // this region will use until `dma_free`; `device` is the address the
        // device reaches them at.
        Some(unsafe { DmaRegion::new(buffer.host, PhysAddr::new(buffer.device), len) })
    }

    fn dma_free(&self, region: DmaRegion) {
        let mut buffers = self.buffers.borrow_mut();
        let found = buffers
            .iter_mut()
            .find(|b| b.is_some_and(|b| b.host == region.virt()));
        if let Some(slot) = found {
            if let Some(buffer) = slot.take() {
                // SAFETY: the driver returns a region only once the device
                // can no longer reach it (its proof of a DMA stop).
                unsafe { self.pci.dma_free(buffer) };
            }
        }
    }

    fn map_registers(&self, phys: PhysAddr, len: usize) -> Option<Bar0> {
        // The controller's registers are reached through the protocol, by
        // BAR index, wherever the firmware put them.
        let _ = (phys, len);
        Some(Bar0(self.pci))
    }

    fn now(&self) -> Instant {
        clock::now()
    }
}

/// BAR 0 of the controller, through `Mem.Read` / `Mem.Write` (works where
/// the BAR is not identity mapped, and the firmware checks the range).
#[derive(Debug)]
pub struct Bar0(pub PciIo);

impl RegisterAccess for Bar0 {
    fn read32(&self, offset: usize) -> u32 {
        self.0.mem_read32(0, offset as u64)
    }

    fn write32(&self, offset: usize, value: u32) {
        self.0.mem_write32(0, offset as u64, value);
    }
}
