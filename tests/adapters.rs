//! The adapters to filesystem and partition crates, over the simulated
//! controller: a GPT disk with a FAT32 partition made on the host by a
//! second FAT implementation (`fatfs`), found through the `gpt_disk_io`
//! adapter, used through the `embedded-sdmmc` adapter (list, read, write,
//! flush), and checked again on the host; and `embedded-io` streams
//! against a model of the bytes.

mod common;

#[path = "../xtask/src/fsimage.rs"]
#[allow(dead_code)]
mod fsimage;

use std::io::Cursor;

use bare_nvme::adapters::io::ByteStream;
use bare_nvme::adapters::sdmmc::SdmmcDevice;
use bare_nvme::block::{BlockTarget, BounceConfig, NamespaceDisk};
use bare_nvme::{ControllerConfig, Error};
use bare_nvme_sim::{CtrlId, Sim};
use embedded_io::{Read as _, Seek as _, SeekFrom, Write as _};
use embedded_sdmmc::{Mode, TimeSource, Timestamp, VolumeIdx, VolumeManager};
use gpt_disk_io::gpt_disk_types::GptPartitionType;
use gpt_disk_io::Disk;

use common::*;

const CTRL: CtrlId = CtrlId(0);
/// 36 MiB: room for a FAT32 partition of 512-byte clusters and the GPT.
const DISK_BYTES: u64 = 36 << 20;
const PARTITION_BLOCKS: u64 = 70_000;

struct Fixed;

impl TimeSource for Fixed {
    fn get_timestamp(&self) -> Timestamp {
        Timestamp::from_calendar(2026, 1, 2, 3, 4, 5).unwrap()
    }
}

/// Copies the non-zero blocks of `image` into namespace 1 of the model.
fn load(sim: &Sim, image: &[u8]) {
    for (lba, block) in image.chunks(512).enumerate() {
        if block.iter().any(|&b| b != 0) {
            sim.write_block(CTRL, 1, lba as u64, block);
        }
    }
}

/// Namespace 1 of the model as an image.
fn unload(sim: &Sim, blocks: u64) -> Vec<u8> {
    (0..blocks)
        .flat_map(|lba| sim.read_block(CTRL, 1, lba))
        .collect()
}

#[test]
fn a_fat32_partition_on_a_gpt_is_found_listed_read_and_written_through_the_adapters() {
    let hello = fsimage::pattern(5000, 1);
    let big = fsimage::pattern(300_000, 2);
    let mut image = Cursor::new(vec![0u8; DISK_BYTES as usize]);
    let made = fsimage::create(
        &mut image,
        DISK_BYTES,
        PARTITION_BLOCKS,
        &[("HELLO.TXT", &hello), ("BIG.BIN", &big)],
    )
    .unwrap();
    let blocks = DISK_BYTES / 512;
    let (sim, mut driver, id) = single(spec(blocks, 512), ControllerConfig::default());
    load(&sim, image.get_ref());
    let new = fsimage::pattern(70_000, 3);
    {
        let mut disk = NamespaceDisk::open(
            &mut *driver,
            Some(id),
            1,
            BounceConfig::default().bytes(32 << 10),
        )
        .unwrap();
        // The GPT, through the gpt_disk_io adapter.
        let part = {
            let mut gpt = Disk::new(&mut disk).unwrap();
            let mut block = [0u8; 512];
            let header = gpt.read_primary_gpt_header(&mut block).unwrap();
            assert!(header.is_signature_valid());
            let layout = header.get_partition_entry_array_layout().unwrap();
            let entry = gpt
                .gpt_partition_entry_array_iter(layout, &mut block)
                .unwrap()
                .map(Result::unwrap)
                .find(|e| e.is_used() && { e.partition_type_guid } == GptPartitionType::BASIC_DATA)
                .expect("the FAT partition");
            let range = entry.lba_range().unwrap();
            (range.start().0, range.end().0 - range.start().0 + 1)
        };
        assert_eq!(part, (made.first, made.blocks));
        // The filesystem, through the embedded-sdmmc adapter.
        let device = SdmmcDevice::partition(disk, part.0, part.1).unwrap();
        let volumes: VolumeManager<_, _> = VolumeManager::new(device, Fixed);
        {
            let volume = volumes.open_volume(VolumeIdx(0)).unwrap();
            let root = volume.open_root_dir().unwrap();
            let mut names = Vec::new();
            root.iterate_dir(|e| {
                names.push((e.name.to_string(), e.size));
                core::ops::ControlFlow::Continue(())
            })
            .unwrap();
            assert!(
                names.contains(&("HELLO.TXT".to_string(), 5000)),
                "{names:?}"
            );
            assert!(
                names.contains(&("BIG.BIN".to_string(), 300_000)),
                "{names:?}"
            );
            let mut back = Vec::new();
            {
                let file = root.open_file_in_dir("BIG.BIN", Mode::ReadOnly).unwrap();
                let mut chunk = [0u8; 4096];
                loop {
                    let n = file.read(&mut chunk).unwrap();
                    if n == 0 {
                        break;
                    }
                    back.extend_from_slice(&chunk[..n]);
                }
            }
            assert!(back == big, "BIG.BIN differs");
            let file = root
                .open_file_in_dir("NEW.BIN", Mode::ReadWriteCreate)
                .unwrap();
            for piece in new.chunks(7000) {
                file.write(piece).unwrap();
            }
            file.close().unwrap();
            root.close().unwrap();
            volume.close().unwrap();
        }
        volumes
            .device(|d| d.with_disk(|disk| disk.flush()))
            .unwrap();
        assert_eq!(sim.dirty_blocks(CTRL, 1), 0, "flushed");
    }
    // The host reads what the guest wrote with its own FAT implementation.
    let mut after = Cursor::new(unload(&sim, blocks));
    let mut names = fsimage::file_names(&mut after).unwrap();
    names.sort();
    assert_eq!(names, ["BIG.BIN", "HELLO.TXT", "NEW.BIN"]);
    assert!(fsimage::read_file(&mut after, "NEW.BIN").unwrap() == new);
    assert!(fsimage::read_file(&mut after, "HELLO.TXT").unwrap() == hello);
    finish(&sim, driver);
}

