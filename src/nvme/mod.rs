//! NVMe: registers, commands, identify data, queues and the controller.

pub mod command;
pub mod identify;
pub mod regs;
