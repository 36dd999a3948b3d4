//! The QEMU scenarios `cargo xtask test` runs, on every board. To add one:
//! build a [`Scenario`] here (machine, kernel command line, steps, expected
//! results) and, if it needs new kernel behaviour, a module in
//! `boards/common/src/scenarios/` (every board lists those) or in one
//! board's own `src/scenarios/`. [`plan`] says how each board runs it, or
//! why it cannot.

use std::time::Duration;

use crate::board::Board;
use crate::machine::{Disk, Machine};
use crate::scenario::{Scenario, Step};
use crate::{fs_disks, paths};

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

/// Remove/re-add cycles of the `cycles` scenario.
pub const CYCLES: u64 = 20;

/// Add/remove cycles of `slot-power-cycles` in the catalog (each costs the
/// spec's 100 ms before the first config read); a longer run on demand with
/// `SLOT_POWER_CYCLES=100 cargo xtask test --qemu-only slot-power-cycles`.
fn slot_power_cycles() -> u64 {
    std::env::var("SLOT_POWER_CYCLES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(5)
}

/// A fresh raw disk `file` of scenario `name`.
fn disk(name: &str, file: &str) -> Disk {
    Disk {
        path: paths::work().join(name).join(file),
        size: DISK_BYTES,
        fresh: true,
    }
}

/// The standard topology plus a raw drive `d1` for a controller the host
/// hot-adds to `rp2` (so its data can be verified).
pub fn with_spare_drive(name: &str) -> Machine {
    standard(name).raw_drive("d1", disk(name, "disk1.img"))
}

/// The standard topology plus `nvme1` (serial `cafe`) cold-plugged in `rp2`,
/// backed by a null device that takes `latency_ms` per request.
fn with_second(name: &str, latency_ms: u64) -> Machine {
    standard(name)
        .null_block("slow", 1 << 30, Some(latency_ms * 1_000_000))
        .nvme("nvme1", "cafe", "slow", "rp2", "")
}

/// Host steps of `n` hot-add/pull cycles: the kernel announces an empty
/// slot, the host adds `nvme1` backed by `drive`, the kernel's hand pulls it
/// and QEMU reports it deleted; at the end the host tells the kernel it saw
/// the last deletion.
pub fn cycle_steps(n: u64, drive: &str) -> Vec<Step> {
    cycle_steps_into(n, drive, "rp2")
}

/// [`cycle_steps`] into the slot of port `port`.
fn cycle_steps_into(n: u64, drive: &str, port: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    for i in 0..n {
        steps.push(Step::phase(&format!("empty {i}")));
        steps.push(Step::add_nvme("nvme1", "cafe", drive, port));
        steps.push(Step::left_slot("nvme1"));
    }
    steps.push(Step::phase("done"));
    steps.push(Step::tell("deleted"));
    steps
}

/// Every scenario, in the order `test` runs them.
pub fn all() -> Vec<Scenario> {
    let groups = [
        boot_and_io(),
        persistence(),
        hot_plug(),
        slot_power(),
        power_and_bring_up(),
        health(),
        filesystem(),
        instruments(),
        cores(),
    ];
    groups
        .into_iter()
        .flatten()
        .map(|s| {
            if s.time_limit == Duration::from_secs(60) {
                s.time_limit(TIME_LIMIT)
            } else {
                s
            }
        })
        .collect()
}

/// The board, and I/O on controllers of several shapes and a failing disk.
fn boot_and_io() -> Vec<Scenario> {
    vec![
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
            "cold-boot",
            "the driver enumerates, resets the controller SeaBIOS left enabled, \
             writes 4 MiB (PRP lists), reads back, compares, zeroes, trims, flushes",
            standard("cold-boot"),
            "scenario=io io_queues=2",
        )
        .expect("firmware_left_enabled", "1")
        .expect("controllers", "1")
        .expect("namespaces", "1")
        .expect("block_sizes", "512")
        .expect("io_queues", "2")
        .expect("write_zeroes", "ok")
        .expect("flush", "ok")
        .expect("dma_regions", "0")
        .expect("dma_bytes", "0"),
        Scenario::new(
            "single-queue",
            "a controller granting one I/O queue pair (4 asked) and an 8 KiB MDTS: \
             1 MiB transfers are split",
            Machine::q35()
                .root_port("rp1", 1, 0x4)
                .raw_drive("d0", fresh_disk("single-queue"))
                .nvme("nvme0", "deadbeef", "d0", "rp1", ",mdts=1,max_ioqpairs=1"),
            "scenario=io io_queues=4 size=1048576",
        )
        .expect("io_queues", "1")
        .expect("max_transfer", "8192")
        .expect("flush", "ok")
        .expect("dma_regions", "0"),
        Scenario::new(
            "multi",
            "three controllers on three root ports, four namespaces of 512 and 4096-byte blocks",
            Machine::q35()
                .root_port("rp1", 1, 0x4)
                .root_port("rp2", 2, 0x5)
                .root_port("rp3", 3, 0x6)
                .raw_drive("d0", disk("multi", "disk0.img"))
                .raw_drive("d1", disk("multi", "disk1.img"))
                .raw_drive("d2", disk("multi", "disk2.img"))
                .raw_drive("d3", disk("multi", "disk3.img"))
                .nvme_bare("nvme0", "multi0", "rp1", "")
                .namespace("nvme0", 1, "d0", 512)
                .namespace("nvme0", 2, "d1", 4096)
                .nvme_bare("nvme1", "multi1", "rp2", "")
                .namespace("nvme1", 1, "d2", 4096)
                .nvme("nvme2", "multi2", "d3", "rp3", ""),
            "scenario=io io_queues=2 size=1048576",
        )
        .expect("controllers", "3")
        .expect("namespaces", "4")
        .expect("block_sizes", "512,4096,4096,512")
        .expect("io_queues", "2,2,2")
        .expect("flush", "ok")
        .expect("dma_regions", "0")
        .expect("dma_bytes", "0"),
        Scenario::new(
            "bad-disk",
            "blkdebug fails reads of one block: a typed CommandFailed comes back, \
             the other commands of the batch and later I/O succeed",
            Machine::q35()
                .root_port("rp1", 1, 0x4)
                .bad_drive("bad0", disk("bad-disk", "disk0.img"), 1000)
                .nvme("nvme0", "deadbeef", "bad0", "rp1", ""),
            "scenario=io badblock=1000",
        )
        .expect("bad_read", "CommandFailed")
        .expect("bad_opcode", "0x02")
        .expect("after_error", "ok")
        .expect("dma_regions", "0"),
    ]
}

