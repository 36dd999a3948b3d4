//! Non-coherent DMA: the simulated device sees only what the driver flushed
//! (`Platform::dma_flush`) and the driver sees what the device wrote only
//! after invalidating it (`Platform::dma_invalidate`). Every path that moves
//! data between them works only if the driver cleans and invalidates at the
//! right places: rings, PRP lists, data buffers, shadow doorbells, the
//! identify and log page.

mod common;

use std::time::Duration;

use bare_nvme::nvme::command::{admin, SubmissionEntry};
use bare_nvme::{
    ControllerConfig, ControllerId, Error, Event, IoOp, Platform, QueueId, State, Threshold,
};
use bare_nvme_sim::{ControllerSpec, CtrlId, Hold, NamespaceSpec, PortId, Sim};
use common::{collect, filled, finish, pattern, up, zeroed, BoxedDrv};

const C: CtrlId = CtrlId(0);

fn spec() -> ControllerSpec {
    ControllerSpec::default()
        .serial("noncoherent")
        .namespace(NamespaceSpec::new(1 << 16, 512))
}

/// One controller in a hot-plug slot of a machine without coherent DMA.
fn machine(spec: ControllerSpec, config: ControllerConfig) -> (Sim, BoxedDrv, ControllerId) {
    let sim = Sim::builder()
        .root_port(true)
        .controller_on_port(PortId(0), spec)
        .non_coherent_dma(true)
        .build();
    let (driver, ids) = up(&sim, config);
    assert_eq!(ids.len(), 1, "not ready: {:?}", sim.protocol_log());
    (sim, driver, ids[0])
}

fn ticks(sim: &Sim, driver: &mut BoxedDrv, n: usize) -> Vec<Event> {
    let mut all = Vec::new();
    for _ in 0..n {
        sim.advance(Duration::from_millis(1));
        all.extend(driver.tick());
    }
    all
}

/// Writes `len` bytes of `seed`'s pattern at `lba` from a buffer starting
/// `offset` bytes into its allocation, reads them back into another such
/// buffer, and checks both the data read and what the media holds.
fn round_trip(
    sim: &Sim,
    driver: &mut BoxedDrv,
    id: ControllerId,
    lba: u64,
    len: usize,
    offset: usize,
    seed: u8,
) {
    let p = sim.platform();
    let data = pattern(len, seed);
    let mut src_parent = zeroed(&p, offset + len);
    src_parent.as_mut_slice()[offset..].copy_from_slice(&data);
    let mut dst_parent = zeroed(&p, offset + len);
    // Stale bytes the CPU holds in the read buffer must not survive the read.
    dst_parent.as_mut_slice().fill(0xEE);
    let c = driver.controller(id).unwrap();
    c.write(1, lba, src_parent.view(offset..offset + len).unwrap())
        .unwrap();
    c.read(1, lba, dst_parent.view_mut(offset..offset + len).unwrap())
        .unwrap();
    assert_eq!(
        &dst_parent.as_slice()[offset..],
        &data[..],
        "{len} bytes at +{offset}"
    );
    for (i, block) in data.chunks(512).enumerate() {
        assert_eq!(
            sim.read_block(C, 1, lba + i as u64),
            block,
            "media block {i}"
        );
    }
    p.dma_free(src_parent);
    p.dma_free(dst_parent);
}

#[test]
fn bring_up_parses_the_identify_data_the_device_wrote() {
    let (sim, driver, id) = machine(spec(), ControllerConfig::default());
    let c = sim.counters();
    assert!(c.dma_flushes > 0 && c.dma_invalidates > 0, "{c:?}");
    let mut driver = driver;
    let info = driver.controller(id).unwrap().info().cloned().unwrap();
    assert_eq!(info.serial.as_str(), "noncoherent");
    assert_eq!(driver.controller(id).unwrap().state(), State::Ready);
    finish(&sim, driver);
}

#[test]
fn blocking_reads_and_writes_carry_their_data_with_prp_lists_and_unaligned_buffers() {
    let (sim, mut driver, id) = machine(spec(), ControllerConfig::default());
    // One page, two pages, and PRP lists (more than 8 KiB), each page
    // aligned and not (a dword offset, a block offset).
    for (i, &len) in [512, 4096, 8192, 12 << 10, 64 << 10, 256 << 10]
        .iter()
        .enumerate()
    {
        for (j, &offset) in [0usize, 4, 512, 4092].iter().enumerate() {
            let lba = (i * 4 + j) as u64 * 1024;
            round_trip(&sim, &mut driver, id, lba, len, offset, (i * 4 + j) as u8);
        }
    }
    finish(&sim, driver);
}

