//! The check every simulation ends with: when the last handle on the
//! simulation goes (the driver holds platform clones, so after the driver),
//! the device must never have reached memory it did not own, no memory may
//! have been handed back while the device could still write it, and,
//! unless the test declared otherwise, no protocol error happened and every
//! DMA region came back.

use crate::state::State;

/// What a test declared it expects (see [`crate::Sim::expect_protocol_errors`]
/// and friends).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Expect {
    /// The end check is off altogether.
    pub(crate) unchecked: bool,
    /// Protocol errors are provoked on purpose.
    pub(crate) protocol_errors: bool,
    /// DMA regions may stay outstanding (leaked by the test, or kept in
    /// quarantine by the driver).
    pub(crate) outstanding: bool,
}

impl State {
    /// What is wrong at the end of the simulation, if anything.
    pub(crate) fn violations(&self) -> Vec<String> {
        let c = &self.stats.c;
        let mut out = Vec::new();
        if c.wild_dma != 0 {
            out.push(format!(
                "{} device accesses outside the memory the device owned (wild_dma)",
                c.wild_dma
            ));
        }
        if c.freed_while_dma_possible != 0 {
            out.push(format!(
                "{} DMA regions handed back while the device could still write them",
                c.freed_while_dma_possible
            ));
        }
        if c.protocol_errors != 0 && !self.expect.protocol_errors {
            out.push(format!(
                "{} protocol errors (none expected: Sim::expect_protocol_errors)",
                c.protocol_errors
            ));
        }
        let (regions, bytes) = self.mem.outstanding();
        if regions != 0 && !self.expect.outstanding {
            out.push(format!(
                "{regions} DMA regions ({bytes} bytes) outstanding at the end \
                 (none expected: Sim::expect_outstanding / expect_quarantined)"
            ));
        }
        out
    }
}

impl Drop for State {
    fn drop(&mut self) {
        if self.expect.unchecked || std::thread::panicking() {
            return;
        }
        let problems = self.violations();
        if !problems.is_empty() {
            panic!(
                "simulation ended with: {}\nlog: {:#?}",
                problems.join("; "),
                self.stats.log
            );
        }
    }
}
