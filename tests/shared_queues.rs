//! One I/O queue per thread: a shared controller's queue handles driven from
//! two threads while the main thread runs the monitor, and a surprise removal
//! with I/O in flight on both, checked command by command.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant as WallClock};

use bare_nvme::block::{BlockTarget, NamespaceHandle};
use bare_nvme::{ControllerConfig, DmaRegion, Error, Event, IoQueue, Platform, QueueId, State};
use bare_nvme_sim::{CtrlId, Hold, Misbehaviour, SimPlatform};
use common::{filled, pattern, single, spec, zeroed, BoxedDrv};

/// Blocks per command (4 KiB at 512-byte blocks).
const BLOCKS: u32 = 8;
const BYTES: usize = 4096;
/// Commands each thread keeps in flight (fewer under Miri, which is slow).
const DEPTH: usize = if cfg!(miri) { 4 } else { 32 };
/// Rounds of writes then reads per thread (fewer under Miri, which is slow).
const ROUNDS: usize = if cfg!(miri) { 1 } else { 8 };
/// Wall-clock bound on every wait, so a defect fails instead of hanging.
const WALL: Duration = Duration::from_secs(if cfg!(miri) { 600 } else { 60 });

type Queue<'a> = IoQueue<
    'a,
    SimPlatform,
    { bare_nvme::nvme::controller::MAX_IO_QUEUES },
    { bare_nvme::nvme::controller::MAX_QUEUE_DEPTH },
>;

fn config() -> ControllerConfig {
    ControllerConfig::default().io_queues(2).queue_depth(64)
}

fn handle(driver: &mut BoxedDrv, id: bare_nvme::ControllerId) -> NamespaceHandle {
    driver.namespace_handle(Some(id), 1).expect("handle")
}

/// The LBA of command `n` of the thread streaming on `queue`: each thread
/// has its own range.
fn lba(queue: QueueId, n: usize) -> u64 {
    (queue.index() as u64 * 4096 + n as u64) * BLOCKS as u64
}

/// Streams `DEPTH` writes then `DEPTH` reads of the same blocks, `ROUNDS`
/// times, on `q`, checking every byte read. Returns the commands completed.
fn stream(q: &Queue<'_>, ns: &NamespaceHandle, platform: &SimPlatform) -> usize {
    let mut done = 0;
    let deadline = WallClock::now() + WALL;
    for round in 0..ROUNDS {
        let seed = |n: usize| (round * DEPTH + n) as u8 ^ q.id().index() as u8;
        for n in 0..DEPTH {
            let buffer = filled(platform, BYTES, seed(n));
            let _token = q
                .submit_write(ns, lba(q.id(), n), BLOCKS, buffer, n as u64)
                .expect("write queued");
        }
        let mut back = 0;
        while back < DEPTH {
            assert!(WallClock::now() < deadline, "writes did not complete");
            back += q.poll(|c| {
                assert_eq!(c.result, Ok(()), "write {}", c.tag);
                platform.dma_free(c.buffer.expect("buffer back"));
            });
        }
        for n in 0..DEPTH {
            let buffer = zeroed(platform, BYTES);
            let _token = q
                .submit_read(ns, lba(q.id(), n), BLOCKS, buffer, n as u64)
                .expect("read queued");
        }
        let mut back = 0;
        while back < DEPTH {
            assert!(WallClock::now() < deadline, "reads did not complete");
            back += q.poll(|c| {
                assert_eq!(c.result, Ok(()), "read {}", c.tag);
                let buffer = c.buffer.expect("buffer back");
                assert!(
                    buffer.as_slice() == pattern(BYTES, seed(c.tag as usize)).as_slice(),
                    "read {} on queue {} returned other data",
                    c.tag,
                    q.id().index()
                );
                platform.dma_free(buffer);
            });
        }
        done += 2 * DEPTH;
    }
    done
}

