//! The namespace handle and the blocking block device over the simulated
//! controller: bounce copies and zero-copy transfers, the split at the
//! largest transfer, validation before any command, stale handles after a
//! removal and after a re-attach of the same slot, and a standalone
//! controller as the target.

mod common;

use std::time::Duration;

use bare_nvme::block::{BlockTarget, BounceConfig, NamespaceDisk};
use bare_nvme::spec::command::nvm;
use bare_nvme::{
    Controller, ControllerConfig, Driver, DriverConfig, Error, Event, PhysAddr, Platform,
};
use bare_nvme_sim::{CtrlId, Fault, Hold, Misbehaviour, PortId, Sim, SimConfig, SimPlatform};
use pci_types::ConfigRegionAccess as _;

use common::*;

const CTRL: CtrlId = CtrlId(0);
const BLOCK: usize = 512;

/// Controller settings with a small largest transfer, so splits show.
fn small_transfers() -> ControllerConfig {
    ControllerConfig::default().max_transfer(16 << 10)
}

fn writes(sim: &Sim) -> u64 {
    sim.counters().io(nvm::WRITE)
}

fn reads(sim: &Sim) -> u64 {
    sim.counters().io(nvm::READ)
}

#[test]
fn bounce_copies_round_trip_and_split_at_the_bounce_size_and_the_largest_transfer() {
    let (sim, mut driver, id) = single(spec(4096, BLOCK as u32), small_transfers());
    let data = pattern(400 * BLOCK, 3);
    {
        let mut disk = NamespaceDisk::open(
            &mut *driver,
            Some(id),
            1,
            BounceConfig::default().bytes(64 << 10),
        )
        .unwrap();
        assert_eq!((disk.block_size(), disk.capacity()), (512, 4096));
        assert_eq!(disk.handle().max_transfer(), 16 << 10);
        assert_eq!(disk.handle().generation(), id.generation());
        let before = writes(&sim);
        disk.write(10, &data).unwrap();
        // 200 KiB through a 64 KiB bounce buffer: 64 + 64 + 64 + 8 KiB,
        // each split at 16 KiB: 4 + 4 + 4 + 1 commands.
        assert_eq!(writes(&sim) - before, 13);
        for (i, block) in data.chunks(BLOCK).enumerate() {
            assert_eq!(sim.read_block(CTRL, 1, 10 + i as u64), block, "block {i}");
        }
        let mut back = vec![0u8; data.len()];
        let before = reads(&sim);
        disk.read(10, &mut back).unwrap();
        assert_eq!(reads(&sim) - before, 13);
        assert!(back == data, "read back differs");
        assert_eq!(disk.bytes_copied(), 2 * data.len() as u64);
        disk.flush().unwrap();
        assert_eq!(sim.dirty_blocks(CTRL, 1), 0);
    }
    finish(&sim, driver);
}

#[test]
fn a_bounce_buffer_is_whole_blocks_and_allocated_once() {
    let (sim, mut driver, id) = single(spec(4096, 4096), ControllerConfig::default());
    let allocs = sim.counters().dma_allocs;
    {
        let mut disk = NamespaceDisk::open(
            &mut *driver,
            Some(id),
            1,
            BounceConfig::default().buffers(1).bytes(10_000),
        )
        .unwrap();
        assert_eq!(disk.bounce_bytes(), 8192);
        let data = pattern(64 << 10, 9);
        disk.write(0, &data).unwrap();
        let mut back = vec![0; data.len()];
        disk.read(0, &mut back).unwrap();
        assert!(back == data);
        assert_eq!(sim.counters().dma_allocs - allocs, 1, "one allocation");
        let tiny = NamespaceDisk::open(
            &mut *disk.target(),
            Some(id),
            1,
            BounceConfig::default().buffers(1).bytes(1),
        )
        .unwrap();
        assert_eq!(tiny.bounce_bytes(), 4096, "at least one block");
    }
    finish(&sim, driver);
}

