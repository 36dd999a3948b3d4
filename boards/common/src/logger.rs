//! The `log` backend: one line per record on the board's console, stamped
//! with the board's clock.

use core::fmt;
use core::time::Duration;

use log::{LevelFilter, Log, Metadata, Record};
use spin::Once;

/// Where the log goes: the board's console and clock.
#[derive(Clone, Copy)]
pub struct Sink {
    /// Writes one whole line (the board holds its console's lock while it
    /// writes, so that lines stay whole).
    pub write_line: fn(fmt::Arguments<'_>),
    /// Time since boot.
    pub now: fn() -> Duration,
}

struct SerialLogger;

static LOGGER: SerialLogger = SerialLogger;
static SINK: Once<Sink> = Once::new();

impl Log for SerialLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let Some(sink) = SINK.get() else {
            return;
        };
        let nanos = (sink.now)().as_nanos();
        (sink.write_line)(format_args!(
            "[{:4}.{:06}] {:5} {}: {}\n",
            nanos / 1_000_000_000,
            (nanos / 1_000) % 1_000_000,
            record.level(),
            record.target(),
            record.args()
        ));
    }

    fn flush(&self) {}
}

/// Installs the logger at `level`, writing to `sink` (the first sink
/// installed stays).
pub fn init(level: LevelFilter, sink: Sink) {
    SINK.call_once(|| sink);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_names_parse() {
        assert_eq!(parse_level("debug"), Some(LevelFilter::Debug));
        assert_eq!(parse_level("loud"), None);
    }
}
