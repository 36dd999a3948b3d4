//! What the harness knows about the commands it submitted and the events it
//! was told, checked as they arrive: every command completes once, every
//! attached controller reports one end.

use std::collections::HashMap;

use bare_nvme::{Completion, ControllerId, DmaRegion, Event, QueueId};
use bare_nvme_sim::Sim;

use crate::{tracing, FuzzDriver};

/// What the harness knows about the commands it submitted and the events
/// it was told.
pub(crate) struct Ledger {
    pub(crate) sim: Sim,
    pub(crate) next_tag: u64,
    /// Submitted, not yet delivered: which controller has them.
    pub(crate) outstanding: HashMap<u64, ControllerId>,
    pub(crate) delivered: u64,
    /// Successful deliveries per tag (for the recovery check).
    pub(crate) succeeded: Vec<u64>,
    /// Buffers handed back, to be freed at the end.
    pub(crate) returned: Vec<DmaRegion>,
    pub(crate) attached: Vec<ControllerId>,
    pub(crate) ended: Vec<ControllerId>,
    /// Regions the driver declared quarantined, per controller.
    pub(crate) quarantined: HashMap<ControllerId, u32>,
    /// Blocking-I/O buffers the driver refused with `Error::Quarantined`:
    /// kept for good, as the driver asks.
    pub(crate) kept: u32,
}

impl Ledger {
    pub(crate) fn new(sim: &Sim) -> Ledger {
        Ledger {
            sim: sim.clone(),
            next_tag: 0,
            outstanding: HashMap::new(),
            delivered: 0,
            succeeded: Vec::new(),
            returned: Vec::new(),
            attached: Vec::new(),
            ended: Vec::new(),
            quarantined: HashMap::new(),
            kept: 0,
        }
    }

    pub(crate) fn tag(&mut self) -> u64 {
        self.next_tag += 1;
        self.next_tag
    }

    /// A buffer is the caller's again (the sim checks that the device can
    /// no longer write it); freed at the end.
    pub(crate) fn give_back(&mut self, buffer: Option<DmaRegion>) {
        if let Some(buffer) = buffer {
            self.sim.caller_owns(&buffer);
            self.returned.push(buffer);
        }
    }

    pub(crate) fn delivered(&mut self, id: ControllerId, done: Completion) {
        let tag = done.tag;
        if tracing() {
            let at = done.buffer.as_ref().map(|b| b.phys().as_u64());
            eprintln!("delivered {tag} {:?} buffer {at:#x?}", done.result);
        }
        assert_eq!(
            self.outstanding.remove(&tag),
            Some(id),
            "command {tag} completed twice, on the wrong controller, or was never submitted"
        );
        self.delivered += 1;
        if done.result.is_ok() {
            self.succeeded.push(tag);
        }
        self.give_back(done.buffer);
    }

    pub(crate) fn events(&mut self, events: &[Event]) {
        for e in events {
            if tracing() {
                eprintln!("event {e:?}");
            }
            match *e {
                Event::Attached { id, .. } => {
                    assert!(
                        !self.attached.contains(&id),
                        "{id:?} attached twice: {events:?}"
                    );
                    self.attached.push(id);
                }
                Event::Removed { id, .. } | Event::Failed { id, .. } => {
                    assert!(
                        !self.ended.contains(&id),
                        "{id:?} reported its end twice: {events:?}"
                    );
                    self.ended.push(id);
                }
                Event::Quarantined { id, regions, .. } => {
                    assert!(
                        self.ended.contains(&id),
                        "{id:?} quarantined before its end was reported: {events:?}"
                    );
                    assert!(
                        self.quarantined.insert(id, regions).is_none(),
                        "{id:?} reported quarantine twice: {events:?}"
                    );
                }
                Event::Health { id, .. }
                | Event::NamespaceAdded { id, .. }
                | Event::NamespaceRemoved { id, .. } => {
                    assert!(
                        self.attached.contains(&id) && !self.ended.contains(&id),
                        "{id:?}: a controller's own report outside its life: {events:?}"
                    );
                }
                Event::Ready { .. } | Event::Returned { .. } | Event::SlotFault { .. } => {}
            }
        }
    }
}

pub(crate) fn poll_all(driver: &mut FuzzDriver, ledger: &mut Ledger) {
    let ids: Vec<ControllerId> = driver.controllers().collect();
    for id in ids {
        let Ok(c) = driver.controller(id) else {
            continue;
        };
        for q in 0..c.io_queue_count() {
            c.poll(QueueId::new(q), |done| ledger.delivered(id, done));
        }
    }
}

pub(crate) fn tick(driver: &mut FuzzDriver, ledger: &mut Ledger) {
    let events = driver.tick();
    ledger.events(&events);
}
