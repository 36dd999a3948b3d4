//! Scenarios: one kernel image, the command line picks what it does.
//!
//! Most are the shared ones (`bare_nvme_board_common::scenarios`, written
//! against the board trait); `boot` and the second-core scenarios are this
//! board's own. To add one: write a module with a `pub const SCENARIO` and
//! list it in [`ALL`].

mod boot;
mod smp;
mod smp_io;
mod smp_pull;

pub use bare_nvme_board_common::scenarios::*;

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
