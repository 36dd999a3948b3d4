//! Scenarios: a machine, a kernel command line, and a script of steps the
//! host performs while the kernel runs.
//!
//! A scenario passes when every step succeeds, the kernel prints `@@PASS` and
//! exits through isa-debug-exit with the success code, within the time limit,
//! and every expected `@@RESULT` value matches.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::machine::Machine;
use crate::qemu::{Launch, Qemu, EXIT_SUCCESS};
use crate::qmp;
use crate::serial::Line;

/// One thing the host does during a run.
#[derive(Clone, Debug)]
pub enum Step {
    /// Wait for the serial marker `@@{text}` (a prefix: `READY`,
    /// `PHASE attached`).
    Marker(String),
    /// Run a QMP command with arguments; it must succeed.
    Qmp(String, Value),
    /// Hot-add an NVMe controller (`device_add`) backed by a drive or block
    /// node the machine made, re-opened on a new node first if QEMU still
    /// holds it for a device it never freed (see [`Step::LeftSlot`]).
    AddNvme {
        /// Device id.
        id: String,
        /// Serial number.
        serial: String,
        /// Drive or block node, as the machine names it.
        drive: String,
        /// Root or downstream port.
        bus: String,
    },
    /// Wait until QEMU took device `id` out of the machine (the kernel's
    /// hand cut its slot's power). `DEVICE_DELETED` is not required: QEMU's
    /// NVMe model (7.2 and later) leaks a reference for every request that
    /// was in flight when it was unplugged, so the object is never freed and
    /// the event never sent, although the slot is empty.
    LeftSlot(String),
    /// Wait for `DEVICE_DELETED` of device `id` (an orderly removal: nothing
    /// was in flight, so QEMU has no reason not to free it).
    Deleted(String),
    /// Send a line to the kernel on its serial port (it waits for it after
    /// printing `@@WAIT {word}`).
    Tell(String),
    /// Kill QEMU at once (SIGKILL): the power is cut, nothing is flushed by
    /// the guest or by an orderly QEMU exit. Must be the last step; the run
    /// is then judged by the steps before it and the expected results.
    Kill,
}

impl Step {
    /// Wait for `@@{marker}`.
    pub fn marker(marker: &str) -> Self {
        Step::Marker(marker.to_string())
    }

    /// Wait for `@@PHASE {name}`.
    pub fn phase(name: &str) -> Self {
        Step::Marker(format!("PHASE {name}"))
    }

    /// Hot-add an NVMe controller `id` (serial `serial`) backed by block node
    /// or drive `drive` into the slot of root port `bus`.
    pub fn add_nvme(id: &str, serial: &str, drive: &str, bus: &str) -> Self {
        Step::AddNvme {
            id: id.to_string(),
            serial: serial.to_string(),
            drive: drive.to_string(),
            bus: bus.to_string(),
        }
    }

    /// Press the attention button of the slot holding device `id` (QMP
    /// `device_del` on a native PCIe slot; the kernel's hand does the rest).
    pub fn press_button(id: &str) -> Self {
        Step::Qmp("device_del".to_string(), json!({ "id": id }))
    }

    /// Wait until QEMU took device `id` out of its slot after a pull.
    pub fn left_slot(id: &str) -> Self {
        Step::LeftSlot(id.to_string())
    }

    /// Wait for QEMU's `DEVICE_DELETED` of device `id`.
    pub fn deleted(id: &str) -> Self {
        Step::Deleted(id.to_string())
    }

    /// Send `word` to the kernel.
    pub fn tell(word: &str) -> Self {
        Step::Tell(word.to_string())
    }

    fn uses_qmp(&self) -> bool {
        matches!(
            self,
            Step::Qmp(..) | Step::AddNvme { .. } | Step::LeftSlot(_) | Step::Deleted(_)
        )
    }

    fn describe(&self) -> String {
        match self {
            Step::Marker(m) => format!("wait for @@{m}"),
            Step::Qmp(cmd, args) => format!("QMP {cmd} {args}"),
            Step::AddNvme {
                id,
                serial,
                drive,
                bus,
            } => format!("add nvme {id} (serial {serial}, drive {drive}) to {bus}"),
            Step::LeftSlot(id) => format!("wait until QEMU took {id} out of its slot"),
            Step::Deleted(id) => format!("wait for QMP event DEVICE_DELETED of {id}"),
            Step::Tell(w) => format!("tell the kernel {w}"),
            Step::Kill => "kill QEMU (power cut)".to_string(),
        }
    }
}

