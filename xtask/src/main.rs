//! `cargo xtask`: build, boot and test bare-nvme.
fn main() {}
