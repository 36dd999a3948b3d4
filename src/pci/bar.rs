//! BAR0 of an NVMe function: sizing, validation, placement inside the parent
//! bridge's window, and the command register bits around it.
//!
//! Firmware may have placed BAR0 (SeaBIOS does for cold-plugged devices) or
//! not (hot-added functions come up with BAR0 zero). A valid firmware
//! assignment is kept; anything else is placed anew by [`BarAllocator`].

use pci_types::{ConfigRegionAccess, PciAddress};

use super::config::{Command, ConfigSpace, BAR0, BAR1};
use super::enumerate::Bridge;
use super::window::{Window, WindowAllocator};
use crate::error::{Error, Result};
use crate::platform::PhysAddr;

/// Smallest BAR0 accepted: the registers (0x1000 bytes) plus at least the
/// admin queue doorbells, which start at 0x1000 (NVMe Base 2.0, 3.1.4); a BAR
/// is a power of two, so 8 KiB.
pub const MIN_BAR0_SIZE: u64 = 8 << 10;
/// Largest BAR0 accepted. Real controllers use 16 KiB to a few MiB; a larger
/// size is a device fault, not a request to honour.
pub const MAX_BAR0_SIZE: u64 = 1 << 30;

/// BAR bit 0: I/O space indicator.
const BAR_IO: u32 = 1 << 0;
/// BAR bits 2:1: memory type.
const BAR_TYPE_MASK: u32 = 0b110;
/// Memory type: 32-bit address.
const BAR_TYPE_32: u32 = 0b000;
/// Memory type: 64-bit address.
const BAR_TYPE_64: u32 = 0b100;
/// BAR bit 3: prefetchable.
const BAR_PREFETCHABLE: u32 = 1 << 3;
/// Address bits of a memory BAR's low dword.
const BAR_ADDRESS_MASK: u32 = !0xF;

/// A memory BAR as found by sizing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bar {
    /// The programmed address (zero when unassigned).
    pub address: PhysAddr,
    /// Size in bytes (a power of two).
    pub size: u64,
    /// 64-bit BAR (BAR0 and BAR1 together).
    pub is_64bit: bool,
    /// Prefetchable.
    pub prefetchable: bool,
}

impl Bar {
    /// Whether the current address is a plausible assignment: non-zero and
    /// naturally aligned.
    pub fn is_assigned(&self) -> bool {
        self.address.as_u64() != 0 && self.address.is_aligned(self.size)
    }

    /// The highest address the BAR can hold.
    fn max_last(&self) -> u64 {
        if self.is_64bit {
            u64::MAX
        } else {
            u32::MAX.into()
        }
    }
}

fn present<A: ConfigRegionAccess + ?Sized>(config: &ConfigSpace<'_, A>) -> Result<()> {
    if config.is_present() {
        Ok(())
    } else {
        Err(Error::DeviceRemoved)
    }
}

/// Sizes BAR0 of the function at `address` and validates it.
///
/// Memory decoding is off while all-ones are in the BAR (so the device never
/// decodes a bogus range) and the original BAR and command values are restored
/// afterwards.
pub fn probe_bar0<A: ConfigRegionAccess + ?Sized>(access: &A, address: PciAddress) -> Result<Bar> {
    let config = ConfigSpace::new(access, address);
    present(&config)?;
    let low = config.read32(BAR0);
    if low & BAR_IO != 0 {
        return Err(Error::BadDeviceValue {
            field: "BAR0 (I/O space)",
            value: low.into(),
        });
    }
    let is_64bit = match low & BAR_TYPE_MASK {
        BAR_TYPE_32 => false,
        BAR_TYPE_64 => true,
        _ => {
            return Err(Error::BadDeviceValue {
                field: "BAR0 memory type",
                value: low.into(),
            })
        }
    };
    let high = if is_64bit { config.read32(BAR1) } else { 0 };

    let command = config.command();
    if command.contains(Command::MEMORY) {
        config.write_command(command - Command::MEMORY);
    }
    config.write32(BAR0, u32::MAX);
    let mask_low = config.read32(BAR0);
    let mask_high = if is_64bit {
        config.write32(BAR1, u32::MAX);
        let mask = config.read32(BAR1);
        config.write32(BAR1, high);
        mask
    } else {
        // A 32-bit BAR decodes nothing above 4 GiB: the upper bits are fixed.
        u32::MAX
    };
    config.write32(BAR0, low);
    if command.contains(Command::MEMORY) {
        config.write_command(command);
    }
    // A function removed during sizing reads all-ones everywhere.
    present(&config)?;

    let mask = (u64::from(mask_high) << 32) | u64::from(mask_low & BAR_ADDRESS_MASK);
    if mask_low & BAR_ADDRESS_MASK == 0 {
        return Err(Error::BadDeviceValue {
            field: "BAR0 size mask",
            value: mask,
        });
    }
    let size = mask & mask.wrapping_neg();
    // The writable bits must be one contiguous run up to bit 63.
    if mask != !(size - 1) {
        return Err(Error::BadDeviceValue {
            field: "BAR0 size mask",
            value: mask,
        });
    }
    if !(MIN_BAR0_SIZE..=MAX_BAR0_SIZE).contains(&size) {
        return Err(Error::BadDeviceValue {
            field: "BAR0 size",
            value: size,
        });
    }
    Ok(Bar {
        address: PhysAddr::new((u64::from(high) << 32) | u64::from(low & BAR_ADDRESS_MASK)),
        size,
        is_64bit,
        prefetchable: low & BAR_PREFETCHABLE != 0,
    })
}

