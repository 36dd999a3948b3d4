//! `fs`: a FAT32 filesystem on a GPT disk, through the driver's block
//! device and its adapters (`gpt_disk_io` to find the partition,
//! `embedded-sdmmc` for the filesystem).
//!
//! The host made the disk (xtask's `fsimage`): a GPT with one basic-data
//! partition, FAT32, holding `HELLO.TXT` and `BIG.BIN` (patterns of seeds 1
//! and 2). Modes:
//! - `mode=files`: find the partition, list the root directory, read both
//!   files and check them, write `NEW.BIN` (`new_bytes=N`, seed 3), flush;
//!   the host checks `NEW.BIN` after QEMU exits. Then, past the partition,
//!   time `bench_mib=N` MiB of writes and reads through the bounce buffers
//!   (a pool of one and a pool of four 128 KiB buffers) and zero-copy;
//! - `mode=pull`: write files until the hand pulls the controller in the
//!   middle of one (`pull_after=N` block writes): the filesystem gets an
//!   error, the driver reports the removal, all DMA memory returns.

use core::cell::Cell;
use core::fmt::Write as _;
use core::ops::ControlFlow;
use core::time::Duration;

use bare_nvme::adapters::sdmmc::SdmmcDevice;
use bare_nvme::adapters::AdapterError;
use bare_nvme::block::{BlockTarget, BounceConfig, NamespaceDisk};
use bare_nvme::{ControllerId, DmaRegion, Error, Event, Platform};
use embedded_sdmmc::{Block, BlockCount, BlockIdx, Mode, TimeSource, Timestamp, VolumeIdx};
use gpt_disk_io::gpt_disk_types::GptPartitionType;
use gpt_disk_io::Disk;
use log::info;
use spin::Mutex;

use super::{check_dma_returned, Context, Failure, Outcome, Scenario};
use crate::hand::Hand;
use crate::nvme::{self, Monitor, Nvme};
use crate::{clock, dma, ensure, failure, marker};

/// The scenario.
pub const SCENARIO: Scenario = Scenario {
    name: "fs",
    about: "a FAT32 partition on a GPT: list, read, write, flush; or pulled while writing",
    run,
};

/// Ordinary (not DMA) memory for the bounce-buffer timing.
static ORDINARY: Mutex<[u8; MIB]> = Mutex::new([0; MIB]);
const MIB: usize = 1 << 20;

type Volumes<D> = embedded_sdmmc::VolumeManager<D, Clock>;

/// Timestamps for new files: a fixed date (the board has no calendar).
struct Clock;

impl TimeSource for Clock {
    fn get_timestamp(&self) -> Timestamp {
        Timestamp {
            year_since_1970: 56,
            zero_indexed_month: 0,
            zero_indexed_day: 0,
            hours: 0,
            minutes: 0,
            seconds: 0,
        }
    }
}

/// Byte `i` of the file pattern of `seed` (the same as xtask's
/// `fsimage::pattern_byte`).
fn pattern_byte(i: u64, seed: u32) -> u8 {
    let x = (i ^ (i >> 9)).wrapping_mul(0x9E37_79B1) ^ u64::from(seed).wrapping_mul(0x85EB_CA77);
    (x >> 13) as u8
}

fn run(board: &Context) -> Outcome {
    let args = board.args;
    let baseline = dma::stats();
    let config = nvme::config_from(&args)?;
    let mut d = nvme::driver(board.platform, board.access, config);
    let attached = d.scan().map_err(|e| failure!("scan: {e}"))?;
    ensure!(attached > 0, "no NVMe controller found");
    let _ = d.wait_ready(Duration::from_secs(10));
    let id = d
        .ready_controllers()
        .next()
        .ok_or_else(|| failure!("no controller ready"))?;
    let number = |key, default| {
        args.number(key, default)
            .ok_or_else(|| failure!("malformed {key}="))
    };
    match args.get("mode").unwrap_or("files") {
        "files" => {
            files(&mut d, id, number("new_bytes", MIB as u64)? as usize)?;
            bench(&mut d, id, number("bench_mib", 16)? as usize)?;
            d.begin_detach(id).map_err(|e| failure!("detach: {e}"))?;
            Monitor::new(Duration::from_millis(1)).removals(&mut d, 1, 10_000)?;
        }
        "pull" => {
            let port = args
                .pci_address("port")
                .ok_or_else(|| failure!("malformed port="))?
                .ok_or_else(|| failure!("port= is required"))?;
            let hand = Hand::new(port).ok_or_else(|| failure!("{port} has no PCIe capability"))?;
            pull(&mut d, id, &hand, number("pull_after", 40)? as u32)?;
        }
        other => return Err(failure!("unknown mode={other}")),
    }
    drop(d);
    check_dma_returned(baseline)
}

