//! Work handed to another core: one mailbox per core, and a scope that joins
//! every job it started before the data the jobs borrow can go away.
//!
//! A mailbox moves through `IDLE -> CLAIMED -> POSTED -> RUNNING -> DONE ->
//! IDLE`. The spawning core claims it (compare-exchange, so two spawners
//! cannot share it), stores the job pointer and publishes it with a release
//! store of `POSTED`; the serving core acquires it, runs the job, and
//! publishes `DONE` with a release store; the joining core acquires `DONE`
//! (so it sees everything the job wrote) and sets `IDLE`.

use core::cell::{Cell, UnsafeCell};
use core::fmt;
use core::marker::PhantomData;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use core::time::Duration;

use bare_nvme::Instant;

use super::lapic::Lapic;
use super::{idle, MAX_CORES};
use crate::clock;

const IDLE: u32 = 0;
const CLAIMED: u32 = 1;
const POSTED: u32 = 2;
const RUNNING: u32 = 3;
const DONE: u32 = 4;

/// A job as the serving core sees it: the borrow's lifetime erased (see the
/// SAFETY argument in [`Scope::spawn`]).
type RawJob = *mut (dyn FnMut() + Send + 'static);

struct Mailbox {
    state: AtomicU32,
    /// Written only by the core that claimed the mailbox, before `POSTED`;
    /// taken only by the serving core, after it acquired `POSTED`.
    job: UnsafeCell<Option<RawJob>>,
    /// The serving core's TSC around the last job.
    started: AtomicU64,
    finished: AtomicU64,
}

// SAFETY: `job` is accessed by one core at a time, handed over by the
// release/acquire pairs on `state` described in the module docs.
unsafe impl Sync for Mailbox {}

impl Mailbox {
    const fn new() -> Self {
        Self {
            state: AtomicU32::new(IDLE),
            job: UnsafeCell::new(None),
            started: AtomicU64::new(0),
            finished: AtomicU64::new(0),
        }
    }
}

static MAILBOXES: [Mailbox; MAX_CORES] = [const { Mailbox::new() }; MAX_CORES];

/// Why a job could not be started or joined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmpError {
    /// No such core, or it did not come up.
    Offline(usize),
    /// The calling core itself (it cannot wait for its own job).
    SameCore(usize),
    /// Core 0 runs the scenario and takes no jobs.
    BootCore,
    /// The wake-up IPI could not be sent (the job was taken back).
    Wake(usize),
    /// The core still runs an earlier job.
    Busy(usize),
    /// The job did not finish by the deadline (it keeps running; the scope
    /// still waits for it at its end).
    Timeout(usize),
}

impl fmt::Display for SmpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SmpError::Offline(core) => write!(f, "core {core} is not online"),
            SmpError::SameCore(core) => write!(f, "core {core} cannot run a job for itself"),
            SmpError::BootCore => f.write_str("core 0 takes no jobs"),
            SmpError::Wake(core) => write!(f, "core {core} could not be woken"),
            SmpError::Busy(core) => write!(f, "core {core} still runs a job"),
            SmpError::Timeout(core) => write!(f, "the job on core {core} did not finish in time"),
        }
    }
}

/// When a job ran, on the serving core's own TSC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CoreTime {
    /// The core that ran the job.
    pub core: usize,
    /// Its TSC just before the job started.
    pub started: u64,
    /// Its TSC just after the job returned.
    pub finished: u64,
}

impl CoreTime {
    /// TSC cycles the job took.
    pub fn cycles(&self) -> u64 {
        self.finished.saturating_sub(self.started)
    }

    /// Time the job took.
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(clock::cycles_to_nanos(self.cycles()))
    }
}

/// Jobs on other cores that may borrow from outside the scope; see
/// [`scope`].
pub struct Scope<'scope, 'env: 'scope> {
    /// Cores with a job of this scope not yet joined (bit per core).
    spawned: Cell<u32>,
    /// Invariant in both lifetimes, as `std::thread::Scope`.
    scope: PhantomData<&'scope mut &'scope ()>,
    env: PhantomData<&'env mut &'env ()>,
}

/// A job started by [`Scope::spawn`].
#[must_use = "a job is joined at the latest when its scope ends"]
pub struct Job<'scope> {
    core: usize,
    scope: &'scope Cell<u32>,
}

/// Runs `body` with a [`Scope`] in which jobs can be started on other cores,
/// then waits for every job still running (up to `limit` each) and returns
/// what `body` returned.
///
/// A job that does not finish within `limit` after `body` returned ends the
/// run (a panic, which stops the machine): the scope must not return while
/// the job may still use what it borrowed, and waiting forever would hang.
pub fn scope<'env, T>(
    limit: Duration,
    body: impl for<'scope> FnOnce(&'scope Scope<'scope, 'env>) -> T,
) -> T {
    let scope = Scope {
        spawned: Cell::new(0),
        scope: PhantomData,
        env: PhantomData,
    };
    let result = body(&scope);
    for core in 0..MAX_CORES {
        if scope.spawned.get() & (1 << core) != 0 {
            let deadline = clock::now() + limit;
            if finish(core, deadline).is_err() {
                panic!("the job on core {core} did not finish within {limit:?} after its scope");
            }
        }
    }
    result
}

