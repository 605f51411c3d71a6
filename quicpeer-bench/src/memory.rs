//! Bytes per idle connection, with 10 000 connections to one manager.
//!
//! A hub and N peers in the simulator; the peers dial in batches (the hub refuses inbound
//! handshakes beyond `Limits::max_inbound_handshakes` at once), everyone settles, then the hub
//! is stopped: the bytes its manager frees are its footprint. The footprint of an empty
//! manager, measured the same way, is subtracted, and the rest divided by N. The same is done
//! for one peer, which holds a single connection. Everything a manager owns is counted: quinn's
//! connection state, TLS session, the manager's bookkeeping, and the per-peer entry.
//!
//! Allocations are counted by the process's global allocator; the caller passes a function
//! reading the bytes currently allocated (see `quicpeer bench memory`).

use std::time::{Duration, Instant};

use super::endpoint::{wall_start, QuinnEnd, Wire};
use super::{hub_and_peers, BenchError, Cell, Report};
use quicpeer::sim::{Network, NodeId};
use quicpeer::{Config, Identity, Manager};

/// Peers dialing in one batch.
const BATCH: usize = 500;

/// What the memory benchmark found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Connections held by the hub.
    pub connections: usize,
    /// Bytes an empty manager owns.
    pub empty_manager: usize,
    /// Bytes a hub's manager owned with a single connection (another network).
    pub hub_one: usize,
    /// Bytes the hub's manager owned with all its connections.
    pub hub: usize,
    /// Bytes one peer's manager owned with its one connection.
    pub peer: usize,
    /// The floor: bytes a bare quinn-proto server endpoint owned with no connection, one, and
    /// `connections`, same transport configuration, minimal TLS (see [`bare_quinn_server`]).
    pub quinn: [usize; 3],
}

impl Outcome {
    /// Bytes per idle connection at the hub, on average: everything above an empty manager.
    pub fn per_connection_hub(&self) -> f64 {
        self.hub.saturating_sub(self.empty_manager) as f64 / self.connections.max(1) as f64
    }

    /// Bytes each connection after the first adds at the hub (what the first connection
    /// allocates once for the whole endpoint is left out).
    pub fn marginal_per_connection(&self) -> f64 {
        self.hub.saturating_sub(self.hub_one) as f64
            / self.connections.saturating_sub(1).max(1) as f64
    }

    /// [`per_connection_hub`](Self::per_connection_hub) of the bare quinn-proto server.
    pub fn quinn_per_connection(&self) -> f64 {
        self.quinn[2].saturating_sub(self.quinn[0]) as f64 / self.connections.max(1) as f64
    }

    /// [`marginal_per_connection`](Self::marginal_per_connection) of the bare quinn-proto server.
    pub fn quinn_marginal_per_connection(&self) -> f64 {
        self.quinn[2].saturating_sub(self.quinn[1]) as f64
            / self.connections.saturating_sub(1).max(1) as f64
    }
}

/// Measures with `connections` peers; `allocated` reads the bytes currently allocated.
pub fn measure(connections: usize, allocated: &dyn Fn() -> usize) -> Result<Outcome, BenchError> {
    if !counter_works(allocated) {
        return Err(BenchError::NoAllocationCounter);
    }
    let config = Config::default();
    let empty_manager = {
        let before = allocated();
        let manager = Manager::new(
            Instant::now(),
            wall_start(),
            Identity::from_ed25519_seed([0; 32]),
            config.clone(),
            [0; 32],
        )
        .map_err(|e| BenchError::Setup(e.to_string()))?;
        let after = allocated();
        drop(manager);
        after.saturating_sub(before)
    };
    let (hub_one, peer) = hub_and_peer(1, &config, allocated)?;
    let (hub, _) = hub_and_peer(connections, &config, allocated)?;
    let quinn = [
        bare_quinn_server(0, &config, allocated)?,
        bare_quinn_server(1, &config, allocated)?,
        bare_quinn_server(connections, &config, allocated)?,
    ];
    Ok(Outcome {
        connections,
        empty_manager,
        hub_one,
        hub,
        peer,
        quinn,
    })
}

/// Footprints of a hub with `connections` idle inbound connections and of its first peer.
fn hub_and_peer(
    connections: usize,
    config: &Config,
    allocated: &dyn Fn() -> usize,
) -> Result<(usize, usize), BenchError> {
    let (mut net, hub, peers) = hub_and_peers(1, connections, config);
    let (hub_peer, hub_addr) = (net.peer_id(hub), net.addr(hub));
    for batch in peers.chunks(BATCH) {
        for &peer in batch {
            let now = net.now();
            if let Some(manager) = net.manager(peer) {
                manager
                    .dial(now, hub_peer, [hub_addr])
                    .map_err(|e| BenchError::Setup(format!("dial: {e}")))?;
            }
        }
        net.run_for(Duration::from_millis(200));
    }
    net.run_for(Duration::from_secs(1));
    let held = net.manager(hub).map_or(0, |m| m.live_connections());
    if held != connections {
        return Err(BenchError::Stuck("not every peer connected to the hub"));
    }
    for node in 0..=connections {
        net.take_events(NodeId(node));
    }
    let footprint = |net: &mut Network, node| {
        let before = allocated();
        net.stop(node);
        before.saturating_sub(allocated())
    };
    let hub_bytes = footprint(&mut net, hub);
    let peer_bytes = peers.first().map_or(0, |&p| footprint(&mut net, p));
    Ok((hub_bytes, peer_bytes))
}

