//! The DMA allocator: first-fit over a bitmap of 4 KiB pages in one block of
//! usable RAM above the kernel image. Identity-mapped, so physical address ==
//! virtual address. Zeroes on allocation; counts what is outstanding so that
//! scenarios can prove every byte comes back.

use core::ptr::NonNull;

use bare_nvme::{DmaRegion, PhysAddr};
use spin::Mutex;

/// Allocation granule (and the largest alignment served).
pub const PAGE: usize = 4096;
/// Most pages managed: 256 MiB.
pub const MAX_PAGES: usize = 65536;
const WORDS: usize = MAX_PAGES / 64;

/// Bytes and regions handed out and not yet returned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DmaStats {
    /// Regions outstanding.
    pub regions: usize,
    /// Bytes outstanding (whole pages).
    pub bytes: usize,
}

struct PageAllocator {
    base: u64,
    pages: usize,
    used: [u64; WORDS],
    stats: DmaStats,
}

static ALLOCATOR: Mutex<PageAllocator> = Mutex::new(PageAllocator {
    base: 0,
    pages: 0,
    used: [0; WORDS],
    stats: DmaStats {
        regions: 0,
        bytes: 0,
    },
});

/// Hands the allocator the page-aligned block `[base, base + len)`; at most
/// [`MAX_PAGES`] pages of it are used. Returns the bytes managed.
pub fn init(base: u64, len: u64) -> usize {
    let mut a = ALLOCATOR.lock();
    let start = base.next_multiple_of(PAGE as u64);
    let usable = len.saturating_sub(start - base);
    a.base = start;
    a.pages = ((usable / PAGE as u64) as usize).min(MAX_PAGES);
    a.used = [0; WORDS];
    a.stats = DmaStats::default();
    a.pages * PAGE
}

impl PageAllocator {
    fn is_used(&self, page: usize) -> bool {
        self.used[page / 64] & (1 << (page % 64)) != 0
    }

    fn set(&mut self, first: usize, count: usize, used: bool) {
        for page in first..first + count {
            if used {
                self.used[page / 64] |= 1 << (page % 64);
            } else {
                self.used[page / 64] &= !(1 << (page % 64));
            }
        }
    }

    /// First run of `count` free pages.
    fn find(&self, count: usize) -> Option<usize> {
        let mut page = 0;
        while page + count <= self.pages {
            if self.used[page / 64] == u64::MAX && page % 64 == 0 {
                page += 64;
                continue;
            }
            match (page..page + count).find(|&p| self.is_used(p)) {
                Some(busy) => page = busy + 1,
                None => return Some(page),
            }
        }
        None
    }
}

/// Allocates `len` bytes (rounded up to pages), zeroed, aligned to `align`
/// (at most [`PAGE`]). `None` when out of memory or asked for a larger
/// alignment.
pub fn alloc(len: usize, align: usize) -> Option<DmaRegion> {
    if len == 0 || !align.is_power_of_two() || align > PAGE {
        return None;
    }
    let count = len.div_ceil(PAGE);
    let mut a = ALLOCATOR.lock();
    let first = a.find(count)?;
    a.set(first, count, true);
    a.stats.regions += 1;
    a.stats.bytes += count * PAGE;
    let phys = a.base + (first * PAGE) as u64;
    drop(a);
    let ptr = phys as *mut u8;
    // SAFETY: the pages are usable RAM above the kernel image, identity
    // mapped, and now marked used: nobody else writes them.
    unsafe { core::ptr::write_bytes(ptr, 0, count * PAGE) };
    let virt = NonNull::new(ptr)?;
    // SAFETY: `count` pages at `phys` belong to this region alone until it is
    // freed, and phys == virt under the identity map.
    Some(unsafe { DmaRegion::new(virt, PhysAddr::new(phys), len) })
}

/// Returns a region from [`alloc`]. A region the allocator did not hand out
/// (or a double free) is a bug in the caller and stops the run.
pub fn free(region: DmaRegion) {
    let phys = region.phys().as_u64();
    let count = region.len().div_ceil(PAGE);
    let mut a = ALLOCATOR.lock();
    let end = a.base + (a.pages * PAGE) as u64;
    let inside = phys >= a.base && phys.is_multiple_of(PAGE as u64) && phys < end;
    let first = (phys.wrapping_sub(a.base) / PAGE as u64) as usize;
    if !inside || first + count > a.pages || (first..first + count).any(|p| !a.is_used(p)) {
        drop(a);
        panic!("dma_free of a region not allocated: {region:?}");
    }
    a.set(first, count, false);
    a.stats.regions -= 1;
    a.stats.bytes -= count * PAGE;
}

/// What is outstanding now.
pub fn stats() -> DmaStats {
    ALLOCATOR.lock().stats
}

/// Bytes managed in total.
pub fn capacity() -> usize {
    ALLOCATOR.lock().pages * PAGE
}
