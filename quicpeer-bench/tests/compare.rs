#![cfg(feature = "compare")]
//! Smoke tests of the `compare` binary: each benchmark runs for a tiny count and prints a
//! report with a row per stack. No figure is checked: benchmarks never run in `cargo test`.

use std::process::Command;

fn compare(args: &[&str]) -> serde_json::Value {
    let output = Command::new(env!("CARGO_BIN_EXE_compare"))
        .args(args)
        .args(["--json", "--quiet"])
        .output()
        .expect("compare runs");
    assert!(
        output.status.success(),
        "compare {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("one JSON report")
}

fn rows(report: &serde_json::Value) -> Vec<String> {
    report["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|row| row[0].as_str().expect("a label").to_owned())
        .collect()
}

#[test]
fn reconnect_runs() {
    let report = compare(&[
        "reconnect",
        "--restarts",
        "1",
        "--pairs",
        "qq",
        "--spacing-ms",
        "100",
    ]);
    assert_eq!(report["bench"], "reconnect");
    assert_eq!(rows(&report), ["quicpeer → quicpeer"]);
    // The restart was recovered from (a stateless reset, well within the timeout).
    assert_eq!(report["rows"][0][2], 1.0);
}

#[test]
fn reconnect_runs_the_quicpeer_libp2p_pairs() {
    let report = compare(&[
        "reconnect",
        "--restarts",
        "1",
        "--pairs",
        "sl,ls",
        "--spacing-ms",
        "100",
    ]);
    assert_eq!(
        rows(&report),
        [
            "rust-libp2p/quicpeer → rust-libp2p",
            "rust-libp2p → rust-libp2p/quicpeer"
        ]
    );
    // Both recovered well within the timeout: by the reconnect behaviour's make-before-break
    // dial, and by the restarted quicpeer-libp2p listener's stateless reset.
    assert_eq!(report["rows"][0][2], 1.0);
    assert_eq!(report["rows"][1][2], 1.0);
}

#[test]
fn handshake_runs() {
    let report = compare(&["handshake", "--count", "3", "--rounds", "1"]);
    assert_eq!(rows(&report).len(), 6);
}

#[test]
fn throughput_runs() {
    let report = compare(&["throughput", "--bytes", "262144", "--rounds", "1"]);
    assert_eq!(rows(&report).len(), 3);
}

#[test]
fn slots_runs() {
    let report = compare(&[
        "slots",
        "--restarts",
        "2",
        "--spacing-ms",
        "50",
        "--relays",
        "quicpeer",
    ]);
    assert_eq!(rows(&report), ["quicpeer relay"]);
    // Three incarnations, every one accepted, and the dial through the relay pinged.
    assert_eq!(report["rows"][0][1], 3.0);
    assert_eq!(report["rows"][0][8], "yes");
}

#[test]
fn restart_scenarios_run_and_every_one_recovers() {
    let report = compare(&["restart-scenarios", "--trials", "1"]);
    assert_eq!(report["bench"], "restart-scenarios");
    assert_eq!(rows(&report).len(), 6);
    for row in report["rows"].as_array().expect("rows") {
        // One trial, recovered (the idle one at the next keep-alive, within the trial bound).
        assert_eq!(row[2], 1.0, "{row}");
    }
}

#[test]
fn relay_throughput_runs() {
    let report = compare(&["relay-throughput", "--bytes", "262144", "--rounds", "1"]);
    assert_eq!(report["bench"], "relay-throughput");
    assert_eq!(rows(&report), ["quicpeer relay", "rust-libp2p relay"]);
}

#[test]
fn relay_memory_runs() {
    let report = compare(&[
        "relay-memory",
        "--clients",
        "4",
        "--circuits",
        "2",
        "--settle-ms",
        "50",
    ]);
    assert_eq!(report["bench"], "relay-memory");
    assert_eq!(rows(&report), ["quicpeer relay", "rust-libp2p relay"]);
    // Both relays counted the clients and circuits asked for.
    for row in report["rows"].as_array().expect("rows") {
        assert_eq!(row[1], 4.0);
        assert_eq!(row[2], 2.0);
    }
}
