//! The local APIC in xAPIC mode: its id, and the INIT and STARTUP IPIs that
//! wake another processor.
//!
//! The registers are memory-mapped at the base in `IA32_APIC_BASE`; the boot
//! identity map covers them and `paging` marks their 2 MiB page uncached,
//! which [`Lapic::from_msr`] checks before any access.

use core::fmt;
use core::ptr::NonNull;
use core::time::Duration;

use bare_nvme::{MmioRegisters, RegisterAccess};
use x86_64::registers::model_specific::Msr;

use crate::{clock, paging};

const IA32_APIC_BASE: u32 = 0x1B;
/// `IA32_APIC_BASE` bits: x2APIC mode, global enable, and the base (4 KiB
/// aligned, up to bit 51).
const X2APIC_MODE: u64 = 1 << 10;
const GLOBAL_ENABLE: u64 = 1 << 11;
const BASE_MASK: u64 = 0x000F_FFFF_FFFF_F000;

/// Register offsets.
const ID: usize = 0x20;
const END_OF_INTERRUPT: usize = 0xB0;
const SPURIOUS: usize = 0xF0;
const ERROR_STATUS: usize = 0x280;
const ICR_LOW: usize = 0x300;
const ICR_HIGH: usize = 0x310;
/// Size of the register page.
const PAGE: usize = 0x1000;

/// Spurious vector register: APIC software enable, and the vector (0xFF).
const SOFTWARE_ENABLE: u32 = 1 << 8;
/// The vector of spurious interrupts.
pub const SPURIOUS_VECTOR: u32 = 0xFF;

/// ICR fields.
const DELIVERY_INIT: u32 = 0b101 << 8;
const DELIVERY_STARTUP: u32 = 0b110 << 8;
const DELIVERY_PENDING: u32 = 1 << 12;
const LEVEL_ASSERT: u32 = 1 << 14;
const TRIGGER_LEVEL: u32 = 1 << 15;

/// Longest wait for the ICR to accept an IPI (hardware takes microseconds).
const SEND_LIMIT: Duration = Duration::from_millis(100);

/// Why the local APIC cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LapicError {
    /// `IA32_APIC_BASE` says the APIC is disabled.
    Disabled,
    /// The APIC runs in x2APIC mode (MSR access, not handled here).
    X2apic,
    /// The register page is outside the map or not mapped uncached.
    NotUncached(u64),
    /// An IPI stayed pending past [`SEND_LIMIT`].
    SendStuck,
}

impl fmt::Display for LapicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LapicError::Disabled => f.write_str("local APIC disabled"),
            LapicError::X2apic => f.write_str("local APIC in x2APIC mode"),
            LapicError::NotUncached(base) => {
                write!(f, "local APIC at {base:#x} not mapped uncached")
            }
            LapicError::SendStuck => f.write_str("IPI still pending after 100 ms"),
        }
    }
}

/// The calling processor's local APIC (every processor sees its own at the
/// same address).
#[derive(Debug)]
pub struct Lapic {
    base: u64,
    registers: MmioRegisters,
}

impl Lapic {
    /// The APIC `IA32_APIC_BASE` names, after checking it is enabled, in
    /// xAPIC mode and mapped uncached.
    pub fn from_msr() -> Result<Self, LapicError> {
        // SAFETY: IA32_APIC_BASE exists on every x86-64 processor; reading it
        // has no side effect.
        let msr = unsafe { Msr::new(IA32_APIC_BASE).read() };
        if msr & GLOBAL_ENABLE == 0 {
            return Err(LapicError::Disabled);
        }
        if msr & X2APIC_MODE != 0 {
            return Err(LapicError::X2apic);
        }
        Self::at(msr & BASE_MASK)
    }

    /// The APIC at `base` (as recorded by the boot processor), checked as in
    /// [`Lapic::from_msr`].
    pub fn at(base: u64) -> Result<Self, LapicError> {
        let Some(pointer) = NonNull::new(base as *mut u8) else {
            return Err(LapicError::NotUncached(base));
        };
        if !base.is_multiple_of(PAGE as u64)
            || !paging::is_mapped(base, PAGE as u64)
            || !paging::is_uncached(base)
        {
            return Err(LapicError::NotUncached(base));
        }
        // SAFETY: a page-aligned page of registers, identity-mapped uncached
        // (checked above) for the whole run.
        let registers = unsafe { MmioRegisters::new(pointer, PAGE) };
        Ok(Self { base, registers })
    }

    /// Physical (and virtual) address of the registers.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// The calling processor's APIC id.
    pub fn id(&self) -> u8 {
        (self.read(ID) >> 24) as u8
    }

    /// Sets the software-enable bit (firmware normally has): a disabled APIC
    /// sends no IPIs.
    pub fn enable(&self) {
        let spurious = self.read(SPURIOUS);
        if spurious & SOFTWARE_ENABLE == 0 {
            self.write(SPURIOUS, SOFTWARE_ENABLE | SPURIOUS_VECTOR);
        }
    }

    /// Sends INIT (assert, then the level de-assert older processors need)
    /// to `apic_id`: it stops whatever it runs and waits for STARTUP.
    pub fn send_init(&self, apic_id: u8) -> Result<(), LapicError> {
        self.send(apic_id, DELIVERY_INIT | LEVEL_ASSERT | TRIGGER_LEVEL)?;
        self.send(apic_id, DELIVERY_INIT | TRIGGER_LEVEL)
    }

    /// Sends STARTUP with `vector`: the processor starts in real mode at
    /// `vector << 12`.
    pub fn send_startup(&self, apic_id: u8, vector: u8) -> Result<(), LapicError> {
        self.send(apic_id, DELIVERY_STARTUP | LEVEL_ASSERT | u32::from(vector))
    }

    /// Sends a fixed interrupt with `vector` (edge-triggered) to `apic_id`.
    pub fn send_fixed(&self, apic_id: u8, vector: u8) -> Result<(), LapicError> {
        self.send(apic_id, LEVEL_ASSERT | u32::from(vector))
    }

    /// Acknowledges the interrupt in service (none: no effect).
    pub fn end_of_interrupt(&self) {
        self.write(END_OF_INTERRUPT, 0);
    }

    /// Writes the ICR (destination first: the low write sends) and waits,
    /// bounded, until the APIC has accepted the IPI.
    fn send(&self, apic_id: u8, command: u32) -> Result<(), LapicError> {
        self.write(ERROR_STATUS, 0);
        self.wait_idle()?;
        self.write(ICR_HIGH, u32::from(apic_id) << 24);
        self.write(ICR_LOW, command);
        self.wait_idle()
    }

    fn wait_idle(&self) -> Result<(), LapicError> {
        let deadline = clock::now() + SEND_LIMIT;
        while self.read(ICR_LOW) & DELIVERY_PENDING != 0 {
            if clock::now() >= deadline {
                return Err(LapicError::SendStuck);
            }
            core::hint::spin_loop();
        }
        Ok(())
    }

    fn read(&self, reg: usize) -> u32 {
        self.registers.read32(reg)
    }

    fn write(&self, reg: usize, value: u32) {
        self.registers.write32(reg, value);
    }
}
