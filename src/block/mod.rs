//! Block storage for embedders: a namespace handle validated once, and a
//! blocking block device over ordinary memory on top of it.
//!
//! ```ignore
//! use bare_nvme::block::{BlockDevice, BounceConfig};
//!
//! let mut disk = BlockDevice::open(&mut driver, Some(id), 1, BounceConfig::default())?;
//! let mut sector = [0u8; 512];
//! disk.read(0, &mut sector)?;
//! disk.write(8, &sector)?;
//! disk.flush()?;
//! ```

mod device;
mod handle;
mod target;

pub use device::{BlockDevice, BounceConfig, DEFAULT_BOUNCE_BYTES};
pub use handle::NamespaceHandle;
pub use target::BlockTarget;
