//! Host benchmark harness for bare-nvme.
//!
//! - [`device`]: the simulated controller behind a platform wrapper that
//!   defers I/O doorbells, so the device works outside measured code and
//!   EventIdx behaves as on a busy controller; all register accesses counted.
//! - [`rig`]: a driver brought up on that device, with the measured submit
//!   and poll functions (`#[inline(never)]`, named for callgrind's
//!   `--toggle-collect`).
//! - [`reference`]: the minimal polling loop the driver is compared with.
//! - [`many`]: the tick with 16 controllers (register, config reads, time).
//!
//! The `iobench` binary runs one of them; `cargo xtask bench` runs it under
//! callgrind and collects the table.

pub mod device;
pub mod many;
pub mod reference;
pub mod rig;

/// Size of one I/O: 4 KiB.
pub const IO_BYTES: usize = 4096;
/// Blocks of the benchmark namespace (4 KiB blocks, 1 GiB).
pub const NAMESPACE_BLOCKS: u64 = 1 << 18;

/// Pseudo-random block addresses (xorshift), fixed seed, computed before
/// measuring so that neither loop pays for them.
pub fn random_lbas(n: usize) -> Vec<u64> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x & (NAMESPACE_BLOCKS - 1)
        })
        .collect()
}
