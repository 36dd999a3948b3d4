//! More than one core: starting the other processors at boot, and running
//! borrowed work on them while core 0 goes on.
//!
//! # Start-up
//!
//! [`start`] runs once in `kmain`. It reads the processors from the ACPI
//! MADT (through the RSDP in the PVH start info, else the BIOS area; every
//! table checksummed and bounds-checked, see `acpi`). Without a usable MADT
//! it tries APIC id `boot id + 1`, since QEMU numbers the processors of one
//! socket consecutively; a processor that does not answer is simply not
//! there. Each processor gets INIT, then STARTUP (twice if needed, per the
//! MP start-up protocol) through the boot core's local APIC (xAPIC MMIO,
//! uncached), runs the real-mode trampoline (`trampoline`: 16 -> 32 -> 64
//! bit on the boot core's page tables) and reports in on its own 1 MiB
//! stack; every wait has a deadline. With `-smp 1` the MADT lists one
//! processor and nothing is started. Up to [`MAX_CORES`] cores are used.
//!
//! Core 0 is the boot processor; it runs the scenario. Cores 1.. take jobs.
//! A core without a job halts; posting a job wakes it with an IPI (`idle`).
//! No core takes device interrupts; the boot core has no IDT.
//!
//! # Running work on core 1
//!
//! ```ignore
//! let hits = AtomicU64::new(0);
//! let mut on_core1 = || { hits.fetch_add(1, Ordering::Relaxed); };
//! smp::scope(Duration::from_secs(5), |s| {
//!     let job = s.spawn(1, &mut on_core1)?;      // returns at once
//!     while !job.is_finished() {
//!         driver.tick();                         // core 0 keeps working
//!     }
//!     job.join(deadline_ms(1000))                // Result<CoreTime, SmpError>
//! })?;
//! ```
//!
//! - The job is a `&mut` to a closure defined *before* the scope: it may
//!   borrow anything that outlives the scope, without `'static`.
//! - The closure must be `Send` (it runs on the other core). Whatever core 0
//!   uses at the same time through shared references must be `Sync`: atomics,
//!   a `spin::Mutex`, or data only read. Something only the job uses (e.g. an
//!   I/O queue handle) can be captured by `&mut` or by value; core 0 gets it
//!   back after the scope.
//! - [`Job::join`] waits for the job with a deadline and returns its
//!   [`CoreTime`] (the core's own TSC before and after the job). On timeout
//!   the job keeps running; the scope still waits for it.
//! - When the scope's body returns, every job not joined yet is waited for,
//!   up to the scope's limit. Soundness rests on this join: the scope cannot
//!   return, and so the borrows cannot end, while a job may still run. A job
//!   past the limit ends the machine (panic) instead of returning early.
//! - One job per core at a time: a core is [`SmpError::Busy`] until its
//!   previous job has been joined. [`run_on`] runs one job and waits for it.
//! - Spawn from core 0; jobs cannot spawn further jobs on core 0
//!   ([`SmpError::BootCore`]) or on their own core.
//! - [`tsc`] reads the calling core's TSC and [`current_core`] says which
//!   core runs; QEMU's TSCs run in step, so stamps from both cores compare.
//!
//! What a job may use besides its captures: the clock (`clock::now`, the
//! TSC), `log` and the serial markers (one lock keeps lines whole), the DMA
//! allocator (behind a lock) and the board's platform (`QemuPlatform` is a
//! `Copy` unit type; its register counter is atomic), and MMIO (ECAM
//! included). Not port I/O configuration cycles: each port accessor locks
//! only itself, so a job making them could interleave its address/data pair
//! with core 0's (`pci::port_io`). The machine must boot
//! with as many processors (`Machine::cpus` in xtask, multi-threaded TCG);
//! [`cores`] says how many came up.

pub mod acpi;
mod idle;
mod lapic;
mod scope;
mod trampoline;

use core::fmt;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use log::{info, warn};

pub use scope::{run_on, scope, CoreTime, Job, SmpError};
// Named by code that passes a scope around; the scenarios do not.
#[allow(unused_imports)]
pub use scope::Scope;

use crate::clock;
use crate::scenarios::{deadline_ms, wait_until};
use crate::start_info::BootInfo;
use lapic::{Lapic, LapicError};
use trampoline::{Trampoline, TrampolineError};

/// Most cores used (the boot core included).
pub const MAX_CORES: usize = 2;

