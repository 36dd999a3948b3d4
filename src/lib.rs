//! # bare-nvme
//!
//! A `no_std`, allocation-free, polled NVMe driver for firmware, unikernels and
//! bare-metal appliances. It enumerates PCI itself, brings controllers up, serves
//! block I/O by polling, and watches for hot-add and surprise removal from a timer
//! tick the embedder calls: no OS, no interrupts, no allocator.
//!
//! The embedder implements [`Platform`] (DMA memory, register mapping, a clock) and
//! hands the driver a [`ConfigRegionAccess`](https://docs.rs/pci_types/0.10/pci_types/trait.ConfigRegionAccess.html) for
//! PCI configuration space (the [`pci::access`] module has port I/O and ECAM
//! implementations). Everything else is the driver's.
//!
//! # Quick start
//!
//! ## 1. The platform
//!
//! Zeroed, physically contiguous DMA memory with its device address, a
//! mapping of device registers, a monotonic clock. A board whose RAM is
//! identity-mapped (CPU address = device address) and whose DMA is coherent
//! needs no more than this:
//!
//! ```no_run
//! use core::ptr::NonNull;
//!
//! use bare_nvme::{DmaRegion, Instant, MmioRegisters, PhysAddr, Platform};
//!
//! /// The board's own services (a page allocator, a timer), declared here.
//! mod board {
//!     pub fn alloc_zeroed(_len: usize, _align: usize) -> Option<usize> { unimplemented!() }
//!     pub fn free(_addr: usize, _len: usize) { unimplemented!() }
//!     pub fn nanoseconds() -> u64 { unimplemented!() }
//! }
//!
//! #[derive(Clone, Copy)]
//! struct Board;
//!
//! impl Platform for Board {
//!     type Registers = MmioRegisters;
//!
//!     fn dma_alloc(&self, len: usize, align: usize) -> Option<DmaRegion> {
//!         let addr = board::alloc_zeroed(len, align)?;
//!         // SAFETY: `len` zeroed bytes at `addr`, owned by the region until
//!         // `dma_free`; identity-mapped, so `addr` is the device address too.
//!         Some(unsafe { DmaRegion::new(NonNull::new(addr as *mut u8)?, PhysAddr::new(addr as u64), len) })
//!     }
//!
//!     fn dma_free(&self, region: DmaRegion) {
//!         board::free(region.virt().as_ptr() as usize, region.len());
//!     }
//!
//!     fn map_registers(&self, phys: PhysAddr, len: usize) -> Option<MmioRegisters> {
//!         // SAFETY: the board maps every BAR window as device memory.
//!         Some(unsafe { MmioRegisters::new(NonNull::new(phys.as_u64() as *mut u8)?, len) })
//!     }
//!
//!     fn now(&self) -> Instant {
//!         Instant::from_nanos(board::nanoseconds())
//!     }
//! }
//! ```
//!
//! A board whose devices do not snoop the CPU caches also implements
//! [`Platform::dma_flush`] and [`Platform::dma_invalidate`].
//!
//! ## 2. The driver and its tick
//!
//! [`Driver::scan`] enumerates PCI and attaches every NVMe controller;
//! [`Driver::tick`], called every 1-10 ms, brings them up, watches them and
//! reports what happened, each [`Event`] exactly once:
//!
//! ```no_run
//! use core::time::Duration;
//!
//! use bare_nvme::pci_types::ConfigRegionAccess;
//! use bare_nvme::{Driver, DriverConfig, Event, Platform};
//!
//! fn run<P: Platform + Clone, C: ConfigRegionAccess + Clone>(platform: P, config_space: C) {
//!     // `Driver::new_in` builds a large driver where it is to live instead.
//!     let mut driver: Driver<P, C> = Driver::new(platform.clone(), config_space, DriverConfig::new());
//!     let _attached = driver.scan();
//!     loop {
//!         for event in driver.tick() {
//!             match event {
//!                 Event::Ready { id, .. } => { /* serve it: a block device, below */ }
//!                 Event::Removed { .. } => {
//!                     // The commands it failed come back once, with their
//!                     // buffers; its table entry is free after that.
//!                     driver.collect_finished(|_id, failed| {
//!                         if let Some(buffer) = failed.buffer {
//!                             platform.dma_free(buffer);
//!                         }
//!                     });
//!                 }
//!                 _ => {}
//!             }
//!         }
//!         // Wait about a millisecond (the board's timer), then tick again.
//!     }
//! }
//! ```
//!
//! ## 3. A block device
//!
//! [`block::NamespaceDisk`] reads and writes whole blocks from ordinary
//! memory (bounce buffers of DMA memory allocated once) or, without a copy,
//! from DMA memory. It borrows the driver, so it lives between ticks:
//!
//! ```no_run
//! use bare_nvme::block::{BounceConfig, NamespaceDisk};
//! use bare_nvme::pci_types::ConfigRegionAccess;
//! use bare_nvme::{ControllerId, Driver, Platform};
//!
//! fn save<P: Platform + Clone, C: ConfigRegionAccess + Clone>(
//!     driver: &mut Driver<P, C>,
//!     id: ControllerId,
//! ) -> bare_nvme::Result<()> {
//!     // Namespace 1 of controller `id`.
//!     let mut disk = NamespaceDisk::open(driver, Some(id), 1, BounceConfig::new())?;
//!     let mut sector = [0u8; 512];
//!     disk.read(0, &mut sector[..disk.block_size() as usize])?;
//!     disk.write(0, &sector[..disk.block_size() as usize])?;
//!     disk.flush()
//! }
//! ```
//!
//! The [`adapters`] put filesystem crates on top (FAT through
//! embedded-sdmmc, GPT through gpt_disk_io, byte streams through
//! embedded-io), each behind the cargo feature of its name.
//!
//! ## 4. Testing it on the host
//!
//! The simulated device, the crate `bare-nvme-sim` (a dev-dependency),
//! stands in for the platform and the hardware: the same code runs under
//! `cargo test`, with a virtual clock, and faults on demand (here, a
//! surprise removal). The simulation checks itself when its last handle
//! goes: no wild DMA, no memory freed while the device could reach it.
//!
//! ```
//! use std::time::Duration;
//!
//! use bare_nvme::block::{BounceConfig, NamespaceDisk};
//! use bare_nvme::{heapless, Driver, DriverConfig, Error, Event, MAX_EVENTS};
//! use bare_nvme_sim::{ControllerSpec, CtrlId, NamespaceSpec, Sim};
//!
//! // One hot-plug slot, a controller with 2048 blocks of 512 bytes.
//! let sim = Sim::single(ControllerSpec::default().namespace(NamespaceSpec::new(2048, 512)));
//! // The driver's tables are large for a test thread's stack: box it.
//! let mut driver = Box::new(Driver::<_, _>::new(
//!     sim.platform(),
//!     sim.config_access(),
//!     DriverConfig::new(),
//! ));
//! driver.scan()?;
//!
//! // The tick loop, on the simulation's clock.
//! let mut tick = |driver: &mut Driver<_, _>| -> heapless::Vec<Event, MAX_EVENTS> {
//!     sim.advance(Duration::from_millis(1));
//!     driver.tick()
//! };
//! let mut ready = None;
//! while ready.is_none() {
//!     ready = tick(&mut driver).into_iter().find_map(|event| match event {
//!         Event::Ready { id, .. } => Some(id),
//!         _ => None,
//!     });
//! }
//! let id = ready.unwrap();
//!
//! let mut disk = NamespaceDisk::open(&mut *driver, Some(id), 1, BounceConfig::new())?;
//! disk.write(8, &[0x5A; 1024])?;
//! let mut back = [0; 1024];
//! disk.read(8, &mut back)?;
//! assert_eq!(back, [0x5A; 1024]);
//! drop(disk);
//!
//! // The controller is pulled: one `Removed`, then the disk's handle is stale.
//! sim.surprise_remove(CtrlId(0));
//! let removed = (0..100)
//!     .flat_map(|_| tick(&mut driver))
//!     .filter(|event| matches!(event, Event::Removed { .. }))
//!     .count();
//! assert_eq!(removed, 1);
//! # Ok::<(), Error>(())
//! ```
//!
//! The crate `bare-nvme-sim` has more: commands in flight at a removal, a
//! re-insert of the same disk, hangs, lost completions, power loss.
//!
//! # Features
//!
//! Each adapter is behind the cargo feature of its crate's name, off by
//! default (the documentation on docs.rs has them all, each marked with its
//! feature):
//!
//! | feature | what |
//! |---|---|
//! | `embedded-sdmmc` | `adapters::sdmmc::SdmmcDevice`: FAT16/FAT32 through embedded-sdmmc on namespaces of 512-byte blocks |
//! | `gpt_disk_io` | `gpt_disk_io::BlockIo` for [`block::NamespaceDisk`]: GPT headers and partition tables |
//! | `embedded-io` | `adapters::io::ByteStream`: `Read`, `Write`, `Seek` over a namespace's bytes |
//!
//! # Where to read on
//!
//! - [`Driver`]: enumeration, attach, the tick, hot-plug;
//! - [`Controller`]: one controller, with the driver or on its own
//!   (blocking and split-phase I/O, log pages, features, admin passthrough);
//! - [`nvme::share`]: one I/O queue per core;
//! - [`block`] and [`adapters`]: block devices and filesystems;
//! - [`Error`] and [`Event`]: what calls and the tick report.
//!
//! The repository's README has the guarantees (when memory returns, how a
//! removal is told from a failure, how long every wait is) and the design.
#![cfg_attr(not(test), no_std)]
#![cfg_attr(docsrs, feature(doc_cfg))]
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

// Crates whose types appear in this crate's API (the event lists,
// configuration access): embedders name them through these re-exports and
// need no version of their own that must match.
pub use heapless;
pub use pci_types;

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
