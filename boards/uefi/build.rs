//! Marks the driver image as an EFI boot service driver (the target's
//! default is an application, which the firmware unloads when it returns),
//! and tells the scenario application where the driver image is: it carries
//! it inside and loads it from memory. `cargo xtask` builds the driver
//! first and sets `BARE_NVME_UEFI_DRIVER`; without it (a plain `cargo
//! build` or `clippy`), the application carries an empty image and says so.
use std::path::PathBuf;

fn main() {
    println!("cargo:rustc-link-arg-bin=bare-nvme-uefi=/subsystem:efi_boot_service_driver");
    println!("cargo:rerun-if-env-changed=BARE_NVME_UEFI_DRIVER");
    let driver = match std::env::var("BARE_NVME_UEFI_DRIVER") {
        Ok(path) => {
            println!("cargo:rerun-if-changed={path}");
            PathBuf::from(path)
        }
        Err(_) => {
            let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
            let empty = out.join("no-driver.efi");
            std::fs::write(&empty, []).expect("OUT_DIR is writable");
            empty
        }
    };
    println!("cargo:rustc-env=DRIVER_IMAGE={}", driver.display());
}
