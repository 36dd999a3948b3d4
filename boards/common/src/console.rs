//! The serial console: a polled UART's bytes, the board's console writer
//! installed once, and the marker lines the host runner (`cargo xtask`)
//! waits for and parses.

use core::fmt;

use spin::Once;

/// A polled UART: sends one byte (giving up after a bounded wait, so that a
/// missing UART cannot hang the kernel).
pub trait Uart {
    /// Sends `byte`.
    fn write_byte(&mut self, byte: u8);
}

/// Writes `s` to `uart`, byte by byte: a board's `fmt::Write` for its UART.
pub fn write_str(uart: &mut impl Uart, s: &str) -> fmt::Result {
    for byte in s.bytes() {
        uart.write_byte(byte);
    }
    Ok(())
}

/// Writes formatted text to the board's console in one piece: the board
/// holds its UART's lock for the call, so that lines from several cores and
/// the log stay whole.
pub type Writer = fn(fmt::Arguments<'_>);

static WRITER: Once<Writer> = Once::new();

/// Makes `writer` the console (the first one installed stays). Text printed
/// before is dropped, as the UART is not set up yet.
pub fn install(writer: Writer) {
    WRITER.call_once(|| writer);
}

/// Writes `args` to the console.
pub fn print(args: fmt::Arguments<'_>) {
    if let Some(writer) = WRITER.get() {
        writer(args);
    }
}

/// Writes one marker line to the console: `@@`, the arguments, a newline.
pub fn marker(args: fmt::Arguments<'_>) {
    print(format_args!("@@{args}\n"));
}

/// Writes a marker line straight to `uart`, past the installed console
/// (whose lock the failing code may hold), after a newline that ends any
/// line cut short: for the panic handler and exception vectors.
pub fn emergency_marker(uart: &mut impl fmt::Write, args: fmt::Arguments<'_>) {
    let _ = uart.write_fmt(format_args!("\n@@{args}\n"));
}

/// Prints to the console without a newline.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::console::print(format_args!($($arg)*))
    };
}

/// Prints one machine-readable marker line: `@@` followed by the arguments.
/// The host runner (`cargo xtask`) waits for and parses these.
#[macro_export]
macro_rules! marker {
    ($($arg:tt)*) => {
        $crate::console::marker(format_args!($($arg)*))
    };
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::string::String;
    use std::sync::Mutex;

    use super::*;

    struct Bytes(std::vec::Vec<u8>);

    impl Uart for Bytes {
        fn write_byte(&mut self, byte: u8) {
            self.0.push(byte);
        }
    }

    static SEEN: Mutex<String> = Mutex::new(String::new());

    fn to_seen(args: fmt::Arguments<'_>) {
        use core::fmt::Write as _;
        let _ = SEEN.lock().unwrap().write_fmt(args);
    }

    #[test]
    fn a_marker_is_one_line_after_two_at_signs() {
        // Other tests print too (the console is one for the process), so
        // look for this test's own lines.
        install(to_seen);
        crate::marker!("RESULT ready={}", 3);
        crate::print!("plain|");
        let seen = SEEN.lock().unwrap().clone();
        assert!(seen.contains("@@RESULT ready=3\n"), "{seen:?}");
        assert!(seen.contains("plain|"), "{seen:?}");
        let mut uart = Bytes(std::vec::Vec::new());
        write_str(&mut uart, "ok").unwrap();
        assert_eq!(uart.0, b"ok");
    }

    #[test]
    fn an_emergency_marker_starts_on_a_line_of_its_own() {
        let mut line = String::from("half a line");
        emergency_marker(&mut line, format_args!("FAIL panic: {}", "why"));
        assert_eq!(line, "half a line\n@@FAIL panic: why\n");
    }
}
