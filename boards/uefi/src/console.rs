//! The serial console (COM1 on x86, the PL011 on aarch64 `virt`), written
//! directly, and the `log` backend on it.
//!
//! Not `ConOut`: the firmware's terminal wraps text in escape sequences, and
//! the scenarios read whole marker lines (`@@RESULT ...`) off the serial
//! port. The firmware initialised the UART; both images only send.

use core::fmt::{self, Write};

#[cfg(target_arch = "x86_64")]
mod uart {
    //! COM1 through port I/O.

    const COM1: u16 = 0x3f8;
    /// Line status register: transmit holding register empty.
    const LSR_THR_EMPTY: u8 = 0x20;
    /// Polls of the line status before a byte is sent anyway (a UART that
    /// never drains must not hang the driver).
    const MAX_POLLS: u32 = 100_000;

    fn outb(port: u16, value: u8) {
        // SAFETY: COM1's data port; writing it sends a byte and touches no
        // memory.
        unsafe {
            core::arch::asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack))
        }
    }

    fn inb(port: u16) -> u8 {
        let value: u8;
        // SAFETY: COM1's line status register; reading it has no side effect.
        unsafe {
            core::arch::asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack))
        }
        value
    }

    /// Sends one byte.
    pub fn send(b: u8) {
        for _ in 0..MAX_POLLS {
            if inb(COM1 + 5) & LSR_THR_EMPTY != 0 {
                break;
            }
        }
        outb(COM1, b);
    }
}

#[cfg(target_arch = "aarch64")]
mod uart {
    //! The PL011 of QEMU `virt` (UART0), which the firmware also uses.

    use core::ptr::NonNull;

    use bare_nvme::{MmioRegisters, RegisterAccess};

    /// UART0 of QEMU `virt`, identity mapped as device memory by the
    /// firmware (its own console).
    const PL011: usize = 0x0900_0000;
    /// Data register.
    const DR: usize = 0x00;
    /// Flag register and its transmit-FIFO-full bit.
    const FR: usize = 0x18;
    const FR_TXFF: u32 = 1 << 5;
    /// Polls before a byte is sent anyway.
    const MAX_POLLS: u32 = 100_000;

    fn regs() -> Option<MmioRegisters> {
        let base = NonNull::new(PL011 as *mut u8)?;
        // SAFETY: the PL011's register page, mapped by the firmware; single
        // 32-bit accesses are what it expects.
        Some(unsafe { MmioRegisters::new(base, 0x1000) })
    }

    /// Sends one byte.
    pub fn send(b: u8) {
        let Some(regs) = regs() else { return };
        for _ in 0..MAX_POLLS {
            if regs.read32(FR) & FR_TXFF == 0 {
                break;
            }
        }
        regs.write32(DR, u32::from(b));
    }
}

/// The console as a `fmt::Write`.
pub struct Com1;

impl Write for Com1 {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                uart::send(b'\r');
            }
            uart::send(b);
        }
        Ok(())
    }
}

/// Prints a line (`format_args!`) on the console.
pub fn line(args: fmt::Arguments<'_>) {
    let _ = Com1.write_fmt(args);
    let _ = Com1.write_str("\n");
}

/// Prints a line on the serial console, like `println!`.
#[macro_export]
macro_rules! say {
    ($($t:tt)*) => { $crate::console::line(format_args!($($t)*)) };
}

struct Logger;

impl log::Log for Logger {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::Level::Info
    }

    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            line(format_args!("[{}] {}", r.level(), r.args()));
        }
    }

    fn flush(&self) {}
}

static LOGGER: Logger = Logger;

/// Sends `log` records (info and above) to the console.
pub fn init_log() {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Info);
}
