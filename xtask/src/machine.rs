//! The QEMU machine: a q35 under TCG with the topology a scenario asks for.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::board::Board;

/// A raw disk image a machine uses.
#[derive(Clone, Debug)]
pub struct Disk {
    /// Where the image lives.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// Whether a run starts from an all-zero image (else an existing image is
    /// kept, e.g. to see data persist across boots).
    pub fresh: bool,
}

impl Disk {
    /// Creates the image (or zeroes it when `fresh`).
    pub fn prepare(&self) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        if self.fresh || !self.path.exists() {
            let file = std::fs::File::create(&self.path)?;
            file.set_len(self.size)?;
        } else {
            let file = std::fs::OpenOptions::new().write(true).open(&self.path)?;
            if file.metadata()?.len() < self.size {
                file.set_len(self.size)?;
            }
        }
        Ok(())
    }
}

/// A machine description: everything on the QEMU command line except the
/// kernel, its command line, serial and QMP.
#[derive(Clone, Debug)]
pub struct Machine {
    board: Board,
    memory_mib: u32,
    cpus: u32,
    args: Vec<String>,
    disks: Vec<Disk>,
    /// For each drive and block node: the `blockdev-add` arguments (without
    /// `node-name`) of a second node on the same backing store, for when
    /// QEMU keeps the first one attached to a device it never freed.
    reopen: BTreeMap<String, Value>,
}

impl Default for Machine {
    fn default() -> Self {
        Self::q35()
    }
}

impl Machine {
    /// A bare q35 with ACPI PCI hot-plug off (so root ports use native PCIe
    /// hot-plug) and no devices.
    pub fn q35() -> Self {
        Self {
            board: Board::X86_64,
            memory_mib: 512,
            cpus: 1,
            args: Vec::new(),
            disks: Vec::new(),
            reopen: BTreeMap::new(),
        }
    }

    /// The usual test topology: root ports `rp1` (00:04.0) and `rp2`
    /// (00:05.0) without power controllers, a 1 GiB null block node `null0`
    /// for hot-added controllers, and `nvme0` (serial `deadbeef`) on `rp1`
    /// backed by the raw image `disk`.
    pub fn standard(disk: Disk) -> Self {
        Self::q35()
            .root_port("rp1", 1, 0x4)
            .root_port("rp2", 2, 0x5)
            .null_block("null0", 1 << 30, None)
            .raw_drive("d0", disk)
            .nvme("nvme0", "deadbeef", "d0", "rp1", "")
    }

    /// A PCIe root port on `pcie.0` at device `addr`, with a slot numbered
    /// `chassis` and no power controller.
    pub fn root_port(self, id: &str, chassis: u8, addr: u8) -> Self {
        self.arg("-device").arg(&format!(
            "pcie-root-port,id={id},chassis={chassis},slot={chassis},bus=pcie.0,\
             addr={addr:#x},power_controller_present=off"
        ))
    }

    /// A PCIe root port like [`Machine::root_port`] but with a power
    /// controller, so that Slot Control can cut and restore slot power.
    pub fn powered_root_port(self, id: &str, chassis: u8, addr: u8) -> Self {
        self.arg("-device").arg(&format!(
            "pcie-root-port,id={id},chassis={chassis},slot={chassis},bus=pcie.0,\
             addr={addr:#x},power_controller_present=on"
        ))
    }

    /// A switch behind a new root port `{id}-rp` (slot `chassis`, at device
    /// `addr` of `pcie.0`): its upstream port `{id}-up` and one downstream
    /// port `id` with a hot-plug slot numbered `chassis + 1` and no power
    /// controller.
    pub fn switch(self, id: &str, chassis: u8, addr: u8) -> Self {
        self.switch_with(id, chassis, addr, "off")
    }

    /// A switch like [`Machine::switch`] whose downstream port's slot has a
    /// power controller (QEMU's default for `xio3130-downstream`).
    pub fn powered_switch(self, id: &str, chassis: u8, addr: u8) -> Self {
        self.switch_with(id, chassis, addr, "on")
    }

    fn switch_with(self, id: &str, chassis: u8, addr: u8, power: &str) -> Self {
        let slot = chassis + 1;
        self.root_port(&format!("{id}-rp"), chassis, addr)
            .arg("-device")
            .arg(&format!("x3130-upstream,id={id}-up,bus={id}-rp"))
            .arg("-device")
            .arg(&format!(
                "xio3130-downstream,id={id},bus={id}-up,chassis={slot},slot={slot},\
                 power_controller_present={power}"
            ))
    }

    /// A null block node of `size` bytes that reads zeroes, optionally slow.
    pub fn null_block(mut self, node: &str, size: u64, latency_ns: Option<u64>) -> Self {
        let mut spec = json!({ "driver": "null-co", "size": size, "read-zeroes": true });
        if let Some(ns) = latency_ns {
            spec["latency-ns"] = json!(ns);
        }
        self.reopen.insert(node.to_string(), spec);
        let latency = latency_ns
            .map(|ns| format!(",latency-ns={ns}"))
            .unwrap_or_default();
        self.arg("-blockdev").arg(&format!(
            "driver=null-co,node-name={node},size={size},read-zeroes=on{latency}"
        ))
    }

