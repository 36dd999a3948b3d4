//! The entry: QEMU jumps to `_start` at EL1 with the MMU and caches off.
//! The stub sets the stack, enables FP/SIMD (compiled Rust uses its
//! registers), zeroes `.bss`, installs exception vectors that report and end
//! the run, and calls `kmain`.

use core::arch::global_asm;

global_asm!(
    r#"
    .section .text.boot, "ax"
    .global _start
_start:
    ldr x1, =__stack_top
    mov sp, x1
    mov x1, #(3 << 20)
    msr cpacr_el1, x1
    isb
    ldr x1, =__bss_start
    ldr x2, =__bss_end
1:  cmp x1, x2
    b.hs 2f
    str xzr, [x1], #8
    b 1b
2:  adr x1, exception_vectors
    msr vbar_el1, x1
    isb
    bl kmain
3:  wfe
    b 3b

    .balign 2048
exception_vectors:
    .rept 16
    .balign 128
    b exception_entry
    .endr

exception_entry:
    mrs x0, esr_el1
    mrs x1, elr_el1
    mrs x2, far_el1
    bl exception
4:  wfe
    b 4b
"#
);
