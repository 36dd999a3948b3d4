//! The events a tick reports, checked against the model.

use super::*;

impl Model {
    pub(crate) fn absorb(&mut self, events: &[Event]) {
        for &e in events {
            self.trace.push(format!("  event {e:?}"));
            match e {
                Event::Attached { id, address } => {
                    // The device answering there now, or the last one seen
                    // there (attached by a scan, removed before the tick).
                    let dev = (0..self.devices.len())
                        .find(|&d| self.sim.address(CtrlId(d)) == Some(address))
                        .or_else(|| {
                            (0..self.devices.len())
                                .rev()
                                .find(|&d| self.devices[d].address == Some(address))
                        });
                    let Some(dev) = dev else {
                        self.fail(format!("{id} attached at {address}: no device there"));
                    };
                    self.check(!self.ids.contains_key(&key(id)), || {
                        format!("{id} attached twice")
                    });
                    let m = IdModel {
                        dev,
                        faults_base: self.devices[dev].faults,
                        // A hold already in effect counts for this attach
                        // too, also once healing lifts it.
                        holds_base: self.devices[dev].holds - u32::from(self.devices[dev].held),
                        lost_base: self.devices[dev].lost,
                        unrung_failed: false,
                        detach_requested: false,
                        ready: false,
                        seen_serving: false,
                        ended: false,
                        quarantined: false,
                    };
                    self.ids.insert(key(id), (id, m));
                }
                Event::Health { .. }
                | Event::NamespaceAdded { .. }
                | Event::NamespaceRemoved { .. } => {
                    self.fail(format!("{e:?}: the model raises no asynchronous event"));
                }
                Event::SlotFault { .. } => {
                    self.fail(format!("{e:?}: the model's slots have no power controller"));
                }
                Event::Ready { id, serial, .. } => {
                    let known = self.ids.contains_key(&key(id));
                    self.check(known, || format!("Ready of {id} before Attached"));
                    let dev = self.id_model(id).dev;
                    let expected = self.devices[dev].serial.clone();
                    let m = self.id_model(id);
                    let (ready, ended) = (m.ready, m.ended);
                    m.ready = true;
                    self.check(!ready && !ended, || format!("{id}: Ready again or late"));
                    self.check(serial.as_str() == expected, || {
                        format!("{id}: serial {serial:?}, device has {expected}")
                    });
                }
                Event::Removed { id, .. } | Event::Failed { id, .. } => {
                    let known = self.ids.contains_key(&key(id));
                    self.check(known, || format!("end of {id} before Attached"));
                    let m = self.id_model(id);
                    let ended = m.ended;
                    m.ended = true;
                    self.check(!ended, || format!("{id}: a second terminal event"));
                }
                Event::Quarantined { id, regions, .. } => {
                    let m = self.id_model(id);
                    let (ended, quarantined) = (m.ended, m.quarantined);
                    m.quarantined = true;
                    self.check(ended && !quarantined && regions > 0, || {
                        format!("{id}: Quarantined twice, early or empty")
                    });
                    self.quarantine_reported = true;
                    self.sim.expect_quarantined();
                }
                Event::Returned { id, previous } => {
                    let ok = self.ids.get(&key(previous)).is_some_and(|p| p.1.ended)
                        && self.ids.get(&key(id)).is_some_and(|m| m.1.ready);
                    self.check(ok, || format!("{id} returned as {previous}, not ended"));
                    let same = self.ids[&key(previous)].1.dev;
                    let now = self.ids[&key(id)].1.dev;
                    self.check(
                        self.devices[same].serial == self.devices[now].serial,
                        || format!("{id} returned as {previous} with another serial"),
                    );
                }
            }
        }
    }

    pub(crate) fn tick(&mut self) {
        let events = self.driver.tick();
        self.absorb(&events);
    }

    /// Notes which controllers serve, and collects what finished
    /// controllers failed: an embedder collects before the entry is reused.
    pub(crate) fn observe(&mut self) {
        for d in 0..self.devices.len() {
            if let Some(a) = self.sim.address(CtrlId(d)) {
                self.devices[d].address = Some(a);
            }
        }
        let c = self.sim.counters();
        let bad = (c.wild_dma, c.freed_while_dma_possible, c.protocol_errors);
        if bad != self.bad {
            self.bad = bad;
            let log = self.sim.protocol_log();
            self.trace.push(format!(
                "  wild DMA, memory handed back early, protocol errors: {bad:?}: {:?}",
                log.last()
            ));
        }
        let serving: Vec<ControllerId> = self.driver.ready_controllers().collect();
        for id in serving {
            if let Some(m) = self.ids.get_mut(&key(id)) {
                m.1.seen_serving = true;
            }
        }
        let finished: Vec<ControllerId> = self
            .ids
            .values()
            .map(|(id, _)| *id)
            .filter(|&id| {
                self.driver
                    .controller(id)
                    .is_ok_and(|c| c.state().is_finished() && c.undelivered() > 0)
            })
            .collect();
        for id in finished {
            for q in 0..2 {
                self.poll(id, q);
            }
        }
    }

    // ---- commands ----
}
