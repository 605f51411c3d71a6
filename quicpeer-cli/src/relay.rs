//! `quicpeer relay`: a circuit relay v2 server (`quicpeer::protocols::relay`) that answers
//! pings like `listen`, until SIGINT/SIGTERM. Prints the same `LISTEN` line as `listen`, then
//! one line (or JSON object) per reservation accepted, refused and freed, and per circuit
//! opened, refused and closed.

use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use quicpeer::address::{self, Multiaddr};
use quicpeer::driver::{Driver, Exit};
use quicpeer::protocols::relay::{CircuitEnd, FreeCause, Relay, RelayConfig, RelayEvent};
use quicpeer::{Host, HostConfig, Manager};

use crate::identity_args::IdentityArgs;
use crate::metrics_server::MetricsArgs;
use crate::output::{Json, Output};
use crate::transport_args::TransportArgs;
use crate::{addr, report, signals, UsageError};

/// How long connections get to close at shutdown.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Arguments of `quicpeer relay`. The limits default to go- and rust-libp2p's.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    identity: IdentityArgs,
    /// Where to listen; port 0 picks a free port (the real one is printed).
    #[arg(
        long,
        value_name = "MULTIADDR",
        default_value = "/ip4/127.0.0.1/udp/0/quic-v1"
    )]
    listen: String,
    /// An address to give clients in their reservations (repeatable); by default the
    /// addresses listened on.
    #[arg(long, value_name = "MULTIADDR")]
    announce: Vec<String>,
    /// Reservations held at once.
    #[arg(long, value_name = "N", default_value_t = 128)]
    max_reservations: usize,
    /// Reservations one PeerId may hold at once (one per connection).
    #[arg(long, value_name = "N", default_value_t = 4)]
    max_reservations_per_peer: usize,
    /// Reservations from one IP address.
    #[arg(long, value_name = "N", default_value_t = 8)]
    max_reservations_per_ip: usize,
    /// How long a reservation lasts unless refreshed.
    #[arg(long, value_name = "S", default_value_t = 3600)]
    reservation_ttl_s: u64,
    /// How long a circuit may last.
    #[arg(long, value_name = "S", default_value_t = 120)]
    circuit_duration_s: u64,
    /// Bytes a circuit may carry each way.
    #[arg(long, value_name = "N", default_value_t = 1 << 17)]
    circuit_bytes: u64,
    /// How long the slot of a client whose connection died stays held for it.
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    grace_ms: u64,
    #[command(flatten)]
    metrics: MetricsArgs,
    #[command(flatten)]
    transport: TransportArgs,
}

impl Args {
    fn relay_config(&self) -> RelayConfig {
        let mut config = RelayConfig::default();
        config.max_reservations = self.max_reservations;
        config.max_reservations_per_peer = self.max_reservations_per_peer;
        config.max_reservations_per_ip = self.max_reservations_per_ip;
        config.reservation_ttl = Duration::from_secs(self.reservation_ttl_s);
        config.circuit_duration = Duration::from_secs(self.circuit_duration_s);
        config.circuit_bytes = self.circuit_bytes;
        config.grace = Duration::from_millis(self.grace_ms);
        config
    }
}

pub fn run(args: &Args, out: Output) -> Result<ExitCode, UsageError> {
    let identity = args.identity.load()?;
    let peer_id = identity.peer_id();
    let listen = addr::parse(&args.listen)?;
    if listen.peer.is_some_and(|p| p != peer_id) {
        return Err(UsageError(format!(
            "{}: the /p2p/ part is not this node's PeerId {peer_id}",
            args.listen
        )));
    }
    let mut announce = Vec::new();
    for text in &args.announce {
        let parsed: Multiaddr = text
            .parse()
            .map_err(|e| UsageError(format!("--announce {text}: {e}")))?;
        announce.push(parsed);
    }
    let keypair = identity.keypair().clone();
    let (now, wall) = (Instant::now(), SystemTime::now());
    let manager = Manager::new(
        now,
        wall,
        identity,
        args.transport.config()?,
        rand::random(),
    )
    .map_err(|e| UsageError(format!("cannot start the node: {e}")))?;
    // The host answers /ipfs/ping/1.0.0 by itself.
    let host = Host::new(now, manager, HostConfig::default(), rand::random());
    let relay = Relay::new(now, wall, host, keypair, args.relay_config())
        .map_err(|e| UsageError(format!("cannot start the relay: {e}")))?;
    let mut driver =
        Driver::bind(relay, &[listen.socket]).map_err(|e| UsageError(e.to_string()))?;
    signals::stop_on_termination(driver.handle())
        .map_err(|e| UsageError(format!("cannot install signal handlers: {e}")))?;

    let locals = driver.local_addrs();
    if announce.is_empty() {
        announce = (locals.iter())
            .map(|a| address::to_multiaddr(*a, None))
            .collect();
    }
    driver.machine_mut().set_listen_addrs(announce);
    for local in locals {
        let full = addr::format(local, Some(&peer_id));
        out.emit(
            Instant::now(),
            Json::event("listen").str("addr", &full),
            || format!("LISTEN {full}"),
        );
    }
    (args.metrics).start_with(
        vec![driver.handle()],
        |relay: &Relay| relay.host().manager().metrics(),
        &out,
    )?;
    loop {
        let result = driver.run_until(None, |cx, event| {
            relay_event(&out, cx.now(), &event);
        });
        match result {
            Ok(Exit::Stopped) => break,
            Ok(_) => {}
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    let open = driver.machine().host().manager().connected_peers().len();
    out.emit(
        Instant::now(),
        Json::event("shutting_down").int("peers", open as u64),
        || format!("SHUTTING DOWN: closing connections to {open} peer(s)"),
    );
    let closed = driver
        .shutdown(CLOSE_GRACE, |cx, event| relay_event(&out, cx.now(), &event))
        .unwrap_or(false);
    report::stopped(&out, closed);
    Ok(ExitCode::SUCCESS)
}

fn free_cause_name(cause: &FreeCause) -> &'static str {
    match cause {
        FreeCause::ConnectionLost(cause) => report::cause_name(cause),
        FreeCause::Expired => "expired",
        _ => "other",
    }
}

fn circuit_end_name(reason: &CircuitEnd) -> &'static str {
    match reason {
        CircuitEnd::Done => "done",
        CircuitEnd::Reset(_) => "reset",
        CircuitEnd::ConnectionLost(..) => "connection_lost",
        CircuitEnd::DurationLimit => "duration_limit",
        CircuitEnd::DataLimit => "data_limit",
        _ => "other",
    }
}

