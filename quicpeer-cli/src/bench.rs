//! `quicpeer bench <name> [--json]`: run one of the benchmark workloads of `quicpeer_bench`
//! and print its table (or one JSON object).
//!
//! This binary counts its heap allocations (a relaxed atomic add per allocation and free), so
//! that `bench memory` can weigh connections; every other command pays that, and nothing else.

use std::process::ExitCode;
use std::time::Duration;

use quicpeer_bench::{self as bench, BenchError, Report};

use crate::output::Output;
use crate::UsageError;

/// Arguments of `quicpeer bench`; the global `--json` prints one JSON object instead.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    which: Which,
    /// Draw the report's samples (cumulative curves) to this SVG file, for the benchmarks that
    /// keep samples: `restart`, `mass-restart --loopback`.
    #[arg(long, global = true, value_name = "FILE.svg")]
    plot: Option<std::path::PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
enum Which {
    /// CPU per datagram of established-connection traffic, quicpeer vs bare quinn-proto.
    PerDatagram {
        /// Datagrams per round and stack.
        #[arg(long, default_value_t = 50_000)]
        datagrams: u64,
        /// Alternating rounds; the median is reported.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// Completed handshakes per second on one core, quicpeer vs bare quinn-proto.
    Handshake {
        /// Handshakes per round and stack.
        #[arg(long, default_value_t = 500)]
        handshakes: u32,
        /// Alternating rounds; the median is reported.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// A hub with N peers restarts: time until all reconnect, CPU time. In the simulator, or
    /// with `--loopback` on real UDP sockets (one per peer: `ulimit -n` bounds the peers).
    MassRestart {
        /// Peer counts, one run each.
        #[arg(long, value_delimiter = ',', default_values_t = [100, 1000])]
        peers: Vec<usize>,
        /// The peers' keep-alive interval in milliseconds (idle peers detect at the next one).
        #[arg(long, default_value_t = 1000)]
        keep_alive_ms: u64,
        /// Run on loopback UDP: the hub on the mio driver, the peers on one thread.
        #[arg(long)]
        loopback: bool,
        /// With `--loopback`: dials per second while the peers connect.
        #[arg(long, default_value_t = 1000, requires = "loopback")]
        dial_rate: u32,
        /// With `--loopback`: the hub socket's receive buffer to ask for (`SO_RCVBUF`, bytes);
        /// the driver's otherwise (4 MiB asked, capped by `net.core.rmem_max`).
        #[arg(long, requires = "loopback")]
        hub_recv_buffer: Option<usize>,
        /// With `--loopback`: the hub's limit of inbound handshakes in flight (above it, new
        /// ones are refused); the default limit otherwise (1024).
        #[arg(long, requires = "loopback")]
        hub_max_inbound_handshakes: Option<usize>,
        /// With `--loopback`: above this many inbound handshakes in flight, the hub asks new
        /// clients to prove their address with a Retry first (0: always).
        #[arg(long, requires = "loopback")]
        hub_retry_above: Option<usize>,
        /// With `--loopback`: the restarted hub dials the old hub's peer book at once, so each
        /// peer finds the restart when the hub's handshake reaches it (restart epoch).
        #[arg(long, requires = "loopback")]
        hub_peer_book: bool,
        /// With `--loopback`: the hub's threads, each a shard (its own manager) on the hub's
        /// one port (SO_REUSEPORT); the global limits are split between them.
        #[arg(long, default_value_t = 1, requires = "loopback", value_parser = clap::value_parser!(u8).range(1..))]
        hub_threads: u8,
    },
    /// A hub holding established peers on loopback under a flood of Initials, forged
    /// short-header packets, would-be resets and unknown versions from many sources:
    /// newcomers' handshakes, connections lost, memory, bytes answered per byte received.
    Hostile {
        /// Attacks, one run each: none, initials, forged-short, resets, unknown-version, all.
        #[arg(
            long,
            value_delimiter = ',',
            default_values_t = bench::hostile::Attack::EVERY.map(|a| a.name().to_owned())
        )]
        attacks: Vec<String>,
        /// Established peers of the hub (one socket each).
        #[arg(long, default_value_t = 1000)]
        peers: usize,
        /// Seconds each flood lasts.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// The attacker's pace, datagrams per second (default: as fast as one core sends).
        #[arg(long)]
        rate: Option<u64>,
        /// New clients dialing during each flood.
        #[arg(long, default_value_t = 100)]
        newcomers: usize,
        /// Attacking source addresses (sockets on 127.1.x.y).
        #[arg(long, default_value_t = 1024)]
        sources: usize,
        /// Distinct real Initials to replay.
        #[arg(long, default_value_t = 20_000)]
        initials: usize,
        /// The hub's limit of inbound handshakes in flight.
        #[arg(long)]
        hub_max_inbound_handshakes: Option<usize>,
        /// Above this many inbound handshakes in flight the hub sends Retry (0: always).
        #[arg(long)]
        hub_retry_above: Option<usize>,
    },
    /// Bytes per idle connection, at N simulated connections to one manager.
    Memory {
        /// Connections to the hub.
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
    },
    /// Bytes per reservation and per circuit of the relay server (simulated).
    RelayMemory {
        /// Clients connected to the relay, each reserving.
        #[arg(long, default_value_t = 200)]
        clients: usize,
        /// Circuits open (at most half the clients).
        #[arg(long, default_value_t = 50)]
        circuits: usize,
    },
    /// Restart to first message on a fresh connection: derived vs random keys, suspicion
    /// redial on and off (simulated; loopback and rust-libp2p: `cargo run -p quicpeer-bench
    /// --features compare --release --bin compare -- reconnect`).
    Reconnect {
        /// Restarts per mode.
        #[arg(long, default_value_t = 50)]
        trials: u64,
        /// One-way link latency in milliseconds.
        #[arg(long, default_value_t = 5)]
        latency_ms: u64,
        /// Link jitter in milliseconds (uniform, added per datagram).
        #[arg(long, default_value_t = 4)]
        jitter_ms: u64,
    },
    /// Peer channels over one link: msgs/s with the memory and the redb store, p50/p99 from
    /// accept to delivery, and (simulated) restart to the first resent message delivered.
    Channel {
        /// Messages per store.
        #[arg(long, default_value_t = 100_000)]
        messages: u64,
        /// Body size in bytes.
        #[arg(long, default_value_t = 100)]
        body: usize,
        /// Restarts per side.
        #[arg(long, default_value_t = 20)]
        trials: u64,
    },
    /// The long run of the channel checker on loopback: `federate` servers killed with
    /// `kill -9` and restarted, then every durable log checked (lost, duplicated, order).
    Federate(crate::bench_federate::Args),
    /// Point it at any libp2p QUIC node and a command that restarts it: how long the node's
    /// peers stay cut off (first sign of the restart, first ping on a fresh connection).
    Restart(crate::bench_restart::Args),
    /// A peer of an idle link restarts: from it being up again to a fresh connection, with and
    /// without a peer book, on a new port with and without the restart epoch, and a planned
    /// restart (simulated).
    RestartScenarios {
        /// Trials per scenario.
        #[arg(long, default_value_t = 20)]
        trials: u64,
        /// One-way link latency in milliseconds.
        #[arg(long, default_value_t = 5)]
        latency_ms: u64,
    },
}

