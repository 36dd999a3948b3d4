//! Scenarios: one kernel image, the command line picks what it does.
//!
//! A scenario is a function from the [`Board`] to an [`Outcome`]. It reports
//! progress with markers (`marker!`, from `boards/common`): `@@READY` when
//! the host may start its steps, `@@PHASE name` at points the host may wait
//! for, `@@RESULT key=value ...` for numbers and facts. The kernel prints
//! `@@PASS` or `@@FAIL reason` after the scenario returns and ends the
//! machine. To add one: write a module with a `pub const SCENARIO` and list
//! it in [`ALL`].

mod bench;
mod boot;
mod fs;
mod health;
mod io;
mod plug;
mod slots;
mod smp;
mod smp_io;
mod smp_pull;
mod tick_cost;

mod common;

pub use common::*;

use bare_nvme_board_common::cmdline::Args;

use crate::pci::{Access, BoardConfig, EcamWindow};
use crate::platform::QemuPlatform;
use crate::start_info::BootInfo;

/// Everything a scenario may use.
pub struct Board {
    /// The kernel command line.
    pub args: Args,
    /// What the loader handed over.
    pub boot: &'static BootInfo,
    /// The driver's view of the machine.
    pub platform: QemuPlatform,
    /// Configuration access for the driver and the scenario (the hand has
    /// its own).
    pub config: BoardConfig,
    /// The driver's configuration accessor.
    pub access: Access,
    /// ECAM, if the chipset has it enabled.
    pub ecam: Option<EcamWindow>,
    /// Calibrated TSC frequency.
    pub tsc_hz: u64,
}

/// Every scenario the kernel knows.
pub const ALL: &[Scenario] = &[
    boot::SCENARIO,
    health::SCENARIO,
    io::SCENARIO,
    plug::SCENARIO,
    slots::SCENARIO,
    bench::SCENARIO,
    fs::SCENARIO,
    tick_cost::SCENARIO,
    smp::SCENARIO,
    smp_io::SCENARIO,
    smp_pull::SCENARIO,
];
