//! `smp-pull`: a surprise removal with I/O in flight on both cores (needs
//! `-smp 2`). The driver brings the controller in `port=B:D.F` up with two
//! I/O queues and shares it (`Driver::share`): core 0 and core 1 each keep
//! QD 32 4 KiB reads in flight on their own queue, core 0 ticks the monitor
//! every millisecond, and once both cores moved I/O for `pull_after=N`
//! milliseconds (default 100) the hand pulls the device.
//!
//! The pull comes while both cores have reads in flight. Each core keeps a
//! ledger: every tag it submitted completes exactly once (success if the
//! device finished it before it went, `DeviceRemoved` otherwise; at least
//! one fails), no tag it did not
//! submit comes back, nothing comes after the end, and a submission after
//! the removal is refused with `DeviceRemoved` and its buffer handed back.
//! The commands failed match the monitor's count; after the share the driver
//! reports one Removed event and no second one; every DMA region comes back.

use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;

use bare_nvme::block::{BlockTarget, NamespaceHandle};
use bare_nvme::nvme::IoQueue;
use bare_nvme::{DmaRegion, Error, Event, Instant, Platform, State};

use super::{check_dma_returned, Context, Outcome, Scenario};
use crate::clock;
use crate::smp::{self, SmpError};
use bare_nvme_board_common::hand::Hand;
use bare_nvme_board_common::nvme::{self, Monitor};
use bare_nvme_board_common::platform::QemuPlatform;
use bare_nvme_board_common::{dma, ensure, failure, marker};

/// The scenario.
pub const SCENARIO: Scenario = Scenario {
    name: "smp-pull",
    about: "surprise removal with reads in flight on both cores: each command once, one Removed",
    run,
};

/// Reads in flight per queue.
const QD: usize = 32;
/// Tags each core may use (a bitmap of completions per core).
const TAGS: usize = 1 << 18;
/// How long either core may stream in all.
const LIMIT: Duration = Duration::from_secs(20);

type Queue<'a> = IoQueue<
    'a,
    QemuPlatform,
    { bare_nvme::nvme::controller::MAX_IO_QUEUES },
    { bare_nvme::nvme::controller::MAX_QUEUE_DEPTH },
>;
type Buffers = heapless::Vec<DmaRegion, QD>;

/// Completions seen, one bit per tag and core.
static SEEN: [[AtomicU64; TAGS / 64]; 2] = [const { [const { AtomicU64::new(0) }; TAGS / 64] }; 2];
/// Completions each core has seen so far (read by core 0 to time the pull).
static PROGRESS: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];
/// Reads each core has in flight now (the pull waits until both have some).
static IN_FLIGHT: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];

/// One core's account of its commands.
#[derive(Clone, Copy, Default)]
struct Ledger {
    submitted: u64,
    ok: u64,
    removed: u64,
    other_errors: u64,
    duplicates: u64,
    unknown: u64,
    refused: u64,
    refused_otherwise: u64,
    late: u64,
    buffers_kept: u64,
    stalled: bool,
    out_of_tags: bool,
}