#[test]
fn two_threads_stream_on_their_own_queues_while_the_monitor_ticks() {
    let (sim, mut driver, id) = single(spec(1 << 16, 512), config());
    let ns = handle(&mut driver, id);
    let platform = sim.platform();
    let finished = AtomicUsize::new(0);
    {
        let (mut monitor, queues) = driver.share(id).expect("share");
        assert_eq!(queues.len(), 2);
        let total = std::thread::scope(|s| {
            let workers: Vec<_> = queues
                .iter()
                .map(|q| {
                    let (ns, platform, finished) = (&ns, platform.clone(), &finished);
                    s.spawn(move || {
                        let n = stream(q, ns, &platform);
                        finished.fetch_add(1, Ordering::Release);
                        n
                    })
                })
                .collect();
            let deadline = WallClock::now() + WALL;
            while finished.load(Ordering::Acquire) < 2 {
                assert_eq!(monitor.tick(), State::Ready);
                assert!(WallClock::now() < deadline, "threads did not finish");
                std::thread::yield_now();
            }
            workers
                .into_iter()
                .map(|w| w.join().expect("worker"))
                .sum::<usize>()
        });
        assert_eq!(total, 2 * ROUNDS * 2 * DEPTH);
        assert_eq!(monitor.state(), State::Ready);
    }
    // The share ended: the controller is whole again, and served I/O on
    // both queues.
    let c = driver.controller(id).unwrap();
    assert_eq!(c.state(), State::Ready);
    assert_eq!(c.in_flight(), 0);
    assert_eq!(c.failed_commands(), 0);
    common::finish(&sim, driver);
}

/// What became of one command.
#[derive(Debug, Default)]
struct Ledger {
    /// Tag -> completions seen.
    completed: HashMap<u64, Vec<Result<(), Error>>>,
    submitted: Vec<u64>,
    refused: usize,
}

/// Keeps `DEPTH` reads in flight on `q` until a submission is refused, then
/// polls until everything submitted came back. Every command gets its own
/// tag, recorded in the ledger.
fn stream_until_refused(
    q: &Queue<'_>,
    ns: &NamespaceHandle,
    platform: &SimPlatform,
    started: &AtomicUsize,
) -> (Ledger, Vec<DmaRegion>) {
    let mut ledger = Ledger::default();
    let mut spare = Vec::new();
    let mut next_tag = (q.id().index() as u64) << 32;
    let mut outstanding = 0usize;
    let mut refused = false;
    let mut counted = false;
    let deadline = WallClock::now() + WALL;
    loop {
        assert!(
            WallClock::now() < deadline,
            "queue {} hangs",
            q.id().index()
        );
        while !refused && outstanding < DEPTH {
            let buffer = spare.pop().unwrap_or_else(|| zeroed(platform, BYTES));
            let tag = next_tag;
            match q.submit_read(ns, lba(q.id(), (tag as usize) % 1024), BLOCKS, buffer, tag) {
                Ok(_) => {
                    next_tag += 1;
                    outstanding += 1;
                    ledger.submitted.push(tag);
                }
                Err(rejected) => {
                    assert_eq!(rejected.error, Error::DeviceRemoved);
                    spare.push(rejected.buffer.expect("buffer handed back"));
                    ledger.refused += 1;
                    refused = true;
                }
            }
        }
        q.poll(|c| {
            ledger.completed.entry(c.tag).or_default().push(c.result);
            if let Some(b) = c.buffer {
                platform.caller_owns(&b);
                spare.push(b);
            }
            outstanding -= 1;
        });
        if !counted && ledger.completed.len() >= DEPTH {
            // This thread has moved I/O: the removal may come.
            counted = true;
            started.fetch_add(1, Ordering::Release);
        }
        if refused && outstanding == 0 && q.in_flight() == 0 && q.undelivered() == 0 {
            break;
        }
    }
    // Nothing comes after the end.
    assert_eq!(q.poll(|c| panic!("late completion {c:?}")), 0);
    (ledger, spare)
}

