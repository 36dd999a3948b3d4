//! The scripted operations: I/O through the driver and what the device
//! and the machine do meanwhile.

use std::time::Duration;

use bare_nvme::{ControllerId, DmaRegion, IoOp, Platform, QueueId};

use crate::device::FuzzPlatform;
use crate::input::rule;
use crate::ledger::{poll_all, tick, Ledger};
use crate::rig::Rig;
use crate::{tracing, FuzzDriver, MAX_TRANSFER, OP_BYTES};

/// Allocates `len` bytes for a transfer, `pad` bytes past where the
/// arena's first fit would put it (so not page aligned when `pad > 0`).
pub(crate) fn transfer_buffer(
    platform: &FuzzPlatform,
    len: usize,
    pad: usize,
) -> Option<DmaRegion> {
    let spacer = if pad > 0 {
        Some(platform.dma_alloc(pad, 4)?)
    } else {
        None
    };
    let buffer = platform.dma_alloc(len, if pad > 0 { 4 } else { 4096 });
    if let Some(spacer) = spacer {
        platform.dma_free(spacer);
    }
    buffer
}

/// Operations: `kind % OPS` picks one.
const OPS: u8 = 24;

/// One scripted operation: `kind % OPS` picks it, `kind / OPS` the
/// controller (driver's or simulated) it is about.
pub(crate) fn step(
    rig: &mut Rig,
    driver: &mut FuzzDriver,
    ledger: &mut Ledger,
    op: [u8; OP_BYTES],
) {
    let [kind, a, b, c] = op;
    let pick = kind / OPS;
    let id = driver.controllers().nth(usize::from(pick & 1));
    if tracing() {
        let state = id.map(|id| driver.controller(id).map(|c| c.state()));
        eprintln!("op {} {a} {b} {c} on {pick} in {state:?}", kind % OPS);
    }
    match kind % OPS {
        0 | 1 | 21 => {
            if let Some(id) = id {
                submit_transfer(rig, driver, ledger, id, op);
            }
        }
        2 => poll_all(driver, ledger),
        3 => tick(driver, ledger),
        4 | 5 => {
            if let Some(id) = id {
                blocking_transfer(rig, driver, ledger, id, op);
            }
        }
        6 => {
            if let Some(id) = id {
                if let Ok(ctrl) = driver.controller(id) {
                    let nsid = ctrl.namespaces().first().map_or(1, |n| n.id());
                    let _ = ctrl.flush(nsid);
                }
            }
        }
        7 => {
            if let Some(id) = id {
                submit_other(driver, ledger, id, op);
            }
        }
        11 => {
            if let Some(id) = id {
                let _ = driver.begin_detach(id);
            }
        }
        12 => {
            rig.sim.advance(Duration::from_millis(u64::from(a)));
            tick(driver, ledger);
        }
        14 => {
            let target = rig.ctrl(pick);
            let port = rig.ctrls[usize::from(pick) % rig.ctrls.len()].1;
            match port {
                Some(port) if rig.sim.address(target).is_some() && a & 1 == 0 => {
                    rig.reset_behind = true;
                    rig.sim.link_flap(port);
                }
                _ => {
                    let events = driver.wait_ready(Duration::from_millis(u64::from(a)));
                    ledger.events(&events);
                }
            }
        }
        _ => device_event(rig, op),
    }
}

/// Ops 0, 1 and 21: a read or write submitted to controller `id`: up to 8
/// blocks, or (op 21) up to 64 KiB from a buffer `pad` bytes off a page
/// boundary (PRP lists and offsets).
fn submit_transfer(
    rig: &Rig,
    driver: &mut FuzzDriver,
    ledger: &mut Ledger,
    id: ControllerId,
    [kind, a, b, c]: [u8; OP_BYTES],
) {
    let Ok(ctrl) = driver.controller(id) else {
        return;
    };
    let Some(ns) = ctrl.namespaces().first().copied() else {
        return;
    };
    let queue = u16::from(a & 3);
    let bs = ns.block_size() as usize;
    // Up to 8 blocks, or (op 21) up to 64 KiB from a buffer `pad`
    // bytes off a page boundary: PRP lists and offsets.
    let (blocks, pad) = if kind % OPS == 21 {
        let max = (MAX_TRANSFER / bs) as u32;
        (1 + u32::from(b) % max, usize::from(a >> 2) * 4)
    } else {
        (1 + u32::from(b & 7), 0)
    };
    let lba = u64::from(c) % (ns.blocks() + 4);
    let len = blocks as usize * bs;
    let Some(buffer) = transfer_buffer(&rig.platform, len, pad) else {
        return;
    };
    let nsid = ns.id();
    let op = if kind % OPS == 0 || (kind % OPS == 21 && b & 0x80 != 0) {
        IoOp::Read { nsid, lba, blocks }
    } else {
        IoOp::Write { nsid, lba, blocks }
    };
    let tag = ledger.tag();
    match ctrl.submit(QueueId::new(queue), op, Some(buffer), tag) {
        Ok(_) => {
            ledger.outstanding.insert(tag, id);
        }
        Err(rejected) => ledger.give_back(rejected.buffer),
    }
}

