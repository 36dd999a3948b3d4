//! An orderly detach ends with the function parked: it stays detached while it
//! is in place, and a function that leaves and comes back is attached again.

use std::time::Duration;

use bare_nvme::{Driver, DriverConfig, Event, PhysAddr, Platform};
use bare_nvme_sim::{ControllerSpec, CtrlId, Location, NamespaceSpec, Sim, MMIO_APERTURE};

type SimDriver = Driver<bare_nvme_sim::SimPlatform, bare_nvme_sim::SimConfig>;

fn spec(serial: &str) -> ControllerSpec {
    ControllerSpec::default()
        .serial(serial)
        .namespace(NamespaceSpec::new(1024, 512))
}

fn ticks(sim: &Sim, driver: &mut SimDriver, n: usize) -> Vec<Event> {
    let mut all = Vec::new();
    for _ in 0..n {
        sim.advance(Duration::from_millis(2));
        all.extend(driver.tick());
    }
    all
}

#[test]
fn a_detached_function_on_a_plain_bus_stays_detached_until_it_leaves() {
    let sim = Sim::builder().controller_on_bus0(spec("p1")).build();
    let config = DriverConfig::default()
        .root_window(Some((PhysAddr::new(MMIO_APERTURE.0 + (64 << 20)), 1 << 20)))
        .bus_rescan_interval(Some(Duration::from_millis(50)));
    let mut driver: Box<SimDriver> =
        Box::new(Driver::new(sim.platform(), sim.config_access(), config));
    driver.scan().unwrap();
    let _ = driver.wait_ready(Duration::from_secs(1));
    let id = driver.ready_controllers().next().unwrap();
    driver.begin_detach(id).unwrap();
    let events = ticks(&sim, &mut driver, 200);
    assert_eq!(
        events,
        vec![Event::Removed {
            id,
            failed_commands: 0,
            detected_by: bare_nvme::Detection::Orderly
        }],
        "detached once, not attached again by the bus probe"
    );
    assert_eq!(
        sim.command_register(CtrlId(0)) & (1 << 2),
        0,
        "no bus mastering"
    );
    assert_eq!(sim.counters().dma_regions, 0);

    // The function leaves and a new one is plugged in at the same place.
    sim.surprise_remove(CtrlId(0));
    ticks(&sim, &mut driver, 100);
    let new = sim.hot_add_at(Location::Bus0, spec("p2"));
    let events = ticks(&sim, &mut driver, 200);
    let ready: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Ready { id, serial, .. } => Some((*id, serial.as_str().to_string())),
            _ => None,
        })
        .collect();
    assert_eq!(ready.len(), 1, "{events:?}");
    assert_eq!(ready[0].1, "p2");
    let platform = sim.platform();
    let mut buf = platform.dma_alloc(512, 512).unwrap();
    driver
        .controller(ready[0].0)
        .unwrap()
        .read(1, 0, &mut buf)
        .unwrap();
    platform.dma_free(buf);
    assert!(sim.is_ready(new));
    assert_eq!(sim.counters().protocol_errors, 0);
}
