//! Configuration space as the shared code sees it: the driver's counting
//! accessor over the board's, the board's own accessor and host windows,
//! small register helpers and a read-only bus walk.

mod registers;
pub mod scan;

pub use registers::*;

use bare_nvme::DriverConfig;
use pci_types::{ConfigRegionAccess, PciAddress};

use crate::board::{board, Config};
use crate::cmdline::Args;
use crate::counters;

/// The configuration accessor handed to the driver: the board's, with reads
/// counted (see [`counters`]). Copyable, over an accessor that lives for the
/// whole run, so the driver can give each controller its own.
#[derive(Clone, Copy)]
pub struct Access(Config);

impl Access {
    /// Which mechanism, for the log.
    pub fn name(&self) -> &'static str {
        board().driver_config_name()
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
    Access(board().driver_config())
}

/// The board's own configuration accessor type (the scenarios' and the
/// hand's, never the driver's).
pub type BoardConfig = Config;

/// The board's own configuration accessor.
pub fn board_config() -> BoardConfig {
    board().own_config()
}

/// Host bridge facts for the driver (see [`crate::Board::host_config`]).
pub fn host_config(args: &Args, config: &mut DriverConfig) {
    board().host_config(args, config);
}
