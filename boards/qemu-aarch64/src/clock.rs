//! The monotonic clock: the generic timer's virtual counter (CNTVCT_EL0) at
//! the frequency CNTFRQ_EL0 gives. QEMU starts the counter with the machine.

use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::{Readable, Writeable, CNTFRQ_EL0, CNTKCTL_EL1, CNTVCT_EL0};
use bare_nvme::Instant;

static ORIGIN: AtomicU64 = AtomicU64::new(0);
static HZ: AtomicU64 = AtomicU64::new(1);

/// Reads the counter (ordered after earlier instructions).
pub fn ticks() -> u64 {
    barrier::isb(barrier::SY);
    CNTVCT_EL0.get()
}

/// Starts the clock; returns the counter frequency in Hz.
pub fn init() -> u64 {
    let hz = CNTFRQ_EL0.get().max(1);
    // An event every 2^10 counter ticks (16 us at 62.5 MHz), so that WFE
    // never waits longer.
    CNTKCTL_EL1.write(CNTKCTL_EL1::EVNTEN::SET + CNTKCTL_EL1::EVNTI.val(9));
    HZ.store(hz, Ordering::Relaxed);
    ORIGIN.store(ticks(), Ordering::Relaxed);
    hz
}

/// The counter frequency in Hz (1 before [`init`]).
pub fn hz() -> u64 {
    HZ.load(Ordering::Relaxed)
}

/// Converts counter ticks to nanoseconds.
pub fn ticks_to_nanos(ticks: u64) -> u64 {
    (u128::from(ticks) * 1_000_000_000 / u128::from(HZ.load(Ordering::Relaxed))) as u64
}

/// Time since the machine started.
pub fn since_machine_start() -> Duration {
    Duration::from_nanos(ticks_to_nanos(ticks()))
}

/// Nanoseconds since [`init`].
pub fn now() -> Instant {
    let elapsed = ticks().saturating_sub(ORIGIN.load(Ordering::Relaxed));
    Instant::from_nanos(ticks_to_nanos(elapsed))
}

/// Waits `micros` microseconds (a deadline on the clock, not a spin count).
pub fn delay_us(micros: u64) {
    let deadline = now()
        .as_nanos()
        .saturating_add(micros.saturating_mul(1_000));
    while now().as_nanos() < deadline {
        relax();
    }
}

/// One pause in a wait loop: waits for the next event. The timer's event
/// stream (see [`init`]) bounds the wait; under QEMU the CPU yields to the
/// host meanwhile, which lets device deletions and their QMP events complete
/// (a guest that only spins starves them).
pub fn relax() {
    aarch64_cpu::asm::wfe();
}
