//! Every I/O command through the public API, blocking and split-phase, with
//! the data checked both through the driver and in the simulated media.

mod common;

use bare_nvme::nvme::command::{nvm, sc, sct};
use bare_nvme::{ControllerConfig, Error, IoOp, Platform, QueueId};
use bare_nvme_sim::CtrlId;
use common::*;

const NS: u32 = 1;

#[test]
fn views_read_and_write_part_of_a_buffer_and_nothing_else() {
    let (sim, mut driver, id) = single(spec(64, 512), ControllerConfig::default());
    let p = sim.platform();
    let data = filled(&p, 4096, 7);
    let mut back = zeroed(&p, 4096);
    let c = driver.controller(id).unwrap();
    c.write(NS, 3, data.view(1024..2048).unwrap()).unwrap();
    assert_eq!(
        sim.read_block(CtrlId(0), NS, 3),
        data.as_slice()[1024..1536]
    );
    c.read(NS, 3, back.view_mut(512..1536).unwrap()).unwrap();
    let b = back.as_slice();
    assert_eq!(b[512..1536], data.as_slice()[1024..2048]);
    assert!(
        b[..512].iter().chain(&b[1536..]).all(|&x| x == 0),
        "outside the view"
    );
    let (start, end) = (10, 5);
    assert!(data.view(4000..4097).is_none(), "past the end");
    assert!(data.view(start..end).is_none(), "reversed");
    assert_eq!(back.view_mut(4096..4096).map(|v| v.len()), Some(0));
    p.dma_free(data);
    p.dma_free(back);
}

#[test]
fn blocking_write_then_read_returns_the_data_and_stores_it_at_the_lba() {
    let (sim, mut driver, id) = single(spec(4096, 512), ControllerConfig::default());
    let p = sim.platform();
    let data = filled(&p, 8192, 1);
    let mut back = zeroed(&p, 8192);
    let c = driver.controller(id).unwrap();
    c.write(NS, 10, &data).unwrap();
    c.read(NS, 10, &mut back).unwrap();
    assert_eq!(back.as_slice(), data.as_slice());
    for i in 0..16 {
        assert_eq!(
            sim.read_block(CtrlId(0), NS, 10 + i),
            data.as_slice()[i as usize * 512..(i as usize + 1) * 512],
            "block {i} on the media"
        );
    }
    assert_eq!(sim.read_block(CtrlId(0), NS, 9), vec![0; 512]);
    assert_eq!(sim.read_block(CtrlId(0), NS, 26), vec![0; 512]);
    p.dma_free(data);
    p.dma_free(back);
    finish(&sim, driver);
}

#[test]
fn blocking_read_returns_what_the_media_holds() {
    let (sim, mut driver, id) = single(spec(1024, 4096), ControllerConfig::default());
    let block = pattern(4096, 9);
    sim.write_block(CtrlId(0), NS, 700, &block);
    let p = sim.platform();
    let mut back = zeroed(&p, 4096);
    driver
        .controller(id)
        .unwrap()
        .read(NS, 700, &mut back)
        .unwrap();
    assert_eq!(back.as_slice(), &block[..]);
    p.dma_free(back);
    finish(&sim, driver);
}

#[test]
fn flush_makes_cached_writes_durable() {
    let (sim, mut driver, id) = single(spec(4096, 512), ControllerConfig::default());
    let p = sim.platform();
    let data = filled(&p, 4096, 2);
    let c = driver.controller(id).unwrap();
    c.write(NS, 0, &data).unwrap();
    assert_eq!(
        sim.dirty_blocks(CtrlId(0), NS),
        8,
        "write sits in the cache"
    );
    c.flush(NS).unwrap();
    assert_eq!(sim.dirty_blocks(CtrlId(0), NS), 0);
    assert_eq!(sim.counters().io(nvm::FLUSH), 1);
    sim.power_loss();
    assert_eq!(
        sim.read_block(CtrlId(0), NS, 3),
        data.as_slice()[1536..2048]
    );
    p.dma_free(data);
    // The controller lost power: the driver must notice, not detach it.
    drop(driver);
    assert_clean(&sim);
    assert_eq!(sim.counters().dma_regions, 0);
}