#[test]
fn zero_copy_transfers_use_the_callers_dma_memory() {
    let (sim, mut driver, id) = single(spec(4096, BLOCK as u32), small_transfers());
    let p = sim.platform();
    let out = filled(&p, 128 << 10, 5);
    let mut back = zeroed(&p, 128 << 10);
    {
        let mut disk =
            NamespaceDisk::open(&mut *driver, Some(id), 1, BounceConfig::default()).unwrap();
        let before = writes(&sim);
        disk.write_dma(100, &out).unwrap();
        assert_eq!(writes(&sim) - before, 8, "split at 16 KiB");
        disk.read_dma(100, &mut back).unwrap();
        assert_eq!(
            disk.bytes_copied(),
            0,
            "nothing went through the bounce buffer"
        );
    }
    assert_eq!(back.as_slice(), out.as_slice());
    assert_eq!(sim.read_block(CTRL, 1, 100), &out.as_slice()[..BLOCK]);
    p.dma_free(out);
    p.dma_free(back);
    finish(&sim, driver);
}

#[test]
fn requests_are_validated_whole_before_any_command() {
    let (sim, mut driver, id) = single(spec(1024, BLOCK as u32), ControllerConfig::default());
    {
        let mut disk =
            NamespaceDisk::open(&mut *driver, Some(id), 1, BounceConfig::default()).unwrap();
        let before = io_total(&sim.counters());
        let mut buf = vec![0u8; 3 * BLOCK];
        assert!(matches!(
            disk.read(0, &mut buf[..BLOCK + 1]),
            Err(Error::InvalidArgument { .. })
        ));
        assert_eq!(disk.write(0, &[]), Err(Error::EmptyTransfer));
        // The first two blocks fit, the third does not: nothing is written.
        assert_eq!(
            disk.write(1022, &buf),
            Err(Error::LbaOutOfRange {
                lba: 1022,
                blocks: 3,
                capacity: 1024
            })
        );
        assert_eq!(
            disk.read(u64::MAX, &mut buf[..BLOCK]),
            Err(Error::LbaOutOfRange {
                lba: u64::MAX,
                blocks: 1,
                capacity: 1024
            })
        );
        assert_eq!(io_total(&sim.counters()), before, "a command was sent");
        assert_eq!(
            NamespaceDisk::open(&mut *disk.target(), Some(id), 2, BounceConfig::default()).err(),
            Some(Error::UnknownNamespace { nsid: 2 })
        );
        assert!(matches!(
            NamespaceDisk::open(&mut *disk.target(), None, 1, BounceConfig::default()),
            Err(Error::InvalidArgument { .. })
        ));
    }
    finish(&sim, driver);
}

/// Ticks `driver` until `done` holds for an event (bounded).
fn tick_for<const N: usize, const Q: usize, const D: usize>(
    driver: &mut Driver<SimPlatform, SimConfig, N, Q, D>,
    sim: &Sim,
    mut done: impl FnMut(&Event) -> bool,
) -> Event {
    for _ in 0..5_000 {
        sim.advance(Duration::from_millis(1));
        if let Some(e) = driver.tick().into_iter().find(|e| done(e)) {
            return e;
        }
    }
    panic!("event not seen");
}

