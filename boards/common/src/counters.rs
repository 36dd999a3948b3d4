//! Reads the driver made through the board's accessors (configuration space
//! and registers), counted since boot so that scenarios can show what a tick
//! costs.

use core::sync::atomic::{AtomicU64, Ordering};

static CONFIG_READS: AtomicU64 = AtomicU64::new(0);
static MMIO_READS: AtomicU64 = AtomicU64::new(0);

/// Counts one configuration read by the driver's accessor.
pub fn count_config_read() {
    CONFIG_READS.fetch_add(1, Ordering::Relaxed);
}

/// Configuration reads the driver made so far.
pub fn config_reads() -> u64 {
    CONFIG_READS.load(Ordering::Relaxed)
}

/// Counts one register read by the driver.
pub fn count_mmio_read() {
    MMIO_READS.fetch_add(1, Ordering::Relaxed);
}

/// Register reads the driver made so far.
pub fn mmio_reads() -> u64 {
    MMIO_READS.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_counted_read_adds_one() {
        let (config, mmio) = (config_reads(), mmio_reads());
        count_config_read();
        count_mmio_read();
        count_mmio_read();
        assert_eq!(config_reads() - config, 1);
        assert_eq!(mmio_reads() - mmio, 2);
    }
}
