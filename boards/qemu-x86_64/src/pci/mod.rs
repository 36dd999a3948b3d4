//! Configuration space for the board: the driver's accessor (ECAM found
//! through the q35 PCIEXBAR, else port I/O), the board's own port I/O
//! accessor and the host window handed to the driver. The register helpers
//! and the bus walk are the shared ones.

mod ecam;

pub use bare_nvme::pci::access::{Ecam, PortIo};
pub use bare_nvme_board_common::pci::{read32, scan, NO_DEVICE};
pub use ecam::{ecam_access, find_ecam, EcamWindow};

use bare_nvme_board_common::board::Config;
use bare_nvme_board_common::cmdline::Args;
use spin::Once;

static DRIVER_ECAM: Once<Option<Ecam>> = Once::new();
static DRIVER_PORT: Once<PortIo> = Once::new();
static OWN_PORT: Once<PortIo> = Once::new();

/// Picks the driver's accessor once: ECAM over `window` when there is one,
/// else port I/O.
pub fn init_driver_access(window: Option<EcamWindow>) {
    DRIVER_ECAM.call_once(|| window.and_then(ecam_access));
}

/// The driver's accessor and its name (after [`init_driver_access`]).
pub fn driver_access() -> (Config, &'static str) {
    match DRIVER_ECAM.get().and_then(Option::as_ref) {
        Some(e) => (e, "ECAM"),
        None => (DRIVER_PORT.call_once(port_io), "port I/O"),
    }
}

/// The board's own accessor (the scenarios' and the hand's).
pub fn own_config() -> Config {
    OWN_PORT.call_once(port_io)
}

/// Host bridge facts for the driver: with `reassign=1` on the command line
/// the driver assigns every bus number, window and BAR itself, inside q35's
/// 32-bit PCI hole above the ECAM window (firmware's own work is ignored).
pub fn host_config(args: &Args, config: &mut bare_nvme::DriverConfig) {
    if args.get("reassign") == Some("1") {
        config.reassign = true;
        config.root_window = Some((bare_nvme::PhysAddr::new(Q35_HOLE.0), Q35_HOLE.1));
    }
}

/// q35's 32-bit window for PCI memory with 512 MiB of RAM: from the end of
/// the ECAM window (0xb000_0000, 256 MiB) to below the IOAPIC.
const Q35_HOLE: (u64, u64) = (0xC000_0000, 0xFEC0_0000 - 0xC000_0000);

/// A port I/O accessor of its own for a component of the board.
pub fn port_io() -> PortIo {
    // SAFETY: q35 implements configuration mechanism #1. Several accessors
    // exist (the driver's, the board's own), each locking only itself, but
    // configuration cycles run on core 0 only (jobs on other cores do not
    // make them, see `smp`) and no core takes interrupts, so no
    // address/data pair is ever interleaved with another.
    unsafe { PortIo::new() }
}
