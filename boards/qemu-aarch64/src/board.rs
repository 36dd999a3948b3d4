//! This board behind the shared [`Board`] trait.

use core::time::Duration;

use bare_nvme::{DriverConfig, Instant};
use bare_nvme_board_common::board::Config;
use bare_nvme_board_common::cmdline::Args;
use bare_nvme_board_common::Board;

use crate::{clock, exit, paging, pci, serial};

/// QEMU `virt` with no firmware.
pub struct Virt;

impl Board for Virt {
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
        clock::hz()
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
        pci::driver_config()
    }

    fn driver_config_name(&self) -> &'static str {
        "ECAM"
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