#[test]
fn a_handle_is_stale_after_a_removal_and_after_a_reattach_of_the_same_slot() {
    let sim = Sim::single(spec(2048, BLOCK as u32).serial("first"));
    // One entry (the re-attach reuses it), one queue of 32 entries.
    let mut driver: Box<Driver<SimPlatform, SimConfig, 1, 1, 32>> = Box::new(Driver::new(
        sim.platform(),
        sim.config_access(),
        DriverConfig::default(),
    ));
    driver.scan().unwrap();
    let _ = driver.wait_ready(PATIENCE);
    let old = driver.ready_controllers().next().expect("ready");
    let handle = driver.namespace_handle(Some(old), 1).unwrap();
    let data = pattern(4 * BLOCK, 1);
    {
        let mut disk =
            NamespaceDisk::with_handle(&mut *driver, handle, BounceConfig::default()).unwrap();
        disk.write(0, &data).unwrap();
        sim.surprise_remove(CTRL);
        // The call that meets the removal says so; later ones are stale.
        assert_eq!(disk.write(0, &data), Err(Error::DeviceRemoved));
        assert_eq!(disk.write(0, &data), Err(Error::StaleHandle));
        assert_eq!(disk.flush(), Err(Error::StaleHandle));
        assert_eq!(disk.read(0, &mut vec![0; BLOCK]), Err(Error::StaleHandle));
    }
    tick_for(&mut driver, &sim, |e| matches!(e, Event::Removed { .. }));
    let again = sim.hot_add(PortId(0), spec(2048, BLOCK as u32).serial("second"));
    let new = match tick_for(&mut driver, &sim, |e| matches!(e, Event::Ready { .. })) {
        Event::Ready { id, .. } => id,
        _ => unreachable!(),
    };
    assert_ne!(new.generation(), old.generation());
    {
        // Same slot, same entry, same namespace shape: still stale.
        let mut disk =
            NamespaceDisk::with_handle(&mut *driver, handle, BounceConfig::default()).unwrap();
        assert_eq!(disk.write(0, &data), Err(Error::StaleHandle));
        // A new handle reaches the new controller.
        let mut fresh =
            NamespaceDisk::open(&mut *disk.target(), Some(new), 1, BounceConfig::default())
                .unwrap();
        assert_eq!(fresh.handle().generation(), new.generation());
        fresh.write(0, &data).unwrap();
    }
    assert_eq!(sim.read_block(again, 1, 0), &data[..BLOCK]);
    driver.begin_detach(new).unwrap();
    tick_for(&mut driver, &sim, |e| matches!(e, Event::Removed { .. }));
    drop(driver);
    assert_clean(&sim);
    assert_eq!(sim.counters().dma_regions, 0, "DMA regions outstanding");
}

/// A controller driven without the driver, on `sim`'s controller 0, with
/// memory decoding and bus mastering turned on as firmware would.
fn standalone<const Q: usize, const D: usize>(
    sim: &Sim,
    config: ControllerConfig,
) -> Controller<SimPlatform, (), Q, D> {
    let access = sim.config_access();
    let address = sim.address(CTRL).expect("function");
    // As firmware would: memory decoding and bus mastering on.
    // SAFETY: the simulated config space has no side effects beyond the model.
    unsafe {
        let command = access.read(address, 4);
        access.write(address, 4, command | 0x6);
    }
    let platform = sim.platform();
    let regs = platform
        .map_registers(PhysAddr::new(sim.bar(CTRL)), 16 << 10)
        .expect("mapped");
    Controller::new(platform, (), regs, 16 << 10, config)
}

#[test]
fn a_standalone_controller_serves_a_block_device_until_it_is_detached() {
    let sim = Sim::single(spec(2048, BLOCK as u32));
    // Small capacities: one queue of 16 entries.
    let mut c = standalone::<1, 16>(&sim, small_transfers());
    c.bring_up().unwrap();
    let data = pattern(96 << 10, 4);
    let handle = c.namespace_handle(None, 1).unwrap();
    assert_eq!((handle.controller(), handle.generation()), (None, 0));
    {
        let mut disk = NamespaceDisk::with_handle(&mut c, handle, BounceConfig::default()).unwrap();
        disk.write(7, &data).unwrap();
        let mut back = vec![0; data.len()];
        disk.read(7, &mut back).unwrap();
        assert!(back == data);
        disk.flush().unwrap();
        disk.target().detach().unwrap();
        assert_eq!(disk.read(7, &mut back), Err(Error::StaleHandle));
    }
    drop(c);
    assert_clean(&sim);
    assert_eq!(sim.counters().dma_regions, 0, "DMA regions outstanding");
}

#[test]
fn a_handle_of_a_driver_controller_is_refused_by_a_standalone_one() {
    let (sim, mut driver, id) = single(spec(1024, BLOCK as u32), ControllerConfig::default());
    let handle = driver.namespace_handle(Some(id), 1).unwrap();
    let ctrl = driver.controller(id).unwrap();
    assert_eq!(BlockTarget::flush(ctrl, &handle), Err(Error::StaleHandle));
    finish(&sim, driver);
}

