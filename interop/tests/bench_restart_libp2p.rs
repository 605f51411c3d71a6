//! `quicpeer bench restart` pointed at a rust-libp2p 0.57 node (`libp2p-peer listen`) that a
//! shell script restarts, as a user points it at their own node. Counts and the way the restart
//! was found are checked, never times.
//!
//! The `quicpeer` binary is the workspace's (`quicpeer-cli`), which this crate cannot depend
//! on: the test runs the one the workspace's `cargo test` or `cargo build` left in the target
//! directory, and fails with the command to build it when there is none (CI builds it first).
#![cfg(target_os = "linux")]

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

/// The workspace's `quicpeer` binary, debug or release, whichever is newer.
fn quicpeer_binary() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let newest = ["debug", "release"]
        .iter()
        .map(|profile| target.join(profile).join("quicpeer"))
        .filter_map(|path| Some((path.metadata().ok()?.modified().ok()?, path)))
        .max();
    match newest {
        Some((_, path)) => path,
        None => panic!(
            "no quicpeer binary under {}: run `cargo build -p quicpeer-cli` first",
            target.display()
        ),
    }
}

#[test]
fn bench_restart_measures_a_rust_libp2p_node_restarted_by_a_script() {
    let dir = std::env::temp_dir().join(format!("quicpeer-interop-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free port")
        .port();
    let (pid, fifo) = (dir.join("pid"), dir.join("stdin"));
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo")
        .success());
    // libp2p-peer stops when its stdin closes: it reads a FIFO it holds open for writing too.
    let script = dir.join("restart.sh");
    std::fs::write(
        &script,
        format!(
            "if [ -f {pid} ]; then old=$(cat {pid}); kill -9 \"$old\" 2>/dev/null;\n\
             while grep -qs '^State:[[:space:]]*[^Z[:space:]]' /proc/$old/status; do sleep 0.01; done; fi\n\
             while grep -qs \":$(printf %04X {port}) \" /proc/net/udp; do sleep 0.01; done\n\
             {peer} listen --seed 7 --listen /ip4/127.0.0.1/udp/{port}/quic-v1 <>{fifo} >/dev/null 2>>{log} &\n\
             echo $! > {pid}\n",
            pid = pid.display(),
            log = dir.join("listener.log").display(),
            fifo = fifo.display(),
            peer = env!("CARGO_BIN_EXE_libp2p-peer"),
        ),
    )
    .expect("write the script");
    assert!(Command::new("sh")
        .arg(&script)
        .status()
        .expect("sh")
        .success());

    let id = quicpeer::Identity::from_ed25519_seed([7; 32]).peer_id();
    let target = format!("/ip4/127.0.0.1/udp/{port}/quic-v1/p2p/{id}");
    let output = Command::new(quicpeer_binary())
        .args(["bench", "restart", "--json", "--target", &target])
        .args(["--restart-cmd", &format!("sh {}", script.display())])
        .args(["--trials", "2", "--trial-timeout-s", "30"])
        .output()
        .expect("quicpeer bench restart runs");
    let _ = Command::new("sh")
        .args(["-c", &format!("kill -9 \"$(cat {})\"", pid.display())])
        .status();
    let _ = std::fs::remove_dir_all(&dir);

    let report: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "one JSON report ({e}):\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    assert!(output.status.success(), "{report}");
    let trials = |label: &str| {
        (report["rows"].as_array().into_iter().flatten())
            .find(|row| row[0] == label)
            .and_then(|row| row[5].as_f64())
    };
    assert_eq!(
        trials("first ping on a fresh connection"),
        Some(2.0),
        "{report}"
    );
    let notes: Vec<&str> = (report["notes"].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .collect();
    // A rust-libp2p node's reset key is random per process: no valid reset, so quicpeer finds
    // the restart by suspicion, never by rust-libp2p's 10 s idle timeout.
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("detected by unresponsive")),
        "{notes:?}"
    );
    assert!(!notes.iter().any(|n| n.contains("failed")), "{notes:?}");
}
