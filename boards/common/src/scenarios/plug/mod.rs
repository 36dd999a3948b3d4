//! `plug`: the driver's tick monitor against real (emulated) hot-plug: a
//! device added to an empty slot, pulled with commands in flight, pulled and
//! re-added many times, removed in an orderly way with the attention button,
//! its slot power flapped, pulled during bring-up; and a second controller
//! that keeps serving meanwhile.
//!
//! The hand (`crate::hand`) pulls devices; it shares nothing with the driver,
//! so each removal is a surprise to it.
//!
//! Arguments: `port=B:D.F` (hex) the root or switch downstream port whose
//! slot is played with, or `slot=N` its physical slot number (one of them is
//! required; the slot number holds whatever numbers the buses got);
//! `mode=` one of
//! - `cycles` (`cycles=N`): N times: `@@PHASE empty`, the host adds a
//!   controller, the tick finds it, verified I/O, `inflight=K` commands
//!   submitted, the hand pulls it, each command completes once;
//! - `surprise`: the controller cold-plugged in the slot is pulled with
//!   `inflight=K` commands in flight (a slow backend keeps them there);
//! - `button`: the host's `device_del` presses the attention button, the
//!   driver detaches, then the hand empties the slot (`@@WAIT deleted`);
//! - `slot-button`: the same press on a slot with a power controller: the
//!   driver detaches and switches the slot off, which ends the unplug (no
//!   hand); `@@PHASE emptied`, then `@@WAIT deleted`;
//! - `flap`: slot power off, the driver reports the removal, power on, the
//!   same device is reported ready and returned with its data (`quick=on`:
//!   power returns before the driver could notice);
//! - `bringup`: the controller in the slot is pulled `after_ticks=N` ticks
//!   into its bring-up;
//!
//! `warmup=BYTES` first writes, reads back and times BYTES on the controller
//! outside the slot; `survivor=io` runs verified I/O on a controller outside the slot on every
//! tick of the removal; `verify=pattern|zeroes` (zeroes for a null backend);
//! `timeout_ms=N` bounds each wait (default 10000); `pull_after_us=N` has the
//! hand wait N µs between submitting the in-flight reads and the pull.

mod bringup;
mod button;
mod cycles;
mod flap;
mod ledger;
mod pull;
mod slot_button;
mod surprise;
mod verify;
mod warmup;

use core::time::Duration;

use bare_nvme::{ControllerId, State};
use pci_types::PciAddress;

use super::{check_dma_returned, Context, Outcome, Scenario};
use crate::hand::Hand;
use crate::nvme::{self, Monitor, Nvme};
use crate::pci::{self, scan, NO_DEVICE};
use crate::{clock, dma, ensure, failure, marker};
use bringup::bringup;
use button::button;
use cycles::cycles;
use flap::flap;
use slot_button::slot_button;
use surprise::surprise;
use warmup::{idle_cost, warmup};

/// The scenario.
pub const SCENARIO: Scenario = Scenario {
    name: "plug",
    about: "hot-add, surprise removal, cycles, attention button, link flap, removal in bring-up",
    run,
};

/// Most commands kept in flight at a pull.
const MAX_INFLIGHT: usize = 64;

/// What every mode works with: the board, the tick monitor, the hand on the
/// slot and the arguments.
struct Ctx<'a> {
    board: &'a Context,
    monitor: Monitor,
    hand: Hand,
    /// The bus behind the slot.
    bus: u8,
    timeout_ms: u64,
    survivor_io: bool,
    zeroes: bool,
    inflight: usize,
    /// Guest microseconds the hand waits between submitting the reads and
    /// pulling (`pull_after_us=N`): long enough for the device model to
    /// have taken the commands in, so that they are inside it at the pull.
    pull_after_us: u64,
    /// Survivor I/O rounds done.
    survivor_rounds: u64,
}

