//! The boundary to the embedder: DMA memory, register mapping and time.
//!
//! Everything the driver needs from the machine comes through [`Platform`]. The
//! embedder (a firmware, a unikernel, the QEMU board, the simulated device in the
//! tests) implements it once. Register access goes through [`RegisterAccess`] so
//! that a simulated controller can see, count and fail every access; hardware uses
//! [`MmioRegisters`].

use core::fmt;
use core::marker::PhantomData;
use core::ops::{Add, Range, Sub};
use core::ptr::NonNull;
use core::time::Duration;

use volatile::VolatilePtr;

/// A physical (bus) address as the device sees it. Never a bare `u64` in the API,
/// so that CPU pointers and device addresses cannot be confused.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct PhysAddr(u64);

impl PhysAddr {
    /// Wraps a raw physical address.
    pub const fn new(addr: u64) -> Self {
        Self(addr)
    }

    /// The raw address, for writing into a device register or command.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// The address `bytes` further on, or `None` on overflow.
    pub const fn checked_add(self, bytes: u64) -> Option<Self> {
        match self.0.checked_add(bytes) {
            Some(a) => Some(Self(a)),
            None => None,
        }
    }

    /// Whether the address is a multiple of `align` (a power of two).
    pub const fn is_aligned(self, align: u64) -> bool {
        self.0 & (align - 1) == 0
    }
}

impl fmt::Debug for PhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhysAddr({:#x})", self.0)
    }
}

/// A point on the platform's monotonic clock, in nanoseconds since an arbitrary
/// origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(u64);

impl Instant {
    /// An instant `nanos` nanoseconds after the clock's origin.
    pub const fn from_nanos(nanos: u64) -> Self {
        Self(nanos)
    }

    /// Nanoseconds since the clock's origin.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Time elapsed from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, rhs: Duration) -> Instant {
        let nanos = u64::try_from(rhs.as_nanos()).unwrap_or(u64::MAX);
        Instant(self.0.saturating_add(nanos))
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    fn sub(self, rhs: Instant) -> Duration {
        self.saturating_duration_since(rhs)
    }
}

/// A region of zeroed, physically contiguous memory that a device may access by
/// DMA, owned by whoever holds this value.
///
/// It is returned to the platform with [`Platform::dma_free`]; the driver returns
/// every region it allocated when a controller is detached or removed.
///
/// The slice views are for the owner of a data buffer, between commands: the
/// device writes into a region only while the driver holds it by value or by
/// `&mut` (a read's buffer), and only reads one lent by `&` (a write's data),
/// which a shared borrow allows. Memory the driver shares with the device for
/// longer (queues, PRP lists, shadow doorbells, identify data) never lends its
/// bytes out: the driver reaches it only by volatile accesses.
///
/// Dropping a region does not give its memory back (the driver cannot know
/// the platform); return it with [`Platform::dma_free`].
#[must_use = "DMA memory goes back through Platform::dma_free"]
pub struct DmaRegion {
    virt: NonNull<u8>,
    phys: PhysAddr,
    len: usize,
}

// SAFETY: a DmaRegion is an owned, exclusive handle to memory (like a Box); moving
// it between threads moves that ownership.
unsafe impl Send for DmaRegion {}

impl DmaRegion {
    /// Wraps memory handed out by a platform allocator.
    ///
    /// # Safety
    /// `virt` must be valid for reads and writes of `len` bytes for as long as
    /// this value lives, owned exclusively by it, and the device must see the
    /// same bytes at `phys .. phys + len` (physically contiguous).
    pub unsafe fn new(virt: NonNull<u8>, phys: PhysAddr, len: usize) -> Self {
        Self { virt, phys, len }
    }

    /// The CPU address of the first byte.
    pub fn virt(&self) -> NonNull<u8> {
        self.virt
    }

    /// The device address of the first byte.
    pub fn phys(&self) -> PhysAddr {
        self.phys
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the region is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes, for the owner to fill or inspect while no command uses them.
    pub fn as_slice(&self) -> &[u8] {
        DmaView::from(self).as_slice()
    }

    /// The bytes, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        DmaViewMut::from(self).into_mut_slice()
    }
}