/// A QEMU scenario.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Name for reports and filters.
    pub name: String,
    /// What it shows, in one line.
    pub about: String,
    /// The machine.
    pub machine: Machine,
    /// The kernel command line (`scenario=NAME key=value ...`).
    pub append: String,
    /// The host's script.
    pub steps: Vec<Step>,
    /// Limit for the whole run.
    pub time_limit: Duration,
    /// `@@RESULT` values that must come out as given.
    pub expect: Vec<(String, String)>,
    /// Texts some note of the run must contain (see [`Report::notes`]).
    pub expect_notes: Vec<String>,
    /// Run on the host before QEMU starts (to make a disk image).
    pub before: Option<HostCheck>,
    /// Run on the host after QEMU exited, if the run passed so far (to
    /// check what the guest left on a disk image).
    pub after: Option<HostCheck>,
}

/// A host-side step around a run: `Err` says why the scenario fails.
pub type HostCheck = fn() -> Result<(), String>;

impl Scenario {
    /// A scenario booting `machine` with `append`, no steps, a 60 s limit.
    pub fn new(name: &str, about: &str, machine: Machine, append: &str) -> Self {
        Self {
            name: name.to_string(),
            about: about.to_string(),
            machine,
            append: append.to_string(),
            steps: Vec::new(),
            time_limit: Duration::from_secs(60),
            expect: Vec::new(),
            expect_notes: Vec::new(),
            before: None,
            after: None,
        }
    }

    /// Runs `prepare` on the host before QEMU starts.
    pub fn before(mut self, prepare: HostCheck) -> Self {
        self.before = Some(prepare);
        self
    }

    /// Runs `check` on the host after QEMU exited.
    pub fn after(mut self, check: HostCheck) -> Self {
        self.after = Some(check);
        self
    }

    /// Appends steps to the script.
    pub fn steps(mut self, steps: impl IntoIterator<Item = Step>) -> Self {
        self.steps.extend(steps);
        self
    }

    /// Requires `@@RESULT ... key=value ...`.
    pub fn expect(mut self, key: &str, value: &str) -> Self {
        self.expect.push((key.to_string(), value.to_string()));
        self
    }

    /// Requires a note of the run (what QEMU did) containing `text`.
    pub fn expect_note(mut self, text: &str) -> Self {
        self.expect_notes.push(text.to_string());
        self
    }

    /// Sets the time limit.
    pub fn time_limit(mut self, limit: Duration) -> Self {
        self.time_limit = limit;
        self
    }
}

/// What a run produced.
#[derive(Debug)]
pub struct Report {
    /// The scenario's name.
    pub name: String,
    /// `None` when it passed, else why not.
    pub failure: Option<String>,
    /// Why the run failed for QEMU's reasons rather than the kernel's: it
    /// died from a signal, or stopped answering QMP while the kernel had not
    /// given up. Such a run is repeated once, and said so.
    pub qemu_fault: Option<String>,
    /// What QEMU did that a reader should know although the run passed
    /// (a device it never freed after a pull, and what the host did then).
    pub notes: Vec<String>,
    /// Wall time from starting QEMU to its exit.
    pub wall: Duration,
    /// When the kernel's first serial line arrived (host clock).
    pub first_line: Option<Duration>,
    /// Guest time from machine start to `kmain` (`@@BOOT kmain_us`).
    pub kmain: Option<Duration>,
    /// All `@@RESULT` pairs (later values win).
    pub results: BTreeMap<String, String>,
    /// The serial log.
    pub log: Vec<Line>,
    /// QEMU's stderr.
    pub stderr: String,
}

impl Report {
    /// Whether the scenario passed.
    pub fn passed(&self) -> bool {
        self.failure.is_none()
    }

    /// The last `n` serial lines and QEMU's stderr, for a failure report.
    pub fn tail(&self, n: usize) -> String {
        let mut out = String::new();
        let skip = self.log.len().saturating_sub(n);
        for line in &self.log[skip..] {
            out.push_str(&format!("    | {}\n", line.text));
        }
        for line in self.stderr.lines() {
            out.push_str(&format!("    ! {line}\n"));
        }
        out
    }
}

