//! Physical Region Page entries and lists (NVMe Base Specification 2.0,
//! section 4.1.1).
//!
//! A transfer of `len` bytes at a physically contiguous buffer needs PRP1 (the
//! first byte, any dword-aligned offset), and either nothing, a second page in
//! PRP2, or PRP2 pointing to a list of page addresses. A list fills at most one
//! memory page; a longer list chains: the last entry of a full list page points
//! to the next list page.

use crate::error::{Error, Result};
use crate::nvme::shared_memory::SharedMemory;
use crate::platform::{PhysAddr, Platform};

/// The memory page size the driver configures (CC.MPS = 0).
pub const PAGE_SIZE: usize = 4096;
/// log2 of [`PAGE_SIZE`].
const PAGE_SHIFT: u32 = PAGE_SIZE.trailing_zeros();
const ENTRIES_PER_PAGE: usize = PAGE_SIZE / 8;

/// Bytes of list storage one command needs for transfers up to `max_bytes`,
/// laid out so that a list never crosses a page except through a chain entry:
/// a power of two up to a page, whole pages beyond.
pub(crate) fn list_stride(max_bytes: usize) -> usize {
    // An unaligned start can touch one more page than max_bytes / PAGE_SIZE.
    let pages = max_bytes.div_ceil(PAGE_SIZE) + 1;
    let entries = pages - 1;
    if entries <= ENTRIES_PER_PAGE {
        (entries * 8).next_power_of_two().max(64)
    } else {
        // Each full page carries ENTRIES_PER_PAGE - 1 data entries and a chain.
        let per_chained = ENTRIES_PER_PAGE - 1;
        let list_pages = (entries - ENTRIES_PER_PAGE).div_ceil(per_chained) + 1;
        list_pages * PAGE_SIZE
    }
}

/// Where a command's PRP list (or a DSM range) may be written: `len` bytes at
/// `offset` in shared memory, page-aligned when longer than a page.
pub(crate) struct ListArea<'a> {
    memory: &'a SharedMemory,
    offset: usize,
    len: usize,
}

impl<'a> ListArea<'a> {
    /// The `len` bytes at `offset` of `memory`.
    pub(crate) fn new(memory: &'a SharedMemory, offset: usize, len: usize) -> Self {
        Self {
            memory,
            offset,
            len,
        }
    }

    /// The device address of the area's first byte.
    pub(crate) fn phys(&self) -> Option<u64> {
        Some(self.memory.phys().checked_add(self.offset as u64)?.as_u64())
    }

    /// Makes the first `len` bytes of the area visible to the device.
    #[inline(always)]
    pub(crate) fn flush<P: Platform>(&self, platform: &P, len: usize) {
        self.memory.flush(platform, self.offset, len.min(self.len));
    }

    /// Writes `value` at byte `at` of the area. `None` when it does not fit
    /// inside the area and its memory, or is misaligned.
    #[inline(always)]
    pub(crate) fn write<T: Copy>(&self, at: usize, value: T) -> Option<()> {
        if at + core::mem::size_of::<T>() > self.len {
            return None;
        }
        self.memory.write(self.offset + at, value)
    }
}

/// PRP1 and PRP2 for `len` bytes at `buf` when they need no list (the
/// transfer touches at most two pages) and `buf` is dword aligned; `None`
/// otherwise, for [`build`] to handle.
#[inline(always)]
pub(crate) fn direct(buf: PhysAddr, len: usize) -> Option<(u64, u64)> {
    let addr = buf.as_u64();
    if addr & 3 != 0 {
        return None;
    }
    // Bytes up to the next page boundary; the transfer ends within them or
    // within the next page.
    let first = PAGE_SIZE - (addr as usize & (PAGE_SIZE - 1));
    if len <= first {
        return Some((addr, 0));
    }
    let next_page = (addr & !(PAGE_SIZE as u64 - 1)) + PAGE_SIZE as u64;
    (len - first <= PAGE_SIZE).then_some((addr, next_page))
}

/// Computes PRP1 and PRP2 for `len` bytes at `buf`, writing a PRP list into
/// the area `list` gives when the transfer spans more than two pages (only
/// then is it asked), and flushing it for the device ([`Platform::dma_flush`]).
///
/// Inlined: one or two pages (the common case) cost a few instructions in
/// the caller; only a list goes out of line.
#[inline(always)]
pub(crate) fn build<'a, P: Platform>(
    platform: &P,
    buf: PhysAddr,
    len: usize,
    list: impl FnOnce() -> Option<ListArea<'a>>,
) -> Result<(u64, u64)> {
    let addr = buf.as_u64();
    if addr & 3 != 0 {
        return Err(misaligned(addr));
    }
    // Bytes up to the next page boundary, and whether the transfer ends
    // within it or the next page: no list.
    let first = PAGE_SIZE - (addr as usize & (PAGE_SIZE - 1));
    if len <= first {
        return Ok((addr, 0));
    }
    let next_page = (addr & !(PAGE_SIZE as u64 - 1)) + PAGE_SIZE as u64;
    if len - first <= PAGE_SIZE {
        return Ok((addr, next_page));
    }
    build_list(platform, addr, next_page, len - first, list)
}

#[cold]
fn misaligned(addr: u64) -> Error {
    Error::BufferMisaligned { addr, required: 4 }
}

