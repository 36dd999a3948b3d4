//! Prerequisites on a fresh machine: the bare-metal targets and QEMU.

use std::process::Command;

use crate::board::Board;

/// Makes sure `board`'s target and QEMU are there, installing what can be
/// installed. Returns a message saying what to run when something is missing.
pub fn ensure(board: Board) -> Result<(), String> {
    ensure_target(board.target())?;
    ensure_qemu(board)
}

/// Makes sure the Rust standard library for `target` is installed, adding it
/// with rustup when missing.
pub fn ensure_target(target: &str) -> Result<(), String> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    let Ok(installed) = installed else {
        // Without rustup the toolchain manages its targets another way; the
        // build will say if the target is missing.
        return Ok(());
    };
    if String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|l| l.trim() == target)
    {
        return Ok(());
    }
    eprintln!("xtask: installing the {target} target");
    let status = Command::new("rustup")
        .args(["target", "add", target])
        .status()
        .map_err(|e| format!("cannot run rustup: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "`rustup target add {target}` failed; run it by hand"
        ))
    }
}

fn qemu_present(board: Board) -> bool {
    Command::new(board.qemu())
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn ensure_qemu(board: Board) -> Result<(), String> {
    if qemu_present(board) {
        return Ok(());
    }
    let install = format!(
        "apt-get update && apt-get install -y {}",
        board.qemu_package()
    );
    if !is_root() {
        return Err(format!(
            "{} is missing; install it with: sudo sh -c '{install}'",
            board.qemu()
        ));
    }
    eprintln!("xtask: installing QEMU ({install})");
    let status = Command::new("sh")
        .args(["-c", &install])
        .status()
        .map_err(|e| format!("cannot run apt-get: {e}"))?;
    if status.success() && qemu_present(board) {
        Ok(())
    } else {
        Err(format!("installing QEMU failed; run `{install}` by hand"))
    }
}
