//! PRP boundaries: one page, two pages, a PRP list, a list chained over more
//! than one list page, the maximum transfer, splitting above MDTS, and
//! buffers whose start is not page aligned. Each transfer is checked against
//! the simulated media, and the number of commands it took is counted.

mod common;

use bare_nvme::nvme::command::nvm;
use bare_nvme::{ControllerConfig, Platform};
use bare_nvme_sim::{CtrlId, Sim};
use common::*;

const NS: u32 = 1;
const PAGE: usize = 4096;
const MIB: usize = 1 << 20;

/// Writes `len` bytes at `offset` into a fresh allocation to `lba`, reads
/// them back into a buffer at another offset, and checks both the data and
/// the media. Returns the (write, read) commands it took.
fn round_trip(
    sim: &Sim,
    driver: &mut BoxedDrv,
    len: usize,
    offset: usize,
    lba: u64,
    seed: u8,
) -> (u64, u64) {
    let id = driver.ready_controllers().next().unwrap();
    let p = sim.platform();
    let mut src = zeroed(&p, offset + len);
    src.as_mut_slice()[offset..].copy_from_slice(&pattern(len, seed));
    let back_offset = (offset + 8) % PAGE;
    let dst = zeroed(&p, back_offset + len);
    let before = sim.counters();
    let c = driver.controller(id).unwrap();
    c.write(NS, lba, &view(&src, offset, len)).unwrap();
    let mid = sim.counters();
    c.read(NS, lba, &mut view(&dst, back_offset, len)).unwrap();
    let after = sim.counters();
    assert_eq!(
        &dst.as_slice()[back_offset..],
        &pattern(len, seed)[..],
        "{len} bytes at offset {offset}"
    );
    assert!(dst.as_slice()[..back_offset].iter().all(|&b| b == 0));
    let bs = c.namespace(NS).unwrap().block_size() as usize;
    let expected = pattern(len, seed);
    for (i, block) in expected.chunks(bs).enumerate() {
        assert_eq!(
            sim.read_block(CtrlId(0), NS, lba + i as u64),
            block,
            "block {i} of {len} bytes at offset {offset}"
        );
    }
    p.dma_free(src);
    p.dma_free(dst);
    assert_clean(sim);
    (
        mid.io(nvm::WRITE) - before.io(nvm::WRITE),
        after.io(nvm::READ) - mid.io(nvm::READ),
    )
}

/// A controller with an 8 MiB namespace of 512-byte blocks and `mdts`,
/// driven with `max_transfer`.
fn rig(mdts: u8, max_transfer: u32) -> (Sim, BoxedDrv) {
    let config = ControllerConfig::default().max_transfer(max_transfer);
    let (sim, driver, _) = single(spec(16384, 512).mdts(mdts), config);
    (sim, driver)
}

#[test]
fn one_page_two_pages_and_a_prp_list_each_take_one_command() {
    let (sim, mut driver) = rig(7, 256 << 10);
    for (pages, lba) in [(1, 0), (2, 16), (3, 40), (16, 80), (64, 300)] {
        let cmds = round_trip(&sim, &mut driver, pages * PAGE, 0, lba, pages as u8);
        assert_eq!(cmds, (1, 1), "{pages} pages");
    }
    finish(&sim, driver);
}

#[test]
fn a_prp_list_longer_than_one_list_page_chains_to_the_next() {
    let (sim, mut driver) = rig(0, 4 * MIB as u32);
    let id = driver.ready_controllers().next().unwrap();
    assert_eq!(
        driver.controller(id).unwrap().max_transfer(),
        4 * MIB as u32
    );
    // 3 MiB = 768 pages: PRP1 plus 767 list entries, more than the 512 one
    // list page holds.
    let cmds = round_trip(&sim, &mut driver, 3 * MIB, 0, 7, 11);
    assert_eq!(cmds, (1, 1));
    // Just past one full list page: 514 pages.
    let cmds = round_trip(&sim, &mut driver, 514 * PAGE, 0, 8000, 12);
    assert_eq!(cmds, (1, 1));
    finish(&sim, driver);
}