/// The first basic-data partition of the GPT: (first block, blocks).
fn find_partition<T: BlockTarget>(disk: &mut NamespaceDisk<T>) -> Result<(u64, u64), Failure> {
    let mut gpt = Disk::new(disk).map_err(|e| failure!("GPT: {e}"))?;
    let mut block = [0u8; 512];
    let header = gpt
        .read_primary_gpt_header(&mut block)
        .map_err(|e| failure!("GPT header: {e}"))?;
    ensure!(
        header.is_signature_valid() && header.header_crc32 == header.calculate_header_crc32(),
        "no valid GPT header"
    );
    let layout = header
        .get_partition_entry_array_layout()
        .map_err(|e| failure!("GPT layout: {e}"))?;
    let entries = gpt
        .gpt_partition_entry_array_iter(layout, &mut block)
        .map_err(|e| failure!("GPT entries: {e}"))?;
    for entry in entries {
        let entry = entry.map_err(|e| failure!("GPT entry: {e}"))?;
        let kind = { entry.partition_type_guid };
        if entry.is_used() && kind == GptPartitionType::BASIC_DATA {
            let range = entry
                .lba_range()
                .ok_or_else(|| failure!("bad partition range"))?;
            let (first, last) = (range.start().0, range.end().0);
            return Ok((first, last - first + 1));
        }
    }
    Err(failure!("no basic-data partition"))
}

/// A block device on namespace 1 of `id` with bounce buffers as `bounce`
/// says.
fn open(
    d: &mut Nvme,
    id: ControllerId,
    bounce: BounceConfig,
) -> Result<NamespaceDisk<&mut Nvme>, Failure> {
    NamespaceDisk::open(d, Some(id), 1, bounce).map_err(|e| failure!("block device: {e}"))
}

