//! What the I/O path costs in device accesses, measured by the simulated
//! device: no register read at all, one submission doorbell per batch, one
//! completion doorbell per poll that consumed completions; and every DMA
//! region back with the platform after detach, even with I/O in flight.

mod common;

use std::time::Duration;

use bare_nvme::nvme::command::nvm;
use bare_nvme::QueueId;
use bare_nvme::{ControllerConfig, ControllerId, Error, IoOp, Platform};
use bare_nvme_sim::{Hold, Sim};
use common::*;

const NS: u32 = 1;
const BATCH: usize = 32;

fn op(write: bool, lba: u64) -> IoOp {
    let (nsid, blocks) = (NS, 8);
    if write {
        IoOp::Write { nsid, lba, blocks }
    } else {
        IoOp::Read { nsid, lba, blocks }
    }
}

/// Submits a batch of 4 KiB commands on `queue` without polling.
fn submit_batch(sim: &Sim, driver: &mut BoxedDrv, id: ControllerId, queue: u16, write: bool) {
    let p = sim.platform();
    let c = driver.controller(id).unwrap();
    for i in 0..BATCH as u64 {
        let buf = filled(&p, 4096, i as u8);
        let _ = c
            .submit(QueueId::new(queue), op(write, i * 8), Some(buf), i)
            .unwrap();
    }
}

/// Polls until the batch completed, checks it and frees its buffers.
fn reap_batch(sim: &Sim, driver: &mut BoxedDrv, id: ControllerId, queue: u16, write: bool) {
    let p = sim.platform();
    for d in collect(driver, id, queue, BATCH) {
        assert_eq!(d.result, Ok(()));
        let buf = d.buffer.unwrap();
        if !write {
            assert_eq!(buf.as_slice(), &pattern(4096, d.tag as u8)[..]);
        }
        p.dma_free(buf);
    }
}

#[test]
fn the_io_path_reads_no_device_register() {
    let config = ControllerConfig::default().io_queues(2);
    let (sim, mut driver, id) = single(spec(8192, 512), config);
    sim.reset_counters();
    let mut ios = 0;
    for round in 0..4 {
        let queue = round % 2;
        submit_batch(&sim, &mut driver, id, queue, true);
        reap_batch(&sim, &mut driver, id, queue, true);
        submit_batch(&sim, &mut driver, id, queue, false);
        reap_batch(&sim, &mut driver, id, queue, false);
        ios += 2 * BATCH;
    }
    // The blocking wrappers take the same path.
    let p = sim.platform();
    let data = filled(&p, 64 << 10, 1);
    let mut back = zeroed(&p, 64 << 10);
    let c = driver.controller(id).unwrap();
    c.write(NS, 1000, &data).unwrap();
    c.read(NS, 1000, &mut back).unwrap();
    c.flush(NS).unwrap();
    c.write_zeroes(NS, 1000, 8).unwrap();
    c.deallocate(NS, 1008, 8).unwrap();
    ios += 5;
    let counters = sim.counters();
    assert_eq!(io_total(&counters), ios as u64);
    println!(
        "MMIO reads per I/O: {} ({} reads over {ios} I/Os)",
        counters.mmio_reads as f64 / ios as f64,
        counters.mmio_reads
    );
    assert_eq!(counters.mmio_reads, 0, "{counters:?}");
    assert_eq!(back.as_slice(), data.as_slice());
    p.dma_free(data);
    p.dma_free(back);
    finish(&sim, driver);
}

#[test]
fn a_batch_of_32_rings_the_submission_doorbell_once() {
    let (sim, mut driver, id) = single(spec(8192, 512), ControllerConfig::default());
    let batches = 8;
    sim.reset_counters();
    for b in 0..batches {
        let write = b % 2 == 0;
        submit_batch(&sim, &mut driver, id, 0, write);
        let queued = sim.counters();
        assert_eq!(queued.sq_doorbell_writes, b, "submit itself rang");
        assert_eq!(io_total(&queued), b * BATCH as u64);
        reap_batch(&sim, &mut driver, id, 0, write);
    }
    let c = sim.counters();
    let ios = batches * BATCH as u64;
    assert_eq!(io_total(&c), ios);
    let per_io = (c.sq_doorbell_writes + c.cq_doorbell_writes) as f64 / ios as f64;
    println!(
        "doorbell writes per I/O at batch {BATCH}: {per_io:.4} \
         ({} SQ + {} CQ over {batches} batches; {} MMIO writes, {} reads)",
        c.sq_doorbell_writes, c.cq_doorbell_writes, c.mmio_writes, c.mmio_reads
    );
    assert_eq!(c.sq_doorbell_writes, batches, "one SQ doorbell per batch");
    assert!(
        c.cq_doorbell_writes >= batches && c.cq_doorbell_writes <= 2 * batches,
        "CQ doorbells: {}",
        c.cq_doorbell_writes
    );
    assert_eq!(c.mmio_writes, c.sq_doorbell_writes + c.cq_doorbell_writes);
    assert_eq!(c.mmio_reads, 0);
    finish(&sim, driver);
}

