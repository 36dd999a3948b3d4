//! The block device's pool of bounce buffers over the simulated controller:
//! a large request keeps a piece in flight per buffer (the device sees them
//! at once), round trips whatever its size, leaves other users' completions
//! for `poll`, fails whole with the first failing piece after reaping every
//! other, meets a removal with `DeviceRemoved` once and every buffer back,
//! and goes on with the buffers left when some were quarantined.

mod common;

use std::time::Duration;

use bare_nvme::block::{BlockTarget, BounceConfig, NamespaceDisk};
use bare_nvme::spec::command::nvm;
use bare_nvme::{ControllerConfig, Error, IoOp, Platform, QueueId};
use bare_nvme_sim::{CtrlId, Fault, Hold, Sim};

use common::*;

const CTRL: CtrlId = CtrlId(0);
const BLOCK: usize = 512;

fn pool(buffers: usize, bytes: usize) -> BounceConfig {
    BounceConfig::default().buffers(buffers).bytes(bytes)
}

/// Controller settings with a small largest transfer, so splits show.
fn small_transfers() -> ControllerConfig {
    ControllerConfig::default().max_transfer(16 << 10)
}

fn check_blocks(sim: &Sim, ctrl: CtrlId, lba: u64, data: &[u8]) {
    for (i, block) in data.chunks(BLOCK).enumerate() {
        assert_eq!(sim.read_block(ctrl, 1, lba + i as u64), block, "block {i}");
    }
}

#[test]
fn a_request_many_times_the_pool_round_trips_with_a_piece_in_flight_per_buffer() {
    let (sim, mut driver, id) = single(spec(8192, BLOCK as u32), ControllerConfig::default());
    // 4 x 16 KiB; 5 times the pool and 3 blocks more: the last piece is
    // short.
    let data = pattern(5 * 4 * (16 << 10) + 3 * BLOCK, 7);
    {
        let mut disk = NamespaceDisk::open(&mut *driver, Some(id), 1, pool(4, 16 << 10)).unwrap();
        assert_eq!((disk.bounce_buffers(), disk.bounce_bytes()), (4, 64 << 10));
        sim.reset_counters();
        disk.write(5, &data).unwrap();
        let c = sim.counters();
        assert_eq!(c.io(nvm::WRITE), 21, "one command per piece");
        assert_eq!(c.io_in_flight_max, 4, "a piece in flight per buffer");
        check_blocks(&sim, CTRL, 5, &data);

        sim.reset_counters();
        let mut back = vec![0u8; data.len()];
        disk.read(5, &mut back).unwrap();
        let c = sim.counters();
        assert_eq!(c.io(nvm::READ), 21);
        assert_eq!(c.io_in_flight_max, 4);
        assert!(back == data, "read back differs");
        assert_eq!(disk.bytes_copied(), 2 * data.len() as u64);
        assert_eq!(c.dma_allocs, 0, "DMA memory allocated per call");
    }
    finish(&sim, driver);
}

#[test]
fn a_buffer_larger_than_the_largest_transfer_is_sent_as_several_commands_in_flight() {
    let (sim, mut driver, id) = single(spec(8192, BLOCK as u32), small_transfers());
    // 2 x 64 KiB buffers, each piece four 16 KiB commands.
    let data = pattern(300 << 10, 2);
    {
        let mut disk = NamespaceDisk::open(&mut *driver, Some(id), 1, pool(2, 64 << 10)).unwrap();
        sim.reset_counters();
        disk.write(0, &data).unwrap();
        let c = sim.counters();
        assert_eq!(c.io(nvm::WRITE), 19, "300 KiB in 16 KiB commands");
        assert_eq!(c.io_in_flight_max, 8, "two pieces of four commands");
        let mut back = vec![0u8; data.len()];
        disk.read(0, &mut back).unwrap();
        assert!(back == data, "read back differs");
    }
    check_blocks(&sim, CTRL, 0, &data);
    finish(&sim, driver);
}

