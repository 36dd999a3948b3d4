//! What a simulated controller and its namespaces look like: builders with the
//! defaults of QEMU 7.2's nvme device and knobs for everything a test varies.

use std::time::Duration;

use bare_nvme::spec::identify::csi;

/// Which completions the controller keeps back until the test releases them
/// (see [`crate::Sim::complete_held`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Hold {
    /// Every command completes inside the doorbell write that submitted it.
    #[default]
    None,
    /// I/O commands are held; admin commands complete at once.
    Io,
    /// All commands are held, admin ones too.
    All,
}

/// Where a namespace's per-block metadata travels (Identify Namespace
/// FLBAS bit 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metadata {
    /// In a separate buffer named by the command's MPTR (FLBAS bit 4 = 0).
    Separate(u16),
    /// Inline after each block's data, an extended LBA (FLBAS bit 4 = 1):
    /// every block transfers `block_size + n` bytes.
    Extended(u16),
}

impl Metadata {
    /// Metadata bytes per block.
    pub fn size(self) -> u16 {
        match self {
            Metadata::Separate(n) | Metadata::Extended(n) => n,
        }
    }
}

/// A namespace of a simulated controller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceSpec {
    pub(crate) blocks: u64,
    pub(crate) block_size: u32,
    pub(crate) eui64: u64,
    pub(crate) patches: Vec<(usize, Vec<u8>)>,
    pub(crate) garbage: Option<u64>,
    pub(crate) metadata: Option<Metadata>,
    pub(crate) protection: u8,
    pub(crate) csi: u8,
    pub(crate) descriptor_patches: Vec<(usize, Vec<u8>)>,
    pub(crate) descriptor_failure: Option<u8>,
}

impl NamespaceSpec {
    /// A namespace of `blocks` logical blocks of `block_size` bytes (a power of
    /// two, 512 or 4096 typically). Storage is sparse: only written blocks use
    /// host memory.
    pub fn new(blocks: u64, block_size: u32) -> Self {
        assert!(block_size.is_power_of_two() && block_size >= 512);
        Self {
            blocks,
            block_size,
            eui64: 0,
            patches: Vec::new(),
            garbage: None,
            metadata: None,
            protection: 0,
            csi: csi::NVM,
            descriptor_patches: Vec::new(),
            descriptor_failure: None,
        }
    }

    /// Formats the namespace with per-block metadata (LBAF.MS > 0), in a
    /// separate buffer or inline. A Read or Write sent to a namespace with
    /// separate metadata and MPTR = 0 is a protocol error (a real controller
    /// would transfer the metadata at address 0); a non-zero MPTR must name
    /// DMA memory.
    pub fn metadata(mut self, metadata: Metadata) -> Self {
        assert!(metadata.size() > 0);
        self.metadata = Some(metadata);
        self
    }

    /// Identify Namespace DPS: end-to-end protection (bits 2:0 the PI type,
    /// bit 3 PI first). Protection information lives in the metadata, so
    /// give the namespace metadata too.
    pub fn protection(mut self, dps: u8) -> Self {
        self.protection = dps;
        self
    }

    /// The namespace's I/O command set (see
    /// `bare_nvme::spec::identify::csi`; any value), reported in the CSI descriptor of
    /// the Namespace Identification Descriptor list. Under CC.CSS = NVM a
    /// zoned namespace takes NVM reads and refuses writes with Zone Invalid
    /// Write (no write pointers are modelled); any other command set
    /// refuses NVM opcodes.
    pub fn command_set(mut self, csi: u8) -> Self {
        self.csi = csi;
        self
    }

    /// Overwrites bytes of the Namespace Identification Descriptor list
    /// (Identify CNS 03h) at `offset`, to report broken descriptors.
    pub fn descriptor_patch(mut self, offset: usize, bytes: &[u8]) -> Self {
        self.descriptor_patches.push((offset, bytes.to_vec()));
        self
    }

    /// Fails Identify of this namespace's Namespace Identification
    /// Descriptor list with generic status `code`.
    pub fn descriptor_list_fails(mut self, code: u8) -> Self {
        self.descriptor_failure = Some(code);
        self
    }

    /// Reports this IEEE EUI-64 in Identify Namespace.
    pub fn eui64(mut self, eui64: u64) -> Self {
        self.eui64 = eui64;
        self
    }

    /// Overwrites bytes of the Identify Namespace page at `offset` (see
    /// `bare_nvme::spec::identify::ns`), to report broken values (NSZE, NLBAF,
    /// FLBAS, LBADS, ...) while storage keeps the real geometry.
    pub fn identify_patch(mut self, offset: usize, bytes: &[u8]) -> Self {
        self.patches.push((offset, bytes.to_vec()));
        self
    }

    /// Fills the Identify Namespace page with pseudo-random bytes from `seed`
    /// (patches still apply on top).
    pub fn identify_garbage(mut self, seed: u64) -> Self {
        self.garbage = Some(seed);
        self
    }
}

