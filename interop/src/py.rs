//! The py-libp2p peer (`interop/py/peer.py`, py-libp2p's QUIC transport on aioquic):
//! installing its pinned environment and starting it.
//!
//! The environment is pinned, with hashes, in `interop/py/requirements.txt`. The first test
//! that needs it creates a virtual environment in `interop/py/.venv` (not committed) and
//! installs the file there when it is missing or differs from what was installed, so a fresh
//! clone needs nothing but Python >= 3.10 (with `venv` and `pip`) and the package index.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use crate::process::ChildPeer;

/// The interpreter that creates the environment; `QUICPEER_INTEROP_PYTHON` overrides it.
const PYTHON: &str = "python3";

/// Where `install` records the requirements it installed, inside the environment.
const INSTALLED: &str = "requirements.installed";

/// The directory of the py peer.
pub fn py_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("py")
}

fn venv_dir() -> PathBuf {
    py_dir().join(".venv")
}

/// The environment's interpreter.
pub fn venv_python() -> PathBuf {
    let venv = venv_dir();
    if cfg!(windows) {
        venv.join("Scripts").join("python.exe")
    } else {
        venv.join("bin").join("python")
    }
}

/// Creates the py peer's environment and installs its pinned requirements if they are not
/// installed yet. Runs once per process; the error carries pip's (or venv's) own output.
pub fn ensure_installed() -> Result<(), String> {
    static INSTALLED_ONCE: OnceLock<Result<(), String>> = OnceLock::new();
    INSTALLED_ONCE.get_or_init(install).clone()
}

fn install() -> Result<(), String> {
    let dir = py_dir();
    let requirements = fs::read_to_string(dir.join("requirements.txt")).map_err(|e| {
        format!(
            "cannot read {}: {e}",
            dir.join("requirements.txt").display()
        )
    })?;
    let marker = venv_dir().join(INSTALLED);
    if venv_python().exists() && fs::read_to_string(&marker).ok().as_ref() == Some(&requirements) {
        return Ok(());
    }
    let python = std::env::var("QUICPEER_INTEROP_PYTHON").unwrap_or_else(|_| PYTHON.to_owned());
    let version = Command::new(&python)
        .arg("--version")
        .output()
        .map_err(|e| {
            format!("cannot run {python}: {e} (the py interop tests need Python >= 3.10 with venv and pip)")
        })?;
    let version = String::from_utf8_lossy(&version.stdout).trim().to_owned();
    if !venv_python().exists() {
        let output = Command::new(&python)
            .args(["-m", "venv", ".venv"])
            .current_dir(&dir)
            .output()
            .map_err(|e| format!("cannot run {python} -m venv: {e}"))?;
        check(
            &output,
            &format!("`{python} -m venv .venv` in {} ({version})", dir.display()),
        )?;
    }
    let output = Command::new(venv_python())
        .args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
            "--require-hashes",
            "-r",
            "requirements.txt",
        ])
        .current_dir(&dir)
        .output()
        .map_err(|e| format!("cannot run pip in {}: {e}", venv_dir().display()))?;
    check(
        &output,
        &format!(
            "`pip install -r requirements.txt` in {} ({version})",
            dir.display()
        ),
    )?;
    fs::write(&marker, &requirements).map_err(|e| format!("cannot write {}: {e}", marker.display()))
}

fn check(output: &Output, what: &str) -> Result<(), String> {
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "{what} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ))
}

/// Starts the py peer with `args` (`listen --seed N ...` or `dial --seed N --addr ...`).
pub fn spawn(name: &str, args: &[&str]) -> Result<ChildPeer, String> {
    ensure_installed()?;
    let mut command = Command::new(venv_python());
    command
        .arg("-u")
        .arg("peer.py")
        .args(args)
        .current_dir(py_dir());
    ChildPeer::spawn(name, command).map_err(|e| format!("cannot start the py peer: {e}"))
}
