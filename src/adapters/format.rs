//! Partitioning and formatting a namespace from the embedder's side: an MBR
//! with one partition, and a FAT32 filesystem in it, that embedded-sdmmc
//! (through [`SdmmcDevice`](crate::adapters)) and every other FAT
//! implementation open.
//!
//! No maintained `no_std`, allocation-free crate formats FAT (embedded-sdmmc
//! only reads and writes an existing volume), so this writes the few
//! structures a new volume has: the boot sector and its backup, the FSInfo
//! sector, two FATs with the root directory's cluster taken, and an empty
//! root directory. Cluster sizes follow Microsoft's table for FAT32 (512
//! bytes up to 260 MiB, 4 KiB up to 8 GiB, then 8, 16 and 32 KiB). FAT32
//! needs at least 65,525 clusters: about 33 MiB with 512-byte blocks.
//!
//! ```
//! use std::time::Duration;
//!
//! use bare_nvme::adapters::format;
//! use bare_nvme::block::{BounceConfig, NamespaceDisk};
//! use bare_nvme::{Driver, DriverConfig};
//! use bare_nvme_sim::{ControllerSpec, NamespaceSpec, Sim};
//!
//! // A namespace of 36 MiB in 512-byte blocks.
//! let sim = Sim::single(ControllerSpec::default().namespace(NamespaceSpec::new(73_728, 512)));
//! let mut driver = Box::new(Driver::<_, _>::new(sim.platform(), sim.config_access(), DriverConfig::new()));
//! driver.scan()?;
//! let _ = driver.wait_ready(Duration::from_secs(5));
//! let id = driver.ready_controllers().next().unwrap();
//! let mut disk = NamespaceDisk::open(&mut *driver, Some(id), 1, BounceConfig::new())?;
//!
//! // One partition from 1 MiB to the end, formatted FAT32.
//! let (first, blocks) = (2048, disk.capacity() - 2048);
//! format::write_mbr(&mut disk, first, blocks, 0x2026_0001)?;
//! let layout = format::format_fat32(&mut disk, first, blocks, 0x2026_0001)?;
//! assert_eq!(layout.cluster_bytes, 512);
//! assert!(layout.clusters >= 65_525);
//! disk.flush()?;
//! # Ok::<(), bare_nvme::Error>(())
//! ```

use crate::block::{BlockTarget, NamespaceDisk};
use crate::error::{Error, Result};

/// MBR partition type of FAT32 with LBA addressing.
pub const FAT32_LBA: u8 = 0x0C;
/// Fewest clusters a FAT32 volume has (fewer make it FAT16 to every reader).
pub const MIN_FAT32_CLUSTERS: u64 = 65_525;
/// Most clusters a FAT32 volume may have.
const MAX_FAT32_CLUSTERS: u64 = 0x0FFF_FFF5;
/// Reserved sectors before the first FAT, as Microsoft's formatter uses.
const RESERVED: u64 = 32;
const FATS: u64 = 2;
/// Where the FSInfo sector and the backup boot sector are.
const FSINFO: u64 = 1;
const BACKUP: u64 = 6;
/// The root directory's cluster.
const ROOT_CLUSTER: u32 = 2;
/// Largest block handled (one stack buffer).
const MAX_BLOCK: usize = 4096;

/// Where a formatted volume's parts lie, in blocks from the partition's
/// start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Fat32Layout {
    /// Bytes per cluster.
    pub cluster_bytes: u32,
    /// Blocks of each of the two FATs.
    pub fat_blocks: u64,
    /// Clusters of the data region.
    pub clusters: u64,
    /// The first block of the data region (the root directory's cluster).
    pub data_start: u64,
}

