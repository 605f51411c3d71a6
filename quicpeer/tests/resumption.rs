//! TLS session resumption through the manager, in the deterministic simulation: a reconnect to
//! a restarted peer resumes the session its predecessor issued, the resumed connection names
//! the right peer and carries data, and `Config::tls_resumption` turns it off.
//! (The refusals, ticket by ticket, are in `identity_handshake.rs`.)

mod support;

use std::time::Duration;

use quicpeer::sim::{Link, Network, NodeId};
use quicpeer::{Cause, Config, Direction, Event};
use support::*;

fn restart_and_reconnect(config: Config, seed: u64) -> (Network, NodeId, NodeId) {
    init_tracing();
    let mut net = Network::new(seed);
    net.set_default_link(Link::with_latency(Duration::from_millis(5)));
    let a = net.add_node("dialer", identity(1), config.clone());
    let b = net.add_node("listener", identity(2), config);
    let old = connect(&mut net, a, b);
    net.run_for(Duration::from_millis(50));
    net.restart(b);
    let since = net.now();
    let peer_b = net.peer_id(b);
    assert!(net.run_until(Duration::from_secs(5), |n| {
        connected(n, a, peer_b, since).is_some_and(|(_, (_, replaced))| replaced == Some(old))
    }));
    assert_eq!(
        lost(&net, a, old, since).map(|l| l.1),
        Some(Cause::PeerRestarted)
    );
    net.run_for(Duration::from_millis(50));
    (net, a, b)
}

#[test]
fn a_reconnect_to_a_restarted_peer_resumes_and_carries_data() {
    let (mut net, a, b) = restart_and_reconnect(
        config(Duration::from_millis(300), Duration::from_secs(10)),
        21,
    );
    let ma = net.manager(a).expect("up").metrics();
    let mb = net.manager(b).expect("up").metrics();
    assert_eq!(ma.handshakes_resumed.get(Direction::Outbound), 1);
    assert_eq!(mb.handshakes_resumed.get(Direction::Inbound), 1);
    // The restarted node knows who connected without a certificate: the PeerId came back
    // from the session its predecessor sealed.
    let peer_a = net.peer_id(a);
    let (_, (conn_b, _)) = connected(&net, b, peer_a, net.now() - Duration::from_secs(1))
        .expect("the listener announced the dialer");
    assert_eq!(net.manager(b).and_then(|m| m.peer_of(conn_b)), Some(peer_a));
    // And the resumed connection carries a stream.
    let peer_b = net.peer_id(b);
    let conn = net
        .manager(a)
        .and_then(|m| m.connection(&peer_b))
        .expect("a connection to b");
    let since = net.now();
    send_message(&mut net, a, conn, b"after the restart");
    net.run_for(Duration::from_millis(50));
    assert!(find(&net, b, since, |e| match e {
        Event::StreamOpened { peer, .. } if *peer == peer_a => Some(()),
        _ => None,
    })
    .is_some());
}

#[test]
fn resumption_off_gives_full_handshakes() {
    let mut cfg = config(Duration::from_millis(300), Duration::from_secs(10));
    cfg.tls_resumption = false;
    let (mut net, a, b) = restart_and_reconnect(cfg, 22);
    let ma = net.manager(a).expect("up").metrics();
    let mb = net.manager(b).expect("up").metrics();
    assert_eq!(ma.handshakes_resumed.total(), 0);
    assert_eq!(mb.handshakes_resumed.total(), 0);
    assert_eq!(ma.handshakes_completed.get(Direction::Outbound), 2);
}
