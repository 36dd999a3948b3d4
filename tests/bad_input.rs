//! Caller mistakes in buffers and ranges: each gets its own error, hands the
//! buffer back, sends nothing to the device, and leaves the queue usable.

mod common;

use bare_nvme::QueueId;
use bare_nvme::{ControllerConfig, ControllerId, DmaRegion, Error, IoOp, Platform, Rejected};
use bare_nvme_sim::Sim;
use common::*;

const NS: u32 = 1;
/// Blocks of the 512-byte namespace every test here uses.
const CAPACITY: u64 = 4096;

fn rig() -> (Sim, BoxedDrv, ControllerId) {
    let (sim, driver, id) = single(spec(CAPACITY, 512), ControllerConfig::default());
    sim.reset_counters();
    (sim, driver, id)
}

/// Nothing the test did since the last counter reset reached the device, even
/// after polling every queue (which would ring a doorbell for anything
/// queued); then a real command still round-trips.
fn nothing_reached_the_device(sim: &Sim, driver: &mut BoxedDrv, id: ControllerId) {
    let c = driver.controller(id).unwrap();
    for q in 0..c.io_queue_count() {
        assert_eq!(
            c.poll(QueueId::new(q), |_| ()),
            0,
            "a completion on queue {q}"
        );
    }
    let counters = sim.counters();
    assert_eq!(io_total(&counters), 0, "{counters:?}");
    assert_eq!(counters.mmio_writes, 0, "{counters:?}");
    assert_eq!(counters.mmio_reads, 0, "{counters:?}");
    let p = sim.platform();
    let data = filled(&p, 1024, 99);
    let mut back = zeroed(&p, 1024);
    c.write(NS, 0, &data).unwrap();
    c.read(NS, 0, &mut back).unwrap();
    assert_eq!(back.as_slice(), data.as_slice());
    p.dma_free(data);
    p.dma_free(back);
    sim.reset_counters();
}

/// Submits `op` expecting a refusal with `error` and `buffer` handed back.
fn refuse(
    driver: &mut BoxedDrv,
    id: ControllerId,
    op: IoOp,
    buffer: Option<DmaRegion>,
    error: Error,
) -> Option<DmaRegion> {
    let phys = buffer.as_ref().map(|b| b.phys());
    let c = driver.controller(id).unwrap();
    match c.submit(QueueId::FIRST, op, buffer, 7) {
        Err(Rejected { error: e, buffer }) => {
            assert_eq!(e, error, "{op:?}");
            assert_eq!(buffer.as_ref().map(|b| b.phys()), phys, "buffer back");
            buffer
        }
        Ok(t) => panic!("{op:?} was accepted as {t:?}"),
    }
}

fn read(lba: u64, blocks: u32) -> IoOp {
    IoOp::Read {
        nsid: NS,
        lba,
        blocks,
    }
}

fn write(lba: u64, blocks: u32) -> IoOp {
    IoOp::Write {
        nsid: NS,
        lba,
        blocks,
    }
}

#[test]
fn a_buffer_not_dword_aligned_is_refused() {
    let (sim, mut driver, id) = rig();
    let p = sim.platform();
    let parent = zeroed(&p, 2 * 4096);
    for offset in [1, 2, 3, 510] {
        let addr = parent.phys().as_u64() + offset as u64;
        let expected = Error::BufferMisaligned { addr, required: 4 };
        let mut buf = view(&parent, offset, 1024);
        let c = driver.controller(id).unwrap();
        assert_eq!(c.write(NS, 8, &buf), Err(expected));
        assert_eq!(c.read(NS, 8, &mut buf), Err(expected));
        refuse(&mut driver, id, read(8, 2), Some(buf), expected);
        nothing_reached_the_device(&sim, &mut driver, id);
    }
    p.dma_free(parent);
    finish(&sim, driver);
}

