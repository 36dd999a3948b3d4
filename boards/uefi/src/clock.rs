//! The driver's clock: on x86 the TSC, calibrated once against the
//! firmware's `Stall`; on aarch64 the generic timer's virtual count, at the
//! frequency CNTFRQ_EL0 states.
//!
//! UEFI has no monotonic clock callable at every TPL and after
//! ExitBootServices: `GetTime` is the battery clock (one-second
//! resolution on many machines), `GetNextMonotonicCount` counts calls, not
//! time, and `Stall` only waits. The TSC is invariant on every machine OVMF
//! targets and keeps counting after the firmware is gone (the
//! ExitBootServices handler needs deadlines too).

use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;

use bare_nvme::Instant;

/// TSC ticks per millisecond, 0 until [`calibrate`].
static TICKS_PER_MS: AtomicU64 = AtomicU64::new(0);

#[cfg(target_arch = "x86_64")]
fn tsc() -> u64 {
    // SAFETY: RDTSC has no side effects; every x86_64 CPU has it.
    unsafe { core::arch::x86_64::_rdtsc() }
}

#[cfg(target_arch = "aarch64")]
fn tsc() -> u64 {
    let count: u64;
    // SAFETY: reads the virtual count, which EL1 may read; no side effect.
    unsafe {
        core::arch::asm!("isb", "mrs {}, cntvct_el0", out(reg) count, options(nomem, nostack))
    };
    count
}

/// Measures the TSC over a 10 ms `Stall`; returns ticks per millisecond.
#[cfg(target_arch = "x86_64")]
pub fn calibrate() -> u64 {
    let start = tsc();
    uefi::boot::stall(Duration::from_millis(10));
    let per_ms = (tsc() - start) / 10;
    TICKS_PER_MS.store(per_ms.max(1), Ordering::Relaxed);
    per_ms
}

/// Reads the generic timer's frequency; returns ticks per millisecond.
#[cfg(target_arch = "aarch64")]
pub fn calibrate() -> u64 {
    let hz: u64;
    // SAFETY: reads CNTFRQ_EL0, which the firmware set; no side effect.
    unsafe { core::arch::asm!("mrs {}, cntfrq_el0", out(reg) hz, options(nomem, nostack)) };
    let per_ms = hz / 1000;
    TICKS_PER_MS.store(per_ms.max(1), Ordering::Relaxed);
    per_ms
}

/// Now, in nanoseconds since the TSC started.
pub fn now() -> Instant {
    let per_ms = TICKS_PER_MS.load(Ordering::Relaxed).max(1);
    let t = u128::from(tsc());
    Instant::from_nanos((t * 1_000_000 / u128::from(per_ms)) as u64)
}

/// Waits `d` on the TSC (usable where boot services are not).
pub fn spin(d: Duration) {
    let end = now() + d;
    while now() < end {
        core::hint::spin_loop();
    }
}
