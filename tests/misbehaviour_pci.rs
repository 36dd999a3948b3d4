//! Configuration space that lies: an absurd BAR size, a capability list
//! that loops, an invalid header type. Enumeration stays bounded, refuses
//! what it cannot use, and serves the healthy controllers beside it.

mod misbehaviour_common;

use std::time::Duration;

use bare_nvme::Driver;
use bare_nvme_sim::{ControllerSpec, CtrlId, Location, NamespaceSpec, PortId, Sim};
use misbehaviour_common::*;

fn healthy() -> ControllerSpec {
    ControllerSpec::default()
        .serial("good")
        .namespace(NamespaceSpec::new(256, 512))
}

/// Scans `sim`, brings up what attached, and returns the serials that
/// became ready (each also serving a round trip).
fn ready_serials(sim: &Sim, root_window: bool) -> Vec<String> {
    let mut cfg = config();
    if root_window {
        cfg.root_window = Some((bare_nvme::PhysAddr::new(0xC000_0000), 0x3000_0000));
    }
    let mut driver = Box::new(Driver::new(sim.platform(), sim.config_access(), cfg));
    driver.scan().expect("the scan itself succeeds");
    let events = tick_for(&mut driver, sim, Duration::from_secs(5), |d| {
        d.ready_controllers().count() == d.controllers().count()
    });
    let _ = events;
    let ids: Vec<_> = driver.ready_controllers().collect();
    let mut serials = Vec::new();
    for id in ids {
        serials.push(
            driver
                .controller(id)
                .unwrap()
                .info()
                .unwrap()
                .serial
                .as_str()
                .to_string(),
        );
        round_trip(&mut driver, sim, id, 0);
    }
    finish(driver, sim);
    serials.sort();
    serials
}

#[test]
fn an_absurd_bar_size_is_refused_and_the_neighbour_served() {
    let sim = Sim::builder()
        .firmware_configured(false)
        .controller_on_bus0(healthy().serial("huge").bar_size(1 << 63))
        .controller_on_bus0(healthy())
        .build();
    assert_eq!(ready_serials(&sim, true), ["good"]);
    // Never mapped, never enabled for memory decoding.
    assert_eq!(sim.command_register(CtrlId(0)) & 0x2, 0);
}

#[test]
fn an_absurd_bar_size_behind_a_hot_plug_port_is_refused() {
    let sim = Sim::builder()
        .root_port(true)
        .controller_on_port(PortId(0), healthy().serial("huge").bar_size(1 << 40))
        .root_port(true)
        .controller_on_port(PortId(1), healthy())
        .build();
    assert_eq!(ready_serials(&sim, true), ["good"]);
    assert_eq!(sim.bar(CtrlId(0)), 0, "never placed");
}

#[test]
fn a_capability_cycle_is_bounded() {
    let sim = Sim::builder()
        .controller_on_bus0(healthy().serial("cycle").capability_cycle(true))
        .controller_on_bus0(healthy())
        .build();
    let before = sim.access_count();
    let serials = ready_serials(&sim, false);
    assert!(serials.contains(&"good".to_string()), "{serials:?}");
    // Whatever it decided about the looping function, it decided quickly.
    assert!(sim.access_count() - before < 100_000);
}

#[test]
fn a_capability_cycle_on_a_root_port_does_not_hang_the_slot_poll() {
    let sim = Sim::builder()
        .root_port(true)
        .controller_on_port(PortId(0), healthy().capability_cycle(true))
        .build();
    let serials = ready_serials(&sim, false);
    assert!(serials.len() <= 1);
}

#[test]
fn an_invalid_header_type_is_skipped() {
    for header in [0x7F, 0x02, 0x03] {
        let sim = Sim::builder()
            .controller_on_bus0(healthy().serial("odd").header_type(header))
            .controller_on_bus0(healthy())
            .build();
        assert_eq!(ready_serials(&sim, false), ["good"], "header {header:#x}");
    }
}

#[test]
fn a_hot_added_controller_with_an_absurd_bar_is_refused() {
    let sim = Sim::builder().root_port(true).build();
    let mut driver = Box::new(Driver::new(sim.platform(), sim.config_access(), config()));
    driver.scan().unwrap();
    sim.hot_add_at(Location::Port(PortId(0)), healthy().bar_size(1 << 62));
    let events = tick_for(&mut driver, &sim, Duration::from_millis(200), |_| false);
    assert!(driver.ready_controllers().next().is_none(), "{events:?}");
    finish(driver, &sim);
    assert_eq!(sim.command_register(CtrlId(0)) & 0x2, 0, "never decoding");
}
