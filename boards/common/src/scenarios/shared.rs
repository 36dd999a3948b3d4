//! What every scenario uses, on every board: failures, the scenario table
//! entry, deadlines, waiting for the host, the DMA baseline check.

use bare_nvme::Instant;

use super::Context;
use crate::dma::{self, DmaStats};
use crate::{clock, marker};

pub use crate::scenario::{Failure, Outcome, FAILURE_LEN};

/// A named scenario of the boards.
pub type Scenario = crate::scenario::Scenario<Context>;

/// Builds a [`Failure`] from format arguments (truncated to fit).
#[macro_export]
macro_rules! failure {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let mut text = heapless::String::<{ $crate::scenarios::FAILURE_LEN }>::new();
        let _ = write!(text, $($arg)*);
        $crate::scenarios::Failure(text)
    }};
}

/// Returns early with a [`Failure`] unless the condition holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            return Err($crate::failure!($($arg)*));
        }
    };
}

/// A deadline `ms` milliseconds from now.
pub fn deadline_ms(ms: u64) -> Instant {
    clock::now() + core::time::Duration::from_millis(ms)
}

/// Polls `condition` until it holds or `deadline` passes; whether it held.
pub fn wait_until(deadline: Instant, mut condition: impl FnMut() -> bool) -> bool {
    loop {
        if condition() {
            return true;
        }
        if clock::now() >= deadline {
            return false;
        }
        clock::delay_us(100);
    }
}

/// Longest line the host may send.
const HOST_LINE: usize = 64;

/// Prints `@@WAIT word` and waits until the host sends the line `word` on the
/// serial port (`Step::Tell` in xtask), e.g. once it has seen a QMP event the
/// machine must not end before.
pub fn wait_for_host(word: &str, timeout_ms: u64) -> Outcome {
    marker!("WAIT {word}");
    let mut line: heapless::String<HOST_LINE> = heapless::String::new();
    let heard = wait_until(deadline_ms(timeout_ms), || {
        while let Some(byte) = crate::board::board().read_byte() {
            match byte {
                b'\n' | b'\r' => {
                    if line.as_str() == word {
                        return true;
                    }
                    line.clear();
                }
                // A line too long for the buffer cannot be the word.
                _ => {
                    if line.push(byte as char).is_err() {
                        line.clear();
                    }
                }
            }
        }
        false
    });
    ensure!(heard, "host did not send {word} within {timeout_ms} ms");
    Ok(())
}

/// Reports outstanding DMA memory and fails if it differs from `baseline`.
pub fn check_dma_returned(baseline: DmaStats) -> Outcome {
    let now = dma::stats();
    marker!(
        "RESULT dma_regions={} dma_bytes={} dma_baseline_regions={} dma_baseline_bytes={}",
        now.regions,
        now.bytes,
        baseline.regions,
        baseline.bytes
    );
    ensure!(
        now == baseline,
        "DMA not returned: {} regions / {} bytes outstanding, baseline {} / {}",
        now.regions,
        now.bytes,
        baseline.regions,
        baseline.bytes
    );
    Ok(())
}
