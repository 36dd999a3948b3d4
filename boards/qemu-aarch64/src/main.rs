//! A bare-metal kernel for QEMU aarch64 `virt` that runs bare-nvme
//! scenarios with no firmware before it.
//!
//! QEMU loads the ELF at its link address and enters `boot::_start` at EL1
//! with the MMU off; the device tree lies at the start of RAM. The command
//! line (`-append`, the tree's `bootargs`) names the scenario; the result
//! leaves through serial markers and the semihosting exit status.
#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]

mod board;
mod boot;
mod clock;
mod dtb;
mod exit;
mod paging;
mod pci;
mod scenarios;
mod serial;

use core::panic::PanicInfo;

use bare_nvme_board_common::cmdline::Args;
use bare_nvme_board_common::scenarios::Context;
use bare_nvme_board_common::{console, dma, logger, marker, scenario, Board};
use log::{info, LevelFilter};

extern "C" {
    /// End of the loaded image and its stack (linker script).
    static __image_end: u8;
}

/// The Rust entry, called by the boot stub.
#[no_mangle]
extern "C" fn kmain() -> ! {
    let entry = clock::ticks();
    paging::enable();
    serial::init();
    // First: the shared code reaches the machine only through it.
    bare_nvme_board_common::board::install(&board::Virt);
    logger::init(LevelFilter::Info, || {
        core::time::Duration::from_nanos(clock::now().as_nanos())
    });
    let timer_hz = clock::init();
    let machine = match dtb::read() {
        Ok(m) => m,
        Err(e) => panic!("device tree: {e}"),
    };
    let args = Args::new(machine.bootargs);
    logger::follow(&args);
    marker!(
        "BOOT kmain_us={} timer_hz={}",
        entry * 1_000_000 / timer_hz,
        timer_hz
    );
    info!(
        "bare-nvme QEMU aarch64 board; command line: {}",
        args.line()
    );
    info!(
        "RAM {:#x}+{:#x}, ECAM {:#x}+{:#x} buses {}-{}, PCI memory {:x?}, 64-bit {:x?}",
        machine.ram.0,
        machine.ram.1,
        machine.ecam.0,
        machine.ecam.1,
        machine.buses.0,
        machine.buses.1,
        machine.memory,
        machine.prefetchable
    );
    init_dma(machine.ram);
    pci::init(machine);
    let context = Context::new(args);
    info!("driver configuration access: {}", context.access.name());
    let passed = scenario::run_and_report(scenarios::ALL, &context.args, &context);
    board::Virt.exit(passed)
}

/// Gives the DMA allocator the RAM above the image.
fn init_dma(ram: dtb::Range) {
    let image_end = core::ptr::addr_of!(__image_end) as u64;
    let end = ram.0.saturating_add(ram.1);
    if image_end >= end {
        panic!("no RAM above the kernel image for DMA");
    }
    let managed = dma::init(image_end, end - image_end);
    info!("DMA pool at {image_end:#x}: {} MiB", managed >> 20);
}

/// Any exception: the kernel takes none on purpose, so report it and stop.
#[no_mangle]
extern "C" fn exception(esr: u64, elr: u64, far: u64) -> ! {
    console::emergency_marker(
        &mut serial::Pl011,
        format_args!("FAIL exception esr={esr:#x} elr={elr:#x} far={far:#x}"),
    );
    exit::power_off()
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    // A fresh writer: the panic may have happened while the shared one was held.
    console::emergency_marker(&mut serial::Pl011, format_args!("FAIL panic: {info}"));
    exit::exit_qemu(exit::FAILURE)
}
