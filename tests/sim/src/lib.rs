//! A simulated PCI topology and NVMe controller, to test a bare-nvme
//! embedding on the host: your firmware's storage code, its tick loop and
//! its handling of removal, run against a strict device model that counts
//! every access and catches what a correct driver (and embedder) never does.
//!
//! The simulation implements the driver's boundary traits: [`SimPlatform`]
//! ([`bare_nvme::Platform`]: DMA memory, register mapping, a virtual clock),
//! [`SimRegisters`] ([`bare_nvme::RegisterAccess`]) and [`SimConfig`]
//! ([`pci_types::ConfigRegionAccess`](https://docs.rs/pci_types/0.10/pci_types/trait.ConfigRegionAccess.html)). Behind them sit a PCI topology (host
//! bridge, PCIe root ports with hot-plug slots, PCI-PCI bridges) and strict NVMe
//! controllers with in-memory namespaces.
//!
//! # Your embedding against the simulated device
//!
//! Hand the driver the simulation's platform and configuration access where
//! your firmware hands it the real ones; everything else is your code:
//!
//! ```
//! use std::time::Duration;
//!
//! use bare_nvme::{Driver, DriverConfig, Platform};
//! use bare_nvme_sim::{ControllerSpec, CtrlId, NamespaceSpec, Sim};
//!
//! // One hot-plug slot holding a controller with one namespace of 2048
//! // blocks of 512 bytes.
//! let sim = Sim::single(
//!     ControllerSpec::default().serial("sn1").namespace(NamespaceSpec::new(2048, 512)),
//! );
//! let platform = sim.platform();
//! // The driver holds fixed tables of some 400 KiB: on the heap in a test.
//! let mut driver = Box::new(Driver::<_, _>::new(
//!     sim.platform(),
//!     sim.config_access(),
//!     DriverConfig::default(),
//! ));
//! driver.scan().unwrap();
//! let _ = driver.wait_ready(Duration::from_secs(5));
//! let id = driver.ready_controllers().next().expect("controller ready");
//!
//! // The code under test: write a block.
//! let mut buffer = platform.dma_alloc(512, 4096).unwrap();
//! buffer.as_mut_slice().fill(0xA5);
//! driver.controller(id).unwrap().write(1, 7, &buffer).unwrap();
//! platform.dma_free(buffer);
//!
//! // What the device saw.
//! assert_eq!(sim.read_block(CtrlId(0), 1, 7), [0xA5; 512]);
//! let counters = sim.counters();
//! assert_eq!(counters.protocol_errors, 0, "{:?}", sim.protocol_log());
//! assert_eq!(counters.wild_dma, 0);
//! // Dropping the driver stops the controller and returns its memory; the
//! // simulation then checks that nothing is left outstanding.
//! ```
//!
//! # Removal with commands in flight
//!
//! [`Sim::hold`] makes the controller fetch I/O commands without completing
//! them, so they are in flight when [`Sim::surprise_remove`] empties the
//! slot. The embedder's tick sees the removal; every command completes
//! exactly once with [`bare_nvme::Error::DeviceRemoved`] and hands its
//! buffer back, and all the driver's DMA memory returns:
//!
//! ```
//! use std::time::Duration;
//!
//! use bare_nvme::{Driver, DriverConfig, Error, Event, IoOp, Platform, QueueId};
//! use bare_nvme_sim::{ControllerSpec, CtrlId, Hold, NamespaceSpec, Sim};
//!
//! let sim = Sim::single(ControllerSpec::default().namespace(NamespaceSpec::new(2048, 512)));
//! let platform = sim.platform();
//! let mut driver = Box::new(Driver::<_, _>::new(
//!     sim.platform(),
//!     sim.config_access(),
//!     DriverConfig::default(),
//! ));
//! driver.scan().unwrap();
//! let _ = driver.wait_ready(Duration::from_secs(5));
//! let id = driver.ready_controllers().next().unwrap();
//!
//! // Four reads the device fetches but does not complete.
//! sim.hold(CtrlId(0), Hold::Io);
//! let nvme = driver.controller(id).unwrap();
//! for tag in 0..4 {
//!     let buffer = platform.dma_alloc(4096, 4096).unwrap();
//!     let read = IoOp::Read { nsid: 1, lba: tag * 8, blocks: 8 };
//!     let _ = nvme.submit(QueueId::FIRST, read, Some(buffer), tag).unwrap();
//! }
//! nvme.ring_doorbells();
//! sim.process(); // the device reads shadow doorbells in its own time
//! assert_eq!(sim.held_count(), 4);
//!
//! // The slot empties; the embedder's tick loop notices.
//! sim.surprise_remove(CtrlId(0));
//! let mut failed = None;
//! for _ in 0..1000 {
//!     sim.advance(Duration::from_millis(1));
//!     for event in driver.tick() {
//!         if let Event::Removed { failed_commands, .. } = event {
//!             failed = Some(failed_commands);
//!         }
//!     }
//!     if failed.is_some() {
//!         break;
//!     }
//! }
//! assert_eq!(failed, Some(4));
//!
//! // Each command completes once, with its buffer.
//! let mut done = Vec::new();
//! driver.controller(id).unwrap().poll(QueueId::FIRST, |c| done.push(c));
//! assert_eq!(done.len(), 4);
//! for completion in done {
//!     assert_eq!(completion.result, Err(Error::DeviceRemoved));
//!     let buffer = completion.buffer.expect("buffer handed back");
//!     // Tell the model the caller owns it again: a device write into it
//!     // from now on would count as wild DMA.
//!     sim.caller_owns(&buffer);
//!     platform.dma_free(buffer);
//! }
//! // Nothing the driver allocated is outstanding, nothing went astray.
//! let counters = sim.counters();
//! assert_eq!((counters.dma_regions, counters.wild_dma), (0, 0));
//! assert_eq!(counters.freed_while_dma_possible, 0);
//! ```
//!
//! Other faults work the same way, at once or just before a chosen access
//! ([`Sim::on_access`] with a [`Fault`]): a hang, fatal status, a link
//! down, a glitch, memory decoding switched off behind the driver, lost,
//! duplicated or invented completions ([`Sim::misbehave`]), media errors
//! ([`Sim::fail_reads`]), a power loss that drops unflushed writes
//! ([`Sim::power_loss`]).
//!
//! The handles share one `Arc<Mutex<..>>`, so a driver may use them from
//! several threads (one queue per thread); each access holds the lock.
//! Device work happens synchronously inside the access that triggers it
//! (a doorbell write runs the submitted commands), or when the test calls
//! [`Sim::process`] (shadow doorbells) or [`Sim::complete_held`].
//!
//! Physical addresses of DMA memory start at [`ARENA_PHYS_BASE`], far from host
//! virtual addresses: a driver that hands the device a CPU pointer gets a
//! failed command and a `wild_dma` count, not silent success.
//!
//! # A controller without the driver
//!
//! A [`bare_nvme::Controller`] used on its own needs what firmware gives
//! it: memory decoding and bus mastering on, BAR0 mapped, and the BAR's
//! length (registers, doorbells and the MSI-X table all lie in it). A
//! simulated controller's BAR0 is [`DEFAULT_BAR_SIZE`] (16 KiB) unless its
//! spec says otherwise ([`ControllerSpec::bar_size`]); [`Sim::bar`] says
//! where it is and [`Sim::bar_len`] how long:
//!
//! ```
//! use bare_nvme::pci::config::{Command, ConfigSpace};
//! use bare_nvme::{Controller, ControllerConfig, PhysAddr, Platform, State};
//! use bare_nvme_sim::{ControllerSpec, CtrlId, NamespaceSpec, Sim, DEFAULT_BAR_SIZE};
//!
//! let sim = Sim::single(ControllerSpec::default().namespace(NamespaceSpec::new(2048, 512)));
//! let ctrl = CtrlId(0);
//! assert_eq!(sim.bar_len(ctrl), DEFAULT_BAR_SIZE);
//! // What firmware would have done: decoding and bus mastering on.
//! let access = sim.config_access();
//! let address = sim.address(ctrl).unwrap();
//! ConfigSpace::new(&access, address)
//!     .update_command(Command::MEMORY | Command::BUS_MASTER, Command::empty());
//!
//! let platform = sim.platform();
//! let len = sim.bar_len(ctrl) as usize;
//! let regs = platform.map_registers(PhysAddr::new(sim.bar(ctrl)), len).unwrap();
//! // `()`: no link to the device beyond its registers (see `bare_nvme::DeviceLink`).
//! let mut nvme: Controller<_> = Controller::new(platform, (), regs, len, ControllerConfig::new());
//! nvme.bring_up().unwrap();
//! assert_eq!(nvme.state(), State::Ready);
//! ```
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
mod slot;
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
pub use slot::SlotSpec;
pub use spec::{ControllerSpec, Hold, Metadata, NamespaceSpec, DEFAULT_BAR_SIZE};

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
