//! One module per subcommand.

pub mod bench;
pub mod qemu;
pub mod run;
pub mod test;
