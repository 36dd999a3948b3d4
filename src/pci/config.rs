//! Typed access to one function's configuration space on top of any
//! [`ConfigRegionAccess`](https://docs.rs/pci_types/0.10/pci_types/trait.ConfigRegionAccess.html), which only moves whole dwords.
//!
//! Narrow writes are read-modify-write cycles on the containing dword. That is
//! dangerous next to RW1C status bits (writing back a 1 read from a status
//! register clears it), so every 16-bit write says what goes into the other
//! half of its dword: [`OtherHalf`].

use bitflags::bitflags;
use pci_types::{ConfigRegionAccess, PciAddress};

// ---- header offsets (PCI Local Bus 3.0, 6.1; PCI-to-PCI Bridge 1.2, 3.2) ----

/// Vendor ID (16 bits).
pub const VENDOR_ID: u16 = 0x00;
/// Device ID (16 bits).
pub const DEVICE_ID: u16 = 0x02;
/// Command register (16 bits), see [`Command`].
pub const COMMAND: u16 = 0x04;
/// Status register (16 bits, its writable bits are RW1C), see [`Status`].
pub const STATUS: u16 = 0x06;
/// Revision ID (8 bits).
pub const REVISION_ID: u16 = 0x08;
/// Programming interface (8 bits).
pub const PROG_IF: u16 = 0x09;
/// Subclass (8 bits).
pub const SUBCLASS: u16 = 0x0A;
/// Base class (8 bits).
pub const CLASS: u16 = 0x0B;
/// Header type (8 bits): layout in bits 6:0, [`MULTIFUNCTION`] in bit 7.
pub const HEADER_TYPE: u16 = 0x0E;
/// Base Address Register 0.
pub const BAR0: u16 = 0x10;
/// Base Address Register 1 (upper half of a 64-bit BAR0).
pub const BAR1: u16 = 0x14;
/// Capabilities pointer (8 bits), valid when [`Status::CAP_LIST`] is set.
pub const CAPABILITY_POINTER: u16 = 0x34;

/// Type 1 header: primary bus number (8 bits).
pub const PRIMARY_BUS: u16 = 0x18;
/// Type 1 header: secondary bus number (8 bits).
pub const SECONDARY_BUS: u16 = 0x19;
/// Type 1 header: subordinate bus number (8 bits).
pub const SUBORDINATE_BUS: u16 = 0x1A;
/// Type 1 header: memory base (16 bits, address bits 31:20 in bits 15:4).
pub const MEMORY_BASE: u16 = 0x20;
/// Type 1 header: memory limit (16 bits, same encoding, limit inclusive).
pub const MEMORY_LIMIT: u16 = 0x22;
/// Type 1 header: prefetchable memory base (16 bits, type in bits 3:0).
pub const PREFETCHABLE_BASE: u16 = 0x24;
/// Type 1 header: prefetchable memory limit (16 bits).
pub const PREFETCHABLE_LIMIT: u16 = 0x26;
/// Type 1 header: prefetchable base, address bits 63:32.
pub const PREFETCHABLE_BASE_UPPER: u16 = 0x28;
/// Type 1 header: prefetchable limit, address bits 63:32.
pub const PREFETCHABLE_LIMIT_UPPER: u16 = 0x2C;

/// Header type bit 7: the device implements functions 1-7.
pub const MULTIFUNCTION: u8 = 0x80;
/// Header type layout (bits 6:0) of an endpoint.
pub const HEADER_TYPE_ENDPOINT: u8 = 0x00;
/// Header type layout of a PCI-to-PCI bridge.
pub const HEADER_TYPE_BRIDGE: u8 = 0x01;
/// Header type layout of a CardBus bridge.
pub const HEADER_TYPE_CARDBUS: u8 = 0x02;

/// Vendor ID read from an absent (or removed) function.
pub const VENDOR_NONE: u16 = 0xFFFF;

/// Size of the configuration space reachable through ECAM.
pub const CONFIG_SPACE_SIZE: u16 = 4096;

bitflags! {
    /// The Command register (PCI Local Bus 3.0, 6.2.2).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Command: u16 {
        /// Respond to I/O space accesses.
        const IO = 1 << 0;
        /// Respond to memory space accesses (BAR decoding).
        const MEMORY = 1 << 1;
        /// Bus master: the function may issue DMA.
        const BUS_MASTER = 1 << 2;
        /// Report parity errors.
        const PARITY_ERROR_RESPONSE = 1 << 6;
        /// Report SERR#.
        const SERR = 1 << 8;
        /// Do not assert legacy INTx interrupts.
        const INTX_DISABLE = 1 << 10;
        const _ = !0;
    }
}

bitflags! {
    /// The Status register (PCI Local Bus 3.0, 6.2.3). Writable bits are RW1C.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Status: u16 {
        /// Legacy interrupt pending.
        const INTERRUPT = 1 << 3;
        /// The capability list at [`CAPABILITY_POINTER`] is valid.
        const CAP_LIST = 1 << 4;
        /// Master data parity error (RW1C).
        const MASTER_DATA_PARITY_ERROR = 1 << 8;
        /// Signaled target abort (RW1C).
        const SIGNALED_TARGET_ABORT = 1 << 11;
        /// Received target abort (RW1C).
        const RECEIVED_TARGET_ABORT = 1 << 12;
        /// Received master abort (RW1C).
        const RECEIVED_MASTER_ABORT = 1 << 13;
        /// Signaled system error (RW1C).
        const SIGNALED_SYSTEM_ERROR = 1 << 14;
        /// Detected parity error (RW1C).
        const DETECTED_PARITY_ERROR = 1 << 15;
        const _ = !0;
    }
}

