//! # bare-nvme
//!
//! A `no_std`, allocation-free, polled NVMe driver for firmware, unikernels and
//! bare-metal appliances. It enumerates PCI itself, brings controllers up, serves
//! block I/O by polling, and watches for hot-add and surprise removal from a timer
//! tick the embedder calls: no OS, no interrupts, no allocator.
//!
//! The embedder implements [`Platform`] (DMA memory, register mapping, a clock) and
//! hands the driver a [`pci_types::ConfigRegionAccess`] (the [`pci::access`] module
//! has port I/O and ECAM implementations).
#![cfg_attr(not(test), no_std)]
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod adapters;
pub mod block;
mod driver;
pub mod error;
mod event;
pub mod link;
pub mod nvme;
pub mod pci;
pub mod platform;
pub mod spec;

/// README's examples, compiled and checked by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeExamples;

pub use driver::{Driver, DriverConfig, DriverController, MAX_CONTROLLERS, MAX_EVENTS};
pub use error::{Error, Result, Wait};
pub use event::{ControllerId, Detection, Event, SlotFault};
pub use link::{DeviceLink, DmaStop, Presence};
pub use nvme::{
    Completion, Controller, ControllerConfig, IoOp, IoQueue, IoQueues, LogData, LogPage, Monitor,
    Namespace, NamespaceRefusal, Notice, Quarantine, QueueId, Rejected, State, Threshold, Token,
};
pub use pci::link::PciLink;
pub use platform::{
    DmaRegion, DmaView, DmaViewMut, Instant, MmioRegisters, PhysAddr, Platform, RegisterAccess,
};