/// Prints a relay event, and the connection events of its host.
fn relay_event(out: &Output, at: Instant, event: &RelayEvent) {
    match event {
        RelayEvent::Host(event) => {
            report::host_event(out, at, event);
        }
        RelayEvent::ReservationAccepted {
            peer,
            conn,
            addr,
            renewed,
            reclaimed,
            ..
        } => {
            let addr = addr.map(|a| a.to_string()).unwrap_or_default();
            let json = Json::event("reservation_accepted")
                .str("peer", &peer.to_string())
                .str("conn", &conn.to_string())
                .str("addr", &addr)
                .bool("renewed", *renewed)
                .bool("reclaimed", *reclaimed);
            out.emit(at, json, || {
                let how = match (renewed, reclaimed) {
                    (true, _) => " (renewed)",
                    (_, true) => " (slot taken back)",
                    _ => "",
                };
                format!("RESERVATION ACCEPTED {peer} at {addr} ({conn}){how}")
            });
        }
        RelayEvent::ReservationRefused { peer, conn, status } => {
            let json = Json::event("reservation_refused")
                .str("peer", &peer.to_string())
                .str("conn", &conn.to_string())
                .str("status", status.name());
            out.emit(at, json, || {
                format!("RESERVATION REFUSED {peer} ({conn}): {status}")
            });
        }
        RelayEvent::ReservationFreed { peer, conn, cause } => {
            let json = Json::event("reservation_freed")
                .str("peer", &peer.to_string())
                .str("conn", &conn.to_string())
                .str("cause", free_cause_name(cause))
                .str("detail", &cause.to_string());
            out.emit(at, json, || {
                format!("RESERVATION FREED {peer} ({conn}): {cause}")
            });
        }
        RelayEvent::CircuitRefused { src, dst, status } => {
            let json = Json::event("circuit_refused")
                .str("src", &src.to_string())
                .str("dst", &dst.to_string())
                .str("status", status.name());
            out.emit(at, json, || {
                format!("CIRCUIT REFUSED {src} -> {dst}: {status}")
            });
        }
        RelayEvent::CircuitOpened { id, src, dst } => {
            let json = Json::event("circuit_opened")
                .str("circuit", &id.to_string())
                .str("src", &src.to_string())
                .str("dst", &dst.to_string());
            out.emit(at, json, || format!("CIRCUIT OPENED {id} {src} -> {dst}"));
        }
        RelayEvent::CircuitClosed {
            id,
            src,
            dst,
            to_dst,
            to_src,
            reason,
        } => {
            let json = Json::event("circuit_closed")
                .str("circuit", &id.to_string())
                .str("src", &src.to_string())
                .str("dst", &dst.to_string())
                .int("bytes_to_dst", *to_dst)
                .int("bytes_to_src", *to_src)
                .str("reason", circuit_end_name(reason))
                .str("detail", &reason.to_string());
            out.emit(at, json, || {
                format!(
                    "CIRCUIT CLOSED {id} {src} -> {dst}: {to_dst} B to dst, {to_src} B to src, {reason}"
                )
            });
        }
        RelayEvent::BadRequest {
            peer,
            error,
            status,
        } => {
            let answered = status.map_or("reset", |s| s.name());
            let json = Json::event("bad_request")
                .str("peer", &peer.to_string())
                .str("error", &error.to_string())
                .str("answer", answered);
            out.emit(at, json, || {
                format!("BAD REQUEST {peer}: {error} ({answered})")
            });
        }
        _ => {}
    }
}
