//! A simulated PCI topology and NVMe controller for host tests of bare-nvme.
//!
//! The simulation implements the driver's boundary traits: [`SimPlatform`]
//! ([`bare_nvme::Platform`]: DMA memory, register mapping, a virtual clock),
//! [`SimRegisters`] ([`bare_nvme::RegisterAccess`]) and [`SimConfig`]
//! ([`pci_types::ConfigRegionAccess`]). Behind them sit a PCI topology (host
//! bridge, PCIe root ports with hot-plug slots, PCI-PCI bridges) and strict NVMe
//! controllers with in-memory namespaces.
//!
//! ```
//! use bare_nvme_sim::{ControllerSpec, NamespaceSpec, PortId, Sim};
//!
//! let sim = Sim::builder()
//!     .root_port(true)
//!     .controller_on_port(
//!         PortId(0),
//!         ControllerSpec::default().serial("sn1").namespace(NamespaceSpec::new(1024, 512)),
//!     )
//!     .root_port(true)
//!     .build();
//! let platform = sim.platform();
//! let config = sim.config_access();
//! # let _ = (platform, config);
//! assert_eq!(sim.counters().protocol_errors, 0);
//! ```
//!
//! Everything is single-threaded: the handles share one `Rc<RefCell<..>>`.
//! Device work happens synchronously inside the access that triggers it
//! (a doorbell write runs the submitted commands), or when the test calls
//! [`Sim::process`] (shadow doorbells) or [`Sim::complete_held`].
//!
//! Physical addresses of DMA memory start at [`ARENA_PHYS_BASE`], far from host
//! virtual addresses: a driver that hands the device a CPU pointer gets a
//! failed command and a `wild_dma` count, not silent success.
//!
//! # How strict the model is
//!
//! [`Counters::protocol_errors`] counts what a correct driver never does; the
//! [`Sim::protocol_log`] says what it was. Among them: doorbell values beyond
//! the queue size, a CQ head passing the posted entries, doorbells for queues
//! that do not exist or while disabled, creating queues with a bad id, size,
//! alignment or memory, deleting a CQ that still has SQs, misaligned PRP
//! entries and list pointers, enabling with a bad CC/AQA/ASQ/ACQ (RDY then
//! never rises), changing CC other than SHN while enabled, writing admin queue
//! registers while enabled, unaligned config or register accesses, a Read or
//! Write without a metadata pointer (MPTR = 0) to a namespace formatted with
//! separate metadata.
//!
//! Device memory accesses outside every live DMA allocation (a CPU pointer,
//! freed memory) are never performed: they count as `wild_dma` and fail the
//! command with Data Transfer Error. With bus mastering off (on the function or
//! a bridge above it) the controller fetches nothing and posts nothing
//! (`dma_blocked`); with memory decoding off, or the BAR outside the windows of
//! the bridges above, register accesses reach nothing (see [`RemovedReads`]).
//!
//! # Memory handed back too early, and the end check
//!
//! A region given to `dma_free` (or returned to its caller by a completion,
//! which the test helpers report with [`Sim::caller_owns`]) while a
//! controller that [`Sim::can_dma`] still references it (its queue rings,
//! shadow doorbell or EventIdx page, or the data and PRP list pages of a
//! command it fetched and has not completed) counts in
//! [`Counters::freed_while_dma_possible`]. A device write into a returned
//! buffer, before a newly fetched command names that memory again, is not
//! performed and counts as `wild_dma` ("write into memory the caller owns").
//!
//! When the last handle on a simulation is dropped (the driver holds
//! platform clones, so this happens after the driver), the simulation
//! checks itself and panics with the log unless: `wild_dma` and
//! `freed_while_dma_possible` are zero, `protocol_errors` is zero (or
//! [`Sim::expect_protocol_errors`] was called), and no DMA region is
//! outstanding (or [`Sim::expect_outstanding`] /
//! [`Sim::expect_quarantined`] was called). [`Sim::unchecked`] turns the
//! check off for harnesses that check by themselves.
//!
//! Config space writes are dword writes with hardware semantics: RW1C status
//! bits (Slot Status, for instance) are cleared by writing back the ones read,
//! so a read-modify-write of Slot Control must write zeroes in the status half.
//!
//! Shadow doorbells (Doorbell Buffer Config) apply to I/O queues; the admin
//! queue always uses MMIO doorbells, as Linux drives it.
//!
//! # Functions described register by register
//!
//! Tests of PCI code that need shapes beyond ports, bridges and controllers
//! (bridge chains of any depth, several functions per device, malformed BARs
//! and capability lists, half-programmed bridges) add functions built from a
//! [`FunctionSpec`] with [`Sim::add_function`], usually to a machine built with
//! `host_bridge(false)` and `firmware_configured(false)`. They are nodes of
//! the same topology, routed the same way; [`Sim::config_writes`] lists the
//! config writes they received.
#![deny(missing_docs)]

