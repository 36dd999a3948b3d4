//! Placing the memory BARs of NVMe functions (BAR0 and any other, in one
//! block per function) inside their parent bridge's memory window (or a
//! root window on bus 0).
//!
//! Firmware may have placed them (SeaBIOS does for cold-plugged devices) or
//! not (hot-added functions come up with their BARs zero; a BAR the driver
//! did not place may sit at an old address outside the windows after a
//! reassignment). A valid firmware assignment of every BAR is kept;
//! anything else is placed anew by [`BarAllocator`]. Memory decoding is
//! turned on only once every memory BAR of the function is inside the
//! windows above it.

use pci_types::{ConfigRegionAccess, PciAddress};

use super::bar::{self, enable_decoding, probe_bar0, probe_other_bars, Bar, OtherBars};
use super::enumerate::Bridge;
use super::window::{Window, WindowAllocator};
use crate::error::{Error, Result};
use crate::platform::PhysAddr;

/// The memory windows BARs are placed in: one per bridge (up to `WINDOWS`)
/// plus an optional root window for functions on bus 0, each tracking up to
/// `RANGES` BARs.
#[derive(Clone, Debug)]
pub struct BarAllocator<const WINDOWS: usize, const RANGES: usize> {
    root: Option<WindowAllocator<RANGES>>,
    bridges: heapless::Vec<(PciAddress, WindowAllocator<RANGES>), WINDOWS>,
}

impl<const WINDOWS: usize, const RANGES: usize> BarAllocator<WINDOWS, RANGES> {
    /// An allocator; `root` is address space on bus 0 that no device decodes
    /// (from the firmware's description of the host bridge), or `None` when
    /// functions on bus 0 must rely on their firmware assignment.
    pub fn new(root: Option<Window>) -> Self {
        Self {
            root: root.map(WindowAllocator::new),
            bridges: heapless::Vec::new(),
        }
    }

    /// The allocator of `parent`'s memory window (the root window for
    /// `None`), created on first use. `Ok(None)` when there is no window.
    fn window_of(
        &mut self,
        parent: Option<&Bridge>,
    ) -> Result<Option<&mut WindowAllocator<RANGES>>> {
        let Some(bridge) = parent else {
            return Ok(self.root.as_mut());
        };
        let Some(window) = bridge.memory else {
            return Ok(None);
        };
        let index = match self.bridges.iter().position(|(a, _)| *a == bridge.address) {
            Some(index) => {
                self.bridges[index].1.set_window(window);
                index
            }
            None => {
                self.bridges
                    .push((bridge.address, WindowAllocator::new(window)))
                    .map_err(|_| Error::CapacityExceeded {
                        what: "bridge memory windows",
                        limit: WINDOWS as u32,
                    })?;
                self.bridges.len() - 1
            }
        };
        Ok(Some(&mut self.bridges[index].1))
    }

    /// Sizes the memory BARs of `function` (whose parent bridge is
    /// `parent`, `None` on bus 0), keeps a valid firmware assignment of all
    /// of them or places them anew, in one block, inside the parent's
    /// memory window, then enables memory decoding with INTx off (bus
    /// mastering is the controller's to turn on, once it saw the controller
    /// disabled). A function whose BARs cannot all be placed is not
    /// enabled. Returns BAR0 as programmed.
    pub fn assign_bar0<A: ConfigRegionAccess + ?Sized>(
        &mut self,
        access: &A,
        function: PciAddress,
        parent: Option<&Bridge>,
    ) -> Result<Bar> {
        let mut bar = probe_bar0(access, function)?;
        let others = probe_other_bars(access, function, &bar)?;
        if !self.keep_firmware_assignment(function, parent, &bar, &others)? {
            let (size, offsets) =
                bar::layout_bars(&bar, others.as_slice()).ok_or(Error::BadDeviceValue {
                    field: "memory BARs' total size",
                    value: bar.size,
                })?;
            let max_last = bar::block_max_last(&bar, others.as_slice());
            let Some(window) = self.window_of(parent)? else {
                return Err(Error::DeviceUnsupported {
                    what: "a memory window to place BAR0 in",
                });
            };
            let base = window.allocate(function, size, max_last)?;
            let block = base.as_u64();
            let programmed =
                bar::program_block(access, function, &bar, others.as_slice(), &offsets, block);
            if let Err(e) = programmed {
                window.release(function);
                return Err(e);
            }
            let offset = offsets.iter().find(|(i, _)| *i == 0).map_or(0, |o| o.1);
            bar.address = PhysAddr::new(block + offset);
        }
        enable_decoding(access, function)?;
        Ok(bar)
    }

