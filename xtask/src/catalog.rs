//! The QEMU scenarios `cargo xtask test` runs. To add one: build a
//! [`Scenario`] here (machine, kernel command line, steps, expected results)
//! and, if it needs new kernel behaviour, a module in
//! `boards/qemu-x86_64/src/scenarios/`.

use std::time::Duration;

use crate::machine::{Disk, Machine};
use crate::paths;
use crate::scenario::{Scenario, Step};

/// Size of the test disk images.
pub const DISK_BYTES: u64 = 64 << 20;

/// A fresh, zeroed disk image for scenario `name`.
pub fn fresh_disk(name: &str) -> Disk {
    Disk {
        path: paths::work().join(name).join("disk0.img"),
        size: DISK_BYTES,
        fresh: true,
    }
}

/// The disk shared by `persist-write` (fresh) and `persist-check` (kept).
fn persist_disk(fresh: bool) -> Disk {
    Disk {
        path: paths::work().join("persist").join("disk0.img"),
        size: DISK_BYTES,
        fresh,
    }
}

/// The standard topology with a fresh disk behind `nvme0`.
pub fn standard(name: &str) -> Machine {
    Machine::standard(fresh_disk(name))
}

/// Limit for one scenario: a TCG boot takes well under a second; this leaves
/// room for a loaded machine without letting a hang stall CI.
const TIME_LIMIT: Duration = Duration::from_secs(60);

/// Every scenario, in the order `test` runs them.
pub fn all() -> Vec<Scenario> {
    let scenarios = vec![
        Scenario::new(
            "boot",
            "the board: memory map, clock, PCI walk, ECAM, DMA allocator",
            standard("boot"),
            "scenario=boot",
        )
        .expect("root_ports", "2")
        .expect("dma_regions", "0")
        .expect("dma_bytes", "0"),
        Scenario::new(
            "io",
            "the driver brings up the cold-plugged controller and serves block I/O",
            standard("io"),
            "scenario=io",
        )
        .expect("namespaces", "1")
        .expect("block_size", "512")
        .expect("write_zeroes", "ok")
        .expect("flush", "ok")
        .expect("dma_regions", "0")
        .expect("dma_bytes", "0"),
        Scenario::new(
            "small-mdts",
            "MDTS of 8 KiB: the blocking wrappers split a 1 MiB transfer",
            Machine::q35()
                .root_port("rp1", 1, 0x4)
                .raw_drive("d0", fresh_disk("small-mdts"))
                .nvme("nvme0", "deadbeef", "d0", "rp1", ",mdts=1"),
            "scenario=io size=1048576",
        )
        .expect("max_transfer", "8192")
        .expect("dma_regions", "0"),
        Scenario::new(
            "persist-write",
            "write a pattern and flush (the next scenario boots on the same disk)",
            Machine::standard(persist_disk(true)),
            "scenario=io persist=write seed=7",
        )
        .expect("persist_written", "ok"),
        Scenario::new(
            "persist-check",
            "a new boot on the same disk reads the pattern back",
            Machine::standard(persist_disk(false)),
            "scenario=io persist=check seed=7",
        )
        .expect("persisted", "ok"),
        Scenario::new(
            "hot-add",
            "device_add on rp2 is seen in config space; device_del makes the hand pull it",
            standard("hot-add"),
            "scenario=slots port=0:5.0 expect=add pull=button hold=deleted",
        )
        .steps([
            Step::marker("READY"),
            Step::add_nvme("nvme1", "cafe", "null0", "rp2"),
            Step::phase("attached"),
            Step::phase("armed"),
            Step::press_button("nvme1"),
            Step::phase("pulled"),
            Step::device_deleted(),
            Step::tell("deleted"),
        ])
        .expect("attached_vendor", "0x1b36")
        .expect("attached_class", "0x010802")
        .expect("presence", "0"),
        Scenario::new(
            "hand-pull",
            "the hand pulls the cold-plugged controller on its own; QEMU deletes it",
            standard("hand-pull"),
            "scenario=slots port=0:4.0 pull=now hold=deleted",
        )
        .steps([
            Step::phase("pulled"),
            Step::device_deleted(),
            Step::tell("deleted"),
        ])
        .expect("presence", "0"),
        Scenario::new(
            "link-flap",
            "slot power off and on: the controller vanishes and returns reset",
            // Cutting slot power needs a power controller on the port.
            Machine::q35()
                .powered_root_port("rp1", 1, 0x4)
                .raw_drive("d0", fresh_disk("link-flap"))
                .nvme("nvme0", "deadbeef", "d0", "rp1", ""),
            "scenario=slots port=0:4.0 pull=flap",
        )
        .expect("command_after_flap", "0x0000"),
    ];
    scenarios
        .into_iter()
        .map(|s| s.time_limit(TIME_LIMIT))
        .collect()
}

/// The scenario called `name`.
pub fn find(name: &str) -> Option<Scenario> {
    all().into_iter().find(|s| s.name == name)
}
