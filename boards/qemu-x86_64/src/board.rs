//! This board behind the shared [`Board`] trait, and the facts its own
//! scenarios read (the start info, the ECAM window, the TSC's frequency).

use core::time::Duration;

use bare_nvme::{DriverConfig, Instant};
use bare_nvme_board_common::board::Config;
use bare_nvme_board_common::cmdline::Args;
use bare_nvme_board_common::Board;
use spin::Once;

use crate::pci::EcamWindow;
use crate::start_info::BootInfo;
use crate::{clock, exit, paging, pci, serial};

/// QEMU q35 under PVH.
pub struct Q35;

impl Board for Q35 {
    fn now(&self) -> Instant {
        clock::now()
    }

    fn ticks(&self) -> u64 {
        clock::ticks()
    }

    fn ticks_to_nanos(&self, ticks: u64) -> u64 {
        clock::ticks_to_nanos(ticks)
    }

    fn since_machine_start(&self) -> Duration {
        clock::since_machine_start()
    }

    fn clock_hz(&self) -> u64 {
        facts().tsc_hz
    }

    fn relax(&self) {
        clock::relax();
    }

    fn delay_us(&self, micros: u64) {
        clock::delay_us(micros);
    }

    fn is_mapped(&self, addr: u64, len: u64) -> bool {
        paging::is_mapped(addr, len)
    }

    fn driver_config(&self) -> Config {
        pci::driver_access().0
    }

    fn driver_config_name(&self) -> &'static str {
        pci::driver_access().1
    }

    fn own_config(&self) -> Config {
        pci::own_config()
    }

    fn host_config(&self, args: &Args, config: &mut DriverConfig) {
        pci::host_config(args, config);
    }

    fn read_byte(&self) -> Option<u8> {
        serial::try_read_byte()
    }

    fn exit(&self, passed: bool) -> ! {
        exit::exit_qemu(if passed { exit::SUCCESS } else { exit::FAILURE })
    }
}

/// What the loader and the chipset told the boot, for this board's own
/// scenarios.
pub struct Facts {
    /// What the loader handed over.
    pub boot: &'static BootInfo,
    /// ECAM, if the chipset has it enabled.
    pub ecam: Option<EcamWindow>,
    /// Calibrated TSC frequency.
    pub tsc_hz: u64,
}

static FACTS: Once<Facts> = Once::new();

/// Records the boot's facts (once).
pub fn set_facts(facts: Facts) {
    FACTS.call_once(|| facts);
}

/// The boot's facts.
///
/// # Panics
/// Before [`set_facts`].
pub fn facts() -> &'static Facts {
    FACTS.get().expect("the boot records its facts first")
}