    /// A raw image as drive `id`.
    pub fn raw_drive(mut self, id: &str, disk: Disk) -> Self {
        let path = disk.path.display().to_string();
        self.disks.push(disk);
        self.reopen.insert(id.to_string(), raw_file(&path, None));
        self.arg("-drive")
            .arg(&format!("if=none,id={id},file={path},format=raw"))
    }

    /// An NVMe controller on `bus` backed by `drive`; `extra` is appended to
    /// its properties (e.g. `",mdts=2"`).
    pub fn nvme(self, id: &str, serial: &str, drive: &str, bus: &str, extra: &str) -> Self {
        self.arg("-device").arg(&format!(
            "nvme,id={id},serial={serial},drive={drive},bus={bus}{extra}"
        ))
    }

    /// An NVMe controller on `bus` without a drive of its own: its
    /// namespaces come from [`Machine::namespace`].
    pub fn nvme_bare(self, id: &str, serial: &str, bus: &str, extra: &str) -> Self {
        self.arg("-device")
            .arg(&format!("nvme,id={id},serial={serial},bus={bus}{extra}"))
    }

    /// Namespace `nsid` of controller `controller`, backed by `drive`, with
    /// `block`-byte logical blocks.
    pub fn namespace(self, controller: &str, nsid: u32, drive: &str, block: u32) -> Self {
        self.arg("-device").arg(&format!(
            "nvme-ns,drive={drive},nsid={nsid},bus={controller},\
             logical_block_size={block},physical_block_size={block}"
        ))
    }

    /// Block node `node`: the raw image `disk` behind `blkdebug`, which fails
    /// every read covering 512-byte sector `sector` with EIO.
    pub fn bad_drive(mut self, node: &str, disk: Disk, sector: u64) -> Self {
        let path = disk.path.display().to_string();
        self.disks.push(disk);
        self.reopen
            .insert(node.to_string(), raw_file(&path, Some(sector)));
        self.arg("-blockdev").arg(&format!(
            "driver=raw,node-name={node},file.driver=blkdebug,\
             file.inject-error.0.event=read_aio,file.inject-error.0.sector={sector},\
             file.inject-error.0.errno=5,file.image.driver=file,file.image.filename={path}"
        ))
    }

    /// Any further QEMU argument.
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_string());
        self
    }

    /// Several further QEMU arguments.
    pub fn args<I: IntoIterator<Item = S>, S: AsRef<str>>(mut self, args: I) -> Self {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_string()));
        self
    }

    /// The same machine on `board` (a `virt` on aarch64: its PCIe host bus
    /// is called `pcie.0` as on q35, so the devices stay as they are).
    pub fn on(mut self, board: Board) -> Self {
        self.board = board;
        self
    }

    /// The same machine with `n` processors. More than one runs under
    /// multi-threaded TCG (one host thread per processor), so they really
    /// run at once; one keeps the single-threaded default.
    pub fn cpus(mut self, n: u32) -> Self {
        self.cpus = n.max(1);
        self
    }

    /// `blockdev-add` arguments (without `node-name`) for a second block
    /// node on the backing store of drive or node `name`, if the machine
    /// made it.
    pub fn reopen(&self, name: &str) -> Option<Value> {
        self.reopen.get(name).cloned()
    }

    /// The disk images the machine needs.
    pub fn disks(&self) -> &[Disk] {
        &self.disks
    }

    /// The full command line: `kernel` booted with `append`, serial on
    /// stdio, QMP on `qmp` (a unix socket path), paused at start if `paused`.
    pub fn command(&self, kernel: &Path, append: &str, qmp: &Path, paused: bool) -> Vec<String> {
        let accel = if self.cpus > 1 {
            "tcg,thread=multi"
        } else {
            "tcg"
        };
        let cpus = self.cpus.to_string();
        let qemu = self.board.qemu();
        let mut cmd: Vec<String> = [
            qemu.as_str(),
            "-accel",
            accel,
            "-smp",
            cpus.as_str(),
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
            "-serial",
            "stdio",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        cmd.extend(self.board.machine_args().iter().map(|s| s.to_string()));
        cmd.push("-m".into());
        cmd.push(self.memory_mib.to_string());
        cmd.push("-qmp".into());
        cmd.push(format!("unix:{},server=on,wait=off", qmp.display()));
        if paused {
            cmd.push("-S".into());
        }
        cmd.extend(self.args.iter().cloned());
        cmd.push("-kernel".into());
        cmd.push(kernel.display().to_string());
        cmd.push("-append".into());
        cmd.push(append.to_string());
        cmd
    }
}

/// A raw image node over `path` with image locking off (the first node on
/// the file may still hold its lock), failing reads of `bad_sector` with
/// EIO when given, as [`Machine::bad_drive`] does.
fn raw_file(path: &str, bad_sector: Option<u64>) -> Value {
    let file = json!({ "driver": "file", "filename": path, "locking": "off" });
    let file = match bad_sector {
        Some(sector) => json!({
            "driver": "blkdebug",
            "inject-error": [{ "event": "read_aio", "sector": sector, "errno": 5 }],
            "image": file,
        }),
        None => file,
    };
    json!({ "driver": "raw", "file": file })
}
