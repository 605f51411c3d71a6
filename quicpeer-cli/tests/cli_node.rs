//! `quicpeer demo`, `listen` and `ping` run as a user would: separate processes, real UDP on
//! loopback, JSON lines read from their stdout. Every wait has a deadline.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use serde_json::Value;

fn quicpeer(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_quicpeer"));
    command
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit());
    command
}

/// The value of `key` in a JSON line (`null` if it has none); panics on a line that is not a
/// JSON object, since with `--json` every line must be one.
fn field(line: &str, key: &str) -> Value {
    let object: serde_json::Map<String, Value> =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON object ({e}): {line}"));
    object.get(key).cloned().unwrap_or(Value::Null)
}

fn number(line: &str, key: &str) -> Option<f64> {
    field(line, key).as_f64()
}

/// The stdout lines of a child, read on a thread so that waits can have deadlines.
struct Lines {
    rx: Receiver<String>,
    seen: Vec<String>,
}

impl Lines {
    fn new(stdout: ChildStdout) -> Self {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self {
            rx,
            seen: Vec::new(),
        }
    }

    /// The first line after index `from` for which `pick` holds, within `timeout`.
    fn wait(
        &mut self,
        from: usize,
        timeout: Duration,
        pick: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut index = from;
        loop {
            while index < self.seen.len() {
                if pick(&self.seen[index]) {
                    return Some(self.seen[index].clone());
                }
                index += 1;
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.rx.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => return None,
            }
        }
    }
}

/// A child process that is killed if the test ends early.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(args: &[&str]) -> (Proc, Lines) {
    let mut child = quicpeer(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start quicpeer");
    let stdout = child.stdout.take().expect("piped stdout");
    (Proc(child), Lines::new(stdout))
}

fn listen(seed: &str, at: &str) -> (Proc, Lines, String) {
    let (proc, mut lines) = spawn(&["listen", "--json", "--seed", seed, "--listen", at]);
    let line = lines
        .wait(0, Duration::from_secs(10), |l| {
            field(l, "event") == "listen"
        })
        .expect("the listener prints its address");
    let addr = field(&line, "addr").as_str().expect("addr").to_owned();
    (proc, lines, addr)
}

/// The main job: both runs recover, and the derived-key one notices the restart by a stateless
/// reset far sooner than the default-key one does by its idle timeout. Takes about 5 s.
#[test]
fn demo_shows_derived_keys_detect_a_restart_far_sooner() {
    let output = quicpeer(&["demo", "--json"])
        .output()
        .expect("run quicpeer demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "demo failed:\n{stdout}");
    let result = |run: &str| {
        stdout
            .lines()
            .find(|l| field(l, "event") == "result" && field(l, "run") == run)
            .unwrap_or_else(|| panic!("no result for {run}:\n{stdout}"))
            .to_owned()
    };
    let (derived, default) = (result("derived_keys"), result("default_keys"));
    assert_eq!(field(&derived, "cause"), "peer_restarted", "{derived}");
    assert_eq!(field(&default, "cause"), "idle_timeout", "{default}");
    let fast = number(&derived, "detection_ms").expect("derived detection");
    let slow = number(&default, "detection_ms").expect("default detection");
    assert!(fast * 10.0 < slow, "derived {fast} ms, default {slow} ms");
    // The default-key run waits out the demo's 3 s idle timeout.
    assert!(slow >= 2_500.0, "default {slow} ms");
    for line in [&derived, &default] {
        let first_ping = number(line, "first_ping_ms").expect("first ping");
        assert!(first_ping >= number(line, "detection_ms").unwrap_or(f64::MAX));
    }
    println!("derived keys: detected after {fast} ms; default keys: after {slow} ms");
}

#[test]
fn ping_a_listener_then_it_restarts_and_ping_carries_on() {
    let (listener, _, addr) = listen("21", "/ip4/127.0.0.1/udp/0/quic-v1");
    assert!(addr.starts_with("/ip4/127.0.0.1/udp/") && addr.contains("/quic-v1/p2p/12D3KooW"));

    // A bounded ping first.
    let output = quicpeer(&[
        "ping",
        &addr,
        "--json",
        "--count",
        "3",
        "--interval-ms",
        "20",
    ])
    .output()
    .expect("run ping");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    let pings = stdout
        .lines()
        .filter(|l| field(l, "event") == "ping")
        .count();
    assert_eq!(pings, 3, "{stdout}");
    assert!(stdout.lines().any(|l| field(l, "event") == "connected"));

    // Then a ping that runs on while the listener is killed and started again.
    let (_pinger, mut lines) = spawn(&["ping", &addr, "--json", "--interval-ms", "50"]);
    assert!(lines
        .wait(0, Duration::from_secs(10), |l| field(l, "event") == "ping")
        .is_some());
    drop(listener); // SIGKILL: nothing is sent to the pinger
    let port = addr
        .split('/')
        .nth(4)
        .expect("port in the address")
        .to_owned();
    let (_listener, _, again) = listen("21", &format!("/ip4/127.0.0.1/udp/{port}/quic-v1"));
    assert_eq!(again, addr, "same identity, same port");

    let from = lines.seen.len();
    let lost = lines
        .wait(from, Duration::from_secs(10), |l| {
            field(l, "event") == "connection_lost"
        })
        .expect("the pinger saw the connection die");
    assert_eq!(field(&lost, "cause"), "peer_restarted", "{lost}");
    let reconnected = lines
        .wait(from, Duration::from_secs(10), |l| {
            field(l, "event") == "reconnected"
        })
        .expect("the pinger reconnected");
    assert!(number(&reconnected, "reconnect_ms").is_some_and(|ms| ms < 1_000.0));
    let index = lines
        .seen
        .iter()
        .position(|l| l == &reconnected)
        .unwrap_or(from);
    assert!(lines
        .wait(index, Duration::from_secs(10), |l| field(l, "event")
            == "ping")
        .is_some());
}

#[cfg(unix)]
#[test]
fn sigterm_closes_the_listeners_connections_gracefully() {
    let (listener, mut listener_lines, addr) = listen("22", "/ip4/127.0.0.1/udp/0/quic-v1");
    let (_pinger, mut lines) = spawn(&["ping", &addr, "--json", "--interval-ms", "50"]);
    assert!(lines
        .wait(0, Duration::from_secs(10), |l| field(l, "event") == "ping")
        .is_some());
    let status = Command::new("kill")
        .args(["-TERM", &listener.0.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let stopped = listener_lines
        .wait(0, Duration::from_secs(10), |l| {
            field(l, "event") == "stopped"
        })
        .expect("the listener stopped");
    assert_eq!(field(&stopped, "closed_cleanly"), true, "{stopped}");
    let lost = lines
        .wait(0, Duration::from_secs(10), |l| {
            field(l, "event") == "connection_lost"
        })
        .expect("the pinger saw the close");
    assert_eq!(field(&lost, "cause"), "closed_by_peer", "{lost}");
}
