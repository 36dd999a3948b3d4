//! An idle core halts instead of spinning; a wake-up IPI resumes it.
//!
//! Under multi-threaded TCG every spinning core keeps a host thread busy, so
//! a core without a job halts (`sti; hlt`). The interrupt shadow of `sti`
//! makes the pair atomic: an IPI sent after the core last looked at its
//! mailbox is taken while it is halted, never before, so no wake-up is lost.
//! The handler is a bare `iretq`; the idle loop itself acknowledges (EOI)
//! after each wake. Interrupts are enabled only inside the `hlt`.
//!
//! Started cores get an IDT with the wake-up and the spurious vector only
//! (the boot core takes no interrupts and has none): any other vector or
//! an exception still ends the machine as on the boot core.

use core::sync::atomic::Ordering;

use x86_64::instructions::tables::lidt;
use x86_64::structures::DescriptorTablePointer;
use x86_64::VirtAddr;

use super::lapic::{Lapic, LapicError, SPURIOUS_VECTOR};

/// Vector of the wake-up IPI.
pub const WAKE_VECTOR: u8 = 0xF0;

/// Kernel code segment (the flat GDT of `smp_ap_entry`).
const CODE_SELECTOR: u64 = 0x08;
/// Present, DPL 0, 64-bit interrupt gate.
const INTERRUPT_GATE: u64 = 0x8E;

core::arch::global_asm!(
    ".pushsection .text.smp_wake, \"ax\"",
    ".global smp_wake_handler",
    "smp_wake_handler:",
    "iretq",
    ".popsection",
);

extern "C" {
    static smp_wake_handler: u8;
}

/// 256 gates of 16 bytes.
#[repr(C, align(16))]
struct Idt([[u64; 2]; 256]);

static IDT: spin::Once<Idt> = spin::Once::new();

fn build() -> Idt {
    let handler = core::ptr::addr_of!(smp_wake_handler) as u64;
    let gate = [
        (handler & 0xFFFF)
            | CODE_SELECTOR << 16
            | INTERRUPT_GATE << 40
            | ((handler >> 16) & 0xFFFF) << 48,
        handler >> 32,
    ];
    let mut idt = Idt([[0; 2]; 256]);
    idt.0[usize::from(WAKE_VECTOR)] = gate;
    idt.0[SPURIOUS_VECTOR as usize] = gate;
    idt
}

/// Prepares the calling (started) core for [`sleep_until`]: its IDT and
/// its local APIC enabled.
pub fn prepare(lapic: &Lapic) {
    let idt = IDT.call_once(build);
    let pointer = DescriptorTablePointer {
        limit: (core::mem::size_of::<Idt>() - 1) as u16,
        base: VirtAddr::new(core::ptr::addr_of!(idt.0) as u64),
    };
    // SAFETY: the IDT is a static that lives for the whole run; its gates
    // point at `smp_wake_handler` in the kernel code segment; interrupts
    // stay disabled except inside `sleep_until`'s `hlt`.
    unsafe { lidt(&pointer) };
    lapic.enable();
}

/// Halts the calling core until `ready` holds (checked with interrupts
/// off, before each halt).
pub fn sleep_until(lapic: &Lapic, ready: impl Fn() -> bool) {
    while !ready() {
        // SAFETY: `prepare` loaded an IDT whose wake-up and spurious gates
        // return at once; the shadow of `sti` keeps any interrupt until `hlt`
        // halted, and `cli` closes the window again. Not `nomem`: the asm
        // orders the mailbox loads around the halt.
        unsafe { core::arch::asm!("sti", "hlt", "cli", options(nostack)) };
        lapic.end_of_interrupt();
    }
}

/// Sends the wake-up IPI to `apic_id`.
pub fn wake(lapic: &Lapic, apic_id: u8) -> Result<(), LapicError> {
    core::sync::atomic::fence(Ordering::SeqCst);
    lapic.send_fixed(apic_id, WAKE_VECTOR)
}
