//! NVM I/O: data paths, PRP handling, limits, media errors, the write cache.

mod common;

use bare_nvme::nvme::command::{nvm, sc, sct, SubmissionEntry};
use bare_nvme::nvme::identify::csi;
use bare_nvme::{DmaRegion, Platform};
use bare_nvme_sim::{ControllerSpec, CtrlId, Metadata, NamespaceSpec, Sim};
use common::*;

fn setup(spec: ControllerSpec) -> (Sim, Mini) {
    let sim = Sim::single(spec);
    let mut m = Mini::bring_up(&sim).unwrap();
    m.create_io(8).unwrap();
    (sim, m)
}

fn ns512() -> ControllerSpec {
    ControllerSpec::default()
        .namespace(NamespaceSpec::new(4096, 512))
        .mdts(5)
}

fn status(c: bare_nvme::nvme::command::CompletionEntry) -> (u8, u8) {
    (c.status().sct, c.status().sc)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn finish(sim: &Sim, m: Mini) {
    m.shut_down().unwrap();
    let c = sim.counters();
    assert_eq!(c.protocol_errors, 0, "{:?}", sim.protocol_log());
    assert_eq!((c.dma_regions, c.wild_dma), (0, 0));
}

#[test]
fn write_then_read_back_two_pages_with_offset() {
    let (sim, mut m) = setup(ns512());
    let mut buf = m.p.dma_alloc(3 * 4096, 4096).unwrap();
    // 8 blocks starting 512 bytes into the first page: PRP1 with an offset,
    // PRP2 the second page.
    let data = pattern(4096, 7);
    buf.as_mut_slice()[512..512 + 4096].copy_from_slice(&data);
    let base = buf.phys().as_u64();
    ok(
        m.cmd(true, rw(nvm::WRITE, 1, 100, 8, base + 512, base + 4096))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(sim.read_block(CtrlId(0), 1, 101), data[512..1024]);
    buf.as_mut_slice().fill(0);
    ok(
        m.cmd(true, rw(nvm::READ, 1, 100, 8, base + 512, base + 4096))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(&buf.as_slice()[512..512 + 4096], &data[..]);
    assert_eq!(buf.as_slice()[..512], [0; 512]);
    assert_eq!(
        (sim.counters().io(nvm::READ), sim.counters().io(nvm::WRITE)),
        (1, 1)
    );
    m.p.dma_free(buf);
    finish(&sim, m);
}

/// A PRP list that starts two entries before the end of its page: one data
/// entry, then a chain pointer to the next list page.
#[test]
fn prp_list_with_chained_pages() {
    let (sim, mut m) = setup(ns512());
    let pages = 5usize;
    let mut data: DmaRegion = m.p.dma_alloc(pages * 4096, 4096).unwrap();
    let mut lists = m.p.dma_alloc(2 * 4096, 4096).unwrap();
    let expect = pattern(pages * 4096, 3);
    data.as_mut_slice().copy_from_slice(&expect);
    let d = data.phys().as_u64();
    let l = lists.phys().as_u64();
    {
        let s = lists.as_mut_slice();
        let put = |s: &mut [u8], at: usize, v: u64| s[at..at + 8].copy_from_slice(&v.to_le_bytes());
        put(s, 4096 - 16, d + 4096);
        put(s, 4096 - 8, l + 4096);
        for i in 0..3 {
            put(s, 4096 + i * 8, d + (2 + i as u64) * 4096);
        }
    }
    let blocks = (pages * 8) as u16;
    ok(m.cmd(true, rw(nvm::WRITE, 1, 0, blocks, d, l + 4096 - 16))
        .unwrap())
    .unwrap();
    for p in 0..pages {
        assert_eq!(
            sim.read_block(CtrlId(0), 1, p as u64 * 8),
            expect[p * 4096..p * 4096 + 512]
        );
    }
    data.as_mut_slice().fill(0);
    ok(m.cmd(true, rw(nvm::READ, 1, 0, blocks, d, l + 4096 - 16))
        .unwrap())
    .unwrap();
    assert_eq!(data.as_slice(), &expect[..]);
    m.p.dma_free(data);
    m.p.dma_free(lists);
    finish(&sim, m);
}

#[test]
fn misaligned_prp_entries_fail_and_are_protocol_errors() {
    let (sim, mut m) = setup(ns512());
    sim.expect_protocol_errors();
    let buf = m.p.dma_alloc(4 * 4096, 4096).unwrap();
    let b = buf.phys().as_u64();
    let c = m.cmd(true, rw(nvm::READ, 1, 0, 1, b + 2, 0)).unwrap();
    assert_eq!(status(c), (sct::GENERIC, 0x13));
    let c = m
        .cmd(true, rw(nvm::READ, 1, 0, 16, b, b + 4096 + 8))
        .unwrap();
    assert_eq!(status(c), (sct::GENERIC, 0x13));
    assert_eq!(sim.counters().protocol_errors, 2);
    m.p.dma_free(buf);
    m.release();
}

#[test]
fn limits_mdts_lba_range_namespace() {
    let (sim, mut m) = setup(ns512());
    let buf = m.p.dma_alloc(4096, 4096).unwrap();
    let b = buf.phys().as_u64();
    // MDTS 5: 128 KiB = 256 blocks; 257 exceeds it.
    let c = m.cmd(true, rw(nvm::READ, 1, 0, 257, b, 0)).unwrap();
    assert_eq!(status(c), (sct::GENERIC, sc::INVALID_FIELD));
    let c = m.cmd(true, rw(nvm::READ, 1, 4095, 2, b, b)).unwrap();
    assert_eq!(status(c), (sct::GENERIC, sc::LBA_OUT_OF_RANGE));
    let c = m.cmd(true, rw(nvm::READ, 2, 0, 1, b, 0)).unwrap();
    assert_eq!(status(c), (sct::GENERIC, sc::INVALID_NAMESPACE));
    m.p.dma_free(buf);
    finish(&sim, m);
}

#[test]
fn cpu_pointers_as_prps_are_wild_dma() {
    let (sim, mut m) = setup(ns512());
    // Wild DMA on purpose: the test asserts the counter itself.
    sim.unchecked();
    let buf = m.p.dma_alloc(4096, 4096).unwrap();
    let virt = buf.virt().as_ptr() as u64;
    let c = m.cmd(true, rw(nvm::READ, 1, 0, 1, virt, 0)).unwrap();
    assert_eq!(status(c), (sct::GENERIC, sc::DATA_TRANSFER_ERROR));
    assert_eq!(sim.counters().wild_dma, 1);
    m.p.dma_free(buf);
    m.release();
}

#[test]
fn media_errors_by_lba_range() {
    let (sim, mut m) = setup(ns512());
    sim.fail_reads(CtrlId(0), 1, 10..20);
    sim.fail_writes(CtrlId(0), 1, 30..31);
    let buf = m.p.dma_alloc(4096, 4096).unwrap();
    let b = buf.phys().as_u64();
    let c = m.cmd(true, rw(nvm::READ, 1, 8, 4, b, 0)).unwrap();
    assert_eq!(status(c), (sct::MEDIA, sc::media::UNRECOVERED_READ_ERROR));
    let c = m.cmd(true, rw(nvm::WRITE, 1, 28, 4, b, 0)).unwrap();
    assert_eq!(status(c), (sct::MEDIA, sc::media::WRITE_FAULT));
    ok(m.cmd(true, rw(nvm::READ, 1, 0, 8, b, 0)).unwrap()).unwrap();
    sim.clear_media_errors(CtrlId(0));
    ok(m.cmd(true, rw(nvm::READ, 1, 8, 4, b, 0)).unwrap()).unwrap();
    m.p.dma_free(buf);
    finish(&sim, m);
}

#[test]
fn write_zeroes_and_deallocate_read_back_zeroes() {
    let (sim, mut m) = setup(ns512());
    for lba in 0..16 {
        sim.write_block(CtrlId(0), 1, lba, &[0xAB; 512]);
    }
    let mut e = SubmissionEntry::new(nvm::WRITE_ZEROES);
    e.nsid = 1;
    e.set_lba_range(2, 2);
    ok(m.cmd(true, e).unwrap()).unwrap();
    let mut ranges = m.p.dma_alloc(4096, 4096).unwrap();
    ranges.as_mut_slice()[4..8].copy_from_slice(&3u32.to_le_bytes());
    ranges.as_mut_slice()[8..16].copy_from_slice(&10u64.to_le_bytes());
    let mut e = SubmissionEntry::new(nvm::DATASET_MANAGEMENT);
    e.nsid = 1;
    e.cdw10 = 0;
    e.cdw11 = 1 << 2;
    e.prp1 = ranges.phys().as_u64();
    ok(m.cmd(true, e).unwrap()).unwrap();
    let zero: Vec<u64> = (0..16)
        .filter(|&l| sim.read_block(CtrlId(0), 1, l) == [0; 512])
        .collect();
    assert_eq!(zero, vec![2, 3, 10, 11, 12]);
    m.p.dma_free(ranges);
    finish(&sim, m);
}

#[test]
fn unflushed_writes_are_lost_on_power_loss() {
    let (sim, mut m) = setup(ns512());
    let mut buf = m.p.dma_alloc(4096, 4096).unwrap();
    buf.as_mut_slice().fill(0x11);
    let b = buf.phys().as_u64();
    ok(m.cmd(true, rw(nvm::WRITE, 1, 0, 1, b, 0)).unwrap()).unwrap();
    let mut flush = SubmissionEntry::new(nvm::FLUSH);
    flush.nsid = 1;
    ok(m.cmd(true, flush).unwrap()).unwrap();
    ok(m.cmd(true, rw(nvm::WRITE, 1, 1, 1, b, 0)).unwrap()).unwrap();
    // Force Unit Access makes a single write durable.
    let mut fua = rw(nvm::WRITE, 1, 2, 1, b, 0);
    fua.cdw12 |= 1 << 30;
    ok(m.cmd(true, fua).unwrap()).unwrap();
    assert_eq!(sim.dirty_blocks(CtrlId(0), 1), 1);
    m.p.dma_free(buf);
    m.release();
    sim.power_loss();
    assert!(!sim.is_ready(CtrlId(0)));
    assert_eq!(sim.read_block(CtrlId(0), 1, 0), [0x11; 512]);
    assert_eq!(sim.read_block(CtrlId(0), 1, 1), [0; 512]);
    assert_eq!(sim.read_block(CtrlId(0), 1, 2), [0x11; 512]);
}

#[test]
fn without_a_volatile_cache_writes_are_durable_at_once() {
    let (sim, mut m) = setup(ns512().volatile_cache(false));
    let mut buf = m.p.dma_alloc(4096, 4096).unwrap();
    buf.as_mut_slice().fill(0x22);
    ok(m.cmd(true, rw(nvm::WRITE, 1, 5, 1, buf.phys().as_u64(), 0))
        .unwrap())
    .unwrap();
    m.p.dma_free(buf);
    m.release();
    sim.power_loss();
    assert_eq!(sim.read_block(CtrlId(0), 1, 5), [0x22; 512]);
}

#[test]
fn a_full_completion_queue_holds_completions_until_the_head_moves() {
    let (sim, mut m) = setup(ns512());
    let mut flush = SubmissionEntry::new(nvm::FLUSH);
    flush.nsid = 1;
    // CQ of 8 holds 7: submit 7 without reaping, then 1 more.
    for _ in 0..7 {
        m.submit(true, flush);
    }
    assert_eq!(sim.counters().completions_posted, 3 + 7);
    m.submit(true, flush);
    assert_eq!(sim.counters().completions_posted, 3 + 7, "CQ full");
    for _ in 0..8 {
        ok(m.reap(true).unwrap()).unwrap();
    }
    assert_eq!(sim.counters().completions_posted, 3 + 8);
    finish(&sim, m);
}

#[test]
fn bus_mastering_off_stops_the_controller() {
    let (sim, mut m) = setup(ns512());
    let a = sim.address(CtrlId(0)).unwrap();
    cfg_write(&m.cfg, a, 4, 0x0402);
    let mut flush = SubmissionEntry::new(nvm::FLUSH);
    flush.nsid = 1;
    m.submit(true, flush);
    assert!(m.reap(true).is_err());
    assert_eq!(sim.counters().dma_blocked, 1);
    cfg_write(&m.cfg, a, 4, 0x0406);
    m.submit(true, flush);
    ok(m.reap(true).unwrap()).unwrap();
    ok(m.reap(true).unwrap()).unwrap();
    finish(&sim, m);
}

#[test]
fn doorbell_stride_and_4k_blocks() {
    let spec = ControllerSpec::default()
        .namespace(NamespaceSpec::new(64, 4096))
        .dstrd(3);
    let (sim, mut m) = setup(spec);
    assert_eq!(m.dstrd, 3);
    let mut buf = m.p.dma_alloc(8192, 4096).unwrap();
    let data = pattern(8192, 9);
    buf.as_mut_slice().copy_from_slice(&data);
    let b = buf.phys().as_u64();
    ok(m.cmd(true, rw(nvm::WRITE, 1, 62, 2, b, b + 4096)).unwrap()).unwrap();
    buf.as_mut_slice().fill(0);
    ok(m.cmd(true, rw(nvm::READ, 1, 62, 2, b, b + 4096)).unwrap()).unwrap();
    assert_eq!(buf.as_slice(), &data[..]);
    let c = m.cmd(true, rw(nvm::READ, 1, 63, 2, b, b + 4096)).unwrap();
    assert_eq!(status(c), (sct::GENERIC, sc::LBA_OUT_OF_RANGE));
    m.p.dma_free(buf);
    finish(&sim, m);
}

#[test]
fn separate_metadata_needs_an_mptr_in_dma_memory() {
    let spec = ControllerSpec::default()
        .namespace(NamespaceSpec::new(64, 512).metadata(Metadata::Separate(8)));
    let (sim, mut m) = setup(spec);
    // Provokes a protocol error and wild DMA on purpose, and counts both.
    sim.unchecked();
    let mut buf = m.p.dma_alloc(4096, 4096).unwrap();
    let meta = m.p.dma_alloc(4096, 4096).unwrap();
    buf.as_mut_slice()[..1024].copy_from_slice(&pattern(1024, 3));
    let base = buf.phys().as_u64();
    // MPTR = 0: the metadata would go to physical address 0.
    let c = m.cmd(true, rw(nvm::WRITE, 1, 0, 2, base, 0)).unwrap();
    assert_eq!(status(c), (sct::GENERIC, sc::INVALID_FIELD));
    assert_eq!(
        sim.counters().protocol_errors,
        1,
        "{:?}",
        sim.protocol_log()
    );
    assert!(sim.protocol_log()[0].contains("MPTR 0x0"));
    // MPTR outside DMA memory: never performed, counted as wild.
    let mut e = rw(nvm::WRITE, 1, 0, 2, base, 0);
    e.mptr = 0x1000;
    let c = m.cmd(true, e).unwrap();
    assert_eq!(status(c), (sct::GENERIC, sc::DATA_TRANSFER_ERROR));
    assert_eq!(sim.counters().wild_dma, 1);
    // A proper buffer: the data lands, the metadata is zero on reads.
    let mut e = rw(nvm::WRITE, 1, 0, 2, base, 0);
    e.mptr = meta.phys().as_u64();
    ok(m.cmd(true, e).unwrap()).unwrap();
    assert_eq!(sim.read_block(CtrlId(0), 1, 1), pattern(1024, 3)[512..]);
    let mut e = rw(nvm::READ, 1, 0, 2, base, 0);
    e.mptr = meta.phys().as_u64();
    ok(m.cmd(true, e).unwrap()).unwrap();
    m.p.dma_free(buf);
    m.p.dma_free(meta);
    m.shut_down().unwrap();
    let c = sim.counters();
    assert_eq!((c.protocol_errors, c.wild_dma, c.dma_regions), (1, 1, 0));
}

#[test]
fn inline_metadata_widens_every_block_of_the_transfer() {
    let spec = ControllerSpec::default()
        .namespace(NamespaceSpec::new(64, 512).metadata(Metadata::Extended(8)));
    let (sim, mut m) = setup(spec);
    let mut buf = m.p.dma_alloc(4096, 4096).unwrap();
    let data = pattern(2 * 520, 5);
    buf.as_mut_slice()[..data.len()].copy_from_slice(&data);
    let base = buf.phys().as_u64();
    ok(m.cmd(true, rw(nvm::WRITE, 1, 4, 2, base, 0)).unwrap()).unwrap();
    // Block 5's data starts after block 4's data and metadata.
    assert_eq!(sim.read_block(CtrlId(0), 1, 5), data[520..1032]);
    buf.as_mut_slice().fill(0xEE);
    ok(m.cmd(true, rw(nvm::READ, 1, 4, 2, base, 0)).unwrap()).unwrap();
    let back = &buf.as_slice()[..1040];
    assert_eq!(back[..512], data[..512]);
    assert_eq!(back[512..520], [0; 8], "metadata reads as zero");
    assert_eq!(back[1040 - 8..], [0; 8]);
    assert_eq!(buf.as_slice()[1040], 0xEE, "nothing past the transfer");
    m.p.dma_free(buf);
    finish(&sim, m);
}

#[test]
fn other_command_sets_refuse_nvm_writes() {
    let spec = ControllerSpec::default()
        .namespace(NamespaceSpec::new(64, 512).command_set(csi::ZONED))
        .namespace(NamespaceSpec::new(64, 512).command_set(csi::KEY_VALUE));
    let (sim, mut m) = setup(spec);
    let buf = m.p.dma_alloc(4096, 4096).unwrap();
    let base = buf.phys().as_u64();
    let c = m.cmd(true, rw(nvm::WRITE, 1, 0, 1, base, 0)).unwrap();
    assert_eq!(
        status(c),
        (sct::COMMAND_SPECIFIC, 0xBC),
        "zone invalid write"
    );
    ok(m.cmd(true, rw(nvm::READ, 1, 0, 1, base, 0)).unwrap()).unwrap();
    for op in [nvm::READ, nvm::WRITE] {
        let c = m.cmd(true, rw(op, 2, 0, 1, base, 0)).unwrap();
        assert_eq!(status(c), (sct::GENERIC, sc::INVALID_OPCODE));
    }
    m.p.dma_free(buf);
    finish(&sim, m);
}
