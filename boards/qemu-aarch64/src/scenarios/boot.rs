//! `boot`: proves the board. The device tree's RAM, ECAM and PCI windows,
//! the clock, PCI as the kernel found it (nothing assigned), and the DMA
//! allocator returning to its baseline.

use bare_nvme::Platform;
use log::info;

use super::{check_dma_returned, Context, Outcome, Scenario};
use crate::clock;
use crate::pci::scan;
use bare_nvme_board_common::{dma, ensure, marker};

/// The scenario.
pub const SCENARIO: Scenario = Scenario {
    name: "boot",
    about: "device tree, clock, PCI walk, DMA allocator",
    run,
};

fn run(board: &Context) -> Outcome {
    let m = crate::pci::machine();
    ensure!(m.ram.1 >= 64 << 20, "implausible RAM {:?}", m.ram);
    ensure!(
        m.memory.is_some(),
        "no 32-bit PCI window in the device tree"
    );
    ensure!(
        crate::clock::hz() >= 1_000_000,
        "implausible timer rate {} Hz",
        crate::clock::hz()
    );
    let before = board.platform.now();
    clock::delay_us(2_000);
    let elapsed = board.platform.now() - before;
    ensure!(elapsed.as_micros() >= 2_000, "clock ran short: {elapsed:?}");
    let topology = scan::walk(&board.config);
    info!(
        "{} functions on the buses numbered so far",
        topology.functions
    );
    let baseline = dma::stats();
    let a = board.platform.dma_alloc(3 * dma::PAGE, dma::PAGE);
    let b = board.platform.dma_alloc(1, 64);
    ensure!(a.is_some() && b.is_some(), "DMA allocation failed");
    for region in [a, b].into_iter().flatten() {
        board.platform.dma_free(region);
    }
    marker!(
        "RESULT functions={} root_ports={} ram_mib={} dma_mib={} ecam={:#x} timer_mhz={}",
        topology.functions,
        topology.root_ports.len(),
        m.ram.1 >> 20,
        dma::capacity() >> 20,
        m.ecam.0,
        crate::clock::hz() / 1_000_000
    );
    check_dma_returned(baseline)
}