/// Writes block 0 as an MBR whose only partition is the `blocks` blocks at
/// `first`, of type [`FAT32_LBA`]; `disk_id` is the disk signature. The
/// partition must lie inside the namespace and be addressable in 32 bits.
pub fn write_mbr<T: BlockTarget>(
    disk: &mut NamespaceDisk<T>,
    first: u64,
    blocks: u64,
    disk_id: u32,
) -> Result<()> {
    let bs = block_size(disk)?;
    check_range(disk, first, blocks)?;
    let (Ok(start), Ok(count)) = (u32::try_from(first), u32::try_from(blocks)) else {
        return Err(Error::InvalidArgument {
            what: "an MBR entry addresses at most 2^32 blocks",
        });
    };
    let mut block = [0u8; MAX_BLOCK];
    let mbr = &mut block[..bs];
    put32(mbr, 440, disk_id);
    let entry = &mut mbr[446..462];
    // CHS fields say "use LBA", as for any partition past 8 GiB.
    entry[1..4].copy_from_slice(&[0xFE, 0xFF, 0xFF]);
    entry[4] = FAT32_LBA;
    entry[5..8].copy_from_slice(&[0xFE, 0xFF, 0xFF]);
    put32(entry, 8, start);
    put32(entry, 12, count);
    mbr[510..512].copy_from_slice(&[0x55, 0xAA]);
    disk.write(0, mbr)
}

/// Formats the `blocks` blocks at `first` as an empty FAT32 volume (label
/// `NO NAME`, serial number `volume_id`). Everything the volume's
/// structures cover is written; the data region's other clusters are left
/// as they are (they are free in the new FATs). Not flushed.
pub fn format_fat32<T: BlockTarget>(
    disk: &mut NamespaceDisk<T>,
    first: u64,
    blocks: u64,
    volume_id: u32,
) -> Result<Fat32Layout> {
    let bs = block_size(disk)?;
    check_range(disk, first, blocks)?;
    let layout = layout(bs as u64, blocks)?;
    let spc = (layout.cluster_bytes as usize / bs) as u64;
    let too_large = Error::InvalidArgument {
        what: "a FAT32 volume has at most 2^32 blocks",
    };
    let hidden = u32::try_from(first).map_err(|_| too_large)?;
    let total = u32::try_from(blocks).map_err(|_| too_large)?;

    let zero = [0u8; MAX_BLOCK];
    let mut block = [0u8; MAX_BLOCK];
    // Reserved area, both FATs, the root directory's cluster: zeroes first.
    zero_blocks(disk, first, layout.data_start + spc, &zero[..])?;

    let boot = &mut block[..bs];
    boot[0..3].copy_from_slice(&[0xEB, 0x58, 0x90]);
    boot[3..11].copy_from_slice(b"BARENVME");
    put16(boot, 11, bs as u16);
    boot[13] = spc as u8;
    put16(boot, 14, RESERVED as u16);
    boot[16] = FATS as u8;
    boot[21] = 0xF8; // fixed media
    put16(boot, 24, 63); // sectors per track and heads: unused with LBA
    put16(boot, 26, 255);
    put32(boot, 28, hidden);
    put32(boot, 32, total);
    put32(boot, 36, layout.fat_blocks as u32);
    put32(boot, 44, ROOT_CLUSTER);
    put16(boot, 48, FSINFO as u16);
    put16(boot, 50, BACKUP as u16);
    boot[64] = 0x80; // drive number
    boot[66] = 0x29; // the next three fields are valid
    put32(boot, 67, volume_id);
    boot[71..82].copy_from_slice(b"NO NAME    ");
    boot[82..90].copy_from_slice(b"FAT32   ");
    boot[510..512].copy_from_slice(&[0x55, 0xAA]);
    disk.write(first, boot)?;
    disk.write(first + BACKUP, boot)?;

    let info = &mut block[..bs];
    info.fill(0);
    put32(info, 0, 0x4161_5252);
    put32(info, 484, 0x6141_7272);
    // Free clusters: all but the root directory's; the next one to try.
    put32(info, 488, (layout.clusters - 1) as u32);
    put32(info, 492, ROOT_CLUSTER + 1);
    put32(info, 508, 0xAA55_0000);
    disk.write(first + FSINFO, info)?;
    disk.write(first + BACKUP + FSINFO, info)?;

    // FAT entries 0 and 1 (media, clean shutdown) and the root directory's
    // cluster, a chain of one.
    let fat = &mut block[..bs];
    fat.fill(0);
    put32(fat, 0, 0x0FFF_FFF8);
    put32(fat, 4, 0x0FFF_FFFF);
    put32(fat, 8, 0x0FFF_FFFF);
    for copy in 0..FATS {
        disk.write(first + RESERVED + copy * layout.fat_blocks, fat)?;
    }
    Ok(layout)
}