/// The footprint of a bare quinn-proto server endpoint (the per-datagram benchmark's
/// baseline, connections boxed) holding `connections` idle connections from one client
/// endpoint, with the transport parameters a manager gives quinn under `config` (stream limits,
/// windows, idle timeout, keep-alive). Its TLS is the minimal one of the baseline: no client
/// certificate to verify and keep, no libp2p extension; so this is quinn's and rustls' floor,
/// not a libp2p endpoint's.
fn bare_quinn_server(
    connections: usize,
    config: &Config,
    allocated: &dyn Fn() -> usize,
) -> Result<usize, BenchError> {
    let setup = |what: &str| BenchError::Setup(format!("bare quinn-proto transport: {what}"));
    let mut transport = quinn_proto::TransportConfig::default();
    let idle =
        quinn_proto::IdleTimeout::try_from(config.idle_timeout).map_err(|_| setup("idle"))?;
    let window = |w: u64| quinn_proto::VarInt::from_u64(w).map_err(|_| setup("window"));
    transport
        .max_idle_timeout(Some(idle))
        .keep_alive_interval(config.keep_alive)
        .max_concurrent_bidi_streams(config.max_concurrent_bidi_streams.into())
        .max_concurrent_uni_streams(config.max_concurrent_uni_streams.into())
        .stream_receive_window(window(config.stream_receive_window)?)
        .receive_window(window(config.receive_window)?)
        .datagram_receive_buffer_size(None);
    let (client, server) = QuinnEnd::pair_with(transport)?;
    let mut wire = Wire::new(client, server, Instant::now());
    for _ in 0..connections {
        wire.connect()?;
    }
    wire.advance(Duration::from_secs(1));
    let (client, server) = wire.into_ends();
    let before = allocated();
    drop(server);
    let freed = before.saturating_sub(allocated());
    drop(client);
    Ok(freed)
}

/// Whether `allocated` sees an allocation.
fn counter_works(allocated: &dyn Fn() -> usize) -> bool {
    let before = allocated();
    let block = std::hint::black_box(vec![1u8; 1 << 20]);
    let during = allocated();
    drop(block);
    during >= before + (1 << 20)
}

/// The memory benchmark as a report.
pub fn run(connections: usize, allocated: &dyn Fn() -> usize) -> Result<Report, BenchError> {
    let o = measure(connections, allocated)?;
    let mut report = Report::new(
        "memory",
        &[
            "manager",
            "connections",
            "manager bytes",
            "bytes/connection (avg)",
            "bytes/connection (marginal)",
        ],
    );
    let bytes = |b: usize| Cell::num(b as f64, 0);
    let above_empty = |b: usize| Cell::num(b.saturating_sub(o.empty_manager) as f64, 0);
    report.rows.push(vec![
        Cell::text("empty"),
        Cell::num(0.0, 0),
        bytes(o.empty_manager),
        Cell::Missing,
        Cell::Missing,
    ]);
    report.rows.push(vec![
        Cell::text("peer (outbound, idle)"),
        Cell::num(1.0, 0),
        bytes(o.peer),
        above_empty(o.peer),
        Cell::Missing,
    ]);
    report.rows.push(vec![
        Cell::text("hub (inbound, idle)"),
        Cell::num(1.0, 0),
        bytes(o.hub_one),
        above_empty(o.hub_one),
        Cell::Missing,
    ]);
    report.rows.push(vec![
        Cell::text("hub (inbound, idle)"),
        Cell::num(o.connections as f64, 0),
        bytes(o.hub),
        Cell::num(o.per_connection_hub(), 0),
        Cell::num(o.marginal_per_connection(), 0),
    ]);
    report.rows.push(vec![
        Cell::text("bare quinn-proto server"),
        Cell::num(0.0, 0),
        bytes(o.quinn[0]),
        Cell::Missing,
        Cell::Missing,
    ]);
    report.rows.push(vec![
        Cell::text("bare quinn-proto server"),
        Cell::num(1.0, 0),
        bytes(o.quinn[1]),
        Cell::num(o.quinn[1].saturating_sub(o.quinn[0]) as f64, 0),
        Cell::Missing,
    ]);
    report.rows.push(vec![
        Cell::text("bare quinn-proto server"),
        Cell::num(o.connections as f64, 0),
        bytes(o.quinn[2]),
        Cell::num(o.quinn_per_connection(), 0),
        Cell::num(o.quinn_marginal_per_connection(), 0),
    ]);
    report.notes.push(format!(
        "hub / bare quinn-proto server, marginal bytes per connection: {:.2}",
        o.marginal_per_connection() / o.quinn_marginal_per_connection().max(1.0)
    ));
    report.notes.push(
        "bytes a manager frees when dropped; avg: above an empty manager, per connection; \
         marginal: what each connection after the first adds (the first also allocates \
         endpoint-wide state once); simulated connections, established and idle (default \
         config: keep-alive 5 s), measured 1 s after the last handshake"
            .into(),
    );
    Ok(report)
}
