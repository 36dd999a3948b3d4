//! What the simulation counts, for tests to assert on.

use std::fmt;

/// A snapshot of the simulation's counters ([`crate::Sim::counters`]).
///
/// Access counters count since the last [`crate::Sim::reset_counters`];
/// `dma_regions` and `dma_bytes` are the driver's live allocations right now.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// 32-bit register reads (a 64-bit register read counts as two).
    pub mmio_reads: u64,
    /// 32-bit register writes, doorbells included.
    pub mmio_writes: u64,
    /// Submission queue tail doorbell writes.
    pub sq_doorbell_writes: u64,
    /// Completion queue head doorbell writes.
    pub cq_doorbell_writes: u64,
    /// Config space dword reads.
    pub config_reads: u64,
    /// Config space dword writes.
    pub config_writes: u64,
    /// DMA regions the driver holds now.
    pub dma_regions: u64,
    /// Bytes in those regions.
    pub dma_bytes: u64,
    /// `dma_alloc` calls that succeeded.
    pub dma_allocs: u64,
    /// `dma_free` calls.
    pub dma_frees: u64,
    /// `dma_flush` calls (cache cleans).
    pub dma_flushes: u64,
    /// `dma_invalidate` calls.
    pub dma_invalidates: u64,
    /// Things a correct driver never does (the log says which:
    /// [`crate::Sim::protocol_log`]).
    pub protocol_errors: u64,
    /// Device accesses to memory outside every live allocation, and device
    /// writes into buffers a completion returned to their caller
    /// ([`crate::Sim::caller_owns`]).
    pub wild_dma: u64,
    /// DMA regions freed (or returned to their caller) while a controller
    /// that can still DMA references them: a queue ring, a shadow doorbell
    /// or EventIdx page, or the memory of a command it fetched and has not
    /// completed. The log says which ([`crate::Sim::protocol_log`]).
    pub freed_while_dma_possible: u64,
    /// Times the controller could not fetch or post because bus mastering
    /// was off.
    pub dma_blocked: u64,
    /// Completion entries written to completion queues.
    pub completions_posted: u64,
    /// The most I/O commands one controller had at once that were announced
    /// by a submission doorbell and not yet completed (held ones included):
    /// 1 for a driver that waits for each command before the next.
    pub io_in_flight_max: u64,
    /// Admin commands executed, by opcode.
    pub admin_commands: [u64; 256],
    /// I/O commands executed, by opcode.
    pub io_commands: [u64; 256],
}

impl Counters {
    /// Admin commands with `opcode` executed.
    pub fn admin(&self, opcode: u8) -> u64 {
        self.admin_commands[opcode as usize]
    }
    /// I/O commands with `opcode` executed.
    pub fn io(&self, opcode: u8) -> u64 {
        self.io_commands[opcode as usize]
    }
    /// All 32-bit register accesses.
    pub fn mmio(&self) -> u64 {
        self.mmio_reads + self.mmio_writes
    }
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            mmio_reads: 0,
            mmio_writes: 0,
            sq_doorbell_writes: 0,
            cq_doorbell_writes: 0,
            config_reads: 0,
            config_writes: 0,
            dma_regions: 0,
            dma_bytes: 0,
            dma_allocs: 0,
            dma_frees: 0,
            dma_flushes: 0,
            dma_invalidates: 0,
            protocol_errors: 0,
            wild_dma: 0,
            freed_while_dma_possible: 0,
            dma_blocked: 0,
            completions_posted: 0,
            io_in_flight_max: 0,
            admin_commands: [0; 256],
            io_commands: [0; 256],
        }
    }
}

impl fmt::Debug for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nonzero = |a: &[u64; 256]| -> Vec<(usize, u64)> {
            a.iter()
                .enumerate()
                .filter(|(_, &n)| n != 0)
                .map(|(i, &n)| (i, n))
                .collect()
        };
        f.debug_struct("Counters")
            .field("mmio_reads", &self.mmio_reads)
            .field("mmio_writes", &self.mmio_writes)
            .field("sq_doorbell_writes", &self.sq_doorbell_writes)
            .field("cq_doorbell_writes", &self.cq_doorbell_writes)
            .field("config_reads", &self.config_reads)
            .field("config_writes", &self.config_writes)
            .field("dma_regions", &self.dma_regions)
            .field("dma_bytes", &self.dma_bytes)
            .field("dma_allocs", &self.dma_allocs)
            .field("dma_frees", &self.dma_frees)
            .field("dma_flushes", &self.dma_flushes)
            .field("dma_invalidates", &self.dma_invalidates)
            .field("protocol_errors", &self.protocol_errors)
            .field("wild_dma", &self.wild_dma)
            .field("freed_while_dma_possible", &self.freed_while_dma_possible)
            .field("dma_blocked", &self.dma_blocked)
            .field("completions_posted", &self.completions_posted)
            .field("io_in_flight_max", &self.io_in_flight_max)
            .field("admin_commands", &nonzero(&self.admin_commands))
            .field("io_commands", &nonzero(&self.io_commands))
            .finish()
    }
}

/// Counters plus the protocol error log and the held-command sequence.
#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) c: Counters,
    pub(crate) log: Vec<String>,
    /// The memory-safety lines of the log, kept across counter resets.
    pub(crate) notes: Vec<String>,
    pub(crate) next_seq: u64,
}

impl Stats {
    /// Records something a correct driver never does.
    pub(crate) fn protocol(&mut self, what: String) {
        self.c.protocol_errors += 1;
        self.log.push(what);
    }

    /// Logs a memory-safety finding (counted by its caller, not as a
    /// protocol error).
    pub(crate) fn note(&mut self, what: String) {
        self.notes.push(what.clone());
        self.log.push(what);
    }
}
