//! The PVH entry: from 32-bit protected mode to long mode and `kmain`.
//!
//! QEMU's PVH loader (the ELF note below) enters `pvh_start` in 32-bit protected
//! mode with paging off and `ebx` holding the physical address of the
//! `hvm_start_info`. The stub zeroes `.bss`, identity-maps the first
//! [`MAPPED_BYTES`] with 2 MiB pages (RAM, the 32-bit MMIO hole with the
//! bridge windows and ECAM, the LAPIC/IOAPIC/HPET region, and room for 64-bit
//! windows), enables SSE, PAE and long mode, loads a flat GDT and calls
//! `kmain(start_info_phys)` on a 4 MiB stack (a driver for 16 controllers is
//! built on it before it moves into its static).

/// Bytes identity-mapped by the boot page tables (64 GiB).
pub const MAPPED_BYTES: u64 = PD_TABLES as u64 * 512 * PAGE_2M;

/// Size of one large page.
pub const PAGE_2M: u64 = 2 << 20;

/// Number of page directories (one per GiB).
pub const PD_TABLES: usize = 64;

/// Entries in all page directories together.
pub const PD_ENTRIES: usize = PD_TABLES * 512;

core::arch::global_asm!(
    // ELF note XEN_ELFNOTE_PHYS32_ENTRY (type 18, owner "Xen"): the 32-bit entry.
    ".pushsection .note.Xen, \"a\", @note",
    ".p2align 2",
    ".long 4",
    ".long 4",
    ".long 18",
    ".asciz \"Xen\"",
    ".p2align 2",
    ".long pvh_start",
    ".p2align 2",
    ".popsection",
    //
    ".pushsection .text.boot, \"ax\"",
    ".code32",
    ".global pvh_start",
    "pvh_start:",
    "cli",
    "cld",
    "mov esi, ebx",
    // Zero .bss (page tables and stack live there).
    "mov edi, offset __bss_start",
    "mov ecx, offset __bss_end",
    "sub ecx, edi",
    "shr ecx, 2",
    "xor eax, eax",
    "rep stosd",
    // PML4[0] -> PDPT.
    "mov eax, offset boot_pdpt",
    "or eax, 3",
    "mov dword ptr [boot_pml4], eax",
    // PDPT[i] -> PD i.
    "xor ecx, ecx",
    ".Lpdpt_loop:",
    "mov eax, ecx",
    "shl eax, 12",
    "add eax, offset boot_pd",
    "or eax, 3",
    "mov dword ptr [boot_pdpt + ecx * 8], eax",
    "inc ecx",
    "cmp ecx, {pd_tables}",
    "jb .Lpdpt_loop",
    // PD entry j maps j * 2 MiB: present, writable, page size.
    "xor ecx, ecx",
    ".Lpd_loop:",
    "mov eax, ecx",
    "shl eax, 21",
    "or eax, 0x83",
    "mov edx, ecx",
    "shr edx, 11",
    "mov dword ptr [boot_pd + ecx * 8], eax",
    "mov dword ptr [boot_pd + ecx * 8 + 4], edx",
    "inc ecx",
    "cmp ecx, {pd_entries}",
    "jb .Lpd_loop",
    // CR4: PAE, OSFXSR, OSXMMEXCPT.
    "mov eax, cr4",
    "or eax, 0x620",
    "mov cr4, eax",
    "mov eax, offset boot_pml4",
    "mov cr3, eax",
    // EFER.LME.
    "mov ecx, 0xC0000080",
    "rdmsr",
    "or eax, 0x100",
    "wrmsr",
    // CR0: PG, PE, MP; EM cleared so SSE instructions do not fault.
    "mov eax, cr0",
    "and eax, 0xFFFFFFFB",
    "or eax, 0x80000003",
    "mov cr0, eax",
    "lgdt [boot_gdt_ptr]",
    // Far return into the 64-bit code segment (selector 0x08).
    "mov eax, 0x08",
    "push eax",
    "mov eax, offset boot_long_mode",
    "push eax",
    "retf",
    //
    ".code64",
    "boot_long_mode:",
    "mov ax, 0x10",
    "mov ds, ax",
    "mov es, ax",
    "mov ss, ax",
    "mov fs, ax",
    "mov gs, ax",
    "lea rsp, [rip + boot_stack_top]",
    "mov edi, esi",
    "call kmain",
    ".Lhalt:",
    "hlt",
    "jmp .Lhalt",
    ".popsection",
    //
    ".pushsection .rodata.boot, \"a\"",
    ".p2align 3",
    "boot_gdt:",
    ".quad 0",
    ".quad 0x00af9a000000ffff",
    ".quad 0x00cf92000000ffff",
    "boot_gdt_end:",
    "boot_gdt_ptr:",
    ".word boot_gdt_end - boot_gdt - 1",
    ".quad boot_gdt",
    ".popsection",
    //
    ".pushsection .bss.boot, \"aw\", @nobits",
    ".p2align 12",
    ".global boot_pml4",
    "boot_pml4: .skip 4096",
    "boot_pdpt: .skip 4096",
    ".global boot_pd",
    "boot_pd: .skip 4096 * {pd_tables}",
    "boot_stack: .skip 4 * 1024 * 1024",
    "boot_stack_top:",
    ".popsection",
    pd_tables = const PD_TABLES,
    pd_entries = const PD_ENTRIES,
);
