//! The board trait: everything the shared scenarios, the hand and the
//! driver glue ask of the machine they run on. A board implements it once,
//! hands it to [`install`] early in its boot, and the rest of this crate
//! reaches the machine only through [`board`].

use core::time::Duration;

use bare_nvme::{DriverConfig, Instant};
use pci_types::ConfigRegionAccess;
use spin::Once;

use crate::cmdline::Args;

/// A configuration space accessor that lives for the whole run.
pub type Config = &'static (dyn ConfigRegionAccess + Sync);

/// What a board provides. Its methods take `&self` so that the shared code
/// can hold the board as one `&'static dyn Board`; a board's state usually
/// lives in its own statics and the implementing type is a unit struct.
pub trait Board: Sync {
    // Clock.

    /// The monotonic clock the driver runs on.
    fn now(&self) -> Instant;
    /// The clock's raw counter, for the scenarios that time single steps.
    fn ticks(&self) -> u64;
    /// Counter ticks in nanoseconds.
    fn ticks_to_nanos(&self, ticks: u64) -> u64;
    /// Time since the machine started (before the board's own boot).
    fn since_machine_start(&self) -> Duration;
    /// The clock counter's frequency.
    fn clock_hz(&self) -> u64;

    /// One pause in a wait loop (a spin hint, or waiting for an event where
    /// spinning would starve the host).
    fn relax(&self) {
        core::hint::spin_loop();
    }

    /// Waits `micros` microseconds: a deadline on the clock, each round one
    /// [`Board::relax`].
    fn delay_us(&self, micros: u64) {
        let deadline = self
            .now()
            .as_nanos()
            .saturating_add(micros.saturating_mul(1_000));
        while self.now().as_nanos() < deadline {
            self.relax();
        }
    }

    // Memory.

    /// Whether `[addr, addr + len)` is identity-mapped, uncached where it
    /// holds no RAM, so that the driver may use it as registers. DMA memory
    /// itself is the pool the board hands to [`crate::dma::init`].
    fn is_mapped(&self, addr: u64, len: u64) -> bool;

    // PCI.

    /// The configuration accessor handed to the driver (its reads are
    /// counted by [`crate::pci::Access`]).
    fn driver_config(&self) -> Config;
    /// Which mechanism [`Board::driver_config`] uses, for the log.
    fn driver_config_name(&self) -> &'static str;
    /// The board's own configuration accessor, for the scenarios and the
    /// hand: never the driver's.
    fn own_config(&self) -> Config;
    /// Host bridge facts for the driver: windows, whether it assigns
    /// resources itself (`reassign=1` on the command line).
    fn host_config(&self, args: &Args, config: &mut DriverConfig);

    // Console and exit.

    /// A byte the host sent on the console, if one is waiting (the console's
    /// output goes through [`crate::console::install`]).
    fn read_byte(&self) -> Option<u8>;
    /// Ends the machine, telling the host whether the scenario passed.
    fn exit(&self, passed: bool) -> !;
}

static BOARD: Once<&'static dyn Board> = Once::new();

/// Makes `board` the one the shared code uses; the first call wins.
pub fn install(board: &'static dyn Board) {
    BOARD.call_once(|| board);
}

/// The installed board.
///
/// # Panics
/// Before [`install`].
pub fn board() -> &'static dyn Board {
    *BOARD.get().expect("board::install runs first")
}
