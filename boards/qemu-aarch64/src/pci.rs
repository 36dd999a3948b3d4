//! Configuration space for the board: ECAM from the device tree (one
//! accessor for the driver, one of the board's own) and the host windows
//! handed to the driver. The register helpers and the bus walk are the
//! shared ones.

pub use bare_nvme::pci::access::Ecam;
pub use bare_nvme_board_common::pci::scan;

use core::ptr::NonNull;

use bare_nvme::{DriverConfig, PhysAddr};
use bare_nvme_board_common::board::Config;
use bare_nvme_board_common::cmdline::Args;
use spin::Once;

use crate::dtb::Machine;

static MACHINE: Once<Machine> = Once::new();
static DRIVER_ECAM: Once<Ecam> = Once::new();
static OWN_ECAM: Once<Ecam> = Once::new();

/// Remembers the host bridge the device tree describes.
pub fn init(machine: Machine) {
    MACHINE.call_once(|| machine);
}

/// What the device tree says (after [`init`]).
pub fn machine() -> &'static Machine {
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

/// The driver's accessor.
pub fn driver_config() -> Config {
    DRIVER_ECAM.call_once(ecam)
}

/// The board's own accessor (the scenarios' and the hand's).
pub fn own_config() -> Config {
    OWN_ECAM.call_once(ecam)
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