#[test]
fn write_zeroes_clears_exactly_the_range() {
    let (sim, mut driver, id) = single(spec(4096, 512), ControllerConfig::default());
    let p = sim.platform();
    let data = filled(&p, 16 * 512, 3);
    let mut back = zeroed(&p, 16 * 512);
    let c = driver.controller(id).unwrap();
    c.write(NS, 100, &data).unwrap();
    c.write_zeroes(NS, 104, 8).unwrap();
    c.read(NS, 100, &mut back).unwrap();
    let mut expected = data.as_slice().to_vec();
    expected[4 * 512..12 * 512].fill(0);
    assert_eq!(back.as_slice(), &expected[..]);
    assert_eq!(sim.counters().io(nvm::WRITE_ZEROES), 1);
    p.dma_free(data);
    p.dma_free(back);
    finish(&sim, driver);
}

#[test]
fn deallocate_trims_exactly_the_range() {
    let (sim, mut driver, id) = single(spec(1024, 4096), ControllerConfig::default());
    let p = sim.platform();
    let data = filled(&p, 8 * 4096, 4);
    let mut back = zeroed(&p, 8 * 4096);
    let c = driver.controller(id).unwrap();
    c.write(NS, 1000, &data).unwrap();
    c.deallocate(NS, 1002, 3).unwrap();
    c.read(NS, 1000, &mut back).unwrap();
    // The simulated device reads deallocated blocks as zeroes.
    let mut expected = data.as_slice().to_vec();
    expected[2 * 4096..5 * 4096].fill(0);
    assert_eq!(back.as_slice(), &expected[..]);
    assert_eq!(sim.counters().io(nvm::DATASET_MANAGEMENT), 1);
    p.dma_free(data);
    p.dma_free(back);
    finish(&sim, driver);
}

#[test]
fn split_phase_completions_carry_their_tags_and_hand_buffers_back() {
    let (sim, mut driver, id) = single(spec(4096, 512), ControllerConfig::default());
    let p = sim.platform();
    let c = driver.controller(id).unwrap();
    let mut submitted = Vec::new();
    for i in 0..16u64 {
        let buf = filled(&p, 1024, i as u8);
        let phys = buf.phys();
        let op = IoOp::Write {
            nsid: NS,
            lba: i * 2,
            blocks: 2,
        };
        let token = c.submit(QueueId::FIRST, op, Some(buf), 1000 + i).unwrap();
        submitted.push((token, phys));
    }
    let done = collect(&mut driver, id, 0, 16);
    for d in &done {
        let i = (d.tag - 1000) as usize;
        assert!(d.result.is_ok(), "{:?}", d.result);
        assert_eq!(d.token, submitted[i].0);
        let buf = d.buffer.as_ref().expect("buffer handed back");
        assert_eq!(buf.phys(), submitted[i].1, "its own buffer");
        assert_eq!(buf.as_slice(), &pattern(1024, i as u8)[..]);
    }
    for d in done {
        p.dma_free(d.buffer.unwrap());
    }
    // Read them back split-phase, into fresh buffers.
    let c = driver.controller(id).unwrap();
    for i in 0..16u64 {
        let op = IoOp::Read {
            nsid: NS,
            lba: i * 2,
            blocks: 2,
        };
        let _ = c
            .submit(QueueId::FIRST, op, Some(zeroed(&p, 1024)), i)
            .unwrap();
    }
    for d in collect(&mut driver, id, 0, 16) {
        assert_eq!(d.result, Ok(()));
        let buf = d.buffer.unwrap();
        assert_eq!(buf.as_slice(), &pattern(1024, d.tag as u8)[..]);
        p.dma_free(buf);
    }
    finish(&sim, driver);
}

