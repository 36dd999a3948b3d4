//! Memory windows and a small allocator that places BARs inside them.
//!
//! A bridge forwards one non-prefetchable memory range to its secondary side;
//! every BAR behind it must lie inside that range and BARs must not overlap.
//! The allocator tracks what it handed out (or accepted from firmware) in a
//! fixed-capacity list and places new BARs first-fit, naturally aligned.

use pci_types::PciAddress;

use crate::error::{Error, Result};
use crate::platform::PhysAddr;

/// An inclusive range of physical addresses a bridge (or the host bridge)
/// forwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// First address.
    pub base: PhysAddr,
    /// Last address (inclusive).
    pub limit: PhysAddr,
}

impl Window {
    /// The window of `size` bytes at `base`; `None` when empty or wrapping.
    pub fn new(base: PhysAddr, size: u64) -> Option<Window> {
        let last = base.as_u64().checked_add(size.checked_sub(1)?)?;
        Some(Window {
            base,
            limit: PhysAddr::new(last),
        })
    }

    /// Size in bytes (saturating at `u64::MAX` for the whole address space).
    pub fn size(&self) -> u64 {
        (self.limit.as_u64() - self.base.as_u64()).saturating_add(1)
    }

    /// Whether `size` bytes at `base` lie inside the window.
    pub fn contains(&self, base: u64, size: u64) -> bool {
        let Some(last) = size.checked_sub(1).and_then(|s| base.checked_add(s)) else {
            return false;
        };
        base >= self.base.as_u64() && last <= self.limit.as_u64()
    }
}

/// One range handed out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Used {
    owner: PciAddress,
    base: u64,
    size: u64,
}

impl Used {
    fn overlaps(&self, base: u64, size: u64) -> bool {
        // Both ranges are inside one window, so the sums cannot overflow.
        base < self.base + self.size && self.base < base + size
    }
}

/// The ranges used inside one window, at most `RANGES` of them.
#[derive(Clone, Debug)]
pub struct WindowAllocator<const RANGES: usize> {
    window: Window,
    used: heapless::Vec<Used, RANGES>,
}

impl<const RANGES: usize> WindowAllocator<RANGES> {
    /// An allocator with all of `window` free.
    pub fn new(window: Window) -> Self {
        Self {
            window,
            used: heapless::Vec::new(),
        }
    }

    /// The managed window.
    pub fn window(&self) -> Window {
        self.window
    }

    /// Moves the allocator to a (re-read) window; ranges already handed out
    /// stay recorded.
    pub fn set_window(&mut self, window: Window) {
        self.window = window;
    }

    /// Whether `size` bytes at `base` are inside the window and used by no
    /// owner other than `owner`.
    pub fn is_free_for(&self, owner: PciAddress, base: u64, size: u64) -> bool {
        self.window.contains(base, size)
            && !self
                .used
                .iter()
                .any(|u| u.owner != owner && u.overlaps(base, size))
    }

    fn check_capacity(&self) -> Result<()> {
        if self.used.is_full() {
            return Err(Error::CapacityExceeded {
                what: "BARs behind one bridge",
                limit: RANGES as u32,
            });
        }
        Ok(())
    }

    /// Records `size` bytes at `base` as used by `owner` (a BAR firmware
    /// placed). Replaces what `owner` held before.
    pub fn reserve(&mut self, owner: PciAddress, base: u64, size: u64) -> Result<()> {
        if !self.is_free_for(owner, base, size) {
            return Err(Error::InvalidArgument {
                what: "range outside the window or in use",
            });
        }
        self.release(owner);
        self.check_capacity()?;
        // Capacity checked just above.
        let _ = self.used.push(Used { owner, base, size });
        Ok(())
    }

    /// Places `size` bytes (a power of two) for `owner`, aligned to `size`,
    /// ending at or below `max_last` (inclusive; `u32::MAX` for a 32-bit BAR).
    /// Replaces what `owner` held before.
    pub fn allocate(&mut self, owner: PciAddress, size: u64, max_last: u64) -> Result<PhysAddr> {
        if !size.is_power_of_two() {
            return Err(Error::InvalidArgument {
                what: "BAR size not a power of two",
            });
        }
        self.release(owner);
        self.check_capacity()?;
        let exhausted = Error::CapacityExceeded {
            what: "bytes in the memory window",
            limit: u32::try_from(self.window.size()).unwrap_or(u32::MAX),
        };
        let mut candidate = align_up(self.window.base.as_u64(), size).ok_or(exhausted)?;
        // Each retry moves past the end of one used range and never comes
        // back below it, so RANGES + 1 rounds find a place or prove none.
        for _ in 0..=RANGES {
            let last = candidate.checked_add(size - 1).ok_or(exhausted)?;
            if last > self.window.limit.as_u64() || last > max_last {
                return Err(exhausted);
            }
            match self.used.iter().find(|u| u.overlaps(candidate, size)) {
                None => {
                    let _ = self.used.push(Used {
                        owner,
                        base: candidate,
                        size,
                    });
                    return Ok(PhysAddr::new(candidate));
                }
                Some(u) => candidate = align_up(u.base + u.size, size).ok_or(exhausted)?,
            }
        }
        Err(exhausted)
    }