fn run(board: &Context) -> Outcome {
    let args = board.args;
    let baseline = dma::stats();
    let number = |key, default| {
        args.number(key, default)
            .ok_or_else(|| failure!("malformed {key}="))
    };
    let config = nvme::config_from(&args)?;
    let mut d = nvme::driver(board.platform, board.access, config);
    // The scan first: without firmware it numbers the buses, and only then
    // are ports behind other ports reachable.
    d.scan().map_err(|e| failure!("scan: {e}"))?;
    let wanted = args
        .pci_address("port")
        .ok_or_else(|| failure!("malformed port="))?;
    let slot = args.get("slot").map(|_| number("slot", 0)).transpose()?;
    let topology = scan::walk(&board.config);
    let root = topology
        .root_ports
        .iter()
        .find(|p| Some(p.addr) == wanted || slot == Some(u64::from(p.slot)))
        .ok_or_else(|| failure!("no port with a slot at port= or slot="))?;
    let port = root.addr;
    let hand = Hand::new(port).ok_or_else(|| failure!("{port} has no PCIe capability"))?;
    let mut cx = Ctx {
        board,
        monitor: Monitor::new(Duration::from_millis(1)),
        hand,
        bus: root.secondary_bus,
        timeout_ms: number("timeout_ms", 10_000)?,
        survivor_io: args.get("survivor") == Some("io"),
        zeroes: args.get("verify") == Some("zeroes"),
        inflight: (number("inflight", 16)? as usize).min(MAX_INFLIGHT),
        pull_after_us: number("pull_after_us", 0)?,
        survivor_rounds: 0,
    };
    marker!("RESULT port={port} slot_bus={}", cx.bus);
    let mode = args.get("mode").unwrap_or("cycles");
    let result = match mode {
        "bringup" => bringup(&mut cx, &mut d, number("after_ticks", 1)?),
        _ => {
            settle(&mut cx, &mut d)?;
            warmup(&mut cx, &mut d, number("warmup", 0)? as usize)?;
            idle_cost(&mut d, 200)?;
            match mode {
                "cycles" => cycles(&mut cx, &mut d, number("cycles", 1)?),
                "surprise" => surprise(&mut cx, &mut d),
                "button" => button(&mut cx, &mut d),
                "slot-button" => slot_button(&mut cx, &mut d),
                "flap" => flap(&mut cx, &mut d),
                other => Err(failure!("unknown mode={other}")),
            }
        }
    };
    result?;
    detach_all(&mut cx, &mut d)?;
    marker!("RESULT survivor_rounds={}", cx.survivor_rounds);
    drop(d);
    check_dma_returned(baseline)
}

/// Ticks until no controller is coming up.
fn settle(cx: &mut Ctx, d: &mut Nvme) -> Outcome {
    let deadline = super::deadline_ms(cx.timeout_ms);
    loop {
        let ids: heapless::Vec<ControllerId, 8> = d.controllers().collect();
        let busy = ids.iter().any(|&id| {
            d.controller(id).is_ok_and(|c| {
                matches!(
                    c.state(),
                    State::Discovered | State::Resetting | State::Enabling | State::Initializing
                )
            })
        });
        if !busy {
            return Ok(());
        }
        ensure!(clock::now() < deadline, "controllers not ready in time");
        cx.monitor.tick(d);
    }
}

/// Orderly detach of every live controller; each reports Removed once, then
/// the driver stays quiet.
fn detach_all(cx: &mut Ctx, d: &mut Nvme) -> Outcome {
    let live: heapless::Vec<ControllerId, 8> = d.ready_controllers().collect();
    for &id in &live {
        d.begin_detach(id)
            .map_err(|e| failure!("detach {id}: {e}"))?;
    }
    cx.monitor.removals(d, live.len() as u32, cx.timeout_ms)?;
    cx.monitor.quiet(d, 30)
}

/// Whether `id` sits on `bus`.
fn on_bus(d: &Nvme, id: ControllerId, bus: u8) -> bool {
    d.address(id).is_ok_and(|a| a.bus() == bus)
}

/// The ready controller in the slot, if any.
fn in_slot(d: &Nvme, bus: u8) -> Option<ControllerId> {
    d.ready_controllers().find(|&id| on_bus(d, id, bus))
}

/// A ready controller outside the slot.
fn outside(d: &Nvme, bus: u8) -> Option<ControllerId> {
    d.ready_controllers().find(|&id| !on_bus(d, id, bus))
}

/// The slot's presence as the scenario sees it through its own accessor.
fn slot_filled(cx: &Ctx) -> bool {
    pci::vendor_id(&cx.board.config, PciAddress::new(0, cx.bus, 0, 0)) != NO_DEVICE
}

/// `t` in whole milliseconds.
fn ms(t: Duration) -> u64 {
    t.as_micros() as u64 / 1000
}