#[test]
fn split_phase_commands_without_data_complete_without_a_buffer() {
    let (sim, mut driver, id) = single(spec(4096, 512), ControllerConfig::default());
    let p = sim.platform();
    let data = filled(&p, 8 * 512, 5);
    let c = driver.controller(id).unwrap();
    c.write(NS, 0, &data).unwrap();
    let ops = [
        IoOp::WriteZeroes {
            nsid: NS,
            lba: 1,
            blocks: 2,
        },
        IoOp::Deallocate {
            nsid: NS,
            lba: 5,
            blocks: 1,
        },
        IoOp::Flush { nsid: NS },
    ];
    for (tag, op) in ops.into_iter().enumerate() {
        let _ = c.submit(QueueId::FIRST, op, None, tag as u64).unwrap();
    }
    let mut done = collect(&mut driver, id, 0, 3);
    done.sort_by_key(|d| d.tag);
    for (tag, d) in done.iter().enumerate() {
        assert_eq!(d.tag, tag as u64);
        assert_eq!(d.result, Ok(()));
        assert!(d.buffer.is_none());
    }
    let counters = sim.counters();
    assert_eq!(counters.io(nvm::WRITE_ZEROES), 1);
    assert_eq!(counters.io(nvm::DATASET_MANAGEMENT), 1);
    assert_eq!(counters.io(nvm::FLUSH), 1);
    assert_eq!(sim.dirty_blocks(CtrlId(0), NS), 0, "flushed");
    for lba in 0..8u64 {
        let zero = matches!(lba, 1 | 2 | 5);
        let expected = if zero {
            vec![0; 512]
        } else {
            data.as_slice()[lba as usize * 512..(lba as usize + 1) * 512].to_vec()
        };
        assert_eq!(sim.read_block(CtrlId(0), NS, lba), expected, "lba {lba}");
    }
    p.dma_free(data);
    finish(&sim, driver);
}

#[test]
fn each_io_queue_delivers_only_its_own_completions() {
    let config = ControllerConfig::default().io_queues(4);
    let (sim, mut driver, id) = single(spec(4096, 512), config);
    assert_eq!(driver.controller(id).unwrap().io_queue_count(), 4);
    assert_eq!(sim.io_queues(CtrlId(0)), 4);
    let p = sim.platform();
    let c = driver.controller(id).unwrap();
    for q in 0..4u16 {
        for k in 0..3u64 {
            let lba = q as u64 * 8 + k;
            let op = IoOp::Write {
                nsid: NS,
                lba,
                blocks: 1,
            };
            let _ = c
                .submit(QueueId::new(q), op, Some(filled(&p, 512, lba as u8)), lba)
                .unwrap();
        }
    }
    for q in 0..4u16 {
        for d in collect(&mut driver, id, q, 3) {
            assert_eq!(d.token.queue, QueueId::new(q));
            assert_eq!(d.tag / 8, q as u64, "tag {} on queue {q}", d.tag);
            assert_eq!(d.result, Ok(()));
            p.dma_free(d.buffer.unwrap());
        }
        let mut extra = 0;
        driver
            .controller(id)
            .unwrap()
            .poll(QueueId::new(q), |_| extra += 1);
        assert_eq!(extra, 0, "a completion was delivered twice");
    }
    for lba in [0u64, 9, 18, 26] {
        assert_eq!(sim.read_block(CtrlId(0), NS, lba), pattern(512, lba as u8));
    }
    finish(&sim, driver);
}

