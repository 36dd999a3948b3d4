//! What a root port's hot-plug slot models beyond presence: a power
//! controller, Command Completed latency, link training and readiness
//! delays, a manually operated retention latch (MRL) sensor.

use std::time::Duration;

/// A root port's slot, for [`crate::SimBuilder::slot`]. The default is the
/// slot [`crate::SimBuilder::root_port`] builds: hot-plug capable, no power
/// controller, Command Completed and the link at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotSpec {
    /// Slot Capabilities Hot-Plug Capable.
    pub hot_plug: bool,
    /// Slot Capabilities Power Controller Present: an empty slot is off at
    /// build, a card in it stays dark (config reads all-ones) until software
    /// clears Slot Control's Power Controller Control.
    pub power_controller: bool,
    /// A card plugged in at build is left unpowered (no firmware ran).
    pub unpowered: bool,
    /// Time from a Slot Control write to Command Completed.
    pub command_latency: Duration,
    /// Slot Capabilities No Command Completed Support: Command Completed is
    /// never set.
    pub no_command_completed: bool,
    /// Time from power-on (or insertion into a powered slot) to Data Link
    /// Layer Link Active.
    pub link_training: Duration,
    /// After power-on the link never comes up.
    pub link_never_up: bool,
    /// After the link came up, how long the function answers configuration
    /// reads with Retry Status (vendor ID 0x0001 when the root port has CRS
    /// Software Visibility enabled, all-ones otherwise).
    pub crs: Duration,
    /// Slot Capabilities MRL Sensor Present.
    pub mrl_sensor: bool,
    /// A card plugged in at build is still initialising: it answers Retry
    /// Status for [`SlotSpec::crs`] from the start (by default a card there
    /// finished during firmware time).
    pub booting: bool,
    /// A card stays in the slot when software switches power and power
    /// indicator off, as on real hardware; by default the slot deletes it
    /// then, as QEMU does (its unplug).
    pub keeps_card: bool,
    /// The port has the Downstream Port Containment capability
    /// ([`crate::Sim::contain`]).
    pub dpc: bool,
}

impl Default for SlotSpec {
    fn default() -> Self {
        Self {
            hot_plug: true,
            power_controller: false,
            unpowered: false,
            command_latency: Duration::ZERO,
            no_command_completed: false,
            link_training: Duration::ZERO,
            link_never_up: false,
            crs: Duration::ZERO,
            mrl_sensor: false,
            booting: false,
            dpc: false,
            keeps_card: false,
        }
    }
}

impl SlotSpec {
    /// A slot with a power controller, as QEMU's default `pcie-root-port`
    /// and most server slots: Command Completed at once, link up at once.
    pub fn powered() -> Self {
        Self {
            power_controller: true,
            ..Self::default()
        }
    }

    /// With Command Completed `latency` after each Slot Control write.
    pub fn command_latency(mut self, latency: Duration) -> Self {
        self.command_latency = latency;
        self
    }

    /// Without Command Completed support.
    pub fn no_command_completed(mut self) -> Self {
        self.no_command_completed = true;
        self
    }

    /// With link training taking `time`.
    pub fn link_training(mut self, time: Duration) -> Self {
        self.link_training = time;
        self
    }

    /// With a link that never comes up.
    pub fn link_never_up(mut self) -> Self {
        self.link_never_up = true;
        self
    }

    /// With the function answering Retry Status for `time` after link-up.
    pub fn crs(mut self, time: Duration) -> Self {
        self.crs = time;
        self
    }

    /// With a card plugged in at build left unpowered.
    pub fn unpowered(mut self) -> Self {
        self.unpowered = true;
        self
    }

    /// With the card staying in a switched-off slot (real hardware).
    pub fn keeps_card(mut self) -> Self {
        self.keeps_card = true;
        self
    }

    /// With Downstream Port Containment.
    pub fn dpc(mut self) -> Self {
        self.dpc = true;
        self
    }

    /// With a card at build still answering Retry Status.
    pub fn booting(mut self) -> Self {
        self.booting = true;
        self
    }

    /// With an MRL sensor.
    pub fn mrl_sensor(mut self) -> Self {
        self.mrl_sensor = true;
        self
    }
}
