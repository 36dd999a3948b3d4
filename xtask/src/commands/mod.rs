//! One module per subcommand.

pub mod bench;
pub mod fuzz;
pub mod qemu;
pub mod run;
pub mod soak;
pub mod test;
