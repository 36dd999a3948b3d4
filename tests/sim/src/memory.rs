//! The DMA memory arena: one host allocation, handed out in regions with fake
//! physical addresses.
//!
//! Physical addresses are `ARENA_PHYS_BASE + offset`, deliberately far from any
//! host virtual address, so a driver that writes a CPU pointer into a command or
//! register makes the simulated device miss the arena (counted as wild DMA)
//! instead of silently working.
//!
//! The device side only reaches memory through raw pointers derived from the
//! arena's base pointer and only inside a live allocation; no reference ever
//! covers the whole arena, so the driver's own references into its regions keep
//! their aliasing guarantees (Miri's Stacked Borrows model agrees).
//!
//! In the non-coherent mode the device has memory of its own: a second copy
//! of the arena that device reads and writes use. The driver's bytes reach it
//! only through `flush` (a cache clean), and the device's reach the driver
//! only through `invalidate`, which overwrites the CPU's bytes in the range
//! (as discarding cache lines does). Allocation zeroes both copies.

use std::alloc::{alloc, dealloc, Layout};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ptr::NonNull;

use bare_nvme::{DmaRegion, PhysAddr};

/// Physical address of the arena's first byte as the simulated devices see it.
pub const ARENA_PHYS_BASE: u64 = 0x40_0000_0000;

/// Default arena size.
pub const DEFAULT_ARENA_SIZE: usize = 64 << 20;

/// Alignment of the arena itself (and the largest alignment it can honour).
const ARENA_ALIGN: usize = 4096;

/// Who owns an allocation: the driver (counted, must come back) or the
/// simulated firmware (queues it left behind; never counted or freed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Owner {
    Driver,
    Firmware,
}

/// A device access that did not land inside one live allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WildDma;

pub(crate) struct Arena {
    /// The host allocation.
    raw: NonNull<u8>,
    /// Its first 4 KiB-aligned byte: offset 0 of the arena.
    base: NonNull<u8>,
    size: usize,
    layout: Layout,
    /// Free extents, offset -> length, coalesced.
    free: BTreeMap<usize, usize>,
    /// Live allocations, offset -> (length, owner).
    live: BTreeMap<usize, (usize, Owner)>,
    /// The device's copy of the arena in the non-coherent mode.
    device: Option<RefCell<Box<[u8]>>>,
}

// SAFETY: the arena owns its host allocation; the raw pointers are only
// dereferenced by the simulation state that holds the arena, which is behind
// one lock, so moving it to another thread moves the only user with it.
unsafe impl Send for Arena {}

impl Arena {
    pub(crate) fn new(size: usize) -> Self {
        let size = size.max(ARENA_ALIGN).next_multiple_of(ARENA_ALIGN);
        // Not zeroed here: every byte is zeroed when `alloc` hands it out,
        // and neither the device (`check`) nor anybody else touches bytes
        // outside a live allocation, so no uninitialised byte is ever read.
        // Zeroing the whole arena per simulation was a fifth of a fuzz run.
        let layout = Layout::from_size_align(size + ARENA_ALIGN, 16).expect("arena layout");
        // SAFETY: the layout has a non-zero size.
        let raw =
            NonNull::new(unsafe { alloc(layout) }).expect("out of host memory for the DMA arena");
        let skip = raw.as_ptr().align_offset(ARENA_ALIGN);
        // SAFETY: skip < ARENA_ALIGN, so base..base + size stays inside the
        // allocation of size + ARENA_ALIGN bytes.
        let base = unsafe { NonNull::new_unchecked(raw.as_ptr().add(skip)) };
        let mut free = BTreeMap::new();
        free.insert(0, size);
        Self {
            raw,
            base,
            size,
            layout,
            free,
            live: BTreeMap::new(),
            device: None,
        }
    }