    /// Forgets what `owner` holds; whether it held anything.
    pub fn release(&mut self, owner: PciAddress) -> bool {
        let before = self.used.len();
        self.used.retain(|u| u.owner != owner);
        self.used.len() != before
    }

    /// The range `owner` holds, if any.
    pub fn range_of(&self, owner: PciAddress) -> Option<(PhysAddr, u64)> {
        self.used
            .iter()
            .find(|u| u.owner == owner)
            .map(|u| (PhysAddr::new(u.base), u.size))
    }
}

/// `value` rounded up to a multiple of `align` (a power of two).
fn align_up(value: u64, align: u64) -> Option<u64> {
    Some(value.checked_add(align - 1)? & !(align - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn owner(device: u8) -> PciAddress {
        PciAddress::new(0, 1, device, 0)
    }

    fn window(base: u64, size: u64) -> Window {
        Window::new(PhysAddr::new(base), size).unwrap()
    }

    #[test]
    fn window_bounds() {
        let w = window(0xC000_0000, 2 * MIB);
        assert_eq!(w.size(), 2 * MIB);
        assert!(w.contains(0xC000_0000, 2 * MIB));
        assert!(!w.contains(0xC000_0000, 2 * MIB + 1));
        assert!(!w.contains(0xBFFF_F000, 0x2000));
        assert!(!w.contains(u64::MAX, 2));
        assert!(Window::new(PhysAddr::new(u64::MAX), 2).is_none());
        assert!(Window::new(PhysAddr::new(0), 0).is_none());
    }

    #[test]
    fn allocations_are_aligned_disjoint_and_inside() {
        let mut a = WindowAllocator::<4>::new(window(0xC000_1000, 2 * MIB - 0x1000));
        let first = a.allocate(owner(0), 0x4000, u64::MAX).unwrap();
        let second = a.allocate(owner(1), 0x10_0000, u64::MAX).unwrap();
        let third = a.allocate(owner(2), 0x4000, u64::MAX).unwrap();
        assert_eq!(first.as_u64(), 0xC000_4000);
        assert_eq!(second.as_u64(), 0xC010_0000);
        assert_eq!(third.as_u64(), 0xC000_8000);
        assert!(
            a.allocate(owner(3), 0x10_0000, u64::MAX).is_err(),
            "window full"
        );
    }

    #[test]
    fn release_makes_room_for_the_same_slot_again() {
        let mut a = WindowAllocator::<2>::new(window(0xC000_0000, 0x8000));
        let first = a.allocate(owner(0), 0x4000, u64::MAX).unwrap();
        a.allocate(owner(1), 0x4000, u64::MAX).unwrap();
        assert!(a.allocate(owner(2), 0x4000, u64::MAX).is_err());
        assert!(a.release(owner(0)));
        assert!(!a.release(owner(0)));
        assert_eq!(a.allocate(owner(2), 0x4000, u64::MAX), Ok(first));
    }

    #[test]
    fn reserve_rejects_overlap_and_outside() {
        let mut a = WindowAllocator::<4>::new(window(0xC000_0000, MIB));
        a.reserve(owner(0), 0xC000_0000, 0x4000).unwrap();
        assert!(a.reserve(owner(1), 0xC000_2000, 0x2000).is_err());
        assert!(a.reserve(owner(1), 0xBFFF_0000, 0x4000).is_err());
        // The same owner may move.
        a.reserve(owner(0), 0xC000_4000, 0x4000).unwrap();
        assert_eq!(
            a.range_of(owner(0)),
            Some((PhysAddr::new(0xC000_4000), 0x4000))
        );
        assert_eq!(
            a.allocate(owner(1), 0x4000, u64::MAX),
            Ok(PhysAddr::new(0xC000_0000))
        );
    }

    #[test]
    fn capacity_and_address_limits_are_errors() {
        let mut a = WindowAllocator::<1>::new(window(0xFFFF_0000, 0x2_0000));
        a.allocate(owner(0), 0x4000, u64::MAX).unwrap();
        assert!(matches!(
            a.allocate(owner(1), 0x4000, u64::MAX),
            Err(Error::CapacityExceeded { limit: 1, .. })
        ));
        let mut b = WindowAllocator::<2>::new(window(0xFFFF_0000, 0x2_0000));
        b.allocate(owner(0), 0x1_0000, u32::MAX.into()).unwrap();
        assert!(
            b.allocate(owner(1), 0x1_0000, u32::MAX.into()).is_err(),
            "a 32-bit BAR cannot go above 4 GiB"
        );
        assert_eq!(
            b.allocate(owner(1), 0x1_0000, u64::MAX),
            Ok(PhysAddr::new(0x1_0000_0000))
        );
    }
}
