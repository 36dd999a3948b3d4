//! What the tick reports: each lifecycle change of an entry exactly once,
//! in order, and what follows from a controller's end (its function parked
//! or released, its serial remembered to recognise the device coming back).

use log::{info, warn};
use pci_types::{ConfigRegionAccess, PciAddress};

use crate::driver::entry::Events;
use crate::driver::Driver;
use crate::event::{ControllerId, Event};
use crate::nvme::State;
use crate::platform::Platform;
use crate::spec::identify::IdString;

impl<
        P: Platform + Clone,
        C: ConfigRegionAccess + Clone,
        const N: usize,
        const QUEUES: usize,
        const DEPTH: usize,
    > Driver<P, C, N, QUEUES, DEPTH>
{
    /// Emits what changed for entry `index`, each change once and in order
    /// (attached, ready, notices, end, quarantine). An event that does not
    /// fit waits for the next tick, and so does everything after it.
    pub(crate) fn report(&mut self, index: usize, events: &mut Events) {
        let history = &self.history;
        let Some(entry) = self.entries[index].as_mut() else {
            return;
        };
        // The history keeps one entry per serial, its latest identity.
        let previous =
            |serial: &IdString<20>| history.iter().find(|(s, _)| s == serial).map(|&(_, p)| p);
        if !(entry.report_attached(events)
            && entry.report_ready(events, previous)
            && entry.report_notices(events))
            || entry.report_quarantine(events)
        {
            return;
        }
        let state = entry.controller().state();
        if let Some(end) = entry.report_end(events) {
            let (address, serial) = (entry.address(), entry.serial());
            self.ended(end, state, address, serial);
        }
    }

    /// What follows from a controller's reported end (`Removed` or
    /// `Failed`, in `state`): its serial is remembered, and its function
    /// parked when it is still there (detached, or given up) or released
    /// when it is gone.
    fn ended(
        &mut self,
        end: Event,
        state: State,
        address: PciAddress,
        serial: Option<IdString<20>>,
    ) {
        let id = match end {
            Event::Removed {
                id,
                failed_commands,
                detected_by,
            } => {
                info!("nvme: {id} removed ({detected_by:?}), {failed_commands} commands failed");
                id
            }
            Event::Failed { id, error } => {
                warn!("nvme: {id} failed: {error}");
                id
            }
            _ => return,
        };
        if let Some(serial) = serial {
            self.remember(serial, id);
        }
        if matches!(state, State::Detached | State::Failed) {
            // Detached, or given up (a failed detach included): not gone.
            // Keep its BAR range and do not attach it again until it leaves,
            // is reset behind the driver (a slot event, a power cycle), or
            // the embedder scans again: a device that keeps failing is not
            // retried in an endless loop of attaches.
            self.pci.park(address);
        } else {
            self.release_function(address);
        }
    }

    /// Records that the device with `serial` was last `id`. One entry per
    /// serial, naming its latest controller: a device removed again and
    /// again must neither crowd out the others nor be reported as returning
    /// from an older attach.
    fn remember(&mut self, serial: IdString<20>, id: ControllerId) {
        self.history.retain(|(s, _)| *s != serial);
        if self.history.is_full() {
            self.history.pop_front();
        }
        let _ = self.history.push_back((serial, id));
    }
}
