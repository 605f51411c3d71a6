//! Comparison benchmarks on loopback: quicpeer against rust-libp2p and quinn, in one run on one
//! machine. See `docs/benchmarks.md` for what each measures and the figures of the last round.
//!
//! ```text
//! compare reconnect [--restarts 20] [--pairs qq,ll,ql,lq,sl,ls] [--ping-interval-ms 100] [--spacing-ms 1500]
//! compare handshake [--count 500] [--rounds 5] [--cpu 0]
//! compare throughput [--bytes 1073741824] [--rounds 3] [--stacks quicpeer,quicpeer-tokio,quinn]
//! compare restart-scenarios [--trials 10]
//! compare slots [--restarts 20] [--spacing-ms 200] [--relays quicpeer,rust-libp2p,js-libp2p]
//! compare relay-throughput [--bytes 67108864] [--rounds 3] [--relays quicpeer,rust-libp2p]
//! compare relay-memory [--clients 200] [--circuits 50] [--rounds 1] [--settle-ms 1000] [--relays quicpeer,rust-libp2p]
//! ```
//!
//! Each prints a table (`--json`: one JSON object) on stdout and its progress on stderr.
//! Build with `--release`: the figures of a debug build mean nothing. The relay comparisons
//! start the `compare-relay` binary, built beside this one (`--bin compare-relay`, or no
//! `--bin`), or `$QUICPEER_COMPARE_RELAY`.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use quicpeer_bench::compare::{
    circuits, handshake, reconnect, scenarios, slots, throughput, Report,
};

#[derive(Parser)]
#[command(about = "Loopback comparison benchmarks: quicpeer, rust-libp2p, quinn")]
struct Args {
    #[command(subcommand)]
    bench: Bench,
    /// Print the report as one JSON object instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// No progress lines on stderr.
    #[arg(long, short, global = true)]
    quiet: bool,
    /// Draw the samples (cumulative curves per pair) to this SVG file (`reconnect`).
    #[arg(long, global = true, value_name = "FILE.svg")]
    plot: Option<std::path::PathBuf>,
}

#[derive(Subcommand)]
enum Bench {
    /// A listener restarts under a pinging dialer: detection and first ping on a fresh
    /// connection, per pair (pairs that recover at the 10 s idle timeout take ~10 s a restart).
    Reconnect {
        /// Restarts per pair.
        #[arg(long, default_value_t = 20)]
        restarts: usize,
        /// Pairs, dialer first: qq (quicpeer → quicpeer), ll (rust-libp2p → rust-libp2p),
        /// ql (quicpeer → rust-libp2p), lq (rust-libp2p → quicpeer), sl (a rust-libp2p Swarm
        /// on quicpeer-libp2p → rust-libp2p), ls (rust-libp2p → a Swarm on quicpeer-libp2p).
        #[arg(long, value_delimiter = ',', default_value = "qq,ll,ql,lq,sl,ls")]
        pairs: Vec<String>,
        /// The dialer's ping interval, in milliseconds.
        #[arg(long, default_value_t = 100)]
        ping_interval_ms: u64,
        /// How long one restart may take to recover, in milliseconds.
        #[arg(long, default_value_t = 15_000)]
        timeout_ms: u64,
        /// Least time between a recovery and the next restart, in milliseconds.
        #[arg(long, default_value_t = 1_500)]
        spacing_ms: u64,
    },
    /// An idle quicpeer peer restarts: without and with its peer book, on a new port with and
    /// without the restart epoch, planned; from the restarted node up to a fresh ping.
    RestartScenarios {
        /// Trials per scenario.
        #[arg(long, default_value_t = 10)]
        trials: usize,
    },
    /// Completed handshakes per second, both peers pinned to one core.
    Handshake {
        /// Measured handshakes per round and stack.
        #[arg(long, default_value_t = 500)]
        count: u32,
        /// Rounds, alternating the stacks.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// The CPU both peers are pinned to.
        #[arg(long, default_value_t = 0)]
        cpu: usize,
    },
    /// One stream of bulk data: quicpeer's mio driver against quinn.
    Throughput {
        /// Bytes per transfer.
        #[arg(long, default_value_t = 1 << 30)]
        bytes: u64,
        /// Transfers per stack, alternating.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Stacks: quicpeer, quicpeer-tokio, quinn (one alone, e.g. under `perf stat`).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "quicpeer,quicpeer-tokio,quinn"
        )]
        stacks: Vec<String>,
    },
    /// A relay client crashes and comes back, reserving each time (1 reservation per peer),
    /// then a second client dials the survivor through the relay: per relay server.
    Slots {
        /// Crashes of the client.
        #[arg(long, default_value_t = 20)]
        restarts: usize,
        /// How long each incarnation lives after its answer, in milliseconds.
        #[arg(long, default_value_t = 200)]
        spacing_ms: u64,
        /// Relay servers: quicpeer, rust-libp2p, js-libp2p (a Node.js process; needs npm).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "quicpeer,rust-libp2p,js-libp2p"
        )]
        relays: Vec<String>,
    },
    /// Bytes per second through one relayed circuit (a rust-libp2p client to another), per
    /// relay server, alternating.
    RelayThroughput {
        /// Bytes per transfer.
        #[arg(long, default_value_t = 64 << 20)]
        bytes: u64,
        /// Transfers per relay, alternating.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Relay servers: quicpeer, rust-libp2p.
        #[arg(long, value_delimiter = ',', default_value = "quicpeer,rust-libp2p")]
        relays: Vec<String>,
    },
    /// The relay process's memory per connection, reservation and circuit, per relay server.
    RelayMemory {
        /// Clients, each connecting and then reserving.
        #[arg(long, default_value_t = 200)]
        clients: usize,
        /// Circuits between them (at most half the clients).
        #[arg(long, default_value_t = 50)]
        circuits: usize,
        /// Runs per relay, alternating.
        #[arg(long, default_value_t = 1)]
        rounds: usize,
        /// Wait before each reading, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        settle_ms: u64,
        /// Relay servers: quicpeer, rust-libp2p.
        #[arg(long, value_delimiter = ',', default_value = "quicpeer,rust-libp2p")]
        relays: Vec<String>,
    },
}

