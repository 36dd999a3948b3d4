//! The PCI Express capability of a port: slot and link state for hot-plug
//! monitoring (PCIe Base 6.0, 7.5.3).
//!
//! The monitor polls [`PciePort::slot_state`] on every hot-plug capable port,
//! acts on the change bits and then clears exactly the bits it handled with
//! [`PciePort::clear_slot_status`].

use bitflags::bitflags;
use pci_types::{ConfigRegionAccess, PciAddress};

use super::capability::ID_PCI_EXPRESS;
use super::config::{ConfigSpace, OtherHalf};
use crate::error::{Error, Result};

/// PCI Express Capabilities register (16 bits).
pub const PCIE_CAPABILITIES: u16 = 0x02;
/// Link Capabilities (32 bits).
pub const LINK_CAPABILITIES: u16 = 0x0C;
/// Link Control (16 bits).
pub const LINK_CONTROL: u16 = 0x10;
/// Link Status (16 bits).
pub const LINK_STATUS: u16 = 0x12;
/// Slot Capabilities (32 bits).
pub const SLOT_CAPABILITIES: u16 = 0x14;
/// Slot Control (16 bits).
pub const SLOT_CONTROL: u16 = 0x18;
/// Slot Status (16 bits, change bits RW1C).
pub const SLOT_STATUS: u16 = 0x1A;
/// Root Control (16 bits, root ports only).
pub const ROOT_CONTROL: u16 = 0x1C;
/// Root Capabilities (16 bits, root ports only).
pub const ROOT_CAPABILITIES: u16 = 0x1E;

/// Root Capabilities bit 0: the port can report Configuration Request Retry
/// Status to software (CRS Software Visibility).
const CRS_VISIBILITY_CAPABLE: u16 = 1 << 0;
/// Root Control bit 4: CRS Software Visibility Enable.
const CRS_VISIBILITY_ENABLE: u16 = 1 << 4;
/// The vendor ID a root port with CRS Software Visibility enabled returns
/// for a function that answered a configuration read with Retry Status: the
/// function is there but not ready yet (PCIe Base 6.0, 2.3.2).
pub const CRS_VENDOR_ID: u16 = 0x0001;

/// PCI Express Capabilities bit 8: the port is connected to a slot.
const SLOT_IMPLEMENTED: u16 = 1 << 8;

bitflags! {
    /// Slot Capabilities (PCIe Base 6.0, 7.5.3.9), without the Physical Slot
    /// Number and power limit fields (see [`SlotCapabilities::physical_slot`]).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct SlotCapabilities: u32 {
        /// Attention button present.
        const ATTENTION_BUTTON = 1 << 0;
        /// Power controller present.
        const POWER_CONTROLLER = 1 << 1;
        /// MRL sensor present.
        const MRL_SENSOR = 1 << 2;
        /// Attention indicator present.
        const ATTENTION_INDICATOR = 1 << 3;
        /// Power indicator present.
        const POWER_INDICATOR = 1 << 4;
        /// Hot-plug surprise: removal without notice is allowed.
        const HOT_PLUG_SURPRISE = 1 << 5;
        /// Hot-plug capable (HPC).
        const HOT_PLUG_CAPABLE = 1 << 6;
        /// Electromechanical interlock present.
        const INTERLOCK = 1 << 17;
        /// No command completed support.
        const NO_COMMAND_COMPLETED = 1 << 18;
        const _ = !0;
    }
}

impl SlotCapabilities {
    /// The Physical Slot Number (bits 31:19).
    pub fn physical_slot(self) -> u16 {
        (self.bits() >> 19) as u16
    }
}

bitflags! {
    /// Slot Status (PCIe Base 6.0, 7.5.3.11).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct SlotStatus: u16 {
        /// Attention Button Pressed (RW1C).
        const ATTENTION_BUTTON_PRESSED = 1 << 0;
        /// Power Fault Detected (RW1C).
        const POWER_FAULT_DETECTED = 1 << 1;
        /// MRL Sensor Changed (RW1C).
        const MRL_SENSOR_CHANGED = 1 << 2;
        /// Presence Detect Changed (RW1C).
        const PRESENCE_DETECT_CHANGED = 1 << 3;
        /// Command Completed (RW1C).
        const COMMAND_COMPLETED = 1 << 4;
        /// MRL Sensor State: 1 = open.
        const MRL_SENSOR_STATE = 1 << 5;
        /// Presence Detect State: 1 = card present.
        const PRESENCE_DETECT_STATE = 1 << 6;
        /// Electromechanical Interlock Status: 1 = engaged.
        const INTERLOCK_STATUS = 1 << 7;
        /// Data Link Layer State Changed (RW1C).
        const DATA_LINK_STATE_CHANGED = 1 << 8;
    }
}

