//! The `log` backend: one line per record on COM1, stamped with the clock.

use core::fmt::Write as _;

use log::{LevelFilter, Log, Metadata, Record};

use crate::clock;
use crate::serial::SERIAL;

struct SerialLogger;

static LOGGER: SerialLogger = SerialLogger;

impl Log for SerialLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let nanos = clock::now().as_nanos();
        let mut serial = SERIAL.lock();
        let _ = writeln!(
            serial,
            "[{:4}.{:06}] {:5} {}: {}",
            nanos / 1_000_000_000,
            (nanos / 1_000) % 1_000_000,
            record.level(),
            record.target(),
            record.args()
        );
    }

    fn flush(&self) {}
}

/// Installs the logger at `level`.
pub fn init(level: LevelFilter) {
    // Fails only when a logger is already installed, which is harmless.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

/// Parses a level name from the command line (`log=debug`).
pub fn parse_level(name: &str) -> Option<LevelFilter> {
    Some(match name {
        "off" => LevelFilter::Off,
        "error" => LevelFilter::Error,
        "warn" => LevelFilter::Warn,
        "info" => LevelFilter::Info,
        "debug" => LevelFilter::Debug,
        "trace" => LevelFilter::Trace,
        _ => return None,
    })
}