/// Runs `scenario` with `kernel`, adding `extra` QEMU arguments.
pub fn run(scenario: &Scenario, kernel: &Path, echo: bool, extra: &[String]) -> Report {
    let machine = scenario.machine.clone().args(extra);
    let uses_qmp = scenario.steps.iter().any(Step::uses_qmp);
    let launch = Launch {
        echo,
        paused: uses_qmp,
    };
    if let Some(prepare) = scenario.before {
        if let Err(e) = prepare() {
            return failed_to_start(scenario, format!("preparing the host side: {e}"));
        }
    }
    let deadline_start = Instant::now();
    let deadline = deadline_start + scenario.time_limit;
    let mut qemu = match Qemu::start(&machine, kernel, &scenario.append, &scenario.name, launch) {
        Ok(q) => q,
        Err(e) => return failed_to_start(scenario, e),
    };
    let mut host = Host::default();
    let failure = play(&mut qemu, scenario, &mut host, uses_qmp, echo, deadline);
    let killed = failure.is_none() && matches!(scenario.steps.last(), Some(Step::Kill));
    let status = qemu.wait_exit(deadline);
    let wall = qemu.started.elapsed();
    if status.is_some() {
        // QEMU has exited; its last lines may still be in the pipe.
        qemu.serial
            .wait_end(Instant::now() + Duration::from_secs(2));
    }
    let log = qemu.serial.history();
    let stderr = if status.is_some() {
        qemu.stderr()
    } else {
        String::new()
    };
    drop(qemu);
    let crash = status.and_then(|s| std::os::unix::process::ExitStatusExt::signal(&s));
    let guest_gave_up = log.iter().any(|l| l.text.starts_with("@@FAIL"));
    let qemu_fault = match (&crash, &failure) {
        (Some(signal), _) if !killed => Some(format!("QEMU crashed (signal {signal})")),
        (None, Some(step)) if !guest_gave_up && step.contains("QMP timed out") => {
            Some(format!("QEMU stopped answering: {step}"))
        }
        _ => None,
    };
    let mut failure = judge(scenario, failure, killed, crash, status, &log);
    let (results, kmain) = markers(&log);
    if failure.is_none() {
        failure = unmet_expectation(scenario, &results);
    }
    if failure.is_none() {
        failure = scenario
            .expect_notes
            .iter()
            .find(|want| !host.notes.iter().any(|n| n.contains(want.as_str())))
            .map(|want| format!("no note of QEMU's containing {want:?}"));
    }
    if let (None, Some(check)) = (&failure, scenario.after) {
        failure = check().err().map(|e| format!("after the run: {e}"));
    }
    Report {
        name: scenario.name.clone(),
        failure,
        qemu_fault,
        notes: host.notes,
        wall,
        first_line: log.first().map(|l| l.at),
        kmain,
        results,
        log,
        stderr,
    }
}

/// Connects QMP if the script needs it and performs the steps in order;
/// returns why the first one failed.
fn play(
    qemu: &mut Qemu,
    scenario: &Scenario,
    host: &mut Host,
    uses_qmp: bool,
    echo: bool,
    deadline: Instant,
) -> Option<String> {
    if uses_qmp {
        if let Err(e) = qemu.qmp() {
            return Some(e);
        }
    }
    for (index, step) in scenario.steps.iter().enumerate() {
        if echo && !matches!(step, Step::Marker(_)) {
            println!("host> {}", step.describe());
        }
        if let Err(e) = perform(qemu, &scenario.machine, host, step, deadline) {
            return Some(format!("step {} ({}): {e}", index + 1, step.describe()));
        }
    }
    None
}