impl DmaRegion {
    /// A shared view of the bytes in `range`, for the blocking writes
    /// (`Controller::write` takes one); `None` when `range` is not inside.
    pub fn view(&self, range: Range<usize>) -> Option<DmaView<'_>> {
        let (virt, phys) = self.part(&range)?;
        Some(DmaView {
            virt,
            phys,
            len: range.len(),
            _region: PhantomData,
        })
    }

    /// An exclusive view of the bytes in `range`, for the blocking reads
    /// (`Controller::read` takes one); `None` when `range` is not inside.
    pub fn view_mut(&mut self, range: Range<usize>) -> Option<DmaViewMut<'_>> {
        let (virt, phys) = self.part(&range)?;
        Some(DmaViewMut {
            virt,
            phys,
            len: range.len(),
            _region: PhantomData,
        })
    }

    /// CPU and device addresses of the start of `range`, if it is inside.
    fn part(&self, range: &Range<usize>) -> Option<(NonNull<u8>, PhysAddr)> {
        if range.start > range.end || range.end > self.len {
            return None;
        }
        // SAFETY: start <= len, so the pointer stays inside (or one past)
        // the region's allocation.
        let virt = unsafe { self.virt.add(range.start) };
        Some((virt, self.phys.checked_add(range.start as u64)?))
    }
}

/// Part of a [`DmaRegion`], borrowed shared: the device may only read it.
#[derive(Clone, Copy)]
pub struct DmaView<'a> {
    virt: NonNull<u8>,
    phys: PhysAddr,
    len: usize,
    _region: PhantomData<&'a DmaRegion>,
}

impl<'a> DmaView<'a> {
    /// The device address of the first byte.
    pub fn phys(&self) -> PhysAddr {
        self.phys
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the view is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes.
    pub fn as_slice(&self) -> &'a [u8] {
        // SAFETY: `DmaRegion::new` guarantees validity and exclusive
        // ownership of the region's bytes, and the view lies inside a region
        // borrowed shared for 'a; the device writes only into a region the
        // driver holds by value or `&mut`, never while a shared borrow exists
        // (a command lent a region by `&` only reads it).
        unsafe { core::slice::from_raw_parts(self.virt.as_ptr(), self.len) }
    }
}

impl<'a> From<&'a DmaRegion> for DmaView<'a> {
    fn from(region: &'a DmaRegion) -> Self {
        DmaView {
            virt: region.virt,
            phys: region.phys,
            len: region.len,
            _region: PhantomData,
        }
    }
}

impl<'a> From<&'a mut DmaRegion> for DmaView<'a> {
    fn from(region: &'a mut DmaRegion) -> Self {
        DmaView::from(&*region)
    }
}

/// Part of a [`DmaRegion`], borrowed exclusively: the device may write it.
pub struct DmaViewMut<'a> {
    virt: NonNull<u8>,
    phys: PhysAddr,
    len: usize,
    _region: PhantomData<&'a mut DmaRegion>,
}

impl<'a> DmaViewMut<'a> {
    /// The device address of the first byte.
    pub fn phys(&self) -> PhysAddr {
        self.phys
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the view is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        DmaView {
            virt: self.virt,
            phys: self.phys,
            len: self.len,
            _region: PhantomData,
        }
        .as_slice()
    }

    /// The bytes, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        DmaViewMut {
            virt: self.virt,
            phys: self.phys,
            len: self.len,
            _region: PhantomData,
        }
        .into_mut_slice()
    }

    /// The bytes, mutable, for as long as the view's borrow lasts.
    fn into_mut_slice(self) -> &'a mut [u8] {
        // SAFETY: as in `DmaView::as_slice`, with the region (or this view
        // of it) borrowed exclusively for 'a.
        unsafe { core::slice::from_raw_parts_mut(self.virt.as_ptr(), self.len) }
    }
}

impl<'a> From<&'a mut DmaRegion> for DmaViewMut<'a> {
    fn from(region: &'a mut DmaRegion) -> Self {
        DmaViewMut {
            virt: region.virt,
            phys: region.phys,
            len: region.len,
            _region: PhantomData,
        }
    }
}

impl fmt::Debug for DmaView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DmaView")
            .field("phys", &self.phys)
            .field("len", &self.len)
            .finish()
    }
}