#[test]
fn completions_arriving_in_parts_acknowledge_the_cq_head_once_a_quarter_of_the_ring_is_used() {
    let (sim, mut driver, id) = single(spec(8192, 512).hold(Hold::Io), ControllerConfig::default());
    sim.reset_counters();
    submit_batch(&sim, &mut driver, id, 0, true);
    let mut got = Vec::new();
    let c = driver.controller(id).unwrap();
    assert_eq!(c.poll(QueueId::FIRST, |d| got.push(d)), 0);
    assert_eq!(sim.held_count(), BATCH, "all fetched by one doorbell");
    for _ in 0..4 {
        sim.complete_held(BATCH / 4);
        assert_eq!(c.poll(QueueId::FIRST, |d| got.push(d)), BATCH / 4);
        // Polling again with nothing new writes nothing.
        assert_eq!(c.poll(QueueId::FIRST, |d| got.push(d)), 0);
    }
    let counters = sim.counters();
    println!(
        "batch of {BATCH} completing in 4 parts: {} SQ + {} CQ doorbell writes",
        counters.sq_doorbell_writes, counters.cq_doorbell_writes
    );
    assert_eq!(counters.sq_doorbell_writes, 1);
    // The CQ holds every command that can be in flight, so the head doorbell
    // can wait until a quarter of the ring (32 of 128 entries) was consumed.
    assert_eq!(counters.cq_doorbell_writes, 1);
    assert_eq!(counters.mmio_reads, 0);
    let p = sim.platform();
    for d in got {
        assert_eq!(d.result, Ok(()));
        p.dma_free(d.buffer.unwrap());
    }
    finish(&sim, driver);
}

#[test]
fn ring_doorbells_sends_a_batch_without_consuming_completions() {
    let (sim, mut driver, id) = single(spec(8192, 512), ControllerConfig::default());
    sim.reset_counters();
    submit_batch(&sim, &mut driver, id, 0, true);
    driver.controller(id).unwrap().ring_doorbells();
    let rung = sim.counters();
    assert_eq!(rung.sq_doorbell_writes, 1);
    assert_eq!(rung.io(nvm::WRITE), BATCH as u64, "the device has them all");
    assert_eq!(rung.cq_doorbell_writes, 0);
    driver.controller(id).unwrap().ring_doorbells();
    assert_eq!(sim.counters().sq_doorbell_writes, 1, "nothing new to ring");
    reap_batch(&sim, &mut driver, id, 0, true);
    let done = sim.counters();
    assert_eq!((done.sq_doorbell_writes, done.cq_doorbell_writes), (1, 1));
    finish(&sim, driver);
}

#[test]
fn the_tick_reads_a_register_only_when_a_controller_completed_nothing() {
    let (sim, mut driver, id) = single(spec(8192, 512), ControllerConfig::default());
    let _ = driver.tick();
    submit_batch(&sim, &mut driver, id, 0, true);
    reap_batch(&sim, &mut driver, id, 0, true);
    sim.reset_counters();
    let _ = driver.tick();
    assert_eq!(sim.counters().mmio_reads, 0, "completions proved it alive");
    let _ = driver.tick();
    assert_eq!(sim.counters().mmio_reads, 1, "one CSTS read when idle");
    finish(&sim, driver);
}

#[test]
fn detach_with_commands_in_flight_hands_every_buffer_back_and_frees_all_memory() {
    let config = ControllerConfig::default().io_timeout(Duration::from_millis(50));
    let (sim, mut driver, id) = single(spec(8192, 512).hold(Hold::Io), config);
    submit_batch(&sim, &mut driver, id, 0, true);
    let c = driver.controller(id).unwrap();
    assert_eq!(
        c.poll(QueueId::FIRST, |_| panic!("nothing completes while held")),
        0
    );
    assert_eq!(c.in_flight(), BATCH);
    c.detach().unwrap();
    assert_eq!(c.failed_commands(), BATCH as u32);
    let p = sim.platform();
    let done = collect(&mut driver, id, 0, BATCH);
    for d in done {
        assert_eq!(d.result, Err(Error::Aborted), "tag {}", d.tag);
        p.dma_free(d.buffer.expect("buffer handed back"));
    }
    // Whatever the device still held can no longer reach that memory.
    assert_eq!(sim.held_count(), 0, "deleting the queue dropped them");
    sim.release_all();
    assert_clean(&sim);
    assert_eq!(sim.counters().dma_regions, 0);
}
