//! The serial console: a polled UART's bytes, and the marker lines the host
//! runner (`cargo xtask`) waits for and parses.

use core::fmt;

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

/// Writes one marker line: `@@`, the arguments, a newline.
pub fn marker(out: &mut impl fmt::Write, args: fmt::Arguments<'_>) {
    let _ = out.write_str("@@");
    let _ = out.write_fmt(args);
    let _ = out.write_str("\n");
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::string::String;

    use super::*;

    struct Bytes(std::vec::Vec<u8>);

    impl Uart for Bytes {
        fn write_byte(&mut self, byte: u8) {
            self.0.push(byte);
        }
    }

    #[test]
    fn a_marker_is_one_line_after_two_at_signs() {
        let mut line = String::new();
        marker(&mut line, format_args!("RESULT ready={}", 3));
        assert_eq!(line, "@@RESULT ready=3\n");
        let mut uart = Bytes(std::vec::Vec::new());
        write_str(&mut uart, "ok").unwrap();
        assert_eq!(uart.0, b"ok");
    }
}
