//! Ending the run: QEMU's isa-debug-exit device (port 0xf4).
//!
//! Writing `v` makes QEMU exit with status `(v << 1) | 1`. The host runner
//! maps [`SUCCESS`] (status 33) to success; everything else, including a
//! triple fault (status 0 with `-no-reboot`), is a failure.

use x86_64::instructions::port::Port;

const DEBUG_EXIT_PORT: u16 = 0xf4;

/// The code for a passed run (QEMU exit status 33).
pub const SUCCESS: u32 = 0x10;
/// The code for a failed run (QEMU exit status 35).
pub const FAILURE: u32 = 0x11;

/// Ends the virtual machine with `code`.
pub fn exit_qemu(code: u32) -> ! {
    // SAFETY: the isa-debug-exit port; the write ends the machine.
    unsafe { Port::new(DEBUG_EXIT_PORT).write(code) };
    // Without the device (a different machine configuration) just stop.
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}
