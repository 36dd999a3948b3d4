//! A running QEMU: the process, its serial output, its QMP socket.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::machine::Machine;
use crate::qmp::Qmp;
use crate::serial::Serial;

/// The status QEMU exits with when the kernel writes 0x10 to isa-debug-exit
/// (`(0x10 << 1) | 1`): the kernel's success code.
pub const EXIT_SUCCESS: i32 = 33;

/// A QEMU process that is killed when this value is dropped.
pub struct Qemu {
    child: Child,
    /// The kernel's serial input.
    stdin: Option<ChildStdin>,
    /// Serial output.
    pub serial: Serial,
    stderr: Arc<Mutex<String>>,
    qmp_path: PathBuf,
    qmp: Option<Qmp>,
    /// When the process was started.
    pub started: Instant,
}

/// How to start the process.
#[derive(Clone, Copy, Debug, Default)]
pub struct Launch {
    /// Echo serial lines to the terminal as they arrive.
    pub echo: bool,
    /// Start with the CPU stopped; `connect_qmp` resumes it once QMP is
    /// connected, so that no event can be missed.
    pub paused: bool,
}

impl Qemu {
    /// Starts `machine` with `kernel` and the kernel command line `append`.
    pub fn start(
        machine: &Machine,
        kernel: &Path,
        append: &str,
        name: &str,
        launch: Launch,
    ) -> Result<Self, String> {
        for disk in machine.disks() {
            disk.prepare()
                .map_err(|e| format!("disk image {}: {e}", disk.path.display()))?;
        }
        let qmp_path = std::env::temp_dir().join(format!(
            "bare-nvme-{}-{}.qmp",
            std::process::id(),
            name.replace('/', "-")
        ));
        let _ = std::fs::remove_file(&qmp_path);
        let cmd = machine.command(kernel, append, &qmp_path, launch.paused);
        let started = Instant::now();
        let mut child = Command::new(&cmd[0])
            .args(&cmd[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", cmd[0]))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().ok_or("no QEMU stdout")?;
        let mut stderr_pipe = child.stderr.take().ok_or("no QEMU stderr")?;
        let serial = Serial::spawn(stdout, started, launch.echo);
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr_pipe.read_to_string(&mut text);
            if let Ok(mut s) = sink.lock() {
                *s = text;
            }
        });
        Ok(Self {
            child,
            stdin,
            serial,
            stderr,
            qmp_path,
            qmp: None,
            started,
        })
    }

    /// The QMP connection, made on first use (and resuming a paused machine).
    pub fn qmp(&mut self) -> Result<&mut Qmp, String> {
        if self.qmp.is_none() {
            let mut qmp = Qmp::connect(&self.qmp_path, Instant::now() + Duration::from_secs(10))?;
            let status = qmp.execute("query-status", serde_json::Value::Null)?;
            if status["running"] == false {
                qmp.execute("cont", serde_json::Value::Null)?;
            }
            self.qmp = Some(qmp);
        }
        self.qmp.as_mut().ok_or_else(|| "no QMP".to_string())
    }

    /// Sends `line` to the kernel's serial input.
    pub fn tell(&mut self, line: &str) -> Result<(), String> {
        let stdin = self.stdin.as_mut().ok_or("no serial input")?;
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("serial input: {e}"))
    }

    /// Kills QEMU at once (SIGKILL) and reaps it.
    pub fn kill(&mut self) -> Result<(), String> {
        self.child
            .kill()
            .map_err(|e| format!("cannot kill QEMU: {e}"))?;
        self.child
            .wait()
            .map(|_| ())
            .map_err(|e| format!("cannot reap QEMU: {e}"))
    }

    /// Waits for QEMU to exit until `deadline`; `None` on timeout.
    pub fn wait_exit(&mut self, deadline: Instant) -> Option<ExitStatus> {
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// What QEMU printed on stderr (complete once it has exited).
    pub fn stderr(&self) -> String {
        // Give the reader thread a moment to collect the last bytes.
        thread::sleep(Duration::from_millis(20));
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.qmp_path);
    }
}
