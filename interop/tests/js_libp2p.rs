//! quicpeer against js-libp2p 2.10 with `@chainsafe/libp2p-quic` 1.1.8 (`interop/js/peer.mjs`,
//! a Node.js child process), both directions, and restarts on each side, over loopback.
//!
//! The first test to run installs the js dependencies (`npm ci`, from the committed lockfile)
//! when `interop/js/node_modules` is missing. Every wait is bounded (`support::STEP`).

mod support;

use std::time::{Duration, Instant};

use quicpeer::Direction;
use quicpeer_interop::quicpeer_node::{NodeConfig, QuicpeerNode};
use quicpeer_interop::{js, PeerEvent};
use support::*;

/// Node starts slowly (module loading): the first `listening` line may take a while.
const JS: ChildImpl = ChildImpl {
    name: "js-libp2p",
    spawn: js::spawn,
    start: Duration::from_secs(30),
};

#[test]
fn quicpeer_dials_and_pings_a_js_libp2p_listener() {
    init_tracing();
    let mut remote = JS.listener(0);
    let (id, addr) = JS.listening(&mut remote);
    let remote_id = peer_id(&id);
    assert_eq!(
        remote_id,
        quicpeer::Identity::from_ed25519_seed([2; 32]).peer_id()
    );

    let mut node = QuicpeerNode::spawn(NodeConfig::new(1)).unwrap();
    let start = Instant::now();
    node.dial(&addr).unwrap();
    let (_, conn, direction, _) = connected(&mut node, remote_id, start)
        .unwrap_or_else(|| panic!("no connection:\n{}", report(&mut node, start)));
    assert_eq!(direction, Direction::Outbound);
    let (_, ping_conn, rtt) = pinged(&mut node, remote_id, start).unwrap_or_else(|| {
        panic!(
            "no ping answer:\n{}\n{}",
            report(&mut node, start),
            remote.report()
        )
    });
    assert_eq!(ping_conn, conn);
    let quicpeer_id = node.peer_id().to_string();
    JS.saw_quicpeer(&mut remote, &quicpeer_id, "inbound", start);
    println!(
        "quicpeer -> js-libp2p: connected and pinged, RTT {}",
        ms(rtt)
    );
}

#[test]
fn js_libp2p_dials_and_pings_a_quicpeer_listener() {
    init_tracing();
    let rtt = JS.dials_and_pings_quicpeer();
    println!("js-libp2p -> quicpeer: connected and pinged, RTT {rtt:.1} ms");
}

/// quicpeer restarts (same identity, same port) under a js-libp2p dialer that pings it every
/// 200 ms: the restarted quicpeer answers the stale connection with a stateless reset.
#[test]
fn a_restarted_quicpeer_listener_resets_the_js_libp2p_dialer() {
    init_tracing();
    let QuicpeerRestarted {
        mut node,
        mut remote,
        remote_id: id,
        quicpeer_id,
        crashed,
        up,
    } = JS.dialer_under_restarting_quicpeer();

    let (closed_at, reason) = remote
        .events
        .wait_for(crashed, STEP, |e| match e {
            PeerEvent::QuicClosed { .. } => Some(e.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("js kept the stale connection:\n{}", remote.report()));
    assert!(
        reason.is_stateless_reset(),
        "expected a stateless reset, got {reason:?}:\n{}",
        remote.report()
    );
    let detection = closed_at - crashed;
    assert!(
        detection < IDLE_TIMEOUT / 4,
        "the reset took {}",
        ms(detection)
    );
    let (pinged_at, _) = remote_pinged(&mut remote, &quicpeer_id, closed_at)
        .unwrap_or_else(|| panic!("js did not ping again:\n{}", remote.report()));
    let (reconnected_at, _, direction, _) = connected(&mut node, peer_id(&id), up)
        .unwrap_or_else(|| panic!("no new connection:\n{}", report(&mut node, up)));
    assert_eq!(direction, Direction::Inbound);
    println!(
        "restart A/js (quicpeer listener restarts under a js-libp2p dialer): back up after {}; \
         js closed the stale connection ({reason:?}) after {}, reconnected after {}, pinged \
         after {} (all from the crash; js pings every 200 ms)",
        ms(up - crashed),
        ms(detection),
        ms(reconnected_at - crashed),
        ms(pinged_at - crashed),
    );
}

/// A js-libp2p listener that quicpeer is connected to is killed and started again (same
/// identity, same port). It sends no reset; quicpeer notices the silence and replaces the
/// connection.
#[test]
fn quicpeer_recovers_from_a_restarted_js_libp2p_listener() {
    init_tracing();
    listener_restarts_under_quicpeer(JS.name, JS.start, |port| JS.listener(port));
}