#[test]
fn zero_copy_calls_keep_as_many_commands_in_flight_as_the_pool_has_buffers() {
    let (sim, mut driver, id) = single(spec(4096, BLOCK as u32), small_transfers());
    let p = sim.platform();
    let out = filled(&p, 200 << 10, 4);
    let mut back = zeroed(&p, 200 << 10);
    {
        let mut disk = NamespaceDisk::open(&mut *driver, Some(id), 1, pool(3, 4096)).unwrap();
        sim.reset_counters();
        disk.write_dma(9, &out).unwrap();
        let c = sim.counters();
        assert_eq!(c.io(nvm::WRITE), 13, "split at 16 KiB");
        assert_eq!(c.io_in_flight_max, 3);
        disk.read_dma(9, &mut back).unwrap();
        assert_eq!(disk.bytes_copied(), 0);
        // The controller's own blocking call waits for each command.
        sim.reset_counters();
        disk.target()
            .controller(id)
            .unwrap()
            .write(1, 9, &out)
            .unwrap();
        let c = sim.counters();
        assert_eq!((c.io(nvm::WRITE), c.io_in_flight_max), (13, 1));
    }
    assert_eq!(back.as_slice(), out.as_slice());
    p.dma_free(out);
    p.dma_free(back);
    finish(&sim, driver);
}

#[test]
fn a_queue_shorter_than_the_pools_commands_slows_the_pipeline_without_failing_it() {
    let sim = Sim::single(spec(4096, BLOCK as u32));
    // One queue of 16 entries (15 usable) for 4 x 64 KiB in 16 KiB
    // commands: 16 wanted in flight.
    let (mut driver, ids) = up(&sim, small_transfers().queue_depth(16));
    let id = ids[0];
    let data = pattern(1 << 20, 8);
    {
        let mut disk = NamespaceDisk::open(&mut *driver, Some(id), 1, pool(4, 64 << 10)).unwrap();
        sim.reset_counters();
        disk.write(0, &data).unwrap();
        assert_eq!(
            sim.counters().io_in_flight_max,
            15,
            "the queue is the limit"
        );
        let mut back = vec![0u8; data.len()];
        disk.read(0, &mut back).unwrap();
        assert!(back == data, "read back differs");
    }
    finish(&sim, driver);
}

#[test]
fn a_pipelined_call_leaves_the_completions_of_other_commands_to_poll() {
    let (sim, mut driver, id) = single(spec(4096, BLOCK as u32), ControllerConfig::default());
    let p = sim.platform();
    let theirs = filled(&p, 4 * BLOCK, 3);
    let token = driver
        .controller(id)
        .unwrap()
        .submit(
            QueueId::FIRST,
            IoOp::Write {
                nsid: 1,
                lba: 4000,
                blocks: 4,
            },
            Some(theirs),
            77,
        )
        .unwrap();
    let data = pattern(256 << 10, 5);
    {
        let mut disk = NamespaceDisk::open(&mut *driver, Some(id), 1, pool(4, 16 << 10)).unwrap();
        disk.write(0, &data).unwrap();
        let mut back = vec![0u8; data.len()];
        disk.read(0, &mut back).unwrap();
        assert!(back == data, "read back differs");
    }
    let got = collect(&mut driver, id, 0, 1);
    assert_eq!(
        (got[0].token, got[0].tag, got[0].result),
        (token, 77, Ok(()))
    );
    check_blocks(&sim, CTRL, 4000, &pattern(4 * BLOCK, 3));
    for c in got {
        p.dma_free(c.buffer.expect("buffer back"));
    }
    let mut none = 0;
    driver
        .controller(id)
        .unwrap()
        .poll(QueueId::FIRST, |_| none += 1);
    assert_eq!(none, 0, "the block device's commands reached poll");
    finish(&sim, driver);
}

