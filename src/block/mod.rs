//! Block storage for embedders: a namespace handle validated once, and a
//! blocking block device over ordinary memory on top of it.
//!
//! A [`NamespaceDisk`] reads and writes whole blocks from and to `&mut [u8]` /
//! `&[u8]` through a pool of DMA bounce buffers allocated once (their
//! number and size in [`BounceConfig`]: 4 x 128 KiB by default), or
//! straight from and to the caller's [`DmaRegion`](crate::DmaRegion)
//! (`read_dma`, `write_dma`: no copy). Requests larger than a bounce buffer
//! or the controller's largest transfer are split, and their pieces
//! pipelined: one in flight per bounce buffer. It runs over a [`Driver`](crate::Driver), naming the
//! controller by its [`ControllerId`](crate::ControllerId), or over a
//! standalone [`Controller`](crate::Controller) (pass `None`); both by value
//! or by `&mut`. The `adapters` module puts filesystem crates on top.
//!
//! ```
//! use std::time::Duration;
//!
//! use bare_nvme::block::{NamespaceDisk, BounceConfig};
//! use bare_nvme::{Driver, DriverConfig, Error};
//! use bare_nvme_sim::{ControllerSpec, CtrlId, NamespaceSpec, Sim};
//!
//! let sim = Sim::single(ControllerSpec::default().namespace(NamespaceSpec::new(2048, 512)));
//! let mut driver = Box::new(Driver::<_, _>::new(
//!     sim.platform(),
//!     sim.config_access(),
//!     DriverConfig::default(),
//! ));
//! driver.scan()?;
//! driver.wait_ready(Duration::from_secs(5));
//! let id = driver.ready_controllers().next().ok_or(Error::NotReady)?;
//!
//! let mut disk = NamespaceDisk::open(&mut *driver, Some(id), 1, BounceConfig::default())?;
//! assert_eq!((disk.block_size(), disk.capacity()), (512, 2048));
//! let sector = [0x5A; 512];
//! disk.write(8, &sector)?;
//! let mut back = [0; 512];
//! disk.read(8, &mut back)?;
//! assert_eq!(back, sector);
//! disk.flush()?;
//!
//! // Once the controller is gone, the handle is stale.
//! sim.surprise_remove(CtrlId(0));
//! assert_eq!(disk.read(8, &mut back), Err(Error::DeviceRemoved));
//! assert_eq!(disk.read(8, &mut back), Err(Error::StaleHandle));
//! # Ok::<(), Error>(())
//! ```

mod device;
mod pipeline;
mod target;

pub use crate::nvme::NamespaceHandle;
#[cfg_attr(not(feature = "embedded-sdmmc"), allow(unused_imports))]
pub(crate) use device::Geometry;
pub use device::{
    BounceConfig, NamespaceDisk, DEFAULT_BOUNCE_BUFFERS, DEFAULT_BOUNCE_BYTES, MAX_BOUNCE_BUFFERS,
};
pub use target::BlockTarget;

/// The former name of [`NamespaceDisk`], which read like
/// `embedded_sdmmc::BlockDevice` next to the adapter that implements it.
#[deprecated(note = "renamed to `NamespaceDisk`")]
pub type BlockDevice<T> = NamespaceDisk<T>;
