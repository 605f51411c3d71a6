//! The js-libp2p peer (`interop/js/peer.mjs`, `@chainsafe/libp2p-quic`): installing its pinned
//! dependencies and starting it.
//!
//! The dependencies are pinned in `interop/js/package-lock.json`; the first test that needs
//! them runs `npm ci` there when `node_modules` is missing, so a fresh clone needs nothing but
//! Node.js, npm and the npm registry.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::process::ChildPeer;

/// The directory of the js peer.
pub fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("js")
}

/// Installs the js peer's dependencies if they are missing (`npm ci`, from the lockfile).
/// Runs once per process; the error carries npm's own output.
pub fn ensure_installed() -> Result<(), String> {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    INSTALLED.get_or_init(install).clone()
}

fn install() -> Result<(), String> {
    let dir = js_dir();
    let node = Command::new("node")
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run node: {e} (the js interop tests need Node.js >= 20)"))?;
    let version = String::from_utf8_lossy(&node.stdout).trim().to_owned();
    // The relay client's packages came later: a tree without them is installed again.
    let installed = ["@chainsafe/libp2p-quic", "@libp2p/circuit-relay-v2"]
        .iter()
        .all(|p| {
            dir.join("node_modules")
                .join(p)
                .join("package.json")
                .exists()
        });
    if installed {
        return Ok(());
    }
    let output = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&dir)
        .output()
        .map_err(|e| format!("cannot run npm: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "`npm ci` in {} failed (node {version}, {}):\n{}\n{}",
            dir.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(())
}

/// Starts the js peer with `args` (`listen --seed N ...` or `dial --seed N --addr ...`).
pub fn spawn(name: &str, args: &[&str]) -> Result<ChildPeer, String> {
    ensure_installed()?;
    let mut command = Command::new("node");
    command.arg("peer.mjs").args(args).current_dir(js_dir());
    ChildPeer::spawn(name, command).map_err(|e| format!("cannot start node: {e}"))
}