/// List, read and check, write, flush.
fn files(d: &mut Nvme, id: ControllerId, new_bytes: usize) -> Outcome {
    let mut disk = open(d, id, BounceConfig::default())?;
    let (first, blocks) = find_partition(&mut disk)?;
    marker!("RESULT partition_first={first} partition_blocks={blocks}");
    let device =
        SdmmcDevice::partition(disk, first, blocks).map_err(|e| failure!("partition view: {e}"))?;
    let volumes: Volumes<_> = embedded_sdmmc::VolumeManager::new(device, Clock);
    {
        let volume = volumes
            .open_volume(VolumeIdx(0))
            .map_err(|e| failure!("open volume: {e:?}"))?;
        let root = volume
            .open_root_dir()
            .map_err(|e| failure!("root: {e:?}"))?;
        let mut names: heapless::Vec<(heapless::String<12>, u32), 16> = heapless::Vec::new();
        root.iterate_dir(|e| {
            if e.attributes.is_volume() {
                // The volume label, not a file.
                return ControlFlow::Continue(());
            }
            let mut name = heapless::String::new();
            let _ = write!(name, "{}", e.name);
            let _ = names.push((name, e.size));
            ControlFlow::Continue(())
        })
        .map_err(|e| failure!("list: {e:?}"))?;
        names.sort_unstable();
        let mut listing: heapless::String<96> = heapless::String::new();
        for (name, size) in &names {
            info!("fs: {name} {size} bytes");
            let _ = write!(
                listing,
                "{}{name}",
                if listing.is_empty() { "" } else { "," }
            );
        }
        marker!("RESULT files={listing}");
        for (name, seed) in [("HELLO.TXT", 1), ("BIG.BIN", 2)] {
            let file = root
                .open_file_in_dir(name, Mode::ReadOnly)
                .map_err(|e| failure!("open {name}: {e:?}"))?;
            let mut at = 0u64;
            let mut chunk = [0u8; 4096];
            loop {
                let n = file
                    .read(&mut chunk)
                    .map_err(|e| failure!("read {name}: {e:?}"))?;
                if n == 0 {
                    break;
                }
                for (i, &b) in chunk[..n].iter().enumerate() {
                    let want = pattern_byte(at + i as u64, seed);
                    ensure!(b == want, "{name}: byte {} differs", at + i as u64);
                }
                at += n as u64;
            }
            let size = names.iter().find(|(n, _)| n == name).map(|&(_, s)| s);
            ensure!(
                size == Some(at as u32),
                "{name}: read {at} bytes, listed {size:?}"
            );
            file.close().map_err(|e| failure!("close {name}: {e:?}"))?;
        }
        marker!("RESULT read_verified=ok");
        let start = clock::now();
        let file = root
            .open_file_in_dir("NEW.BIN", Mode::ReadWriteCreateOrTruncate)
            .map_err(|e| failure!("create NEW.BIN: {e:?}"))?;
        let mut chunk = [0u8; 4096];
        let mut at = 0;
        while at < new_bytes {
            let n = (new_bytes - at).min(chunk.len());
            for (i, b) in chunk[..n].iter_mut().enumerate() {
                *b = pattern_byte((at + i) as u64, 3);
            }
            file.write(&chunk[..n])
                .map_err(|e| failure!("write NEW.BIN at {at}: {e:?}"))?;
            at += n;
        }
        file.close().map_err(|e| failure!("close NEW.BIN: {e:?}"))?;
        root.close().map_err(|e| failure!("close root: {e:?}"))?;
        volume
            .close()
            .map_err(|e| failure!("close volume: {e:?}"))?;
        let took = clock::now() - start;
        marker!(
            "RESULT written=ok new_bytes={new_bytes} write_file_ms={}",
            took.as_millis()
        );
    }
    volumes
        .device(|dev| dev.with_disk(|disk| disk.flush()))
        .map_err(|e| failure!("flush: {e}"))?;
    marker!("RESULT flush=ok");
    Ok(())
}

/// Runs `io` for MiB 0 to `mib` and returns the rate in tenths of MiB/s.
fn timed_pass(mib: usize, mut io: impl FnMut(usize) -> Outcome) -> Result<u128, Failure> {
    let start = clock::now();
    for i in 0..mib {
        io(i)?;
    }
    Ok(tenths(mib * MIB, clock::now() - start))
}

/// Tenths of MiB/s of `bytes` moved in `took`.
fn tenths(bytes: usize, took: Duration) -> u128 {
    (bytes as u128 * 10 * 1_000_000) / (MIB as u128 * took.as_micros().max(1))
}

/// Rounds of the timing: the best of each is reported, so that a host busy
/// with other work during one round does not decide the figure.
const ROUNDS: usize = 3;

/// How one timing moves data.
#[derive(Clone, Copy)]
enum Way {
    /// Ordinary memory through these bounce buffers.
    Bounce(BounceConfig),
    /// The caller's DMA memory.
    ZeroCopy,
}