/// Stack of each further core.
const STACK_BYTES: usize = 1 << 20;

/// INIT to STARTUP, and STARTUP to the second STARTUP (MP start-up
/// protocol).
const AFTER_INIT_US: u64 = 10_000;
const AFTER_STARTUP_US: u64 = 200;
/// How long a started processor has to report in: it runs a few dozen
/// instructions, but a loaded host may schedule its thread late. (Only the
/// fallback waits this long in vain on a one-processor machine.)
const ANSWER_LIMIT_MS: u64 = 1_000;

#[repr(C, align(16))]
struct Stack([u8; STACK_BYTES]);

/// Stacks of cores 1.. (in `.bss`).
static mut STACKS: [Stack; MAX_CORES - 1] = [const { Stack([0; STACK_BYTES]) }; MAX_CORES - 1];

/// Cores online, the boot core included (0 before [`start`]).
static ONLINE: AtomicUsize = AtomicUsize::new(0);
/// APIC id of each core.
static APIC_IDS: [AtomicU32; MAX_CORES] = [const { AtomicU32::new(u32::MAX) }; MAX_CORES];
/// The APIC id a started core reports once it runs on its own stack in long
/// mode (a late answer of an earlier, given-up processor names another id).
static ANSWERED: [AtomicU32; MAX_CORES] = [const { AtomicU32::new(u32::MAX) }; MAX_CORES];
/// Base of the local APIC registers (the same address on every core).
static LAPIC_BASE: AtomicU64 = AtomicU64::new(0);
/// What [`start`] did.
static STARTED: spin::Once<Started> = spin::Once::new();

/// Where the list of processors came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The ACPI MADT.
    Madt,
    /// No usable MADT: QEMU's numbering (the boot core's APIC id + 1).
    Fallback,
}

/// What [`start`] did.
#[derive(Clone, Copy, Debug)]
pub struct Started {
    /// Processors listed by the MADT, or with the fallback the boot core
    /// and the one tried.
    pub listed: usize,
    /// Where the list came from.
    pub source: Source,
    /// Time taken.
    pub micros: u64,
}

/// Why no further core could be started.
#[derive(Clone, Copy, Debug)]
pub enum StartError {
    /// The local APIC cannot be used.
    Lapic(LapicError),
    /// The trampoline has no place.
    Trampoline(TrampolineError),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Lapic(e) => write!(f, "{e}"),
            StartError::Trampoline(TrampolineError::NoLowPage) => {
                f.write_str("no free page below 640 KiB for the trampoline")
            }
            StartError::Trampoline(TrampolineError::TablesAboveFourGiB) => {
                f.write_str("page tables above 4 GiB")
            }
        }
    }
}

impl From<LapicError> for StartError {
    fn from(e: LapicError) -> Self {
        StartError::Lapic(e)
    }
}

impl From<TrampolineError> for StartError {
    fn from(e: TrampolineError) -> Self {
        StartError::Trampoline(e)
    }
}

/// Starts every further processor the firmware lists (up to
/// [`MAX_CORES`]; without `use_madt`, as if there were no MADT). The boot
/// core counts as core 0 even on error.
pub fn start(boot: &BootInfo, use_madt: bool) -> Result<Started, StartError> {
    let begin = clock::now();
    ONLINE.store(1, Ordering::Release);
    let lapic = Lapic::from_msr()?;
    lapic.enable();
    let own = lapic.id();
    LAPIC_BASE.store(lapic.base(), Ordering::Release);
    APIC_IDS[0].store(u32::from(own), Ordering::Release);
    let mut ids: heapless::Vec<u8, { acpi::MAX_LISTED }> = heapless::Vec::new();
    let madt = if use_madt {
        acpi::read_madt(boot.rsdp)
    } else {
        Err(acpi::AcpiError::Ignored)
    };
    let (source, listed) = match madt {
        Ok(madt) => {
            if madt.lapic_base != lapic.base() {
                warn!(
                    "MADT names the local APIC at {:#x}, IA32_APIC_BASE at {:#x}; using the latter",
                    madt.lapic_base,
                    lapic.base()
                );
            }
            if madt.skipped > 0 {
                warn!("{} processors of the MADT not used", madt.skipped);
            }
            ids = madt.apic_ids;
            (Source::Madt, ids.len())
        }
        Err(e) => {
            warn!("ACPI: {e}; trying APIC id {}", own.wrapping_add(1));
            let _ = ids.push(own.wrapping_add(1));
            (Source::Fallback, 2)
        }
    };
    let mut others = ids.iter().copied().filter(|&id| id != own).peekable();
    if others.peek().is_some() {
        let trampoline = trampoline::install(&boot.memory_map)?;
        for id in others {
            let core = ONLINE.load(Ordering::Acquire);
            if core >= MAX_CORES {
                warn!("APIC id {id} not started: the board uses {MAX_CORES} cores");
                continue;
            }
            if start_one(&lapic, &trampoline, id, core)? {
                ONLINE.store(core + 1, Ordering::Release);
            } else if source == Source::Madt {
                warn!("APIC id {id} did not answer STARTUP");
            }
        }
    }
    let online = ONLINE.load(Ordering::Acquire);
    let started = Started {
        listed,
        source,
        micros: (clock::now() - begin).as_micros() as u64,
    };
    info!(
        "{online} cores online ({listed} processors listed, {source:?}) in {} us",
        started.micros
    );
    STARTED.call_once(|| started);
    Ok(started)
}

