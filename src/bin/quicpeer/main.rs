//! The `quicpeer` command-line tool.
//!
//! One module per command, each with its clap `Args` (or subcommand enum) and a `run` function
//! returning the exit status. Commands that run a node share the `--seed`/`--key` arguments of
//! [`identity_args`]. Exit status: 0 success, 1 a negative answer (e.g. a rejected certificate),
//! 2 bad arguments or unusable input.

mod bench;
mod cert;
mod id;
mod identity_args;

use std::fmt;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// A sans-IO QUIC connection manager speaking libp2p's QUIC.
#[derive(Debug, Parser)]
#[command(name = "quicpeer", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the PeerId of an identity.
    Id(id::Args),
    /// Work with libp2p TLS certificates.
    #[command(subcommand)]
    Cert(cert::Command),
    /// Run a benchmark and print its table.
    Bench(bench::Args),
    // Commands to come (listen, ping, demo, bench): one variant here, one module beside this
    // file, one arm in `main`.
}

/// Bad arguments or unusable input: reported on stderr with exit status 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match Cli::parse().command {
        Command::Id(args) => id::run(&args),
        Command::Cert(command) => cert::run(&command),
        Command::Bench(args) => bench::run(&args),
    };
    result.unwrap_or_else(|error| {
        eprintln!("error: {error}");
        ExitCode::from(2)
    })
}
