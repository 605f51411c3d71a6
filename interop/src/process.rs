//! A comparison peer running as a child process that prints [`PeerEvent`]s as JSON lines: the
//! js-libp2p or py-libp2p peer, or the `libp2p-peer` binary when a test needs a real process
//! crash.

use std::io::{self, BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::debug;

use crate::events::{EventLog, PeerEvent, Stamped};

/// A peer in a child process. The child must print one JSON [`PeerEvent`] per line on stdout
/// and exit when its stdin closes. Dropping the handle kills the child.
pub struct ChildPeer {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    started: Instant,
    stderr: Arc<Mutex<Vec<String>>>,
    /// What the child reported, stamped when each line was read.
    pub events: EventLog,
}

impl ChildPeer {
    /// Starts `command` with piped stdio; `name` labels it in diagnostics.
    pub fn spawn(name: &str, mut command: Command) -> io::Result<Self> {
        let started = Instant::now();
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("child has no stdout"))?;
        let stderr_pipe = child
            .stderr
            .take()
            .ok_or_else(|| io::Error::other("child has no stderr"))?;
        let (tx, rx) = mpsc::channel();
        let label = name.to_owned();
        std::thread::Builder::new()
            .name(format!("{name}-stdout"))
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let at = Instant::now();
                    match serde_json::from_str::<PeerEvent>(&line) {
                        Ok(event) => {
                            if tx.send(Stamped { at, event }).is_err() {
                                break;
                            }
                        }
                        Err(_) => debug!(peer = %label, %line, "unrecognised output line"),
                    }
                }
            })?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let lines = stderr.clone();
        std::thread::Builder::new()
            .name(format!("{name}-stderr"))
            .spawn(move || {
                for line in BufReader::new(stderr_pipe).lines() {
                    let Ok(line) = line else { break };
                    if let Ok(mut lines) = lines.lock() {
                        lines.push(line);
                    }
                }
            })?;
        let stdin = child.stdin.take();
        Ok(Self {
            name: name.to_owned(),
            child,
            stdin,
            started,
            stderr,
            events: EventLog::new(rx),
        })
    }

    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Waits (at most `timeout`) for the `Listening` event: the peer's PeerId and addresses.
    pub fn listening(&mut self, timeout: Duration) -> Option<(String, Vec<String>)> {
        self.events.listening(self.started, timeout)
    }

    /// Stops the child as a crash would (SIGKILL): nothing is closed, nobody is told.
    pub fn crash(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Asks the child to stop (closes its stdin) and waits at most `timeout` before killing it.
    pub fn stop(mut self, timeout: Duration) {
        self.stdin.take();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// What the child wrote on stderr so far, for diagnostics.
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .map(|lines| lines.join("\n"))
            .unwrap_or_default()
    }

    /// A report of everything the child said, for a failing assertion.
    pub fn report(&mut self) -> String {
        self.events.drain();
        let t0 = self.started;
        let events: Vec<String> = self
            .events
            .seen()
            .iter()
            .map(|s| {
                format!(
                    "  +{:>9.3} ms {}",
                    s.at.saturating_duration_since(t0).as_secs_f64() * 1e3,
                    s.event.to_json()
                )
            })
            .collect();
        format!(
            "{} events:\n{}\n{} stderr:\n{}",
            self.name,
            events.join("\n"),
            self.name,
            self.stderr()
        )
    }
}

impl Drop for ChildPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
