//! `io`: the driver enumerates PCI, brings every NVMe controller up and
//! serves block I/O on each of their namespaces.
//!
//! Arguments: `size=BYTES` moved per namespace for the pattern check and the
//! throughput figures (default 4 MiB, clamped to the namespace);
//! `persist=write` also writes a pattern tagged with `seed=N` at
//! `persist_lba` of the first namespace, `persist=check` only reads it back
//! (a second boot on the same disk); `badblock=LBA` expects reads covering
//! that block of the first namespace to fail (a disk with injected errors)
//! and checks that the driver keeps serving; plus the driver settings of
//! `nvme::config_from` (`io_queues`, `max_transfer`, ...).

use core::fmt::Write as _;
use core::time::Duration;

use bare_nvme::QueueId;
use bare_nvme::{ControllerId, Error, Event, IoOp, PhysAddr, Platform, RegisterAccess};
use log::info;

use super::{check_dma_returned, Context, Failure, Outcome, Scenario};
use crate::nvme::{self, ctrl, fill, mismatch, Buffers, Ctrl, Monitor, Nvme};
use crate::pci::{self, scan};
use crate::{clock, dma, ensure, failure, marker};

/// The scenario.
pub const SCENARIO: Scenario = Scenario {
    name: "io",
    about: "enumerate, bring up every controller; write, read back, zero, trim, flush, detach",
    run,
};

const PERSIST_BYTES: usize = 64 << 10;

/// Controllers ready, in bus order.
type Ids = heapless::Vec<ControllerId, 8>;

fn run(board: &Context) -> Outcome {
    let args = board.args;
    let baseline = dma::stats();
    let config = nvme::config_from(&args)?;
    let firmware_enabled = enabled_by_firmware(board);
    marker!("RESULT firmware_left_enabled={firmware_enabled}");
    let mut d = nvme::driver(board.platform, board.access, config);
    let ids = bring_up_all(&mut d)?;
    let first = ctrl(&mut d, ids[0])?;
    let first_ns = first
        .namespaces()
        .first()
        .map(|n| n.id())
        .ok_or_else(|| failure!("no namespace"))?;
    if args.get("badblock").is_some() {
        bad_disk(board, first, first_ns)?;
    } else if args.get("persist") == Some("check") {
        // Only read: the pattern check would overwrite what is checked.
        persistence(board, first, first_ns)?;
    } else {
        exercise_all(board, &mut d, &ids)?;
        marker!("RESULT flush=ok");
        persistence(board, ctrl(&mut d, ids[0])?, first_ns)?;
    }
    // Orderly detach of everything; each reports Removed once.
    for &id in &ids {
        d.begin_detach(id)
            .map_err(|e| failure!("detach {id}: {e}"))?;
    }
    let mut monitor = Monitor::new(Duration::from_millis(1));
    monitor.removals(&mut d, ids.len() as u32, 10_000)?;
    marker!("PHASE detached");
    monitor.quiet(&mut d, 50)?;
    drop(d);
    check_dma_returned(baseline)
}

/// Scans, brings every controller up, and reports what came up.
fn bring_up_all(d: &mut Nvme) -> Result<Ids, Failure> {
    let start = clock::now();
    let attached = d.scan().map_err(|e| failure!("scan: {e}"))?;
    ensure!(attached > 0, "no NVMe controller found");
    let events = d.wait_ready(Duration::from_secs(10));
    let bring_up = clock::now() - start;
    for e in &events {
        if let Event::Failed { id, error } = e {
            return Err(failure!("{id} failed during bring-up: {error}"));
        }
    }
    let mut ids: Ids = d.ready_controllers().collect();
    ids.sort_unstable_by_key(|&id| {
        d.address(id)
            .map(|a| (a.bus(), a.device()))
            .unwrap_or_default()
    });
    ensure!(
        ids.len() == attached,
        "{} of {attached} controllers ready",
        ids.len()
    );
    describe(d, &ids, bring_up)?;
    Ok(ids)
}

/// Logs every controller and namespace; one RESULT line with the counts.
fn describe(d: &mut Nvme, ids: &Ids, bring_up: Duration) -> Outcome {
    let mut namespaces = 0;
    let mut sizes: heapless::String<64> = heapless::String::new();
    let mut queues: heapless::String<32> = heapless::String::new();
    for &id in ids {
        let address = d.address(id).map_err(|e| failure!("{e}"))?;
        let c = ctrl(d, id)?;
        let info = c
            .info()
            .copied()
            .ok_or_else(|| failure!("ready without identify data"))?;
        info!(
            "{id} at {address}: {} serial {} firmware {} mdts {} io queues {} depth {} max transfer {}",
            info.model,
            info.serial,
            info.firmware,
            info.mdts,
            c.io_queue_count(),
            c.queue_depth(),
            c.max_transfer()
        );
        let _ = write!(
            queues,
            "{}{}",
            if queues.is_empty() { "" } else { "," },
            c.io_queue_count()
        );
        for ns in c.namespaces() {
            namespaces += 1;
            info!(
                "  namespace {}: {} blocks of {} bytes",
                ns.id(),
                ns.blocks(),
                ns.block_size()
            );
            let _ = write!(
                sizes,
                "{}{}",
                if sizes.is_empty() { "" } else { "," },
                ns.block_size()
            );
        }
    }
    let first = ctrl(d, ids[0])?;
    let info = first
        .info()
        .copied()
        .ok_or_else(|| failure!("no identify data"))?;
    marker!(
        "RESULT bring_up_us={} controllers={} namespaces={namespaces} block_sizes={sizes} io_queues={queues} serial={} max_transfer={}",
        bring_up.as_micros(),
        ids.len(),
        info.serial,
        first.max_transfer(),
    );
    Ok(())
}