/// A controller's BAR0 size unless [`ControllerSpec::bar_size`] says
/// otherwise: the smallest that holds registers, doorbells and MSI-X table.
pub const DEFAULT_BAR_SIZE: u64 = 16 << 10;

/// A simulated NVMe controller (one PCI function).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControllerSpec {
    pub(crate) serial: String,
    pub(crate) model: String,
    pub(crate) firmware: String,
    pub(crate) namespaces: Vec<NamespaceSpec>,
    pub(crate) mqes: u16,
    pub(crate) timeout: u8,
    pub(crate) dstrd: u8,
    pub(crate) mpsmin: u8,
    pub(crate) mpsmax: u8,
    pub(crate) nssrs: bool,
    pub(crate) mdts: u8,
    pub(crate) max_ioqpairs: u16,
    pub(crate) firmware_enabled: bool,
    pub(crate) bar_assigned: bool,
    pub(crate) volatile_cache: bool,
    pub(crate) shadow_doorbells: bool,
    pub(crate) ready_delay: Duration,
    pub(crate) disable_delay: Option<Duration>,
    pub(crate) shutdown_delay: Duration,
    pub(crate) ready_never: bool,
    pub(crate) shutdown_never: bool,
    pub(crate) bar_size: u64,
    pub(crate) msix: bool,
    pub(crate) cap_cycle: bool,
    pub(crate) header_type: Option<u8>,
    pub(crate) patches: Vec<(usize, Vec<u8>)>,
    pub(crate) garbage: Option<u64>,
    pub(crate) hold: Hold,
    pub(crate) descriptor_lists: bool,
}

impl Default for ControllerSpec {
    /// QEMU 7.2 defaults: MQES 2047, TO 15 (7.5 s), DSTRD 0, 4 KiB pages,
    /// MDTS 7, 64 I/O queue pairs, volatile write cache, shadow doorbells,
    /// firmware-assigned BAR, disabled; no namespaces.
    fn default() -> Self {
        Self {
            serial: "sim0".into(),
            model: "bare-nvme simulated controller".into(),
            firmware: "1.0".into(),
            namespaces: Vec::new(),
            mqes: 2047,
            timeout: 15,
            dstrd: 0,
            mpsmin: 0,
            mpsmax: 4,
            nssrs: true,
            mdts: 7,
            max_ioqpairs: 64,
            firmware_enabled: false,
            bar_assigned: true,
            volatile_cache: true,
            shadow_doorbells: true,
            ready_delay: Duration::ZERO,
            disable_delay: None,
            shutdown_delay: Duration::ZERO,
            ready_never: false,
            shutdown_never: false,
            bar_size: DEFAULT_BAR_SIZE,
            msix: true,
            cap_cycle: false,
            header_type: None,
            patches: Vec::new(),
            garbage: None,
            hold: Hold::None,
            descriptor_lists: true,
        }
    }
}

