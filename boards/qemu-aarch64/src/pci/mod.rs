//! Configuration space for the board: ECAM from the device tree, the
//! driver's counting accessor, the host windows handed to the driver, and
//! (shared with the x86 board) register helpers and the read-only bus walk.

#[path = "../../../qemu-x86_64/src/pci/registers.rs"]
mod registers;
#[path = "../../../qemu-x86_64/src/pci/scan.rs"]
pub mod scan;

pub use bare_nvme::pci::access::Ecam;
pub use registers::*;

use core::ptr::NonNull;

use bare_nvme::{DriverConfig, PhysAddr};
use bare_nvme_board_common::cmdline::Args;
use bare_nvme_board_common::counters;
use pci_types::{ConfigRegionAccess, PciAddress};
use spin::Once;

use crate::dtb::Machine;

static MACHINE: Once<Machine> = Once::new();
static DRIVER_ECAM: Once<Ecam> = Once::new();

/// Remembers the host bridge the device tree describes.
pub fn init(machine: Machine) {
    MACHINE.call_once(|| machine);
}

fn machine() -> &'static Machine {
    MACHINE
        .get()
        .expect("pci::init runs before any configuration access")
}

/// An ECAM accessor of its own over the device tree's window.
fn ecam() -> Ecam {
    let m = machine();
    let base = NonNull::new(m.ecam.0 as *mut u8).expect("ECAM base is not 0");
    // SAFETY: the window is the host bridge's ECAM from the device tree,
    // identity-mapped as device memory (`paging`) and covering the bus range
    // given; nothing else maps it.
    unsafe { Ecam::new(base, 0, m.buses.0, m.buses.1) }
}

/// The configuration accessor handed to the driver: ECAM, with reads
/// counted. Copyable, over an accessor that lives for the whole run.
#[derive(Clone, Copy)]
pub struct Access(&'static Ecam);

impl Access {
    /// Which mechanism, for the log.
    pub fn name(&self) -> &'static str {
        "ECAM"
    }
}

impl ConfigRegionAccess for Access {
    unsafe fn read(&self, address: PciAddress, offset: u16) -> u32 {
        counters::count_config_read();
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { self.0.read(address, offset) }
    }

    unsafe fn write(&self, address: PciAddress, offset: u16, value: u32) {
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { self.0.write(address, offset, value) }
    }
}

/// The driver's accessor.
pub fn driver_access() -> Access {
    Access(DRIVER_ECAM.call_once(ecam))
}

/// The board's own configuration accessor type (the scenarios' and the
/// hand's, never the driver's).
pub type BoardConfig = Ecam;

/// A configuration accessor of its own for a component of the board.
pub fn board_config() -> BoardConfig {
    ecam()
}

/// Host bridge facts for the driver: nothing ran before the kernel, so the
/// driver numbers the buses and assigns every window and BAR itself inside
/// the device tree's windows.
pub fn host_config(args: &Args, config: &mut DriverConfig) {
    let m = machine();
    config.root_window = m.memory.map(|(base, size)| (PhysAddr::new(base), size));
    config.prefetchable_window = m
        .prefetchable
        .map(|(base, size)| (PhysAddr::new(base), size));
    config.reassign = args.get("reassign") == Some("1");
}