    /// Whether firmware's BAR addresses can all stay, recording them when
    /// they can: each is assigned and inside a window above the function
    /// (a prefetchable BAR may be in the prefetchable window), those in
    /// the memory window recorded there as one range.
    fn keep_firmware_assignment(
        &mut self,
        function: PciAddress,
        parent: Option<&Bridge>,
        bar: &Bar,
        others: &OtherBars,
    ) -> Result<bool> {
        let all = || core::iter::once(bar).chain(others.as_slice().iter().map(|(_, b)| b));
        if !all().all(Bar::is_assigned) {
            return Ok(false);
        }
        // Placement only ever uses the non-prefetchable window, so nothing
        // placed later can collide with a BAR in the prefetchable one.
        let in_prefetchable = |b: &Bar| {
            b.prefetchable
                && parent
                    .and_then(|p| p.prefetchable)
                    .is_some_and(|w| w.contains(b.address.as_u64(), b.size))
        };
        // The span of the BARs the memory window must hold.
        let mut span: Option<(u64, u64)> = None;
        for b in all().filter(|b| !in_prefetchable(b)) {
            let (base, end) = (
                b.address.as_u64(),
                b.address.as_u64().saturating_add(b.size),
            );
            span = Some(span.map_or((base, end), |(lo, hi)| (lo.min(base), hi.max(end))));
        }
        let Some((base, end)) = span else {
            return Ok(true);
        };
        match self.window_of(parent)? {
            Some(window) if window.window().contains(base, end - base) => {
                Ok(window.reserve(function, base, end - base).is_ok())
            }
            // Behind a bridge the BARs must be inside its window.
            _ if parent.is_some() => Ok(false),
            // On bus 0 firmware knows the host bridge's apertures; we do not.
            _ => Ok(true),
        }
    }

    /// Takes `size` bytes (a power of two, naturally aligned, below 4 GiB)
    /// of `parent`'s memory window for `owner` (a bridge hot-added behind
    /// it, which forwards them further down).
    pub fn allocate_in(
        &mut self,
        parent: &Bridge,
        owner: PciAddress,
        size: u64,
    ) -> Result<PhysAddr> {
        match self.window_of(Some(parent))? {
            Some(window) => window.allocate(owner, size, u32::MAX.into()),
            None => Err(Error::DeviceUnsupported {
                what: "a memory window to place a bridge window in",
            }),
        }
    }

    /// Records `window` (a bridge's, owned by `owner`) as used in the root
    /// window, so that no function on bus 0 is placed inside it.
    pub fn reserve_root(&mut self, owner: PciAddress, window: Window) -> Result<()> {
        match self.root.as_mut() {
            Some(root) => root.reserve(owner, window.base.as_u64(), window.size()),
            None => Ok(()),
        }
    }

    /// Forgets the range `function` held, so a function re-inserted into the
    /// same slot can have it again. Whether anything was held.
    pub fn release(&mut self, function: PciAddress) -> bool {
        let mut released = false;
        if let Some(root) = self.root.as_mut() {
            released |= root.release(function);
        }
        for (_, window) in self.bridges.iter_mut() {
            released |= window.release(function);
        }
        released
    }
}