    /// Gives the device its own copy of the memory (non-coherent DMA).
    pub(crate) fn make_non_coherent(&mut self) {
        self.device = Some(RefCell::new(vec![0u8; self.size].into_boxed_slice()));
    }

    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// First-fit allocation of `len` bytes aligned to `align`, zeroed.
    pub(crate) fn alloc(&mut self, len: usize, align: usize, owner: Owner) -> Option<DmaRegion> {
        if len == 0 || !align.is_power_of_two() || align > ARENA_ALIGN {
            return None;
        }
        let (&start, &flen, aligned) = self.free.iter().find_map(|(start, flen)| {
            let aligned = start.next_multiple_of(align);
            (aligned + len <= start + flen).then_some((start, flen, aligned))
        })?;
        self.free.remove(&start);
        if aligned > start {
            self.free.insert(start, aligned - start);
        }
        let end = aligned + len;
        if end < start + flen {
            self.free.insert(end, start + flen - end);
        }
        self.live.insert(aligned, (len, owner));
        // SAFETY: aligned + len <= arena size, so the pointer stays inside the
        // allocation; the range is now exclusively this region's.
        let virt = unsafe {
            let p = self.base.as_ptr().add(aligned);
            p.write_bytes(0, len);
            NonNull::new_unchecked(p)
        };
        if let Some(device) = self.device.as_ref() {
            device.borrow_mut()[aligned..end].fill(0);
        }
        let phys = PhysAddr::new(ARENA_PHYS_BASE + aligned as u64);
        // SAFETY: `virt` is valid for `len` bytes for as long as the arena
        // lives (the platform handles keep it alive), the extent is removed
        // from the free list until freed, and the device sees it at `phys`.
        Some(unsafe { DmaRegion::new(virt, phys, len) })
    }

    /// Returns a region. Panics (a test failure) on anything that is not
    /// exactly one outstanding driver allocation.
    pub(crate) fn free(&mut self, region: &DmaRegion) -> usize {
        let phys = region.phys().as_u64();
        let offset = phys
            .checked_sub(ARENA_PHYS_BASE)
            .filter(|&o| o < self.size() as u64)
            .unwrap_or_else(|| panic!("dma_free of a region not from the arena: {region:?}"))
            as usize;
        let expected_virt = self.base.as_ptr().wrapping_add(offset);
        match self.live.get(&offset) {
            Some(&(len, Owner::Driver))
                if len == region.len() && expected_virt == region.virt().as_ptr() => {}
            Some(_) => panic!("dma_free of a region that does not match an allocation: {region:?}"),
            None => panic!("double dma_free (or never allocated): {region:?}"),
        }
        let (len, _) = self.live.remove(&offset).expect("checked above");
        self.insert_free(offset, len);
        len
    }

    fn insert_free(&mut self, offset: usize, len: usize) {
        let mut start = offset;
        let mut end = offset + len;
        if let Some((&p, &plen)) = self.free.range(..offset).next_back() {
            if p + plen == offset {
                self.free.remove(&p);
                start = p;
            }
        }
        if let Some(nlen) = self.free.remove(&end) {
            end += nlen;
        }
        self.free.insert(start, end - start);
    }

    /// Live driver allocations: (count, bytes).
    pub(crate) fn outstanding(&self) -> (u64, u64) {
        self.live
            .values()
            .filter(|(_, o)| *o == Owner::Driver)
            .fold((0, 0), |(n, b), (len, _)| (n + 1, b + *len as u64))
    }

    /// The arena offset of `[phys, phys + len)` if it lies inside one live
    /// allocation.
    fn check(&self, phys: u64, len: usize) -> Result<usize, WildDma> {
        let offset = phys.checked_sub(ARENA_PHYS_BASE).ok_or(WildDma)?;
        let offset = usize::try_from(offset).map_err(|_| WildDma)?;
        let end = offset.checked_add(len).ok_or(WildDma)?;
        let (&start, &(alen, _)) = self.live.range(..=offset).next_back().ok_or(WildDma)?;
        if end <= start + alen {
            Ok(offset)
        } else {
            Err(WildDma)
        }
    }

    /// The start (arena offset) of the live allocation `[phys, phys + len)`
    /// lies inside, if it lies inside one.
    pub(crate) fn allocation_of(&self, phys: u64, len: usize) -> Option<usize> {
        let offset = self.check(phys, len).ok()?;
        self.live
            .range(..=offset)
            .next_back()
            .map(|(&start, _)| start)
    }

    /// Whether `[phys, phys + len)` lies inside one live allocation.
    pub(crate) fn contains(&self, phys: u64, len: usize) -> bool {
        self.check(phys, len).is_ok()
    }

