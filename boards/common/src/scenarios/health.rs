//! `health`: what a controller reports on its own, collected by the tick
//! without interrupts.
//!
//! `mode=smart`: once the controller serves, the host sets the device's
//! `smart_critical_warning` property over QMP (`@@WAIT set`); the tick must
//! report `Health` with that bit within a few ticks, once, and the SMART log
//! read afterwards must show it.
//!
//! `mode=ns`: a controller in an NVM subsystem with two namespaces. The
//! guest detaches namespace 2 from its controller with Namespace Attachment
//! (admin passthrough) and attaches it again; the tick must report it removed
//! then added, while verified I/O on namespace 1 goes on every tick, and
//! namespace 2 serves again afterwards with its data intact.

use core::time::Duration;

use bare_nvme::nvme::command::{admin, SubmissionEntry};
use bare_nvme::{ControllerId, Error, Event};

use super::{check_dma_returned, wait_for_host, Context, Outcome, Scenario};
use crate::nvme::{self, ctrl, verified_io, Buffers, Monitor, Nvme};
use crate::{dma, ensure, failure, marker};

/// The scenario.
pub const SCENARIO: Scenario = Scenario {
    name: "health",
    about: "asynchronous events on the tick: a SMART warning set over QMP, a namespace detached and attached",
    run,
};

/// Ticks every millisecond.
const PERIOD: Duration = Duration::from_millis(1);

fn run(board: &Context) -> Outcome {
    let args = board.args;
    let baseline = dma::stats();
    let config = nvme::config_from(&args)?;
    let mut d = nvme::driver(board.platform, board.access, config);
    let attached = d.scan().map_err(|e| failure!("scan: {e}"))?;
    ensure!(attached == 1, "{attached} controllers found, 1 expected");
    let _ = d.wait_ready(Duration::from_secs(10));
    let id = d
        .ready_controllers()
        .next()
        .ok_or_else(|| failure!("controller not ready"))?;
    let outstanding = ctrl(&mut d, id)?.async_events_outstanding();
    marker!("RESULT event_requests={outstanding}");
    let mut monitor = Monitor::new(PERIOD);
    match args.get("mode") {
        Some("smart") => smart(&mut d, &mut monitor, id)?,
        Some("ns") => namespaces(&mut d, &mut monitor, id)?,
        other => return Err(failure!("unknown mode {other:?}")),
    }
    d.begin_detach(id)
        .map_err(|e| failure!("detach {id}: {e}"))?;
    monitor.removals(&mut d, 1, 10_000)?;
    drop(d);
    check_dma_returned(baseline)
}

fn smart(d: &mut Nvme, monitor: &mut Monitor, id: ControllerId) -> Outcome {
    // Quiet first: nothing is reported while nothing happens.
    monitor.quiet(d, 20)?;
    marker!("PHASE armed");
    wait_for_host("set", 10_000)?;
    let (event, ticks, _) = monitor.until(
        d,
        5_000,
        "Health event",
        |e| matches!(e, Event::Health { .. }),
        |_| Ok(()),
    )?;
    let Event::Health {
        warning,
        temperature,
        ..
    } = event
    else {
        return Err(failure!("not a health event"));
    };
    marker!(
        "RESULT health_warning={:#04x} health_temperature={temperature} health_ticks={ticks}",
        warning.bits()
    );
    // Once: the following ticks stay quiet.
    monitor.quiet(d, 200)?;
    marker!("RESULT health_events=1");
    let log = ctrl(d, id)?
        .smart_log()
        .map_err(|e| failure!("SMART log: {e}"))?;
    marker!(
        "RESULT smart_warning={:#04x} smart_temperature={} power_on_hours={}",
        log.critical_warning.bits(),
        log.temperature,
        log.power_on_hours
    );
    let fw = ctrl(d, id)?
        .firmware_log()
        .map_err(|e| failure!("firmware log: {e}"))?;
    marker!("RESULT firmware_slot={}", fw.active_slot);
    let errors = ctrl(d, id)?
        .error_log()
        .map_err(|e| failure!("error log: {e}"))?;
    marker!("RESULT error_entries={}", errors.len());
    Ok(())
}

