//! The kernel's serial output: lines, markers, waiting for them.
//!
//! The kernel prints log lines and marker lines. A marker is `@@KIND rest`:
//! `@@BOOT`, `@@READY`, `@@PHASE name`, `@@RESULT key=value ...`, `@@PASS`,
//! `@@FAIL reason`.

use std::io::{BufRead, BufReader, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// One line of serial output.
#[derive(Clone, Debug)]
pub struct Line {
    /// When it arrived, from the start of the run.
    pub at: Duration,
    /// The text, without the line end.
    pub text: String,
}

impl Line {
    /// The marker kind and the rest (`("PHASE", "attached")`), if this line is
    /// a marker.
    pub fn marker(&self) -> Option<(&str, &str)> {
        let body = self.text.strip_prefix("@@")?;
        Some(body.split_once(' ').unwrap_or((body, "")))
    }
}

/// Why a wait ended without the marker.
#[derive(Debug)]
pub enum WaitError {
    /// The deadline passed.
    Timeout,
    /// The kernel reported failure (the `@@FAIL` line).
    Failed(String),
    /// The serial stream ended (QEMU exited).
    Ended,
}

impl std::fmt::Display for WaitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WaitError::Timeout => write!(f, "timed out"),
            WaitError::Failed(line) => write!(f, "kernel failed: {line}"),
            WaitError::Ended => write!(f, "QEMU exited"),
        }
    }
}

/// Serial output of a running machine, read on a thread.
pub struct Serial {
    lines: Receiver<Line>,
    history: Arc<Mutex<Vec<Line>>>,
    /// Set when the stream ended (QEMU closed its end).
    ended: Arc<AtomicBool>,
}

impl Serial {
    /// Reads `source` line by line from `start` on, echoing each line to the
    /// terminal when `echo` is set.
    pub fn spawn<R: Read + Send + 'static>(source: R, start: Instant, echo: bool) -> Self {
        let (tx, rx) = mpsc::channel();
        let history = Arc::new(Mutex::new(Vec::new()));
        let keep = Arc::clone(&history);
        let ended = Arc::new(AtomicBool::new(false));
        let end = Arc::clone(&ended);
        thread::spawn(move || {
            let mut reader = BufReader::new(source);
            let mut raw = Vec::new();
            loop {
                raw.clear();
                match reader.read_until(b'\n', &mut raw) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let text = String::from_utf8_lossy(&raw)
                    .trim_end_matches(['\r', '\n'])
                    .to_string();
                if echo {
                    println!("{text}");
                }
                let line = Line {
                    at: start.elapsed(),
                    text,
                };
                if let Ok(mut h) = keep.lock() {
                    h.push(line.clone());
                }
                if tx.send(line).is_err() {
                    // Nobody waits any more; keep draining into the history.
                }
            }
            end.store(true, Ordering::Release);
        });
        Self {
            lines: rx,
            history,
            ended,
        }
    }

    /// Waits for the marker line `@@{marker}` (a prefix, so `PHASE attached`
    /// or `RESULT` match) until `deadline`. An `@@FAIL` line ends the wait.
    pub fn wait_marker(&self, marker: &str, deadline: Instant) -> Result<Line, WaitError> {
        let wanted = format!("@@{marker}");
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if line.text.starts_with(&wanted) {
                        return Ok(line);
                    }
                    if line.text.starts_with("@@FAIL") {
                        return Err(WaitError::Failed(line.text));
                    }
                }
                Err(RecvTimeoutError::Timeout) => return Err(WaitError::Timeout),
                Err(RecvTimeoutError::Disconnected) => return Err(WaitError::Ended),
            }
        }
    }

    /// Waits until the stream has ended (all output read) or `deadline`.
    pub fn wait_end(&self, deadline: Instant) {
        while !self.ended.load(Ordering::Acquire) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(1));
        }
    }

    /// Every line so far.
    pub fn history(&self) -> Vec<Line> {
        self.history.lock().map(|h| h.clone()).unwrap_or_default()
    }
}