#[test]
fn surprise_removal_with_io_in_flight_on_both_threads_fails_each_command_once() {
    let (sim, mut driver, id) = single(spec(1 << 16, 512), config());
    let ns = handle(&mut driver, id);
    let platform = sim.platform();
    let started = AtomicUsize::new(0);
    let removed = AtomicBool::new(false);
    let (ledgers, monitor_failed) = {
        let (mut monitor, queues) = driver.share(id).expect("share");
        std::thread::scope(|s| {
            let workers: Vec<_> = queues
                .iter()
                .map(|q| {
                    let (ns, platform, started) = (&ns, platform.clone(), &started);
                    s.spawn(move || stream_until_refused(q, ns, &platform, started))
                })
                .collect();
            let deadline = WallClock::now() + WALL;
            while started.load(Ordering::Acquire) < 2 {
                monitor.tick();
                assert!(WallClock::now() < deadline, "threads did not start");
                std::thread::yield_now();
            }
            // The device stops completing I/O until both threads have their
            // queues full, so the pull is certain to catch commands in flight
            // on each of them.
            sim.hold(CtrlId(0), Hold::Io);
            while sim.held_count() < 2 * DEPTH {
                monitor.tick();
                assert!(WallClock::now() < deadline, "queues did not fill");
                std::thread::yield_now();
            }
            sim.surprise_remove(CtrlId(0));
            removed.store(true, Ordering::Release);
            while monitor.tick() != State::Removed {
                assert!(WallClock::now() < deadline, "removal not seen");
                std::thread::yield_now();
            }
            let ledgers: Vec<_> = workers
                .into_iter()
                .map(|w| w.join().expect("worker"))
                .collect();
            (ledgers, monitor.failed_commands())
        })
    };
    assert!(removed.load(Ordering::Acquire));
    let mut failed = 0;
    for (ledger, spare) in ledgers {
        assert!(ledger.refused >= 1, "no submission was refused");
        let removed_here = ledger
            .completed
            .values()
            .filter(|r| r.contains(&Err(Error::DeviceRemoved)))
            .count();
        assert!(
            removed_here >= DEPTH,
            "a queue's full load fails with the removal"
        );
        assert_eq!(
            ledger.completed.len(),
            ledger.submitted.len(),
            "every submitted command completes"
        );
        for tag in &ledger.submitted {
            let results = &ledger.completed[tag];
            assert_eq!(results.len(), 1, "command {tag} completed {results:?}");
            match results[0] {
                Ok(()) => {}
                Err(Error::DeviceRemoved) => failed += 1,
                Err(e) => panic!("command {tag} failed with {e}"),
            }
        }
        for b in spare {
            platform.dma_free(b);
        }
    }
    assert!(failed > 0, "the removal caught no command in flight");
    assert_eq!(failed, monitor_failed as usize);
    // The driver reports the removal once, after the share.
    let mut removals = 0;
    let deadline = sim.now() + common::PATIENCE;
    while removals == 0 && sim.now() < deadline {
        for e in driver.tick() {
            if let Event::Removed { id: gone, .. } = e {
                assert_eq!(gone, id);
                removals += 1;
            }
        }
    }
    for _ in 0..10 {
        for e in driver.tick() {
            assert!(!matches!(e, Event::Removed { .. }), "removed twice");
        }
    }
    assert_eq!(removals, 1);
    drop(driver);
    common::assert_clean(&sim);
    assert_eq!(sim.counters().dma_regions, 0, "DMA memory not back");
}

/// Queue handles can go to other cores when the platform can.
#[test]
fn queue_handles_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Queue<'static>>();
}

#[test]
fn a_reset_while_shared_fails_the_command_once_and_bring_up_waits_for_the_end_of_the_share() {
    let config = config()
        .io_timeout(Duration::from_millis(20))
        .admin_timeout(Duration::from_millis(20));
    let (sim, mut driver, id) = single(spec(1 << 16, 512), config);
    let ns = handle(&mut driver, id);
    let platform = sim.platform();
    sim.misbehave(CtrlId(0), Misbehaviour::NeverComplete.once());
    let mut results = Vec::new();
    {
        let (mut monitor, queues) = driver.share(id).expect("share");
        let q = &queues[1];
        let _token = q
            .submit_read(&ns, 0, BLOCKS, zeroed(&platform, BYTES), 9)
            .expect("queued");
        let mut state = State::Ready;
        for _ in 0..500 {
            sim.advance(Duration::from_millis(1));
            state = monitor.tick();
            q.poll(|c| {
                results.push((c.tag, c.result));
                platform.dma_free(c.buffer.expect("buffer back"));
            });
            if !results.is_empty() && state == State::Resetting {
                break;
            }
        }
        assert_eq!(monitor.reset_count(), 1, "the abort did not end it");
        assert_eq!(state, State::Resetting, "bring-up waits for the share");
        let rejected = q
            .submit_read(&ns, 0, BLOCKS, zeroed(&platform, BYTES), 10)
            .expect_err("no submission while resetting");
        assert_eq!(rejected.error, Error::NotReady);
        platform.dma_free(rejected.buffer.expect("buffer handed back"));
        assert_eq!(q.poll(|c| panic!("delivered twice: {c:?}")), 0);
    }
    assert!(
        matches!(results[..], [(9, Err(Error::Timeout { .. }))]),
        "{results:?}"
    );
    // The share ended: the tick brings the controller up again.
    for _ in 0..500 {
        sim.advance(Duration::from_millis(1));
        let _ = driver.tick();
        if driver.controller(id).unwrap().state() == State::Ready {
            break;
        }
    }
    let c = driver.controller(id).unwrap();
    assert_eq!(c.state(), State::Ready);
    let mut buf = zeroed(&platform, BYTES);
    c.read(1, 0, &mut buf).expect("serves again");
    platform.dma_free(buf);
    common::finish(&sim, driver);
}

