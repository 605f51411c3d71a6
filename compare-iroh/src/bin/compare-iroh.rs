//! iroh beside quicpeer, rust-libp2p and quinn on loopback, in one run on one machine. See
//! `docs/benchmarks.md` ("iroh") for what each measures and the figures of the last round.
//!
//! ```text
//! compare-iroh reconnect [--iroh-restarts 3] [--restarts 20] [--pairs qq] [--ping-interval-ms 100]
//! compare-iroh handshake [--count 500] [--rounds 5] [--cpu 0]
//! compare-iroh throughput [--bytes 1073741824] [--rounds 3] [--stacks quicpeer,quicpeer-tokio,quinn,iroh]
//! ```
//!
//! Each prints one table (`--json`: one JSON object) on stdout and its progress on stderr.
//! Build with `--release` (`--manifest-path compare-iroh/Cargo.toml`): the figures of a debug
//! build mean nothing.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use compare_iroh::{handshake, reconnect, throughput, Report};
use quicpeer_bench::compare::reconnect as rc;

#[derive(Parser)]
#[command(about = "Loopback comparison benchmarks: iroh beside quicpeer, rust-libp2p, quinn")]
struct Args {
    #[command(subcommand)]
    bench: Bench,
    /// Print the report as one JSON object instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// No progress lines on stderr.
    #[arg(long, short, global = true)]
    quiet: bool,
}

#[derive(Subcommand)]
enum Bench {
    /// A listener crashes and comes back under a pinging dialer: iroh → iroh beside
    /// quicpeer-bench's pairs (iroh waits out its idle timeout: ~30 s a restart).
    Reconnect {
        /// Restarts of the iroh listener.
        #[arg(long, default_value_t = 3)]
        iroh_restarts: usize,
        /// How long one iroh restart may take to recover, in milliseconds.
        #[arg(long, default_value_t = 90_000)]
        iroh_timeout_ms: u64,
        /// Restarts per quicpeer-bench pair.
        #[arg(long, default_value_t = 20)]
        restarts: usize,
        /// quicpeer-bench's pairs (see `compare reconnect --help`), e.g. qq,ll; empty: none.
        #[arg(long, value_delimiter = ',', default_value = "qq")]
        pairs: Vec<String>,
        /// The dialers' ping interval, in milliseconds.
        #[arg(long, default_value_t = 100)]
        ping_interval_ms: u64,
        /// How long one restart of a quicpeer-bench pair may take to recover, in milliseconds.
        #[arg(long, default_value_t = 15_000)]
        timeout_ms: u64,
        /// Least time between a recovery and the next restart, in milliseconds.
        #[arg(long, default_value_t = 1_500)]
        spacing_ms: u64,
    },
    /// Completed handshakes per second on one core: iroh beside quicpeer, quicpeer-tokio,
    /// rust-libp2p and quinn.
    Handshake {
        /// Measured handshakes per round and stack.
        #[arg(long, default_value_t = 500)]
        count: u32,
        /// Rounds, alternating the stacks.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// The CPU every stack is pinned to.
        #[arg(long, default_value_t = 0)]
        cpu: usize,
    },
    /// One stream of bulk data: iroh beside quicpeer's mio driver, quicpeer-tokio and quinn.
    Throughput {
        /// Bytes per transfer.
        #[arg(long, default_value_t = 1 << 30)]
        bytes: u64,
        /// Transfers per stack, alternating.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Stacks: quicpeer, quicpeer-tokio, quinn, iroh.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "quicpeer,quicpeer-tokio,quinn,iroh"
        )]
        stacks: Vec<String>,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let quiet = args.quiet;
    let mut progress = |line: String| {
        if !quiet {
            eprintln!("{line}");
        }
    };
    let report: Result<Report, String> = match args.bench {
        Bench::Reconnect {
            iroh_restarts,
            iroh_timeout_ms,
            restarts,
            pairs,
            ping_interval_ms,
            timeout_ms,
            spacing_ms,
        } => {
            let mut chosen = Vec::new();
            for code in pairs.iter().map(|c| c.trim()).filter(|c| !c.is_empty()) {
                match rc::Pair::from_code(code) {
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
                iroh_restarts,
                iroh_timeout: Duration::from_millis(iroh_timeout_ms),
                others: rc::Settings {
                    pairs: chosen,
                    restarts,
                    ping_interval: Duration::from_millis(ping_interval_ms),
                    timeout: Duration::from_millis(timeout_ms),
                    spacing: Duration::from_millis(spacing_ms),
                },
            };
            reconnect::run(&settings, &mut progress).map_err(|e| e.to_string())
        }
        Bench::Handshake { count, rounds, cpu } => handshake::run(
            &handshake::Stack::ALL,
            count.max(1),
            rounds,
            cpu,
            &mut progress,
        )
        .map_err(|e| e.to_string()),
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
                        eprintln!(
                            "unknown stack {name:?}: use quicpeer, quicpeer-tokio, quinn or iroh"
                        );
                        return ExitCode::from(2);
                    }
                }
            }
            throughput::run(&chosen, bytes.max(1), rounds, &mut progress).map_err(|e| e.to_string())
        }
    };
    match report {
        Ok(report) => {
            if args.json {
                println!("{}", report.json());
            } else {
                print!("{}", report.table());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("compare-iroh: {e}");
            ExitCode::FAILURE
        }
    }
}
