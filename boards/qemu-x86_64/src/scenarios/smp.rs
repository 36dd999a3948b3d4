//! `smp`: two cores run at once (needs `-smp 2`).
//!
//! - `madt`: the MADT parser on tables made here: a good one gives the
//!   enabled local APICs only; a wrong checksum, an entry of length 0, an
//!   entry past the end and a length shorter than the header are refused.
//! - `errors`: a job for core 0 or a missing core is refused, a busy core
//!   refuses a second job, [`smp::run_on`] runs on core 1 and its effect is
//!   visible after the join.
//! - `concurrent`: core 1 counts on a shared atomic until it sees the flag
//!   core 0 sets; core 0 sees the count advance several times before it
//!   sets the flag, and core 1's own TSC stamps enclose core 0's
//!   observations.
//! - `ping-pong`: `rounds=N` (1000) hand-overs of one atomic each way; the
//!   round-trip time is reported.
//! - `shared`: both cores add `increments=N` (100000) to a
//!   `spin::Mutex<u64>` and to an `AtomicU64` at once: each ends at 2N.
//!
//! Every wait has a deadline on both sides.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use core::time::Duration;

use bare_nvme::Instant;
use log::info;

use super::{deadline_ms, Context, Failure, Outcome, Scenario};
use crate::clock;
use crate::smp::acpi::{self, AcpiError};
use crate::smp::{self, SmpError};
use bare_nvme_board_common::{ensure, failure, marker};

/// The scenario.
pub const SCENARIO: Scenario = Scenario {
    name: "smp",
    about: "core 1 runs borrowed jobs while core 0 works: progress both ways, hand-overs, no lost updates",
    run,
};

/// How long a scope waits for a job after its body returned.
const SCOPE_LIMIT: Duration = Duration::from_secs(10);
/// Deadline of one wait on either core.
const WAIT_MS: u64 = 2_000;
/// Times core 0 must see core 1's counter advance.
const SAMPLES: usize = 5;

fn run(board: &Context) -> Outcome {
    let cores = smp::cores();
    match smp::started() {
        Some(started) => marker!(
            "RESULT cores={cores} listed={} source={:?} start_us={}",
            started.listed,
            started.source,
            started.micros
        ),
        None => marker!("RESULT cores={cores}"),
    }
    ensure!(cores >= 2, "{cores} core online: the machine needs -smp 2");
    let number = |key, default| {
        board
            .args
            .number(key, default)
            .ok_or_else(|| failure!("malformed {key}="))
    };
    let rounds = number("rounds", 1_000)?;
    let increments = number("increments", 100_000)?;
    madt()?;
    errors()?;
    concurrent()?;
    ping_pong(rounds)?;
    shared(increments)
}

fn smp_failure(e: SmpError) -> Failure {
    failure!("{e}")
}

/// Spins until `condition` holds or `deadline` passes (no sleep between
/// polls: hand-over latency is measured with it).
fn spin_until(deadline: Instant, mut condition: impl FnMut() -> bool) -> bool {
    loop {
        if condition() {
            return true;
        }
        if clock::now() >= deadline {
            return false;
        }
        core::hint::spin_loop();
    }
}

/// Length of the test MADT: header, APIC address and flags, three local
/// APIC entries and one x2APIC entry.
const TEST_MADT_LEN: usize = 44 + 3 * 8 + 16;

/// A MADT listing APIC ids 0 and 3 (enabled), 1 (disabled) and one x2APIC,
/// with its checksum.
fn test_madt() -> [u8; TEST_MADT_LEN] {
    let mut t = [0u8; TEST_MADT_LEN];
    t[0..4].copy_from_slice(b"APIC");
    t[4..8].copy_from_slice(&(TEST_MADT_LEN as u32).to_le_bytes());
    t[8] = 3;
    t[36..40].copy_from_slice(&0xFEE0_0000u32.to_le_bytes());
    for (i, (apic_id, flags)) in [(0u8, 1u8), (1, 0), (3, 1)].into_iter().enumerate() {
        let e = 44 + i * 8;
        t[e..e + 8].copy_from_slice(&[0, 8, i as u8, apic_id, flags, 0, 0, 0]);
    }
    let x2 = 44 + 3 * 8;
    t[x2] = 9;
    t[x2 + 1] = 16;
    t[x2 + 4] = 7;
    t[x2 + 8] = 1;
    fix_checksum(&mut t);
    t
}

fn fix_checksum(t: &mut [u8]) {
    t[9] = 0;
    let sum = t.iter().fold(0u8, |a, &b| a.wrapping_add(b));
    t[9] = 0u8.wrapping_sub(sum);
}