    /// Makes the CPU's bytes in `[phys, phys + len)` the device's (a cache
    /// clean); the range must lie inside one live allocation.
    pub(crate) fn flush(&self, phys: u64, len: usize) -> Result<(), WildDma> {
        let offset = self.check(phys, len)?;
        if let Some(device) = self.device.as_ref() {
            let mut device = device.borrow_mut();
            // SAFETY: inside a live allocation; a raw copy out of the arena
            // creates no reference to the driver's memory.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    self.base.as_ptr().add(offset),
                    device[offset..offset + len].as_mut_ptr(),
                    len,
                );
            }
        }
        Ok(())
    }

    /// Makes the device's bytes in `[phys, phys + len)` the CPU's (a cache
    /// invalidate); the range must lie inside one live allocation.
    pub(crate) fn invalidate(&self, phys: u64, len: usize) -> Result<(), WildDma> {
        let offset = self.check(phys, len)?;
        if let Some(device) = self.device.as_ref() {
            let device = device.borrow();
            // SAFETY: as in `flush`, in the other direction.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    device[offset..offset + len].as_ptr(),
                    self.base.as_ptr().add(offset),
                    len,
                );
            }
        }
        Ok(())
    }

    /// Device read from memory.
    pub(crate) fn read(&self, phys: u64, buf: &mut [u8]) -> Result<(), WildDma> {
        let offset = self.check(phys, buf.len())?;
        if let Some(device) = self.device.as_ref() {
            buf.copy_from_slice(&device.borrow()[offset..offset + buf.len()]);
            return Ok(());
        }
        // SAFETY: the range lies inside a live allocation within the arena;
        // a raw copy never creates a reference to the driver's memory.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.base.as_ptr().add(offset),
                buf.as_mut_ptr(),
                buf.len(),
            );
        }
        Ok(())
    }

    /// Device write to memory.
    pub(crate) fn write(&self, phys: u64, data: &[u8]) -> Result<(), WildDma> {
        let offset = self.check(phys, data.len())?;
        if let Some(device) = self.device.as_ref() {
            device.borrow_mut()[offset..offset + data.len()].copy_from_slice(data);
            return Ok(());
        }
        // SAFETY: as in `read`; the arena memory is only ever written through
        // raw pointers derived from `base` or by the region's owner.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.base.as_ptr().add(offset),
                data.len(),
            );
        }
        Ok(())
    }

    pub(crate) fn read_u32(&self, phys: u64) -> Result<u32, WildDma> {
        let mut b = [0u8; 4];
        self.read(phys, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    pub(crate) fn read_u64(&self, phys: u64) -> Result<u64, WildDma> {
        let mut b = [0u8; 8];
        self.read(phys, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    pub(crate) fn write_u32(&self, phys: u64, v: u32) -> Result<(), WildDma> {
        self.write(phys, &v.to_le_bytes())
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.raw.as_ptr(), self.layout) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_fit_honours_alignment_and_coalesces() {
        let mut a = Arena::new(1 << 20);
        let r1 = a.alloc(100, 8, Owner::Driver).unwrap();
        let r2 = a.alloc(4096, 4096, Owner::Driver).unwrap();
        assert!(r2.phys().is_aligned(4096));
        assert_eq!(r1.phys().as_u64(), ARENA_PHYS_BASE);
        assert_eq!(a.outstanding(), (2, 4196));
        a.free(&r1);
        a.free(&r2);
        assert_eq!(a.outstanding(), (0, 0));
        assert_eq!(a.free.len(), 1);
        assert_eq!(a.free.get(&0), Some(&(1 << 20)));
    }

    #[test]
    fn reallocation_is_zeroed() {
        let mut a = Arena::new(1 << 16);
        let mut r = a.alloc(64, 64, Owner::Driver).unwrap();
        r.as_mut_slice().fill(0xAA);
        a.free(&r);
        let r = a.alloc(64, 64, Owner::Driver).unwrap();
        assert!(r.as_slice().iter().all(|&b| b == 0));
        a.free(&r);
    }

    #[test]
    fn device_access_outside_allocations_is_wild() {
        let mut a = Arena::new(1 << 16);
        let r = a.alloc(64, 64, Owner::Driver).unwrap();
        let p = r.phys().as_u64();
        assert!(a.write(p, &[1; 64]).is_ok());
        assert_eq!(a.write(p + 1, &[1; 64]), Err(WildDma));
        assert_eq!(a.read_u32(r.virt().as_ptr() as u64), Err(WildDma));
        a.free(&r);
        assert_eq!(a.read_u32(p), Err(WildDma));
    }

    #[test]
    #[should_panic(expected = "double dma_free")]
    fn double_free_panics() {
        let mut a = Arena::new(1 << 16);
        let r = a.alloc(64, 64, Owner::Driver).unwrap();
        // SAFETY: a copy of the same region, to free it twice on purpose.
        let copy = unsafe { DmaRegion::new(r.virt(), r.phys(), r.len()) };
        a.free(&r);
        a.free(&copy);
    }
}
