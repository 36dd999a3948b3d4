//! The `log` backend on the serial console, stamped with the clock (the
//! boards' shared backend, given this board's console and clock).

use core::fmt::Write as _;

pub use bare_nvme_board_common::logger::parse_level;
use bare_nvme_board_common::logger::{self, Sink};
use log::LevelFilter;

use crate::clock;
use crate::serial::SERIAL;

/// Installs the logger at `level`.
pub fn init(level: LevelFilter) {
    let sink = Sink {
        write_line: |line| {
            let _ = SERIAL.lock().write_fmt(line);
        },
        now: || core::time::Duration::from_nanos(clock::now().as_nanos()),
    };
    logger::init(level, sink);
}