/// The parser accepts the good table and refuses four broken ones.
fn madt() -> Outcome {
    let parse = |t: &[u8; TEST_MADT_LEN]| acpi::madt_at(t.as_ptr() as u64);
    let good = parse(&test_madt()).map_err(|e| failure!("good test MADT refused: {e}"))?;
    ensure!(
        good.apic_ids.as_slice() == [0, 3] && good.skipped == 2 && good.lapic_base == 0xFEE0_0000,
        "test MADT read as ids {:?}, {} skipped, base {:#x}",
        good.apic_ids.as_slice(),
        good.skipped,
        good.lapic_base
    );
    let mut checksum = test_madt();
    checksum[47] ^= 1;
    let mut empty_entry = test_madt();
    empty_entry[45] = 0;
    fix_checksum(&mut empty_entry);
    let mut past_end = test_madt();
    past_end[44 + 3 * 8 + 1] = 17;
    fix_checksum(&mut past_end);
    let mut short = test_madt();
    short[4..8].copy_from_slice(&20u32.to_le_bytes());
    fix_checksum(&mut short);
    let cases = [
        ("checksum", checksum, AcpiError::Checksum("MADT")),
        ("empty entry", empty_entry, AcpiError::BadEntry(44)),
        ("entry past the end", past_end, AcpiError::BadEntry(68)),
        ("short length", short, AcpiError::BadTable("MADT")),
    ];
    for (what, table, expected) in &cases {
        let got = parse(table).err();
        ensure!(
            got == Some(*expected),
            "test MADT with a bad {what}: {got:?}, not {expected:?}"
        );
    }
    marker!("RESULT madt_refused={}", cases.len());
    marker!("PHASE madt");
    Ok(())
}

/// Refusals, and one job run to completion.
fn errors() -> Outcome {
    let release = AtomicBool::new(false);
    let mut held = || {
        spin_until(deadline_ms(WAIT_MS), || release.load(Ordering::Acquire));
    };
    let mut other = || {};
    let mut for_self = || {};
    let mut beyond = || {};
    smp::scope(SCOPE_LIMIT, |s| {
        let refused = s.spawn(0, &mut for_self).err();
        ensure!(
            refused == Some(SmpError::SameCore(0)),
            "a job for core 0 from core 0: {refused:?}"
        );
        let refused = s.spawn(smp::MAX_CORES, &mut beyond).err();
        ensure!(
            refused == Some(SmpError::Offline(smp::MAX_CORES)),
            "a job for a missing core: {refused:?}"
        );
        let job = s.spawn(1, &mut held).map_err(smp_failure)?;
        ensure!(job.core() == 1, "the job names core {}", job.core());
        let refused = s.spawn(1, &mut other).err();
        release.store(true, Ordering::Release);
        ensure!(
            refused == Some(SmpError::Busy(1)),
            "a second job for a busy core: {refused:?}"
        );
        job.join(deadline_ms(WAIT_MS)).map_err(smp_failure)?;
        Ok(())
    })?;
    let mut ran_on = usize::MAX;
    let mut report = || ran_on = smp::current_core();
    let time = smp::run_on(1, SCOPE_LIMIT, &mut report).map_err(smp_failure)?;
    ensure!(ran_on == 1, "run_on(1) ran on core {ran_on}");
    ensure!(time.core == 1, "the job's time names core {}", time.core);
    marker!("PHASE errors");
    Ok(())
}

/// Core 1 counts until core 0's flag; core 0 watches the count advance.
fn concurrent() -> Outcome {
    let counter = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let mut saw_stop = false;
    let mut count = || {
        let deadline = deadline_ms(5 * WAIT_MS);
        while clock::now() < deadline {
            counter.fetch_add(1, Ordering::Relaxed);
            if stop.load(Ordering::Acquire) {
                saw_stop = true;
                break;
            }
        }
    };
    let (first_seen, stopped_at, seen, time) = smp::scope(SCOPE_LIMIT, |s| {
        let job = s.spawn(1, &mut count).map_err(smp_failure)?;
        let watched = watch(&counter, &job);
        // Stop core 1 on every path, so the scope's join does not wait for
        // its own deadline.
        let stopped_at = smp::tsc();
        stop.store(true, Ordering::Release);
        let (first_seen, seen) = watched?;
        let time = job.join(deadline_ms(WAIT_MS)).map_err(smp_failure)?;
        Ok::<_, Failure>((first_seen, stopped_at, seen, time))
    })?;
    ensure!(
        saw_stop,
        "core 1 ran out its own deadline without seeing the flag"
    );
    let overlap = time.started < first_seen && time.finished > stopped_at;
    let total = counter.load(Ordering::Relaxed);
    info!("core 0 saw the counter at {seen:?}; final {total}");
    marker!(
        "RESULT advances_seen={} counter_final={} saw_flag=yes overlap={} core1_us={}",
        SAMPLES,
        total,
        if overlap { "yes" } else { "no" },
        time.elapsed().as_micros()
    );
    ensure!(
        overlap,
        "core 1 ran from TSC {} to {}, core 0 watched from {first_seen} to {stopped_at}",
        time.started,
        time.finished
    );
    marker!("PHASE concurrent");
    Ok(())
}

