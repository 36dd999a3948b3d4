//! `boot`: proves the board. Memory map, clock, PCI as firmware left it, ECAM
//! against port I/O, and the DMA allocator returning to its baseline.

use bare_nvme::Platform;
use log::info;
use pci_types::PciAddress;

use super::{check_dma_returned, Context, Outcome, Scenario};
use crate::clock;
use crate::pci::{self, scan, NO_DEVICE};
use bare_nvme_board_common::{dma, ensure, marker};

/// The scenario.
pub const SCENARIO: Scenario = Scenario {
    name: "boot",
    about: "memory map, clock, PCI walk, ECAM, DMA allocator",
    run,
};

fn run(board: &Context) -> Outcome {
    info!("memory map:");
    for region in crate::board::facts().boot.memory_map.regions() {
        info!("  {region}");
    }
    ensure!(
        crate::board::facts()
            .boot
            .memory_map
            .usable()
            .next()
            .is_some(),
        "no usable RAM in the memory map"
    );
    check_clock(board)?;
    let topology = scan::walk(&board.config);
    info!(
        "{} functions, {} root ports with slots",
        topology.functions,
        topology.root_ports.len()
    );
    for port in &topology.root_ports {
        marker!(
            "RESULT root_port={:02x}:{:02x}.{} slot={} secondary_bus={}",
            port.addr.bus(),
            port.addr.device(),
            port.addr.function(),
            port.slot,
            port.secondary_bus
        );
    }
    let ecam_checked = check_ecam(board)?;
    check_dma(board)?;
    marker!(
        "RESULT functions={} root_ports={} tsc_mhz={} ecam={:#x} ecam_checked={}",
        topology.functions,
        topology.root_ports.len(),
        crate::board::facts().tsc_hz / 1_000_000,
        crate::board::facts().ecam.map_or(0, |w| w.base),
        ecam_checked
    );
    Ok(())
}

fn check_clock(board: &Context) -> Outcome {
    ensure!(
        crate::board::facts().tsc_hz > 100_000_000,
        "implausible TSC rate {} Hz",
        crate::board::facts().tsc_hz
    );
    let before = board.platform.now();
    clock::delay_us(2_000);
    let after = board.platform.now();
    let elapsed = after - before;
    ensure!(
        elapsed.as_micros() >= 2_000,
        "clock ran backwards or short: {elapsed:?}"
    );
    Ok(())
}

/// Every function on bus 0 must read the same through ECAM and port I/O.
fn check_ecam(board: &Context) -> Result<usize, super::Failure> {
    let Some(window) = crate::board::facts().ecam else {
        info!("no ECAM");
        return Ok(0);
    };
    let Some(ecam) = pci::ecam_access(window) else {
        return Err(bare_nvme_board_common::failure!(
            "ECAM at {:#x} is outside the map",
            window.base
        ));
    };
    info!("ECAM at {:#x}, {} buses", window.base, window.buses);
    let mut checked = 0;
    for device in 0..32 {
        let addr = PciAddress::new(0, 0, device, 0);
        let by_port = pci::read32(&board.config, addr, 0);
        let by_ecam = pci::read32(&ecam, addr, 0);
        ensure!(
            by_port == by_ecam,
            "00:{device:02x}.0 reads {by_port:#x} by port I/O but {by_ecam:#x} by ECAM"
        );
        if by_port as u16 != NO_DEVICE {
            checked += 1;
        }
    }
    Ok(checked)
}

fn check_dma(board: &Context) -> Outcome {
    let baseline = dma::stats();
    info!("DMA pool {} MiB", dma::capacity() >> 20);
    let platform = board.platform;
    let sizes = [64usize, 4096, 4097, 65536, 1 << 20];
    let mut regions: heapless::Vec<bare_nvme::DmaRegion, 8> = heapless::Vec::new();
    for (i, &len) in sizes.iter().enumerate() {
        let Some(mut region) = platform.dma_alloc(len, 4096) else {
            return Err(bare_nvme_board_common::failure!("dma_alloc({len}) failed"));
        };
        ensure!(
            region.phys().as_u64() == region.virt().as_ptr() as u64,
            "DMA region not identity mapped"
        );
        ensure!(region.phys().is_aligned(4096), "DMA region misaligned");
        ensure!(
            region.as_slice().iter().all(|&b| b == 0),
            "DMA region not zeroed"
        );
        region.as_mut_slice().fill(0xA5 ^ i as u8);
        for other in &regions {
            let (a, b) = (region.phys().as_u64(), other.phys().as_u64());
            ensure!(
                a + region.len() as u64 <= b || b + other.len() as u64 <= a,
                "DMA regions overlap"
            );
        }
        if regions.push(region).is_err() {
            break;
        }
    }
    let held = dma::stats();
    info!(
        "holding {} regions, {} bytes",
        held.regions - baseline.regions,
        held.bytes - baseline.bytes
    );
    for (i, region) in regions.iter().enumerate() {
        ensure!(
            region.as_slice().iter().all(|&b| b == 0xA5 ^ i as u8),
            "DMA region {i} was overwritten"
        );
    }
    while let Some(region) = regions.pop() {
        platform.dma_free(region);
    }
    // A freed page comes back zeroed.
    let Some(again) = platform.dma_alloc(1 << 20, 4096) else {
        return Err(bare_nvme_board_common::failure!(
            "dma_alloc after free failed"
        ));
    };
    ensure!(
        again.as_slice().iter().all(|&b| b == 0),
        "reused DMA region not zeroed"
    );
    platform.dma_free(again);
    check_dma_returned(baseline)
}
