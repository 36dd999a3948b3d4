//! NVMe definitions from the specification: register layout, command,
//! completion and status encodings, identify structures and log pages, with
//! their sizes asserted. Plain data
//! shared by the driver and the simulated controller; nothing here touches
//! hardware or depends on the rest of the crate.
#![forbid(unsafe_code)]

pub mod admin_data;
pub mod bits;
pub mod command;
pub mod identify;
pub mod log;
pub mod regs;
