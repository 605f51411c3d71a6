//! A rust-libp2p node (QUIC + ping) that prints what happens as JSON lines on stdout, for
//! benches, scripts and tests that need a peer in a process of its own.
//!
//! ```text
//! libp2p-peer listen --seed 2 [--listen /ip4/127.0.0.1/udp/0/quic-v1]
//! libp2p-peer dial --seed 3 --addr /ip4/127.0.0.1/udp/4001/quic-v1/p2p/12D3... [--ping-interval-ms 200]
//! ```
//!
//! It stops when its stdin closes (or on a signal). `RUST_LOG` sets the log filter (stderr).

use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use quicpeer_interop::{Libp2pConfig, Libp2pPeer};

#[derive(Parser)]
#[command(about = "A rust-libp2p QUIC + ping node printing JSON lines")]
struct Args {
    #[command(subcommand)]
    mode: Mode,
    /// The Ed25519 secret key is this byte repeated 32 times.
    #[arg(long, global = true, default_value_t = 1)]
    seed: u8,
    /// Interval of outbound pings, in milliseconds.
    #[arg(long, global = true, default_value_t = 200)]
    ping_interval_ms: u64,
}

#[derive(Subcommand)]
enum Mode {
    /// Listen and answer.
    Listen {
        /// The multiaddr to listen on.
        #[arg(long, default_value = "/ip4/127.0.0.1/udp/0/quic-v1")]
        listen: libp2p::Multiaddr,
    },
    /// Dial, ping, and dial again whenever the connection is lost.
    Dial {
        /// The multiaddr to dial, ending in `/p2p/<id>`.
        #[arg(long)]
        addr: libp2p::Multiaddr,
    },
}

fn main() -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let args = Args::parse();
    let mut config = match args.mode {
        Mode::Listen { listen } => Libp2pConfig::listener(args.seed, listen),
        Mode::Dial { addr } => Libp2pConfig::dialer(args.seed, addr),
    };
    config.ping_interval = Duration::from_millis(args.ping_interval_ms);
    let mut peer = match Libp2pPeer::spawn(config) {
        Ok(peer) => peer,
        Err(e) => {
            eprintln!("cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Stop when stdin closes: whoever started us is gone or wants us gone.
    let (eof_tx, eof_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sink = [0u8; 256];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        let _ = eof_tx.send(());
    });
    let mut stdout = std::io::stdout().lock();
    loop {
        if eof_rx.try_recv().is_ok() {
            break;
        }
        if let Some(stamped) = peer.events.next(Duration::from_millis(50)) {
            let line = stamped.event.to_json();
            if writeln!(stdout, "{line}")
                .and_then(|()| stdout.flush())
                .is_err()
            {
                break;
            }
        }
    }
    drop(peer);
    ExitCode::SUCCESS
}
