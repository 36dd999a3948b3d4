//! Reads and writes submitted with a namespace handle (`submit_read`,
//! `submit_write`): the data moves, every caller mistake is refused before
//! the device sees anything (the buffer comes back), and a handle that does
//! not fit the controller (another controller's namespace, a removed
//! controller) is refused.

mod common;

use bare_nvme::block::BlockTarget;
use bare_nvme::spec::command::nvm;
use bare_nvme::{ControllerConfig, Error, Platform, QueueId};
use bare_nvme_sim::CtrlId;

use common::*;

const BLOCK: usize = 512;
const Q: QueueId = QueueId::FIRST;

#[test]
fn reads_and_writes_through_a_handle_move_the_data() {
    let (sim, mut driver, id) = single(spec(1024, BLOCK as u32), ControllerConfig::default());
    let p = sim.platform();
    let ns = driver.namespace_handle(Some(id), 1).unwrap();
    let c = driver.controller(id).unwrap();
    let _ = c
        .submit_write(Q, &ns, 16, 8, filled(&p, 4096, 7), 1)
        .unwrap();
    let mut done = collect(&mut driver, id, 0, 1);
    assert_eq!((done[0].tag, done[0].result), (1, Ok(())));
    p.dma_free(done[0].buffer.take().unwrap());
    for i in 0..8 {
        assert_eq!(
            sim.read_block(CtrlId(0), 1, 16 + i),
            pattern(4096, 7)[i as usize * BLOCK..][..BLOCK]
        );
    }
    let c = driver.controller(id).unwrap();
    let _ = c.submit_read(Q, &ns, 16, 8, zeroed(&p, 4096), 2).unwrap();
    let mut done = collect(&mut driver, id, 0, 1);
    assert_eq!((done[0].tag, done[0].result), (2, Ok(())));
    let back = done[0].buffer.take().unwrap();
    assert_eq!(back.as_slice(), &pattern(4096, 7)[..]);
    p.dma_free(back);
    finish(&sim, driver);
}

#[test]
fn caller_mistakes_are_refused_before_the_device_sees_them() {
    let (sim, mut driver, id) = single(spec(1024, BLOCK as u32), ControllerConfig::default());
    let p = sim.platform();
    let ns = driver.namespace_handle(Some(id), 1).unwrap();
    let parent = zeroed(&p, 8192);
    let before = sim.counters().io(nvm::READ);
    let c = driver.controller(id).unwrap();
    let cases: [(u64, u32, usize, usize, Error); 5] = [
        (
            1020,
            8,
            0,
            4096,
            Error::LbaOutOfRange {
                lba: 1020,
                blocks: 8,
                capacity: 1024,
            },
        ),
        (
            u64::MAX,
            1,
            0,
            4096,
            Error::LbaOutOfRange {
                lba: u64::MAX,
                blocks: 1,
                capacity: 1024,
            },
        ),
        (0, 0, 0, 4096, Error::EmptyTransfer),
        (
            0,
            9,
            0,
            4096,
            Error::BufferTooSmall {
                needed: 9 * BLOCK,
                got: 4096,
            },
        ),
        (
            0,
            1,
            2,
            4096,
            Error::BufferMisaligned {
                addr: parent.phys().as_u64() + 2,
                required: 4,
            },
        ),
    ];
    for (lba, blocks, offset, len, error) in cases {
        let buffer = view(&parent, offset, len);
        let phys = buffer.phys();
        let rejected = c.submit_read(Q, &ns, lba, blocks, buffer, 0).unwrap_err();
        assert_eq!(rejected.error, error);
        assert_eq!(
            rejected.buffer.map(|b| b.phys()),
            Some(phys),
            "buffer handed back"
        );
    }
    let too_large = c.max_transfer() as usize / BLOCK + 1;
    let rejected = c
        .submit_read(Q, &ns, 0, too_large as u32, view(&parent, 0, 4096), 0)
        .unwrap_err();
    assert!(
        matches!(rejected.error, Error::TransferTooLarge { .. }),
        "{:?}",
        rejected.error
    );
    let rejected = c
        .submit_read(QueueId::new(3), &ns, 0, 1, view(&parent, 0, 4096), 0)
        .unwrap_err();
    assert_eq!(rejected.error, Error::UnknownQueue { queue: 3 });
    assert_eq!(c.in_flight(), 0);
    assert_eq!(
        sim.counters().io(nvm::READ),
        before,
        "nothing reached the device"
    );
    p.dma_free(parent);
    finish(&sim, driver);
}

#[test]
fn a_handle_of_another_namespace_or_a_removed_controller_is_refused() {
    // Two controllers; the second's namespace has another size.
    let sim = bare_nvme_sim::Sim::builder()
        .root_port(true)
        .root_port(true)
        .controller_on_port(
            bare_nvme_sim::PortId(0),
            spec(1024, BLOCK as u32).serial("a"),
        )
        .controller_on_port(
            bare_nvme_sim::PortId(1),
            spec(2048, BLOCK as u32).serial("b"),
        )
        .build();
    let (mut driver, ids) = up(&sim, ControllerConfig::default());
    assert_eq!(ids.len(), 2);
    let p = sim.platform();
    let ns_a = driver.namespace_handle(Some(ids[0]), 1).unwrap();
    let b = driver.controller(ids[1]).unwrap();
    let rejected = b
        .submit_read(Q, &ns_a, 0, 1, zeroed(&p, 4096), 0)
        .unwrap_err();
    assert_eq!(rejected.error, Error::StaleHandle);
    p.dma_free(rejected.buffer.unwrap());
    assert_eq!(b.in_flight(), 0);

    sim.surprise_remove(CtrlId(0));
    for _ in 0..100 {
        let _ = driver.tick();
    }
    let a = driver.controller(ids[0]).unwrap();
    assert!(a.state().is_finished());
    let rejected = a
        .submit_read(Q, &ns_a, 0, 1, zeroed(&p, 4096), 0)
        .unwrap_err();
    assert_eq!(rejected.error, Error::StaleHandle);
    p.dma_free(rejected.buffer.unwrap());
    assert_clean(&sim);
}