fn run(board: &Context) -> Outcome {
    let args = board.args;
    let baseline = dma::stats();
    let cores = smp::cores();
    marker!("RESULT cores={cores}");
    ensure!(cores >= 2, "{cores} core online: the machine needs -smp 2");
    let port = args
        .pci_address("port")
        .ok_or_else(|| failure!("malformed port="))?
        .ok_or_else(|| failure!("port= is required"))?;
    let pull_after = args
        .number("pull_after", 100)
        .ok_or_else(|| failure!("malformed pull_after="))?;
    let hand = Hand::new(port).ok_or_else(|| failure!("{port} has no PCIe capability"))?;
    let mut config = nvme::config_from(&args)?;
    config.controller.io_queues = 2;
    let mut d = nvme::driver(board.platform, board.access, config);
    let attached = d.scan().map_err(|e| failure!("scan: {e}"))?;
    ensure!(attached > 0, "no NVMe controller found");
    let _ = d.wait_ready(Duration::from_secs(10));
    let id = d
        .ready_controllers()
        .next()
        .ok_or_else(|| failure!("no controller ready"))?;
    let nsid = nvme::ctrl(&mut d, id)?
        .namespaces()
        .first()
        .map(|n| n.id())
        .ok_or_else(|| failure!("no namespace"))?;
    let ns = d
        .namespace_handle(Some(id), nsid)
        .map_err(|e| failure!("namespace handle: {e}"))?;
    let platform = board.platform;
    let mut buffers = [Buffers::new(), Buffers::new()];
    for set in buffers.iter_mut() {
        for _ in 0..QD {
            let b = platform
                .dma_alloc(4096, 4096)
                .ok_or_else(|| failure!("no DMA memory"))?;
            let _ = set.push(b);
        }
    }
    let result = pull_while_shared(&mut d, id, &ns, &mut buffers, &hand, pull_after);
    for b in buffers.iter_mut().flat_map(|set| set.drain(..)) {
        platform.dma_free(b);
    }
    let failed = result?;
    // The share ended: the driver's tick reports the removal, once.
    let mut monitor = Monitor::new(Duration::from_millis(1));
    monitor.removals(&mut d, 1, 5_000)?;
    let deadline = clock::now() + Duration::from_millis(200);
    while clock::now() < deadline {
        for e in monitor.tick(&mut d) {
            ensure!(!matches!(e, Event::Removed { .. }), "removed twice: {e:?}");
        }
    }
    marker!("RESULT removed_events=1 failed_commands={failed}");
    drop(d);
    check_dma_returned(baseline)
}

/// Shares the controller, streams on both cores, pulls, checks both
/// ledgers; returns the commands the removal failed.
fn pull_while_shared(
    d: &mut nvme::Nvme,
    id: bare_nvme::ControllerId,
    ns: &NamespaceHandle,
    buffers: &mut [Buffers; 2],
    hand: &Hand,
    pull_after: u64,
) -> Result<u64, super::Failure> {
    let (mut monitor, queues) = d.share(id).map_err(|e| failure!("share: {e}"))?;
    ensure!(queues.len() == 2, "{} I/O queues", queues.len());
    let [set0, set1] = buffers;
    let start = clock::now();
    let deadline = start + LIMIT;
    let mut pulled_at = None;
    let mut theirs = Ledger::default();
    let q1 = &queues[1];
    let mut work = || theirs = stream_until_refused(1, q1, ns, set1, deadline, || {});
    let mine = smp::scope(
        LIMIT + Duration::from_secs(5),
        |s| -> Result<Ledger, SmpError> {
            let job = s.spawn(1, &mut work)?;
            let mut next_tick = clock::now();
            let mine = stream_until_refused(0, &queues[0], ns, set0, deadline, || {
                let now = clock::now();
                if now < next_tick {
                    return;
                }
                next_tick = now + Duration::from_millis(1);
                monitor.tick();
                let moved = PROGRESS
                    .iter()
                    .all(|p| p.load(Ordering::Relaxed) >= QD as u64);
                let busy = [0, 1].map(|c| IN_FLIGHT[c].load(Ordering::Relaxed));
                let due = now - start >= Duration::from_millis(pull_after);
                if pulled_at.is_none() && moved && due && busy.iter().all(|&n| n > 0) {
                    hand.remove();
                    pulled_at = Some((now, busy));
                }
            });
            job.join(deadline + Duration::from_secs(5))?;
            Ok(mine)
        },
    )
    .map_err(|e| failure!("core 1: {e}"))?;
    let (pulled_at, busy) = pulled_at.ok_or_else(|| failure!("never pulled"))?;
    // Both cores ended: the monitor saw the removal.
    while monitor.state() != State::Removed {
        ensure!(clock::now() < deadline, "monitor: {:?}", monitor.state());
        monitor.tick();
    }
    marker!(
        "RESULT pulled_after_ms={} in_flight_at_pull_core0={} in_flight_at_pull_core1={}",
        (pulled_at - start).as_millis(),
        busy[0],
        busy[1]
    );
    report(0, &mine);
    report(1, &theirs);
    check(0, &mine)?;
    check(1, &theirs)?;
    // What the device had not finished when it went is failed; what it
    // finished just before stays a success.
    let failed = mine.removed + theirs.removed;
    ensure!(failed > 0, "no read was failed by the removal");
    ensure!(
        failed == u64::from(monitor.failed_commands()),
        "{failed} commands failed on the cores, {} by the monitor",
        monitor.failed_commands()
    );
    Ok(failed)
}

