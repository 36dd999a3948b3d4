//! The hand: pulls a device out of a root port's slot the way real hardware
//! loses it.
//!
//! It shares nothing with the driver and never calls it: it uses the
//! board's own configuration accessor (`Board::own_config`, never the
//! driver's) and only writes the port's Slot Control. QEMU
//! destroys the device during a Slot Control write that turns the power
//! controller off with the power indicator off (0x07c0); 0x05c0 unpowers it
//! without deleting it, and a later power-on brings it back reset (a link
//! flap). From the driver's side nothing announces either: it is a surprise.
//!
//! The host asks for a removal with QMP `device_del`, which only sets Attention
//! Button Pressed in the port's Slot Status; an armed hand sees that and acts.

use pci_types::PciAddress;

use crate::pci::{self, BoardConfig, CAP_ID_PCIE};

/// Slot Control/Slot Status dword, from the PCIe capability.
const SLOT_CONTROL: u16 = 0x18;
/// Slot Status bits (upper half of the dword).
const ATTENTION_BUTTON_PRESSED: u32 = 1 << 16;
const PRESENCE_DETECT_STATE: u32 = 1 << (16 + 6);
/// Slot Control: power controller off, power indicator off, attention
/// indicator off. QEMU deletes the device on this write.
const REMOVE: u32 = 0x07C0;
/// Slot Control: power controller off and power indicator off (bits 10,
/// 9:8 = 11b).
const SWITCHED_OFF: u32 = 0x0700;
/// Slot Control: power controller off, power indicator on: the device is
/// unpowered but stays.
const POWER_OFF: u32 = 0x05C0;
/// Slot Control: power controller on, power indicator on, attention off.
const POWER_ON: u32 = 0x01C0;

/// What the hand did on a poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing.
    None,
    /// The button was pressed and the device pulled.
    Removed,
}

/// A hand on one root port's slot.
pub struct Hand {
    /// The board's own accessor: never the driver's.
    config: BoardConfig,
    port: PciAddress,
    slot_control: u16,
    armed: bool,
    /// Slot Control writes made so far (a scenario shows it made none).
    writes: core::cell::Cell<u32>,
}

impl Hand {
    /// A hand on the slot of the root port at `port`; `None` if the port has
    /// no PCI Express capability.
    pub fn new(port: PciAddress) -> Option<Self> {
        let config = pci::board_config();
        let cap = pci::find_capability(&config, port, CAP_ID_PCIE)?;
        Some(Self {
            config,
            port,
            slot_control: cap + SLOT_CONTROL,
            armed: false,
            writes: core::cell::Cell::new(0),
        })
    }

    fn slot_dword(&self) -> u32 {
        pci::read32(&self.config, self.port, self.slot_control)
    }

    /// Writes Slot Control; the status half is written as zeroes, which leaves
    /// its write-one-to-clear bits alone.
    fn write_slot_control(&self, value: u32) {
        self.writes.set(self.writes.get() + 1);
        pci::write32(&self.config, self.port, self.slot_control, value & 0xFFFF);
    }

    /// Slot Control writes the hand made (button acknowledgements included).
    pub fn writes(&self) -> u32 {
        self.writes.get()
    }

    /// Whether the slot reports a card present.
    pub fn presence(&self) -> bool {
        self.slot_dword() & PRESENCE_DETECT_STATE != 0
    }

    /// From now on, a press of the attention button pulls the device. A press
    /// seen before arming (QEMU presses it on every `device_add`) is cleared.
    pub fn arm(&mut self) {
        self.clear_button();
        self.armed = true;
    }

    fn clear_button(&self) {
        self.writes.set(self.writes.get() + 1);
        let control = self.slot_dword() & 0xFFFF;
        pci::write32(
            &self.config,
            self.port,
            self.slot_control,
            control | ATTENTION_BUTTON_PRESSED,
        );
    }

    /// Checks the button once; pulls the device if armed and pressed.
    pub fn poll(&mut self) -> Action {
        if !self.armed || self.slot_dword() & ATTENTION_BUTTON_PRESSED == 0 {
            return Action::None;
        }
        self.clear_button();
        self.armed = false;
        self.remove();
        Action::Removed
    }

    /// Pulls the device now. QEMU deletes the device only when Slot
    /// Control turns to "power and indicator off"; a slot already reading so
    /// (no firmware powered it on, or a card came back after a pull) is
    /// switched on first.
    pub fn remove(&self) {
        log::debug!("hand: slot control/status {:#010x}", self.slot_dword());
        if self.slot_dword() & 0xFFFF & SWITCHED_OFF == SWITCHED_OFF {
            self.write_slot_control(POWER_ON);
        }
        self.write_slot_control(REMOVE);
        log::debug!("hand: slot control/status now {:#010x}", self.slot_dword());
    }

    /// Cuts slot power without deleting the device (first half of a link flap).
    pub fn power_off(&self) {
        self.write_slot_control(POWER_OFF);
    }

    /// Restores slot power (second half of a link flap; the device comes back
    /// reset).
    pub fn power_on(&self) {
        self.write_slot_control(POWER_ON);
    }
}