impl ControllerSpec {
    /// A controller with one namespace of `blocks` blocks of 512 bytes.
    pub fn with_blocks(blocks: u64) -> Self {
        Self::default().namespace(NamespaceSpec::new(blocks, 512))
    }
    /// Serial number (Identify Controller SN).
    pub fn serial(mut self, serial: &str) -> Self {
        self.serial = serial.into();
        self
    }
    /// Model number (Identify Controller MN).
    pub fn model(mut self, model: &str) -> Self {
        self.model = model.into();
        self
    }
    /// Adds a namespace; NSIDs are assigned 1, 2, ... in order.
    pub fn namespace(mut self, ns: NamespaceSpec) -> Self {
        self.namespaces.push(ns);
        self
    }
    /// CAP.MQES (0-based maximum queue entries). 0 is illegal per spec and
    /// may be set to test the driver's validation.
    pub fn mqes(mut self, mqes: u16) -> Self {
        self.mqes = mqes;
        self
    }
    /// CAP.TO in 500 ms units (0 and 255 are legal extremes).
    pub fn timeout(mut self, to: u8) -> Self {
        self.timeout = to;
        self
    }
    /// CAP.DSTRD: doorbells are `4 << dstrd` bytes apart.
    pub fn dstrd(mut self, dstrd: u8) -> Self {
        self.dstrd = dstrd & 0xF;
        self
    }
    /// CAP.MPSMIN and CAP.MPSMAX (page size `1 << (12 + n)`).
    pub fn page_sizes(mut self, mpsmin: u8, mpsmax: u8) -> Self {
        self.mpsmin = mpsmin & 0xF;
        self.mpsmax = mpsmax & 0xF;
        self
    }
    /// CAP.NSSRS: NVM subsystem reset supported.
    pub fn nssr(mut self, supported: bool) -> Self {
        self.nssrs = supported;
        self
    }
    /// Identify Controller MDTS (0 = unlimited), in units of the minimum page.
    pub fn mdts(mut self, mdts: u8) -> Self {
        self.mdts = mdts;
        self
    }
    /// Most I/O queue pairs granted by Set Features Number of Queues.
    pub fn max_ioqpairs(mut self, n: u16) -> Self {
        self.max_ioqpairs = n.max(1);
        self
    }
    /// Starts enabled as firmware (SeaBIOS) leaves it: CC.EN=1, CSTS.RDY=1,
    /// admin queues in arena memory the driver does not own. Implies an
    /// assigned BAR with memory and bus-master enabled.
    pub fn firmware_enabled(mut self, on: bool) -> Self {
        self.firmware_enabled = on;
        self
    }
    /// Whether firmware assigned BAR0 (and enabled memory decoding and bus
    /// mastering). Hot-added controllers never have it assigned.
    pub fn bar_assigned(mut self, on: bool) -> Self {
        self.bar_assigned = on;
        self
    }
    /// Volatile write cache present (default). Without it every write is
    /// durable at once (`durable_on_write`).
    pub fn volatile_cache(mut self, present: bool) -> Self {
        self.volatile_cache = present;
        self
    }
    /// OACS bit 8: Doorbell Buffer Config supported.
    pub fn shadow_doorbells(mut self, supported: bool) -> Self {
        self.shadow_doorbells = supported;
        self
    }
    /// Virtual time from CC.EN changing to CSTS.RDY following it (both
    /// ways, unless [`ControllerSpec::disable_delay`] sets the 1 -> 0 time).
    pub fn ready_delay(mut self, delay: Duration) -> Self {
        self.ready_delay = delay;
        self
    }
    /// Virtual time from CC.EN 1 -> 0 to CSTS.RDY dropping, independent of
    /// [`ControllerSpec::ready_delay`]. Until RDY drops the controller keeps
    /// its queues and may still do DMA (held commands can still complete).
    pub fn disable_delay(mut self, delay: Duration) -> Self {
        self.disable_delay = Some(delay);
        self
    }
    /// Virtual time from CC.SHN being set to CSTS.SHST reporting shutdown
    /// complete (processing occurring until then; data is flushed when it
    /// completes).
    pub fn shutdown_delay(mut self, delay: Duration) -> Self {
        self.shutdown_delay = delay;
        self
    }
    /// CSTS.RDY never rises after CC.EN is set.
    pub fn ready_never(mut self, on: bool) -> Self {
        self.ready_never = on;
        self
    }
    /// CSTS.SHST never reports shutdown complete.
    pub fn shutdown_never(mut self, on: bool) -> Self {
        self.shutdown_never = on;
        self
    }
    /// BAR0 size in bytes, a power of two from 16 KiB up to 2^63 (an absurd
    /// size a driver must refuse to place).
    pub fn bar_size(mut self, bytes: u64) -> Self {
        assert!(bytes.is_power_of_two() && bytes >= 16 << 10);
        self.bar_size = bytes;
        self
    }
    /// Whether the function has an MSI-X capability (default yes).
    pub fn msix(mut self, on: bool) -> Self {
        self.msix = on;
        self
    }
    /// The last capability points back at the first: a cycle the
    /// capability walk must bound.
    pub fn capability_cycle(mut self, on: bool) -> Self {
        self.cap_cycle = on;
        self
    }
    /// Reports this byte as header type (config offset 0x0E) instead of 0.
    pub fn header_type(mut self, value: u8) -> Self {
        self.header_type = Some(value);
        self
    }
    /// Overwrites bytes of the Identify Controller page at `offset` (see
    /// `bare_nvme::spec::identify::ctrl`).
    pub fn identify_patch(mut self, offset: usize, bytes: &[u8]) -> Self {
        self.patches.push((offset, bytes.to_vec()));
        self
    }
    /// Fills the Identify Controller page with pseudo-random bytes from
    /// `seed` (patches still apply on top).
    pub fn identify_garbage(mut self, seed: u64) -> Self {
        self.garbage = Some(seed);
        self
    }
    /// Whether Identify CNS 03h (Namespace Identification Descriptor list)
    /// is answered (default, as QEMU 7.2); without it the command fails with
    /// Invalid Field in Command, as on controllers older than NVMe 1.3.
    pub fn descriptor_lists(mut self, supported: bool) -> Self {
        self.descriptor_lists = supported;
        self
    }
    /// Which completions are held back from the start.
    pub fn hold(mut self, hold: Hold) -> Self {
        self.hold = hold;
        self
    }

    /// The smallest BAR that holds registers, doorbells and MSI-X table.
    pub(crate) fn bar_len(&self) -> u64 {
        self.bar_size
    }

    /// Byte offset of the doorbell of `index` (2*qid for SQ, 2*qid+1 for CQ).
    pub(crate) fn doorbell_index(&self, offset: usize) -> Option<(u16, bool)> {
        let rel = offset.checked_sub(0x1000)?;
        let stride = 4usize << self.dstrd;
        if rel % stride != 0 {
            return None;
        }
        let idx = rel / stride;
        let qid = u16::try_from(idx / 2).ok()?;
        (qid <= self.max_ioqpairs).then_some((qid, idx % 2 == 1))
    }
}

/// A pseudo-random byte stream (xorshift64*) for garbage identify pages.
pub(crate) fn garbage_bytes(seed: u64, out: &mut [u8]) {
    let mut x = seed | 1;
    for chunk in out.chunks_mut(8) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let v = x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}
