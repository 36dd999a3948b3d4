//! A PVH kernel for QEMU q35 that runs bare-nvme scenarios.
//!
//! QEMU loads the ELF at 1 MiB and enters `boot::pvh_start`, which reaches
//! [`kmain`] in long mode. The command line (`-append`) names the scenario;
//! the result leaves through serial markers and the isa-debug-exit device.
#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]

mod board;
mod boot;
mod clock;
mod exit;
mod paging;
mod pci;
mod scenarios;
mod serial;
mod smp;
mod start_info;

use core::panic::PanicInfo;

use bare_nvme_board_common::cmdline::Args;
use bare_nvme_board_common::scenarios::Context;
use bare_nvme_board_common::{console, dma, logger, marker, scenario, Board};
use log::{info, LevelFilter};
use spin::Once;

use crate::start_info::BootInfo;

static BOOT_INFO: Once<BootInfo> = Once::new();

extern "C" {
    /// End of the loaded image (linker script).
    static __image_end: u8;
}

/// The Rust entry, called by the boot stub with the start info's address.
#[no_mangle]
extern "C" fn kmain(start_info_phys: u32) -> ! {
    let entry_tsc = clock::rdtsc();
    serial::init();
    // First: the shared code reaches the machine only through it.
    bare_nvme_board_common::board::install(&board::Q35);
    logger::init(LevelFilter::Info, || {
        core::time::Duration::from_nanos(clock::now().as_nanos())
    });
    let boot = BOOT_INFO.call_once(|| {
        let mut info = BootInfo::empty();
        if let Err(e) = start_info::read(start_info_phys, &mut info) {
            panic!("bad PVH start info at {start_info_phys:#x}: {e}");
        }
        info
    });
    let args = Args::new(boot.cmdline());
    logger::follow(&args);
    let tsc_hz = clock::calibrate();
    // QEMU starts the TSC at zero with the machine, so the TSC at entry is the
    // time firmware and loader took.
    marker!(
        "BOOT kmain_us={} tsc_hz={}",
        clock::cycles_to_nanos(entry_tsc) / 1000,
        tsc_hz
    );
    info!("bare-nvme QEMU board; command line: {}", args.line());
    let uncached = paging::mark_non_ram_uncached(&boot.memory_map);
    info!("{uncached} non-RAM 2 MiB pages mapped uncached");
    // `madt=off` exercises the fallback (QEMU's APIC numbering).
    if let Err(e) = smp::start(boot, args.get("madt") != Some("off")) {
        log::warn!("only the boot core runs: {e}");
    }
    init_dma(boot);
    let ecam = pci::find_ecam(&pci::own_config());
    pci::init_driver_access(ecam);
    board::set_facts(board::Facts { boot, ecam, tsc_hz });
    let context = Context::new(args);
    info!("driver configuration access: {}", context.access.name());
    let passed = scenario::run_and_report(scenarios::ALL, &context.args, &context);
    board::Q35.exit(passed)
}

/// Gives the DMA allocator the largest usable RAM block above the image.
fn init_dma(boot: &BootInfo) {
    let image_end = core::ptr::addr_of!(__image_end) as u64;
    let best = boot
        .memory_map
        .usable()
        .map(|r| {
            let start = r.addr.max(image_end);
            let end = r.addr.saturating_add(r.len);
            (start, end.saturating_sub(start))
        })
        .max_by_key(|&(_, len)| len);
    match best {
        Some((start, len)) if len > 0 => {
            let managed = dma::init(start, len);
            info!("DMA pool at {start:#x}: {} MiB", managed >> 20);
        }
        _ => panic!("no usable RAM above the kernel image for DMA"),
    }
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    // A fresh writer: the panic may have happened while the shared one was held.
    console::emergency_marker(&mut serial::Com1, format_args!("FAIL panic: {info}"));
    exit::exit_qemu(exit::FAILURE)
}