/// The relay servers named, or the first unknown name.
fn relay_servers(names: &[String]) -> Result<Vec<circuits::Server>, String> {
    names
        .iter()
        .map(|name| circuits::Server::from_name(name.trim()).ok_or_else(|| name.clone()))
        .collect()
}

fn main() -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let args = Args::parse();
    let quiet = args.quiet;
    let mut progress = |line: String| {
        if !quiet {
            eprintln!("{line}");
        }
    };
    let report: Result<Report, String> = match args.bench {
        Bench::Reconnect {
            restarts,
            pairs,
            ping_interval_ms,
            timeout_ms,
            spacing_ms,
        } => {
            let mut chosen = Vec::new();
            for code in &pairs {
                match reconnect::Pair::from_code(code.trim()) {
                    Some(pair) => chosen.push(pair),
                    None => {
                        eprintln!("unknown pair {code:?}: use qq, ll, ql, lq, sl or ls");
                        return ExitCode::from(2);
                    }
                }
            }
            if ping_interval_ms == 0 {
                eprintln!("--ping-interval-ms must be positive");
                return ExitCode::from(2);
            }
            let settings = reconnect::Settings {
                pairs: chosen,
                restarts,
                ping_interval: Duration::from_millis(ping_interval_ms),
                timeout: Duration::from_millis(timeout_ms),
                spacing: Duration::from_millis(spacing_ms),
            };
            reconnect::run(&settings, &mut progress).map_err(|e| e.to_string())
        }
        Bench::RestartScenarios { trials } => {
            scenarios::run(trials, &mut progress).map_err(|e| e.to_string())
        }
        Bench::Handshake { count, rounds, cpu } => {
            handshake::run(count.max(1), rounds, cpu, &mut progress).map_err(|e| e.to_string())
        }
        Bench::Throughput {
            bytes,
            rounds,
            stacks,
        } => {
            let mut chosen = Vec::new();
            for name in &stacks {
                match throughput::Stack::from_name(name.trim()) {
                    Some(stack) => chosen.push(stack),
                    None => {
                        eprintln!("unknown stack {name:?}: use quicpeer, quicpeer-tokio or quinn");
                        return ExitCode::from(2);
                    }
                }
            }
            throughput::run(&chosen, bytes.max(1), rounds, &mut progress).map_err(|e| e.to_string())
        }
        Bench::Slots {
            restarts,
            spacing_ms,
            relays,
        } => {
            let mut servers = Vec::new();
            for name in &relays {
                match slots::Server::from_name(name.trim()) {
                    Some(server) => servers.push(server),
                    None => {
                        eprintln!("unknown relay {name:?}: use quicpeer, rust-libp2p or js-libp2p");
                        return ExitCode::from(2);
                    }
                }
            }
            let settings = slots::Settings {
                servers,
                restarts,
                spacing: Duration::from_millis(spacing_ms),
                answer_timeout: Duration::from_secs(10),
                survivor_timeout: Duration::from_secs(30),
            };
            slots::run(&settings, &mut progress).map_err(|e| e.to_string())
        }
        Bench::RelayThroughput {
            bytes,
            rounds,
            relays,
        } => match relay_servers(&relays) {
            Ok(servers) => circuits::throughput(&servers, bytes.max(1), rounds, &mut progress)
                .map_err(|e| e.to_string()),
            Err(name) => {
                eprintln!("unknown relay {name:?}: use quicpeer or rust-libp2p");
                return ExitCode::from(2);
            }
        },
        Bench::RelayMemory {
            clients,
            circuits: count,
            rounds,
            settle_ms,
            relays,
        } => match relay_servers(&relays) {
            Ok(servers) => circuits::memory(
                &servers,
                clients.max(2),
                count,
                rounds,
                Duration::from_millis(settle_ms),
                &mut progress,
            )
            .map_err(|e| e.to_string()),
            Err(name) => {
                eprintln!("unknown relay {name:?}: use quicpeer or rust-libp2p");
                return ExitCode::from(2);
            }
        },
    };
    match report {
        Ok(report) => {
            if let Some(path) = &args.plot {
                if let Err(e) = quicpeer_bench::plot::write_svg(&report, path) {
                    eprintln!("no plot: {e}");
                }
            }
            if args.json {
                println!("{}", report.json());
            } else {
                print!("{}", report.table());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("compare: {e}");
            ExitCode::FAILURE
        }
    }
}