/// Core 0's side of [`concurrent`]: sees core 1's counter advance
/// [`SAMPLES`] times, working in between. Returns the TSC at the first
/// observation and the values seen.
fn watch(counter: &AtomicU64, job: &smp::Job<'_>) -> Result<(u64, [u64; SAMPLES]), Failure> {
    let mut seen = [0u64; SAMPLES];
    let mut first_seen = 0;
    let mut last = 0;
    for (i, slot) in seen.iter_mut().enumerate() {
        let advanced = spin_until(deadline_ms(WAIT_MS), || {
            counter.load(Ordering::Relaxed) > last
        });
        ensure!(advanced, "core 1's counter stuck at {last} (sample {i})");
        last = counter.load(Ordering::Relaxed);
        *slot = last;
        if i == 0 {
            first_seen = smp::tsc();
        }
        // Core 0 does its own work between observations.
        clock::delay_us(200);
    }
    ensure!(!job.is_finished(), "core 1 stopped before the flag was set");
    Ok((first_seen, seen))
}

/// `rounds` hand-overs each way through one atomic.
fn ping_pong(rounds: u64) -> Outcome {
    let ball = AtomicU64::new(0);
    let mut dropped = None;
    let mut echo = || {
        for i in 0..rounds {
            let serve = 2 * i + 1;
            if !spin_until(deadline_ms(WAIT_MS), || {
                ball.load(Ordering::Acquire) == serve
            }) {
                dropped = Some(i);
                return;
            }
            ball.store(serve + 1, Ordering::Release);
        }
    };
    let elapsed = smp::scope(SCOPE_LIMIT, |s| {
        let job = s.spawn(1, &mut echo).map_err(smp_failure)?;
        let start = clock::now();
        for i in 0..rounds {
            ball.store(2 * i + 1, Ordering::Release);
            let back = spin_until(deadline_ms(WAIT_MS), || {
                ball.load(Ordering::Acquire) == 2 * i + 2
            });
            ensure!(back, "core 1 did not return the ball in round {i}");
        }
        let elapsed = clock::now() - start;
        job.join(deadline_ms(WAIT_MS)).map_err(smp_failure)?;
        Ok::<_, Failure>(elapsed)
    })?;
    ensure!(
        dropped.is_none(),
        "core 1 lost the ball in round {dropped:?}"
    );
    let round_trip_ns = elapsed.as_nanos() as u64 / rounds.max(1);
    marker!("RESULT pingpong_rounds={rounds} round_trip_ns={round_trip_ns}");
    marker!("PHASE ping-pong");
    Ok(())
}

/// Both cores add `n` to a mutex-protected value and to an atomic at once.
fn shared(n: u64) -> Outcome {
    let value = spin::Mutex::new(0u64);
    let atomic = AtomicU64::new(0);
    let ready = AtomicBool::new(false);
    let go = AtomicBool::new(false);
    let mut started = false;
    let mut add = || {
        ready.store(true, Ordering::Release);
        started = spin_until(deadline_ms(WAIT_MS), || go.load(Ordering::Acquire));
        if started {
            for _ in 0..n {
                *value.lock() += 1;
            }
            for _ in 0..n {
                atomic.fetch_add(1, Ordering::Relaxed);
            }
        }
    };
    let (interleaved, core0, core1) = smp::scope(SCOPE_LIMIT, |s| {
        let job = s.spawn(1, &mut add).map_err(smp_failure)?;
        // Start together: core 1 is spinning on `go` when it is set.
        let core1_ready = spin_until(deadline_ms(WAIT_MS), || ready.load(Ordering::Acquire));
        go.store(true, Ordering::Release);
        ensure!(core1_ready, "core 1 did not get ready");
        let begin = smp::tsc();
        // Times core 0 found the value moved by core 1 since its own last
        // increment: the two really took turns.
        let mut interleaved = 0u64;
        let mut mine = None;
        for _ in 0..n {
            let mut guard = value.lock();
            if mine.is_some_and(|m| m != *guard) {
                interleaved += 1;
            }
            *guard += 1;
            mine = Some(*guard);
        }
        for _ in 0..n {
            atomic.fetch_add(1, Ordering::Relaxed);
        }
        let core0 = smp::tsc() - begin;
        let time = job.join(deadline_ms(5 * WAIT_MS)).map_err(smp_failure)?;
        Ok::<(u64, u64, smp::CoreTime), Failure>((interleaved, core0, time))
    })?;
    ensure!(started, "core 1 never saw the start flag");
    let total = *value.lock();
    let atomic_total = atomic.load(Ordering::Relaxed);
    marker!(
        "RESULT increments={n} mutex_total={total} atomic_total={atomic_total} \
         interleaved={interleaved} core0_us={} core1_us={}",
        clock::cycles_to_nanos(core0) / 1000,
        core1.elapsed().as_micros()
    );
    ensure!(total == 2 * n, "mutex total {total}, not {}", 2 * n);
    ensure!(
        atomic_total == 2 * n,
        "atomic total {atomic_total}, not {}",
        2 * n
    );
    marker!("PHASE shared");
    Ok(())
}
