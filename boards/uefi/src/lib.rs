//! bare-nvme as a UEFI driver: a driver binding that takes NVMe functions
//! from the firmware's PCI bus driver and publishes each namespace as
//! `EFI_BLOCK_IO_PROTOCOL` with an NVMe device path, so the firmware's
//! partition and FAT drivers mount it.
//!
//! The driver image (`src/main.rs`) installs the binding; the scenario
//! application (`src/bin/scenarios/`) loads it, hands it the controllers
//! and checks what the firmware's file system reads and writes through it.

#![no_std]

extern crate alloc;

pub mod binding;
pub mod clock;
pub mod console;
pub mod device;
pub mod efi;
pub mod link;
pub mod namespace;
pub mod pci_io;
pub mod platform;
pub mod requests;

use uefi_raw::{guid, Guid};

/// `EFI_DEVICE_PATH_PROTOCOL_GUID`.
pub const DEVICE_PATH_GUID: Guid = guid!("09576e91-6d3f-11d2-8e39-00a0c969723b");

/// The driver's own tag: on a controller it serves (interface: its state),
/// and on each namespace handle it publishes (so a caller can tell this
/// driver's BlockIo from the firmware's).
pub const TAG_GUID: Guid = guid!("6b6e7662-6172-4e76-9d65-756566690001");
