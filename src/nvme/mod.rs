//! NVMe: registers, commands, identify data, queues and the controller.

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
mod tracker;

pub use controller::{Config, Controller, DeviceLink, Namespace, State};
pub use identify::NamespaceRefusal;
pub use io::{Completion, IoOp, Rejected, Token};
pub use qpair::QueueFaults;