#[test]
fn a_failing_piece_fails_the_request_after_every_other_piece_is_reaped() {
    let (sim, mut driver, id) = single(spec(4096, BLOCK as u32), ControllerConfig::default());
    let data = pattern(32 * (8 << 10), 6);
    {
        let mut disk = NamespaceDisk::open(&mut *driver, Some(id), 1, pool(4, 8 << 10)).unwrap();
        disk.write(0, &data).unwrap();
        // Piece 10 of 32 (blocks 160..176) cannot be read.
        sim.fail_reads(CTRL, 1, 165..166);
        sim.reset_counters();
        let mut back = vec![0u8; data.len()];
        match disk.read(0, &mut back) {
            Err(Error::CommandFailed { opcode, .. }) => assert_eq!(opcode, nvm::READ),
            other => panic!("{other:?}"),
        }
        let c = sim.counters();
        assert!(
            c.io(nvm::READ) > 11 && c.io(nvm::READ) < 32,
            "pieces past the failing one were in flight, the rest not sent: {}",
            c.io(nvm::READ)
        );
        let ctrl = disk.target().controller(id).unwrap();
        assert_eq!((ctrl.in_flight(), ctrl.undelivered()), (0, 0), "abandoned");
        // Writes fail the same way; the pool is whole and the device goes on.
        sim.fail_writes(CTRL, 1, 40..41);
        assert!(matches!(
            disk.write(0, &data),
            Err(Error::CommandFailed {
                opcode: nvm::WRITE,
                ..
            })
        ));
        sim.clear_media_errors(CTRL);
        assert_eq!(disk.bounce_buffers(), 4);
        disk.read(0, &mut back).unwrap();
        assert!(back == data, "read back differs");
    }
    finish(&sim, driver);
}

#[test]
fn a_removal_mid_pipeline_fails_the_call_once_and_every_buffer_comes_back() {
    let (sim, mut driver, id) = single(spec(8192, BLOCK as u32), ControllerConfig::default());
    let data = pattern(64 * (8 << 10), 9);
    let old = pattern(data.len(), 1);
    let mut disk = NamespaceDisk::open(&mut *driver, Some(id), 1, pool(4, 8 << 10)).unwrap();
    disk.write(0, &old).unwrap();
    sim.reset_counters();
    // A few register accesses into the call: pieces done, pieces in flight.
    sim.on_access(sim.access_count() + 6, Fault::SurpriseRemove(CTRL));
    assert_eq!(disk.write(0, &data), Err(Error::DeviceRemoved));
    let c = sim.counters();
    assert!(c.io_in_flight_max > 1, "not pipelined");
    assert!(
        c.io(nvm::WRITE) > 1 && c.io(nvm::WRITE) < 64,
        "the removal came mid-request: {} writes",
        c.io(nvm::WRITE)
    );
    assert_eq!(disk.write(0, &data), Err(Error::StaleHandle));
    assert_eq!(disk.read(0, &mut vec![0; BLOCK]), Err(Error::StaleHandle));
    assert_eq!(disk.bounce_buffers(), 4, "the device is gone: nothing kept");
    let frees = sim.counters().dma_frees;
    drop(disk);
    assert_eq!(sim.counters().dma_frees - frees, 4, "a bounce buffer lost");
    for _ in 0..1_000 {
        sim.advance(Duration::from_millis(1));
        let _ = driver.tick();
    }
    assert_eq!(driver.ready_controllers().count(), 0);
    drop(driver);
    assert_clean(&sim);
    assert_eq!(sim.counters().dma_regions, 0, "DMA regions outstanding");
}

