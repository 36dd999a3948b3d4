//! Disk images with a GPT and one FAT partition holding files: made on the
//! host for the filesystem scenarios (and the host tests of the adapters),
//! and read back after a run to check what the guest wrote.
//!
//! The partition table is written with `gpt_disk_io` (the crate the guest
//! reads it with), the filesystem with `fatfs`, a FAT implementation
//! independent of the guest's (embedded-sdmmc), so a file the guest wrote
//! is checked by a second reader.

use std::io::{self, Read, Seek, SeekFrom, Write};

use gpt_disk_io::gpt_disk_types::{
    guid, BlockSize, GptHeader, GptPartitionEntry, GptPartitionEntryArray, GptPartitionType, Lba,
    LbaLe, U32Le,
};
use gpt_disk_io::{BlockIoAdapter, Disk};

/// Block size of the images.
pub const BLOCK: u64 = 512;
/// First block of the FAT partition (1 MiB, as partitioning tools align).
pub const FIRST_LBA: u64 = 2048;
/// Blocks of the GPT's partition entry array (128 entries of 128 bytes).
const ENTRY_BLOCKS: u64 = 32;

/// Where the FAT partition lies, in blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Partition {
    /// First block.
    pub first: u64,
    /// Number of blocks.
    pub blocks: u64,
}

/// Writes a GPT over `disk_bytes` of `image` with one basic-data partition
/// of `partition_blocks` blocks at [`FIRST_LBA`], formats it as FAT32 with
/// 512-byte clusters (at least 65525 of them: 33 MiB) and stores `files`
/// (8.3 names) in its root directory.
pub fn create<S: Read + Write + Seek>(
    image: &mut S,
    disk_bytes: u64,
    partition_blocks: u64,
    files: &[(&str, &[u8])],
) -> io::Result<Partition> {
    let blocks = disk_bytes / BLOCK;
    let last_usable = blocks - 2 - ENTRY_BLOCKS;
    if FIRST_LBA + partition_blocks > last_usable {
        return Err(io::Error::other("partition does not fit the disk"));
    }
    let partition = Partition {
        first: FIRST_LBA,
        blocks: partition_blocks,
    };
    write_gpt(image, blocks, partition)?;
    let mut volume = Slice::new(image, partition)?;
    let options = fatfs::FormatVolumeOptions::new()
        .fat_type(fatfs::FatType::Fat32)
        .bytes_per_cluster(512)
        .volume_label(*b"BARE-NVME  ");
    fatfs::format_volume(&mut volume, options)?;
    volume.seek(SeekFrom::Start(0))?;
    let fs = fatfs::FileSystem::new(&mut volume, fatfs::FsOptions::new())?;
    for (name, contents) in files {
        let mut file = fs.root_dir().create_file(name)?;
        file.write_all(contents)?;
        file.flush()?;
    }
    fs.unmount()?;
    image.flush()?;
    Ok(partition)
}

/// [`create`] on a new image file at `path` of `disk_bytes` bytes (its
/// directory made, an old file replaced).
pub fn create_file(
    path: &std::path::Path,
    disk_bytes: u64,
    partition_blocks: u64,
    files: &[(&str, &[u8])],
) -> Result<Partition, String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    file.set_len(disk_bytes).map_err(|e| e.to_string())?;
    create(&mut file, disk_bytes, partition_blocks, files)
        .map_err(|e| format!("making the filesystem: {e}"))
}

fn write_gpt<S: Read + Write + Seek>(
    image: &mut S,
    blocks: u64,
    part: Partition,
) -> io::Result<()> {
    let bs = BlockSize::BS_512;
    let mut disk = Disk::new(BlockIoAdapter::new(&mut *image, bs)).map_err(gpt_error)?;
    let mut primary = GptHeader {
        my_lba: LbaLe::from_u64(1),
        alternate_lba: LbaLe::from_u64(blocks - 1),
        first_usable_lba: LbaLe::from_u64(2 + ENTRY_BLOCKS),
        last_usable_lba: LbaLe::from_u64(blocks - 2 - ENTRY_BLOCKS),
        disk_guid: guid!("6b1f1a1e-7c3d-4b8e-9a55-0d2f6e4c3b21"),
        partition_entry_lba: LbaLe::from_u64(2),
        number_of_partition_entries: U32Le::from_u32(128),
        ..Default::default()
    };
    let layout = primary
        .get_partition_entry_array_layout()
        .map_err(|e| io::Error::other(format!("{e}")))?;
    let mut bytes = vec![0; (ENTRY_BLOCKS * BLOCK) as usize];
    let mut entries = GptPartitionEntryArray::new(layout, bs, &mut bytes)
        .map_err(|e| io::Error::other(format!("{e}")))?;
    *entries
        .get_partition_entry_mut(0)
        .ok_or_else(|| io::Error::other("no entry 0"))? = GptPartitionEntry {
        partition_type_guid: GptPartitionType::BASIC_DATA,
        unique_partition_guid: guid!("0c4a3f57-2b8d-4e61-8f0a-5d9e7b1c2a43"),
        starting_lba: LbaLe::from_u64(part.first),
        ending_lba: LbaLe::from_u64(part.first + part.blocks - 1),
        attributes: Default::default(),
        name: "data".parse().map_err(|_| io::Error::other("name"))?,
    };
    primary.partition_entry_array_crc32 = entries.calculate_crc32();
    primary.update_header_crc32();
    let mut secondary = GptHeader {
        my_lba: LbaLe::from_u64(blocks - 1),
        alternate_lba: LbaLe::from_u64(1),
        partition_entry_lba: LbaLe::from_u64(blocks - 1 - ENTRY_BLOCKS),
        ..primary
    };
    secondary.update_header_crc32();
    let mut block = vec![0u8; BLOCK as usize];
    disk.write_protective_mbr(&mut block).map_err(gpt_error)?;
    disk.write_primary_gpt_header(&primary, &mut block)
        .map_err(gpt_error)?;
    disk.write_secondary_gpt_header(&secondary, &mut block)
        .map_err(gpt_error)?;
    disk.write_gpt_partition_entry_array(&entries)
        .map_err(gpt_error)?;
    entries.set_start_lba(Lba(blocks - 1 - ENTRY_BLOCKS));
    disk.write_gpt_partition_entry_array(&entries)
        .map_err(gpt_error)?;
    disk.flush().map_err(gpt_error)
}