/// The streaming pattern from inside the completion callback: each read
/// that comes back is submitted again on the same queue, and the callback
/// also asks the queue what is in flight and ticks the monitor (as one core
/// running both would). No lock of the driver is held while it runs, so
/// none of this waits for the poll that called it. Run on its own thread:
/// a deadlock fails the test instead of hanging it.
#[test]
fn a_completion_callback_resubmits_asks_its_queue_and_ticks_the_monitor() {
    const TOTAL: usize = 300;
    let (sim, mut driver, id) = single(spec(1 << 16, 512), config());
    for lba in 0..BLOCKS as u64 * 8 {
        sim.write_block(CtrlId(0), 1, lba, &pattern(512, lba as u8));
    }
    let ns = handle(&mut driver, id);
    let platform = sim.platform();
    let (done, finished) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        {
            let (mut monitor, queues) = driver.share(id).expect("share");
            let q = &queues[0];
            for n in 0..8u64 {
                let buffer = zeroed(&platform, BYTES);
                let _token = q
                    .submit_read(&ns, n * BLOCKS as u64, BLOCKS, buffer, n)
                    .expect("read queued");
            }
            let (mut completed, mut submitted) = (0, 8);
            let deadline = WallClock::now() + WALL;
            while completed < TOTAL {
                assert!(WallClock::now() < deadline, "reads did not complete");
                q.poll(|c| {
                    completed += 1;
                    assert_eq!(c.result, Ok(()), "read {}", c.tag);
                    let buffer = c.buffer.expect("buffer back");
                    let n = c.tag % 8;
                    let want = pattern(512, (n * BLOCKS as u64) as u8);
                    assert_eq!(&buffer.as_slice()[..512], &want[..], "read {}", c.tag);
                    assert!(q.in_flight() < 8);
                    assert_eq!(monitor.tick(), State::Ready);
                    if submitted < TOTAL {
                        let lba = n * BLOCKS as u64;
                        let tag = submitted as u64 * 8 + n;
                        let _token = q
                            .submit_read(&ns, lba, BLOCKS, buffer, tag)
                            .expect("read queued again");
                        submitted += 1;
                    } else {
                        platform.dma_free(buffer);
                    }
                });
            }
            assert_eq!(q.in_flight(), 0);
        }
        done.send(()).expect("main thread waits");
        driver
    });
    finished
        .recv_timeout(WALL)
        .expect("a callback waited for the poll that called it");
    let driver = worker.join().expect("worker");
    common::finish(&sim, driver);
}

/// A hook a test sets and the registers run once.
type Hook = std::sync::Arc<std::sync::Mutex<Option<Box<dyn FnOnce() + Send>>>>;

/// A platform that runs a hook (once) right after the controller's CC.EN
/// is written to 0: the moment a handle on another core must already see
/// the gate closed.
#[derive(Clone)]
struct Watched {
    inner: SimPlatform,
    hook: Hook,
}

struct WatchedRegisters {
    inner: bare_nvme_sim::SimRegisters,
    hook: Hook,
}

impl bare_nvme::RegisterAccess for WatchedRegisters {
    fn read32(&self, offset: usize) -> u32 {
        self.inner.read32(offset)
    }

    fn write32(&self, offset: usize, value: u32) {
        self.inner.write32(offset, value);
        // CC (14h) with EN (bit 0) clear.
        if offset == 0x14 && value & 1 == 0 {
            let hook = self.hook.lock().unwrap().take();
            if let Some(hook) = hook {
                hook();
            }
        }
    }
}

impl Platform for Watched {
    type Registers = WatchedRegisters;

