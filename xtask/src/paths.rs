//! Where things live in the repository.

use std::path::PathBuf;

/// The repository root (the driver's workspace).
pub fn root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// Scratch space for disk images and logs (ignored by git).
pub fn work() -> PathBuf {
    root().join(".xtask")
}

/// The cargo that runs us (so nested builds use the same toolchain).
pub fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string())
}
