//! `cargo xtask bench`: I/O benchmarks under QEMU.
//!
//! Reserved: it will boot the kernel with a `bench` scenario once the driver
//! serves I/O, and print throughput and latency from its `@@RESULT` lines.

/// Runs the benchmarks.
pub fn main(_args: &[String]) -> Result<(), String> {
    Err("bench is not implemented yet: the kernel has no bench scenario".to_string())
}
