//! What the QEMU boards share, whatever their CPU: the serial console's
//! line discipline (marker lines the host runner parses), the `log`
//! backend that stamps each line with the board's clock, and the scenario
//! table and runner. Each board brings its UART and clock.
#![no_std]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod console;
pub mod logger;
pub mod scenario;