#[test]
fn a_buffer_shorter_than_the_transfer_is_refused() {
    let (sim, mut driver, id) = rig();
    let p = sim.platform();
    let small = refuse(
        &mut driver,
        id,
        write(0, 4),
        Some(zeroed(&p, 1024)),
        Error::BufferTooSmall {
            needed: 2048,
            got: 1024,
        },
    );
    let missing = Error::BufferTooSmall {
        needed: 512,
        got: 0,
    };
    refuse(&mut driver, id, read(0, 1), None, missing);
    refuse(&mut driver, id, write(0, 1), None, missing);
    nothing_reached_the_device(&sim, &mut driver, id);
    p.dma_free(small.unwrap());
    finish(&sim, driver);
}

#[test]
fn a_length_not_a_multiple_of_the_block_size_is_refused() {
    let (sim, mut driver, id) = rig();
    let p = sim.platform();
    let parent = zeroed(&p, 8192);
    for len in [1, 511, 513, 1000, 4095] {
        let mut buf = view(&parent, 0, len);
        let c = driver.controller(id).unwrap();
        assert!(matches!(
            c.write(NS, 0, &buf),
            Err(Error::InvalidArgument { .. })
        ));
        assert!(matches!(
            c.read(NS, 0, &mut buf),
            Err(Error::InvalidArgument { .. })
        ));
    }
    nothing_reached_the_device(&sim, &mut driver, id);
    p.dma_free(parent);
    finish(&sim, driver);
}

#[test]
fn a_4096_byte_namespace_refuses_a_512_byte_buffer() {
    let (sim, mut driver, id) = single(spec(256, 4096), ControllerConfig::default());
    sim.reset_counters();
    let p = sim.platform();
    let mut buf = zeroed(&p, 512);
    let c = driver.controller(id).unwrap();
    assert!(matches!(
        c.read(NS, 0, &mut buf),
        Err(Error::InvalidArgument { .. })
    ));
    let buf = refuse(
        &mut driver,
        id,
        read(0, 1),
        Some(buf),
        Error::BufferTooSmall {
            needed: 4096,
            got: 512,
        },
    );
    let counters = sim.counters();
    assert_eq!((io_total(&counters), counters.mmio_writes), (0, 0));
    p.dma_free(buf.unwrap());
    finish(&sim, driver);
}

#[test]
fn an_lba_range_past_the_namespace_end_is_refused() {
    let (sim, mut driver, id) = rig();
    let p = sim.platform();
    let mut buf = zeroed(&p, 1024);
    let out = |lba, blocks| Error::LbaOutOfRange {
        lba,
        blocks,
        capacity: CAPACITY,
    };
    let c = driver.controller(id).unwrap();
    assert_eq!(
        c.read(NS, CAPACITY - 1, &mut buf),
        Err(out(CAPACITY - 1, 2))
    );
    assert_eq!(c.write(NS, CAPACITY, &buf), Err(out(CAPACITY, 2)));
    // lba + blocks overflows u64: refused, not wrapped around to block 0.
    assert_eq!(
        c.read(NS, u64::MAX - 1, &mut buf),
        Err(out(u64::MAX - 1, 2))
    );
    assert_eq!(c.write_zeroes(NS, u64::MAX, 2), Err(out(u64::MAX, 2)));
    assert_eq!(c.deallocate(NS, CAPACITY - 3, 4), Err(out(CAPACITY - 3, 4)));
    assert_eq!(c.write_zeroes(NS, 1, u64::MAX), Err(out(1, u64::MAX)));
    let buf = refuse(
        &mut driver,
        id,
        read(u64::MAX, 1),
        Some(buf),
        out(u64::MAX, 1),
    );
    let wz = IoOp::WriteZeroes {
        nsid: NS,
        lba: CAPACITY,
        blocks: 1,
    };
    refuse(&mut driver, id, wz, None, out(CAPACITY, 1));
    let dsm = IoOp::Deallocate {
        nsid: NS,
        lba: u64::MAX,
        blocks: u32::MAX,
    };
    refuse(&mut driver, id, dsm, None, out(u64::MAX, u32::MAX as u64));
    nothing_reached_the_device(&sim, &mut driver, id);
    // The last block itself is in range.
    let mut last = zeroed(&p, 512);
    driver
        .controller(id)
        .unwrap()
        .read(NS, CAPACITY - 1, &mut last)
        .unwrap();
    p.dma_free(buf.unwrap());
    p.dma_free(last);
    finish(&sim, driver);
}

