//! A device that lies, driven by fuzz input.
//!
//! The simulated machine (`bare-nvme-sim`) provides a working controller so
//! that the driver gets deep into bring-up and I/O; every interaction of the
//! driver with the machine goes through wrappers of the platform, the mapped
//! registers and configuration space that consult the fuzz input:
//!
//! - any register or config read can return a fuzz value (replaced, XORed,
//!   all-ones or zero),
//! - any register write (doorbells included) can be followed by the "device"
//!   writing fuzz bytes into DMA memory the driver allocated: raw bytes, a
//!   forged completion entry, or a page of garbage (identify data, rings),
//! - any clock read can jump the virtual clock so deadlines expire,
//! - any DMA allocation or register mapping can fail.
//!
//! On top of that the input picks the controller's capabilities and timing
//! (slow disable, slow shutdown), the namespace geometry (512 or 4096 byte
//! blocks, sizes, count), the topology (bus 0, or one or two hot-plug root
//! ports with a second controller present or hot-added later), a
//! misbehaviour rule of the simulated controller and a script of operations
//! (submissions up to 64 KiB from unaligned buffers, so PRP lists; polls,
//! ticks, blocking I/O, removal, CFS, link flaps and bounces, presence
//! bounces, hangs, glitches, memory decoding off, config writes ignored so
//! bus mastering cannot be switched off, hot-add, detach).
//!
//! Invariants checked (a panic is a finding):
//! - no panic and no out-of-bounds access in the driver (the sim panics on a
//!   double or bogus DMA free),
//! - no hang: at most [`CALL_BUDGET`] platform calls per input, and the final
//!   detach reaches a terminal state within a bounded number of ticks,
//! - every submitted command completes exactly once (a ledger of tags: a
//!   second completion, or one for a tag never submitted, fails; after
//!   teardown every command has been delivered),
//! - no event lost: every controller reported attached reports exactly one
//!   end (Removed or Failed), `Quarantined` at most once and only after it,
//! - memory comes back only when the device provably cannot DMA: no region
//!   (ring, PRP list, caller buffer) handed back while the simulated device
//!   could still write it, no device access outside memory it owned, no
//!   protocol error, and at the end every DMA region is back except those
//!   the driver declared quarantined (`Event::Quarantined`) and blocking-I/O
//!   buffers it refused with `Error::Quarantined`. Lies that defeat any
//!   proof excuse what they can cause: a lying register or config read
//!   excuses memory handed back early, wild DMA and protocol errors;
//!   device writes into driver memory excuse wild DMA and protocol errors,
//! - once the device behaves again (lies stop, rules cleared, hang lifted,
//!   config writes accepted, held commands completed) every controller
//!   settles, Ready or ended, within bounded virtual time, and a Ready one
//!   serves a read from its first I/O queue.
//!
//! Input layout: [`HEADER`] bytes of configuration, then `ops` operations of
//! [`OP_BYTES`] each, then events of [`EVENT_BYTES`] each (a skip count, a
//! kind and two payload words): event `k` fires at platform call
//! `at(k-1) + skip + 1`.

mod device;
mod input;
mod ledger;
mod rig;
mod script;
mod settle;
mod setup;
mod teardown;

use std::time::Duration;

use bare_nvme::Driver;

use device::{FuzzConfig, FuzzPlatform};

/// Most platform calls one input may cause; more means the driver hangs.
pub const CALL_BUDGET: u64 = 3_000_000;
/// Bytes of configuration at the start of the input.
pub const HEADER: usize = 10;
/// Bytes per scripted operation.
pub const OP_BYTES: usize = 4;
/// Bytes per device event.
pub const EVENT_BYTES: usize = 11;
/// Longest transfer the driver is configured for: PRP lists beyond 8 KiB.
const MAX_TRANSFER: usize = 64 << 10;

type FuzzDriver = Driver<FuzzPlatform, FuzzConfig, 2, 4, 32>;

/// Whether `FUZZ_TRACE` asks for the operations to be printed (read once).
fn tracing() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("FUZZ_TRACE").is_some())
}

/// How far one input got, for checking that the harness reaches I/O.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reached {
    /// A controller became ready.
    pub ready: bool,
    /// Submissions attempted (accepted or refused).
    pub submitted: u64,
    /// Commands delivered back through `poll`.
    pub delivered: u64,
    /// Lies the device told.
    pub lies: usize,
    /// Platform calls made.
    pub calls: u64,
    /// Controllers the driver reported attached.
    pub attached: usize,
    /// Reads served after the device behaved again (the recovery check).
    pub recovered: usize,
    /// DMA regions the driver declared quarantined.
    pub quarantined: u32,
}

/// Runs one input; panics when the driver breaks an invariant.
pub fn run(data: &[u8]) -> Reached {
    let setup::Setup {
        mut rig,
        mut driver,
        mut ledger,
        chaos,
        script,
    } = setup::build(data);

    let mut reached = Reached::default();
    if driver.scan().is_ok() {
        let events = driver.wait_ready(Duration::from_millis(200));
        ledger.events(&events);
        reached.ready = driver.ready_controllers().next().is_some();
        for op in &script {
            script::step(&mut rig, &mut driver, &mut ledger, *op);
        }
    }

    // The device behaves again: a controller still in service must serve.
    chaos.borrow_mut().quiet = true;
    reached.recovered = settle::recover(&rig, &mut driver, &mut ledger, &chaos);

    teardown::detach_all(&rig, &mut driver, &mut ledger);
    teardown::check_reports(&mut driver, &mut ledger);
    drop(driver);
    let declared = teardown::check_memory(&rig, &mut ledger, &chaos);
    let chaos = chaos.borrow();
    reached.submitted = ledger.next_tag;
    reached.delivered = ledger.delivered;
    reached.lies = chaos.next;
    reached.calls = chaos.calls;
    reached.attached = ledger.attached.len();
    reached.quarantined = declared;
    reached
}