pub fn run(args: &Args, out: Output) -> Result<ExitCode, UsageError> {
    let report = match &args.which {
        Which::Restart(restart) => {
            return crate::bench_restart::run(restart, args.plot.as_deref(), out)
        }
        Which::Federate(args) => return crate::bench_federate::run(args, out),
        Which::PerDatagram { datagrams, rounds } => bench::per_datagram::run(*datagrams, *rounds),
        Which::Handshake { handshakes, rounds } => bench::handshake::run(*handshakes, *rounds),
        Which::MassRestart {
            peers,
            keep_alive_ms,
            loopback: false,
            ..
        } => bench::mass_restart::run(peers, Duration::from_millis(*keep_alive_ms)),
        Which::MassRestart {
            peers,
            keep_alive_ms,
            loopback: true,
            dial_rate,
            hub_recv_buffer,
            hub_max_inbound_handshakes,
            hub_retry_above,
            hub_peer_book,
            hub_threads,
        } => {
            let mut template = bench::mass_restart_loopback::Params::new(0);
            template.keep_alive = Duration::from_millis(*keep_alive_ms);
            template.dial_rate = *dial_rate;
            template.hub_recv_buffer = *hub_recv_buffer;
            template.hub_max_inbound_handshakes = *hub_max_inbound_handshakes;
            template.hub_retry_above = *hub_retry_above;
            template.hub_peer_book = *hub_peer_book;
            template.hub_threads = usize::from(*hub_threads);
            bench::mass_restart_loopback::run(peers, &template)
        }
        Which::Hostile {
            attacks,
            peers,
            seconds,
            rate,
            newcomers,
            sources,
            initials,
            hub_max_inbound_handshakes,
            hub_retry_above,
        } => {
            let attacks = (attacks.iter())
                .map(|a| a.parse::<bench::hostile::Attack>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(UsageError)?;
            let mut template = bench::hostile::Params::new(bench::hostile::Attack::None);
            template.peers = *peers;
            template.duration = Duration::from_secs(*seconds);
            template.rate = *rate;
            template.newcomers = *newcomers;
            template.sources = *sources;
            template.initials = *initials;
            template.hub_max_inbound_handshakes = *hub_max_inbound_handshakes;
            template.hub_retry_above = *hub_retry_above;
            bench::hostile::run(&attacks, &template)
        }
        Which::Memory { connections } => bench::memory::run(*connections, &bench::alloc::allocated),
        Which::RelayMemory { clients, circuits } => {
            bench::relay_memory::run(*clients, *circuits, &bench::alloc::allocated)
        }
        Which::Reconnect {
            trials,
            latency_ms,
            jitter_ms,
        } => bench::reconnect::run(
            *trials,
            Duration::from_millis(*latency_ms),
            Duration::from_millis(*jitter_ms),
        ),
        Which::Channel {
            messages,
            body,
            trials,
        } => bench::channel::run(*messages, *body, *trials),
        Which::RestartScenarios { trials, latency_ms } => {
            bench::restart_scenarios::run(*trials, Duration::from_millis(*latency_ms))
        }
    };
    if let (Ok(report), Some(path)) = (&report, &args.plot) {
        if let Err(e) = bench::plot::write_svg(report, path) {
            eprintln!("no plot: {e}");
        }
    }
    print(report, out.is_json())
}

fn print(report: Result<Report, BenchError>, json: bool) -> Result<ExitCode, UsageError> {
    match report {
        Ok(report) if json => println!("{}", report.json()),
        Ok(report) => print!("{}", report.table()),
        Err(error) => {
            eprintln!("error: {error}");
            return Ok(ExitCode::FAILURE);
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[global_allocator]
static GLOBAL: bench::alloc::Counting = bench::alloc::Counting;
