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
fn tick_until<const N: usize>(
    sim: &Sim,
    driver: &mut Driver<bare_nvme_sim::SimPlatform, bare_nvme_sim::SimConfig, N>,
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

/// A table with room for one controller: a device that comes back while
/// the removed controller's failed command was not collected waits for its
/// entry (the failed command is not lost), and is attached on the first
/// slot poll after the embedder polled it.
#[test]
fn a_returning_device_waits_for_the_failed_commands_of_the_entry_it_needs() {
    use bare_nvme::{IoOp, Platform, QueueId};
    let sim = Sim::builder().root_port(true).build();
    let mut driver: Box<Driver<_, _, 1>> = Box::new(Driver::new(
        sim.platform(),
        sim.config_access(),
        DriverConfig::default(),
    ));
    driver.scan().unwrap();
    let ctrl = sim.hot_add(PortId(0), spec());
    let events = tick_until(&sim, &mut driver, |e| matches!(e, Event::Ready { .. }));
    let Some(Event::Ready { id, .. }) = events.iter().find(|e| matches!(e, Event::Ready { .. }))
    else {
        unreachable!()
    };
    let id = *id;
    sim.hold(ctrl, bare_nvme_sim::Hold::Io);
    let buffer = sim.platform().dma_alloc(512, 4096).unwrap();
    let op = IoOp::Read {
        nsid: 1,
        lba: 0,
        blocks: 1,
    };
    let c = driver.controller(id).unwrap();
    let _token = c.submit(QueueId::FIRST, op, Some(buffer), 7).unwrap();
    c.ring_doorbells();
    // The card is swapped for another between two slot polls.
    sim.link_flap(PortId(0));
    tick_until(
        &sim,
        &mut driver,
        |e| matches!(e, Event::Removed { id: r, failed_commands: 1, .. } if *r == id),
    );
    for _ in 0..200 {
        sim.advance(Duration::from_millis(1));
        let events = driver.tick();
        assert!(
            !events.iter().any(|e| matches!(e, Event::Attached { .. })),
            "attached over an entry with a failed command not collected: {events:?}"
        );
    }
    let mut failed = Vec::new();
    let platform = sim.platform();
    driver.controller(id).unwrap().poll(QueueId::FIRST, |done| {
        failed.push((done.tag, done.result));
        platform.dma_free(done.buffer.expect("its buffer"));
    });
    assert_eq!(failed, vec![(7, Err(bare_nvme::Error::DeviceRemoved))]);
    let events = tick_until(&sim, &mut driver, |e| matches!(e, Event::Ready { .. }));
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Returned { previous, .. } if *previous == id)),
        "{events:?}"
    );
}