mod admin;
mod builder;
mod config;
mod controller;
mod counters;
mod dma_refs;
mod events;
mod function;
mod handles;
mod invariants;
mod io;
mod memory;
mod namespace;
mod pci;
mod prp;
mod queues;
mod sim;
mod spec;
mod state;

pub use builder::SimBuilder;
pub use counters::Counters;
pub use events::LogLie;
pub use function::{ConfigWrite, FunctionId, FunctionSpec, FUNCTION_PCIE_CAP};
pub use handles::{SimConfig, SimPlatform, SimRegisters};
pub use memory::{ARENA_PHYS_BASE, DEFAULT_ARENA_SIZE};
pub use queues::{Misbehaviour, Queues, Rule};
pub use sim::Sim;
pub use spec::{ControllerSpec, Hold, Metadata, NamespaceSpec};

/// The memory range firmware places bridge windows and BARs in, and where a
/// driver assigning resources itself should place them: `(start, end)`,
/// end exclusive. Routing itself does not enforce it.
pub const MMIO_APERTURE: (u64, u64) = (0xC000_0000, 0xF000_0000);

/// A controller, numbered 0, 1, ... in the order controllers were added
/// (builder first, then hot-adds). Stays valid after removal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CtrlId(pub usize);

/// A PCIe root port, numbered 0, 1, ... in the order the builder added them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortId(pub usize);

/// A plain PCI-PCI bridge on bus 0, numbered in the order added.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BridgeId(pub usize);

/// Where a controller sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Location {
    /// Directly on bus 0 (no slot: only re-probing finds hot-adds).
    Bus0,
    /// In a root port's slot (device 0 of its secondary bus).
    Port(PortId),
    /// On the secondary bus of a PCI-PCI bridge (no hot-plug slot).
    Bridge(BridgeId),
}

/// What memory reads of an unclaimed address (a removed device's BAR) return.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RemovedReads {
    /// Zero, as QEMU 7.2 returns.
    #[default]
    Zero,
    /// All-ones, as real PCIe hardware returns (master abort).
    AllOnes,
}

/// Something that happens to the devices just before a given access is
/// served ([`Sim::on_access`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The controller's function vanishes (see [`Sim::surprise_remove`]).
    SurpriseRemove(CtrlId),
    /// CSTS.CFS rises; the controller stops processing until reset.
    SetCfs(CtrlId),
    /// The controller stops processing anything and CSTS.RDY freezes;
    /// registers still read normally.
    Hang(CtrlId),
    /// An NVM subsystem reset happens: power-on registers and CSTS.NSSRO.
    NssrOccurred(CtrlId),
    /// The port's link goes down (and stays down until [`Sim::link_up`]).
    LinkDown(PortId),
    /// A transient glitch of a present, healthy device (see
    /// [`Sim::glitch`]): the next CSTS read returns 0 and the next read of
    /// the function's vendor/device dword returns all-ones.
    Glitch(CtrlId),
    /// The function ignores every config write from now on (see
    /// [`Sim::ignore_config_writes`]).
    IgnoreConfigWrites(CtrlId),
    /// The function loses Memory Space Enable while bus mastering and the
    /// controller keep running (see [`Sim::memory_decoding_off`]).
    MemoryDecodingOff(CtrlId),
    /// The slot reports Presence Detect Changed while nothing changed (see
    /// [`Sim::bounce_presence`]).
    BouncePresence(PortId),
    /// The slot reports Data Link Layer State Changed while the link stays
    /// up (see [`Sim::bounce_link`]).
    BounceLink(PortId),
}
