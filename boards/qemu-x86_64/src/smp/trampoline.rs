//! The code a started processor runs first: real mode, below 1 MiB.
//!
//! STARTUP starts a processor in real mode at `vector << 12`, so the
//! trampoline is copied to a free RAM page below 1 MiB ([`install`]). It
//! switches to 32-bit protected mode with its own small GDT, turns on PAE,
//! loads the boot processor's CR3 (the shared identity map), enables long
//! mode and paging, and jumps to `smp_ap_entry` in the kernel image with the
//! stack and core index from its parameter block. There the processor loads
//! the kernel's GDT and calls [`super::ap_main`], which loads the core's IDT
//! (the wake-up IPI only, see `idle`).
//!
//! Only addresses relative to the page are used before the jump (the code
//! runs at a copy, not where it was linked); the page's base comes from CS.

use crate::start_info::MemoryMap;

/// Size of the page the trampoline is copied to.
pub const PAGE: u64 = 0x1000;
/// Lowest page considered (page 0 holds the real-mode interrupt table and
/// BIOS data, which firmware may still read).
const LOWEST: u64 = 0x1000;
/// End of the search: STARTUP reaches only the first MiB, and conventional
/// RAM there ends at the legacy video memory.
const BELOW: u64 = 0xA_0000;

core::arch::global_asm!(
    // The copied part: 16 -> 32 -> 64 bit. ebx/rbx holds the page's base.
    ".pushsection .rodata.smp_trampoline, \"a\"",
    ".p2align 4",
    ".global smp_trampoline_start",
    "smp_trampoline_start:",
    ".code16",
    "cli",
    "cld",
    "mov ax, cs",
    "mov ds, ax",
    "mov ss, ax",
    "mov sp, {page}",
    "xor ebx, ebx",
    "mov bx, ax",
    "shl ebx, 4",
    // Point the GDT pointer at this copy's GDT, load it, enter protected mode.
    "lea eax, [ebx + TRAMP_GDT]",
    "mov dword ptr [TRAMP_GDT_BASE], eax",
    "lgdt [TRAMP_GDT_PTR]",
    "mov eax, cr0",
    "or eax, 1",
    "mov cr0, eax",
    // Far return (32-bit operands) into the 32-bit code segment 0x08.
    "mov eax, 0x08",
    "push eax",
    "lea eax, [ebx + TRAMP_32]",
    "push eax",
    ".byte 0x66, 0xcb",
    //
    ".code32",
    "tramp_32:",
    "mov ax, 0x10",
    "mov ds, ax",
    "mov es, ax",
    "mov ss, ax",
    "lea esp, [ebx + {page}]",
    // CR4: PAE, OSFXSR, OSXMMEXCPT (as the boot processor).
    "mov eax, cr4",
    "or eax, 0x620",
    "mov cr4, eax",
    "mov eax, dword ptr [ebx + TRAMP_CR3]",
    "mov cr3, eax",
    // EFER.LME.
    "mov ecx, 0xC0000080",
    "rdmsr",
    "or eax, 0x100",
    "wrmsr",
    // CR0: PG, MP, PE; clear EM (SSE) and CD/NW (INIT leaves caches off).
    "mov eax, cr0",
    "and eax, 0x9FFFFFFB",
    "or eax, 0x80000003",
    "mov cr0, eax",
    "push 0x18",
    "lea eax, [ebx + TRAMP_64]",
    "push eax",
    "retf",
    //
    ".code64",
    "tramp_64:",
    // The upper halves of registers are undefined after the mode switch.
    "mov ebx, ebx",
    "mov rsp, qword ptr [rbx + TRAMP_STACK]",
    "mov edi, dword ptr [rbx + TRAMP_CORE]",
    "mov rax, qword ptr [rbx + TRAMP_ENTRY]",
    "jmp rax",
    //
    ".p2align 3",
    "tramp_gdt:",
    ".quad 0",
    ".quad 0x00cf9a000000ffff", // 0x08: 32-bit code
    ".quad 0x00cf92000000ffff", // 0x10: data
    ".quad 0x00af9a000000ffff", // 0x18: 64-bit code
    "tramp_gdt_end:",
    "tramp_gdt_ptr:",
    ".word tramp_gdt_end - tramp_gdt - 1",
    ".long 0",
    // The parameter block, written by `install` into the copy.
    ".p2align 3",
    ".global smp_tramp_cr3",
    "smp_tramp_cr3:",
    "tramp_cr3: .quad 0",
    ".global smp_tramp_stack",
    "smp_tramp_stack:",
    "tramp_stack: .quad 0",
    ".global smp_tramp_entry",
    "smp_tramp_entry:",
    "tramp_entry: .quad 0",
    ".global smp_tramp_core",
    "smp_tramp_core:",
    "tramp_core: .quad 0",
    ".global smp_trampoline_end",
    "smp_trampoline_end:",
    // Offsets inside the page (one symbol each: the assembler's Intel syntax
    // takes no symbol differences in a memory operand).
    ".set TRAMP_GDT, tramp_gdt - smp_trampoline_start",
    ".set TRAMP_GDT_PTR, tramp_gdt_ptr - smp_trampoline_start",
    ".set TRAMP_GDT_BASE, tramp_gdt_ptr + 2 - smp_trampoline_start",
    ".set TRAMP_32, tramp_32 - smp_trampoline_start",
    ".set TRAMP_64, tramp_64 - smp_trampoline_start",
    ".set TRAMP_CR3, tramp_cr3 - smp_trampoline_start",
    ".set TRAMP_STACK, tramp_stack - smp_trampoline_start",
    ".set TRAMP_CORE, tramp_core - smp_trampoline_start",
    ".set TRAMP_ENTRY, tramp_entry - smp_trampoline_start",
    ".popsection",
    //
    // In place in the image: the kernel's GDT, segments, and Rust.
    ".pushsection .text.smp_ap_entry, \"ax\"",
    ".code64",
    ".global smp_ap_entry",
    "smp_ap_entry:",
    "lgdt [rip + smp_gdt_ptr]",
    "push 0x08",
    "lea rax, [rip + 2f]",
    "push rax",
    "retfq",
    "2:",
    "mov ax, 0x10",
    "mov ds, ax",
    "mov es, ax",
    "mov ss, ax",
    "mov fs, ax",
    "mov gs, ax",
    "call {ap_main}",
    "3:",
    "cli",
    "hlt",
    "jmp 3b",
    ".popsection",
    //
    // The same flat long-mode GDT as the boot processor's.
    ".pushsection .rodata.smp_gdt, \"a\"",
    ".p2align 3",
    "smp_gdt:",
    ".quad 0",
    ".quad 0x00af9a000000ffff",
    ".quad 0x00cf92000000ffff",
    "smp_gdt_end:",
    "smp_gdt_ptr:",
    ".word smp_gdt_end - smp_gdt - 1",
    ".quad smp_gdt",
    ".popsection",
    page = const PAGE,
    ap_main = sym super::ap_main,
);

