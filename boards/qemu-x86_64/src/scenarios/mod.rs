//! Scenarios: one kernel image, the command line picks what it does.
//!
//! A scenario is a function from the [`Board`] to an [`Outcome`]. It reports
//! progress with markers (see `serial::marker!`): `@@READY` when the host may
//! start its steps, `@@PHASE name` at points the host may wait for,
//! `@@RESULT key=value ...` for numbers and facts. The kernel prints `@@PASS`
//! or `@@FAIL reason` after the scenario returns and ends the machine. To add
//! one: write a module with a `pub const SCENARIO` and list it in [`ALL`].

mod bench;
mod boot;
mod io;
mod plug;
mod slots;
mod tick_cost;

use core::fmt;

use bare_nvme::Instant;

use crate::cmdline::Args;
use crate::dma::{self, DmaStats};
use crate::pci::{Access, EcamWindow, PortIo};
use crate::platform::QemuPlatform;
use crate::start_info::BootInfo;
use crate::{clock, marker};

/// Everything a scenario may use.
pub struct Board {
    /// The kernel command line.
    pub args: Args,
    /// What the loader handed over.
    pub boot: &'static BootInfo,
    /// The driver's view of the machine.
    pub platform: QemuPlatform,
    /// Configuration access for the driver and the scenario (the hand has
    /// its own).
    pub config: PortIo,
    /// The driver's configuration accessor.
    pub access: Access,
    /// ECAM, if the chipset has it enabled.
    pub ecam: Option<EcamWindow>,
    /// Calibrated TSC frequency.
    pub tsc_hz: u64,
}

/// Longest failure text kept (keeps `Outcome` small).
pub const FAILURE_LEN: usize = 112;

/// Why a scenario failed (one line).
pub struct Failure(pub heapless::String<FAILURE_LEN>);

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

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

/// What a scenario returns.
pub type Outcome = Result<(), Failure>;

/// A named scenario.
pub struct Scenario {
    /// Name on the command line (`scenario=NAME`).
    pub name: &'static str,
    /// One line for the list printed on an unknown name.
    pub about: &'static str,
    /// The body.
    pub run: fn(&Board) -> Outcome,
}

/// Every scenario the kernel knows.
pub const ALL: &[Scenario] = &[
    boot::SCENARIO,
    io::SCENARIO,
    plug::SCENARIO,
    slots::SCENARIO,
    bench::SCENARIO,
    tick_cost::SCENARIO,
];

/// Runs the scenario the command line names.
pub fn run(board: &Board) -> Outcome {
    let name = board.args.scenario();
    let Some(scenario) = ALL.iter().find(|s| s.name == name) else {
        for s in ALL {
            log::error!("known scenario {}: {}", s.name, s.about);
        }
        return Err(failure!("unknown scenario {name}"));
    };
    log::info!("scenario {}: {}", scenario.name, scenario.about);
    (scenario.run)(board)
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
        while let Some(byte) = crate::serial::try_read_byte() {
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
