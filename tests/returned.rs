//! A device removed and re-inserted several times is reported as returned
//! under the identity it had last.

use std::time::Duration;

use bare_nvme::{ControllerId, Driver, DriverConfig, Event};
use bare_nvme_sim::{ControllerSpec, NamespaceSpec, PortId, Sim};

fn spec() -> ControllerSpec {
    ControllerSpec::default()
        .serial("again")
        .namespace(NamespaceSpec::new(4096, 512))
}

/// Ticks (advancing the clock 1 ms each) until `want` matches; returns every
/// event seen.
fn tick_until(
    sim: &Sim,
    driver: &mut Driver<bare_nvme_sim::SimPlatform, bare_nvme_sim::SimConfig>,
    want: impl Fn(&Event) -> bool,
) -> Vec<Event> {
    let mut seen = Vec::new();
    for _ in 0..10_000 {
        sim.advance(Duration::from_millis(1));
        let events = driver.tick();
        let done = events.iter().any(&want);
        seen.extend(events);
        if done {
            return seen;
        }
    }
    panic!("no matching event; saw {seen:?}");
}

#[test]
fn returned_names_the_latest_identity() {
    let sim = Sim::builder().root_port(true).build();
    let mut driver: Driver<_, _> =
        Driver::new(sim.platform(), sim.config_access(), DriverConfig::default());
    driver.scan().unwrap();
    let mut previous: Option<ControllerId> = None;
    for round in 0..4 {
        let ctrl = sim.hot_add(PortId(0), spec());
        let events = tick_until(&sim, &mut driver, |e| matches!(e, Event::Ready { .. }));
        let id = events
            .iter()
            .find_map(|e| match e {
                Event::Ready { id, .. } => Some(*id),
                _ => None,
            })
            .unwrap();
        let returned: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                Event::Returned { id: i, previous } if *i == id => Some(*previous),
                _ => None,
            })
            .collect();
        match previous {
            None => assert!(returned.is_empty(), "round {round}: {returned:?}"),
            Some(p) => assert_eq!(returned, vec![p], "round {round}"),
        }
        sim.surprise_remove(ctrl);
        tick_until(
            &sim,
            &mut driver,
            |e| matches!(e, Event::Removed { id: r, .. } if *r == id),
        );
        previous = Some(id);
    }
}
