//! Configuration space through CF8/CFC, for the probe after
//! ExitBootServices and the hand that pulls a controller from its slot.

use super::*;

/// The CF8 address of a configuration dword.
pub(crate) fn config_address(bus: u8, dev: u8, func: u8, offset: u8) -> u32 {
    0x8000_0000u32
        | (u32::from(bus) << 16)
        | (u32::from(dev) << 11)
        | (u32::from(func) << 8)
        | u32::from(offset & 0xfc)
}

/// Writes a configuration word through CF8/CFC (the pull's Slot Control
/// write goes to a root port this application holds no PCI I/O for).
pub(crate) fn config_write16(bus: u8, dev: u8, func: u8, offset: u8, value: u16) {
    let address = config_address(bus, dev, func, offset);
    let port = 0xcfcu16 + u16::from(offset & 2);
    efi::at_callback(|| {
        // SAFETY: the PCI configuration ports of q35; one word written (a
        // word, so the RW1C Slot Status beside Slot Control is untouched).
        unsafe {
            core::arch::asm!("out dx, eax", in("dx") 0xcf8u16, in("eax") address, options(nomem, nostack));
            core::arch::asm!("out dx, ax", in("dx") port, in("ax") value, options(nomem, nostack));
        }
    });
}

/// A configuration byte through CF8/CFC.
pub(crate) fn config_read8(bus: u8, dev: u8, func: u8, offset: u8) -> u8 {
    (config_read16(bus, dev, func, offset & !1) >> ((offset & 1) * 8)) as u8
}

/// A configuration word through the legacy CF8/CFC mechanism (the firmware's
/// PCI I/O is gone after ExitBootServices).
pub(crate) fn config_read16(bus: u8, dev: u8, func: u8, offset: u8) -> u16 {
    let address = config_address(bus, dev, func, offset);
    let value: u32;
    // SAFETY: the PCI configuration ports of q35; one dword read.
    unsafe {
        core::arch::asm!("out dx, eax", in("dx") 0xcf8u16, in("eax") address, options(nomem, nostack));
        core::arch::asm!("in eax, dx", in("dx") 0xcfcu16, out("eax") value, options(nomem, nostack));
    }
    (value >> ((offset & 2) * 8)) as u16
}

/// Slot Control: power controller off, power indicator off, attention
/// indicator off. QEMU deletes the device on this write: a surprise
/// removal, as the bare-metal boards' hand does it.
pub(crate) const SLOT_REMOVE: u16 = 0x07c0;

/// The PCI Express capability ID.
pub(crate) const CAP_PCIE: u8 = 0x10;

/// The root port (on bus 0) whose secondary bus is `bus`, and the offset of
/// its Slot Control register.
pub(crate) fn root_port_of(bus: u8) -> Option<(u8, u16)> {
    (0..32u8).find_map(|dev| {
        let header = config_read8(0, dev, 0, 0x0e);
        if config_read16(0, dev, 0, 0) == u16::MAX || header & 0x7f != 1 {
            return None;
        }
        if config_read8(0, dev, 0, 0x19) != bus {
            return None;
        }
        let mut cap = config_read8(0, dev, 0, 0x34) & 0xfc;
        for _ in 0..48 {
            if cap == 0 {
                return None;
            }
            if config_read8(0, dev, 0, cap) == CAP_PCIE {
                return Some((dev, u16::from(cap) + 0x18));
            }
            cap = config_read8(0, dev, 0, cap + 1) & 0xfc;
        }
        None
    })
}
