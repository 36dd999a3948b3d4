//! The driver image: installs the driver binding and stays resident.

#![no_std]
#![no_main]

use bare_nvme_uefi::{binding, clock, console, say};
use uefi::prelude::*;

#[entry]
fn main() -> Status {
    console::init_log();
    let per_ms = clock::calibrate();
    say!("uefi: bare-nvme driver loaded, TSC {per_ms} ticks/ms");
    binding::install(uefi::boot::image_handle().as_ptr())
}
