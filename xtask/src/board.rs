//! The boards the kernel runs on: where each crate lives, its target, its
//! QEMU and the machine type it boots.

use std::path::PathBuf;

use crate::paths;

/// A QEMU board.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Board {
    /// x86 `q35`, SeaBIOS before a PVH kernel.
    #[default]
    X86_64,
    /// aarch64 `virt` booted with `-kernel`: no firmware configures PCI.
    Aarch64,
}

/// The environment variable naming a directory with the QEMU binaries.
pub const QEMU_DIR: &str = "BARE_NVME_QEMU_DIR";

impl Board {
    /// Every board, in the order `test` runs them.
    pub const ALL: [Board; 2] = [Board::X86_64, Board::Aarch64];

    /// The board's name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Board::X86_64 => "x86_64",
            Board::Aarch64 => "aarch64",
        }
    }

    /// The board named `name` (`x86_64`, `aarch64`, or `q35`, `virt`).
    pub fn parse(name: &str) -> Result<Board, String> {
        match name {
            "x86_64" | "x86" | "q35" => Ok(Board::X86_64),
            "aarch64" | "arm64" | "virt" => Ok(Board::Aarch64),
            other => Err(format!("unknown board {other} (x86_64 or aarch64)")),
        }
    }

    /// The board named by `--board NAME` or `--board=NAME` in `args`, and the
    /// arguments without it; `None` when no board is named.
    pub fn take_option(args: &[String]) -> Result<(Option<Board>, Vec<String>), String> {
        let mut board = None;
        let mut rest = Vec::new();
        let mut iter = args.iter();
        while let Some(arg) = iter.next() {
            if arg == "--" {
                rest.push(arg.clone());
                rest.extend(iter.by_ref().cloned());
                break;
            }
            if let Some(name) = arg.strip_prefix("--board=") {
                board = Some(Board::parse(name)?);
            } else if arg == "--board" {
                let name = iter.next().ok_or("--board needs a name")?;
                board = Some(Board::parse(name)?);
            } else {
                rest.push(arg.clone());
            }
        }
        Ok((board, rest))
    }

    /// The board crate.
    pub fn dir(self) -> PathBuf {
        paths::root().join("boards").join(self.crate_dir())
    }

    fn crate_dir(self) -> &'static str {
        match self {
            Board::X86_64 => "qemu-x86_64",
            Board::Aarch64 => "qemu-aarch64",
        }
    }

    /// The Rust target the kernel is built for.
    pub fn target(self) -> &'static str {
        match self {
            Board::X86_64 => "x86_64-unknown-none",
            Board::Aarch64 => "aarch64-unknown-none",
        }
    }

    /// The kernel image the board build produces.
    pub fn kernel(self) -> PathBuf {
        self.dir()
            .join("target")
            .join(self.target())
            .join("release")
            .join(format!("bare-nvme-{}", self.crate_dir()))
    }

    /// The QEMU binary: `qemu-system-*` from `PATH`, or from the directory
    /// named by `BARE_NVME_QEMU_DIR` (to test with another QEMU than the
    /// distribution's).
    pub fn qemu(self) -> String {
        let name = match self {
            Board::X86_64 => "qemu-system-x86_64",
            Board::Aarch64 => "qemu-system-aarch64",
        };
        match std::env::var_os(QEMU_DIR) {
            Some(dir) if !dir.is_empty() => {
                std::path::Path::new(&dir).join(name).display().to_string()
            }
            _ => name.to_string(),
        }
    }

    /// The Debian package holding [`Board::qemu`].
    pub fn qemu_package(self) -> &'static str {
        match self {
            Board::X86_64 => "qemu-system-x86",
            Board::Aarch64 => "qemu-system-arm",
        }
    }

    /// Machine type and the devices every run has: the exit device and no
    /// ACPI hot-plug on x86 (so root ports use native PCIe hot-plug),
    /// semihosting (the exit status) on aarch64.
    pub fn machine_args(self) -> &'static [&'static str] {
        match self {
            Board::X86_64 => &[
                "-M",
                "q35",
                "-global",
                "ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off",
                "-device",
                "isa-debug-exit,iobase=0xf4,iosize=0x04",
            ],
            Board::Aarch64 => &["-M", "virt", "-cpu", "cortex-a57", "-semihosting"],
        }
    }
}