/// Why the finished run failed, if it did: a run killed on purpose is judged
/// by the guest's last words, a QEMU crash is reported as such, otherwise a
/// failed step or the guest's verdict and exit status decide.
fn judge(
    scenario: &Scenario,
    failure: Option<String>,
    killed: bool,
    crash: Option<i32>,
    status: Option<ExitStatus>,
    log: &[Line],
) -> Option<String> {
    if killed {
        // Killed on purpose: the guest's last words decide.
        log.iter()
            .find(|l| l.text.starts_with("@@FAIL"))
            .map(|l| l.text.trim_start_matches("@@").to_string())
    } else if let Some(signal) = crash {
        // QEMU itself died: whatever the guest did, that is an emulator bug,
        // reported as such (the caller may retry).
        Some(format!(
            "QEMU crashed (signal {signal}){}",
            failure.map(|f| format!(" during: {f}")).unwrap_or_default()
        ))
    } else if failure.is_none() {
        verdict(
            scenario,
            status.and_then(|s| s.code()),
            status.is_none(),
            log,
        )
    } else {
        // A host step failed; when the guest gave up first (and so ended the
        // machine the step was waiting on), its reason is the one to read.
        let guest = log
            .iter()
            .find(|l| l.text.starts_with("@@FAIL"))
            .map(|l| format!("; the guest: {}", l.text.trim_start_matches("@@")));
        failure.map(|f| f + &guest.unwrap_or_default())
    }
}

/// The `@@RESULT` pairs (later values win) and the `@@BOOT kmain_us` time.
fn markers(log: &[Line]) -> (BTreeMap<String, String>, Option<Duration>) {
    let mut results = BTreeMap::new();
    let mut kmain = None;
    for line in log {
        match line.marker() {
            Some(("RESULT", rest)) => {
                for pair in rest.split_whitespace() {
                    if let Some((k, v)) = pair.split_once('=') {
                        results.insert(k.to_string(), v.to_string());
                    }
                }
            }
            Some(("BOOT", rest)) => {
                kmain = rest
                    .split_whitespace()
                    .find_map(|p| p.strip_prefix("kmain_us="))
                    .and_then(|v| v.parse().ok())
                    .map(Duration::from_micros);
            }
            _ => {}
        }
    }
    (results, kmain)
}

/// The first expected result that is missing or differs.
fn unmet_expectation(scenario: &Scenario, results: &BTreeMap<String, String>) -> Option<String> {
    for (key, want) in &scenario.expect {
        match results.get(key) {
            Some(got) if got == want => {}
            Some(got) => return Some(format!("result {key}={got}, expected {want}")),
            None => return Some(format!("no result {key} (expected {want})")),
        }
    }
    None
}

/// What the host keeps track of across the steps of one run.
#[derive(Debug, Default)]
struct Host {
    /// A drive as the steps name it -> the block node that stands for it
    /// now (a re-opened node once QEMU kept the first).
    nodes: BTreeMap<String, String>,
    /// A hot-added device's id -> the drive (as the steps name it) it has.
    holders: BTreeMap<String, String>,
    /// Devices that left their slot without a `DEVICE_DELETED` so far.
    unfreed: BTreeSet<String>,
    /// Block nodes re-opened so far.
    reopened: u32,
    /// See [`Report::notes`].
    notes: Vec<String>,
}

/// How often the host looks whether a pulled device has left the machine.
const SLOT_POLL: Duration = Duration::from_millis(10);

/// How long after a device left the machine its `DEVICE_DELETED` may take
/// (QEMU frees it after an RCU grace period) before it counts as unfreed.
const DELETED_GRACE: Duration = Duration::from_millis(500);

fn perform(
    qemu: &mut Qemu,
    machine: &Machine,
    host: &mut Host,
    step: &Step,
    deadline: Instant,
) -> Result<(), String> {
    match step {
        Step::Marker(marker) => qemu
            .serial
            .wait_marker(marker, deadline)
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Step::Qmp(command, args) => qemu.qmp()?.execute(command, args.clone()).map(|_| ()),
        Step::AddNvme {
            id,
            serial,
            drive,
            bus,
        } => add_nvme(qemu.qmp()?, machine, host, [id, serial, drive, bus]),
        Step::LeftSlot(id) => left_slot(qemu.qmp()?, host, id, deadline),
        Step::Deleted(id) => qemu
            .qmp()?
            .wait_event_where("DEVICE_DELETED", |d| d["device"] == id.as_str(), deadline)
            .map(|_| ()),
        Step::Tell(word) => qemu.tell(word),
        Step::Kill => qemu.kill(),
    }
}