/// Data that must outlive a power cut.
fn persistence() -> Vec<Scenario> {
    vec![
        Scenario::new(
            "persist-write",
            "write a pattern, flush, and cut the power (SIGKILL) as soon as the flush \
             completed; the next scenario boots on the same disk",
            Machine::standard(persist_disk(true)),
            "scenario=io persist=write power=cut seed=7",
        )
        .steps([Step::marker("RESULT persist_written=ok"), Step::Kill])
        .expect("persist_written", "ok"),
        Scenario::new(
            "persist-check",
            "a new boot on the same disk reads the pattern back",
            Machine::standard(persist_disk(false)),
            "scenario=io persist=check seed=7",
        )
        .expect("persisted", "ok"),
    ]
}

/// Controllers added to and pulled from a slot, with commands in flight, many
/// times over, or after an orderly detach.
fn hot_plug() -> Vec<Scenario> {
    vec![
        Scenario::new(
            "hot-add",
            "device_add into the empty rp2: the tick finds it, brings it up, verified I/O; \
             then the hand pulls it with 4 reads outstanding (QEMU finished them 50 ms \
             before; the driver had not polled)",
            with_spare_drive("hot-add"),
            "scenario=plug mode=cycles cycles=1 port=0:5.0 inflight=4 pull_after_us=50000",
        )
        .steps(cycle_steps(1, "d1"))
        .expect("cycles", "1")
        .expect("dma_regions", "0")
        .expect("dma_bytes", "0"),
        Scenario::new(
            "pull-unfreed",
            "the hand pulls a hot-added controller while its reads wait inside QEMU (taken \
             in 5 ms before the pull by a backend taking 100 ms per request): each fails \
             once with DeviceRemoved; QEMU \
             never frees the device (its NVMe model leaks a reference per request in \
             flight), so the host re-opens the block node for the next add, and the \
             controller returns",
            standard("pull-unfreed").null_block("slow1", 1 << 30, Some(100_000_000)),
            "scenario=plug mode=cycles cycles=2 port=0:5.0 inflight=8 verify=zeroes \
             pull_after_us=5000",
        )
        .steps(cycle_steps(2, "slow1"))
        .expect("cycles", "2")
        .expect("failed_in_flight", "16")
        .expect("dma_regions", "0")
        .expect("dma_bytes", "0")
        .expect_note("no DEVICE_DELETED")
        .expect_note("re-opened slow1"),
        Scenario::new(
            "surprise",
            "the hand pulls a controller with 32 reads in flight on a slow backend: \
             each completes once with DeviceRemoved, one Removed event, DMA returned",
            with_second("surprise", 20),
            "scenario=plug mode=surprise port=0:5.0 inflight=32 verify=zeroes",
        )
        .expect("late_submit", "DeviceRemoved")
        .expect("ledger_ok", "0")
        .expect("ledger_removed", "32")
        .expect("dma_regions", "0")
        .expect("dma_bytes", "0"),
        Scenario::new(
            "second-survives",
            "surprise removal on rp2 while the controller on rp1 serves verified I/O every tick",
            with_second("second-survives", 20),
            "scenario=plug mode=surprise port=0:5.0 inflight=32 verify=zeroes survivor=io",
        )
        .expect("survivor", "ready")
        .expect("ledger_removed", "32")
        .expect("dma_regions", "0")
        .expect("dma_bytes", "0"),
        Scenario::new(
            "cycles",
            "20 hot-add / surprise-removal cycles in one VM, verified I/O after each add, \
             DMA back to its baseline after each removal",
            with_spare_drive("cycles"),
            &format!("scenario=plug mode=cycles cycles={CYCLES} port=0:5.0 inflight=0"),
        )
        .steps(cycle_steps(CYCLES, "d1"))
        .expect("cycles", &CYCLES.to_string())
        .expect("dma_regions", "0")
        .expect("dma_bytes", "0")
        .time_limit(Duration::from_secs(150)),
        Scenario::new(
            "switch-plug",
            "a switch behind a root port: device_add into its downstream port's slot, \
             Ready, verified I/O, the hand pulls it; twice (idle pulls: a raw image \
             with reads in flight sometimes keeps QEMU from deleting the device)",
            with_spare_drive("switch-plug").switch("sw1", 3, 0x6),
            "scenario=plug mode=cycles cycles=2 slot=4 inflight=0",
        )
        .steps(cycle_steps_into(2, "d1", "sw1"))
        .expect("cycles", "2")
        .expect("dma_regions", "0")
        .expect("dma_bytes", "0"),
        Scenario::new(
            "button",
            "device_del presses the attention button: the driver drains and detaches, \
             then the hand empties the slot (no abort window here: slot-power-button \
             runs the 5 s one)",
            with_spare_drive("button").nvme("nvme1", "cafe", "d1", "rp2", ""),
            "scenario=plug mode=button port=0:5.0 inflight=8 button_window_ms=0",
        )
        .steps([
            Step::phase("armed"),
            Step::press_button("nvme1"),
            Step::phase("pulled"),
            Step::deleted("nvme1"),
            Step::tell("deleted"),
        ])
        .expect("detached_by", "Orderly")
        .expect("dma_regions", "0")
        .expect("dma_bytes", "0"),
    ]
}

