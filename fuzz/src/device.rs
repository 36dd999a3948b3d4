//! The lying device: the simulated machine's platform, registers and
//! configuration space, wrapped so that every call may carry one of the
//! lies the fuzz input scripted.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use bare_nvme::{DmaRegion, Instant, PhysAddr, Platform, RegisterAccess};
use bare_nvme_sim::{Sim, SimConfig, SimPlatform, SimRegisters};
use pci_types::{ConfigRegionAccess, PciAddress};

use crate::{tracing, CALL_BUDGET};

/// One lie of the device, applied at a given platform call.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Lie {
    pub(crate) at: u64,
    pub(crate) kind: u8,
    pub(crate) a: u32,
    pub(crate) b: u32,
}

/// What the fuzz input makes the device do, shared by all wrappers.
pub(crate) struct Chaos {
    pub(crate) lies: Vec<Lie>,
    pub(crate) next: usize,
    pub(crate) calls: u64,
    /// DMA regions the driver (or the harness) holds: CPU address and length.
    pub(crate) live: Vec<(usize, usize)>,
    pub(crate) sim: Sim,
    /// The device stopped lying (the end of the script).
    pub(crate) quiet: bool,
    /// A register or config read lied: the driver's proofs of a stopped
    /// device may have been forged.
    pub(crate) read_lied: bool,
    /// The device wrote into driver memory by itself.
    pub(crate) scribbled: bool,
}

pub(crate) type Shared = Rc<RefCell<Chaos>>;

impl Chaos {
    /// Counts a platform call; returns the lie for it, if any.
    pub(crate) fn call(&mut self) -> Option<Lie> {
        self.calls += 1;
        assert!(
            self.calls < CALL_BUDGET,
            "the driver hangs: {} platform calls",
            self.calls
        );
        if self.quiet {
            return None;
        }
        let lie = *self.lies.get(self.next)?;
        if lie.at > self.calls {
            return None;
        }
        self.next += 1;
        Some(lie)
    }

    /// The device writes into DMA memory the driver gave it.
    pub(crate) fn scribble(&mut self, lie: Lie) {
        if self.live.is_empty() {
            return;
        }
        let (virt, len) = self.live[(lie.kind >> 2) as usize % self.live.len()];
        let mut bytes = [0u8; 64];
        let (offset, n) = match lie.kind & 3 {
            // Four raw bytes anywhere.
            0 => {
                bytes[..4].copy_from_slice(&lie.b.to_le_bytes());
                (lie.a as usize, 4)
            }
            // A forged completion entry in slot `a & 0xFF`.
            1 => {
                let cqe: [u32; 4] = [
                    lie.b,
                    0,
                    (lie.a >> 8) & 0xFFFF | ((lie.a >> 24) & 0x7) << 16,
                    (lie.b & 0xFFFF_0000) | (lie.b & 0x1) << 16 | (lie.a & 0xFE) << 16,
                ];
                for (i, w) in cqe.iter().enumerate() {
                    bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
                }
                ((lie.a as usize & 0xFF) * 16, 16)
            }
            // 64 bytes of garbage (identify fields, ring entries).
            2 => {
                let mut x = u64::from(lie.b) << 1 | 1;
                for chunk in bytes.chunks_mut(8) {
                    x ^= x >> 12;
                    x ^= x << 25;
                    x ^= x >> 27;
                    chunk.copy_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
                }
                (lie.a as usize, 64)
            }
            // One byte.
            _ => {
                bytes[0] = lie.b as u8;
                (lie.a as usize, 1)
            }
        };
        if len < n {
            return;
        }
        let offset = offset % (len - n + 1);
        self.scribbled = true;
        for (i, &byte) in bytes[..n].iter().enumerate() {
            // SAFETY: `virt .. virt + len` is a live allocation of the sim's
            // arena (removed from `live` when freed); `offset + i < len`. The
            // driver holds no reference into DMA memory across a platform
            // call, so this is the device writing by DMA, as hardware would.
            unsafe { ((virt + offset + i) as *mut u8).write_volatile(byte) };
        }
    }
}