#[test]
fn a_blocking_call_leaves_pending_split_phase_completions_for_poll() {
    let (sim, mut driver, id) = single(spec(4096, 512), ControllerConfig::default());
    let p = sim.platform();
    let c = driver.controller(id).unwrap();
    let op = IoOp::Write {
        nsid: NS,
        lba: 40,
        blocks: 1,
    };
    let _ = c
        .submit(QueueId::FIRST, op, Some(filled(&p, 512, 6)), 77)
        .unwrap();
    let mut back = zeroed(&p, 512);
    // The blocking read rings the doorbell for both and reaps both.
    c.read(NS, 40, &mut back).unwrap();
    assert_eq!(back.as_slice(), &pattern(512, 6)[..]);
    let done = collect(&mut driver, id, 0, 1);
    assert_eq!(done[0].tag, 77);
    assert_eq!(done[0].result, Ok(()));
    let mut more = 0;
    driver
        .controller(id)
        .unwrap()
        .poll(QueueId::FIRST, |_| more += 1);
    assert_eq!(more, 0, "the blocking read's completion leaked into poll");
    p.dma_free(done.into_iter().next().unwrap().buffer.unwrap());
    p.dma_free(back);
    finish(&sim, driver);
}

#[test]
fn a_media_error_completes_with_its_decoded_status_and_the_buffer() {
    let (sim, mut driver, id) = single(spec(4096, 512), ControllerConfig::default());
    sim.fail_reads(CtrlId(0), NS, 50..60);
    let p = sim.platform();
    let c = driver.controller(id).unwrap();
    let mut buf = zeroed(&p, 512);
    match c.read(NS, 55, &mut buf) {
        Err(Error::CommandFailed { status, opcode }) => {
            assert_eq!(
                (status.sct, status.sc),
                (sct::MEDIA, sc::media::UNRECOVERED_READ_ERROR)
            );
            assert_eq!(opcode, nvm::READ);
        }
        other => panic!("expected a media error, got {other:?}"),
    }
    let op = IoOp::Read {
        nsid: NS,
        lba: 59,
        blocks: 1,
    };
    let _ = c.submit(QueueId::FIRST, op, Some(buf), 5).unwrap();
    let d = collect(&mut driver, id, 0, 1).pop().unwrap();
    assert!(matches!(d.result, Err(Error::CommandFailed { .. })));
    let buf = d.buffer.expect("buffer handed back on failure too");
    // Reads outside the bad range still work on the same queue.
    let mut ok = zeroed(&p, 512);
    driver
        .controller(id)
        .unwrap()
        .read(NS, 60, &mut ok)
        .unwrap();
    p.dma_free(buf);
    p.dma_free(ok);
    finish(&sim, driver);
}

#[test]
fn write_zeroes_and_deallocate_longer_than_one_command_are_split() {
    const START: u64 = 10;
    let (sim, mut driver, id) = single(spec(200_000, 512), ControllerConfig::default());
    let p = sim.platform();
    let marks = [0u64, 65_535, 65_536, 65_537, 139_999, 140_000];
    for &at in &marks {
        let data = filled(&p, 512, at as u8);
        let c = driver.controller(id).unwrap();
        c.write(NS, START + at, &data).unwrap();
        p.dma_free(data);
    }
    // Which marks hold data (true) or zeroes (false) after each step.
    let check = |expected: [bool; 6]| {
        for (&at, &data) in marks.iter().zip(&expected) {
            let want = if data {
                pattern(512, at as u8)
            } else {
                vec![0; 512]
            };
            assert_eq!(
                sim.read_block(CtrlId(0), NS, START + at),
                want,
                "block {at}"
            );
        }
    };
    sim.reset_counters();
    let c = driver.controller(id).unwrap();
    // Exactly the most one command may carry.
    c.write_zeroes(NS, START, 65_536).unwrap();
    assert_eq!(sim.counters().io(nvm::WRITE_ZEROES), 1);
    check([false, false, true, true, true, true]);
    // One block more takes a second command.
    c.write_zeroes(NS, START, 65_537).unwrap();
    assert_eq!(sim.counters().io(nvm::WRITE_ZEROES), 3);
    check([false, false, false, true, true, true]);
    c.deallocate(NS, START, 140_000).unwrap();
    assert_eq!(sim.counters().io(nvm::DATASET_MANAGEMENT), 3);
    check([false, false, false, false, false, true]);
    finish(&sim, driver);
}