/// `nvme0` on `rp1` (no power controller) and an empty `rp2` with a power
/// controller, as QEMU's `pcie-root-port` has by default: `rp2` is off until
/// the driver powers it. Raw drive `d1` and null node `null0` for hot-adds.
fn with_powered_slot(name: &str) -> Machine {
    Machine::q35()
        .root_port("rp1", 1, 0x4)
        .powered_root_port("rp2", 2, 0x5)
        .null_block("null0", 1 << 30, None)
        .raw_drive("d0", fresh_disk(name))
        .nvme("nvme0", "deadbeef", "d0", "rp1", "")
        .raw_drive("d1", disk(name, "disk1.img"))
}

/// Slots with a power controller (QEMU's default root ports): the driver
/// powers a card it finds in a switched-off slot, waits the spec's times,
/// and switches the slot off after an orderly detach, which is what ends
/// QEMU's unplug. The scenarios above keep `power_controller_present=off`
/// on purpose: they cover slots without a power controller (where a card
/// is live the moment it is in), which the driver serves too.
fn slot_power() -> Vec<Scenario> {
    let cycles = slot_power_cycles();
    vec![
        Scenario::new(
            "slot-power-add",
            "device_add into rp2 with its power controller off: the driver powers the slot, \
             waits for the link and 100 ms, brings the controller up, verified I/O; then the \
             hand pulls it idle (slot-power-cycles pulls with reads in flight)",
            with_powered_slot("slot-power-add"),
            "scenario=plug mode=cycles cycles=1 port=0:5.0 inflight=0",
        )
        .steps(cycle_steps(1, "d1"))
        .expect("cycles", "1")
        .expect("dma_regions", "0")
        .expect("dma_bytes", "0"),
        Scenario::new(
            "slot-power-button",
            "device_del presses rp2's attention button: 5 s window, orderly detach, the \
             driver switches the slot off and QEMU deletes the device; the hand writes nothing",
            with_powered_slot("slot-power-button").nvme("nvme1", "cafe", "d1", "rp2", ""),
            "scenario=plug mode=slot-button port=0:5.0 inflight=8",
        )
        .steps([
            Step::phase("armed"),
            Step::press_button("nvme1"),
            Step::phase("emptied"),
            Step::deleted("nvme1"),
            Step::tell("deleted"),
        ])
        .expect("detached_by", "Orderly")
        .expect("hand_writes", "0")
        .expect("dma_regions", "0")
        .expect("dma_bytes", "0"),
        Scenario::new(
            "slot-power-under-io",
            "device_add into the switched-off rp2 while nvme0 on rp1 serves verified I/O \
             on every tick of the power-up and bring-up",
            with_powered_slot("slot-power-under-io"),
            "scenario=plug mode=cycles cycles=1 port=0:5.0 inflight=0 survivor=io",
        )
        .steps(cycle_steps(1, "d1"))
        .expect("cycles", "1")
        .expect("served_during_add", "yes")
        .expect("dma_regions", "0")
        .expect("dma_bytes", "0"),
        Scenario::new(
            "slot-power-cycles",
            &format!(
                "{cycles} add/remove cycles on rp2 with its power controller: each \
                 add powered up by the driver, 2 reads in flight at each pull (null backend)"
            ),
            with_powered_slot("slot-power-cycles"),
            &format!(
                "scenario=plug mode=cycles cycles={cycles} port=0:5.0 inflight=2 \
                 verify=zeroes"
            ),
        )
        .steps(cycle_steps(cycles, "null0"))
        .expect("cycles", &cycles.to_string())
        .expect("dma_regions", "0")
        .expect("dma_bytes", "0")
        .time_limit(Duration::from_secs(60 + cycles)),
        Scenario::new(
            "slot-power-switch",
            "a switch's downstream port with a power controller: device_add into its \
             switched-off slot, powered and served by the driver, the hand pulls it; twice",
            with_spare_drive("slot-power-switch").powered_switch("sw1", 3, 0x6),
            "scenario=plug mode=cycles cycles=2 slot=4 inflight=0",
        )
        .steps(cycle_steps_into(2, "d1", "sw1"))
        .expect("cycles", "2")
        .expect("dma_regions", "0")
        .expect("dma_bytes", "0"),
    ]
}