/// Times writes and reads of `mib` MiB in 1 MiB requests past the
/// partition, through pools of one and of four bounce buffers of 128 KiB
/// and zero-copy, the three interleaved over [`ROUNDS`] rounds.
fn bench(d: &mut Nvme, id: ControllerId, mib: usize) -> Outcome {
    let mut ordinary = ORDINARY.lock();
    for (i, b) in ordinary.iter_mut().enumerate() {
        *b = pattern_byte(i as u64, 9);
    }
    let area = bench_area(&mut open(d, id, pool(1, 4096))?)?;
    let platform = *d.platform();
    let mut region: DmaRegion = platform
        .dma_alloc(MIB, 4096)
        .ok_or_else(|| failure!("no DMA memory for the zero-copy buffer"))?;
    region.as_mut_slice().copy_from_slice(&ordinary[..]);
    let ways = [
        ("bounce1x128k", Way::Bounce(pool(1, 128 << 10))),
        ("bounce4x128k", Way::Bounce(pool(4, 128 << 10))),
        ("zerocopy", Way::ZeroCopy),
    ];
    let mut best = [(0u128, 0u128); 3];
    let mut result = Ok(());
    'rounds: for _ in 0..ROUNDS {
        for (k, &(_, way)) in ways.iter().enumerate() {
            match time(d, id, way, area, mib, &mut ordinary[..], &mut region) {
                Ok((write, read)) => best[k] = (best[k].0.max(write), best[k].1.max(read)),
                Err(e) => {
                    result = Err(e);
                    break 'rounds;
                }
            }
        }
    }
    let same = region.as_slice() == &ordinary[..];
    platform.dma_free(region);
    result?;
    ensure!(same, "zero-copy read back differs");
    let mut line: heapless::String<256> = heapless::String::new();
    for ((name, _), (write, read)) in ways.iter().zip(best) {
        let _ = write!(
            line,
            " {name}_write_mib_s={}.{} {name}_read_mib_s={}.{}",
            write / 10,
            write % 10,
            read / 10,
            read % 10
        );
    }
    marker!("RESULT bench_mib={mib} rounds={ROUNDS}{line}");
    Ok(())
}

/// One timing: `mib` 1 MiB writes, then as many reads, over 8 MiB at
/// `area`; tenths of MiB/s of each.
fn time(
    d: &mut Nvme,
    id: ControllerId,
    way: Way,
    area: u64,
    mib: usize,
    ordinary: &mut [u8],
    region: &mut DmaRegion,
) -> Result<(u128, u128), Failure> {
    let bounce = match way {
        Way::Bounce(config) => config,
        // As many commands in flight as the four-buffer pool keeps.
        Way::ZeroCopy => pool(4, 4096),
    };
    let mut disk = open(d, id, bounce)?;
    let lba = |i: usize| area + ((i % 8) * MIB / 512) as u64;
    let write = timed_pass(mib, |i| {
        match way {
            Way::Bounce(_) => disk.write(lba(i), ordinary),
            Way::ZeroCopy => disk.write_dma(lba(i), region),
        }
        .map_err(|e| failure!("timed write: {e}"))
    })?;
    let read = timed_pass(mib, |i| {
        match way {
            Way::Bounce(_) => disk.read(lba(i), ordinary),
            Way::ZeroCopy => disk.read_dma(lba(i), region),
        }
        .map_err(|e| failure!("timed read: {e}"))
    })?;
    if let Way::ZeroCopy = way {
        ensure!(disk.bytes_copied() == 0, "the zero-copy calls copied");
    }
    Ok((write, read))
}

/// `buffers` bounce buffers of `bytes` each.
fn pool(buffers: usize, bytes: usize) -> BounceConfig {
    BounceConfig::default().buffers(buffers).bytes(bytes)
}

/// The first block of 8 MiB past the partition (before the backup GPT).
fn bench_area<T: BlockTarget>(disk: &mut NamespaceDisk<T>) -> Result<u64, Failure> {
    let (first, blocks) = find_partition(disk)?;
    let area = (first + blocks).next_multiple_of(2048);
    ensure!(
        area + (8 * MIB / 512) as u64 + 64 <= disk.capacity(),
        "no room for the timing past the partition"
    );
    Ok(area)
}

/// The partition view for embedded-sdmmc, with the hand pulling the
/// controller just before its `pull_after`-th block write, and the first
/// error the block device gave the filesystem kept.
struct Pulling<'h, T: BlockTarget> {
    inner: SdmmcDevice<T>,
    hand: &'h Hand,
    writes: Cell<u32>,
    pull_after: u32,
    first_error: Cell<Option<Error>>,
}