/// INIT, STARTUP, STARTUP: whether processor `id` came up as `core`.
fn start_one(
    lapic: &Lapic,
    trampoline: &Trampoline,
    id: u8,
    core: usize,
) -> Result<bool, LapicError> {
    // SAFETY: a pointer into the static stack array of core `core` (index
    // `core - 1`, `1 <= core < MAX_CORES`); no reference is formed, and the
    // stack is used by that core alone once it runs.
    let top = unsafe {
        let stack = core::ptr::addr_of_mut!(STACKS[core - 1]);
        stack as u64 + STACK_BYTES as u64
    };
    APIC_IDS[core].store(u32::from(id), Ordering::Release);
    trampoline.prepare(top, core as u32);
    lapic.send_init(id)?;
    clock::delay_us(AFTER_INIT_US);
    let answered = || ANSWERED[core].load(Ordering::Acquire) == u32::from(id);
    for _ in 0..2 {
        lapic.send_startup(id, trampoline.vector())?;
        if wait_until(
            clock::now() + core::time::Duration::from_micros(AFTER_STARTUP_US),
            answered,
        ) {
            return Ok(true);
        }
    }
    if wait_until(deadline_ms(ANSWER_LIMIT_MS), answered) {
        return Ok(true);
    }
    // Stop it, should it start late with this core's stack and index.
    APIC_IDS[core].store(u32::MAX, Ordering::Release);
    lapic.send_init(id)?;
    Ok(false)
}

/// The Rust entry of a started core (from `smp_ap_entry`).
extern "C" fn ap_main(core: u32) -> ! {
    let core = core as usize;
    if core == 0 || core >= MAX_CORES {
        park();
    }
    let Ok(lapic) = Lapic::at(LAPIC_BASE.load(Ordering::Acquire)) else {
        // Without its APIC the core cannot be woken: it stays off.
        park();
    };
    idle::prepare(&lapic);
    ANSWERED[core].store(u32::from(lapic.id()), Ordering::Release);
    scope::serve(core, &lapic)
}

/// Stops the calling core for good (nothing wakes it but INIT).
fn park() -> ! {
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}

/// Wakes `core` if it halts waiting for a job.
fn wake(core: usize) -> Result<(), LapicError> {
    let lapic = Lapic::at(LAPIC_BASE.load(Ordering::Acquire))?;
    let id = APIC_IDS[core].load(Ordering::Acquire);
    idle::wake(&lapic, id as u8)
}

/// What [`start`] did, if it got as far as listing the processors.
pub fn started() -> Option<&'static Started> {
    STARTED.get()
}

/// Cores online, the boot core included (1 on a single-processor machine).
pub fn cores() -> usize {
    ONLINE.load(Ordering::Acquire).max(1)
}

/// The calling core's index (0 is the boot core).
pub fn current_core() -> usize {
    let base = LAPIC_BASE.load(Ordering::Acquire);
    let Ok(lapic) = Lapic::at(base) else {
        return 0;
    };
    let id = u32::from(lapic.id());
    APIC_IDS
        .iter()
        .position(|known| known.load(Ordering::Acquire) == id)
        .unwrap_or(0)
}

/// The calling core's time-stamp counter.
pub fn tsc() -> u64 {
    clock::rdtsc()
}