/// Slot power flapped, controllers pulled during bring-up, and the board's
/// hand on its own.
fn power_and_bring_up() -> Vec<Scenario> {
    vec![
        Scenario::new(
            "link-flap",
            "slot power off (0x05c0) and on: Removed, then Ready and Returned with the \
             same serial and the data intact",
            Machine::q35()
                .powered_root_port("rp1", 1, 0x4)
                .raw_drive("d0", fresh_disk("link-flap"))
                .nvme("nvme0", "deadbeef", "d0", "rp1", ""),
            "scenario=plug mode=flap port=0:4.0",
        )
        .expect("returned", "yes")
        .expect("serial", "deadbeef")
        .expect("dma_regions", "0")
        .expect("dma_bytes", "0"),
        Scenario::new(
            "quick-flap",
            "slot power off and at once on again, before any tick: the driver finds a \
             reset controller, ends the old one once and reports the device returned",
            Machine::q35()
                .powered_root_port("rp1", 1, 0x4)
                .raw_drive("d0", fresh_disk("quick-flap"))
                .nvme("nvme0", "deadbeef", "d0", "rp1", ""),
            "scenario=plug mode=flap quick=on port=0:4.0",
        )
        .expect("returned", "yes")
        .expect("serial", "deadbeef")
        .expect("dma_regions", "0")
        .expect("dma_bytes", "0"),
        Scenario::new(
            "bringup-pull",
            "the hand pulls a controller one tick into its bring-up; the other comes up",
            with_second("bringup-pull", 0),
            "scenario=plug mode=bringup port=0:5.0 after_ticks=1",
        )
        .expect("survivor", "ready")
        .expect("dma_regions", "0")
        .expect("dma_bytes", "0"),
        Scenario::new(
            "bringup-pull-early",
            "the hand pulls a controller before the first tick of its bring-up",
            with_second("bringup-pull-early", 0),
            "scenario=plug mode=bringup port=0:5.0 after_ticks=0",
        )
        .expect("pulled_in", "Discovered")
        .expect("survivor", "ready")
        .expect("dma_regions", "0")
        .expect("dma_bytes", "0"),
        Scenario::new(
            "slot-pull",
            "the board's hand alone: it pulls the cold-plugged controller; QEMU deletes it",
            standard("slot-pull"),
            "scenario=slots port=0:4.0 pull=now hold=deleted",
        )
        .steps([
            Step::phase("pulled"),
            Step::left_slot("nvme0"),
            Step::tell("deleted"),
        ])
        .expect("presence", "0"),
    ]
}

