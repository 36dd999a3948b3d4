//! Shadow doorbells against a device that acts on doorbells after the write
//! (as hardware and QEMU do): the EventIdx rule saves MMIO writes while the
//! device is behind, and nothing else changes.

use bare_nvme_bench::random_lbas;
use bare_nvme_bench::rig::{self, Rig};

#[test]
fn streaming_with_shadow_doorbells_writes_fewer_registers() {
    let lbas = random_lbas(1024);
    for qd in [4, 8, 32] {
        let (ios_off, off, errors_off) = rig::stream(false, qd, 2048, &lbas);
        let (ios_on, on, errors_on) = rig::stream(true, qd, 2048, &lbas);
        assert_eq!((errors_off, errors_on), (0, 0));
        assert!(ios_off >= 2048 && ios_on >= 2048);
        let per_io_off = off.writes as f64 / ios_off as f64;
        let per_io_on = on.writes as f64 / ios_on as f64;
        // Without shadows: one SQ doorbell per command plus one CQ head per
        // drained batch. With them: one of each per device turn.
        assert!(per_io_off > 1.0, "qd {qd}: {per_io_off}");
        assert!(per_io_on <= 2.0 / qd as f64 + 0.01, "qd {qd}: {per_io_on}");
        assert_eq!((off.reads, on.reads), (0, 0), "no register reads per I/O");
    }
}

#[test]
fn batches_read_the_same_data_with_and_without_shadows() {
    let lbas = random_lbas(512);
    for shadow in [false, true] {
        let mut rig = Rig::new(shadow, 64, 32);
        assert_eq!(
            rig.sim.shadow_doorbells_active(bare_nvme_sim::CtrlId(0)),
            shadow
        );
        for (i, &lba) in lbas.iter().take(32).enumerate() {
            let pattern = vec![i as u8 + 1; bare_nvme_bench::IO_BYTES];
            rig.sim
                .write_block(bare_nvme_sim::CtrlId(0), 1, lba, &pattern);
        }
        let device = rig.device.clone();
        let ns = rig.namespace();
        let (c, buffers) = rig.parts();
        assert_eq!(rig::measured_submit(c, &ns, buffers, 0, &lbas[..32]), 32);
        let mut failed = 0;
        let mut got = 0;
        while got < 32 {
            got += rig::measured_poll(c, buffers, &mut failed);
            device.run();
        }
        assert_eq!(failed, 0);
        for (i, b) in rig.buffers.iter().enumerate() {
            let b = b.as_ref().expect("buffer back");
            assert!(b.as_slice().iter().all(|&x| x == i as u8 + 1), "buffer {i}");
        }
        let sim = rig.finish();
        let c = sim.counters();
        assert_eq!(c.protocol_errors, 0, "{:?}", sim.protocol_log());
        assert_eq!(c.dma_regions, 0, "all DMA memory returned");
    }
}