impl fmt::Debug for DmaViewMut<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DmaViewMut")
            .field("phys", &self.phys)
            .field("len", &self.len)
            .finish()
    }
}

impl fmt::Debug for DmaRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DmaRegion")
            .field("phys", &self.phys)
            .field("len", &self.len)
            .finish()
    }
}

/// Access to a block of 32-bit device registers (an NVMe BAR).
///
/// Offsets are in bytes from the start of the block. Implementations decide what
/// an access outside the mapped length does (the hardware type ignores writes and
/// reads all-ones), but must never touch memory outside it.
pub trait RegisterAccess {
    /// Reads the 32-bit register at `offset`.
    fn read32(&self, offset: usize) -> u32;
    /// Writes the 32-bit register at `offset`.
    fn write32(&self, offset: usize, value: u32);
    /// Reads a 64-bit register as two 32-bit reads, low half first.
    fn read64(&self, offset: usize) -> u64 {
        let lo = self.read32(offset) as u64;
        let hi = self.read32(offset + 4) as u64;
        lo | (hi << 32)
    }
    /// Writes a 64-bit register as two 32-bit writes, low half first.
    fn write64(&self, offset: usize, value: u64) {
        self.write32(offset, value as u32);
        self.write32(offset + 4, (value >> 32) as u32);
    }
}

/// Everything the driver needs from the machine it runs on.
///
/// Methods take `&self`: implementations use interior mutability (a `spin`
/// lock around an allocator, say) so the driver can hold the platform by value.
pub trait Platform {
    /// The register access type for a mapped BAR.
    type Registers: RegisterAccess;

    /// Allocates `len` bytes of zeroed, physically contiguous DMA memory aligned
    /// to `align` (a power of two, at most 4096). `None` when memory is short.
    ///
    /// The driver orders its accesses against the doorbells with barriers.
    /// Memory the device sees through caches it does not snoop (non-coherent
    /// DMA) needs the cache maintenance of [`Platform::dma_flush`] and
    /// [`Platform::dma_invalidate`] too; coherent or uncached memory (not
    /// write-combining) needs nothing there.
    fn dma_alloc(&self, len: usize, align: usize) -> Option<DmaRegion>;

    /// Makes the CPU's writes to `len` bytes at device address `phys` visible
    /// to the device (a cache clean, like Linux's
    /// `dma_sync_single_for_device`). The range always lies inside one region
    /// from [`Platform::dma_alloc`] or a caller's buffer, so the platform
    /// finds its CPU address the way it made that region; it need not be
    /// cache-line aligned (clean whole lines around it).
    ///
    /// The driver calls it before the device may read: on the submission
    /// entries a doorbell publishes and on a command's PRP list before that
    /// doorbell, on a data buffer when its command is prepared (reads and
    /// writes both, so no dirty line is later evicted over the device's
    /// data), and on a shadow doorbell slot after storing it. The default
    /// does nothing (coherent DMA) and inlines away.
    #[inline(always)]
    fn dma_flush(&self, phys: PhysAddr, len: usize) {
        let _ = (phys, len);
    }

    /// Makes the device's writes to `len` bytes at device address `phys`
    /// visible to the CPU (a cache invalidate, like Linux's
    /// `dma_sync_single_for_cpu`); same ranges as [`Platform::dma_flush`].
    /// Lines in the range that the CPU wrote and did not flush may be lost.
    ///
    /// The driver calls it before the CPU reads what the device wrote: on a
    /// completion queue entry before reading its phase tag, on a read's data
    /// buffer when its command completed (before the caller gets it back), on
    /// an EventIdx slot before reading it, and on the identify / log page
    /// scratch page after its command completed. The default does nothing
    /// and inlines away.
    #[inline(always)]
    fn dma_invalidate(&self, phys: PhysAddr, len: usize) {
        let _ = (phys, len);
    }

    /// Returns a region obtained from [`Platform::dma_alloc`].
    fn dma_free(&self, region: DmaRegion);

    /// Maps `len` bytes of device registers at physical address `phys`
    /// (uncached). `None` when the range cannot be mapped.
    fn map_registers(&self, phys: PhysAddr, len: usize) -> Option<Self::Registers>;