#[test]
fn an_unknown_namespace_is_refused() {
    let (sim, mut driver, id) = rig();
    let p = sim.platform();
    let mut buf = zeroed(&p, 512);
    for nsid in [0, 2, 17, u32::MAX] {
        let unknown = Error::UnknownNamespace { nsid };
        let c = driver.controller(id).unwrap();
        assert!(c.namespace(nsid).is_err());
        assert_eq!(c.read(nsid, 0, &mut buf), Err(unknown));
        assert_eq!(c.write(nsid, 0, &buf), Err(unknown));
        assert_eq!(c.flush(nsid), Err(unknown));
        assert_eq!(c.write_zeroes(nsid, 0, 1), Err(unknown));
        assert_eq!(c.deallocate(nsid, 0, 1), Err(unknown));
        let op = IoOp::Read {
            nsid,
            lba: 0,
            blocks: 1,
        };
        buf = refuse(&mut driver, id, op, Some(buf), unknown).unwrap();
        refuse(&mut driver, id, IoOp::Flush { nsid }, None, unknown);
    }
    nothing_reached_the_device(&sim, &mut driver, id);
    p.dma_free(buf);
    finish(&sim, driver);
}

#[test]
fn an_empty_transfer_is_refused() {
    let (sim, mut driver, id) = rig();
    let p = sim.platform();
    let parent = zeroed(&p, 512);
    let c = driver.controller(id).unwrap();
    assert_eq!(c.write_zeroes(NS, 0, 0), Err(Error::EmptyTransfer));
    assert_eq!(c.deallocate(NS, 0, 0), Err(Error::EmptyTransfer));
    assert_eq!(
        c.read(NS, 0, &mut view(&parent, 0, 0)),
        Err(Error::EmptyTransfer)
    );
    assert_eq!(
        c.write(NS, 0, &view(&parent, 0, 0)),
        Err(Error::EmptyTransfer)
    );
    let buf = refuse(
        &mut driver,
        id,
        read(0, 0),
        Some(parent),
        Error::EmptyTransfer,
    );
    let parent = refuse(&mut driver, id, write(0, 0), buf, Error::EmptyTransfer);
    for op in [
        IoOp::WriteZeroes {
            nsid: NS,
            lba: 0,
            blocks: 0,
        },
        IoOp::Deallocate {
            nsid: NS,
            lba: 0,
            blocks: 0,
        },
    ] {
        refuse(&mut driver, id, op, None, Error::EmptyTransfer);
    }
    nothing_reached_the_device(&sim, &mut driver, id);
    p.dma_free(parent.unwrap());
    finish(&sim, driver);
}

#[test]
fn a_submission_larger_than_one_command_may_carry_is_refused() {
    let (sim, mut driver, id) = rig();
    let p = sim.platform();
    let c = driver.controller(id).unwrap();
    let max = c.namespace(NS).unwrap().max_blocks;
    assert_eq!(max as usize * 512, c.max_transfer() as usize);
    let buf = zeroed(&p, (max as usize + 1) * 512);
    let too_large = Error::TransferTooLarge {
        blocks: max as u64 + 1,
        max,
    };
    let buf = refuse(&mut driver, id, write(0, max + 1), Some(buf), too_large);
    nothing_reached_the_device(&sim, &mut driver, id);
    // The blocking wrapper splits the same request instead.
    let c = driver.controller(id).unwrap();
    let buf = buf.unwrap();
    c.write(NS, 0, &buf).unwrap();
    assert_eq!(sim.counters().io(bare_nvme::nvme::command::nvm::WRITE), 2);
    p.dma_free(buf);
    finish(&sim, driver);
}
