//! Helpers shared by the simulation tests: identities, configurations, and event queries over
//! `quicpeer::sim::Network`.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use quicpeer::sim::{Network, NodeId};
use quicpeer::{Cause, Config, ConnId, Event, Identity, PeerId};

/// The Ed25519 identity whose secret is `n` repeated.
pub fn identity(n: u8) -> Identity {
    Identity::from_ed25519_seed([n; 32])
}

/// The default configuration with a keep-alive and idle timeout chosen by the test.
pub fn config(keep_alive: Duration, idle: Duration) -> Config {
    let mut config = Config::default();
    config.keep_alive = Some(keep_alive);
    config.idle_timeout = idle;
    config
}

/// Installs a tracing subscriber once, for `RUST_LOG=...` debugging of a failing test.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// The first event of `node` after `since` that `pick` maps to something.
pub fn find<T>(
    net: &Network,
    node: NodeId,
    since: Instant,
    mut pick: impl FnMut(&Event) -> Option<T>,
) -> Option<(Instant, T)> {
    net.events(node)
        .iter()
        .filter(|(at, _)| *at >= since)
        .find_map(|(at, e)| pick(e).map(|t| (*at, t)))
}

/// The connection `Connected` to `peer` after `since`, with its `replaced` field.
pub fn connected(
    net: &Network,
    node: NodeId,
    peer: PeerId,
    since: Instant,
) -> Option<(Instant, (ConnId, Option<ConnId>))> {
    find(net, node, since, |e| match e {
        Event::Connected {
            peer: p,
            conn,
            replaced,
            ..
        } if *p == peer => Some((*conn, *replaced)),
        _ => None,
    })
}

/// The cause of the loss of `conn` after `since`.
pub fn lost(net: &Network, node: NodeId, conn: ConnId, since: Instant) -> Option<(Instant, Cause)> {
    find(net, node, since, |e| match e {
        Event::ConnectionLost { conn: c, cause, .. } if *c == conn => Some(cause.clone()),
        _ => None,
    })
}

/// Connects `a` to `b` and returns `a`'s connection, panicking if it takes longer than 1 s.
pub fn connect(net: &mut Network, a: NodeId, b: NodeId) -> ConnId {
    let since = net.now();
    let peer = net.peer_id(b);
    net.dial(a, b);
    assert!(
        net.run_until(Duration::from_secs(1), |n| connected(n, a, peer, since)
            .is_some()),
        "no connection within 1 s"
    );
    let (_, (conn, _)) = connected(net, a, peer, since).expect("connected");
    // Let the server side finish too.
    net.run_for(Duration::from_millis(50));
    conn
}

/// Writes `data` on a fresh stream of `conn` and finishes it.
pub fn send_message(net: &mut Network, node: NodeId, conn: ConnId, data: &[u8]) {
    let manager = net.manager(node).expect("node is up");
    if let Ok(stream) = manager.open_stream(conn) {
        let _ = manager.stream_write(stream, data);
        let _ = manager.stream_finish(stream);
    }
}

/// Formats a duration in milliseconds with three decimals, for printed figures.
pub fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

/// Marsaglia's xorshift64 (shifts 13, 7, 17) from `seed` (not 0): a fixed stream of
/// pseudo-random numbers for tests that feed garbage, the same on every run.
pub fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut state = seed;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}
