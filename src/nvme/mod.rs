//! NVMe: registers, commands, identify data, queues and the controller.

mod barrier;
mod bringup;
pub mod command;
pub mod controller;
pub mod identify;
mod io;
mod prp;
mod qpair;
mod queue;
pub mod recovery;
pub mod regs;
mod shared_memory;
#[cfg(test)]
mod test_memory;
mod tracker;

pub use controller::{Config, Controller, DeviceLink, Namespace, State};
pub use io::{Completion, IoOp, Rejected, Token};
pub use qpair::QueueFaults;