/// The pattern check on every namespace of every controller.
fn exercise_all(board: &Context, d: &mut Nvme, ids: &Ids) -> Outcome {
    let mut first_io = true;
    for (i, &id) in ids.iter().enumerate() {
        let c = ctrl(d, id)?;
        let nsids: heapless::Vec<u32, 16> = c.namespaces().iter().map(|n| n.id()).collect();
        for nsid in nsids {
            exercise(
                board,
                c,
                nsid,
                (i as u64) << 8 | u64::from(nsid),
                &mut first_io,
            )?;
        }
    }
    Ok(())
}

/// How many NVMe controllers firmware left enabled (CSTS.RDY = 1), read
/// before the driver starts, through the BAR0 firmware assigned. The driver
/// must reset these before it gives them queues of its own.
fn enabled_by_firmware(board: &Context) -> usize {
    const BAR0: u16 = 0x10;
    const CSTS: usize = 0x1C;
    scan::walk(&board.config)
        .nvme
        .iter()
        .filter(|&&address| {
            let low = pci::read32(&board.config, address, BAR0);
            let high = pci::read32(&board.config, address, BAR0 + 4);
            let bar = (u64::from(high) << 32) | u64::from(low & !0xF);
            bar != 0
                && board
                    .platform
                    .map_registers(PhysAddr::new(bar), 0x1000)
                    .is_some_and(|regs| regs.read32(CSTS) & 1 == 1)
        })
        .count()
}

/// Pattern over `size` bytes, read back, write zeroes, deallocate.
fn exercise(board: &Context, c: &mut Ctrl, nsid: u32, seed: u64, first_io: &mut bool) -> Outcome {
    let ns = *c.namespace(nsid).map_err(|e| failure!("{e}"))?;
    let block = ns.block_size() as usize;
    let capacity = (ns.blocks() as usize).saturating_mul(block);
    let size = board
        .args
        .number("size", 4 << 20)
        .ok_or_else(|| failure!("malformed size="))? as usize;
    let size = size.min(capacity).min(16 << 20) / block * block;
    ensure!(size >= block, "size={size} below the block size {block}");
    let mut buffers = Buffers::new(board.platform);
    let w = buffers.alloc(size)?;
    let r = buffers.alloc(size)?;
    fill(&mut buffers.regions[w], seed, 0, block);
    let start = clock::now();
    c.write(nsid, 0, &buffers.regions[w])
        .map_err(|e| failure!("write ns {nsid}: {e}"))?;
    let write_time = clock::now() - start;
    if *first_io {
        *first_io = false;
        marker!(
            "RESULT boot_to_first_io_us={}",
            nvme::since_machine_start().as_micros()
        );
    }
    let start = clock::now();
    c.read(nsid, 0, &mut buffers.regions[r])
        .map_err(|e| failure!("read ns {nsid}: {e}"))?;
    let read_time = clock::now() - start;
    if let Some(word) = mismatch(&buffers.regions[r], seed, 0, block) {
        return Err(failure!(
            "ns {nsid}: read back differs at byte {}",
            word * 8
        ));
    }
    let kib_s = |bytes: usize, t: Duration| {
        (bytes as u128 * 1_000_000 / t.as_micros().max(1) / 1024) as u64
    };
    info!(
        "ns {nsid}: {} KiB pattern verified; write {} KiB/s, read {} KiB/s",
        size >> 10,
        kib_s(size, write_time),
        kib_s(size, read_time)
    );
    marker!(
        "RESULT write_kib_s={} read_kib_s={} bytes={size}",
        kib_s(size, write_time),
        kib_s(size, read_time)
    );

    // Zero the first 8 blocks; they must read back as zeroes, the rest intact.
    let zero_blocks = 8.min(size / block);
    match c.write_zeroes(nsid, 0, zero_blocks as u64) {
        Ok(()) => {
            c.read(nsid, 0, &mut buffers.regions[r])
                .map_err(|e| failure!("read after write zeroes: {e}"))?;
            let (zeroed, rest) = buffers.regions[r].as_slice().split_at(zero_blocks * block);
            ensure!(
                zeroed.iter().all(|&b| b == 0),
                "write zeroes left data behind"
            );
            let (_, wrote) = buffers.regions[w].as_slice().split_at(zero_blocks * block);
            ensure!(
                rest == wrote,
                "write zeroes touched blocks beyond its range"
            );
            marker!("RESULT write_zeroes=ok");
        }
        Err(Error::Unsupported { .. }) => marker!("RESULT write_zeroes=unsupported"),
        Err(e) => return Err(failure!("write zeroes: {e}")),
    }
    match c.deallocate(nsid, 0, zero_blocks as u64) {
        Ok(()) => marker!("RESULT deallocate=ok"),
        Err(Error::Unsupported { .. }) => marker!("RESULT deallocate=unsupported"),
        Err(e) => return Err(failure!("deallocate: {e}")),
    }
    c.flush(nsid).map_err(|e| failure!("flush: {e}"))
}