#[test]
fn a_partition_view_shows_only_its_partition_and_an_mbr_naming_it() {
    use embedded_sdmmc::{Block, BlockDevice as _, BlockIdx};
    let (sim, mut driver, id) = single(spec(4096, 512), ControllerConfig::default());
    sim.write_block(CTRL, 1, 0, &[0xEE; 512]);
    {
        let disk = NamespaceDisk::open(&mut *driver, Some(id), 1, BounceConfig::default()).unwrap();
        assert!(matches!(
            SdmmcDevice::partition(disk, 4000, 100).err(),
            Some(Error::LbaOutOfRange { .. })
        ));
        let disk = NamespaceDisk::open(&mut *driver, Some(id), 1, BounceConfig::default()).unwrap();
        let view = SdmmcDevice::partition(disk, 2048, 1024).unwrap();
        let mut blocks = [Block::new(), Block::new()];
        view.read(&mut blocks[..1], BlockIdx(0)).unwrap();
        let mbr = &blocks[0].contents;
        assert_eq!(&mbr[510..], &[0x55, 0xAA]);
        assert_eq!(mbr[446 + 4], 0x0C, "FAT32 with LBA");
        assert_eq!(&mbr[446 + 8..446 + 16], &[0, 8, 0, 0, 0, 4, 0, 0]);
        assert!(
            view.read(&mut blocks, BlockIdx(1)).is_err(),
            "before the partition"
        );
        assert!(
            view.read(&mut blocks, BlockIdx(3071)).is_err(),
            "past its end"
        );
        assert!(view.write(&blocks[..1], BlockIdx(0)).is_err(), "the MBR");
        blocks[1].contents = [7; 512];
        view.write(&blocks[1..], BlockIdx(3071)).unwrap();
        assert_eq!(view.num_blocks().unwrap().0, 3072);
        assert_eq!(sim.read_block(CTRL, 1, 3071), [7; 512]);
        assert_eq!(
            sim.read_block(CTRL, 1, 0),
            [0xEE; 512],
            "the real block 0 untouched"
        );
    }
    finish(&sim, driver);
}

#[test]
fn embedded_sdmmc_needs_512_byte_blocks() {
    let (sim, mut driver, id) = single(spec(512, 4096), ControllerConfig::default());
    {
        let disk = NamespaceDisk::open(&mut *driver, Some(id), 1, BounceConfig::default()).unwrap();
        assert!(matches!(
            SdmmcDevice::new(disk).err(),
            Some(Error::InvalidArgument { .. })
        ));
    }
    finish(&sim, driver);
}

