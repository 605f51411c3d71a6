//! The manager's counters, in the deterministic simulation: each scenario of the restart and
//! limit tests is run again and its counters must say what happened.

mod support;

use std::time::Duration;

use quicpeer::manager::{FailureKind, LossKind, RedialReason, Refusal, RestartSignal};
use quicpeer::sim::{Link, Network};
use quicpeer::{Cause, Direction, Metrics};
use support::*;

fn metrics(net: &mut Network, node: quicpeer::sim::NodeId) -> Metrics {
    net.manager(node).expect("node is up").metrics()
}

#[test]
fn a_connection_counts_one_handshake_each_side_and_its_latency() {
    init_tracing();
    let mut net = Network::new(11);
    let config = config(Duration::from_secs(5), Duration::from_secs(10));
    let a = net.add_node("a", identity(1), config.clone());
    let b = net.add_node("b", identity(2), config);
    connect(&mut net, a, b);

    let ma = metrics(&mut net, a);
    let mb = metrics(&mut net, b);
    assert_eq!(ma.handshakes_started.get(Direction::Outbound), 1);
    assert_eq!(ma.handshakes_started.get(Direction::Inbound), 0);
    assert_eq!(ma.handshakes_completed.get(Direction::Outbound), 1);
    assert_eq!(mb.handshakes_started.get(Direction::Inbound), 1);
    assert_eq!(mb.handshakes_completed.get(Direction::Inbound), 1);
    assert_eq!(
        (ma.established, ma.handshaking, ma.peers_connected),
        (1, 0, 1)
    );
    assert_eq!(ma.handshakes_failed.total(), 0);
    assert_eq!(
        ma.handshakes_resumed.total(),
        0,
        "a first connection has no session to resume"
    );
    assert_eq!(ma.connections_lost.total(), 0);
    // The simulator's default link: the handshake takes a round trip or two, well under 1 s,
    // and more than nothing.
    assert_eq!(ma.handshake_latency.count(), 1);
    assert!(ma.handshake_latency.sum() > Duration::ZERO);
    assert!(ma.handshake_latency.quantile_bound(1.0) <= Some(Duration::from_secs(1)));
    assert_eq!(ma.recovery_latency.count(), 0);
}

#[test]
fn a_restart_counts_the_reset_both_ways_the_loss_the_redial_and_the_recovery() {
    init_tracing();
    let mut net = Network::new(12);
    net.set_default_link(Link::with_latency(Duration::from_millis(5)));
    let config = config(Duration::from_millis(300), Duration::from_secs(10));
    let a = net.add_node("dialer", identity(1), config.clone());
    let b = net.add_node("listener", identity(2), config);
    let old = connect(&mut net, a, b);
    net.run_for(Duration::from_millis(50));
    net.restart(b);
    let restarted = net.now();
    let peer_b = net.peer_id(b);
    let found = net.run_until(Duration::from_secs(5), |n| {
        connected(n, a, peer_b, restarted).is_some_and(|(_, (_, replaced))| replaced == Some(old))
    });
    assert!(found, "no reconnect");
    let (lost_at, cause) = lost(&net, a, old, restarted).expect("lost");
    assert_eq!(cause, Cause::PeerRestarted);
    let (reconnected_at, _) = connected(&net, a, peer_b, restarted).expect("reconnected");

    let ma = metrics(&mut net, a);
    assert_eq!(ma.stateless_resets_received, 1);
    assert_eq!(ma.restarts_detected.get(RestartSignal::StatelessReset), 1);
    assert_eq!(ma.restarts_detected.total(), 1);
    assert_eq!(ma.connections_lost.get(LossKind::PeerRestarted), 1);
    assert_eq!(ma.connections_lost.total(), 1);
    assert_eq!(ma.redials.get(RedialReason::Reconnect), 1);
    assert_eq!(ma.handshakes_completed.get(Direction::Outbound), 2);
    // The fresh connection resumed the first one's TLS session: the restarted node's ticket
    // keys derive from its identity.
    assert_eq!(ma.handshakes_resumed.get(Direction::Outbound), 1);
    // The recovery is measured from the loss to the fresh connection.
    assert_eq!(ma.recovery_latency.count(), 1);
    assert_eq!(ma.recovery_latency.sum(), reconnected_at - lost_at);
    assert_eq!(ma.established, 1);

    // The restarted node sent the reset, and counts the new connection (once its side of the
    // handshake completes) as its first.
    net.run_for(Duration::from_millis(50));
    let mb = metrics(&mut net, b);
    assert_eq!(mb.stateless_resets_sent, 1);
    assert_eq!(mb.handshakes_completed.get(Direction::Inbound), 1);
    assert_eq!(mb.handshakes_resumed.get(Direction::Inbound), 1);
    assert_eq!(mb.connections_lost.total(), 0);
}

