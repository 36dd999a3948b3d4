//! PCI enumeration through the driver: controllers on bus 0, behind PCIe
//! root ports and behind a plain PCI-PCI bridge; BARs firmware left assigned
//! or unassigned; buses firmware numbered or not. Every controller found is
//! checked to serve I/O on its own media.

mod common;

use std::collections::BTreeMap;

use bare_nvme::{ControllerConfig, ControllerId, DriverConfig, PhysAddr, Platform};
use bare_nvme_sim::{
    BridgeId, ControllerSpec, CtrlId, NamespaceSpec, PortId, Sim, SimConfig, MMIO_APERTURE,
};
use common::*;
use pci_types::{ConfigRegionAccess, PciAddress};

/// PCI command register bits the driver must set: memory space, bus master,
/// INTx disable.
const MEMORY: u16 = 1 << 1;
const BUS_MASTER: u16 = 1 << 2;
const INTX_DISABLE: u16 = 1 << 10;

fn ctrl(serial: &str, assigned: bool) -> ControllerSpec {
    ControllerSpec::default()
        .serial(serial)
        .bar_assigned(assigned)
        .namespace(NamespaceSpec::new(256, 512))
}

fn cfg_read(cfg: &SimConfig, a: PciAddress, offset: u16) -> u32 {
    // SAFETY: the simulated configuration space accepts any address.
    unsafe { cfg.read(a, offset) }
}

/// The memory window (start, end exclusive) of the bridge on bus 0 whose
/// secondary bus is `bus`.
fn window_routing(sim: &Sim, bus: u8) -> (u64, u64) {
    let cfg = sim.config_access();
    for dev in 0..32 {
        let a = PciAddress::new(0, 0, dev, 0);
        let header = (cfg_read(&cfg, a, 0x0C) >> 16) as u8 & 0x7F;
        if cfg_read(&cfg, a, 0) == u32::MAX || header != 1 {
            continue;
        }
        if (cfg_read(&cfg, a, 0x18) >> 8) as u8 == bus {
            let w = cfg_read(&cfg, a, 0x20);
            let base = ((w & 0xFFF0) as u64) << 16;
            let limit = (((w >> 16) & 0xFFF0) as u64) << 16 | 0xF_FFFF;
            return (base, limit + 1);
        }
    }
    panic!("no bridge routes bus {bus}");
}

/// Maps each ready controller to the simulated controller at its address.
fn by_address(sim: &Sim, driver: &BoxedDrv, count: usize) -> BTreeMap<usize, ControllerId> {
    let mut map = BTreeMap::new();
    for id in driver.ready_controllers() {
        let at = driver.address(id).unwrap();
        let c = (0..count)
            .find(|&c| sim.address(CtrlId(c)) == Some(at))
            .expect("a simulated controller at the driver's address");
        map.insert(c, id);
    }
    map
}

/// Writes a block unique to each controller through the driver and finds
/// it on that controller's media only.
fn each_serves_its_own_media(
    sim: &Sim,
    driver: &mut BoxedDrv,
    map: &BTreeMap<usize, ControllerId>,
) {
    let p = sim.platform();
    for (&c, &id) in map {
        let data = filled(&p, 512, 0x40 + c as u8);
        driver.controller(id).unwrap().write(1, 9, &data).unwrap();
        p.dma_free(data);
    }
    for &c in map.keys() {
        assert_eq!(
            sim.read_block(CtrlId(c), 1, 9),
            pattern(512, 0x40 + c as u8)
        );
    }
}

/// BAR0 ranges of the controllers, checked to be disjoint.
fn assert_disjoint(sim: &Sim, ctrls: &[usize]) {
    let mut ranges: Vec<(u64, u64)> = ctrls
        .iter()
        .map(|&c| (sim.bar(CtrlId(c)), sim.bar(CtrlId(c)) + (16 << 10)))
        .collect();
    ranges.sort();
    for w in ranges.windows(2) {
        assert!(w[0].1 <= w[1].0, "BARs overlap: {ranges:x?}");
    }
}