/// A catalog scenario as one board runs it, or why it cannot.
pub enum Planned {
    /// Run it.
    Run(Box<Scenario>),
    /// It does not apply to the board.
    Skip {
        /// The scenario's name on that board.
        name: String,
        /// Why not.
        why: &'static str,
    },
}

/// The catalog on `board`: on x86 as firmware left the machine, or with
/// `reassign` the driver assigning every bus number, window and BAR anew
/// (names prefixed `reassign/`); on aarch64 (names prefixed `aarch64/`) no
/// firmware ran, so the driver always assigns.
pub fn plan(board: Board, reassign: bool) -> Vec<Planned> {
    all()
        .into_iter()
        .map(|s| match (board, reassign) {
            (Board::X86_64, false) => Planned::Run(Box::new(s)),
            (Board::X86_64, true) => reassigned(s),
            (Board::Aarch64, _) => on_aarch64(s),
        })
        .collect()
}

/// Scenarios that run the board without the driver.
const WITHOUT_DRIVER: &[&str] = &["boot", "slot-pull", "smp", "smp-fallback"];

fn reassigned(mut s: Scenario) -> Planned {
    let name = format!("reassign/{}", s.name);
    if WITHOUT_DRIVER.contains(&s.name.as_str()) {
        return Planned::Skip {
            name,
            why: "runs the board without the driver: nothing is reassigned",
        };
    }
    s.name = name;
    s.append.push_str(" reassign=1");
    Planned::Run(Box::new(s))
}

fn on_aarch64(mut s: Scenario) -> Planned {
    let name = format!("aarch64/{}", s.name);
    if s.name == "slot-pull" {
        return Planned::Skip {
            name,
            why: "the hand alone, without the driver: on virt nothing numbers the slot's bus",
        };
    }
    if s.name.starts_with("smp") {
        return Planned::Skip {
            name,
            why: "the aarch64 board starts no second core",
        };
    }
    if s.name == "bench-smoke" {
        return Planned::Skip {
            name,
            why:
                "the contest drives a standalone controller on the BAR firmware placed; on virt \
                  no firmware places BARs (the driver's own placement runs in every other scenario)",
        };
    }
    s.name = name;
    s.machine = s.machine.on(Board::Aarch64);
    for (key, value) in s.expect.iter_mut() {
        if key == "firmware_left_enabled" {
            // No firmware ran before the kernel.
            *value = "0".to_string();
        }
    }
    Planned::Run(Box::new(s))
}

