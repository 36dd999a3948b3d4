//! The monotonic clock: the TSC, calibrated once against the PIT.
//!
//! QEMU's TSC runs at a constant rate (invariant TSC), so one calibration at
//! boot holds for the run. `now()` is nanoseconds since calibration.

use core::sync::atomic::{AtomicU64, Ordering};

use bare_nvme::Instant;
use x86_64::instructions::port::Port;

/// PIT input clock in Hz.
const PIT_HZ: u64 = 1_193_182;
/// Calibration interval: 10 ms of PIT ticks.
const CALIBRATION_TICKS: u16 = (PIT_HZ / 100) as u16;
const PIT_CHANNEL2: u16 = 0x42;
const PIT_COMMAND: u16 = 0x43;
/// Port 0x61: bit 0 gates channel 2, bit 1 drives the speaker, bit 5 is OUT2.
const NMI_STATUS_CONTROL: u16 = 0x61;
const GATE2: u8 = 0x01;
const SPEAKER: u8 = 0x02;
const OUT2: u8 = 0x20;
/// Channel 2, low then high byte, mode 0 (interrupt on terminal count), binary.
const CHANNEL2_MODE0: u8 = 0b1011_0000;
/// Give up calibrating after this many TSC cycles (about 10 s at 10 GHz): a
/// machine without a PIT must not hang here.
const CALIBRATION_LIMIT_CYCLES: u64 = 100_000_000_000;
/// Fallback when calibration fails.
const FALLBACK_TSC_HZ: u64 = 1_000_000_000;

static TSC_ORIGIN: AtomicU64 = AtomicU64::new(0);
/// Nanoseconds per TSC cycle as a 32.32 fixed-point number.
static NS_PER_CYCLE_FP: AtomicU64 = AtomicU64::new(0);

/// Reads the time-stamp counter.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC only reads a counter.
    unsafe { core::arch::x86_64::_rdtsc() }
}

fn outb(port: u16, value: u8) {
    // SAFETY: PIT and port 0x61 only control timers and the speaker.
    unsafe { Port::new(port).write(value) }
}

fn inb(port: u16) -> u8 {
    // SAFETY: as in `outb`.
    unsafe { Port::new(port).read() }
}

/// Measures the TSC rate against PIT channel 2 and starts the clock. Returns
/// the TSC frequency in Hz.
pub fn calibrate() -> u64 {
    let control = inb(NMI_STATUS_CONTROL) & !(GATE2 | SPEAKER);
    outb(NMI_STATUS_CONTROL, control);
    outb(PIT_COMMAND, CHANNEL2_MODE0);
    outb(PIT_CHANNEL2, CALIBRATION_TICKS as u8);
    outb(PIT_CHANNEL2, (CALIBRATION_TICKS >> 8) as u8);
    // Raising the gate starts the count; OUT2 rises at terminal count.
    outb(NMI_STATUS_CONTROL, control | GATE2);
    let start = rdtsc();
    let mut end = start;
    let mut ok = false;
    while end.wrapping_sub(start) < CALIBRATION_LIMIT_CYCLES {
        if inb(NMI_STATUS_CONTROL) & OUT2 != 0 {
            ok = true;
            break;
        }
        end = rdtsc();
    }
    outb(NMI_STATUS_CONTROL, control);
    let hz = if ok {
        let cycles = end.wrapping_sub(start);
        cycles * PIT_HZ / u64::from(CALIBRATION_TICKS)
    } else {
        log::warn!("PIT calibration failed; assuming a 1 GHz TSC");
        FALLBACK_TSC_HZ
    };
    NS_PER_CYCLE_FP.store((1_000_000_000u64 << 32) / hz.max(1), Ordering::Relaxed);
    TSC_ORIGIN.store(rdtsc(), Ordering::Relaxed);
    hz
}

/// Converts TSC cycles to nanoseconds (0 before calibration).
pub fn cycles_to_nanos(cycles: u64) -> u64 {
    let fp = NS_PER_CYCLE_FP.load(Ordering::Relaxed);
    ((u128::from(cycles) * u128::from(fp)) >> 32) as u64
}

/// The clock's raw counter (the TSC), under the name the shared scenarios
/// use on every board.
pub fn ticks() -> u64 {
    rdtsc()
}

/// Converts counter ticks to nanoseconds (the shared scenarios' name).
pub fn ticks_to_nanos(ticks: u64) -> u64 {
    cycles_to_nanos(ticks)
}

/// Time since the machine started (QEMU starts the TSC at zero).
pub fn since_machine_start() -> core::time::Duration {
    core::time::Duration::from_nanos(cycles_to_nanos(rdtsc()))
}

/// Nanoseconds since calibration.
pub fn now() -> Instant {
    let cycles = rdtsc().saturating_sub(TSC_ORIGIN.load(Ordering::Relaxed));
    Instant::from_nanos(cycles_to_nanos(cycles))
}

/// One pause in a wait loop.
pub fn relax() {
    core::hint::spin_loop();
}

/// Waits `micros` microseconds (a deadline on the clock, not a spin count).
pub fn delay_us(micros: u64) {
    let deadline = now()
        .as_nanos()
        .saturating_add(micros.saturating_mul(1_000));
    while now().as_nanos() < deadline {
        core::hint::spin_loop();
    }
}
