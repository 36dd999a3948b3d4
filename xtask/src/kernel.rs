//! Building a board's kernel image.

use std::path::PathBuf;
use std::process::Command;

use crate::board::Board;
use crate::paths;

/// Builds the kernel of `board` (release) and returns its path.
pub fn build(board: Board) -> Result<PathBuf, String> {
    let status = Command::new(paths::cargo())
        .args(["build", "--release", "--quiet"])
        .current_dir(board.dir())
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("building the {} kernel failed", board.name()));
    }
    let kernel = board.kernel();
    if kernel.exists() {
        Ok(kernel)
    } else {
        Err(format!("kernel not found at {}", kernel.display()))
    }
}
