//! What the QEMU boards share, whatever their CPU: the [`Board`] trait each
//! board implements, and everything written against it: the kernel command
//! line, the serial console (marker lines the host runner parses, `print!`
//! and `marker!`), the `log` backend that stamps each line with the board's
//! clock, the counts of the driver's reads, the DMA allocator, the driver as
//! the scenarios run it, the hand that pulls devices, and the scenarios with
//! their runner. Each board brings its boot, paging, timer, UART, firmware
//! tables and any second core.
#![no_std]
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod board;
pub mod clock;
pub mod cmdline;
pub mod console;
pub mod counters;
pub mod dma;
pub mod hand;
pub mod logger;
pub mod nvme;
pub mod pci;
pub mod platform;
pub mod scenario;
pub mod scenarios;

pub use board::Board;
