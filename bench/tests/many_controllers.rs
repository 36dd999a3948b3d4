//! The tick with 16 controllers on the simulated machine: per controller at
//! most one register read per tick (none with completions since the last
//! tick), no register writes, and config space read only for the slot watch
//! and the plain-bus probe.

use bare_nvme_bench::many::{self, CONTROLLERS};

/// Runs `f` on a thread with room for a driver of 16 controllers, which a
/// debug build moves through the stack on its way into the `Box`.
fn with_big_stack(f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(f)
        .expect("thread")
        .join()
        .expect("test thread");
}

#[test]
fn sixteen_controllers_tick_with_one_csts_read_each_when_idle_and_none_when_busy() {
    with_big_stack(|| {
        let (sim, mut d, ids) = many::machine(CONTROLLERS);
        assert_eq!(ids.len(), CONTROLLERS);
        let ticks = 500;
        let n = CONTROLLERS as u64;
        // Slot Status of every port once per slot poll interval (10 ms by
        // default), and at most two reads of the plain-bus probe.
        let config_bound = n + 2;
        let idle = many::measure(&mut d, &sim, &ids, ticks, false);
        assert_eq!(idle.mmio_reads, n * ticks, "{idle:?}");
        assert_eq!(idle.mmio_reads_max, n, "{idle:?}");
        assert_eq!(idle.mmio_writes, 0, "{idle:?}");
        assert!(idle.config_reads_max <= config_bound, "{idle:?}");
        assert!(idle.per_tick(idle.config_reads) <= 2.5, "{idle:?}");
        let busy = many::measure(&mut d, &sim, &ids, ticks, true);
        assert_eq!(busy.mmio_reads, 0, "{busy:?}");
        assert_eq!(busy.mmio_writes, 0, "{busy:?}");
        assert!(busy.config_reads_max <= config_bound, "{busy:?}");
        assert!(busy.per_tick(busy.config_reads) <= 2.5, "{busy:?}");
        many::finish(d, sim, &ids);
    });
}