#[test]
fn split_phase_reads_and_writes_carry_their_data() {
    let (sim, mut driver, id) = machine(spec(), ControllerConfig::default());
    let p = sim.platform();
    let len = 40 << 10; // a PRP list
    let blocks = (len / 512) as u32;
    // More commands than the ring holds at once, in batches: the ring wraps.
    for round in 0..4u64 {
        let c = driver.controller(id).unwrap();
        for i in 0..16u64 {
            let lba = (round * 16 + i) * blocks as u64;
            let op = IoOp::Write {
                nsid: 1,
                lba,
                blocks,
            };
            let buf = filled(&p, len, (round * 16 + i) as u8);
            let _ = c.submit(QueueId::FIRST, op, Some(buf), i).unwrap();
        }
        for d in collect(&mut driver, id, 0, 16) {
            assert_eq!(d.result, Ok(()));
            p.dma_free(d.buffer.unwrap());
        }
        let c = driver.controller(id).unwrap();
        for i in 0..16u64 {
            let lba = (round * 16 + i) * blocks as u64;
            let op = IoOp::Read {
                nsid: 1,
                lba,
                blocks,
            };
            let mut buf = zeroed(&p, len);
            buf.as_mut_slice().fill(0xEE);
            let _ = c.submit(QueueId::FIRST, op, Some(buf), i).unwrap();
        }
        for d in collect(&mut driver, id, 0, 16) {
            assert_eq!(d.result, Ok(()));
            let buf = d.buffer.unwrap();
            assert_eq!(
                buf.as_slice(),
                &pattern(len, (round * 16 + d.tag) as u8)[..]
            );
            p.dma_free(buf);
        }
    }
    // A Dataset Management range lives in PRP list storage too.
    let c = driver.controller(id).unwrap();
    c.deallocate(1, 0, 8).unwrap();
    assert!(sim.read_block(C, 1, 0).iter().all(|&b| b == 0));
    finish(&sim, driver);
}

#[test]
fn shadow_doorbells_work_without_coherent_dma() {
    let config = ControllerConfig::default()
        .shadow_doorbells(true)
        .queue_depth(8);
    let (sim, mut driver, id) = machine(spec().shadow_doorbells(true), config);
    assert!(sim.shadow_doorbells_active(C));
    // Many more commands than the 8-entry rings: both wrap many times, and
    // each tail and head reaches the device through the shadow page.
    for i in 0..40u64 {
        round_trip(&sim, &mut driver, id, i * 8, 4096, 0, i as u8);
    }
    let p = sim.platform();
    for round in 0..5u64 {
        let c = driver.controller(id).unwrap();
        for i in 0..7u64 {
            let op = IoOp::Read {
                nsid: 1,
                lba: (round * 7 + i) % 40 * 8,
                blocks: 8,
            };
            let _ = c
                .submit(QueueId::FIRST, op, Some(zeroed(&p, 4096)), round * 7 + i)
                .unwrap();
        }
        for d in collect(&mut driver, id, 0, 7) {
            let buf = d.buffer.unwrap();
            assert_eq!(buf.as_slice(), &pattern(4096, (d.tag % 40) as u8)[..]);
            p.dma_free(buf);
        }
    }
    finish(&sim, driver);
}

#[test]
fn admin_commands_exchange_their_data() {
    let (sim, mut driver, id) = machine(spec(), ControllerConfig::default());
    let p = sim.platform();
    // A log page through the scratch page, after an event.
    ticks(&sim, &mut driver, 3);
    sim.set_critical_warning(C, 0x04);
    ticks(&sim, &mut driver, 5);
    let c = driver.controller(id).unwrap();
    let log = c.smart_log().unwrap();
    assert_eq!(log.critical_warning.bits(), 0x04);
    assert_eq!(log.temperature_celsius(), 50);
    // Features: a value the device keeps.
    c.set_temperature_threshold(Threshold::Over, 350).unwrap();
    assert_eq!(c.temperature_threshold(Threshold::Over).unwrap(), 350);
    // A passthrough Identify into the caller's buffer.
    let mut buf = zeroed(&p, 4096);
    buf.as_mut_slice().fill(0xEE);
    let mut sqe = SubmissionEntry::new(admin::IDENTIFY);
    sqe.cdw10 = 1;
    c.admin_passthrough(sqe, Some(&mut buf)).unwrap();
    assert_eq!(buf.as_slice(), &sim.identify_controller(C)[..]);
    p.dma_free(buf);
    finish(&sim, driver);
}

#[test]
fn a_reset_brings_the_controller_back_and_it_serves_again() {
    let (sim, mut driver, id) = machine(spec(), ControllerConfig::default());
    round_trip(&sim, &mut driver, id, 0, 8192, 0, 1);
    sim.set_cfs(C);
    let mut back = false;
    for _ in 0..500 {
        ticks(&sim, &mut driver, 1);
        let c = driver.controller(id).unwrap();
        if c.reset_count() > 0 && c.state() == State::Ready {
            back = true;
            break;
        }
    }
    assert!(back, "not back after the reset: {:?}", sim.protocol_log());
    round_trip(&sim, &mut driver, id, 64, 12 << 10, 4, 2);
    finish(&sim, driver);
}

#[test]
fn a_surprise_removal_fails_what_was_outstanding_and_returns_all_memory() {
    let (sim, mut driver, id) = machine(spec(), ControllerConfig::default());
    round_trip(&sim, &mut driver, id, 0, 4096, 0, 3);
    let p = sim.platform();
    sim.hold(C, Hold::Io);
    let c = driver.controller(id).unwrap();
    for i in 0..3u64 {
        let op = IoOp::Read {
            nsid: 1,
            lba: i * 8,
            blocks: 8,
        };
        let _ = c
            .submit(QueueId::FIRST, op, Some(zeroed(&p, 4096)), i)
            .unwrap();
    }
    c.ring_doorbells();
    sim.surprise_remove(C);
    let events = ticks(&sim, &mut driver, 10);
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::Removed {
                failed_commands: 3,
                ..
            }
        )),
        "{events:?}"
    );
    for d in collect(&mut driver, id, 0, 3) {
        assert_eq!(d.result, Err(Error::DeviceRemoved));
        p.dma_free(d.buffer.unwrap());
    }
    let c = sim.counters();
    assert_eq!(c.protocol_errors, 0, "{:?}", sim.protocol_log());
    assert_eq!(c.wild_dma, 0);
    assert_eq!(c.dma_regions, 0, "memory outstanding");
}
