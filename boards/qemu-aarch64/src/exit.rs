//! Ending the run: semihosting `SYS_EXIT` carries an exit status to the
//! host (QEMU runs with `-semihosting`); without it, PSCI `SYSTEM_OFF`
//! through the hypervisor call QEMU implements for `virt` at EL1.

use smccc::{psci, Hvc};

/// The code for a passed run (QEMU exit status 33, as on x86).
pub const SUCCESS: u32 = 33;
/// The code for a failed run.
pub const FAILURE: u32 = 35;

/// Semihosting operation SYS_EXIT; on AArch64 its parameter block holds
/// the reason and the status.
const SYS_EXIT: u64 = 0x18;
/// ADP_Stopped_ApplicationExit.
const APPLICATION_EXIT: u64 = 0x20026;

/// Ends the virtual machine with `code`.
pub fn exit_qemu(code: u32) -> ! {
    let block = [APPLICATION_EXIT, u64::from(code)];
    // SAFETY: the semihosting trap (HLT #0xF000) reads the two-word block,
    // which lives across the call; with semihosting enabled the machine ends
    // here. Without it QEMU treats HLT as undefined, which the exception
    // vectors turn into the PSCI call below.
    unsafe {
        core::arch::asm!(
            "hlt #0xf000",
            inout("x0") SYS_EXIT => _,
            in("x1") block.as_ptr(),
            options(nostack)
        );
    }
    power_off()
}

/// PSCI SYSTEM_OFF (status 0 on the host), then wait forever.
pub fn power_off() -> ! {
    let _ = psci::system_off::<Hvc>();
    loop {
        aarch64_cpu::asm::wfe();
    }
}