/// `device_add` of an NVMe controller on `drive`'s current node. When QEMU
/// refuses it because a device it never freed still holds the node, the
/// drive is re-opened on a new node over the same backing store (the old
/// device will never touch it again) and the add is tried once more.
fn add_nvme(
    qmp: &mut qmp::Qmp,
    machine: &Machine,
    host: &mut Host,
    [id, serial, drive, bus]: [&String; 4],
) -> Result<(), String> {
    let add = |qmp: &mut qmp::Qmp, node: &str| {
        qmp.execute(
            "device_add",
            json!({ "driver": "nvme", "id": id, "serial": serial, "drive": node, "bus": bus }),
        )
    };
    let node = host.nodes.get(drive).cloned().unwrap_or(drive.clone());
    let first = add(qmp, &node);
    if let Err(refused) = first {
        let held = host
            .holders
            .iter()
            .any(|(dev, d)| d == drive && host.unfreed.contains(dev));
        let spec = machine.reopen(drive);
        let (true, Some(mut spec)) = (held, spec) else {
            return Err(refused);
        };
        host.reopened += 1;
        let fresh = format!("{drive}-r{}", host.reopened);
        spec["node-name"] = json!(fresh);
        qmp.execute("blockdev-add", spec)
            .map_err(|e| format!("{refused}; re-opening {drive}: {e}"))?;
        add(qmp, &fresh).map_err(|e| format!("{refused}; on re-opened {fresh}: {e}"))?;
        host.notes.push(format!(
            "QEMU still held {node} for a device it never freed ({refused}); \
             re-opened {drive} as {fresh}"
        ));
        host.nodes.insert(drive.clone(), fresh);
    }
    host.holders.insert(id.clone(), drive.clone());
    Ok(())
}

/// Waits until device `id` is out of the machine, then briefly for its
/// `DEVICE_DELETED`; a device that never gets one is noted (see
/// [`Step::LeftSlot`]) and its drive re-opened when it is added again.
fn left_slot(
    qmp: &mut qmp::Qmp,
    host: &mut Host,
    id: &str,
    deadline: Instant,
) -> Result<(), String> {
    while qmp.device_present(id)? {
        if Instant::now() >= deadline {
            return Err(format!("{id} is still in its slot"));
        }
        std::thread::sleep(SLOT_POLL);
    }
    let grace = (Instant::now() + DELETED_GRACE).min(deadline);
    match qmp.wait_event_where("DEVICE_DELETED", |d| d["device"] == id, grace) {
        Ok(_) => {
            host.unfreed.remove(id);
            Ok(())
        }
        Err(e) if qmp::timed_out(&e) => {
            host.unfreed.insert(id.to_string());
            host.notes.push(format!(
                "QEMU took {id} out of its slot but sent no DEVICE_DELETED within {} ms \
                 (its NVMe model leaks a reference per request in flight at the unplug)",
                DELETED_GRACE.as_millis()
            ));
            Ok(())
        }
        Err(e) => Err(e),
    }
}

fn verdict(
    scenario: &Scenario,
    code: Option<i32>,
    timed_out: bool,
    log: &[Line],
) -> Option<String> {
    let fail_line = log.iter().find(|l| l.text.starts_with("@@FAIL"));
    let passed = log.iter().any(|l| l.text == "@@PASS");
    if timed_out {
        return Some(format!("no exit within {:?}", scenario.time_limit));
    }
    if let Some(line) = fail_line {
        return Some(line.text.trim_start_matches("@@").to_string());
    }
    match code {
        Some(EXIT_SUCCESS) if passed => None,
        Some(EXIT_SUCCESS) => Some("success exit without @@PASS".to_string()),
        Some(0) => Some("QEMU exited with status 0 (triple fault or shutdown)".to_string()),
        Some(c) => Some(format!("QEMU exited with status {c}")),
        None => Some("QEMU killed by a signal".to_string()),
    }
}

fn failed_to_start(scenario: &Scenario, error: String) -> Report {
    Report {
        name: scenario.name.clone(),
        failure: Some(error),
        qemu_fault: None,
        notes: Vec::new(),
        wall: Duration::ZERO,
        first_line: None,
        kmain: None,
        results: BTreeMap::new(),
        log: Vec::new(),
        stderr: String::new(),
    }
}
