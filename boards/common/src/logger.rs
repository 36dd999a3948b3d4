//! The `log` backend: one line per record on the board's console (see
//! [`console`](crate::console)), stamped with the board's clock.

use core::time::Duration;

use log::{LevelFilter, Log, Metadata, Record};
use spin::Once;

use crate::cmdline::Args;
use crate::console;

struct SerialLogger;

static LOGGER: SerialLogger = SerialLogger;
/// The board's clock: time since boot.
static NOW: Once<fn() -> Duration> = Once::new();

impl Log for SerialLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let Some(now) = NOW.get() else {
            return;
        };
        let nanos = now().as_nanos();
        console::print(format_args!(
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

/// Installs the logger at `level`, stamping lines with `now` (the first
/// clock installed stays).
pub fn init(level: LevelFilter, now: fn() -> Duration) {
    NOW.call_once(|| now);
    // Fails only when a logger is already installed, which is harmless.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

/// Sets the level the command line names (`log=debug`), if it names one.
pub fn follow(args: &Args) {
    if let Some(level) = args.get("log").and_then(parse_level) {
        log::set_max_level(level);
    }
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
