//! The simulated machine as the script sees it.

use bare_nvme_sim::{ControllerSpec, CtrlId, PortId, Sim};

use crate::device::FuzzPlatform;

/// The simulated machine as the script sees it.
pub(crate) struct Rig {
    pub(crate) sim: Sim,
    pub(crate) platform: FuzzPlatform,
    /// Hot-plug root ports (none: the controller sits on bus 0).
    pub(crate) ports: usize,
    /// Every controller ever plugged in, with its port.
    pub(crate) ctrls: Vec<(CtrlId, Option<PortId>)>,
    /// For hot-added controllers.
    pub(crate) spec: ControllerSpec,
    /// Ports whose link the script took down.
    pub(crate) down: Vec<PortId>,
    /// A device was reset behind the driver's back (power loss, link
    /// down): until the driver notices, its doorbell writes reach a
    /// disabled controller, which the sim counts as protocol errors.
    pub(crate) reset_behind: bool,
}

impl Rig {
    pub(crate) fn ctrl(&self, pick: u8) -> CtrlId {
        self.ctrls[usize::from(pick) % self.ctrls.len()].0
    }

    pub(crate) fn port(&self, pick: u8) -> Option<PortId> {
        (self.ports > 0).then(|| PortId(usize::from(pick) % self.ports))
    }
}
