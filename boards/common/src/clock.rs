//! The board's clock under the names the scenarios use.

use core::time::Duration;

use bare_nvme::Instant;

use crate::board::board;

/// See [`crate::Board::now`].
pub fn now() -> Instant {
    board().now()
}

/// See [`crate::Board::ticks`].
pub fn ticks() -> u64 {
    board().ticks()
}

/// See [`crate::Board::ticks_to_nanos`].
pub fn ticks_to_nanos(ticks: u64) -> u64 {
    board().ticks_to_nanos(ticks)
}

/// See [`crate::Board::since_machine_start`].
pub fn since_machine_start() -> Duration {
    board().since_machine_start()
}

/// See [`crate::Board::relax`].
pub fn relax() {
    board().relax();
}

/// See [`crate::Board::delay_us`].
pub fn delay_us(micros: u64) {
    board().delay_us(micros);
}
