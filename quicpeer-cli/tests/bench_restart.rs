//! `quicpeer bench restart` against a real `quicpeer listen` process, restarted by a shell
//! script (`kill -9`, wait until the process is dead, a zombie at most, and until its port is
//! free, then the same command line again), as a user points it at their own node. Both waits
//! are needed: a killed process's leader can be a zombie while its other threads still hold
//! the socket, and a listener started then fails to bind (seen under CPU load).
//! Counts and causes are checked, never times; every wait is bounded by the command's own
//! trial timeout.
#![cfg(unix)]

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

const QUICPEER: &str = env!("CARGO_BIN_EXE_quicpeer");

/// A scratch directory for this test process and `name`.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "quicpeer-bench-restart-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// A UDP port on loopback free a moment ago.
fn free_udp_port() -> u16 {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket");
    socket.local_addr().expect("local address").port()
}

/// The target multiaddr of `quicpeer listen --seed <seed>` on `port`.
fn target(seed: &str, port: u16) -> String {
    let out = Command::new(QUICPEER)
        .args(["id", "--seed", seed])
        .output()
        .expect("quicpeer id");
    let text = String::from_utf8_lossy(&out.stdout);
    let id = text.split_whitespace().last().expect("a PeerId").to_owned();
    format!("/ip4/127.0.0.1/udp/{port}/quic-v1/p2p/{id}")
}

/// Runs `bench restart --json` and returns its report.
fn bench_restart(args: &[&str]) -> (bool, Value) {
    let output = Command::new(QUICPEER)
        .args(["bench", "restart", "--json"])
        .args(args)
        .output()
        .expect("quicpeer bench restart runs");
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "one JSON report ({e}):\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.success(), report)
}

fn notes(report: &Value) -> Vec<String> {
    (report["notes"].as_array().expect("notes").iter())
        .map(|n| n.as_str().expect("a note").to_owned())
        .collect()
}

/// The `trials` cell of the row labelled `label`.
fn trials(report: &Value, label: &str) -> f64 {
    let row = (report["rows"].as_array().expect("rows").iter())
        .find(|row| row[0] == label)
        .unwrap_or_else(|| panic!("a row {label}: {report}"));
    row[5].as_f64().expect("a count")
}

#[test]
fn a_listener_restarted_by_a_script_is_measured_trial_by_trial() {
    let dir = scratch("listener");
    let port = free_udp_port();
    let pid = dir.join("pid");
    let script = dir.join("restart.sh");
    std::fs::write(
        &script,
        format!(
            "if [ -f {pid} ]; then old=$(cat {pid}); kill -9 \"$old\" 2>/dev/null;\n\
             while grep -qs '^State:[[:space:]]*[^Z[:space:]]' /proc/$old/status; do sleep 0.01; done; fi\n\
             while grep -qs \":$(printf %04X {port}) \" /proc/net/udp; do sleep 0.01; done\n\
             {QUICPEER} listen --seed 31 --listen /ip4/127.0.0.1/udp/{port}/quic-v1 >/dev/null 2>>{log} &\n\
             echo $! > {pid}\n",
            pid = pid.display(),
            log = dir.join("listener.log").display(),
        ),
    )
    .expect("write the script");
    let restart = format!("sh {}", script.display());
    // The script starts the first listener too.
    assert!(Command::new("sh")
        .arg(&script)
        .status()
        .expect("sh")
        .success());

    let target = target("31", port);
    let (ok, report) = bench_restart(&[
        "--target",
        &target,
        "--restart-cmd",
        &restart,
        "--trials",
        "2",
        "--trial-timeout-s",
        "20",
    ]);
    let _ = Command::new("sh")
        .args(["-c", &format!("kill -9 \"$(cat {})\"", pid.display())])
        .status();
    let log = std::fs::read_to_string(dir.join("listener.log")).unwrap_or_default();
    assert!(ok, "{report}\nthe listeners' stderr:\n{log}");
    assert_eq!(
        trials(&report, "first ping on a fresh connection"),
        2.0,
        "{report}\nthe listeners' stderr:\n{log}"
    );
    assert_eq!(
        trials(&report, "first sign of the restart"),
        2.0,
        "{report}\nthe listeners' stderr:\n{log}"
    );
    let notes = notes(&report);
    // quicpeer's derived keys: the restarted listener resets the old connection.
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("detected by peer restarted")),
        "{notes:?}"
    );
    assert!(!notes.iter().any(|n| n.contains("failed")), "{notes:?}");
}

#[test]
fn a_failing_restart_command_and_an_absent_node_end_their_trials_with_a_reason() {
    let port = free_udp_port();
    let target = target("32", port);
    // Nothing listens there: the node never answers.
    let (ok, report) = bench_restart(&[
        "--target",
        &target,
        "--restart-cmd",
        "true",
        "--trials",
        "1",
        "--trial-timeout-s",
        "2",
    ]);
    assert!(!ok, "no trial recovered: a failure exit");
    let absent = notes(&report);
    assert!(
        absent
            .iter()
            .any(|n| n.contains("did not answer 5 pings in a row")),
        "{absent:?}"
    );

    let mut listener = Command::new(QUICPEER)
        .args(["listen", "--seed", "32", "--listen"])
        .arg(format!("/ip4/127.0.0.1/udp/{port}/quic-v1"))
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start a listener");
    let (ok, report) = bench_restart(&[
        "--target",
        &target,
        "--restart-cmd",
        "exit 3",
        "--trials",
        "1",
        "--trial-timeout-s",
        "20",
    ]);
    let _ = listener.kill();
    let _ = listener.wait();
    assert!(!ok);
    let notes = notes(&report);
    assert!(
        notes
            .iter()
            .any(|n| n.contains("the restart command failed (exit status: 3)")),
        "{notes:?}"
    );
}
