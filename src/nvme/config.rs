//! What the embedder chooses for each controller, and the driver's fixed
//! limits.

use core::time::Duration;

/// Most I/O queue pairs per controller.
pub const MAX_IO_QUEUES: usize = 4;
/// Most entries per I/O queue.
pub const MAX_QUEUE_DEPTH: usize = 256;
/// Largest transfer one command may carry, whatever MDTS allows.
pub const MAX_TRANSFER_LIMIT: u32 = 4 << 20;

/// What the embedder chooses for each controller: the defaults
/// ([`ControllerConfig::new`] or [`Default`]) changed with a setter per
/// field (see [`DriverConfig`](crate::DriverConfig) for an example).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ControllerConfig {
    /// I/O queue pairs to ask for (clamped to what the controller grants and
    /// to the controller's `QUEUES` capacity). Default 1.
    pub io_queues: u16,
    /// Entries per I/O queue (clamped to CAP.MQES and the controller's
    /// `DEPTH` capacity); one entry always stays empty. Default 128.
    pub queue_depth: u16,
    /// Largest transfer per command in bytes (clamped to MDTS and
    /// [`MAX_TRANSFER_LIMIT`]); the blocking wrappers split larger requests.
    /// Default 256 KiB.
    pub max_transfer: u32,
    /// Deadline of each admin command. Default 5 s.
    pub admin_timeout: Duration,
    /// Deadline of each I/O command. Default 10 s.
    pub io_timeout: Duration,
    /// Upper bound on the CAP.TO ready timeout a controller may claim.
    /// Default 30 s.
    pub ready_timeout_limit: Duration,
    /// Deadline for a normal shutdown (CC.SHN) to report completion.
    /// Default 5 s.
    pub shutdown_timeout: Duration,
    /// Use shadow doorbells when the controller offers them. Off by default:
    /// they save MMIO writes only on a controller that is still busy when
    /// new work arrives, and cost a barrier and an EventIdx read per ring.
    pub shadow_doorbells: bool,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl ControllerConfig {
    /// The defaults (as [`Default`]), usable in a `const` or `static`.
    pub const fn new() -> Self {
        Self {
            io_queues: 1,
            queue_depth: 128,
            max_transfer: 256 << 10,
            admin_timeout: Duration::from_secs(5),
            io_timeout: Duration::from_secs(10),
            ready_timeout_limit: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(5),
            shadow_doorbells: false,
        }
    }

    /// Sets [`ControllerConfig::io_queues`].
    pub const fn io_queues(mut self, io_queues: u16) -> Self {
        self.io_queues = io_queues;
        self
    }

    /// Sets [`ControllerConfig::queue_depth`].
    pub const fn queue_depth(mut self, queue_depth: u16) -> Self {
        self.queue_depth = queue_depth;
        self
    }

    /// Sets [`ControllerConfig::max_transfer`].
    pub const fn max_transfer(mut self, max_transfer: u32) -> Self {
        self.max_transfer = max_transfer;
        self
    }

    /// Sets [`ControllerConfig::admin_timeout`].
    pub const fn admin_timeout(mut self, admin_timeout: Duration) -> Self {
        self.admin_timeout = admin_timeout;
        self
    }

    /// Sets [`ControllerConfig::io_timeout`].
    pub const fn io_timeout(mut self, io_timeout: Duration) -> Self {
        self.io_timeout = io_timeout;
        self
    }

    /// Sets [`ControllerConfig::ready_timeout_limit`].
    pub const fn ready_timeout_limit(mut self, ready_timeout_limit: Duration) -> Self {
        self.ready_timeout_limit = ready_timeout_limit;
        self
    }

    /// Sets [`ControllerConfig::shutdown_timeout`].
    pub const fn shutdown_timeout(mut self, shutdown_timeout: Duration) -> Self {
        self.shutdown_timeout = shutdown_timeout;
        self
    }

    /// Sets [`ControllerConfig::shadow_doorbells`].
    pub const fn shadow_doorbells(mut self, shadow_doorbells: bool) -> Self {
        self.shadow_doorbells = shadow_doorbells;
        self
    }
}

/// Resets in a row (without a successful command between them) before the
/// controller is given up.
pub const MAX_RESETS: u8 = 3;
