//! NVMe definitions from the specification: register layout and command,
//! completion and status encodings, with their sizes asserted. Plain data
//! shared by the driver and the simulated controller; nothing here touches
//! hardware or depends on the rest of the crate.
#![forbid(unsafe_code)]

pub mod command;
pub mod log;
pub mod regs;
