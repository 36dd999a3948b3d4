//! Scenarios: one kernel image, the command line picks what it does. The
//! driver scenarios are the shared ones (`bare_nvme_board_common::scenarios`,
//! written against the board trait); `boot` is this board's own.

mod boot;

pub use bare_nvme_board_common::scenarios::*;

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