impl SlotStatus {
    /// The bits software clears by writing 1.
    pub const RW1C: SlotStatus = SlotStatus::ATTENTION_BUTTON_PRESSED
        .union(SlotStatus::POWER_FAULT_DETECTED)
        .union(SlotStatus::MRL_SENSOR_CHANGED)
        .union(SlotStatus::PRESENCE_DETECT_CHANGED)
        .union(SlotStatus::COMMAND_COMPLETED)
        .union(SlotStatus::DATA_LINK_STATE_CHANGED);

    /// The change (event) bits that are set.
    pub fn events(self) -> SlotStatus {
        self & Self::RW1C
    }
}

bitflags! {
    /// Slot Control (PCIe Base 6.0, 7.5.3.10).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct SlotControl: u16 {
        /// Attention Button Pressed Enable.
        const ATTENTION_BUTTON_ENABLE = 1 << 0;
        /// Power Fault Detected Enable.
        const POWER_FAULT_ENABLE = 1 << 1;
        /// MRL Sensor Changed Enable.
        const MRL_SENSOR_ENABLE = 1 << 2;
        /// Presence Detect Changed Enable.
        const PRESENCE_DETECT_ENABLE = 1 << 3;
        /// Command Completed Interrupt Enable.
        const COMMAND_COMPLETED_ENABLE = 1 << 4;
        /// Hot-Plug Interrupt Enable.
        const HOT_PLUG_INTERRUPT_ENABLE = 1 << 5;
        /// Power Controller Control: 1 = power off.
        const POWER_OFF = 1 << 10;
        /// Data Link Layer State Changed Enable.
        const DATA_LINK_STATE_ENABLE = 1 << 12;
        // Attention/power indicator control (bits 9:6), interlock control.
        const _ = !0;
    }
}

/// A slot indicator's state (Slot Control bits 7:6 for the attention
/// indicator, 9:8 for the power indicator).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Indicator {
    /// Lit.
    On,
    /// Blinking: the slot is changing state (power indicator) or needs
    /// attention being located (attention indicator).
    Blink,
    /// Dark.
    Off,
}

impl Indicator {
    fn bits(self) -> u16 {
        match self {
            Indicator::On => 0b01,
            Indicator::Blink => 0b10,
            Indicator::Off => 0b11,
        }
    }

    fn from_bits(bits: u16) -> Option<Self> {
        match bits & 0b11 {
            0b01 => Some(Indicator::On),
            0b10 => Some(Indicator::Blink),
            0b11 => Some(Indicator::Off),
            _ => None,
        }
    }
}

/// Bit position of the attention indicator control field.
const ATTENTION_INDICATOR_SHIFT: u16 = 6;
/// Bit position of the power indicator control field.
const POWER_INDICATOR_SHIFT: u16 = 8;

impl SlotControl {
    /// The power indicator field (`None`: the reserved encoding 00b).
    pub fn power_indicator(self) -> Option<Indicator> {
        Indicator::from_bits(self.bits() >> POWER_INDICATOR_SHIFT)
    }

    /// The attention indicator field (`None`: the reserved encoding 00b).
    pub fn attention_indicator(self) -> Option<Indicator> {
        Indicator::from_bits(self.bits() >> ATTENTION_INDICATOR_SHIFT)
    }

    /// This control with the power indicator field set to `indicator`.
    pub fn with_power_indicator(self, indicator: Indicator) -> Self {
        let mask = 0b11 << POWER_INDICATOR_SHIFT;
        Self::from_bits_retain((self.bits() & !mask) | indicator.bits() << POWER_INDICATOR_SHIFT)
    }

    /// This control with the attention indicator field set to `indicator`.
    pub fn with_attention_indicator(self, indicator: Indicator) -> Self {
        let mask = 0b11 << ATTENTION_INDICATOR_SHIFT;
        Self::from_bits_retain(
            (self.bits() & !mask) | indicator.bits() << ATTENTION_INDICATOR_SHIFT,
        )
    }
}