    fn dma_alloc(&self, len: usize, align: usize) -> Option<DmaRegion> {
        self.inner.dma_alloc(len, align)
    }

    fn dma_flush(&self, phys: bare_nvme::PhysAddr, len: usize) {
        self.inner.dma_flush(phys, len)
    }

    fn dma_invalidate(&self, phys: bare_nvme::PhysAddr, len: usize) {
        self.inner.dma_invalidate(phys, len)
    }

    fn dma_free(&self, region: DmaRegion) {
        self.inner.dma_free(region)
    }

    fn map_registers(&self, phys: bare_nvme::PhysAddr, len: usize) -> Option<WatchedRegisters> {
        Some(WatchedRegisters {
            inner: self.inner.map_registers(phys, len)?,
            hook: self.hook.clone(),
        })
    }

    fn now(&self) -> bare_nvme::Instant {
        self.inner.now()
    }
}

/// A controller given up while shared (its resets are spent, then it
/// reports a fatal status): the monitor writes CC.EN = 0 only once the gate
/// is closed and every queue's lock was taken since, so a handle that polls
/// at that very moment rings no doorbell on the controller being disabled.
#[test]
fn a_handle_polling_while_the_monitor_gives_the_controller_up_rings_no_doorbell() {
    use pci_types::ConfigRegionAccess as _;
    let sim = bare_nvme_sim::Sim::single(spec(1 << 16, 512));
    let platform = Watched {
        inner: sim.platform(),
        hook: Default::default(),
    };
    let access = sim.config_access();
    let address = sim.address(CtrlId(0)).expect("function");
    // SAFETY: the simulated config space has no side effects beyond the model.
    unsafe {
        let command = access.read(address, 4);
        access.write(address, 4, command | 0x6);
    }
    let regs = platform
        .map_registers(bare_nvme::PhysAddr::new(sim.bar(CtrlId(0))), 16 << 10)
        .expect("mapped");
    let mut c: bare_nvme::Controller<Watched, (), 2, 64> =
        bare_nvme::Controller::new(platform.clone(), (), regs, 16 << 10, config());
    c.bring_up().expect("up");
    // Resets in a row with no command in between spend the budget.
    for _ in 0..bare_nvme::nvme::recovery::MAX_RESETS {
        let before = c.reset_count();
        sim.set_cfs(CtrlId(0));
        let deadline = WallClock::now() + WALL;
        while c.tick() != State::Ready || c.reset_count() == before {
            assert!(WallClock::now() < deadline, "no reset");
            sim.advance(Duration::from_millis(5));
        }
    }
    let ns = c.namespace_handle(None, 1).expect("handle");
    let (go, went) = std::sync::mpsc::channel::<()>();
    let (polled, done) = std::sync::mpsc::channel::<usize>();
    {
        let (mut monitor, queues) = c.share().expect("share");
        let q = &queues[0];
        // Queued, not yet rung: the next poll would ring the doorbell.
        for n in 0..2u64 {
            let buffer = zeroed(&sim.platform(), BYTES);
            let _token = q
                .submit_read(&ns, n * 8, BLOCKS, buffer, n)
                .expect("queued");
        }
        std::thread::scope(|s| {
            s.spawn(move || {
                went.recv_timeout(WALL).expect("CC.EN cleared");
                let delivered = q.poll(|_| panic!("nothing may be delivered yet"));
                polled.send(delivered).expect("monitor waits");
            });
            *platform.hook.lock().unwrap() = Some(Box::new(move || {
                go.send(()).expect("poller waits");
                done.recv_timeout(WALL).expect("the poll ended");
            }));
            sim.set_cfs(CtrlId(0));
            assert_eq!(monitor.tick(), State::Failed);
        });
        assert!(
            platform.hook.lock().unwrap().is_none(),
            "CC.EN never cleared"
        );
    }
    assert_eq!(
        sim.counters().protocol_errors,
        0,
        "{:?}",
        sim.protocol_log()
    );
    let mut back = Vec::new();
    c.poll(QueueId::FIRST, |d| back.push(d));
    assert_eq!(back.len(), 2);
    for d in back {
        assert_eq!(d.result, Err(Error::ControllerFailed));
        sim.platform().dma_free(d.buffer.expect("buffer back"));
    }
    drop(c);
    assert_eq!(sim.counters().dma_regions, 0, "DMA regions outstanding");
}