#[test]
fn firmware_configured_controllers_everywhere_are_found_kept_and_served() {
    let sim = Sim::builder()
        .root_port(true)
        .root_port(true)
        .pci_bridge()
        .controller_on_port(PortId(0), ctrl("port0", true))
        .controller_on_port(PortId(1), ctrl("port1", true))
        .controller_on_bridge(BridgeId(0), ctrl("bridge", true))
        .controller_on_bus0(ctrl("bus0", true))
        .build();
    let bars: Vec<u64> = (0..4).map(|c| sim.bar(CtrlId(c))).collect();
    assert!(bars.iter().all(|&b| b != 0));
    let (mut driver, ids) = up(&sim, ControllerConfig::default());
    assert_eq!(ids.len(), 4, "{:?}", sim.protocol_log());
    let map = by_address(&sim, &driver, 4);
    assert_eq!(map.len(), 4);
    for c in 0..4 {
        assert_eq!(sim.bar(CtrlId(c)), bars[c], "firmware BAR of {c} kept");
        let cmd = sim.command_register(CtrlId(c));
        assert_eq!(
            cmd & (MEMORY | BUS_MASTER | INTX_DISABLE),
            MEMORY | BUS_MASTER | INTX_DISABLE
        );
        let serial = driver.controller(map[&c]).unwrap().info().unwrap().serial;
        assert_eq!(serial.as_str(), ["port0", "port1", "bridge", "bus0"][c]);
    }
    each_serves_its_own_media(&sim, &mut driver, &map);
    finish(&sim, driver);
}

#[test]
fn unassigned_bars_behind_bridges_are_placed_inside_the_bridge_windows() {
    let sim = Sim::builder()
        .root_port(true)
        .pci_bridge()
        .controller_on_port(PortId(0), ctrl("port-unassigned", false))
        .controller_on_bridge(BridgeId(0), ctrl("bridge-assigned", true))
        .controller_on_bridge(BridgeId(0), ctrl("bridge-unassigned", false))
        .build();
    assert_eq!(sim.bar(CtrlId(0)), 0);
    assert_eq!(sim.bar(CtrlId(2)), 0);
    let kept = sim.bar(CtrlId(1));
    let (mut driver, ids) = up(&sim, ControllerConfig::default());
    assert_eq!(ids.len(), 3, "{:?}", sim.protocol_log());
    assert_eq!(sim.bar(CtrlId(1)), kept);
    for c in 0..3 {
        let bar = sim.bar(CtrlId(c));
        let bus = sim.address(CtrlId(c)).unwrap().bus();
        let (start, end) = window_routing(&sim, bus);
        assert!(
            start <= bar && bar + (16 << 10) <= end,
            "BAR {bar:#x} of {c} outside its bridge window {start:#x}..{end:#x}"
        );
        assert_eq!(bar % (16 << 10), 0, "naturally aligned");
        let cmd = sim.command_register(CtrlId(c));
        assert_eq!(cmd & (MEMORY | BUS_MASTER), MEMORY | BUS_MASTER);
    }
    assert_disjoint(&sim, &[0, 1, 2]);
    let map = by_address(&sim, &driver, 3);
    each_serves_its_own_media(&sim, &mut driver, &map);
    finish(&sim, driver);
}

#[test]
fn bus_0_controllers_without_firmware_bars_are_placed_in_the_root_window() {
    let window = (MMIO_APERTURE.0 + (64 << 20), 1 << 20);
    let sim = Sim::builder()
        .controller_on_bus0(ctrl("a", false))
        .controller_on_bus0(ctrl("b", false))
        .controller_on_bus0(ctrl("c", true))
        .build();
    let kept = sim.bar(CtrlId(2));
    let config = DriverConfig::default().root_window(Some((PhysAddr::new(window.0), window.1)));
    let (mut driver, ids) = up_with(&sim, config);
    assert_eq!(ids.len(), 3, "{:?}", sim.protocol_log());
    for c in 0..2 {
        let bar = sim.bar(CtrlId(c));
        assert!(window.0 <= bar && bar + (16 << 10) <= window.0 + window.1);
    }
    assert_eq!(sim.bar(CtrlId(2)), kept, "a valid firmware BAR is kept");
    assert_disjoint(&sim, &[0, 1, 2]);
    let map = by_address(&sim, &driver, 3);
    each_serves_its_own_media(&sim, &mut driver, &map);
    finish(&sim, driver);
}