/// What a 16-bit write puts into the other half of its dword.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtherHalf {
    /// The other half is an ordinary register (Command, Slot Control, a
    /// bridge window limit): write back the value it holds.
    Keep,
    /// The other half is a status register whose writable bits are all RW1C
    /// (Status, Device/Link/Slot Status): write zeros so that no pending
    /// status is cleared as a side effect.
    Zero,
}

/// One function's configuration space, reached through `A`.
pub struct ConfigSpace<'a, A: ConfigRegionAccess + ?Sized> {
    access: &'a A,
    address: PciAddress,
}

impl<'a, A: ConfigRegionAccess + ?Sized> ConfigSpace<'a, A> {
    /// The configuration space of the function at `address`.
    pub fn new(access: &'a A, address: PciAddress) -> Self {
        Self { access, address }
    }

    /// The function's address.
    pub fn address(&self) -> PciAddress {
        self.address
    }

    /// The access mechanism.
    pub fn access(&self) -> &'a A {
        self.access
    }

    /// Reads the dword at `offset`; all-ones when `offset` is not an aligned
    /// dword inside the 4 KiB space.
    pub fn read32(&self, offset: u16) -> u32 {
        if !offset.is_multiple_of(4) || offset >= CONFIG_SPACE_SIZE {
            return u32::MAX;
        }
        // SAFETY: an aligned dword inside the configuration space of a
        // function: every access mechanism defines such a read, and an absent
        // function answers all-ones (a master abort), not an error.
        unsafe { self.access.read(self.address, offset) }
    }

    /// Writes the dword at `offset` (ignored unless an aligned dword inside
    /// the 4 KiB space). Any RW1C bits in `value` clear their status bits.
    pub fn write32(&self, offset: u16, value: u32) {
        if !offset.is_multiple_of(4) || offset >= CONFIG_SPACE_SIZE {
            return;
        }
        // SAFETY: as in `read32`; writes to an absent function are dropped.
        unsafe { self.access.write(self.address, offset, value) }
    }

    /// Reads the 16-bit register at `offset` (all-ones when misaligned).
    pub fn read16(&self, offset: u16) -> u16 {
        if !offset.is_multiple_of(2) {
            return u16::MAX;
        }
        (self.read32(offset & !3) >> ((offset & 2) * 8)) as u16
    }

    /// Reads the byte at `offset`.
    pub fn read8(&self, offset: u16) -> u8 {
        (self.read32(offset & !3) >> ((offset & 3) * 8)) as u8
    }

    /// Writes the 16-bit register at `offset` with one dword write, putting
    /// into the other half of the dword what `other` says (ignored when
    /// misaligned). With [`OtherHalf::Keep`] the read and the write are two
    /// accesses: callers serialise their accesses to one function.
    pub fn write16(&self, offset: u16, value: u16, other: OtherHalf) {
        if !offset.is_multiple_of(2) {
            return;
        }
        let dword = offset & !3;
        let shift = (offset & 2) * 8;
        let other_bits = match other {
            OtherHalf::Keep => self.read32(dword) & !(0xFFFF << shift),
            OtherHalf::Zero => 0,
        };
        self.write32(dword, other_bits | (u32::from(value) << shift));
    }

    /// Vendor ID; [`VENDOR_NONE`] when nothing answers.
    pub fn vendor_id(&self) -> u16 {
        self.read16(VENDOR_ID)
    }

    /// Device ID.
    pub fn device_id(&self) -> u16 {
        self.read16(DEVICE_ID)
    }

    /// Whether a function answers at this address. Removed functions read
    /// all-ones; some broken bridges answer zeros.
    pub fn is_present(&self) -> bool {
        !matches!(self.vendor_id(), VENDOR_NONE | 0x0000)
    }

    /// The Command register.
    pub fn command(&self) -> Command {
        Command::from_bits_retain(self.read16(COMMAND))
    }

    /// Writes the Command register without clearing anything in Status.
    pub fn write_command(&self, command: Command) {
        self.write16(COMMAND, command.bits(), OtherHalf::Zero);
    }

    /// Sets and clears Command bits in one read-modify-write.
    pub fn update_command(&self, set: Command, clear: Command) {
        let command = (self.command() - clear) | set;
        self.write_command(command);
    }

    /// The Status register.
    pub fn status(&self) -> Status {
        Status::from_bits_retain(self.read16(STATUS))
    }

    /// The raw header type byte (layout and [`MULTIFUNCTION`] bit).
    pub fn header_type(&self) -> u8 {
        self.read8(HEADER_TYPE)
    }

    /// (base class, subclass, programming interface).
    pub fn class_code(&self) -> (u8, u8, u8) {
        let dword = self.read32(REVISION_ID);
        ((dword >> 24) as u8, (dword >> 16) as u8, (dword >> 8) as u8)
    }
}

impl<A: ConfigRegionAccess + ?Sized> Clone for ConfigSpace<'_, A> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<A: ConfigRegionAccess + ?Sized> Copy for ConfigSpace<'_, A> {}