#[test]
fn the_maximum_transfer_is_one_command_and_one_block_more_is_two() {
    let (sim, mut driver) = rig(0, 4 * MIB as u32);
    assert_eq!(round_trip(&sim, &mut driver, 4 * MIB, 0, 0, 21), (1, 1));
    assert_eq!(
        round_trip(&sim, &mut driver, 4 * MIB + 512, 0, 8191, 22),
        (2, 2)
    );
    finish(&sim, driver);
}

#[test]
fn the_maximum_transfer_from_an_unaligned_start_touches_one_more_page() {
    let (sim, mut driver) = rig(0, 4 * MIB as u32);
    // 4 MiB from 512 bytes into a page spans 1025 pages.
    assert_eq!(round_trip(&sim, &mut driver, 4 * MIB, 512, 100, 31), (1, 1));
    assert_eq!(
        round_trip(&sim, &mut driver, 4 * MIB, 4092, 8100, 32),
        (1, 1)
    );
    finish(&sim, driver);
}

#[test]
fn the_transfer_limit_follows_mdts_and_the_configured_maximum() {
    // MDTS 7 allows 512 KiB; the configuration asks for less.
    let (sim, mut driver) = rig(7, 128 << 10);
    let id = driver.ready_controllers().next().unwrap();
    let c = driver.controller(id).unwrap();
    assert_eq!(c.max_transfer(), 128 << 10);
    assert_eq!(c.namespace(NS).unwrap().max_blocks, 256);
    assert_eq!(round_trip(&sim, &mut driver, 128 << 10, 0, 0, 41), (1, 1));
    finish(&sim, driver);
    // MDTS 3 allows 32 KiB, below what the configuration asks.
    let (sim, mut driver) = rig(3, 4 * MIB as u32);
    let id = driver.ready_controllers().next().unwrap();
    assert_eq!(driver.controller(id).unwrap().max_transfer(), 32 << 10);
    assert_eq!(round_trip(&sim, &mut driver, 32 << 10, 0, 0, 42), (1, 1));
    finish(&sim, driver);
}

#[test]
fn blocking_transfers_above_mdts_are_split_into_commands_the_device_accepts() {
    // MDTS 2: 16 KiB per command; the device fails anything larger.
    let (sim, mut driver) = rig(2, 4 * MIB as u32);
    let id = driver.ready_controllers().next().unwrap();
    assert_eq!(driver.controller(id).unwrap().max_transfer(), 16 << 10);
    assert_eq!(round_trip(&sim, &mut driver, 100 << 10, 0, 3, 51), (7, 7));
    // From an unaligned start every piece spans one more page (a list).
    assert_eq!(
        round_trip(&sim, &mut driver, 100 << 10, 512, 500, 52),
        (7, 7)
    );
    assert_eq!(
        round_trip(&sim, &mut driver, 1 << 20, 2048, 4000, 53),
        (64, 64)
    );
    finish(&sim, driver);
}

#[test]
fn buffers_starting_inside_a_page_cross_page_boundaries_correctly() {
    let (sim, mut driver) = rig(7, 256 << 10);
    let mut lba = 0;
    for offset in [4, 512, 2048, 4092] {
        for len in [512, 1024, PAGE, 2 * PAGE, 3 * PAGE + 512, 64 << 10] {
            let cmds = round_trip(&sim, &mut driver, len, offset, lba, offset as u8);
            assert_eq!(cmds, (1, 1), "{len} bytes at offset {offset}");
            lba += (len / 512) as u64 + 3;
        }
    }
    finish(&sim, driver);
}

#[test]
fn a_4096_byte_namespace_moves_whole_pages() {
    let config = ControllerConfig::default().max_transfer(64 << 10);
    let (sim, mut driver, id) = single(spec(2048, 4096), config);
    assert_eq!(
        driver
            .controller(id)
            .unwrap()
            .namespace(NS)
            .unwrap()
            .max_blocks,
        16
    );
    assert_eq!(round_trip(&sim, &mut driver, PAGE, 0, 0, 61), (1, 1));
    assert_eq!(round_trip(&sim, &mut driver, 2 * PAGE, 0, 10, 62), (1, 1));
    assert_eq!(
        round_trip(&sim, &mut driver, 16 * PAGE, 1024, 20, 63),
        (1, 1)
    );
    assert_eq!(
        round_trip(&sim, &mut driver, 40 * PAGE, 0, 2008, 64),
        (3, 3)
    );
    finish(&sim, driver);
}
