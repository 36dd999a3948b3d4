//! Typed configuration space access: narrow reads, and writes that leave
//! RW1C status bits alone.

mod pci_common;

use bare_nvme::pci::config::{Command, ConfigSpace, OtherHalf, Status, CLASS, PROG_IF, STATUS};
use bare_nvme_sim::{FunctionId, FunctionSpec};
use pci_common::Fabric;
use pci_types::PciAddress;

fn one_function() -> (Fabric, FunctionId, PciAddress) {
    let pci = Fabric::new();
    let node = pci.add_root(
        0,
        0,
        FunctionSpec::endpoint(0x1234, 0x5678, [0x01, 0x08, 0x02]),
    );
    (pci, node, PciAddress::new(0, 0, 0, 0))
}

#[test]
fn narrow_reads_pick_the_right_bytes() {
    let (pci, _, address) = one_function();
    let config = ConfigSpace::new(&pci, address);
    assert_eq!(config.vendor_id(), 0x1234);
    assert_eq!(config.device_id(), 0x5678);
    assert_eq!(config.class_code(), (0x01, 0x08, 0x02));
    assert_eq!(config.read8(CLASS), 0x01);
    assert_eq!(config.read8(PROG_IF), 0x02);
    assert_eq!(config.read16(0x01), u16::MAX, "misaligned 16-bit read");
    assert_eq!(config.read32(0x02), u32::MAX, "misaligned dword read");
    assert_eq!(config.read32(4096), u32::MAX, "past the space");
}

#[test]
fn writing_command_does_not_clear_pending_status_bits() {
    let (pci, node, address) = one_function();
    let pending = Status::RECEIVED_MASTER_ABORT | Status::DETECTED_PARITY_ERROR;
    pci.raise(node, STATUS, pending.bits());
    let config = ConfigSpace::new(&pci, address);
    config.write_command(Command::MEMORY | Command::BUS_MASTER);
    assert_eq!(config.command(), Command::MEMORY | Command::BUS_MASTER);
    assert!(config.status().contains(pending), "{:?}", config.status());

    config.update_command(Command::INTX_DISABLE, Command::BUS_MASTER);
    assert_eq!(config.command(), Command::MEMORY | Command::INTX_DISABLE);
    assert!(config.status().contains(pending));
}

#[test]
fn writing_the_high_half_keeps_the_low_half() {
    let (pci, _, address) = one_function();
    let config = ConfigSpace::new(&pci, address);
    config.write_command(Command::MEMORY);
    // Status is RO/RW1C; the low half (Command) must survive the write.
    config.write16(
        STATUS,
        Status::RECEIVED_MASTER_ABORT.bits(),
        OtherHalf::Keep,
    );
    assert_eq!(config.command(), Command::MEMORY);
}

#[test]
fn absent_function_reads_all_ones() {
    let (pci, _, _) = one_function();
    let config = ConfigSpace::new(&pci, PciAddress::new(0, 0, 1, 0));
    assert!(!config.is_present());
    assert_eq!(config.read32(0), u32::MAX);
    assert_eq!(config.header_type(), 0xFF);
}