fn gpt_error<E: std::fmt::Display>(e: E) -> io::Error {
    io::Error::other(format!("GPT: {e}"))
}

/// The first basic-data partition of the GPT on `image`.
pub fn find_partition<S: Read + Write + Seek>(image: &mut S) -> io::Result<Partition> {
    let mut disk =
        Disk::new(BlockIoAdapter::new(&mut *image, BlockSize::BS_512)).map_err(gpt_error)?;
    let mut block = vec![0u8; BLOCK as usize];
    let header = disk
        .read_primary_gpt_header(&mut block)
        .map_err(gpt_error)?;
    if !header.is_signature_valid() || header.header_crc32 != header.calculate_header_crc32() {
        return Err(io::Error::other("no valid primary GPT header"));
    }
    let layout = header
        .get_partition_entry_array_layout()
        .map_err(|e| io::Error::other(format!("{e}")))?;
    for entry in disk
        .gpt_partition_entry_array_iter(layout, &mut block)
        .map_err(gpt_error)?
    {
        let entry = entry.map_err(gpt_error)?;
        let kind = { entry.partition_type_guid };
        if entry.is_used() && kind == GptPartitionType::BASIC_DATA {
            let range = entry
                .lba_range()
                .ok_or_else(|| io::Error::other("bad partition range"))?;
            let (first, last) = (range.start().0, range.end().0);
            return Ok(Partition {
                first,
                blocks: last - first + 1,
            });
        }
    }
    Err(io::Error::other("no basic-data partition"))
}

/// The names in the root directory of the FAT partition on `image`.
pub fn file_names<S: Read + Write + Seek>(image: &mut S) -> io::Result<Vec<String>> {
    let part = find_partition(image)?;
    let mut volume = Slice::new(image, part)?;
    let fs = fatfs::FileSystem::new(&mut volume, fatfs::FsOptions::new())?;
    let names = fs
        .root_dir()
        .iter()
        .map(|e| e.map(|e| e.short_file_name()))
        .filter(|n| !matches!(n.as_deref(), Ok(".") | Ok("..")))
        .collect();
    names
}

/// The contents of file `name` in the root directory of the FAT partition
/// on `image`.
pub fn read_file<S: Read + Write + Seek>(image: &mut S, name: &str) -> io::Result<Vec<u8>> {
    let part = find_partition(image)?;
    let mut volume = Slice::new(image, part)?;
    let fs = fatfs::FileSystem::new(&mut volume, fatfs::FsOptions::new())?;
    let mut contents = Vec::new();
    fs.root_dir().open_file(name)?.read_to_end(&mut contents)?;
    Ok(contents)
}

/// `len` bytes of a pattern that differs with `seed` and with the position
/// (the guest computes the same one to check and to write files).
pub fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len).map(|i| pattern_byte(i as u64, seed)).collect()
}

/// Byte `i` of [`pattern`]: position and seed mixed, so a block landing
/// at the wrong place shows.
pub fn pattern_byte(i: u64, seed: u32) -> u8 {
    let x = (i ^ (i >> 9)).wrapping_mul(0x9E37_79B1) ^ u64::from(seed).wrapping_mul(0x85EB_CA77);
    (x >> 13) as u8
}

/// A partition of an image as a stream of its own.
struct Slice<'a, S> {
    image: &'a mut S,
    start: u64,
    len: u64,
    pos: u64,
}

impl<'a, S: Seek> Slice<'a, S> {
    fn new(image: &'a mut S, part: Partition) -> io::Result<Self> {
        Ok(Self {
            image,
            start: part.first * BLOCK,
            len: part.blocks * BLOCK,
            pos: 0,
        })
    }
}

impl<S: Read + Seek> Read for Slice<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.len.saturating_sub(self.pos)) as usize;
        self.image.seek(SeekFrom::Start(self.start + self.pos))?;
        let n = self.image.read(&mut buf[..n])?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<S: Write + Seek> Write for Slice<'_, S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.len.saturating_sub(self.pos)) as usize;
        if n == 0 && !buf.is_empty() {
            return Err(io::Error::other("write past the partition"));
        }
        self.image.seek(SeekFrom::Start(self.start + self.pos))?;
        let n = self.image.write(&buf[..n])?;
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.image.flush()
    }
}

impl<S: Seek> Seek for Slice<'_, S> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let target = match pos {
            SeekFrom::Start(at) => Some(at),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = target.ok_or_else(|| io::Error::other("seek before the start"))?;
        Ok(self.pos)
    }
}