/// Ops 4 and 5: a blocking read or write on controller `id`.
fn blocking_transfer(
    rig: &Rig,
    driver: &mut FuzzDriver,
    ledger: &mut Ledger,
    id: ControllerId,
    [kind, a, b, c]: [u8; OP_BYTES],
) {
    let Ok(ctrl) = driver.controller(id) else {
        return;
    };
    let Some(ns) = ctrl.namespaces().first().copied() else {
        return;
    };
    let len = (1 + usize::from(b & 3)) * ns.block_size() as usize;
    let Some(mut buffer) = transfer_buffer(&rig.platform, len, usize::from(a >> 2) * 4) else {
        return;
    };
    let lba = u64::from(c) % ns.blocks();
    let result = if kind % OPS == 4 {
        ctrl.read(ns.id(), lba, &mut buffer)
    } else {
        ctrl.write(ns.id(), lba, &buffer)
    };
    if tracing() {
        eprintln!("blocking {result:?} buffer {:#x}", buffer.phys().as_u64());
    }
    if matches!(result, Err(bare_nvme::Error::Quarantined)) {
        // The device may still write it: never reused.
        ledger.kept += 1;
    } else {
        ledger.give_back(Some(buffer));
    }
}

/// Op 7: Write Zeroes, Deallocate or Flush submitted to controller `id`.
fn submit_other(
    driver: &mut FuzzDriver,
    ledger: &mut Ledger,
    id: ControllerId,
    [_, a, b, c]: [u8; OP_BYTES],
) {
    let Ok(ctrl) = driver.controller(id) else {
        return;
    };
    let nsid = ctrl.namespaces().first().map_or(1, |n| n.id());
    let (lba, blocks) = (u64::from(b), 1 + u32::from(c));
    let op = match a & 3 {
        0 => IoOp::WriteZeroes { nsid, lba, blocks },
        1 => IoOp::Deallocate { nsid, lba, blocks },
        _ => IoOp::Flush { nsid },
    };
    let tag = ledger.tag();
    match ctrl.submit(QueueId::new(u16::from(a >> 2 & 3)), op, None, tag) {
        Ok(_) => {
            ledger.outstanding.insert(tag, id);
        }
        Err(rejected) => ledger.give_back(rejected.buffer),
    }
}

/// What the device or the machine does by itself: the ops not about the
/// driver's calls.
fn device_event(rig: &mut Rig, [kind, a, b, _]: [u8; OP_BYTES]) {
    let pick = kind / OPS;
    let sim = rig.sim.clone();
    let target = rig.ctrl(pick);
    match kind % OPS {
        8 => {
            sim.complete_held(usize::from(a));
        }
        9 => sim.set_cfs(target),
        10 => sim.surprise_remove(target),
        13 => {
            if let Some(rule) = rule(a, b) {
                sim.misbehave(target, rule);
            } else {
                sim.behave(target);
            }
        }
        15 => {
            if a & 1 == 0 {
                sim.hang(target);
            } else {
                sim.unhang(target);
            }
        }
        16 => sim.ignore_config_writes(target, a & 1 == 0),
        17 => sim.glitch(target),
        18 => sim.memory_decoding_off(target),
        19 => {
            if let Some(port) = rig.port(a) {
                if b & 1 == 0 {
                    sim.bounce_presence(port);
                } else {
                    sim.bounce_link(port);
                }
            }
        }
        20 => {
            // Hot-add into a port whose slot is empty.
            let Some(port) = rig.port(a) else { return };
            let occupied = rig
                .ctrls
                .iter()
                .any(|&(c, p)| p == Some(port) && sim.is_present(c));
            if !occupied {
                let c = sim.hot_add(port, rig.spec.clone());
                rig.ctrls.push((c, Some(port)));
            }
        }
        22 => {
            if let Some(port) = rig.port(a) {
                if b & 1 == 0 {
                    sim.link_down(port);
                    rig.reset_behind = true;
                    rig.down.push(port);
                } else {
                    sim.link_up(port);
                    rig.down.retain(|&p| p != port);
                }
            }
        }
        _ => {
            rig.reset_behind = true;
            sim.power_loss();
        }
    }
}