/// Namespace Attachment of namespace `nsid` to (or from) this controller.
fn attachment(d: &mut Nvme, id: ControllerId, nsid: u32, detach: bool) -> Outcome {
    let c = ctrl(d, id)?;
    let cntlid = c
        .info()
        .map(|i| i.controller_id)
        .ok_or_else(|| failure!("no identify data"))?;
    let mut buffers = Buffers::new(*c.platform());
    let list = buffers.alloc(4096)?;
    let bytes = buffers.regions[list].as_mut_slice();
    bytes[..4].copy_from_slice(&[1, 0, cntlid as u8, (cntlid >> 8) as u8]);
    let mut sqe = SubmissionEntry::new(admin::NAMESPACE_ATTACHMENT);
    sqe.nsid = nsid;
    sqe.cdw10 = detach as u32;
    c.admin_passthrough(sqe, Some(&mut buffers.regions[list]))
        .map_err(|e| failure!("namespace attachment: {e}"))?;
    Ok(())
}

fn namespaces(d: &mut Nvme, monitor: &mut Monitor, id: ControllerId) -> Outcome {
    let count = ctrl(d, id)?.namespaces().len();
    ensure!(count == 2, "{count} namespaces, 2 expected");
    verified_io(ctrl(d, id)?, 2, 64, 64 << 10, 21)?;
    let mut rounds = 0u32;
    let mut io_on_first = |d: &mut Nvme| -> Outcome {
        rounds += 1;
        verified_io(
            ctrl(d, id)?,
            1,
            (rounds as u64 % 64) * 16,
            8192,
            rounds as u64,
        )
    };
    // Either namespace event ends a wait: the one that came is checked.
    let namespace_event = |e: &Event| {
        matches!(
            e,
            Event::NamespaceRemoved { .. } | Event::NamespaceAdded { .. }
        )
    };
    attachment(d, id, 2, true)?;
    let (removed, ticks_removed, _) = monitor.until(
        d,
        5_000,
        "NamespaceRemoved",
        namespace_event,
        &mut io_on_first,
    )?;
    ensure!(
        removed == Event::NamespaceRemoved { id, nsid: 2 },
        "first namespace event {removed:?}"
    );
    let mut buffers = Buffers::new(*ctrl(d, id)?.platform());
    let b = buffers.alloc(4096)?;
    let refused = ctrl(d, id)?.read(2, 0, &mut buffers.regions[b]);
    ensure!(
        refused == Err(Error::UnknownNamespace { nsid: 2 }),
        "read of the removed namespace: {refused:?}"
    );
    attachment(d, id, 2, false)?;
    let (added, ticks_added, _) = monitor.until(
        d,
        5_000,
        "NamespaceAdded",
        namespace_event,
        &mut io_on_first,
    )?;
    ensure!(
        added == Event::NamespaceAdded { id, nsid: 2 },
        "second namespace event {added:?}"
    );
    marker!(
        "RESULT namespace_events=removed,added removed_ticks={ticks_removed} added_ticks={ticks_added} io_rounds={rounds}"
    );
    // The namespace serves again, with what was written before.
    let c = ctrl(d, id)?;
    let block = c
        .namespace(2)
        .map_err(|e| failure!("namespace 2: {e}"))?
        .block_size() as usize;
    let mut buffers = Buffers::new(*c.platform());
    let r = buffers.alloc(64 << 10)?;
    c.read(2, 64, &mut buffers.regions[r])
        .map_err(|e| failure!("read namespace 2: {e}"))?;
    let kept = nvme::mismatch(&buffers.regions[r], 21, 64, block).is_none();
    marker!(
        "RESULT namespace_data={}",
        if kept { "kept" } else { "lost" }
    );
    ensure!(kept, "namespace 2 lost its data");
    verified_io(c, 2, 256, 8192, 5)?;
    Ok(())
}
