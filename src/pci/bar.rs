//! BAR0 of an NVMe function: sizing, validation, programming, and the
//! command register bits around it. Placing it inside the parent bridge's
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