    /// Releases a mapping made by [`Platform::map_registers`].
    fn unmap_registers(&self, registers: Self::Registers) {
        drop(registers);
    }

    /// The current time on a monotonic clock.
    fn now(&self) -> Instant;
}

/// Memory-mapped registers on real hardware, accessed with volatile operations.
#[derive(Debug)]
pub struct MmioRegisters {
    base: NonNull<u32>,
    len: usize,
}

// SAFETY: the mapping is plain device memory; every access is a single volatile
// operation, which is what the device expects from any CPU.
unsafe impl Send for MmioRegisters {}
// SAFETY: `&MmioRegisters` only performs single volatile accesses to device
// registers, never to memory Rust owns; two CPUs writing different
// registers (each queue's doorbells) is what the device is built for, and
// the driver orders accesses to one register itself (a queue's lock).
unsafe impl Sync for MmioRegisters {}

impl MmioRegisters {
    /// Wraps a mapping of `len` bytes of registers at `base`.
    ///
    /// # Safety
    /// `base` must be 4-byte aligned and point to `len` bytes of mapped,
    /// uncached device registers that stay mapped while this value lives.
    pub unsafe fn new(base: NonNull<u8>, len: usize) -> Self {
        Self {
            base: base.cast(),
            len,
        }
    }

    fn reg(&self, offset: usize) -> Option<VolatilePtr<'_, u32>> {
        if !offset.is_multiple_of(4) || offset.checked_add(4)? > self.len {
            return None;
        }
        // SAFETY: offset is aligned and inside the mapping promised by `new`.
        let ptr = unsafe { self.base.as_ptr().add(offset / 4) };
        // SAFETY: non-null (derived from NonNull, in bounds) and aligned.
        Some(unsafe { VolatilePtr::new(NonNull::new_unchecked(ptr)) })
    }
}

impl RegisterAccess for MmioRegisters {
    fn read32(&self, offset: usize) -> u32 {
        self.reg(offset).map_or(u32::MAX, |r| r.read())
    }

    fn write32(&self, offset: usize, value: u32) {
        if let Some(r) = self.reg(offset) {
            r.write(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::boxed::Box;

    /// A register block in host memory: the device side reads and writes the
    /// array through the raw pointer, as hardware would.
    #[test]
    fn mmio_registers_read_and_write_in_range_and_ignore_the_rest() {
        let block: *mut [u32; 8] = Box::into_raw(Box::new([0u32; 8]));
        let base = NonNull::new(block.cast::<u8>()).unwrap();
        let word = |i: usize| {
            assert!(i < 8);
            // SAFETY: inside the live allocation, aligned: the device's view.
            unsafe { VolatilePtr::new(NonNull::new(block.cast::<u32>().wrapping_add(i)).unwrap()) }
        };
        let device = |i: usize| word(i).read();
        {
            // SAFETY: 32 bytes, 4-byte aligned, alive until freed below.
            let regs = unsafe { MmioRegisters::new(base, 32) };
            regs.write32(4, 0xDEAD_BEEF);
            assert_eq!(device(1), 0xDEAD_BEEF);
            word(7).write(0x1234);
            assert_eq!(regs.read32(28), 0x1234);
            regs.write64(8, 0x0102_0304_0506_0708);
            assert_eq!((device(2), device(3)), (0x0506_0708, 0x0102_0304));
            assert_eq!(regs.read64(8), 0x0102_0304_0506_0708);
            // Outside the block or misaligned: reads all-ones, writes nothing.
            assert_eq!(regs.read32(32), u32::MAX);
            assert_eq!(regs.read32(2), u32::MAX);
            assert_eq!(regs.read32(usize::MAX - 1), u32::MAX);
            regs.write32(32, 1);
            regs.write32(6, 1);
            regs.write32(usize::MAX - 3, 1);
        }
        assert_eq!(
            (0..8).map(device).collect::<std::vec::Vec<_>>(),
            [0, 0xDEAD_BEEF, 0x0506_0708, 0x0102_0304, 0, 0, 0, 0x1234]
        );
        // SAFETY: from Box::into_raw above; the registers are gone.
        drop(unsafe { Box::from_raw(block) });
    }
}
