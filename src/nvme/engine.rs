//! The controller's lifecycle code that also runs while its queues are
//! shared: a view of the shared part (read-only) and the owned part
//! (exclusive). Health checks, command deadlines, resets up to the disable
//! proof, and teardowns are written against it, so the exclusive owner and
//! the monitor of a share run the same code.

use core::time::Duration;

use crate::link::DeviceLink;
use crate::nvme::controller::{Controller, Owned};
use crate::nvme::regs::Csts;
use crate::nvme::shared::Shared;
use crate::platform::{Instant, Platform};

/// The shared part read-only, the owned part exclusive.
pub(crate) struct Engine<'a, P: Platform, L, const QUEUES: usize, const DEPTH: usize> {
    pub(crate) shared: &'a Shared<P, QUEUES, DEPTH>,
    pub(crate) owned: &'a mut Owned<L>,
}

impl<P: Platform, L: DeviceLink, const QUEUES: usize, const DEPTH: usize>
    Controller<P, L, QUEUES, DEPTH>
{
    /// The lifecycle code's view of this controller.
    pub(crate) fn engine(&mut self) -> Engine<'_, P, L, QUEUES, DEPTH> {
        Engine {
            shared: &self.shared,
            owned: &mut self.owned,
        }
    }
}

impl<P: Platform, L: DeviceLink, const QUEUES: usize, const DEPTH: usize>
    Engine<'_, P, L, QUEUES, DEPTH>
{
    pub(crate) fn now(&self) -> Instant {
        self.shared.now()
    }

    pub(crate) fn read_status(&self) -> Csts {
        self.shared.read_status()
    }

    pub(crate) fn ready_timeout(&self) -> Duration {
        self.shared.ready_timeout()
    }

    /// Sets the gate of shared queues to what the lifecycle says now.
    pub(crate) fn sync_gate(&self) {
        let (phase, refusal) = self.owned.lifecycle.gate();
        self.shared.gate.set(phase, refusal);
    }
}