/// An adapter checks its geometry on every rebind, not only when it is
/// made: a rebind through `with_disk` to a namespace of 4 KiB blocks (where
/// 512-byte block 8 would land at byte 32,768) or one too small for the
/// partition view is refused, and the device stays on its namespace.
#[test]
fn an_sdmmc_device_refuses_a_rebind_to_a_namespace_it_cannot_show() {
    use embedded_sdmmc::{Block, BlockDevice as _, BlockIdx};
    let spec = bare_nvme_sim::ControllerSpec::default()
        .namespace(bare_nvme_sim::NamespaceSpec::new(4096, 512))
        .namespace(bare_nvme_sim::NamespaceSpec::new(1024, 4096))
        .namespace(bare_nvme_sim::NamespaceSpec::new(1024, 512));
    let (sim, mut driver, id) = single(spec, ControllerConfig::default());
    let large_blocks = driver.namespace_handle(Some(id), 2).unwrap();
    let small = driver.namespace_handle(Some(id), 3).unwrap();
    {
        let disk = NamespaceDisk::open(&mut *driver, Some(id), 1, BounceConfig::default()).unwrap();
        let whole = SdmmcDevice::new(disk).unwrap();
        assert!(matches!(
            whole.with_disk(|d| d.rebind(large_blocks)),
            Err(Error::InvalidArgument { .. })
        ));
        let mut block = [Block::new()];
        block[0].contents = [0x42; 512];
        whole.write(&block, BlockIdx(8)).unwrap();
        assert_eq!(sim.read_block(CTRL, 1, 8), [0x42; 512], "still namespace 1");
        assert_eq!(
            sim.read_block(CTRL, 2, 1),
            [0; 4096],
            "nothing at byte 4096"
        );
        // Back out of the adapter, the device may go anywhere its bounce
        // buffers fit.
        let mut disk = whole.into_inner();
        disk.rebind(large_blocks).unwrap();
        assert_eq!(disk.block_size(), 4096);
    }
    {
        let disk = NamespaceDisk::open(&mut *driver, Some(id), 1, BounceConfig::default()).unwrap();
        let view = SdmmcDevice::partition(disk, 2048, 1024).unwrap();
        // 512-byte blocks, but 1024 of them: the view ends at 3072.
        assert!(matches!(
            view.with_disk(|d| d.rebind(small)),
            Err(Error::InvalidArgument { .. })
        ));
        assert!(matches!(
            view.with_disk(|d| d.rebind(large_blocks)),
            Err(Error::InvalidArgument { .. })
        ));
        assert_eq!(view.with_disk(|d| d.handle().nsid()), 1);
    }
    finish(&sim, driver);
}

/// A byte stream has no geometry of its own to keep: it reads the block
/// size from its handle at every call, so after a rebind to a namespace of
/// 4 KiB blocks byte 4096 is that namespace's block 1.
#[test]
fn a_byte_stream_follows_the_block_size_of_a_rebound_device() {
    let spec = bare_nvme_sim::ControllerSpec::default()
        .namespace(bare_nvme_sim::NamespaceSpec::new(4096, 512))
        .namespace(bare_nvme_sim::NamespaceSpec::new(1024, 4096));
    let (sim, mut driver, id) = single(spec, ControllerConfig::default());
    let large_blocks = driver.namespace_handle(Some(id), 2).unwrap();
    {
        let disk = NamespaceDisk::open(&mut *driver, Some(id), 1, BounceConfig::default()).unwrap();
        let mut stream = ByteStream::new(disk);
        stream.seek(SeekFrom::Start(4096)).unwrap();
        stream.write_all(&[0x11; 8]).unwrap();
        stream.disk().rebind(large_blocks).unwrap();
        assert_eq!(stream.len(), 1024 * 4096);
        stream.seek(SeekFrom::Start(4096)).unwrap();
        stream.write_all(&[0x22; 8]).unwrap();
    }
    assert_eq!(&sim.read_block(CTRL, 1, 8)[..8], &[0x11; 8]);
    assert_eq!(&sim.read_block(CTRL, 2, 1)[..8], &[0x22; 8]);
    finish(&sim, driver);
}

