//! Placing BAR0 of NVMe functions inside their parent bridge's memory
//! window (or a root window on bus 0).
//!
//! Firmware may have placed BAR0 (SeaBIOS does for cold-plugged devices) or
//! not (hot-added functions come up with BAR0 zero). A valid firmware
//! assignment is kept; anything else is placed anew by [`BarAllocator`].

use pci_types::{ConfigRegionAccess, PciAddress};

use super::bar::{enable_decoding, probe_bar0, program_bar0, Bar};
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

    /// Sizes BAR0 of `function` (whose parent bridge is `parent`, `None` on
    /// bus 0), keeps a valid firmware assignment or places it inside the
    /// parent's memory window, then enables memory decoding with INTx off
    /// (bus mastering is the controller's to turn on, once it saw the
    /// controller disabled). Returns the BAR as programmed.
    pub fn assign_bar0<A: ConfigRegionAccess + ?Sized>(
        &mut self,
        access: &A,
        function: PciAddress,
        parent: Option<&Bridge>,
    ) -> Result<Bar> {
        let mut bar = probe_bar0(access, function)?;
        if !self.keep_firmware_assignment(function, parent, &bar)? {
            let max_last = bar.max_last();
            let Some(window) = self.window_of(parent)? else {
                return Err(Error::DeviceUnsupported {
                    what: "a memory window to place BAR0 in",
                });
            };
            let target = window.allocate(function, bar.size, max_last)?;
            if let Err(e) = program_bar0(access, function, &bar, target) {
                window.release(function);
                return Err(e);
            }
            bar.address = target;
        }
        enable_decoding(access, function)?;
        Ok(bar)
    }

    /// Whether firmware's BAR0 address can stay, recording it when it can.
    fn keep_firmware_assignment(
        &mut self,
        function: PciAddress,
        parent: Option<&Bridge>,
        bar: &Bar,
    ) -> Result<bool> {
        if !bar.is_assigned() {
            return Ok(false);
        }
        let base = bar.address.as_u64();
        if let Some(bridge) = parent {
            let in_prefetchable = bar.prefetchable
                && bridge
                    .prefetchable
                    .is_some_and(|w| w.contains(base, bar.size));
            if in_prefetchable {
                // Placement only ever uses the non-prefetchable window, so
                // nothing placed later can collide with this BAR.
                return Ok(true);
            }
        }
        match self.window_of(parent)? {
            Some(window) if window.window().contains(base, bar.size) => {
                Ok(window.reserve(function, base, bar.size).is_ok())
            }
            // Behind a bridge the BAR must be inside its window.
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
