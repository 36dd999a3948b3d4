//! The driver's table of attached controllers: attaching, recycling finished
//! entries, and lookups.

use log::info;
use pci_types::{ConfigRegionAccess, PciAddress};

use crate::driver::{Driver, DriverController};
use crate::error::{Error, Result};
use crate::event::{ControllerId, Detection};
use crate::nvme::identify::IdString;
use crate::nvme::{Controller, State};
use crate::pci::link::PciLink;
use crate::platform::Platform;

/// What has been reported about an entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Reported {
    pub(super) attached: bool,
    pub(super) ready: bool,
    pub(super) ended: bool,
    pub(super) quarantined: bool,
}

/// One attached controller and what the driver knows and reported of it.
pub(crate) struct Entry<P: Platform, C: ConfigRegionAccess, const QUEUES: usize, const DEPTH: usize>
{
    pub(crate) id: ControllerId,
    pub(crate) address: PciAddress,
    /// Index of the hot-plug port above it, if any.
    pub(crate) port: Option<usize>,
    pub(crate) controller: DriverController<P, C, QUEUES, DEPTH>,
    /// `completions_seen` at the last tick: if it moved, the device is alive.
    pub(super) last_seen: u64,
    pub(super) reported: Reported,
    pub(super) detection: Option<Detection>,
    pub(super) serial: Option<IdString<20>>,
}

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
        port: Option<usize>,
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
            .and_then(|i| self.pci.topology.bridges().get(i))
            .and_then(|b| b.port);
        let link = PciLink::new(self.access.clone(), address, above);
        let controller = Controller::new(
            self.platform.clone(),
            link,
            regs,
            len,
            self.config.controller,
        );
        info!("nvme: {id} attached at {address}, BAR0 {:#x}", bar.as_u64());
        self.entries[index] = Some(Entry {
            id,
            address,
            port,
            controller,
            last_seen: 0,
            reported: Reported::default(),
            detection: None,
            serial: None,
        });
        Ok(id)
    }

    /// A free entry, recycling the oldest finished one if needed. Buffers of
    /// undelivered completions of a recycled entry go back to the platform.
    pub(crate) fn free_entry(&mut self) -> Result<usize> {
        if let Some(i) = self.entries.iter().position(|e| e.is_none()) {
            return Ok(i);
        }
        // Reuse a finished entry: one whose failed commands were all collected
        // first, the oldest among equals, so a caller still collecting from a
        // removed controller keeps its handle as long as possible.
        let finished = self
            .entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| {
                let e = e.as_ref()?;
                // A quarantine not yet reported would be lost with the entry.
                let quarantine_told =
                    e.reported.quarantined || e.controller.quarantined().regions == 0;
                let done =
                    e.reported.ended && quarantine_told && e.controller.state().is_finished();
                done.then_some((e.controller.undelivered() > 0, e.id.generation, i))
            })
            .min()
            .map(|(_, _, i)| i);
        match finished {
            Some(i) => {
                self.entries[i] = None;
                Ok(i)
            }
            None => Err(Error::CapacityExceeded {
                what: "controllers",
                limit: N as u32,
            }),
        }
    }

    /// Entries behind hot-plug port `port`.
    pub(crate) fn entries_on_port(&self, port: usize) -> impl Iterator<Item = usize> + '_ {
        self.entries
            .iter()
            .enumerate()
            .filter(move |(_, e)| e.as_ref().is_some_and(|e| e.port == Some(port)))
            .map(|(i, _)| i)
    }

    pub(crate) fn address_of(&self, index: usize) -> PciAddress {
        self.entries[index]
            .as_ref()
            .map_or(PciAddress::new(0, 0, 0, 0), |e| e.address)
    }

    /// Whether entry `index` holds a controller that is neither finished nor
    /// being stopped.
    pub(crate) fn is_live(&self, index: usize) -> bool {
        self.entries[index].as_ref().is_some_and(|e| {
            let state = e.controller.state();
            !state.is_finished() && state != State::Stopping
        })
    }

    /// Whether a live (not finished) controller sits at `address`.
    pub(crate) fn is_attached(&self, address: PciAddress) -> bool {
        self.entries
            .iter()
            .flatten()
            .any(|e| e.address == address && !e.controller.state().is_finished())
    }

    /// Surprise removal of entry `index`, noticed by `how`.
    pub(crate) fn remove_entry(&mut self, index: usize, how: Detection) {
        if let Some(entry) = self.entries[index].as_mut() {
            entry.detection.get_or_insert(how);
            entry.controller.remove();
        }
    }

    /// Orderly removal of entry `index` (attention button).
    pub(crate) fn detach_entry(&mut self, index: usize) {
        if let Some(entry) = self.entries[index].as_mut() {
            entry.detection.get_or_insert(Detection::Orderly);
            entry.controller.begin_detach();
        }
    }
}
