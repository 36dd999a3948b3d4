//! The handles the driver holds: platform, registers and config access. All
//! share the simulation state; cloning one is cheap.

use std::sync::{Arc, Mutex, PoisonError};

use bare_nvme::{DmaRegion, Instant, PhysAddr, Platform, RegisterAccess};
use pci_types::{ConfigRegionAccess, PciAddress};

use crate::memory::Owner;
use crate::state::State;

/// The simulated machine as [`Platform`]: DMA memory from the arena, register
/// mappings that route through the PCI model, and the virtual clock.
#[derive(Clone)]
pub struct SimPlatform {
    pub(crate) state: Arc<Mutex<State>>,
}

/// A mapped register range. Every 32-bit access is routed at the time it
/// happens (to whatever BAR decodes the address then), counted, and may
/// trigger a scheduled fault. 64-bit accesses use the trait's default: two
/// 32-bit accesses, low half first, each counted and indexed separately, so
/// a fault can land between the halves.
#[derive(Clone)]
pub struct SimRegisters {
    state: Arc<Mutex<State>>,
    base: u64,
    len: usize,
}

impl SimRegisters {
    /// The physical address this mapping starts at.
    pub fn phys(&self) -> PhysAddr {
        PhysAddr::new(self.base)
    }
}

/// Configuration space access (`pci_types::ConfigRegionAccess`), routed by
/// the bus numbers programmed in the bridges. Dword accesses only: an
/// unaligned offset is a protocol error and reads all-ones.
#[derive(Clone)]
pub struct SimConfig {
    pub(crate) state: Arc<Mutex<State>>,
}

impl SimPlatform {
    /// [`crate::Sim::caller_owns`], for helpers that hold only the platform
    /// (a driver's `platform()`).
    pub fn caller_owns(&self, region: &DmaRegion) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .caller_owns(region);
    }
}

impl Platform for SimPlatform {
    type Registers = SimRegisters;

    fn dma_alloc(&self, len: usize, align: usize) -> Option<DmaRegion> {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let region = s.mem.alloc(len, align, Owner::Driver)?;
        s.forget_caller_owned(&region);
        s.stats.c.dma_allocs += 1;
        Some(region)
    }

    /// Panics (failing the test) on a double free or a region that is not
    /// exactly one outstanding allocation. A region a controller that can
    /// still DMA references counts in `freed_while_dma_possible`.
    fn dma_free(&self, region: DmaRegion) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.check_handed_back(&region, "freed");
        s.forget_caller_owned(&region);
        s.mem.free(&region);
        s.stats.c.dma_frees += 1;
    }

    /// In the non-coherent mode, copies the CPU's bytes to the device's
    /// memory; a range outside one live allocation is a protocol error.
    fn dma_flush(&self, phys: PhysAddr, len: usize) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.stats.c.dma_flushes += 1;
        if s.mem.flush(phys.as_u64(), len).is_err() {
            s.stats.protocol(format!(
                "dma_flush of {len} bytes at {phys:?} outside one allocation"
            ));
        }
    }

    /// In the non-coherent mode, copies the device's bytes over the CPU's;
    /// a range outside one live allocation is a protocol error.
    fn dma_invalidate(&self, phys: PhysAddr, len: usize) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.stats.c.dma_invalidates += 1;
        if s.mem.invalidate(phys.as_u64(), len).is_err() {
            s.stats.protocol(format!(
                "dma_invalidate of {len} bytes at {phys:?} outside one allocation"
            ));
        }
    }

    /// Maps any non-empty range; what answers is decided per access.
    fn map_registers(&self, phys: PhysAddr, len: usize) -> Option<SimRegisters> {
        if len == 0 || phys.checked_add(len as u64).is_none() {
            return None;
        }
        Some(SimRegisters {
            state: self.state.clone(),
            base: phys.as_u64(),
            len,
        })
    }

    /// The virtual time; each call advances it by the clock step.
    fn now(&self) -> Instant {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let t = s.now;
        s.now = s.now.saturating_add(s.step);
        Instant::from_nanos(t)
    }
}

impl SimRegisters {
    fn in_range(&self, offset: usize, s: &mut State) -> bool {
        if !offset.is_multiple_of(4) || offset.checked_add(4).is_none_or(|e| e > self.len) {
            s.stats.protocol(format!(
                "register access at {offset:#x} outside the {:#x}-byte mapping",
                self.len
            ));
            return false;
        }
        true
    }
}

impl RegisterAccess for SimRegisters {
    fn read32(&self, offset: usize) -> u32 {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if !self.in_range(offset, &mut s) {
            return !0;
        }
        s.mmio_read(self.base + offset as u64)
    }

    fn write32(&self, offset: usize, value: u32) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if self.in_range(offset, &mut s) {
            s.mmio_write(self.base + offset as u64, value);
        }
    }
}

impl ConfigRegionAccess for SimConfig {
    unsafe fn read(&self, address: PciAddress, offset: u16) -> u32 {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if address.segment() != 0 {
            s.begin_access();
            s.stats.c.config_reads += 1;
            return !0;
        }
        s.config_read(address.bus(), address.device(), address.function(), offset)
    }

    unsafe fn write(&self, address: PciAddress, offset: u16, value: u32) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if address.segment() != 0 {
            s.begin_access();
            s.stats.c.config_writes += 1;
            return;
        }
        s.config_write(
            address.bus(),
            address.device(),
            address.function(),
            offset,
            value,
        );
    }
}