/// Runs `work` on `core` and waits for it (up to `limit`); the calling core
/// only waits. See [`scope`] for running work on both cores at once.
pub fn run_on(
    core: usize,
    limit: Duration,
    work: &mut (dyn FnMut() + Send),
) -> Result<CoreTime, SmpError> {
    scope(limit, |s| {
        let job = s.spawn(core, work)?;
        job.join(clock::now() + limit)
    })
}

impl<'scope> Scope<'scope, '_> {
    /// Starts `work` on `core` and returns at once; the calling core keeps
    /// running. `work` runs once. It may borrow anything that outlives the
    /// scope (it is `Send`: it moves to the other core for the job's
    /// duration; what it shares with the calling core meanwhile must be
    /// `Sync`, e.g. atomics or a `spin::Mutex`).
    pub fn spawn(
        &'scope self,
        core: usize,
        work: &'scope mut (dyn FnMut() + Send),
    ) -> Result<Job<'scope>, SmpError> {
        if core >= MAX_CORES || core >= super::cores() {
            return Err(SmpError::Offline(core));
        }
        if core == super::current_core() {
            return Err(SmpError::SameCore(core));
        }
        if core == 0 {
            return Err(SmpError::BootCore);
        }
        let mailbox = &MAILBOXES[core];
        mailbox
            .state
            .compare_exchange(IDLE, CLAIMED, Ordering::Acquire, Ordering::Relaxed)
            .map_err(|_| SmpError::Busy(core))?;
        let job: *mut (dyn FnMut() + Send + 'scope) = work;
        // SAFETY: only the lifetime changes (same fat-pointer layout). The
        // erased borrow stays valid as long as the serving core uses it:
        // the job is recorded in `spawned`, and `scope` does not return
        // before `finish` has seen the job DONE (or it ends the machine),
        // while `work` is borrowed for 'scope, which lasts until `scope`
        // returns. The board aborts on panic, so no unwinding can end the
        // borrow early either. The `&mut` borrow makes the job the only user
        // of the closure meanwhile; `Send` lets it run on the other core.
        let job: RawJob = unsafe { core::mem::transmute(job) };
        // SAFETY: this core claimed the mailbox (IDLE -> CLAIMED above), so
        // no other core touches `job` until the POSTED store below.
        unsafe { *mailbox.job.get() = Some(job) };
        mailbox.state.store(POSTED, Ordering::Release);
        if super::wake(core).is_err() {
            // Take the job back unless the core found it anyway.
            if mailbox
                .state
                .compare_exchange(POSTED, CLAIMED, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                // SAFETY: claimed again by this core, as above.
                unsafe { *mailbox.job.get() = None };
                mailbox.state.store(IDLE, Ordering::Release);
                return Err(SmpError::Wake(core));
            }
        }
        self.spawned.set(self.spawned.get() | 1 << core);
        Ok(Job {
            core,
            scope: &self.spawned,
        })
    }
}

impl Job<'_> {
    /// The core running the job.
    pub fn core(&self) -> usize {
        self.core
    }

    /// Whether the job has returned (its effects are visible after
    /// [`Job::join`]).
    pub fn is_finished(&self) -> bool {
        MAILBOXES[self.core].state.load(Ordering::Acquire) == DONE
    }

    /// Waits until the job returned or `deadline` passed. On `Timeout` the
    /// job keeps running and the scope waits for it at its end.
    pub fn join(self, deadline: Instant) -> Result<CoreTime, SmpError> {
        let time = finish(self.core, deadline)?;
        self.scope.set(self.scope.get() & !(1 << self.core));
        Ok(time)
    }
}

/// Waits until `core`'s job is DONE, then frees its mailbox.
fn finish(core: usize, deadline: Instant) -> Result<CoreTime, SmpError> {
    let mailbox = &MAILBOXES[core];
    while mailbox.state.load(Ordering::Acquire) != DONE {
        if clock::now() >= deadline {
            return Err(SmpError::Timeout(core));
        }
        core::hint::spin_loop();
    }
    let time = CoreTime {
        core,
        started: mailbox.started.load(Ordering::Relaxed),
        finished: mailbox.finished.load(Ordering::Relaxed),
    };
    mailbox.state.store(IDLE, Ordering::Release);
    Ok(time)
}

/// The serving loop of core `core`: halts until a job is posted, runs it,
/// forever.
pub fn serve(core: usize, lapic: &Lapic) -> ! {
    let mailbox = &MAILBOXES[core];
    loop {
        idle::sleep_until(lapic, || mailbox.state.load(Ordering::Acquire) == POSTED);
        mailbox.state.store(RUNNING, Ordering::Relaxed);
        // SAFETY: POSTED was acquired: the spawner's write of `job` is
        // visible and it does not touch the slot again before DONE.
        let job = unsafe { (*mailbox.job.get()).take() };
        let started = clock::rdtsc();
        if let Some(job) = job {
            // SAFETY: the spawner keeps the closure alive and unused until it
            // sees DONE (see `Scope::spawn`).
            unsafe { (*job)() };
        }
        let finished = clock::rdtsc();
        mailbox.started.store(started, Ordering::Relaxed);
        mailbox.finished.store(finished, Ordering::Relaxed);
        mailbox.state.store(DONE, Ordering::Release);
    }
}