#[test]
fn without_firmware_the_driver_numbers_the_buses_and_places_bus_0_bars() {
    let window = (MMIO_APERTURE.0, 16 << 20);
    let sim = Sim::builder()
        .firmware_configured(false)
        .root_port(true)
        .pci_bridge()
        .controller_on_port(PortId(0), ctrl("port", false))
        .controller_on_bridge(BridgeId(0), ctrl("bridge", false))
        .controller_on_bus0(ctrl("bus0-a", false))
        .controller_on_bus0(ctrl("bus0-b", false))
        .build();
    assert_eq!(sim.address(CtrlId(0)), None, "no bus numbers yet");
    assert_eq!(sim.address(CtrlId(1)), None);
    let config = DriverConfig::default().root_window(Some((PhysAddr::new(window.0), window.1)));
    let (mut driver, _) = up_with(&sim, config);
    // Buses behind both bridges got distinct numbers, so those controllers'
    // configuration space answers now.
    let port_bus = sim.address(CtrlId(0)).expect("port bus numbered").bus();
    let bridge_bus = sim.address(CtrlId(1)).expect("bridge bus numbered").bus();
    assert!(port_bus != 0 && bridge_bus != 0 && port_bus != bridge_bus);
    // Every controller is served: bridge windows were opened and sized by
    // the driver, bus 0 BARs sit in the root window outside them.
    let map = by_address(&sim, &driver, 4);
    assert_eq!(map.len(), 4, "{map:?}");
    for c in 0..4 {
        let bar = sim.bar(CtrlId(c));
        assert!(window.0 <= bar && bar + (16 << 10) <= window.0 + window.1);
        if c < 2 {
            let bus = sim.address(CtrlId(c)).unwrap().bus();
            let (start, end) = window_routing(&sim, bus);
            assert!(start <= bar && bar + (16 << 10) <= end);
        }
    }
    assert_disjoint(&sim, &[0, 1, 2, 3]);
    each_serves_its_own_media(&sim, &mut driver, &map);
    finish(&sim, driver);
}

#[test]
fn a_controller_hot_added_into_a_port_the_driver_configured_is_served() {
    let window = (MMIO_APERTURE.0, 64 << 20);
    let sim = Sim::builder()
        .firmware_configured(false)
        .root_port(true)
        .root_port(true)
        .controller_on_port(PortId(0), ctrl("cold", false))
        .build();
    let config = DriverConfig::default().root_window(Some((PhysAddr::new(window.0), window.1)));
    let (mut driver, ids) = up_with(&sim, config);
    assert_eq!(ids.len(), 1);
    // The empty port (the second device after the host bridge) was given
    // its reserve: a window and spare buses.
    let buses = cfg_read(&sim.config_access(), PciAddress::new(0, 0, 2, 0), 0x18);
    let (secondary, subordinate) = ((buses >> 8) as u8, (buses >> 16) as u8);
    assert!(subordinate >= secondary + 3, "{buses:#x}");
    let (start, end) = window_routing(&sim, secondary);
    assert!(end - start >= 2 << 20, "{start:#x}..{end:#x}");
    let hot = sim.hot_add(PortId(1), ctrl("hot", false));
    let deadline = sim.now() + PATIENCE;
    while driver.ready_controllers().count() < 2 && sim.now() < deadline {
        let _ = driver.tick();
        sim.advance(std::time::Duration::from_millis(1));
    }
    assert_eq!(driver.ready_controllers().count(), 2);
    let bar = sim.bar(hot);
    let bus = sim.address(hot).unwrap().bus();
    let (start, end) = window_routing(&sim, bus);
    assert!(start <= bar && bar + (16 << 10) <= end);
    let map = by_address(&sim, &driver, 2);
    each_serves_its_own_media(&sim, &mut driver, &map);
    finish(&sim, driver);
}

#[test]
fn reassign_replaces_what_firmware_assigned_and_serves_everything() {
    // A host window away from where firmware placed things.
    let window = (MMIO_APERTURE.0 + (256 << 20), 64 << 20);
    let sim = Sim::builder()
        .root_port(true)
        .root_port(false)
        .pci_bridge()
        .controller_on_port(PortId(0), ctrl("port0", true))
        .controller_on_port(PortId(1), ctrl("port1", false))
        .controller_on_bridge(BridgeId(0), ctrl("bridge", true))
        .controller_on_bus0(ctrl("bus0", true))
        .build();
    let config = DriverConfig::default()
        .root_window(Some((PhysAddr::new(window.0), window.1)))
        .reassign(true);
    let (mut driver, ids) = up_with(&sim, config);
    assert_eq!(ids.len(), 4, "{:?}", sim.protocol_log());
    for c in 0..4 {
        let bar = sim.bar(CtrlId(c));
        assert!(
            window.0 <= bar && bar + (16 << 10) <= window.0 + window.1,
            "BAR {bar:#x} of {c} not in the host window"
        );
    }
    assert_disjoint(&sim, &[0, 1, 2, 3]);
    let map = by_address(&sim, &driver, 4);
    each_serves_its_own_media(&sim, &mut driver, &map);
    finish(&sim, driver);
}