bitflags! {
    /// Link Status (PCIe Base 6.0, 7.5.3.8), the bits the monitor uses.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct LinkStatus: u16 {
        /// Link training in progress.
        const LINK_TRAINING = 1 << 11;
        /// Data Link Layer Link Active (valid when the port reports
        /// [`LinkCapabilities::DLL_ACTIVE_REPORTING`]).
        const DLL_LINK_ACTIVE = 1 << 13;
        /// Link Bandwidth Management Status (RW1C).
        const BANDWIDTH_MANAGEMENT = 1 << 14;
        /// Link Autonomous Bandwidth Status (RW1C).
        const AUTONOMOUS_BANDWIDTH = 1 << 15;
        const _ = !0;
    }
}

bitflags! {
    /// Link Capabilities (PCIe Base 6.0, 7.5.3.6), the bits the monitor uses.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct LinkCapabilities: u32 {
        /// Surprise down error reporting capable.
        const SURPRISE_DOWN_REPORTING = 1 << 19;
        /// Data Link Layer Link Active Reporting Capable (DLLLARC).
        const DLL_ACTIVE_REPORTING = 1 << 20;
        const _ = !0;
    }
}

/// One poll of a slot: what the monitor needs to see arrivals and removals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotState {
    /// Slot Status as read.
    pub status: SlotStatus,
    /// Link Status as read.
    pub link: LinkStatus,
}

impl SlotState {
    /// Presence Detect State: a card is in the slot.
    pub fn present(&self) -> bool {
        self.status.contains(SlotStatus::PRESENCE_DETECT_STATE)
    }

    /// Data Link Layer Link Active.
    pub fn link_active(&self) -> bool {
        self.link.contains(LinkStatus::DLL_LINK_ACTIVE)
    }

    /// The pending change bits (to act on, then clear).
    pub fn events(&self) -> SlotStatus {
        self.status.events()
    }
}

/// A function with a PCI Express capability (a root or downstream port when
/// it has a slot).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciePort {
    /// The port's address.
    pub address: PciAddress,
    /// Offset of its PCI Express capability.
    pub capability: u16,
}

impl PciePort {
    /// Finds the PCI Express capability of the function at `address`;
    /// `Ok(None)` when it has none.
    pub fn find<A: ConfigRegionAccess + ?Sized>(
        access: &A,
        address: PciAddress,
    ) -> Result<Option<PciePort>> {
        let config = ConfigSpace::new(access, address);
        Ok(config
            .find_capability(ID_PCI_EXPRESS)?
            .map(|capability| PciePort {
                address,
                capability,
            }))
    }

