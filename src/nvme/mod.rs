//! NVMe: registers, commands, identify data, queues and the controller.

mod admin;
mod barrier;
mod bringup;
mod config;
pub mod controller;
mod detach;
mod detach_flushes;
mod engine;
mod event_state;
pub mod events;
pub mod features;
mod handle;
pub mod identify;
mod io;
mod kept;
mod lifecycle;
pub mod logs;
mod namespaces;
mod pages;
pub mod passthrough;
mod prp;
mod qpair;
mod queue;
pub mod recovery;
mod recovery_state;
pub mod share;
mod shared;
mod shared_memory;
mod teardown;
#[cfg(test)]
mod test_memory;
mod tracker;

pub use controller::{Controller, ControllerConfig, Namespace, Quarantine, State};
pub use events::Notice;
pub use features::Threshold;
pub use handle::NamespaceHandle;
pub use identify::NamespaceRefusal;
pub use io::{Completion, IoOp, QueueId, Rejected, Token};
pub use logs::{LogData, LogPage, LogRequest};
pub use qpair::QueueFaults;
pub use share::{IoQueue, IoQueues, Monitor, Share};

/// The specification's definitions, under the names the driver has always used.
pub use crate::spec::{command, log, regs};
