//! `io`: a cold-plugged controller brought up by the driver serves block I/O.
//!
//! Arguments: `controller=N` picks the N-th NVMe function of the walk
//! (default 0); `max_transfer=BYTES` caps the bytes per command;
//! `persist=write` writes a pattern tagged with `seed=N` at `persist_lba`,
//! `persist=check` only reads it back (a second boot on the same disk);
//! `size=BYTES` is the amount moved for the throughput numbers (default 4 MiB).

use bare_nvme::nvme::{Config, Controller};
use bare_nvme::{DmaRegion, Error, Platform};
use log::info;

use super::{check_dma_returned, Board, Outcome, Scenario};
use crate::pci::function::{enable_bar0, ConfigLink};
use crate::pci::scan;
use crate::platform::QemuPlatform;
use crate::{clock, dma, ensure, failure, marker};

/// The scenario.
pub const SCENARIO: Scenario = Scenario {
    name: "io",
    about: "bring up a cold-plugged controller; write, read back, zero, trim, flush, detach",
    run,
};

type Nvme = Controller<QemuPlatform, ConfigLink>;

const PERSIST_BYTES: usize = 64 << 10;

fn run(board: &Board) -> Outcome {
    let args = board.args;
    let baseline = dma::stats();
    let index = args
        .number("controller", 0)
        .ok_or_else(|| failure!("malformed controller="))? as usize;
    let topology = scan::walk(&board.config);
    let Some(&addr) = topology.nvme.get(index) else {
        return Err(failure!("no NVMe controller number {index}"));
    };
    let Some(bar) = enable_bar0(&board.config, addr) else {
        return Err(failure!("{addr}: BAR0 is not an assigned memory BAR"));
    };
    info!("{addr}: BAR0 {:#x}, {} KiB", bar.addr, bar.size >> 10);
    let Some(regs) = board
        .platform
        .map_registers(bare_nvme::PhysAddr::new(bar.addr), bar.size as usize)
    else {
        return Err(failure!("cannot map BAR0 at {:#x}", bar.addr));
    };
    let mut config = Config::default();
    if let Some(limit) = args.get("max_transfer") {
        config.max_transfer = limit
            .parse()
            .map_err(|_| failure!("malformed max_transfer="))?;
    }
    let mut nvme = Controller::new(
        board.platform,
        ConfigLink::new(addr),
        regs,
        bar.size as usize,
        config,
    );
    let start = clock::now();
    nvme.bring_up()
        .map_err(|e| failure!("bring-up failed: {e}"))?;
    let bring_up = clock::now() - start;
    let Some(info) = nvme.info().copied() else {
        return Err(failure!("ready without identify data"));
    };
    info!(
        "controller {} serial {} firmware {} mdts {} namespaces {}",
        info.model.as_str(),
        info.serial.as_str(),
        info.firmware.as_str(),
        info.mdts,
        nvme.namespaces().len()
    );
    let Some(ns) = nvme.namespaces().first().copied() else {
        return Err(failure!("no active namespace"));
    };
    marker!(
        "RESULT bring_up_us={} serial={} namespaces={} block_size={} blocks={} max_transfer={} io_queues={}",
        bring_up.as_micros(),
        info.serial.as_str(),
        nvme.namespaces().len(),
        ns.block_size(),
        ns.blocks(),
        nvme.max_transfer(),
        nvme.io_queue_count()
    );
    let result = exercise(board, &mut nvme, ns.id(), ns.block_size() as usize);
    let detach = nvme.detach().map_err(|e| failure!("detach failed: {e}"));
    result?;
    detach?;
    marker!("PHASE detached");
    drop(nvme);
    check_dma_returned(baseline)
}

/// Buffers of the scenario, returned on every path.
struct Buffers<'a> {
    platform: &'a QemuPlatform,
    regions: heapless::Vec<DmaRegion, 4>,
}

impl<'a> Buffers<'a> {
    fn alloc(&mut self, len: usize) -> Result<usize, super::Failure> {
        let region = self
            .platform
            .dma_alloc(len, 4096)
            .ok_or_else(|| failure!("no DMA memory for {len} bytes"))?;
        self.regions
            .push(region)
            .map_err(|_| failure!("too many buffers"))?;
        Ok(self.regions.len() - 1)
    }
}

impl Drop for Buffers<'_> {
    fn drop(&mut self) {
        while let Some(region) = self.regions.pop() {
            self.platform.dma_free(region);
        }
    }
}

/// The 64-bit word `word` of block `lba` in the pattern of `seed`.
fn pattern(seed: u64, lba: u64, word: u64) -> u64 {
    (seed << 48) ^ (lba << 16) ^ word ^ 0x5A5A_0000_0000_5A5A
}

fn fill(buffer: &mut DmaRegion, seed: u64, lba: u64, block: usize) {
    for (i, chunk) in buffer.as_mut_slice().chunks_exact_mut(8).enumerate() {
        let lba = lba + (i * 8 / block) as u64;
        chunk.copy_from_slice(&pattern(seed, lba, (i % (block / 8)) as u64).to_le_bytes());
    }
}