#[test]
fn a_bounce_buffer_the_device_may_still_write_is_never_used_or_freed_again() {
    let sim = Sim::single(spec(2048, BLOCK as u32));
    let mut c = standalone::<4, 256>(
        &sim,
        ControllerConfig::default()
            .io_timeout(Duration::from_millis(50))
            .admin_timeout(Duration::from_millis(50))
            .ready_timeout_limit(Duration::from_millis(500)),
    );
    c.bring_up().unwrap();
    {
        let single = BounceConfig::default().buffers(1);
        let mut disk = NamespaceDisk::open(&mut c, None, 1, single).unwrap();
        // The controller freezes: its command never completes, CC.EN = 0 is
        // never acknowledged, and without config space nothing else proves
        // that its DMA stopped.
        sim.hold(CTRL, Hold::Io);
        sim.hang(CTRL);
        let mut buf = vec![0u8; 4 * BLOCK];
        assert_eq!(disk.read(0, &mut buf), Err(Error::Quarantined));
        assert_eq!(disk.bounce_bytes(), 0, "bounce buffer kept out of use");
        assert_eq!(disk.write(0, &buf), Err(Error::StaleHandle));
        let frees = sim.counters().dma_frees;
        drop(disk);
        assert_eq!(
            sim.counters().dma_frees,
            frees,
            "the bounce buffer was freed"
        );
    }
    assert!(c.quarantined().regions > 0);
    drop(c);
    sim.expect_quarantined();
}

#[test]
fn a_handle_outlives_a_reset_that_brings_the_same_namespace_back() {
    let (sim, mut driver, id) = single(spec(2048, BLOCK as u32), ControllerConfig::default());
    let handle = driver.namespace_handle(Some(id), 1).unwrap();
    sim.inject(bare_nvme_sim::Fault::NssrOccurred(CTRL));
    for _ in 0..2_000 {
        sim.advance(Duration::from_millis(1));
        let _ = driver.tick();
        let c = driver.controller(id).unwrap();
        if c.reset_count() == 1 && c.state() == bare_nvme::State::Ready {
            break;
        }
    }
    assert_eq!(driver.controller(id).unwrap().reset_count(), 1, "no reset");
    let data = pattern(2 * BLOCK, 6);
    {
        let mut disk =
            NamespaceDisk::with_handle(&mut *driver, handle, BounceConfig::default()).unwrap();
        disk.write(4, &data).unwrap();
        let mut back = vec![0; data.len()];
        disk.read(4, &mut back).unwrap();
        assert!(back == data);
    }
    finish(&sim, driver);
}

/// A zero-copy read in four commands: the last fails with a media error at
/// once, the first is never completed and the controller then freezes at a
/// swept point. Whenever the controller kept memory in quarantine, the call
/// says `Quarantined` (the caller must leak its buffer), whatever other
/// error a piece met first.
#[test]
fn a_request_in_several_commands_reports_a_quarantine_over_any_other_error() {
    let (mut quarantines, mut after_media_error) = (0, 0);
    for k in 0..4 {
        let sim = Sim::single(spec(2048, BLOCK as u32));
        let mut c = standalone::<1, 32>(
            &sim,
            small_transfers()
                .io_timeout(Duration::from_millis(50))
                .admin_timeout(Duration::from_millis(50))
                .ready_timeout_limit(Duration::from_millis(500)),
        );
        c.bring_up().unwrap();
        let mut buffer = sim.platform().dma_alloc(64 << 10, 4096).unwrap();
        let result = {
            let mut disk = NamespaceDisk::open(&mut c, None, 1, BounceConfig::default()).unwrap();
            // Four commands of 16 KiB: the fourth meets a media error, the
            // first is consumed and never completed.
            sim.fail_reads(CTRL, 1, 96..128);
            sim.misbehave(CTRL, Misbehaviour::NeverComplete.once());
            sim.on_access(sim.access_count() + k, Fault::Hang(CTRL));
            disk.read_dma(0, &mut buffer)
        };
        if c.quarantined().regions > 0 {
            quarantines += 1;
            // All four reached the device: the media error was posted
            // before the freeze.
            after_media_error += usize::from(reads(&sim) == 4);
            assert_eq!(result, Err(Error::Quarantined), "freeze at access +{k}");
            // The device may still write it: never freed.
            let _kept = buffer;
            drop(c);
            sim.expect_quarantined();
            sim.expect_outstanding();
        } else {
            assert!(result.is_err(), "freeze at access +{k}: {result:?}");
            sim.platform().dma_free(buffer);
            drop(c);
            sim.unchecked();
        }
    }
    assert!(quarantines > 0, "no freeze led to a quarantine");
    assert!(after_media_error > 0, "no quarantine after a media error");
}
