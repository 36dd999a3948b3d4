//! A write reported complete and followed by a completed flush survives power
//! loss; the driver never reports a flush done before the device did.

use std::time::Duration;

use bare_nvme::{Driver, DriverConfig, Platform};
use bare_nvme_sim::{ControllerSpec, CtrlId, NamespaceSpec, Sim};

#[test]
fn flushed_writes_survive_power_loss_on_a_controller_with_a_volatile_cache() {
    let sim = Sim::single(
        ControllerSpec::default()
            .serial("dur1")
            .volatile_cache(true)
            .namespace(NamespaceSpec::new(1 << 14, 4096)),
    );
    let mut driver: Driver<_, _> =
        Driver::new(sim.platform(), sim.config_access(), DriverConfig::default());
    driver.scan().unwrap();
    let _ = driver.wait_ready(Duration::from_secs(1));
    let id = driver.ready_controllers().next().unwrap();
    let platform = sim.platform();
    let mut buf = platform.dma_alloc(64 * 4096, 4096).unwrap();
    for (i, b) in buf.as_mut_slice().iter_mut().enumerate() {
        *b = (i * 7 + i / 4096) as u8;
    }
    let c = driver.controller(id).unwrap();
    assert!(c.info().unwrap().volatile_write_cache);
    c.write(1, 1000, &buf).unwrap();
    assert!(
        sim.dirty_blocks(CtrlId(0), 1) > 0,
        "the cache holds the write"
    );
    c.flush(1).unwrap();
    assert_eq!(sim.dirty_blocks(CtrlId(0), 1), 0, "flush reached the media");
    sim.power_loss();
    for block in 0..64u64 {
        let want = &buf.as_slice()[block as usize * 4096..][..4096];
        assert_eq!(
            sim.read_block(CtrlId(0), 1, 1000 + block),
            want,
            "block {block}"
        );
    }
    platform.dma_free(buf);
}
