//! Scenarios: a machine, a kernel command line, and a script of steps the
//! host performs while the kernel runs.
//!
//! A scenario passes when every step succeeds, the kernel prints `@@PASS` and
//! exits through isa-debug-exit with the success code, within the time limit,
//! and every expected `@@RESULT` value matches.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::machine::Machine;
use crate::qemu::{Launch, Qemu, EXIT_SUCCESS};
use crate::serial::Line;

/// One thing the host does during a run.
#[derive(Clone, Debug)]
pub enum Step {
    /// Wait for the serial marker `@@{text}` (a prefix: `READY`,
    /// `PHASE attached`).
    Marker(String),
    /// Run a QMP command with arguments; it must succeed.
    Qmp(String, Value),
    /// Wait for a QMP event (`DEVICE_DELETED`).
    Event(String),
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
        Step::Qmp(
            "device_add".to_string(),
            json!({ "driver": "nvme", "id": id, "serial": serial, "drive": drive, "bus": bus }),
        )
    }

    /// Press the attention button of the slot holding device `id` (QMP
    /// `device_del` on a native PCIe slot; the kernel's hand does the rest).
    pub fn press_button(id: &str) -> Self {
        Step::Qmp("device_del".to_string(), json!({ "id": id }))
    }

    /// Wait for QEMU to report device `id` gone.
    pub fn device_deleted() -> Self {
        Step::Event("DEVICE_DELETED".to_string())
    }

    /// Send `word` to the kernel.
    pub fn tell(word: &str) -> Self {
        Step::Tell(word.to_string())
    }

    fn uses_qmp(&self) -> bool {
        matches!(self, Step::Qmp(..) | Step::Event(..))
    }

    fn describe(&self) -> String {
        match self {
            Step::Marker(m) => format!("wait for @@{m}"),
            Step::Qmp(cmd, args) => format!("QMP {cmd} {args}"),
            Step::Event(e) => format!("wait for QMP event {e}"),
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
    /// Whether QEMU died from a signal (an emulator crash, not a verdict on
    /// the kernel).
    pub qemu_crashed: bool,
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
    let failure = play(&mut qemu, scenario, uses_qmp, echo, deadline);
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
    let mut failure = judge(scenario, failure, killed, crash, status, &log);
    let (results, kmain) = markers(&log);
    if failure.is_none() {
        failure = unmet_expectation(scenario, &results);
    }
    if let (None, Some(check)) = (&failure, scenario.after) {
        failure = check().err().map(|e| format!("after the run: {e}"));
    }
    Report {
        name: scenario.name.clone(),
        failure,
        qemu_crashed: crash.is_some() && !killed,
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
        if let Err(e) = perform(qemu, step, deadline) {
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

fn perform(qemu: &mut Qemu, step: &Step, deadline: Instant) -> Result<(), String> {
    match step {
        Step::Marker(marker) => qemu
            .serial
            .wait_marker(marker, deadline)
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Step::Qmp(command, args) => qemu.qmp()?.execute(command, args.clone()).map(|_| ()),
        Step::Event(name) => qemu.qmp()?.wait_event(name, deadline).map(|_| ()),
        Step::Tell(word) => qemu.tell(word),
        Step::Kill => qemu.kill(),
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
        qemu_crashed: false,
        wall: Duration::ZERO,
        first_line: None,
        kmain: None,
        results: BTreeMap::new(),
        log: Vec::new(),
        stderr: String::new(),
    }
}