/// The layout of a FAT32 volume of `blocks` blocks of `bs` bytes.
fn layout(bs: u64, blocks: u64) -> Result<Fat32Layout> {
    let bytes = blocks.saturating_mul(bs);
    let cluster_bytes: u64 = match bytes {
        b if b <= 260 << 20 => 512,
        b if b <= 8 << 30 => 4 << 10,
        b if b <= 16 << 30 => 8 << 10,
        b if b <= 32 << 30 => 16 << 10,
        _ => 32 << 10,
    };
    let cluster_bytes = cluster_bytes.max(bs);
    let spc = cluster_bytes / bs;
    let after_reserved = blocks.saturating_sub(RESERVED);
    // Enough FAT for every cluster the rest could hold (an upper bound:
    // the FATs themselves take some of it), plus entries 0 and 1.
    let fat_blocks = ((after_reserved / spc + 2) * 4).div_ceil(bs);
    let clusters = after_reserved.saturating_sub(FATS * fat_blocks) / spc;
    if clusters < MIN_FAT32_CLUSTERS {
        return Err(Error::InvalidArgument {
            what: "too small for FAT32 (65,525 clusters)",
        });
    }
    if clusters > MAX_FAT32_CLUSTERS {
        return Err(Error::InvalidArgument {
            what: "too large for FAT32",
        });
    }
    Ok(Fat32Layout {
        cluster_bytes: cluster_bytes as u32,
        fat_blocks,
        clusters,
        data_start: RESERVED + FATS * fat_blocks,
    })
}

fn block_size<T: BlockTarget>(disk: &NamespaceDisk<T>) -> Result<usize> {
    let bs = disk.block_size() as usize;
    if !(512..=MAX_BLOCK).contains(&bs) {
        return Err(Error::InvalidArgument {
            what: "FAT needs blocks of 512 to 4096 bytes",
        });
    }
    Ok(bs)
}

fn check_range<T: BlockTarget>(disk: &NamespaceDisk<T>, first: u64, blocks: u64) -> Result<()> {
    let end = first.checked_add(blocks);
    if first == 0 || blocks == 0 || end.is_none_or(|end| end > disk.capacity()) {
        return Err(Error::LbaOutOfRange {
            lba: first,
            blocks,
            capacity: disk.capacity(),
        });
    }
    Ok(())
}

/// Writes zeroes over `count` blocks at `lba`, a buffer's worth at a time.
fn zero_blocks<T: BlockTarget>(
    disk: &mut NamespaceDisk<T>,
    lba: u64,
    count: u64,
    zero: &[u8],
) -> Result<()> {
    let bs = disk.block_size() as u64;
    let per = zero.len() as u64 / bs;
    let mut done = 0;
    while done < count {
        let n = per.min(count - done);
        disk.write(lba + done, &zero[..(n * bs) as usize])?;
        done += n;
    }
    Ok(())
}

fn put16(buf: &mut [u8], at: usize, value: u16) {
    buf[at..at + 2].copy_from_slice(&value.to_le_bytes());
}

fn put32(buf: &mut [u8], at: usize, value: u32) {
    buf[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_sizes_follow_the_fat32_table_and_small_volumes_are_refused() {
        let mib = |m: u64| (m << 20) / 512;
        assert!(layout(512, mib(32)).is_err(), "fewer than 65,525 clusters");
        let l = layout(512, mib(36)).unwrap();
        assert_eq!(l.cluster_bytes, 512);
        assert!(l.clusters >= MIN_FAT32_CLUSTERS);
        assert_eq!(layout(512, mib(1024)).unwrap().cluster_bytes, 4096);
        assert_eq!(layout(512, mib(10 << 10)).unwrap().cluster_bytes, 8192);
        assert_eq!(layout(4096, (1 << 30) / 4096).unwrap().cluster_bytes, 4096);
        // Every cluster has a FAT entry, entries 0 and 1 included.
        for blocks in [mib(36), mib(100), mib(5000)] {
            let l = layout(512, blocks).unwrap();
            assert!((l.clusters + 2) * 4 <= l.fat_blocks * 512);
            let spc = l.cluster_bytes as u64 / 512;
            assert!(l.data_start + l.clusters * spc <= blocks);
        }
    }
}
