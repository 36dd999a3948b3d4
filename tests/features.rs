//! Features (temperature threshold, volatile write cache), Force Unit
//! Access writes, and the flush an orderly detach starts with.

mod common;

use std::time::Duration;

use bare_nvme::nvme::command::nvm;
use bare_nvme::nvme::log::CriticalWarning;
use bare_nvme::QueueId;
use bare_nvme::{ControllerConfig, Error, Event, Platform, Threshold};
use bare_nvme_sim::{CtrlId, Hold};
use common::*;

const C: CtrlId = CtrlId(0);

#[test]
fn the_temperature_threshold_reads_back_and_shows_in_the_health_log() {
    let (sim, mut driver, id) = single(spec(8192, 512), ControllerConfig::default());
    let c = driver.controller(id).unwrap();
    assert_eq!(c.temperature_threshold(Threshold::Over).unwrap(), 343);
    assert!(!c
        .smart_log()
        .unwrap()
        .critical_warning
        .contains(CriticalWarning::TEMPERATURE));
    // Below the composite temperature (323 K): over the threshold now.
    c.set_temperature_threshold(Threshold::Over, 300).unwrap();
    assert_eq!(c.temperature_threshold(Threshold::Over).unwrap(), 300);
    assert!(c
        .smart_log()
        .unwrap()
        .critical_warning
        .contains(CriticalWarning::TEMPERATURE));
    c.set_temperature_threshold(Threshold::Under, 280).unwrap();
    assert_eq!(c.temperature_threshold(Threshold::Under).unwrap(), 280);
    assert!(matches!(
        c.set_temperature_threshold(Threshold::Over, 0),
        Err(Error::InvalidArgument { .. })
    ));
    finish(&sim, driver);
}

#[test]
fn a_disabled_write_cache_makes_every_write_durable() {
    let (sim, mut driver, id) = single(spec(8192, 512), ControllerConfig::default());
    let p = sim.platform();
    let data = filled(&p, 4096, 1);
    let c = driver.controller(id).unwrap();
    assert!(c.volatile_write_cache().unwrap());
    c.write(1, 0, &data).unwrap();
    assert_eq!(sim.dirty_blocks(C, 1), 8, "cached");
    c.set_volatile_write_cache(false).unwrap();
    assert!(!c.volatile_write_cache().unwrap());
    assert_eq!(sim.dirty_blocks(C, 1), 0, "written back when disabled");
    c.write(1, 8, &data).unwrap();
    assert_eq!(sim.dirty_blocks(C, 1), 0, "durable at once");
    c.set_volatile_write_cache(true).unwrap();
    p.dma_free(data);
    finish(&sim, driver);
}

#[test]
fn write_cache_calls_on_a_controller_without_one_are_unsupported() {
    let (sim, mut driver, id) = single(
        spec(8192, 512).volatile_cache(false),
        ControllerConfig::default(),
    );
    let before = sim.counters().admin_commands;
    let c = driver.controller(id).unwrap();
    assert!(matches!(
        c.volatile_write_cache(),
        Err(Error::Unsupported { .. })
    ));
    assert!(matches!(
        c.set_volatile_write_cache(false),
        Err(Error::Unsupported { .. })
    ));
    assert_eq!(sim.counters().admin_commands, before, "nothing sent");
    finish(&sim, driver);
}

#[test]
fn a_fua_write_is_durable_without_a_flush() {
    let (sim, mut driver, id) = single(spec(8192, 512), ControllerConfig::default());
    let p = sim.platform();
    let data = filled(&p, 8192, 2);
    let c = driver.controller(id).unwrap();
    c.write_fua(1, 0, &data).unwrap();
    assert_eq!(sim.dirty_blocks(C, 1), 0);
    assert!(sim.read_block(C, 1, 3) == pattern(8192, 2)[1536..2048]);
    // Plain writes stay cached (the flag is per call).
    c.write(1, 100, &data).unwrap();
    assert_eq!(sim.dirty_blocks(C, 1), 16);
    p.dma_free(data);
    finish(&sim, driver);
}

fn detach(sim: &bare_nvme_sim::Sim, driver: &mut BoxedDrv, id: bare_nvme::ControllerId) {
    driver.begin_detach(id).unwrap();
    for _ in 0..10_000 {
        sim.advance(Duration::from_millis(1));
        if driver
            .tick()
            .iter()
            .any(|e| matches!(e, Event::Removed { .. }))
        {
            return;
        }
    }
    panic!("no detach");
}

#[test]
fn an_orderly_detach_flushes_each_namespace_only_where_a_cache_exists() {
    let two = || spec(8192, 512).namespace(bare_nvme_sim::NamespaceSpec::new(4096, 512));
    let (sim, mut driver, id) = single(two(), ControllerConfig::default());
    let p = sim.platform();
    let data = filled(&p, 4096, 3);
    driver.controller(id).unwrap().write(2, 0, &data).unwrap();
    p.dma_free(data);
    let before = sim.counters().io_commands[nvm::FLUSH as usize];
    detach(&sim, &mut driver, id);
    assert_eq!(sim.counters().io_commands[nvm::FLUSH as usize] - before, 2);
    assert_eq!(driver.controller(id).unwrap().failed_commands(), 0);
    assert_clean(&sim);
    drop(driver);

    let (sim, mut driver, id) = single(two().volatile_cache(false), ControllerConfig::default());
    detach(&sim, &mut driver, id);
    assert_eq!(sim.counters().io_commands[nvm::FLUSH as usize], 0);
    assert_clean(&sim);
}

#[test]
fn a_detach_flush_the_device_never_answers_is_not_a_caller_command() {
    let config = ControllerConfig::default().io_timeout(Duration::from_millis(50));
    let (sim, mut driver, id) = single(spec(8192, 512).hold(Hold::Io), config);
    detach(&sim, &mut driver, id);
    let c = driver.controller(id).unwrap();
    assert_eq!(c.failed_commands(), 0);
    assert_eq!(
        c.poll(QueueId::FIRST, |d| panic!(
            "the flush is not the caller's: {}",
            d.tag
        )),
        0
    );
    sim.release_all();
    assert_clean(&sim);
}
