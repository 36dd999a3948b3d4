//! A table full of removed controllers whose failed commands were never
//! polled: a hot-add waits, one warning says so, and
//! `Driver::collect_finished` hands the commands back so the entry is reused.

use std::sync::Mutex;
use std::time::Duration;

use bare_nvme::{Driver, DriverConfig, Error, Event, IoOp, Platform, QueueId};
use bare_nvme_sim::{ControllerSpec, CtrlId, Hold, NamespaceSpec, PortId, Sim};

/// Warning-level lines the driver logged.
static WARNINGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Warnings;

impl log::Log for Warnings {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Warn
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            WARNINGS.lock().unwrap().push(record.args().to_string());
        }
    }

    fn flush(&self) {}
}

fn spec(serial: &str) -> ControllerSpec {
    ControllerSpec::default()
        .serial(serial)
        .namespace(NamespaceSpec::new(2048, 512))
}

fn tick<const N: usize>(
    driver: &mut Driver<bare_nvme_sim::SimPlatform, bare_nvme_sim::SimConfig, N>,
    sim: &Sim,
    ms: u32,
) -> Vec<Event> {
    let mut events = Vec::new();
    for _ in 0..ms {
        sim.advance(Duration::from_millis(1));
        events.extend(driver.tick());
    }
    events
}

#[test]
fn a_hot_add_waiting_on_unpolled_removed_controllers_is_warned_once_and_served_after_collect_finished(
) {
    log::set_logger(&Warnings).unwrap();
    log::set_max_level(log::LevelFilter::Warn);

    let sim = Sim::single(spec("first"));
    let platform = sim.platform();
    // One table entry.
    let mut driver = Box::new(Driver::<_, _, 1>::new(
        sim.platform(),
        sim.config_access(),
        DriverConfig::new(),
    ));
    driver.scan().unwrap();
    let _ = driver.wait_ready(Duration::from_secs(5));
    let old = driver.ready_controllers().next().unwrap();

    // Two reads in flight when the controller is pulled.
    sim.hold(CtrlId(0), Hold::Io);
    let nvme = driver.controller(old).unwrap();
    for tag in 0..2 {
        let buffer = platform.dma_alloc(4096, 4096).unwrap();
        let read = IoOp::Read {
            nsid: 1,
            lba: tag * 8,
            blocks: 8,
        };
        let _ = nvme
            .submit(QueueId::FIRST, read, Some(buffer), tag)
            .unwrap();
    }
    nvme.ring_doorbells();
    sim.process();
    sim.surprise_remove(CtrlId(0));
    let events = tick(&mut driver, &sim, 50);
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::Removed { id, failed_commands: 2, .. } if *id == old)));

    // The embedder never polls the removed controller; a new one arrives
    // and waits for the only entry, with one warning however long it waits.
    let new = sim.hot_add(PortId(0), spec("second"));
    let events = tick(&mut driver, &sim, 300);
    assert!(events.is_empty(), "{events:?}");
    let warnings = WARNINGS.lock().unwrap().clone();
    let waiting: Vec<_> = warnings
        .iter()
        .filter(|w| w.contains("waits for a table entry"))
        .collect();
    assert_eq!(waiting.len(), 1, "{warnings:?}");
    assert!(waiting[0].contains("collect_finished"));

    // Collecting hands back both commands with their buffers, once.
    let mut collected = Vec::new();
    let delivered = driver.collect_finished(|id, completion| collected.push((id, completion)));
    assert_eq!(delivered, 2);
    let mut tags = Vec::new();
    for (id, completion) in collected {
        assert_eq!(id, old);
        assert_eq!(completion.result, Err(Error::DeviceRemoved));
        tags.push(completion.tag);
        let buffer = completion.buffer.expect("buffer handed back");
        sim.caller_owns(&buffer);
        platform.dma_free(buffer);
    }
    tags.sort();
    assert_eq!(tags, [0, 1]);
    assert_eq!(driver.collect_finished(|_, _| unreachable!()), 0);

    // The waiting controller is attached on the next slot poll and served.
    let events = tick(&mut driver, &sim, 500);
    let ready = events.iter().find_map(|e| match e {
        Event::Ready { id, .. } => Some(*id),
        _ => None,
    });
    let ready = ready.expect("the waiting controller is served");
    assert_ne!(ready, old);
    // It took the old controller's entry: the old id is stale.
    assert_eq!(driver.controller(old).err(), Some(Error::StaleHandle));
    let mut buffer = platform.dma_alloc(512, 4096).unwrap();
    buffer.as_mut_slice().fill(0x3C);
    driver
        .controller(ready)
        .unwrap()
        .write(1, 5, &buffer)
        .unwrap();
    platform.dma_free(buffer);
    assert_eq!(sim.read_block(new, 1, 5), [0x3C; 512]);
    drop(driver);
    let counters = sim.counters();
    assert_eq!((counters.dma_regions, counters.wild_dma), (0, 0));
}