extern "C" {
    static smp_trampoline_start: u8;
    static smp_trampoline_end: u8;
    static smp_tramp_cr3: u8;
    static smp_tramp_stack: u8;
    static smp_tramp_entry: u8;
    static smp_tramp_core: u8;
    static smp_ap_entry: u8;
}

/// Why no processor can be started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrampolineError {
    /// No whole free RAM page below 640 KiB in the memory map.
    NoLowPage,
    /// The page tables lie above 4 GiB (the 32-bit step loads CR3).
    TablesAboveFourGiB,
}

/// The trampoline copied into its page, ready for one processor at a time.
pub struct Trampoline {
    base: u64,
}

/// Copies the trampoline to the first free RAM page below 640 KiB and fills
/// in the boot processor's CR3.
pub fn install(map: &MemoryMap) -> Result<Trampoline, TrampolineError> {
    let base = (LOWEST..BELOW)
        .step_by(PAGE as usize)
        .find(|&page| {
            map.usable()
                .any(|r| r.addr <= page && r.addr.saturating_add(r.len) >= page + PAGE)
        })
        .ok_or(TrampolineError::NoLowPage)?;
    let cr3: u64;
    // SAFETY: reading CR3 has no side effect.
    unsafe { core::arch::asm!("mov {}, cr3", out(reg) cr3, options(nomem, nostack)) };
    if cr3 >= 1 << 32 {
        return Err(TrampolineError::TablesAboveFourGiB);
    }
    let start = core::ptr::addr_of!(smp_trampoline_start);
    let len = core::ptr::addr_of!(smp_trampoline_end) as usize - start as usize;
    assert!(len as u64 <= PAGE / 2, "trampoline larger than its page");
    // SAFETY: `base` is a whole usable RAM page below 1 MiB (memory map);
    // nothing in the board uses low memory (the image and the DMA pool lie
    // above 1 MiB, the loader's data was copied before), and the identity map
    // covers it. The source is the trampoline's bytes in the image.
    unsafe { core::ptr::copy_nonoverlapping(start, base as *mut u8, len) };
    let trampoline = Trampoline { base };
    trampoline.set(core::ptr::addr_of!(smp_tramp_cr3), cr3);
    trampoline.set(
        core::ptr::addr_of!(smp_tramp_entry),
        core::ptr::addr_of!(smp_ap_entry) as u64,
    );
    Ok(trampoline)
}

impl Trampoline {
    /// The STARTUP vector (the page number).
    pub fn vector(&self) -> u8 {
        // `install` chose a page below 0xA_0000.
        (self.base / PAGE) as u8
    }

    /// Prepares the next processor: its stack top and core index.
    pub fn prepare(&self, stack_top: u64, core: u32) {
        self.set(core::ptr::addr_of!(smp_tramp_stack), stack_top);
        self.set(core::ptr::addr_of!(smp_tramp_core), u64::from(core));
        // The page is plain memory the started processor reads after the
        // IPIs: keep every write to it before them.
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
    }

    /// Writes the parameter at `field` (a label in the linked trampoline)
    /// into the copy.
    fn set(&self, field: *const u8, value: u64) {
        let offset = field as u64 - core::ptr::addr_of!(smp_trampoline_start) as u64;
        // SAFETY: `field` is one of the 8-byte aligned parameter labels inside
        // the trampoline, so `base + offset` is inside the copied page, which
        // only the processor being started reads, after STARTUP.
        unsafe { ((self.base + offset) as *mut u64).write(value) };
    }
}
