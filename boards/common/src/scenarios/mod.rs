//! The scenarios every board runs, written against [`crate::Board`].
//!
//! A scenario is a function from the [`Context`] to an [`Outcome`]. It
//! reports progress with markers (`marker!`): `@@READY` when the host may
//! start its steps, `@@PHASE name` at points the host may wait for,
//! `@@RESULT key=value ...` for numbers and facts. The kernel prints
//! `@@PASS` or `@@FAIL reason` after the scenario returns and ends the
//! machine. A board lists these beside its own in its scenario table.

pub mod bench;
pub mod fs;
pub mod health;
pub mod io;
pub mod plug;
pub mod slots;
pub mod tick_cost;

mod shared;

pub use shared::*;

use crate::cmdline::Args;
use crate::pci::{Access, BoardConfig};
use crate::platform::QemuPlatform;

/// Everything a scenario may use.
pub struct Context {
    /// The kernel command line.
    pub args: Args,
    /// The driver's view of the machine.
    pub platform: QemuPlatform,
    /// The board's own configuration access (the scenarios' and the
    /// hand's, never the driver's).
    pub config: BoardConfig,
    /// The driver's configuration accessor.
    pub access: Access,
}

impl Context {
    /// The context for a board that has been installed
    /// ([`crate::board::install`]).
    pub fn new(args: Args) -> Self {
        Self {
            args,
            platform: QemuPlatform,
            config: crate::pci::board_config(),
            access: crate::pci::driver_access(),
        }
    }
}
