//! What the QEMU boards share, whatever their CPU: the kernel command line,
//! the serial console (marker lines the host runner parses, `print!` and
//! `marker!`), the `log` backend that stamps each line with the board's
//! clock, the counts of the driver's reads, and the scenario table, runner
//! and the report of how a scenario ended. Each board brings its UART and clock.
#![no_std]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod cmdline;
pub mod console;
pub mod counters;
pub mod logger;
pub mod scenario;
