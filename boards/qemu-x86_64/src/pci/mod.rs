//! Configuration space for the board: the driver's accessors (port I/O, ECAM
//! found through the q35 PCIEXBAR), small register helpers, and a read-only
//! bus walker that shows what firmware left behind.

mod ecam;
mod registers;
pub mod scan;

pub use bare_nvme::pci::access::{Ecam, PortIo};
pub use ecam::{ecam_access, find_ecam, EcamWindow};
pub use registers::*;

use bare_nvme_board_common::counters;
use pci_types::{ConfigRegionAccess, PciAddress};

use spin::Once;

/// The configuration accessor handed to the driver: ECAM when the chipset
/// has it enabled, else port I/O. A copyable reference to an accessor that
/// lives for the whole run, so the driver can give each controller its own.
#[derive(Clone, Copy)]
pub enum Access {
    /// Memory-mapped configuration space.
    Ecam(&'static Ecam),
    /// The legacy CF8/CFC mechanism.
    Port(&'static PortIo),
}

impl Access {
    /// Which mechanism, for the log.
    pub fn name(&self) -> &'static str {
        match self {
            Access::Ecam(_) => "ECAM",
            Access::Port(_) => "port I/O",
        }
    }
}

impl ConfigRegionAccess for Access {
    unsafe fn read(&self, address: PciAddress, offset: u16) -> u32 {
        counters::count_config_read();
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe {
            match self {
                Access::Ecam(e) => e.read(address, offset),
                Access::Port(p) => p.read(address, offset),
            }
        }
    }

    unsafe fn write(&self, address: PciAddress, offset: u16, value: u32) {
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe {
            match self {
                Access::Ecam(e) => e.write(address, offset, value),
                Access::Port(p) => p.write(address, offset, value),
            }
        }
    }
}

static DRIVER_ECAM: Once<Option<Ecam>> = Once::new();
static DRIVER_PORT: Once<PortIo> = Once::new();

/// The driver's accessor: ECAM over `window` when there is one, else port I/O.
pub fn driver_access(window: Option<EcamWindow>) -> Access {
    let ecam = DRIVER_ECAM.call_once(|| window.and_then(ecam_access));
    match ecam {
        Some(e) => Access::Ecam(e),
        None => Access::Port(DRIVER_PORT.call_once(port_io)),
    }
}

/// The board's own configuration accessor type (the scenarios' and the
/// hand's, never the driver's).
pub type BoardConfig = PortIo;

/// A configuration accessor of its own for a component of the board.
pub fn board_config() -> BoardConfig {
    port_io()
}

/// Host bridge facts for the driver: with `reassign=1` on the command line
/// the driver assigns every bus number, window and BAR itself, inside q35's
/// 32-bit PCI hole above the ECAM window (firmware's own work is ignored).
pub fn host_config(
    args: &bare_nvme_board_common::cmdline::Args,
    config: &mut bare_nvme::DriverConfig,
) {
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
    // exist (the driver's, the hand's, the scenario's), each locking only
    // itself, but configuration cycles run on core 0 only (jobs on other
    // cores do not make them, see `smp`) and no core takes interrupts, so no
    // address/data pair is ever interleaved with another.
    unsafe { PortIo::new() }
}