#[test]
fn a_restart_on_a_new_port_counts_as_an_epoch() {
    init_tracing();
    let mut net = Network::new(13);
    net.set_default_link(Link::with_latency(Duration::from_millis(5)));
    let config = config(Duration::from_secs(5), Duration::from_secs(30));
    let a = net.add_node("a", identity(1), config.clone());
    let b = net.add_node("b", identity(2), config);
    // b dialed a: after its restart on another port it dials a again, as a new incarnation.
    let old = connect(&mut net, b, a);
    net.run_for(Duration::from_millis(50));
    net.restart_on_new_port(b);
    let since = net.now();
    net.dial(b, a);
    let found = net.run_until(Duration::from_secs(2), |n| lost(n, a, old, since).is_some());
    assert!(found, "old connection not replaced");
    assert_eq!(
        lost(&net, a, old, since).map(|l| l.1),
        Some(Cause::PeerRestarted)
    );
    let ma = metrics(&mut net, a);
    assert_eq!(ma.restarts_detected.get(RestartSignal::Epoch), 1);
    assert_eq!(ma.restarts_detected.get(RestartSignal::StatelessReset), 0);
    assert_eq!(ma.connections_lost.get(LossKind::PeerRestarted), 1);
    assert_eq!(ma.handshakes_completed.get(Direction::Inbound), 2);
    assert_eq!(ma.established, 1);
}

#[test]
fn refusals_and_failed_handshakes_are_counted_by_limit_and_cause() {
    init_tracing();
    let mut net = Network::new(14);
    let mut listener = config(Duration::from_secs(5), Duration::from_secs(10));
    listener.limits.max_connections = 1;
    let client = config(Duration::from_secs(5), Duration::from_secs(10));
    let server = net.add_node("server", identity(1), listener);
    let a = net.add_node("a", identity(2), client.clone());
    let b = net.add_node("b", identity(3), client);
    connect(&mut net, a, server);
    // The server is full: b is refused.
    let since = net.now();
    net.dial(b, server);
    net.run_for(Duration::from_secs(1));
    let ms = metrics(&mut net, server);
    assert!(ms.refusals.get(Refusal::MaxConnections) >= 1);
    assert_eq!(ms.handshakes_started.get(Direction::Inbound), 1);
    let mb = metrics(&mut net, b);
    assert!(mb.handshakes_failed.get(FailureKind::Refused) >= 1);
    assert_eq!(mb.handshakes_completed.total(), 0);
    assert!(find(&net, b, since, |e| match e {
        quicpeer::Event::DialFailed { .. } => Some(()),
        _ => None,
    })
    .is_some());
}

#[test]
fn a_silent_peer_counts_a_suspicion_and_its_redial() {
    init_tracing();
    let mut net = Network::new(15);
    net.set_default_link(Link::with_latency(Duration::from_millis(5)));
    let config = config(Duration::from_millis(200), Duration::from_secs(30));
    let a = net.add_node("a", identity(1), config.clone());
    let b = net.add_node("b", identity(2), config);
    connect(&mut net, a, b);
    net.run_for(Duration::from_millis(50));
    // b vanishes without a word: a's keep-alives go unanswered.
    net.stop(b);
    net.run_for(Duration::from_secs(2));
    let ma = metrics(&mut net, a);
    assert_eq!(ma.restarts_detected.get(RestartSignal::Suspicion), 1);
    assert!(ma.redials.get(RedialReason::Suspicion) >= 1);
    assert_eq!(ma.recovery_latency.count(), 0, "not recovered yet");
    // b comes back (a new incarnation at the same address): a's race finds it.
    net.start(b);
    let peer_b = net.peer_id(b);
    let since = net.now();
    assert!(
        net.run_until(Duration::from_secs(10), |n| connected(n, a, peer_b, since)
            .is_some())
    );
    let ma = metrics(&mut net, a);
    assert_eq!(ma.recovery_latency.count(), 1);
    // Cut off from the first unanswered keep-alive until the fresh connection, at least the
    // two seconds b was away.
    assert!(ma.recovery_latency.sum() >= Duration::from_secs(2));
}
