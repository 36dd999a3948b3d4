//! Prerequisites on a fresh machine: the bare-metal targets and QEMU.

use std::process::Command;

use crate::board::Board;

/// Makes sure `board`'s target and QEMU are there, installing what can be
/// installed. Returns a message saying what to run when something is missing.
pub fn ensure(board: Board) -> Result<(), String> {
    ensure_target(board.target())?;
    ensure_qemu(board)
}

/// Everything `cargo xtask test` needs for `boards`, installed before its
/// first step: rustfmt and clippy, the library targets `targets` and each
/// board's target, and each board's QEMU. (The nightly pieces for Miri and
/// the fuzzer are installed by their own stages, which come first to need
/// them.)
pub fn ensure_for_test(boards: &[Board], targets: &[&str]) -> Result<(), String> {
    ensure_components(&["rustfmt", "clippy"])?;
    for target in targets {
        ensure_target(target)?;
    }
    for &board in boards {
        ensure(board)?;
    }
    Ok(())
}

/// Adds the rustup components `names` to the active toolchain when missing.
fn ensure_components(names: &[&str]) -> Result<(), String> {
    let Ok(installed) = Command::new("rustup")
        .args(["component", "list", "--installed"])
        .output()
    else {
        return Ok(()); // no rustup: the toolchain is managed another way
    };
    let installed = String::from_utf8_lossy(&installed.stdout);
    for name in names {
        if installed
            .lines()
            .any(|l| l.starts_with(&format!("{name}-")))
        {
            continue;
        }
        eprintln!("xtask: installing the {name} component");
        let ok = Command::new("rustup")
            .args(["component", "add", name])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Err(format!(
                "`rustup component add {name}` failed; run it by hand"
            ));
        }
    }
    Ok(())
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

/// The version line of the x86_64 QEMU (the one every catalog run uses
/// first), e.g. `QEMU emulator version 7.2.22 (Debian ...)`, and its path.
pub fn qemu_version() -> String {
    let qemu = Board::X86_64.qemu();
    let version = Command::new(&qemu)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| "unknown version".to_string());
    format!("{qemu}: {version}")
}

/// The x86_64 QEMU's release number (`7.2.22`), or `?`.
pub fn qemu_release() -> String {
    let line = qemu_version();
    line.split_whitespace()
        .skip_while(|w| *w != "version")
        .nth(1)
        .unwrap_or("?")
        .to_string()
}

fn ensure_qemu(board: Board) -> Result<(), String> {
    if qemu_present(board) {
        return Ok(());
    }
    if std::env::var_os(crate::board::QEMU_DIR).is_some() {
        return Err(format!(
            "{} is missing (set by {})",
            board.qemu(),
            crate::board::QEMU_DIR
        ));
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
