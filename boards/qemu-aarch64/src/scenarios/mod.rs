//! Scenarios: one kernel image, the command line picks what it does. The
//! driver scenarios are the x86 board's, compiled unchanged against this
//! board's modules of the same names; `boot` is this board's own.

#[path = "../../../qemu-x86_64/src/scenarios/bench/mod.rs"]
mod bench;
#[path = "../../../qemu-x86_64/src/scenarios/common.rs"]
mod common;
#[path = "../../../qemu-x86_64/src/scenarios/fs.rs"]
mod fs;
#[path = "../../../qemu-x86_64/src/scenarios/health.rs"]
mod health;
#[path = "../../../qemu-x86_64/src/scenarios/io.rs"]
mod io;
#[path = "../../../qemu-x86_64/src/scenarios/plug/mod.rs"]
mod plug;
#[path = "../../../qemu-x86_64/src/scenarios/slots.rs"]
mod slots;
#[path = "../../../qemu-x86_64/src/scenarios/tick_cost.rs"]
mod tick_cost;

mod boot;

pub use common::*;

use bare_nvme_board_common::cmdline::Args;

use crate::dtb::Machine;
use crate::pci::{Access, BoardConfig};
use crate::platform::QemuPlatform;

/// Everything a scenario may use.
pub struct Board {
    /// The kernel command line.
    pub args: Args,
    /// What the device tree says.
    pub machine: Machine,
    /// The driver's view of the machine.
    pub platform: QemuPlatform,
    /// Configuration access for the scenario (the hand has its own).
    pub config: BoardConfig,
    /// The driver's configuration accessor.
    pub access: Access,
    /// Generic timer frequency.
    pub timer_hz: u64,
}

/// Every scenario the kernel knows.
pub const ALL: &[Scenario] = &[
    boot::SCENARIO,
    io::SCENARIO,
    plug::SCENARIO,
    slots::SCENARIO,
    health::SCENARIO,
    fs::SCENARIO,
    bench::SCENARIO,
    tick_cost::SCENARIO,
];