impl<T: BlockTarget> Pulling<'_, T> {
    fn note<R>(&self, result: Result<R, AdapterError>) -> Result<R, AdapterError> {
        if let (Err(e), None) = (&result, self.first_error.get()) {
            self.first_error.set(Some(e.0));
        }
        result
    }
}

impl<T: BlockTarget> embedded_sdmmc::BlockDevice for Pulling<'_, T> {
    type Error = AdapterError;

    fn read(&self, blocks: &mut [Block], start: BlockIdx) -> Result<(), AdapterError> {
        self.note(self.inner.read(blocks, start))
    }

    fn write(&self, blocks: &[Block], start: BlockIdx) -> Result<(), AdapterError> {
        self.writes.set(self.writes.get() + 1);
        if self.writes.get() == self.pull_after {
            info!(
                "hand: pulling the controller before block write {}",
                self.pull_after
            );
            self.hand.remove();
        }
        self.note(self.inner.write(blocks, start))
    }

    fn num_blocks(&self) -> Result<BlockCount, AdapterError> {
        self.note(self.inner.num_blocks())
    }
}

/// Writes files until the filesystem reports the pull; then the removal
/// must be reported once and every DMA region come back.
fn pull(d: &mut Nvme, id: ControllerId, hand: &Hand, pull_after: u32) -> Outcome {
    let mut error: heapless::String<48> = heapless::String::new();
    let mut written = 0usize;
    let device_error;
    {
        let mut disk = open(d, id, BounceConfig::default())?;
        let (first, blocks) = find_partition(&mut disk)?;
        let device = SdmmcDevice::partition(disk, first, blocks)
            .map_err(|e| failure!("partition view: {e}"))?;
        let pulling = Pulling {
            inner: device,
            hand,
            writes: Cell::new(0),
            pull_after,
            first_error: Cell::new(None),
        };
        let volumes: Volumes<_> = embedded_sdmmc::VolumeManager::new(pulling, Clock);
        let volume = volumes
            .open_volume(VolumeIdx(0))
            .map_err(|e| failure!("open volume: {e:?}"))?;
        let root = volume
            .open_root_dir()
            .map_err(|e| failure!("root: {e:?}"))?;
        let chunk = [0x5Au8; 4096];
        'files: for n in 0..16 {
            let mut name: heapless::String<12> = heapless::String::new();
            let _ = write!(name, "PULL{n}.BIN");
            let file = match root.open_file_in_dir(name.as_str(), Mode::ReadWriteCreateOrTruncate) {
                Ok(file) => file,
                Err(e) => {
                    let _ = write!(error, "{e:?}");
                    break 'files;
                }
            };
            for _ in 0..64 {
                if let Err(e) = file.write(&chunk) {
                    let _ = write!(error, "{e:?}");
                    break 'files;
                }
                written += chunk.len();
            }
        }
        // Everything the filesystem still does fails the same way; nothing
        // may panic or hang on the way out (the handles close on drop).
        info!("fs: first error after {written} bytes: {error}");
        drop(root);
        drop(volume);
        let (pulling, _) = volumes.free();
        device_error = pulling.first_error.get();
        // Drops the block device: its bounce buffers go back.
    }
    ensure!(!error.is_empty(), "no filesystem error after the pull");
    let device_error = device_error.ok_or_else(|| failure!("the block device saw no error"))?;
    // What embedded-sdmmc made of it (a failed FAT scan reads as DiskFull),
    // and what the block device told it.
    let kind = error.split('(').next().unwrap_or("");
    marker!("RESULT fs_error={kind} device_error={device_error:?} written_before={written}");
    let mut monitor = Monitor::new(Duration::from_millis(1));
    let (event, _, _) = monitor.until(
        d,
        10_000,
        "Removed after the pull",
        |e| matches!(e, Event::Removed { id: r, .. } if *r == id),
        |_| Ok(()),
    )?;
    if let Event::Removed { detected_by, .. } = event {
        marker!("RESULT removed_by={detected_by:?}");
    }
    monitor.quiet(d, 30)
}