#[test]
fn a_byte_stream_reads_writes_and_seeks_like_a_model_of_its_bytes() {
    for block in [512u32, 4096] {
        let (sim, mut driver, id) = single(spec(64, block), ControllerConfig::default());
        let size = 64 * block as usize;
        let mut model = vec![0u8; size];
        {
            let handle = driver.namespace_handle(Some(id), 1).unwrap();
            let disk = NamespaceDisk::with_handle(
                &mut *driver,
                handle,
                BounceConfig::default().bytes(8192),
            )
            .unwrap();
            let mut stream = ByteStream::new(disk);
            assert_eq!(stream.len(), size as u64);
            // Writes that start and end inside blocks, span several, and
            // exceed the bounce buffer.
            let mut seed = 0u8;
            for (at, len) in [(3, 10), (500, 30), (1000, 9000), (0, 512), (size - 7, 7)] {
                seed += 1;
                let data = pattern(len, seed);
                stream.seek(SeekFrom::Start(at as u64)).unwrap();
                stream.write_all(&data).unwrap();
                model[at..at + len].copy_from_slice(&data);
                assert_eq!(stream.stream_position().unwrap(), (at + len) as u64);
            }
            // At the end: reads return 0, writes fail.
            assert_eq!(stream.read(&mut [0; 10]).unwrap(), 0);
            assert!(stream.write(&[1]).is_err());
            stream.seek(SeekFrom::End(-20)).unwrap();
            let mut tail = [0u8; 20];
            stream.read_exact(&mut tail).unwrap();
            assert_eq!(&tail[..], &model[size - 20..]);
            stream.seek(SeekFrom::Start(100)).unwrap();
            stream.seek(SeekFrom::Current(-99)).unwrap();
            let mut all = vec![0u8; size - 1];
            stream.read_exact(&mut all).unwrap();
            assert!(all[..] == model[1..], "stream differs from the model");
            assert!(stream.seek(SeekFrom::Current(-(size as i64) - 1)).is_err());
            stream.flush().unwrap();
        }
        let on_device: Vec<u8> = (0..64)
            .flat_map(|lba| sim.read_block(CTRL, 1, lba))
            .collect();
        assert!(on_device == model, "device differs from the model");
        finish(&sim, driver);
    }
}

/// 36 MiB in 512-byte blocks: room for a FAT32 partition from 1 MiB on.
const FORMAT_BLOCKS: u64 = 73_728;
const FIRST: u64 = 2048;

#[test]
fn a_namespace_partitioned_and_formatted_by_the_embedder_is_used_through_embedded_sdmmc_and_read_by_fatfs(
) {
    use bare_nvme::adapters::format;
    use std::io::Read as _;

    let (sim, mut driver, id) = single(spec(FORMAT_BLOCKS, 512), ControllerConfig::default());
    // Stale bytes where the volume's structures go: formatting covers them.
    sim.write_block(CTRL, 1, FIRST + 40, &[0xEE; 512]);
    let data = fsimage::pattern(20_000, 4);
    {
        let mut disk =
            NamespaceDisk::open(&mut *driver, Some(id), 1, BounceConfig::default()).unwrap();
        let blocks = disk.capacity() - FIRST;
        format::write_mbr(&mut disk, FIRST, blocks, 0x1234_5678).unwrap();
        let layout = format::format_fat32(&mut disk, FIRST, blocks, 0x1234_5678).unwrap();
        assert_eq!(layout.cluster_bytes, 512);
        // The whole namespace, its MBR read by embedded-sdmmc itself.
        let volumes: VolumeManager<_, _> =
            VolumeManager::new(SdmmcDevice::new(disk).unwrap(), Fixed);
        {
            let volume = volumes.open_volume(VolumeIdx(0)).unwrap();
            let root = volume.open_root_dir().unwrap();
            let file = root
                .open_file_in_dir("DATA.BIN", Mode::ReadWriteCreate)
                .unwrap();
            file.write(&data).unwrap();
            file.close().unwrap();
            root.close().unwrap();
            volume.close().unwrap();
        }
        volumes
            .device(|d| d.with_disk(|disk| disk.flush()))
            .unwrap();
    }
    // A second FAT implementation opens the partition and reads the file.
    let image = unload(&sim, FORMAT_BLOCKS);
    let mut partition = Cursor::new(image[(FIRST * 512) as usize..].to_vec());
    let fs = fatfs::FileSystem::new(&mut partition, fatfs::FsOptions::new()).unwrap();
    assert_eq!(fs.fat_type(), fatfs::FatType::Fat32);
    let names: Vec<String> = fs
        .root_dir()
        .iter()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["DATA.BIN"]);
    let mut back = Vec::new();
    fs.root_dir()
        .open_file("DATA.BIN")
        .unwrap()
        .read_to_end(&mut back)
        .unwrap();
    assert!(back == data, "DATA.BIN differs");
    drop(fs);
    finish(&sim, driver);
}