    fn config<'a, A: ConfigRegionAccess + ?Sized>(&self, access: &'a A) -> ConfigSpace<'a, A> {
        ConfigSpace::new(access, self.address)
    }

    /// The PCI Express capability spans 0x3C bytes; a capability found by the
    /// bounded walk starts below 0x100, so every register is in range.
    fn reg(&self, offset: u16) -> u16 {
        self.capability + offset
    }

    /// Whether the port is connected to a slot (PCI Express Capabilities
    /// bit 8).
    pub fn slot_implemented<A: ConfigRegionAccess + ?Sized>(&self, access: &A) -> bool {
        let caps = self.config(access).read16(self.reg(PCIE_CAPABILITIES));
        caps != u16::MAX && caps & SLOT_IMPLEMENTED != 0
    }

    /// Slot Capabilities.
    pub fn slot_capabilities<A: ConfigRegionAccess + ?Sized>(
        &self,
        access: &A,
    ) -> SlotCapabilities {
        SlotCapabilities::from_bits_retain(self.config(access).read32(self.reg(SLOT_CAPABILITIES)))
    }

    /// Link Capabilities.
    pub fn link_capabilities<A: ConfigRegionAccess + ?Sized>(
        &self,
        access: &A,
    ) -> LinkCapabilities {
        LinkCapabilities::from_bits_retain(self.config(access).read32(self.reg(LINK_CAPABILITIES)))
    }

    /// Slot Status and Link Status in one dword read each. A port that no
    /// longer answers (its own switch was removed) gives `DeviceRemoved`.
    pub fn slot_state<A: ConfigRegionAccess + ?Sized>(&self, access: &A) -> Result<SlotState> {
        let config = self.config(access);
        let slot = config.read32(self.reg(SLOT_CONTROL));
        let link = config.read32(self.reg(LINK_CONTROL));
        if slot == u32::MAX || link == u32::MAX {
            return Err(Error::DeviceRemoved);
        }
        let status = (slot >> 16) as u16;
        if status & !SlotStatus::all().bits() != 0 {
            return Err(Error::BadDeviceValue {
                field: "Slot Status",
                value: status.into(),
            });
        }
        Ok(SlotState {
            status: SlotStatus::from_bits_retain(status),
            link: LinkStatus::from_bits_retain((link >> 16) as u16),
        })
    }

    /// Slot Control and Slot Status in one dword read (the monitor's
    /// per-poll cost). A port that no longer answers gives `DeviceRemoved`.
    pub fn slot_registers<A: ConfigRegionAccess + ?Sized>(
        &self,
        access: &A,
    ) -> Result<(SlotControl, SlotStatus)> {
        let slot = self.config(access).read32(self.reg(SLOT_CONTROL));
        if slot == u32::MAX {
            return Err(Error::DeviceRemoved);
        }
        let status = (slot >> 16) as u16;
        if status & !SlotStatus::all().bits() != 0 {
            return Err(Error::BadDeviceValue {
                field: "Slot Status",
                value: status.into(),
            });
        }
        Ok((
            SlotControl::from_bits_retain(slot as u16),
            SlotStatus::from_bits_retain(status),
        ))
    }

    /// Turns on CRS Software Visibility where a root port offers it, so that
    /// a function still initialising after power-up reads as
    /// [`CRS_VENDOR_ID`] instead of stalling or failing the read. Returns
    /// whether it is on.
    pub fn enable_crs_visibility<A: ConfigRegionAccess + ?Sized>(&self, access: &A) -> bool {
        let config = self.config(access);
        let caps = config.read16(self.reg(ROOT_CAPABILITIES));
        if caps == u16::MAX || caps & CRS_VISIBILITY_CAPABLE == 0 {
            return false;
        }
        let control = config.read16(self.reg(ROOT_CONTROL));
        if control & CRS_VISIBILITY_ENABLE == 0 {
            // Root Status (the other half) holds an RW1C PME Status bit.
            config.write16(
                self.reg(ROOT_CONTROL),
                control | CRS_VISIBILITY_ENABLE,
                OtherHalf::Zero,
            );
        }
        config.read16(self.reg(ROOT_CONTROL)) & CRS_VISIBILITY_ENABLE != 0
    }

    /// Slot Status alone, in one dword read (the monitor's per-poll cost).
    /// A port that no longer answers gives `DeviceRemoved`.
    pub fn slot_status<A: ConfigRegionAccess + ?Sized>(&self, access: &A) -> Result<SlotStatus> {
        let slot = self.config(access).read32(self.reg(SLOT_CONTROL));
        if slot == u32::MAX {
            return Err(Error::DeviceRemoved);
        }
        let status = (slot >> 16) as u16;
        if status & !SlotStatus::all().bits() != 0 {
            return Err(Error::BadDeviceValue {
                field: "Slot Status",
                value: status.into(),
            });
        }
        Ok(SlotStatus::from_bits_retain(status))
    }

    /// Link Status alone.
    pub fn link_status<A: ConfigRegionAccess + ?Sized>(&self, access: &A) -> LinkStatus {
        LinkStatus::from_bits_retain(self.config(access).read16(self.reg(LINK_STATUS)))
    }

    /// Slot Control.
    pub fn slot_control<A: ConfigRegionAccess + ?Sized>(&self, access: &A) -> SlotControl {
        SlotControl::from_bits_retain(self.config(access).read16(self.reg(SLOT_CONTROL)))
    }

    /// Writes Slot Control; writes zeros into Slot Status so that no pending
    /// change is cleared by the write.
    pub fn write_slot_control<A: ConfigRegionAccess + ?Sized>(
        &self,
        access: &A,
        control: SlotControl,
    ) {
        self.config(access)
            .write16(self.reg(SLOT_CONTROL), control.bits(), OtherHalf::Zero);
    }

    /// Clears the handled change bits `handled` in Slot Status (others stay
    /// pending), writing Slot Control back unchanged in the same dword.
    pub fn clear_slot_status<A: ConfigRegionAccess + ?Sized>(
        &self,
        access: &A,
        handled: SlotStatus,
    ) {
        let bits = (handled & SlotStatus::RW1C).bits();
        if bits != 0 {
            self.config(access)
                .write16(self.reg(SLOT_STATUS), bits, OtherHalf::Keep);
        }
    }
}