/// What a controller reports on its own: asynchronous events reaped by the
/// tick.
fn health() -> Vec<Scenario> {
    let subsys = Machine::q35()
        .root_port("rp1", 1, 0x4)
        .raw_drive("d0", disk("namespaces", "disk0.img"))
        .raw_drive("d1", disk("namespaces", "disk1.img"))
        .arg("-device")
        .arg("nvme-subsys,id=subsys0,nqn=bare-nvme-subsys")
        .nvme_bare("nvme0", "subsys0ctl", "rp1", ",subsys=subsys0")
        .namespace("nvme0", 1, "d0", 512)
        .namespace("nvme0", 2, "d1", 4096);
    vec![
        Scenario::new(
            "smart-warning",
            "QMP sets the controller's smart_critical_warning: the tick reports Health \
             with the bit within a few ticks, once, and the SMART log shows it",
            standard("smart-warning"),
            "scenario=health mode=smart",
        )
        .steps([
            Step::phase("armed"),
            Step::Qmp(
                "qom-set".to_string(),
                serde_json::json!({
                    "path": "/machine/peripheral/nvme0",
                    "property": "smart_critical_warning",
                    "value": 4,
                }),
            ),
            Step::tell("set"),
        ])
        .expect("event_requests", "4")
        .expect("health_warning", "0x04")
        .expect("health_events", "1")
        .expect("smart_warning", "0x04")
        .expect("dma_regions", "0")
        .expect("dma_bytes", "0"),
        Scenario::new(
            "namespaces",
            "a controller in an nvme-subsys detaches its namespace 2 and attaches it again \
             (Namespace Attachment): removed then added, verified I/O on namespace 1 every tick",
            subsys,
            "scenario=health mode=ns",
        )
        .expect("namespace_events", "removed,added")
        .expect("namespace_data", "kept")
        .expect("dma_regions", "0")
        .expect("dma_bytes", "0"),
    ]
}

/// A FAT32 filesystem on a GPT disk the host made, used by the guest
/// through the block device and its adapters, and pulled while written.
fn filesystem() -> Vec<Scenario> {
    vec![
        Scenario::new(
            "fs-files",
            "GPT + FAT32 made on the host: the guest finds the partition, lists it, reads and \
             checks two files, writes NEW.BIN, flushes; the host checks NEW.BIN byte for byte; \
             bounce-buffer and zero-copy throughput",
            Machine::standard(fs_disks::disk("fs-files")),
            &format!(
                "scenario=fs mode=files new_bytes={} bench_mib=16",
                fs_disks::NEW_BYTES
            ),
        )
        .before(fs_disks::make_files)
        .after(fs_disks::check_files)
        .expect("partition_first", "2048")
        .expect("files", "BIG.BIN,HELLO.TXT")
        .expect("read_verified", "ok")
        .expect("written", "ok")
        .expect("flush", "ok")
        .expect("dma_regions", "0")
        .expect("dma_bytes", "0"),
        Scenario::new(
            "fs-pull",
            "the hand pulls the controller while files are written: the block device tells \
             the filesystem DeviceRemoved, it fails, one Removed event, nothing panics or hangs, all DMA returns",
            Machine::standard(fs_disks::disk("fs-pull")),
            "scenario=fs mode=pull port=0:4.0 pull_after=300",
        )
        .before(fs_disks::make_pull)
        .expect("device_error", "DeviceRemoved")
        .expect("dma_regions", "0")
        .expect("dma_bytes", "0"),
    ]
}

/// One controller on `null-co` (reads return zeroes at once), the machine
/// of the IOPS benchmark.
pub fn null_controller() -> Machine {
    Machine::q35()
        .root_port("rp1", 1, 0x4)
        .null_block("null0", 1 << 30, None)
        .nvme("nvme0", "bench", "null0", "rp1", "")
}