#[test]
fn quarantined_buffers_leave_the_pool_for_good_and_the_rest_keep_working() {
    let sim = Sim::builder()
        .controller_on_bus0(spec(2048, BLOCK as u32).serial("hangs"))
        .controller_on_bus0(spec(2048, BLOCK as u32).serial("works"))
        .build();
    let (mut driver, ids) = up(
        &sim,
        ControllerConfig::default()
            .io_timeout(Duration::from_millis(50))
            .admin_timeout(Duration::from_millis(50))
            .ready_timeout_limit(Duration::from_millis(500)),
    );
    assert_eq!(ids.len(), 2);
    let on = |c: CtrlId| {
        *ids.iter()
            .find(|&&id| Some(driver.address(id).unwrap()) == sim.address(c))
            .unwrap()
    };
    let (hangs, works) = (on(CtrlId(0)), on(CtrlId(1)));
    let data = pattern(10 * (8 << 10) + BLOCK, 4);
    {
        let mut disk = NamespaceDisk::open(&mut *driver, Some(hangs), 1, pool(4, 8 << 10)).unwrap();
        // The controller freezes with two pieces on it: their commands never
        // complete, CC.EN = 0 is never acknowledged and bus mastering cannot
        // be turned off, so nothing proves its DMA stopped.
        sim.hold(CtrlId(0), Hold::Io);
        sim.hang(CtrlId(0));
        sim.ignore_config_writes(CtrlId(0), true);
        let mut two = vec![0u8; 2 * (8 << 10)];
        assert_eq!(disk.read(0, &mut two), Err(Error::Quarantined));
        assert_eq!((disk.bounce_buffers(), disk.bounce_bytes()), (2, 16 << 10));
        assert_eq!(disk.read(0, &mut two), Err(Error::StaleHandle));

        // The same pool on the other controller: two buffers in flight.
        let handle = disk.target().namespace_handle(Some(works), 1).unwrap();
        disk.rebind(handle).unwrap();
        sim.reset_counters();
        disk.write(3, &data).unwrap();
        assert_eq!(sim.counters().io_in_flight_max, 2, "pieces per buffer left");
        let mut back = vec![0u8; data.len()];
        disk.read(3, &mut back).unwrap();
        assert!(back == data, "read back differs");
        check_blocks(&sim, CtrlId(1), 3, &data);

        let frees = sim.counters().dma_frees;
        drop(disk);
        assert_eq!(
            sim.counters().dma_frees - frees,
            2,
            "only the buffers the device cannot reach go back"
        );
    }
    assert!(driver.controller(hangs).unwrap().quarantined().regions > 0);
    sim.expect_quarantined();
    drop(driver);
    assert_clean(&sim);
}

#[test]
fn a_pool_with_every_buffer_quarantined_refuses_bounce_calls() {
    let sim = Sim::builder()
        .controller_on_bus0(spec(2048, BLOCK as u32).serial("hangs"))
        .controller_on_bus0(spec(2048, BLOCK as u32).serial("works"))
        .build();
    let (mut driver, ids) = up(
        &sim,
        ControllerConfig::default()
            .io_timeout(Duration::from_millis(50))
            .admin_timeout(Duration::from_millis(50))
            .ready_timeout_limit(Duration::from_millis(500)),
    );
    let on = |c: CtrlId| {
        *ids.iter()
            .find(|&&id| Some(driver.address(id).unwrap()) == sim.address(c))
            .unwrap()
    };
    let (hangs, works) = (on(CtrlId(0)), on(CtrlId(1)));
    let p = sim.platform();
    {
        let mut disk = NamespaceDisk::open(&mut *driver, Some(hangs), 1, pool(2, 4096)).unwrap();
        sim.hold(CtrlId(0), Hold::Io);
        sim.hang(CtrlId(0));
        sim.ignore_config_writes(CtrlId(0), true);
        let mut big = vec![0u8; 4 * 4096];
        assert_eq!(disk.write(0, &big), Err(Error::Quarantined));
        assert_eq!(disk.bounce_buffers(), 0);
        let handle = disk.target().namespace_handle(Some(works), 1).unwrap();
        disk.rebind(handle).unwrap();
        assert_eq!(
            disk.read(0, &mut big),
            Err(Error::OutOfDmaMemory { bytes: 4096 })
        );
        // Zero-copy needs no bounce buffer.
        let out = filled(&p, 4096, 2);
        disk.write_dma(0, &out).unwrap();
        p.dma_free(out);
        // A byte stream says so too, rather than reading as the end.
        #[cfg(feature = "embedded-io")]
        let disk = {
            use embedded_io::Read as _;
            let mut stream = bare_nvme::adapters::io::ByteStream::new(disk);
            assert_eq!(
                stream.read(&mut [0; 16]).map_err(|e| e.0),
                Err(Error::OutOfDmaMemory { bytes: 4096 })
            );
            stream.into_inner()
        };
        assert_eq!(disk.bounce_buffers(), 0);
        let frees = sim.counters().dma_frees;
        drop(disk);
        assert_eq!(
            sim.counters().dma_frees,
            frees,
            "a quarantined buffer freed"
        );
    }
    sim.expect_quarantined();
    drop(driver);
    assert_clean(&sim);
}
