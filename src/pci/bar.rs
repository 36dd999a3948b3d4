//! The memory BARs of an NVMe function: BAR0 (the registers) and any
//! other (a controller memory buffer, an MSI-X table): sizing, validation,
//! programming, how they share one block of address space, and the command
//! register bits around them. Placing the block inside the parent bridge's
//! window is [`super::placement`]'s.

use pci_types::{ConfigRegionAccess, PciAddress};

use super::config::{Command, ConfigSpace, BAR0, BAR1};
use crate::error::{Error, Result};
use crate::platform::PhysAddr;

/// Smallest BAR0 accepted: the registers (0x1000 bytes) plus at least the
/// admin queue doorbells, which start at 0x1000 (NVMe Base 2.0, 3.1.4); a BAR
/// is a power of two, so 8 KiB.
pub const MIN_BAR0_SIZE: u64 = 8 << 10;
/// Largest BAR0 accepted. Real controllers use 16 KiB to a few MiB; a larger
/// size is a device fault, not a request to honour.
pub const MAX_BAR0_SIZE: u64 = 1 << 30;

/// Memory BARs besides BAR0 a function may have (BAR1 to BAR5).
pub const MAX_OTHER_BARS: usize = 5;
/// Largest memory BAR besides BAR0 accepted: a controller memory buffer is
/// large, but one past the 32-bit window's size is a device fault.
pub const MAX_OTHER_BAR_SIZE: u64 = 1 << 32;

/// The memory BARs of a function besides BAR0, by index (1 to 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OtherBars {
    len: u8,
    bars: [(u8, Bar); MAX_OTHER_BARS],
}

impl OtherBars {
    /// None.
    pub const fn new() -> Self {
        const NONE: Bar = Bar {
            address: PhysAddr::new(0),
            size: 0,
            is_64bit: false,
            prefetchable: false,
        };
        Self {
            len: 0,
            bars: [(0, NONE); MAX_OTHER_BARS],
        }
    }

    /// The BARs with their index.
    pub fn as_slice(&self) -> &[(u8, Bar)] {
        &self.bars[..usize::from(self.len)]
    }

    /// Records that BAR `index` was programmed to `address`.
    pub(crate) fn set_address(&mut self, index: u8, address: PhysAddr) {
        let len = usize::from(self.len);
        if let Some((_, bar)) = self.bars[..len].iter_mut().find(|(i, _)| *i == index) {
            bar.address = address;
        }
    }

    fn push(&mut self, index: u8, bar: Bar) {
        if let Some(slot) = self.bars.get_mut(usize::from(self.len)) {
            *slot = (index, bar);
            self.len += 1;
        }
    }
}

