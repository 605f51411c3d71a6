//! The `quicpeer` command-line tool.
//!
//! One module per command, each with its clap `Args` (or subcommand enum) and a `run` function
//! returning the exit status. Commands that run a node share the `--seed`/`--key` arguments of
//! [`identity_args`] (and the transport knobs of [`transport_args`], the `--peer-book` of
//! [`peer_book_args`]). `--json`, accepted by every command, prints one JSON object per line
//! instead of human lines ([`output`]). Exit status: 0 success, 1 a negative answer (e.g. a
//! rejected certificate, no ping answered), 2 bad arguments or unusable input.

mod addr;
mod bench;
mod bench_federate;
mod bench_restart;
mod cert;
mod demo;
mod federate;
mod id;
mod identity_args;
mod listen;
mod metrics_server;
mod output;
mod peer_book_args;
mod ping;
mod pinger;
mod relay;
mod report;
mod signals;
mod transport_args;

use std::fmt;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// A sans-IO QUIC connection manager speaking libp2p's QUIC.
#[derive(Debug, Parser)]
#[command(name = "quicpeer", version)]
struct Cli {
    /// Print one JSON object per line instead of human-readable lines.
    #[arg(long, global = true)]
    json: bool,
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
    /// Accept connections and answer pings until SIGINT/SIGTERM; prints `LISTEN <multiaddr>`.
    Listen(listen::Args),
    /// Dial a peer and ping it at an interval, across its restarts.
    Ping(ping::Args),
    /// Run a circuit relay v2 server that answers pings; prints `LISTEN <multiaddr>`, then
    /// one line per reservation and circuit event.
    Relay(relay::Args),
    /// Show restart recovery on loopback: derived keys against quinn's default keys.
    Demo(demo::Args),
    /// Run a benchmark and print its table (`--json`: one JSON object).
    Bench(bench::Args),
    /// Run a federated chat server: stdin lines to every server exactly once, across crashes.
    Federate(federate::Args),
    // Commands to come (bench): one variant here, one module beside this file, one arm in
    // `main`.
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
    let cli = Cli::parse();
    let out = output::Output::new(cli.json);
    let result = match cli.command {
        Command::Id(args) => id::run(&args, out),
        Command::Cert(command) => cert::run(&command, out),
        Command::Listen(args) => listen::run(&args, out),
        Command::Ping(args) => ping::run(&args, out),
        Command::Relay(args) => relay::run(&args, out),
        Command::Demo(args) => demo::run(&args, out),
        Command::Bench(args) => bench::run(&args, out),
        Command::Federate(args) => federate::run(&args, out),
    };
    result.unwrap_or_else(|error| {
        eprintln!("error: {error}");
        ExitCode::from(2)
    })
}
