//! Memory the driver shares with the device: rings, PRP lists, the shadow
//! doorbell and EventIdx pages, the identify scratch page.
//!
//! The device may read or write such memory at any moment, so no Rust
//! reference to its bytes may ever exist: a `&[u8]` promises the bytes do not
//! change, a `&mut [u8]` that nobody else touches them. [`SharedMemory`] owns
//! the [`DmaRegion`] and offers only volatile reads and writes of `Copy`
//! values through raw pointers, and a volatile copy into a buffer of the
//! caller's (identify data is parsed from such a copy). As no reference to
//! the bytes can be made, a write through `&self` invalidates nothing: the
//! type is to DMA memory what `Cell` is to ordinary memory, and like `Cell`
//! it is not `Sync`.
//!
//! Caller buffers stay plain [`DmaRegion`]s, never wrapped: the device writes
//! one only while the driver holds it by value or by `&mut`, so the caller's
//! slice views of it cannot overlap a device write.

use core::mem::size_of;
use core::ptr::NonNull;

use volatile::VolatilePtr;

use crate::error::{Error, Result};
use crate::platform::{DmaRegion, PhysAddr, Platform};

/// DMA memory shared with the device, accessed only by volatile operations.
#[derive(Debug)]
pub(crate) struct SharedMemory {
    region: DmaRegion,
}

impl SharedMemory {
    /// Takes ownership of `region`. It must not be a caller's buffer: from
    /// now on its bytes are reachable only through this value.
    pub(crate) fn new(region: DmaRegion) -> Self {
        Self { region }
    }

    /// Allocates `len` zeroed bytes aligned to `align`.
    pub(crate) fn alloc<P: Platform>(platform: &P, len: usize, align: usize) -> Result<Self> {
        platform
            .dma_alloc(len, align)
            .map(Self::new)
            .ok_or(Error::OutOfDmaMemory { bytes: len })
    }

    /// Returns the memory to the platform.
    pub(crate) fn release<P: Platform>(self, platform: &P) {
        platform.dma_free(self.region);
    }

    /// Makes the CPU's writes to `len` bytes at `offset` visible to the
    /// device ([`Platform::dma_flush`]); clipped to the region.
    #[inline(always)]
    pub(crate) fn flush<P: Platform>(&self, platform: &P, offset: usize, len: usize) {
        if let Some((phys, len)) = self.range(offset, len) {
            platform.dma_flush(phys, len);
        }
    }

    /// Makes the device's writes to `len` bytes at `offset` visible to the
    /// CPU ([`Platform::dma_invalidate`]); clipped to the region.
    #[inline(always)]
    pub(crate) fn invalidate<P: Platform>(&self, platform: &P, offset: usize, len: usize) {
        if let Some((phys, len)) = self.range(offset, len) {
            platform.dma_invalidate(phys, len);
        }
    }

    /// Device address and length of `len` bytes at `offset`, clipped to the
    /// region; `None` when nothing is left.
    #[inline(always)]
    fn range(&self, offset: usize, len: usize) -> Option<(PhysAddr, usize)> {
        let len = len.min(self.len().checked_sub(offset)?);
        if len == 0 {
            return None;
        }
        Some((self.phys().checked_add(offset as u64)?, len))
    }

    /// Gives up the volatile-only view: the region, for the platform or for
    /// the quarantine (which never frees it).
    pub(crate) fn into_region(self) -> DmaRegion {
        self.region
    }

    /// The device address of the first byte.
    pub(crate) fn phys(&self) -> PhysAddr {
        self.region.phys()
    }

