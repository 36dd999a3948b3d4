//! A QMP client: the QEMU Machine Protocol over a unix socket.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A negotiated QMP connection.
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    /// Part of a message read before a timeout.
    pending: String,
    /// Events read while waiting for something else.
    events: VecDeque<Value>,
}

/// How long one command may take to answer.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

impl Qmp {
    /// Connects to `socket` (retrying until `deadline`, while QEMU starts) and
    /// negotiates capabilities.
    pub fn connect(socket: &Path, deadline: Instant) -> Result<Self, String> {
        let stream = loop {
            match UnixStream::connect(socket) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => {
                    return Err(format!("QMP connect to {}: {e}", socket.display()))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        };
        let writer = stream.try_clone().map_err(|e| format!("QMP socket: {e}"))?;
        let mut qmp = Self {
            reader: BufReader::new(stream),
            writer,
            pending: String::new(),
            events: VecDeque::new(),
        };
        let greeting = qmp.read_message(Instant::now() + REPLY_TIMEOUT)?;
        if greeting.get("QMP").is_none() {
            return Err(format!("unexpected QMP greeting: {greeting}"));
        }
        qmp.execute("qmp_capabilities", Value::Null)?;
        Ok(qmp)
    }

    fn read_message(&mut self, deadline: Instant) -> Result<Value, String> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("QMP timed out".to_string());
            }
            self.reader
                .get_ref()
                .set_read_timeout(Some(left))
                .map_err(|e| format!("QMP socket: {e}"))?;
            match self.reader.read_line(&mut self.pending) {
                Ok(0) => return Err("QMP connection closed".to_string()),
                Ok(_) => {
                    let text = std::mem::take(&mut self.pending);
                    if text.trim().is_empty() {
                        continue;
                    }
                    return serde_json::from_str(&text)
                        .map_err(|e| format!("bad QMP message {text:?}: {e}"));
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    continue
                }
                Err(e) => return Err(format!("QMP read: {e}")),
            }
        }
    }

    /// Runs `command` with `arguments` (`Value::Null` for none) and returns
    /// its `return` value; a QMP `error` becomes `Err` with its description.
    pub fn execute(&mut self, command: &str, arguments: Value) -> Result<Value, String> {
        let request = if arguments.is_null() {
            json!({ "execute": command })
        } else {
            json!({ "execute": command, "arguments": arguments })
        };
        let mut text = request.to_string();
        text.push('\n');
        self.writer
            .write_all(text.as_bytes())
            .map_err(|e| format!("QMP write: {e}"))?;
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            let message = self.read_message(deadline)?;
            if let Some(ret) = message.get("return") {
                return Ok(ret.clone());
            }
            if let Some(err) = message.get("error") {
                let desc = err
                    .get("desc")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown error");
                return Err(format!("QMP {command}: {desc}"));
            }
            if message.get("event").is_some() {
                self.events.push_back(message);
            }
        }
    }

    /// Waits for the event `name` (e.g. `DEVICE_DELETED`) whose `data`
    /// satisfies `wanted`, until `deadline`, and returns it; events seen
    /// earlier count. A timeout is an error for which [`timed_out`] holds.
    pub fn wait_event_where(
        &mut self,
        name: &str,
        wanted: impl Fn(&Value) -> bool,
        deadline: Instant,
    ) -> Result<Value, String> {
        let matches = |e: &Value| e["event"] == name && wanted(&e["data"]);
        if let Some(pos) = self.events.iter().position(matches) {
            return Ok(self.events.remove(pos).unwrap_or(Value::Null));
        }
        loop {
            let message = self
                .read_message(deadline)
                .map_err(|e| format!("waiting for {name}: {e}"))?;
            if matches(&message) {
                return Ok(message);
            }
            if message.get("event").is_some() {
                self.events.push_back(message);
            }
        }
    }

    /// Whether a device with id `id` is still part of the machine (QEMU
    /// takes it out of `/machine/peripheral` when it unplugs it, before it
    /// frees it and sends `DEVICE_DELETED`).
    pub fn device_present(&mut self, id: &str) -> Result<bool, String> {
        let children = self.execute("qom-list", json!({ "path": "/machine/peripheral" }))?;
        Ok(children
            .as_array()
            .is_some_and(|c| c.iter().any(|p| p["name"] == id)))
    }
}

/// Whether a QMP error is a timeout (the connection is still there).
pub fn timed_out(error: &str) -> bool {
    error.ends_with("QMP timed out")
}