fn report(core: usize, l: &Ledger) {
    marker!(
        "RESULT core{core}_submitted={} core{core}_ok={} core{core}_removed={} core{core}_refused={}",
        l.submitted,
        l.ok,
        l.removed,
        l.refused
    );
}

fn check(core: usize, l: &Ledger) -> Outcome {
    ensure!(!l.stalled, "core {core}: its queue did not end in time");
    ensure!(!l.out_of_tags, "core {core}: the pull came too late");
    ensure!(
        l.duplicates == 0,
        "core {core}: {} duplicates",
        l.duplicates
    );
    ensure!(l.unknown == 0, "core {core}: {} unknown tags", l.unknown);
    ensure!(l.late == 0, "core {core}: {} late completions", l.late);
    ensure!(
        l.other_errors == 0,
        "core {core}: {} commands failed otherwise",
        l.other_errors
    );
    ensure!(
        l.refused_otherwise == 0,
        "core {core}: {} submissions refused otherwise",
        l.refused_otherwise
    );
    ensure!(
        l.ok + l.removed == l.submitted,
        "core {core}: {} submitted, {} completed",
        l.submitted,
        l.ok + l.removed
    );
    ensure!(l.refused >= 1, "core {core}: nothing refused");
    ensure!(l.buffers_kept == 0, "core {core}: buffers quarantined");
    Ok(())
}

/// Keeps `QD` reads in flight on `q` (the queue of `core`) until a
/// submission is refused, then polls until everything submitted came back;
/// calls `between` on every turn.
fn stream_until_refused(
    core: usize,
    q: &Queue<'_>,
    ns: &NamespaceHandle,
    buffers: &mut Buffers,
    deadline: Instant,
    mut between: impl FnMut(),
) -> Ledger {
    let seen = &SEEN[core];
    let per_io = (4096 >> ns.block_shift()) as u32;
    let slots = ns.blocks() / u64::from(per_io);
    let mut l = Ledger::default();
    let mut in_flight = 0usize;
    let mut refused = false;
    loop {
        if clock::now() > deadline {
            l.stalled = true;
            return l;
        }
        between();
        while !refused && in_flight < QD {
            if l.submitted as usize >= TAGS {
                l.out_of_tags = true;
                return l;
            }
            let Some(buffer) = buffers.pop() else { break };
            let tag = l.submitted;
            let lba = (tag.wrapping_mul(0x9E37_79B9) % slots) * u64::from(per_io);
            match q.submit_read(ns, lba, per_io, buffer, tag) {
                Ok(_) => {
                    l.submitted += 1;
                    in_flight += 1;
                }
                Err(r) => {
                    match r.buffer {
                        Some(b) => {
                            let _ = buffers.push(b);
                        }
                        None => l.buffers_kept += 1,
                    }
                    if r.error == Error::DeviceRemoved {
                        l.refused += 1;
                        refused = true;
                    } else {
                        l.refused_otherwise += 1;
                        refused = true;
                    }
                }
            }
        }
        q.poll(|c| {
            in_flight = in_flight.saturating_sub(1);
            let tag = c.tag;
            if tag >= l.submitted {
                l.unknown += 1;
            } else {
                let bit = 1u64 << (tag % 64);
                if seen[(tag / 64) as usize].fetch_or(bit, Ordering::Relaxed) & bit != 0 {
                    l.duplicates += 1;
                }
            }
            match c.result {
                Ok(()) => l.ok += 1,
                Err(Error::DeviceRemoved) => l.removed += 1,
                Err(_) => l.other_errors += 1,
            }
            match c.buffer {
                Some(b) => {
                    let _ = buffers.push(b);
                }
                None => l.buffers_kept += 1,
            }
        });
        PROGRESS[core].store(l.ok, Ordering::Relaxed);
        IN_FLIGHT[core].store(in_flight as u64, Ordering::Relaxed);
        if refused && in_flight == 0 && q.in_flight() == 0 && q.undelivered() == 0 {
            break;
        }
    }
    // Nothing comes after the end.
    q.poll(|c| {
        l.late += 1;
        if let Some(b) = c.buffer {
            let _ = buffers.push(b);
        }
    });
    l
}