#[test]
fn an_error_while_a_cluster_is_allocated_reads_as_disk_full_and_the_devices_last_error_says_what_it_was(
) {
    use bare_nvme::adapters::format;

    let (sim, mut driver, id) = single(spec(FORMAT_BLOCKS, 512), ControllerConfig::default());
    {
        let mut disk =
            NamespaceDisk::open(&mut *driver, Some(id), 1, BounceConfig::default()).unwrap();
        let blocks = disk.capacity() - FIRST;
        format::write_mbr(&mut disk, FIRST, blocks, 1).unwrap();
        let layout = format::format_fat32(&mut disk, FIRST, blocks, 1).unwrap();
        let volumes: VolumeManager<_, _> =
            VolumeManager::new(SdmmcDevice::new(disk).unwrap(), Fixed);
        let volume = volumes.open_volume(VolumeIdx(0)).unwrap();
        let root = volume.open_root_dir().unwrap();
        let file = root
            .open_file_in_dir("FULL.BIN", Mode::ReadWriteCreate)
            .unwrap();
        file.write(&[1; 512]).unwrap();
        file.flush().unwrap();
        // The FATs can be read but no longer written: the next cluster
        // cannot be allocated.
        let fats = FIRST + 32..FIRST + layout.data_start;
        sim.fail_writes(CTRL, 1, fats);
        let error = file.write(&[2; 512]).unwrap_err();
        assert!(
            matches!(error, embedded_sdmmc::Error::DiskFull),
            "{error:?}"
        );
        let cause = volumes.device(|d| d.take_last_error());
        assert!(
            matches!(cause, Some(Error::CommandFailed { .. })),
            "the media error: {cause:?}"
        );
        drop(file);
        drop(root);
        drop(volume);
        sim.clear_media_errors(CTRL);
    }
    finish(&sim, driver);
}

#[test]
fn a_removal_in_the_middle_of_a_file_write_is_told_by_the_devices_last_error() {
    use bare_nvme::adapters::{format, AdapterError};
    use core::error::Error as _;

    let (sim, mut driver, id) = single(spec(FORMAT_BLOCKS, 512), ControllerConfig::default());
    {
        let mut disk =
            NamespaceDisk::open(&mut *driver, Some(id), 1, BounceConfig::default()).unwrap();
        let blocks = disk.capacity() - FIRST;
        format::write_mbr(&mut disk, FIRST, blocks, 1).unwrap();
        format::format_fat32(&mut disk, FIRST, blocks, 1).unwrap();
        let volumes: VolumeManager<_, _> =
            VolumeManager::new(SdmmcDevice::new(disk).unwrap(), Fixed);
        let volume = volumes.open_volume(VolumeIdx(0)).unwrap();
        let root = volume.open_root_dir().unwrap();
        let file = root
            .open_file_in_dir("PULLED.BIN", Mode::ReadWriteCreate)
            .unwrap();
        file.write(&[1; 512]).unwrap();
        file.flush().unwrap();
        assert_eq!(volumes.device(|d| d.last_error()), None);
        sim.surprise_remove(CTRL);
        // Whatever embedded-sdmmc names it (a device error here, `DiskFull`
        // when the removal is met while a cluster is allocated), the device
        // knows what it was.
        let error = file.write(&[2; 512]).unwrap_err();
        assert!(
            matches!(
                error,
                embedded_sdmmc::Error::DiskFull | embedded_sdmmc::Error::DeviceError(_)
            ),
            "{error:?}"
        );
        let cause = volumes.device(|d| d.take_last_error());
        assert_eq!(cause, Some(Error::DeviceRemoved));
        assert_eq!(volumes.device(|d| d.last_error()), None, "taken");
        // The adapter's error hands on the driver's as its source.
        let wrapped = AdapterError(Error::DeviceRemoved);
        let source = wrapped.source().expect("a source");
        assert_eq!(source.downcast_ref::<Error>(), Some(&Error::DeviceRemoved));
        drop(file);
        drop(root);
        drop(volume);
    }
    let mut removed = 0;
    for _ in 0..100 {
        sim.advance(std::time::Duration::from_millis(1));
        removed += driver
            .tick()
            .iter()
            .filter(|e| matches!(e, bare_nvme::Event::Removed { .. }))
            .count();
    }
    assert_eq!(removed, 1);
    finish(&sim, driver);
}
