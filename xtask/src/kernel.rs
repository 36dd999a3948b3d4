//! Building the board's kernel image.

use std::path::PathBuf;
use std::process::Command;

use crate::paths;

/// Builds the kernel (release) and returns its path.
pub fn build() -> Result<PathBuf, String> {
    let status = Command::new(paths::cargo())
        .args(["build", "--release", "--quiet"])
        .current_dir(paths::board())
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err("building the kernel failed".to_string());
    }
    let kernel = paths::kernel();
    if kernel.exists() {
        Ok(kernel)
    } else {
        Err(format!("kernel not found at {}", kernel.display()))
    }
}
