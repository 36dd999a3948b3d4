//! The driver's table of attached controllers: attaching, recycling finished
//! entries (never one with failed commands not yet polled), lookups, and starting a removal or a detach.

use log::{info, warn};
use pci_types::{ConfigRegionAccess, PciAddress};

use crate::driver::entry::Entry;
use crate::driver::monitor::BridgeId;
use crate::driver::Driver;
use crate::error::{Error, Result};
use crate::event::{ControllerId, Detection};
use crate::nvme::{Completion, Controller, QueueId, State};
use crate::pci::link::PciLink;
use crate::platform::Platform;

/// Every entry is taken, some by removed controllers whose failed commands
/// wait for the embedder's `poll`: an attach waits until they are collected.
pub(crate) const WAITING_FOR_POLL: Error = Error::CapacityExceeded {
    what: "controllers (a removed controller's failed commands wait for its poll)",
    limit: 0,
};

impl<
        P: Platform + Clone,
        C: ConfigRegionAccess + Clone,
        const N: usize,
        const QUEUES: usize,
        const DEPTH: usize,
    > Driver<P, C, N, QUEUES, DEPTH>
{
    /// Attaches the NVMe function at `address` (BAR placed and enabled) as a
    /// new controller; bring-up starts at the next tick.
    pub(crate) fn attach(
        &mut self,
        address: PciAddress,
        port: Option<BridgeId>,
    ) -> Result<ControllerId> {
        let index = self.free_entry()?;
        let (bar, len) = self.enable_function(address, port)?;
        let regs = self
            .platform
            .map_registers(bar, len)
            .ok_or(Error::MapFailed { addr: bar.as_u64() })?;
        self.generation = self.generation.wrapping_add(1);
        let id = ControllerId {
            index: index as u8,
            generation: self.generation,
        };
        let above = port
            .and_then(|b| b.find(&self.pci.topology))
            .and_then(|(_, b)| b.port);
        let link = PciLink::new(self.access.clone(), address, above);
        let controller = Controller::new(
            self.platform.clone(),
            link,
            regs,
            len,
            self.config.controller,
        );
        info!("nvme: {id} attached at {address}, BAR0 {:#x}", bar.as_u64());
        self.entries[index] = Some(Entry::new(id, address, port, controller));
        Ok(id)
    }

    /// A free entry, recycling the oldest finished one if needed. An entry
    /// whose failed commands were not all collected by `poll` is never
    /// recycled (they would be lost): while only such entries are left, the
    /// attach waits ([`WAITING_FOR_POLL`]); the slot or bus monitor tries
    /// again on its next poll.
    pub(crate) fn free_entry(&mut self) -> Result<usize> {
        if let Some(i) = self.entries.iter().position(|e| e.is_none()) {
            self.warned_waiting = false;
            return Ok(i);
        }
        let mut waiting = false;
        let finished = self
            .entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| {
                let e = e.as_ref().filter(|e| e.is_done())?;
                if e.controller().undelivered() > 0 {
                    waiting = true;
                    return None;
                }
                Some((e.id().generation, i))
            })
            .min()
            .map(|(_, i)| i);
        match finished {
            Some(i) => {
                self.entries[i] = None;
                self.warned_waiting = false;
                Ok(i)
            }
            None if waiting => Err(WAITING_FOR_POLL),
            None => Err(Error::CapacityExceeded {
                what: "controllers",
                limit: N as u32,
            }),
        }
    }

    /// Collects the failed commands of every controller whose end was
    /// reported ([`Event::Removed`](crate::Event::Removed), `Failed`, and a
    /// `Quarantined` that followed), handing each to `on_complete` with its
    /// controller's id (free or reuse its buffer there). Returns how many it
    /// delivered.
    ///
    /// A table entry is reused only once its controller's failed commands
    /// were collected (they would be lost otherwise), so while every entry
    /// holds an ended controller nobody polled, a controller plugged in
    /// waits, with one warning in the log. An embedder that does not poll a
    /// removed controller's queues itself calls this after each `Removed`:
    /// the entries can then be reused (and their ids go stale), and a
    /// controller that waited is attached on the next slot or bus poll.
    pub fn collect_finished(
        &mut self,
        mut on_complete: impl FnMut(ControllerId, Completion),
    ) -> usize {
        let mut delivered = 0;
        for entry in self.entries.iter_mut().flatten().filter(|e| e.is_done()) {
            let id = entry.id();
            let controller = entry.controller_mut();
            for queue in 0..QUEUES as u16 {
                delivered += controller.poll(QueueId::new(queue), |c| on_complete(id, c));
            }
        }
        if delivered > 0 {
            info!("nvme: {delivered} failed commands of ended controllers collected");
        }
        delivered
    }

    /// An attach found every entry held by a controller whose failed
    /// commands were not collected: said once at warning level until an
    /// entry is free again, because the device waits until then.
    pub(crate) fn note_waiting_for_poll(&mut self, address: PciAddress) {
        if self.warned_waiting {
            log::debug!("nvme: {address} waits for a table entry");
            return;
        }
        self.warned_waiting = true;
        warn!(
            "nvme: {address} waits for a table entry: every entry holds an ended controller \
             whose failed commands were not polled (Driver::collect_finished frees them)"
        );
    }

    /// Entries directly behind bridge `port`.
    pub(crate) fn entries_on_port(&self, port: BridgeId) -> impl Iterator<Item = usize> + '_ {
        self.entries
            .iter()
            .enumerate()
            .filter(move |(_, e)| e.as_ref().is_some_and(|e| e.port() == Some(port)))
            .map(|(i, _)| i)
    }

    pub(crate) fn address_of(&self, index: usize) -> PciAddress {
        self.entries[index]
            .as_ref()
            .map_or(PciAddress::new(0, 0, 0, 0), |e| e.address())
    }

    /// Whether entry `index` holds a controller that is neither finished nor
    /// being stopped.
    pub(crate) fn is_live(&self, index: usize) -> bool {
        self.entries[index].as_ref().is_some_and(|e| {
            let state = e.controller().state();
            !state.is_finished() && state != State::Stopping
        })
    }

    /// Whether a live (not finished) controller sits at `address`.
    pub(crate) fn is_attached(&self, address: PciAddress) -> bool {
        self.entries
            .iter()
            .flatten()
            .any(|e| e.address() == address && !e.controller().state().is_finished())
    }

    /// Surprise removal of entry `index`, noticed by `how`.
    pub(crate) fn remove_entry(&mut self, index: usize, how: Detection) {
        if let Some(entry) = self.entries[index].as_mut() {
            entry.note_detection(how);
            entry.controller_mut().remove();
        }
    }

    /// Orderly removal of entry `index` (attention button).
    pub(crate) fn detach_entry(&mut self, index: usize) {
        if let Some(entry) = self.entries[index].as_mut() {
            entry.note_detection(Detection::Orderly);
            entry.controller_mut().begin_detach();
        }
    }
}