impl Default for OtherBars {
    fn default() -> Self {
        Self::new()
    }
}

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
    pub(crate) fn max_last(&self) -> u64 {
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

/// Sizes every memory BAR after BAR0 (which says where they start: BAR2
/// after a 64-bit BAR0) and validates it. I/O BARs are left alone: the
/// driver never turns on I/O decoding. As for BAR0, memory decoding is off
/// while all-ones are in a BAR and every value is restored afterwards.
pub fn probe_other_bars<A: ConfigRegionAccess + ?Sized>(
    access: &A,
    address: PciAddress,
    bar0: &Bar,
) -> Result<OtherBars> {
    let config = ConfigSpace::new(access, address);
    let mut bars = OtherBars::new();
    let mut index: u8 = if bar0.is_64bit { 2 } else { 1 };
    while index <= 5 {
        let offset = BAR0 + 4 * u16::from(index);
        let low = config.read32(offset);
        if low & BAR_IO != 0 {
            index += 1;
            continue;
        }
        let is_64bit = match low & BAR_TYPE_MASK {
            BAR_TYPE_32 => false,
            // BAR5 has no upper half.
            BAR_TYPE_64 if index < 5 => true,
            _ => {
                return Err(Error::BadDeviceValue {
                    field: "memory BAR type",
                    value: low.into(),
                })
            }
        };
        let high = if is_64bit {
            config.read32(offset + 4)
        } else {
            0
        };
        let command = config.command();
        if command.contains(Command::MEMORY) {
            config.write_command(command - Command::MEMORY);
        }
        config.write32(offset, u32::MAX);
        let mask_low = config.read32(offset);
        let mask_high = if is_64bit {
            config.write32(offset + 4, u32::MAX);
            let mask = config.read32(offset + 4);
            config.write32(offset + 4, high);
            mask
        } else {
            u32::MAX
        };
        config.write32(offset, low);
        if command.contains(Command::MEMORY) {
            config.write_command(command);
        }
        present(&config)?;
        let step = if is_64bit { 2 } else { 1 };
        let mask = (u64::from(mask_high) << 32) | u64::from(mask_low & BAR_ADDRESS_MASK);
        if mask_low & BAR_ADDRESS_MASK == 0 && (!is_64bit || mask_high == 0) {
            // Not implemented: reads zero whatever is written.
            index += step;
            continue;
        }
        let size = mask & mask.wrapping_neg();
        if size == 0 || mask != !(size - 1) || size > MAX_OTHER_BAR_SIZE {
            return Err(Error::BadDeviceValue {
                field: "memory BAR size mask",
                value: mask,
            });
        }
        let bar = Bar {
            address: PhysAddr::new((u64::from(high) << 32) | u64::from(low & BAR_ADDRESS_MASK)),
            size,
            is_64bit,
            prefetchable: low & BAR_PREFETCHABLE != 0,
        };
        // At most five: one per index.
        bars.push(index, bar);
        index += step;
    }
    Ok(bars)
}

/// Where a function's memory BARs go inside one block of address space:
/// BAR0 and `others` by decreasing size, so that each lands naturally
/// aligned in a block aligned to its own size. Returns the block's size (a
/// power of two) and each BAR's index (0: BAR0) and offset; `None` when the
/// block would not fit the address space.
pub fn layout_bars(bar0: &Bar, others: &[(u8, Bar)]) -> Option<(u64, heapless::Vec<(u8, u64), 6>)> {
    let mut bars: heapless::Vec<(u8, u64), 6> = heapless::Vec::new();
    // At most six: BAR0 and five others.
    let _ = bars.push((0, bar0.size));
    for (index, bar) in others {
        let _ = bars.push((*index, bar.size));
    }
    bars.sort_unstable_by_key(|bar| core::cmp::Reverse(bar.1));
    let mut end = 0u64;
    for (_, size) in bars.iter_mut() {
        // Sizes are powers of two, largest first: `end` stays aligned.
        let at = end;
        end = end.checked_add(*size)?;
        *size = at;
    }
    Some((end.checked_next_power_of_two()?, bars))
}

/// The highest address a block holding `bar0` and `others` may end at:
/// below 4 GiB if any of them is a 32-bit BAR.
pub fn block_max_last(bar0: &Bar, others: &[(u8, Bar)]) -> u64 {
    others
        .iter()
        .map(|(_, bar)| bar.max_last())
        .fold(bar0.max_last(), u64::min)
}

/// Programs memory BAR `index` (0 to 5) to `target` with memory decoding
/// off, and checks that the device took it.
pub(crate) fn program_bar<A: ConfigRegionAccess + ?Sized>(
    access: &A,
    address: PciAddress,
    index: u8,
    bar: &Bar,
    target: PhysAddr,
) -> Result<()> {
    let config = ConfigSpace::new(access, address);
    let command = config.command();
    config.write_command(command - Command::MEMORY);
    let offset = BAR0 + 4 * u16::from(index);
    config.write32(offset, target.as_u64() as u32);
    if bar.is_64bit {
        config.write32(offset + 4, (target.as_u64() >> 32) as u32);
    }
    let low = config.read32(offset) & BAR_ADDRESS_MASK;
    let high = if bar.is_64bit {
        config.read32(offset + 4)
    } else {
        0
    };
    present(&config)?;
    let read_back = (u64::from(high) << 32) | u64::from(low);
    if read_back != target.as_u64() {
        return Err(Error::BadDeviceValue {
            field: if index == 0 {
                "BAR0 after programming"
            } else {
                "memory BAR after programming"
            },
            value: read_back,
        });
    }
    Ok(())
}

/// Programs BAR0 and `others` at their offsets in the block at `base` (see
/// [`layout_bars`]).
pub(crate) fn program_block<A: ConfigRegionAccess + ?Sized>(
    access: &A,
    address: PciAddress,
    bar0: &Bar,
    others: &[(u8, Bar)],
    offsets: &[(u8, u64)],
    base: u64,
) -> Result<()> {
    for &(index, offset) in offsets {
        let bar = match index {
            0 => bar0,
            _ => match others.iter().find(|(i, _)| *i == index) {
                Some((_, bar)) => bar,
                None => continue,
            },
        };
        program_bar(access, address, index, bar, PhysAddr::new(base + offset))?;
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
