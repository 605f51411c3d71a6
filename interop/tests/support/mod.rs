//! Helpers shared by the interop tests: waits on a quicpeer node's events, and figures.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use quicpeer::{Cause, ConnId, Event, HostEvent, PeerId};
use quicpeer_interop::quicpeer_node::QuicpeerNode;

/// The bound on every single wait of the tests. Nothing here takes more than a fraction of it
/// when things work; 10 s is also the idle timeout, so no wait can pass by timing out.
pub const STEP: Duration = Duration::from_secs(10);

/// rust-libp2p's and js-libp2p's idle timeout: the recovery time without quicpeer's help.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Installs a tracing subscriber once, for `RUST_LOG=...` debugging of a failing test.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A PeerId of another libp2p implementation, as quicpeer's type.
pub fn peer_id(text: &str) -> PeerId {
    text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// The `/udp/<port>` of a multiaddr.
pub fn udp_port(addr: &str) -> u16 {
    let (socket, _) = quicpeer::address::parse_str(addr).unwrap_or_else(|e| panic!("{addr}: {e}"));
    socket.port()
}

/// Waits for a connection to `peer` since `since`: (when, connection, direction, replaced).
pub fn connected(
    node: &mut QuicpeerNode,
    peer: PeerId,
    since: Instant,
) -> Option<(Instant, ConnId, quicpeer::Direction, Option<ConnId>)> {
    let (at, (conn, direction, replaced)) = node.events.wait_for(since, STEP, |e| match e {
        HostEvent::Manager(Event::Connected {
            peer: p,
            conn,
            direction,
            replaced,
            ..
        }) if *p == peer => Some((*conn, *direction, *replaced)),
        _ => None,
    })?;
    Some((at, conn, direction, replaced))
}

/// Waits for a ping answered by `peer` since `since`: (when, connection, RTT).
pub fn pinged(
    node: &mut QuicpeerNode,
    peer: PeerId,
    since: Instant,
) -> Option<(Instant, ConnId, Duration)> {
    let (at, (conn, rtt)) = node.events.wait_for(since, STEP, |e| match e {
        HostEvent::PingResult { peer: p, conn, rtt } if *p == peer => Some((*conn, *rtt)),
        _ => None,
    })?;
    Some((at, conn, rtt))
}

/// Waits for `conn` to be reported unresponsive.
pub fn unresponsive(node: &mut QuicpeerNode, conn: ConnId, since: Instant) -> Option<Instant> {
    let (at, ()) = node.events.wait_for(since, STEP, |e| match e {
        HostEvent::Manager(Event::Unresponsive { conn: c, .. }) if *c == conn => Some(()),
        _ => None,
    })?;
    Some(at)
}

/// Waits for the loss of `conn`: (when, cause).
pub fn lost(node: &mut QuicpeerNode, conn: ConnId, since: Instant) -> Option<(Instant, Cause)> {
    node.events.wait_for(since, STEP, |e| match e {
        HostEvent::Manager(Event::ConnectionLost { conn: c, cause, .. }) if *c == conn => {
            Some(cause.clone())
        }
        _ => None,
    })
}

/// Everything a node reported, for a failing assertion.
pub fn report(node: &mut QuicpeerNode, t0: Instant) -> String {
    node.events.drain();
    node.events
        .seen()
        .iter()
        .map(|s| {
            format!(
                "  +{} {:?}",
                ms(s.at.saturating_duration_since(t0)),
                s.event
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Milliseconds with one decimal.
pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}
