//! A model-based test of the driver's lifecycle: random sequences of API
//! calls (split-phase and blocking I/O, polls, ticks, detach, scan) and
//! device events (removal, glitch, fatal status, hang, memory decoding off,
//! config writes ignored, slot bounces, link flaps, re-insertion, held
//! completions, slow disable and shutdown) run against the simulated
//! machine, each outcome checked against a small reference model of what
//! the driver may report:
//!
//! - every command is delivered exactly once (a ledger of tags), with a
//!   result the events so far allow: an error only after a device fault,
//!   a detach or a held completion; `Ok` never for a command submitted after
//!   its device vanished; the data a read returns equals the last data
//!   written there by a write that completed `Ok` (unless a write to that
//!   block is in an unknown state); a buffer withheld only in quarantine,
//! - a submission to a serving controller is accepted unless its queue is
//!   full,
//! - each controller reports `Attached` once, `Ready` at most once (and
//!   whenever it served), at most one terminal event and at most one
//!   `Quarantined`, after the terminal one,
//! - once every device behaves again, each present device is served (after
//!   a reset or a re-attach) and reads back what was written,
//! - at the end the simulation's own check runs: no wild DMA, no memory
//!   handed back while the device could write it, no protocol error, no
//!   region leaked unless the driver reported a quarantine.
//!
//! The runs are deterministic (a fixed seed). `MODEL_CASES=N cargo test
//! --test model` runs N cases instead of the default; `MODEL_SEED=S` picks
//! another seed (any u64), to explore further locally.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bare_nvme::QueueId;
use bare_nvme::{
    Completion, ControllerConfig, ControllerId, Driver, DriverConfig, Error, Event, IoOp, Platform,
    State,
};
use bare_nvme_sim::{ControllerSpec, CtrlId, Hold, Location, NamespaceSpec, PortId, Sim};
use bare_nvme_sim::{SimConfig, SimPlatform};
use proptest::prelude::*;
use proptest::test_runner::{Config as PropConfig, RngAlgorithm, TestRng, TestRunner};

type Drv = Driver<SimPlatform, SimConfig>;

/// Cases per run by default: keeps `cargo test --test model` short in CI.
const DEFAULT_CASES: u32 = 96;
/// The fixed seed of the default run.
const DEFAULT_SEED: u64 = 0x6e76_6d65_6d6f_6465;

const BLOCK: usize = 512;
const NS_BLOCKS: u64 = 256;
/// LBAs the scenario touches: few, so that commands overlap often.
const LBAS: u64 = 48;
const IO_TIMEOUT: Duration = Duration::from_millis(50);
/// LBAs a `MediaErrors` device event makes fail.
const MEDIA_ERRORS: std::ops::Range<u64> = 8..16;
/// Virtual time each clock read takes: deadlines pass in few loop rounds.
const CLOCK_STEP: Duration = Duration::from_micros(10);

mod device;
mod events;
mod io;
mod reference;
mod regressions;
mod run;
mod scenario;

use reference::*;
use scenario::*;

fn run_scenario(s: &Scenario) {
    let mut model = Model::new(s);
    model.run(&s.steps);
    let Model { sim, driver, .. } = model;
    drop(driver);
    // The simulation checks itself as the last handle goes.
    drop(sim);
}

fn cases() -> u32 {
    std::env::var("MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

fn seed() -> u64 {
    std::env::var("MODEL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_SEED)
}

#[test]
fn the_driver_keeps_the_lifecycle_model() {
    let config = PropConfig {
        cases: cases(),
        rng_algorithm: RngAlgorithm::ChaCha,
        failure_persistence: None,
        max_shrink_iters: 4096,
        ..PropConfig::default()
    };
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed().to_le_bytes());
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes);
    let mut runner = TestRunner::new_with_rng(config, rng);
    let result = runner.run(&scenario(), |s| {
        run_scenario(&s);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
