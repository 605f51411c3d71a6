//! The `quicpeer` binary, run as a user would.

#[path = "../../quicpeer/tests/support/vectors.rs"]
mod vectors;

use std::path::PathBuf;
use std::process::{Command, Output};

fn quicpeer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_quicpeer"))
        .args(args)
        .output()
        .expect("run quicpeer")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A path under the temp directory unique to this test process and `name`.
fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("quicpeer-cli-{}-{name}", std::process::id()))
}

#[test]
fn id_from_seed() {
    let output = quicpeer(&["id", "--seed", "11"]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        stdout(&output),
        "12D3KooWGjSE7eCu5f1Pa8pGxscmoEcdQ5BRMGqbyMvL2dhrPCS5"
    );

    let hex = quicpeer(&["id", "--seed", &"0b".repeat(32)]);
    assert_eq!(stdout(&hex), stdout(&output), "hex seed of the same bytes");
}

#[test]
fn id_rejects_bad_seeds() {
    for bad in ["256", "x", &"g".repeat(64)] {
        assert_eq!(
            quicpeer(&["id", "--seed", bad]).status.code(),
            Some(2),
            "{bad}"
        );
    }
    assert_eq!(quicpeer(&["id"]).status.code(), Some(2));
}

#[test]
fn id_key_file_is_created_once_then_reused() {
    let path = temp_path("key");
    let _ = std::fs::remove_file(&path);
    let path_arg = path.to_str().expect("utf-8 temp path");

    let first = quicpeer(&["id", "--key", path_arg]);
    assert_eq!(first.status.code(), Some(0));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let second = quicpeer(&["id", "--key", path_arg]);
    assert_eq!(stdout(&second), stdout(&first));

    std::fs::write(&path, b"not a key").expect("overwrite");
    assert_eq!(quicpeer(&["id", "--key", path_arg]).status.code(), Some(2));
    std::fs::remove_file(&path).expect("clean up");
}

#[test]
fn cert_inspect_every_spec_vector() {
    for vector in vectors::load() {
        let path = temp_path(&format!("{}.hex", vector.name));
        std::fs::write(&path, hex::encode(&vector.der)).expect("write vector");
        let output = quicpeer(&[
            "cert",
            "inspect",
            path.to_str().expect("utf-8 temp path"),
            "--at",
            "2026-01-01T00:00:00Z",
        ]);
        std::fs::remove_file(&path).expect("clean up");
        match &vector.expect {
            Some(peer_id) => {
                assert_eq!(output.status.code(), Some(0), "{}", vector.name);
                assert_eq!(
                    stdout(&output),
                    format!("peer_id {peer_id}"),
                    "{}",
                    vector.name
                );
            }
            None => {
                assert_eq!(output.status.code(), Some(1), "{}", vector.name);
                assert!(stdout(&output).starts_with("rejected: "), "{}", vector.name);
            }
        }
    }
}

#[test]
fn cert_inspect_reads_der_and_checks_the_time() {
    let vector = &vectors::load()[0];
    let path = temp_path("vector.der");
    std::fs::write(&path, &vector.der).expect("write vector");
    let path_arg = path.to_str().expect("utf-8 temp path");

    let output = quicpeer(&["cert", "inspect", path_arg, "--at", "1974-01-01T00:00:00Z"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(stdout(&output), "rejected: certificate not yet valid");

    // Default time: now, which lies inside the vectors' validity.
    assert_eq!(
        quicpeer(&["cert", "inspect", path_arg]).status.code(),
        Some(0)
    );
    assert_eq!(
        quicpeer(&["cert", "inspect", path_arg, "--at", "soon"])
            .status
            .code(),
        Some(2)
    );
    std::fs::remove_file(&path).expect("clean up");
    assert_eq!(
        quicpeer(&["cert", "inspect", path_arg]).status.code(),
        Some(2),
        "missing file"
    );
}