/// `n` controllers on `null-co`, each in its own root port (00:04.0 on).
pub fn many_controllers(n: usize) -> Machine {
    let mut m = Machine::q35();
    for i in 0..n {
        let (port, null, nvme) = (format!("rp{i}"), format!("null{i}"), format!("nvme{i}"));
        // No I/O window per port: 16 of them would not fit the 64 KiB of
        // port space, and NVMe needs none.
        m = m
            .arg("-device")
            .arg(&format!(
                "pcie-root-port,id={port},chassis={c},slot={c},bus=pcie.0,addr={:#x},\
                 power_controller_present=off,io-reserve=0",
                0x4 + i,
                c = i + 1
            ))
            .null_block(&null, 1 << 30, None)
            .nvme(&nvme, &format!("many{i}"), &null, &port, "");
    }
    m
}

/// The benchmark scenarios, short: they run and give their memory back.
fn instruments() -> Vec<Scenario> {
    vec![
        Scenario::new(
            "bench-smoke",
            "the IOPS benchmark, one short round: the reference loop and the driver \
             with MMIO and shadow doorbells at QD 1, 4 and 32",
            null_controller(),
            "scenario=bench ms=20 rounds=1",
        )
        .expect("shadow_supported", "1")
        .expect("dma_regions", "0")
        .expect("dma_bytes", "0"),
        Scenario::new(
            "tick-cost-smoke",
            "16 controllers in 16 root ports all come up; 100 idle and 100 busy ticks, \
             one CSTS read per idle controller at most",
            many_controllers(16),
            "scenario=tick-cost controllers=16 ticks=100",
        )
        .expect("ready", "16")
        .expect("idle_mmio_reads_max", "16")
        .expect("busy_mmio_reads_max", "0")
        .expect("dma_regions", "0")
        .expect("dma_bytes", "0"),
    ]
}

/// Two processors at once: the board starts core 1 and runs jobs on it.
fn cores() -> Vec<Scenario> {
    let smp = |s: Scenario| {
        s.expect("cores", "2")
            .expect("madt_refused", "4")
            .expect("saw_flag", "yes")
            .expect("overlap", "yes")
            .expect("pingpong_rounds", "1000")
            .expect("mutex_total", "200000")
            .expect("atomic_total", "200000")
    };
    vec![
        smp(Scenario::new(
            "smp",
            "-smp 2 under multi-threaded TCG: the board starts core 1 (MADT, INIT-SIPI-SIPI); \
             core 1 counts while core 0 watches, hand-overs both ways, both cores add to one \
             spin::Mutex and one atomic without losing an update",
            Machine::q35().cpus(2),
            "scenario=smp",
        ))
        .expect("source", "Madt"),
        smp(Scenario::new(
            "smp-fallback",
            "as smp, with the MADT ignored: core 1 found at APIC id 1 as QEMU numbers it",
            Machine::q35().cpus(2),
            "scenario=smp madt=off",
        ))
        .expect("source", "Fallback"),
        Scenario::new(
            "smp-io",
            "one I/O queue per core on a shared controller: QD 32 4 KiB reads on null-co, \
             queue 0 on core 0 alone, then queue 1 on core 1 at the same time; the monitor \
             ticks on core 0; memory back after the detach",
            null_controller().cpus(2),
            "scenario=smp-io ms=200 rounds=1",
        )
        .expect("cores", "2")
        .expect("dma_regions", "0")
        .expect("dma_bytes", "0"),
        Scenario::new(
            "smp-pull",
            "the hand pulls a shared controller while both cores keep 32 reads in flight on \
             their own queues: every command completes once (success or DeviceRemoved), later \
             submissions refused, one Removed event, all DMA returns (each read takes 1 ms, \
             so that reads are inside QEMU at the pull, not all completed before it)",
            Machine::q35()
                .root_port("rp1", 1, 0x4)
                .null_block("null0", 1 << 30, Some(1_000_000))
                .nvme("nvme0", "bench", "null0", "rp1", "")
                .cpus(2),
            "scenario=smp-pull port=0:4.0 pull_after=100",
        )
        .expect("cores", "2")
        .expect("removed_events", "1")
        .expect("dma_regions", "0")
        .expect("dma_bytes", "0"),
    ]
}

/// The scenario called `name`.
pub fn find(name: &str) -> Option<Scenario> {
    all().into_iter().find(|s| s.name == name)
}