/// Programs BAR0 to `target` with memory decoding off, and checks that the
/// device took it.
pub(crate) fn program_bar0<A: ConfigRegionAccess + ?Sized>(
    access: &A,
    address: PciAddress,
    bar: &Bar,
    target: PhysAddr,
) -> Result<()> {
    let config = ConfigSpace::new(access, address);
    let command = config.command();
    config.write_command(command - Command::MEMORY);
    config.write32(BAR0, target.as_u64() as u32);
    if bar.is_64bit {
        config.write32(BAR1, (target.as_u64() >> 32) as u32);
    }
    let low = config.read32(BAR0) & BAR_ADDRESS_MASK;
    let high = if bar.is_64bit { config.read32(BAR1) } else { 0 };
    present(&config)?;
    let read_back = (u64::from(high) << 32) | u64::from(low);
    if read_back != target.as_u64() {
        return Err(Error::BadDeviceValue {
            field: "BAR0 after programming",
            value: read_back,
        });
    }
    Ok(())
}

/// Turns on memory decoding and bus mastering and turns off legacy INTx (the
/// driver polls), keeping the other command bits.
pub fn enable<A: ConfigRegionAccess + ?Sized>(access: &A, address: PciAddress) -> Result<()> {
    turn_on(
        access,
        address,
        Command::MEMORY | Command::BUS_MASTER | Command::INTX_DISABLE,
    )
}

/// Turns on memory decoding and turns off legacy INTx, leaving bus
/// mastering as it is: a function attached again may hold a controller
/// still enabled with queue addresses from before, so bus mastering waits
/// until the controller was seen disabled ([`enable_bus_master`]).
pub fn enable_decoding<A: ConfigRegionAccess + ?Sized>(
    access: &A,
    address: PciAddress,
) -> Result<()> {
    turn_on(access, address, Command::MEMORY | Command::INTX_DISABLE)
}

/// Sets the `wanted` command bits, keeping the others, and reads them back.
fn turn_on<A: ConfigRegionAccess + ?Sized>(
    access: &A,
    address: PciAddress,
    wanted: Command,
) -> Result<()> {
    let config = ConfigSpace::new(access, address);
    present(&config)?;
    config.update_command(wanted, Command::empty());
    let command = config.command();
    present(&config)?;
    if !command.contains(wanted) {
        return Err(Error::BadDeviceValue {
            field: "command register",
            value: command.bits().into(),
        });
    }
    Ok(())
}

/// Turns on bus mastering and reads it back: whether it is on.
pub fn enable_bus_master<A: ConfigRegionAccess + ?Sized>(access: &A, address: PciAddress) -> bool {
    let config = ConfigSpace::new(access, address);
    config.update_command(Command::BUS_MASTER, Command::empty());
    let command = config.command();
    command.bits() != u16::MAX && command.contains(Command::BUS_MASTER)
}

/// Turns off bus mastering so the function can no longer issue DMA: the last
/// resort when a controller cannot be disabled and its memory must be
/// reclaimed. `DeviceRemoved` when the function no longer answers (it cannot
/// do DMA either).
pub fn disable_bus_master<A: ConfigRegionAccess + ?Sized>(
    access: &A,
    address: PciAddress,
) -> Result<()> {
    let config = ConfigSpace::new(access, address);
    present(&config)?;
    config.update_command(Command::empty(), Command::BUS_MASTER);
    let command = config.command();
    present(&config)?;
    if command.contains(Command::BUS_MASTER) {
        return Err(Error::BadDeviceValue {
            field: "command register",
            value: command.bits().into(),
        });
    }
    Ok(())
}

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