#[test]
fn a_bus_0_controller_with_nowhere_to_place_its_bar_is_left_disabled() {
    let sim = Sim::builder()
        .root_port(true)
        .controller_on_port(PortId(0), ctrl("served", true))
        .controller_on_bus0(ctrl("homeless", false))
        .build();
    let mut driver = Box::new(Drv::new(
        sim.platform(),
        sim.config_access(),
        DriverConfig::default(),
    ));
    assert_eq!(driver.scan().unwrap(), 1);
    let _ = driver.wait_ready(PATIENCE);
    assert_eq!(driver.ready_controllers().count(), 1);
    assert_eq!(sim.bar(CtrlId(1)), 0);
    assert_eq!(sim.command_register(CtrlId(1)) & (MEMORY | BUS_MASTER), 0);
    let map = by_address(&sim, &driver, 2);
    assert_eq!(map.keys().collect::<Vec<_>>(), [&0]);
    each_serves_its_own_media(&sim, &mut driver, &map);
    finish(&sim, driver);
}

/// Five controllers on bus 0, one more than a default driver serves.
fn five_on_bus0() -> Sim {
    (0..5)
        .fold(Sim::builder(), |b, i| {
            b.controller_on_bus0(ctrl(&format!("c{i}"), true))
        })
        .build()
}

#[test]
fn controllers_beyond_the_driver_capacity_are_left_untouched() {
    let sim = five_on_bus0();
    let commands: Vec<u16> = (0..5).map(|c| sim.command_register(CtrlId(c))).collect();
    let (mut driver, ids) = up(&sim, ControllerConfig::default());
    assert_eq!(ids.len(), bare_nvme::MAX_CONTROLLERS);
    let map = by_address(&sim, &driver, 5);
    let left: Vec<usize> = (0..5).filter(|c| !map.contains_key(c)).collect();
    assert_eq!(left.len(), 1);
    let c = CtrlId(left[0]);
    assert_eq!(sim.command_register(c), commands[left[0]], "not touched");
    assert!(!sim.is_ready(c));
    each_serves_its_own_media(&sim, &mut driver, &map);
    finish(&sim, driver);
}

#[test]
fn a_driver_sized_for_more_controllers_serves_them_all() {
    let sim = five_on_bus0();
    let mut driver: Box<bare_nvme::Driver<_, _, 8>> = Box::new(bare_nvme::Driver::new(
        sim.platform(),
        sim.config_access(),
        DriverConfig::default(),
    ));
    assert_eq!(driver.scan().unwrap(), 5);
    let _ = driver.wait_ready(PATIENCE);
    let ids: Vec<ControllerId> = driver.ready_controllers().collect();
    assert_eq!(ids.len(), 5);
    for id in ids {
        driver.controller(id).unwrap().flush(1).unwrap();
        driver.controller(id).unwrap().detach().unwrap();
    }
    // One asked for, one at each detach (the controllers have a volatile
    // write cache).
    assert_eq!(sim.counters().io(bare_nvme::nvme::command::nvm::FLUSH), 10);
    assert_clean(&sim);
    assert_eq!(sim.counters().dma_regions, 0);
}

#[test]
fn a_bus_0_function_found_later_is_placed_outside_the_bridge_windows() {
    // A small root window: the bridge windows fill its start, so a BAR
    // placed without knowing them would land inside one.
    let window = (MMIO_APERTURE.0, 8 << 20);
    let sim = Sim::builder()
        .firmware_configured(false)
        .root_port(true)
        .root_port(true)
        .controller_on_port(PortId(0), ctrl("port", false))
        .build();
    let config = DriverConfig::default()
        .root_window(Some((PhysAddr::new(window.0), window.1)))
        .bus_rescan_interval(Some(std::time::Duration::from_millis(50)));
    let (mut driver, ids) = up_with(&sim, config);
    assert_eq!(ids.len(), 1);
    let late = sim.hot_add_at(bare_nvme_sim::Location::Bus0, ctrl("late", false));
    let deadline = sim.now() + PATIENCE;
    while driver.ready_controllers().count() < 2 && sim.now() < deadline {
        let _ = driver.tick();
        sim.advance(std::time::Duration::from_millis(1));
    }
    assert_eq!(driver.ready_controllers().count(), 2);
    let bar = sim.bar(late);
    assert!(window.0 <= bar && bar + (16 << 10) <= window.0 + window.1);
    let cfg = sim.config_access();
    for device in [1, 2] {
        let secondary = (cfg_read(&cfg, PciAddress::new(0, 0, device, 0), 0x18) >> 8) as u8;
        let (start, end) = window_routing(&sim, secondary);
        assert!(
            bar + (16 << 10) <= start || end <= bar,
            "BAR {bar:#x} inside the window {start:#x}..{end:#x} of 00:{device:02x}.0"
        );
    }
    let map = by_address(&sim, &driver, 2);
    each_serves_its_own_media(&sim, &mut driver, &map);
    finish(&sim, driver);
}