fn persistence(board: &Context, c: &mut Ctrl, nsid: u32) -> Outcome {
    let args = board.args;
    let seed = args
        .number("seed", 1)
        .ok_or_else(|| failure!("malformed seed="))?;
    let lba = args
        .number("persist_lba", 4096)
        .ok_or_else(|| failure!("malformed persist_lba="))?;
    let block = c.namespace(nsid).map_err(|e| failure!("{e}"))?.block_size() as usize;
    let mut buffers = Buffers::new(board.platform);
    let b = buffers.alloc(PERSIST_BYTES)?;
    match args.get("persist") {
        Some("write") => {
            fill(&mut buffers.regions[b], seed, lba, block);
            c.write(nsid, lba, &buffers.regions[b])
                .map_err(|e| failure!("write: {e}"))?;
            c.flush(nsid).map_err(|e| failure!("flush: {e}"))?;
            marker!("RESULT persist_written=ok");
            if args.get("power") == Some("cut") {
                // The host cuts the power now; nothing after the completed
                // flush may be needed for the data to survive.
                super::wait_for_host("never", 60_000)?;
            }
        }
        Some("check") => {
            c.read(nsid, lba, &mut buffers.regions[b])
                .map_err(|e| failure!("read: {e}"))?;
            if let Some(word) = mismatch(&buffers.regions[b], seed, lba, block) {
                return Err(failure!("persisted data differs at byte {}", word * 8));
            }
            marker!("RESULT persisted=ok");
        }
        _ => {}
    }
    Ok(())
}

/// A disk with injected read errors at `badblock`: such reads fail with a
/// typed error (blocking and split-phase), everything else keeps working and
/// the controller stays ready.
fn bad_disk(board: &Context, c: &mut Ctrl, nsid: u32) -> Outcome {
    let bad = board
        .args
        .number("badblock", 0)
        .ok_or_else(|| failure!("malformed badblock="))?;
    let block = c.namespace(nsid).map_err(|e| failure!("{e}"))?.block_size() as usize;
    let good = bad + 64;
    // Good blocks serve before the error.
    nvme::verified_io(c, nsid, good, 8 * block, 11)?;
    let mut buffers = Buffers::new(board.platform);
    let b = buffers.alloc(8 * block)?;
    let error = c
        .read(nsid, bad, &mut buffers.regions[b])
        .err()
        .ok_or_else(|| failure!("read of the bad block {bad} succeeded"))?;
    let Error::CommandFailed { status, opcode } = error else {
        return Err(failure!(
            "read of the bad block failed with {error}, not a command status"
        ));
    };
    info!("bad block read: {error}");
    marker!("RESULT bad_read=CommandFailed bad_opcode={opcode:#04x} bad_status={status}");
    ensure!(
        c.state() == bare_nvme::State::Ready,
        "controller left Ready after a media error"
    );
    // Split-phase: one batch mixing the bad block with good ones; only the
    // bad one fails, each completes once.
    drop(buffers);
    let lbas = [good, bad, good + 8, good + 16];
    for (tag, &lba) in lbas.iter().enumerate() {
        let buffer = board
            .platform
            .dma_alloc(block, 4096)
            .ok_or_else(|| failure!("no DMA memory"))?;
        let op = IoOp::Read {
            nsid,
            lba,
            blocks: 1,
        };
        if let Err(r) = c.submit(QueueId::FIRST, op, Some(buffer), tag as u64) {
            if let Some(b) = r.buffer {
                board.platform.dma_free(b);
            }
            return Err(failure!("submit: {}", r.error));
        }
    }
    let mut seen = [0u32; 4];
    let mut failed_tag = None;
    let deadline = super::deadline_ms(5_000);
    while seen.iter().sum::<u32>() < 4 && clock::now() < deadline {
        c.poll(QueueId::FIRST, |done| {
            seen[done.tag as usize] += 1;
            if done.result.is_err() {
                failed_tag = Some(done.tag);
            }
            if let Some(b) = done.buffer {
                board.platform.dma_free(b);
            }
        });
    }
    ensure!(
        seen == [1; 4],
        "completions per command {seen:?}, expected one each"
    );
    ensure!(
        failed_tag == Some(1),
        "failed command {failed_tag:?}, expected the bad block's"
    );
    // And the driver keeps serving.
    nvme::verified_io(c, nsid, good + 32, 16 * block, 12)?;
    marker!("RESULT after_error=ok");
    Ok(())
}
