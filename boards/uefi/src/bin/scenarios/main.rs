//! The scenario application: the firmware starts it (QEMU `-kernel`, the
//! scenario on `-append`). It loads the driver image it carries, connects
//! the NVMe controllers to it (its `Start` takes them from the firmware's
//! own NVMe driver), then checks what the firmware's FAT driver reads and
//! writes through our BlockIo, BlockIo2 requests, DiskInfo, removal and
//! ExitBootServices. Results go to the serial port as marker lines; the
//! machine ends through isa-debug-exit (x86) or semihosting (aarch64).

#![no_std]
#![no_main]

extern crate alloc;

// One module per scenario (and what they share); each takes this
// root's imports and its siblings' items with `use super::*`.
mod compare;
#[cfg(target_arch = "x86_64")]
mod exit_boot;
mod files;
mod firmware;
#[cfg(target_arch = "x86_64")]
mod pci_config;
#[cfg(target_arch = "x86_64")]
mod removal;
mod requests;

use compare::*;
#[cfg(target_arch = "x86_64")]
use exit_boot::*;
use files::*;
use firmware::*;
#[cfg(target_arch = "x86_64")]
use pci_config::*;
#[cfg(target_arch = "x86_64")]
use removal::*;
use requests::*;

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::ffi::c_void;
use core::ptr::{self, NonNull};

use bare_nvme_uefi::pci_io::{self, PciIo};
use bare_nvme_uefi::{clock, efi, say, DEVICE_PATH_GUID, TAG_GUID};
use uefi::boot::{self, LoadImageSource, SearchType};
use uefi::prelude::*;
use uefi::proto::loaded_image::LoadedImage;
use uefi::proto::media::file::{File, FileAttribute, FileMode};
use uefi::proto::media::fs::SimpleFileSystem;
use uefi::{cstr16, CStr16};
use uefi_raw::protocol::block::{BlockIo2Protocol, BlockIo2Token, BlockIoProtocol};

/// The driver image, built before this application (see build.rs).
static DRIVER: &[u8] = include_bytes!(env!("DRIVER_IMAGE"));

type Outcome = Result<(), String>;

#[entry]
fn main() -> Status {
    // The firmware's terminal leaves escape sequences on the line.
    say!("");
    say!("@@BOOT uefi");
    clock::calibrate();
    let options = load_options();
    let scenario = options
        .split_whitespace()
        .find_map(|w| w.strip_prefix("scenario="))
        .unwrap_or("files");
    say!("uefi: scenario {scenario}");
    let outcome = match scenario {
        "files" => files(),
        "compare" => compare(),
        "async" => asynchronous(),
        #[cfg(target_arch = "x86_64")]
        "pull-async" => pull_async(),
        // Their probe and their hand reach configuration space through
        // x86 port I/O.
        #[cfg(target_arch = "x86_64")]
        "exit-boot" => exit_boot(),
        #[cfg(target_arch = "x86_64")]
        "pull" => pull(),
        other => Err(format!("unknown scenario {other}")),
    };
    match outcome {
        Ok(()) => {
            say!("@@PASS");
            exit_qemu(0x10)
        }
        Err(e) => {
            say!("@@FAIL {e}");
            exit_qemu(0x11)
        }
    }
}

/// The command line OVMF passes from `-append`.
fn load_options() -> String {
    let Ok(image) = boot::open_protocol_exclusive::<LoadedImage>(boot::image_handle()) else {
        return String::new();
    };
    image
        .load_options_as_cstr16()
        .map(|s| format!("{s}"))
        .unwrap_or_default()
}

/// Ends the machine through isa-debug-exit (status `(code << 1) | 1`).
#[cfg(target_arch = "x86_64")]
fn exit_qemu(code: u32) -> ! {
    // SAFETY: the isa-debug-exit port; the write ends the machine.
    unsafe {
        core::arch::asm!("out dx, eax", in("dx") 0xf4u16, in("eax") code, options(nomem, nostack))
    };
    loop {
        core::hint::spin_loop();
    }
}

/// Ends the machine through semihosting `SYS_EXIT` with the status x86's
/// isa-debug-exit would give (`(code << 1) | 1`), as the aarch64 board does.
#[cfg(target_arch = "aarch64")]
fn exit_qemu(code: u32) -> ! {
    /// `SYS_EXIT` and `ADP_Stopped_ApplicationExit`.
    const SYS_EXIT: u64 = 0x18;
    const APPLICATION_EXIT: u64 = 0x20026;
    let block = [APPLICATION_EXIT, u64::from((code << 1) | 1)];
    // SAFETY: the semihosting call (QEMU runs with -semihosting); it ends
    // the machine and reads only `block`.
    unsafe {
        core::arch::asm!(
            "hlt #0xf000",
            inout("x0") SYS_EXIT => _,
            in("x1") block.as_ptr(),
            options(nostack)
        );
    }
    loop {
        core::hint::spin_loop();
    }
}

/// Byte `i` of the host's test pattern of `seed` (xtask's `fsimage::pattern`).
fn pattern_byte(i: u64, seed: u32) -> u8 {
    let x = (i ^ (i >> 9)).wrapping_mul(0x9E37_79B1) ^ u64::from(seed).wrapping_mul(0x85EB_CA77);
    (x >> 13) as u8
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u64).map(|i| pattern_byte(i, seed)).collect()
}
