//! Adapters from [`NamespaceDisk`](crate::block::NamespaceDisk) to the traits of
//! filesystem and partition crates, each behind the cargo feature of the
//! crate's name:
//!
//! - `embedded-sdmmc`: `sdmmc::SdmmcDevice`, its `BlockDevice` (FAT16 and
//!   FAT32 on namespaces of 512-byte blocks), with a view that shows one GPT
//!   partition as the only entry of an MBR;
//! - `gpt_disk_io`: `BlockIo` for `NamespaceDisk` itself (reading and writing
//!   GPT headers and partition tables);
//! - `embedded-io`: `io::ByteStream`, `Read`, `Write` and `Seek` over the
//!   namespace's bytes for byte-addressed filesystem crates.
//!
//! [`format`], with no feature, partitions a namespace (an MBR) and formats
//! FAT32 in it, so that a new disk can be used without a host.

use core::fmt;

use crate::error::Error;

pub mod format;
#[cfg(feature = "embedded-io")]
#[cfg_attr(docsrs, doc(cfg(feature = "embedded-io")))]
pub mod io;
#[cfg(feature = "embedded-sdmmc")]
#[cfg_attr(docsrs, doc(cfg(feature = "embedded-sdmmc")))]
pub mod sdmmc;

#[cfg(feature = "gpt_disk_io")]
mod gpt;

/// A driver [`Error`] as the error type of a foreign trait that needs
/// [`core::error::Error`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdapterError(pub Error);

impl fmt::Display for AdapterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// The driver's error is the cause: `source()` hands it on, so that an
/// error report walking the chain (a filesystem's error holding this one)
/// reaches it.
impl core::error::Error for AdapterError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        Some(&self.0)
    }
}

impl From<Error> for AdapterError {
    fn from(error: Error) -> Self {
        Self(error)
    }
}