/// A read value as the lying device reports it.
pub(crate) fn lie_about(value: u32, lie: Lie) -> u32 {
    match lie.kind & 3 {
        0 => lie.a,
        1 => value ^ lie.a,
        2 => !0,
        _ => 0,
    }
}

/// The platform: the sim's, with failing allocations and clock jumps.
#[derive(Clone)]
pub struct FuzzPlatform {
    pub(crate) inner: SimPlatform,
    pub(crate) chaos: Shared,
}

/// Mapped registers whose reads lie and whose writes may be followed by
/// device writes into DMA memory.
pub struct FuzzRegisters {
    pub(crate) inner: SimRegisters,
    pub(crate) chaos: Shared,
}

/// Configuration space whose reads lie.
#[derive(Clone)]
pub struct FuzzConfig {
    pub(crate) inner: SimConfig,
    pub(crate) chaos: Shared,
}

impl Platform for FuzzPlatform {
    type Registers = FuzzRegisters;

    fn dma_alloc(&self, len: usize, align: usize) -> Option<DmaRegion> {
        if self.chaos.borrow_mut().call().is_some() {
            return None;
        }
        let region = self.inner.dma_alloc(len, align)?;
        self.chaos
            .borrow_mut()
            .live
            .push((region.virt().as_ptr() as usize, region.len()));
        Some(region)
    }

    fn dma_free(&self, region: DmaRegion) {
        if tracing() {
            eprintln!("free {:#x}+{:#x}", region.phys().as_u64(), region.len());
        }
        {
            let mut chaos = self.chaos.borrow_mut();
            chaos.call();
            let virt = region.virt().as_ptr() as usize;
            let i = chaos
                .live
                .iter()
                .position(|&(v, _)| v == virt)
                .expect("freeing a region that is not allocated");
            chaos.live.swap_remove(i);
        }
        self.inner.dma_free(region);
    }

    fn map_registers(&self, phys: PhysAddr, len: usize) -> Option<FuzzRegisters> {
        if self.chaos.borrow_mut().call().is_some() {
            return None;
        }
        Some(FuzzRegisters {
            inner: self.inner.map_registers(phys, len)?,
            chaos: self.chaos.clone(),
        })
    }

    fn now(&self) -> Instant {
        let lie = self.chaos.borrow_mut().call();
        if let Some(lie) = lie {
            let sim = self.chaos.borrow().sim.clone();
            sim.advance(Duration::from_micros(u64::from(lie.a % 2_000_000)));
        }
        self.inner.now()
    }
}

impl RegisterAccess for FuzzRegisters {
    fn read32(&self, offset: usize) -> u32 {
        let lie = self.chaos.borrow_mut().call();
        let value = self.inner.read32(offset);
        lie.map_or(value, |lie| {
            self.chaos.borrow_mut().read_lied = true;
            lie_about(value, lie)
        })
    }

    fn write32(&self, offset: usize, value: u32) {
        let lie = self.chaos.borrow_mut().call();
        self.inner.write32(offset, value);
        if let Some(lie) = lie {
            self.chaos.borrow_mut().scribble(lie);
        }
    }
}

impl ConfigRegionAccess for FuzzConfig {
    unsafe fn read(&self, address: PciAddress, offset: u16) -> u32 {
        let lie = self.chaos.borrow_mut().call();
        // SAFETY: forwarded as received; the sim has no unsafe requirements.
        let value = unsafe { self.inner.read(address, offset) };
        lie.map_or(value, |lie| {
            self.chaos.borrow_mut().read_lied = true;
            lie_about(value, lie)
        })
    }

    unsafe fn write(&self, address: PciAddress, offset: u16, value: u32) {
        self.chaos.borrow_mut().call();
        // SAFETY: as for `read`.
        unsafe { self.inner.write(address, offset, value) }
    }
}