    /// Length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.region.len()
    }

    /// A pointer to a `T` at byte `offset`, `None` when out of range or
    /// misaligned for `T`.
    #[inline(always)]
    fn ptr<T>(&self, offset: usize) -> Option<NonNull<T>> {
        let end = offset.checked_add(size_of::<T>())?;
        if end > self.region.len() {
            return None;
        }
        // SAFETY: offset + size_of::<T>() <= len, so the pointer stays inside
        // the region, valid for its whole length (`DmaRegion::new`).
        let ptr = unsafe { self.region.virt().add(offset) }.cast::<T>();
        ptr.is_aligned().then_some(ptr)
    }

    /// A volatile handle to the `T` at byte `offset`, for reading and
    /// writing it (and its fields). `None` when out of range or misaligned.
    #[inline(always)]
    pub(crate) fn at<T: Copy>(&self, offset: usize) -> Option<VolatilePtr<'_, T>> {
        let ptr = self.ptr::<T>(offset)?;
        // SAFETY: in bounds, aligned and non-null; the region is owned by
        // this value and never reachable as a reference, so volatile access
        // through the returned handle (bound to `&self`) aliases nothing.
        Some(unsafe { VolatilePtr::new(ptr) })
    }

    /// Writes `value` as the `T` at byte `offset` (volatile). `None` when out
    /// of range or misaligned.
    #[inline(always)]
    pub(crate) fn write<T: Copy>(&self, offset: usize, value: T) -> Option<()> {
        self.at::<T>(offset).map(|p| p.write(value))
    }

    /// Whether `count` values of `size` bytes fit from byte 0 on, the first
    /// (and so each, `size` being a multiple of `align`) aligned to `align`:
    /// what a ring checks once so that its accesses need no check.
    pub(crate) fn holds(&self, count: usize, size: usize, align: usize) -> bool {
        count
            .checked_mul(size)
            .is_some_and(|bytes| bytes <= self.len())
            && (self.region.virt().as_ptr() as usize).is_multiple_of(align)
            && size.is_multiple_of(align)
    }

    /// Reads the `u32` at byte `offset` (volatile), without a range check.
    ///
    /// # Safety
    /// `offset + 4 <= self.len()` and `offset` is a multiple of 4 from a
    /// 4-aligned start (the ring constructors prove it with [`Self::holds`]).
    #[inline(always)]
    pub(crate) unsafe fn read_u32_unchecked(&self, offset: usize) -> u32 {
        // SAFETY: in range and aligned (the caller's promise); no reference
        // to the bytes exists, the access is volatile.
        unsafe { self.region.virt().add(offset).cast::<u32>().read_volatile() }
    }

    /// Writes `words` at byte `offset` (one volatile store per word),
    /// without a range check.
    ///
    /// # Safety
    /// `offset + 8 * N <= self.len()` and `offset` is a multiple of 8 from an
    /// 8-aligned start (the ring constructors prove it with [`Self::holds`]).
    #[inline(always)]
    pub(crate) unsafe fn write_words_unchecked<const N: usize>(
        &self,
        offset: usize,
        words: [u64; N],
    ) {
        // SAFETY: in range and aligned (the caller's promise).
        let ptr = unsafe { self.region.virt().add(offset) }.cast::<u64>();
        for (i, word) in words.into_iter().enumerate() {
            // SAFETY: `ptr` covers N aligned u64s inside the region, and
            // i < N; no reference to the bytes exists.
            unsafe { ptr.add(i).write_volatile(word) };
        }
    }

    /// Copies the bytes at `offset ..` into `dst` (volatile reads), as many
    /// as both hold; returns how many. The copy, not the shared memory, is
    /// what gets parsed: the device cannot change it under the parser.
    pub(crate) fn copy_out(&self, offset: usize, dst: &mut [u8]) -> usize {
        let n = self.len().saturating_sub(offset).min(dst.len());
        let mut chunks = dst[..n].chunks_exact_mut(BLOCK);
        let mut at = offset;
        for chunk in &mut chunks {
            // `[u8; BLOCK]` needs no alignment: few bounds checks per page.
            if let Some(block) = self.at::<[u8; BLOCK]>(at) {
                chunk.copy_from_slice(&block.read());
            }
            at += BLOCK;
        }
        for byte in chunks.into_remainder() {
            if let Some(b) = self.at::<u8>(at) {
                *byte = b.read();
            }
            at += 1;
        }
        n
    }

    /// Zeroes every byte (volatile writes, which the compiler cannot drop
    /// though nothing in the program reads them back).
    pub(crate) fn zero(&self) {
        let len = self.len();
        let mut at = 0;
        while at + BLOCK <= len {
            self.write(at, [0u8; BLOCK]);
            at += BLOCK;
        }
        while at < len {
            self.write(at, 0u8);
            at += 1;
        }
    }
}

/// Bytes per volatile access of the bulk copies.
const BLOCK: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nvme::test_memory::HeapDma;

    #[test]
    fn typed_access_stays_inside_and_aligned() {
        let mut heap = HeapDma::new(4096, 0x8000);
        let m = heap.shared();
        assert_eq!(m.phys(), PhysAddr::new(0x8000));
        assert_eq!(m.write(8, 0x1122_3344_5566_7788u64), Some(()));
        assert_eq!(heap.device_read::<u64>(8), 0x1122_3344_5566_7788);
        heap.device_write(4092, 7u32);
        assert_eq!(m.at::<u32>(4092).map(|p| p.read()), Some(7));
        assert!(m.at::<u32>(4093).is_none(), "past the end");
        assert!(m.at::<u64>(4).is_none(), "misaligned");
        assert!(m.write(usize::MAX - 2, 0u32).is_none(), "offset overflows");
    }

    #[test]
    fn copy_out_takes_what_fits_and_zero_clears_everything() {
        // Not a multiple of 8: the copy ends in single bytes.
        const LEN: usize = 203;
        let mut heap = HeapDma::new(LEN, 0x8000);
        let m = heap.shared();
        let pattern = |i: usize| (i * 7 + 1) as u8;
        for i in 0..LEN {
            heap.device_write(i, pattern(i));
        }
        let mut page = [0u8; 4096];
        assert_eq!(m.copy_out(0, &mut page), LEN);
        assert!((0..LEN).all(|i| page[i] == pattern(i)));
        // From an odd offset, into a short buffer, and past the end.
        let mut short = [0u8; 13];
        assert_eq!(m.copy_out(3, &mut short), 13);
        assert!((0..13).all(|i| short[i] == pattern(i + 3)));
        assert_eq!(m.copy_out(LEN - 6, &mut page), 6);
        assert_eq!(m.copy_out(LEN + 1, &mut page), 0);
        m.zero();
        assert!((0..LEN).all(|i| heap.device_read::<u8>(i) == 0));
    }
}
