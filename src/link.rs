//! What a controller can learn about and do to its device without knowing
//! PCI: whether the device is still there, and stopping its DMA with proof.
//!
//! The driver's PCI layer implements [`DeviceLink`] over configuration space
//! ([`crate::PciLink`]); `()` is the implementation for a controller used on
//! its own, which can only stop DMA by disabling the controller.

/// What the device's configuration space says about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presence {
    /// The function the driver configured is there and decodes its registers.
    Present,
    /// A function answers, but memory decoding is off: it was reset behind
    /// the driver's back (a link flap, a slot power cycle, a swapped card).
    /// The controller the driver knew is gone, yet the function may still
    /// be able to reach memory.
    Reset,
    /// Nothing answers, on two reads in a row (one silent read is a glitch).
    Absent,
}

/// How the driver established that a device can no longer reach memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DmaStop {
    /// The device is gone: configuration space does not answer and the slot
    /// above says empty or powered off, or the link down (without a slot or
    /// link to ask: it stayed silent on two reads in a row).
    Gone,
    /// Bus mastering was switched off and read back off.
    BusMasterOff,
    /// CC.EN = 0 was written and CSTS.RDY = 0 seen, with CAP reading back
    /// intact (so the register reads reached the controller).
    Disabled,
}

/// A controller's view of its device at the platform boundary.
pub trait DeviceLink {
    /// What configuration space says about the device now.
    fn presence(&self) -> Presence;

    /// Tries to make the device unable to reach memory without the
    /// controller's help: turns bus mastering off and reads it back.
    /// Returns the proof (`Gone` or `BusMasterOff`), or `None` when none
    /// could be established (the function ignores the write, or is silent
    /// while its slot and link say it is there, or there is no config space).
    fn stop_dma(&self) -> Option<DmaStop>;

    /// Lets the device reach memory (turns bus mastering on), called once
    /// the controller was seen disabled, just before it gets its queues: a
    /// controller still enabled from an earlier attach must not reach
    /// memory returned since. Returns whether the device can do DMA now.
    /// The default does nothing: the embedder enabled bus mastering.
    fn allow_dma(&self) -> bool {
        true
    }
}

/// A controller used on its own: always present, and DMA stops only by
/// disabling the controller (CC.EN = 0, then CSTS.RDY = 0).
impl DeviceLink for () {
    fn presence(&self) -> Presence {
        Presence::Present
    }

    fn stop_dma(&self) -> Option<DmaStop> {
        None
    }
}