/// The list case of [`build`]: `rest` bytes from `next_page` on, more than
/// one page.
#[inline(never)]
fn build_list<'a, P: Platform>(
    platform: &P,
    addr: u64,
    next_page: u64,
    rest: usize,
    list: impl FnOnce() -> Option<ListArea<'a>>,
) -> Result<(u64, u64)> {
    // A shift, not a division: PAGE_SIZE is a power of two.
    let pages = (rest + PAGE_SIZE - 1) >> PAGE_SHIFT;
    let list = list().ok_or(Error::InvalidArgument {
        what: "transfer needs a PRP list",
    })?;
    let list_phys = list.phys().ok_or(Error::InvalidArgument {
        what: "PRP list address overflows",
    })?;
    let written = write_list(&list, list_phys, next_page, pages)?;
    list.flush(platform, written);
    Ok((addr, list_phys))
}

/// Writes the list; returns how many bytes of the area it used.
fn write_list(list: &ListArea<'_>, base: u64, first_page: u64, pages: usize) -> Result<usize> {
    let mut slot = 0usize; // entry index within the area
    let mut page = first_page;
    let mut remaining = pages;
    while remaining > 0 {
        let at = slot * 8;
        let last_in_page = (base as usize + at) & (PAGE_SIZE - 1) == PAGE_SIZE - 8;
        let value = if last_in_page && remaining > 1 {
            // Chain to the next list page, which follows contiguously.
            base + at as u64 + 8
        } else {
            let v = page;
            page += PAGE_SIZE as u64;
            remaining -= 1;
            v
        };
        list.write(at, value.to_le())
            .ok_or(Error::InvalidArgument {
                what: "PRP list area too small",
            })?;
        slot += 1;
    }
    Ok(slot * 8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nvme::test_memory::{CoherentPlatform, HeapDma};

    /// Heap memory posing as a command's list storage.
    struct TestRegion {
        heap: HeapDma,
        memory: SharedMemory,
    }

    impl TestRegion {
        fn new(len: usize, phys: u64) -> Self {
            let mut heap = HeapDma::new(len, phys);
            let memory = heap.shared();
            Self { heap, memory }
        }

        /// List entry `i` as the device reads it.
        fn entry(&self, i: usize) -> u64 {
            u64::from_le(self.heap.device_read(i * 8))
        }
    }

    const LIST_PHYS: u64 = 0x9000_0000;

    fn area<'a>(t: &'a TestRegion) -> impl FnOnce() -> Option<ListArea<'a>> {
        || Some(ListArea::new(&t.memory, 0, t.memory.len()))
    }

    #[test]
    fn single_page_needs_only_prp1() {
        let t = TestRegion::new(4096, LIST_PHYS);
        assert_eq!(
            build(&CoherentPlatform, PhysAddr::new(0x10000), 4096, area(&t)),
            Ok((0x10000, 0))
        );
        assert_eq!(
            build(&CoherentPlatform, PhysAddr::new(0x10200), 512, area(&t)),
            Ok((0x10200, 0))
        );
    }

    #[test]
    fn two_pages_use_prp2_directly() {
        let t = TestRegion::new(4096, LIST_PHYS);
        assert_eq!(
            build(&CoherentPlatform, PhysAddr::new(0x10000), 8192, area(&t)),
            Ok((0x10000, 0x11000))
        );
        // An offset start crossing one boundary also fits in two entries.
        assert_eq!(
            build(&CoherentPlatform, PhysAddr::new(0x10200), 4096, area(&t)),
            Ok((0x10200, 0x11000))
        );
    }

    #[test]
    fn longer_transfers_use_a_list() {
        let t = TestRegion::new(4096, LIST_PHYS);
        let (p1, p2) = build(
            &CoherentPlatform,
            PhysAddr::new(0x10000),
            4 * 4096,
            area(&t),
        )
        .unwrap();
        assert_eq!((p1, p2), (0x10000, LIST_PHYS));
        assert_eq!(
            [t.entry(0), t.entry(1), t.entry(2)],
            [0x11000, 0x12000, 0x13000]
        );
        assert!(build(&CoherentPlatform, PhysAddr::new(0x10000), 4 * 4096, || None).is_err());
    }

    #[test]
    fn list_longer_than_a_page_chains() {
        // 600 pages: PRP1 + 599 list entries, more than one list page holds.
        let t = TestRegion::new(2 * PAGE_SIZE, LIST_PHYS);
        let (_, p2) = build(
            &CoherentPlatform,
            PhysAddr::new(0x100_0000),
            600 * 4096,
            area(&t),
        )
        .unwrap();
        assert_eq!(p2, LIST_PHYS);
        for i in 0..511 {
            assert_eq!(t.entry(i), 0x100_0000 + (i as u64 + 1) * 4096);
        }
        assert_eq!(
            t.entry(511),
            LIST_PHYS + 4096,
            "chain to the next list page"
        );
        for i in 0..(599 - 511) {
            assert_eq!(t.entry(512 + i), 0x100_0000 + (512 + i as u64) * 4096);
        }
    }

    #[test]
    fn stride_fits_the_largest_transfer() {
        assert_eq!(list_stride(8192), 64);
        assert_eq!(list_stride(256 << 10), 512);
        assert_eq!(list_stride(2 << 20), 4096);
        assert_eq!(list_stride(4 << 20), 3 * 4096);
    }

    #[test]
    fn misaligned_buffer_is_refused() {
        assert_eq!(
            build(&CoherentPlatform, PhysAddr::new(0x10001), 512, || None),
            Err(Error::BufferMisaligned {
                addr: 0x10001,
                required: 4
            })
        );
    }
}