/// The first 8-byte word that differs from the pattern, if any.
fn mismatch(buffer: &DmaRegion, seed: u64, lba: u64, block: usize) -> Option<usize> {
    buffer
        .as_slice()
        .chunks_exact(8)
        .enumerate()
        .position(|(i, chunk)| {
            let lba = lba + (i * 8 / block) as u64;
            let want = pattern(seed, lba, (i % (block / 8)) as u64);
            chunk != want.to_le_bytes()
        })
}

fn exercise(board: &Board, nvme: &mut Nvme, nsid: u32, block: usize) -> Outcome {
    let args = board.args;
    let platform = board.platform;
    let mut buffers = Buffers {
        platform: &platform,
        regions: heapless::Vec::new(),
    };
    let seed = args
        .number("seed", 1)
        .ok_or_else(|| failure!("malformed seed="))?;
    let persist_lba = args
        .number("persist_lba", 4096)
        .ok_or_else(|| failure!("malformed persist_lba="))?;
    let size = args
        .number("size", 4 << 20)
        .ok_or_else(|| failure!("malformed size="))? as usize;
    ensure!(
        size >= block && size.is_multiple_of(block),
        "size={size} is not a multiple of the block size {block}"
    );

    if args.get("persist") == Some("check") {
        let b = buffers.alloc(PERSIST_BYTES)?;
        nvme.read(nsid, persist_lba, &mut buffers.regions[b])
            .map_err(|e| failure!("read: {e}"))?;
        if let Some(word) = mismatch(&buffers.regions[b], seed, persist_lba, block) {
            return Err(failure!("persisted data differs at byte {}", word * 8));
        }
        marker!("RESULT persisted=ok");
        return Ok(());
    }

    // Write a pattern, read it back into a second buffer.
    let w = buffers.alloc(size)?;
    let r = buffers.alloc(size)?;
    fill(&mut buffers.regions[w], seed, 0, block);
    let start = clock::now();
    nvme.write(nsid, 0, &buffers.regions[w])
        .map_err(|e| failure!("write: {e}"))?;
    let write_time = clock::now() - start;
    let start = clock::now();
    nvme.read(nsid, 0, &mut buffers.regions[r])
        .map_err(|e| failure!("read: {e}"))?;
    let read_time = clock::now() - start;
    if let Some(word) = mismatch(&buffers.regions[r], seed, 0, block) {
        return Err(failure!("read back differs at byte {}", word * 8));
    }
    let kib_s = |bytes: usize, t: core::time::Duration| {
        (bytes as u128 * 1_000_000 / t.as_micros().max(1) / 1024) as u64
    };
    marker!(
        "RESULT write_kib_s={} read_kib_s={} bytes={size}",
        kib_s(size, write_time),
        kib_s(size, read_time)
    );

    // Zero the first 8 blocks; they must read back as zeroes.
    let zero_blocks = 8.min(size / block);
    match nvme.write_zeroes(nsid, 0, zero_blocks as u64) {
        Ok(()) => {
            nvme.read(nsid, 0, &mut buffers.regions[r])
                .map_err(|e| failure!("read after write zeroes: {e}"))?;
            let zeroed = &buffers.regions[r].as_slice()[..zero_blocks * block];
            ensure!(
                zeroed.iter().all(|&b| b == 0),
                "write zeroes left data behind"
            );
            ensure!(
                pattern_intact_after(&buffers.regions[r], seed, zero_blocks, block),
                "write zeroes touched blocks beyond its range"
            );
            marker!("RESULT write_zeroes=ok");
        }
        Err(Error::Unsupported { .. }) => marker!("RESULT write_zeroes=unsupported"),
        Err(e) => return Err(failure!("write zeroes: {e}")),
    }
    match nvme.deallocate(nsid, 0, zero_blocks as u64) {
        Ok(()) => marker!("RESULT deallocate=ok"),
        Err(Error::Unsupported { .. }) => marker!("RESULT deallocate=unsupported"),
        Err(e) => return Err(failure!("deallocate: {e}")),
    }

    if args.get("persist") == Some("write") {
        let p = buffers.alloc(PERSIST_BYTES)?;
        fill(&mut buffers.regions[p], seed, persist_lba, block);
        nvme.write(nsid, persist_lba, &buffers.regions[p])
            .map_err(|e| failure!("write: {e}"))?;
        marker!("RESULT persist_written=ok");
    }
    nvme.flush(nsid).map_err(|e| failure!("flush: {e}"))?;
    marker!("RESULT flush=ok");
    Ok(())
}

/// Whether the blocks after the first `skip` still hold the pattern.
fn pattern_intact_after(buffer: &DmaRegion, seed: u64, skip: usize, block: usize) -> bool {
    let words_per_block = block / 8;
    buffer
        .as_slice()
        .chunks_exact(8)
        .enumerate()
        .skip(skip * words_per_block)
        .all(|(i, chunk)| {
            let lba = (i / words_per_block) as u64;
            chunk == pattern(seed, lba, (i % words_per_block) as u64).to_le_bytes()
        })
}
