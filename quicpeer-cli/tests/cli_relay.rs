//! `quicpeer relay` run as a user would: a separate process on loopback, its JSON lines read
//! from stdout, pinged by `quicpeer ping`. Every wait has a deadline. (Reservations and
//! circuits through it are tested with rust-libp2p clients in the interop crate.)

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

fn quicpeer(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_quicpeer"));
    command
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit());
    command
}

fn field(line: &str, key: &str) -> Value {
    let object: serde_json::Map<String, Value> =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON object ({e}): {line}"));
    object.get(key).cloned().unwrap_or(Value::Null)
}

/// A child process that is killed if the test ends early.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_relay_prints_its_address_and_answers_pings() {
    let mut child = quicpeer(&["relay", "--json", "--seed", "41", "--max-reservations", "0"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start quicpeer relay");
    let stdout = child.stdout.take().expect("piped stdout");
    let _relay = Proc(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the relay prints a line");
    assert_eq!(field(&line, "event"), "listen", "{line}");
    let addr = field(&line, "addr").as_str().expect("addr").to_owned();
    assert!(addr.starts_with("/ip4/127.0.0.1/udp/") && addr.contains("/quic-v1/p2p/12D3KooW"));
    let output = quicpeer(&[
        "ping",
        &addr,
        "--json",
        "--count",
        "2",
        "--interval-ms",
        "20",
    ])
    .output()
    .expect("run quicpeer ping");
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "ping failed:\n{out}");
    let pings = out.lines().filter(|l| field(l, "event") == "ping").count();
    assert_eq!(pings, 2, "{out}");
    // The relay reported the pinger's connection.
    let connected = (0..20)
        .filter_map(|_| rx.recv_timeout(Duration::from_millis(500)).ok())
        .any(|l| field(&l, "event") == "connected");
    assert!(connected);
}
