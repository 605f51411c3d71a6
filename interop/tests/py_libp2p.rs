//! quicpeer against py-libp2p 0.8.1 with its QUIC transport on aioquic 1.7.2
//! (`interop/py/peer.py`, a Python child process), both directions, and restarts on each side,
//! over loopback.
//!
//! The first test to run creates `interop/py/.venv` and installs the pinned requirements
//! (`pip install --require-hashes -r requirements.txt`) when they are not installed yet. Every
//! wait is bounded (`support::STEP`).

mod support;

use std::time::{Duration, Instant};

use quicpeer::Direction;
use quicpeer_interop::quicpeer_node::{NodeConfig, QuicpeerNode};
use quicpeer_interop::{py, PeerEvent};
use support::*;

/// Python starts slowly (py-libp2p imports a lot): the first `listening` line may take a while.
const PY: ChildImpl = ChildImpl {
    name: "py-libp2p",
    spawn: py::spawn,
    start: Duration::from_secs(30),
};

#[test]
fn quicpeer_dials_and_pings_a_py_libp2p_listener() {
    init_tracing();
    let mut remote = PY.listener(0);
    let (id, addr) = PY.listening(&mut remote);
    let remote_id = peer_id(&id);
    assert_eq!(
        remote_id,
        quicpeer::Identity::from_ed25519_seed([2; 32]).peer_id(),
        "the same seed gives the same PeerId in both implementations"
    );

    let mut node = QuicpeerNode::spawn(NodeConfig::new(1)).unwrap();
    let start = Instant::now();
    node.dial(&addr).unwrap();
    // quicpeer verified the listener's certificate against the dialed /p2p/ id...
    let (_, conn, direction, _) = connected(&mut node, remote_id, start)
        .unwrap_or_else(|| panic!("no connection:\n{}", report(&mut node, start)));
    assert_eq!(direction, Direction::Outbound);
    // ...its pings get answers...
    let (_, ping_conn, rtt) = pinged(&mut node, remote_id, start).unwrap_or_else(|| {
        panic!(
            "no ping answer:\n{}\n{}",
            report(&mut node, start),
            remote.report()
        )
    });
    assert_eq!(ping_conn, conn);
    // ...and py-libp2p saw quicpeer's PeerId and got its own pings answered by quicpeer.
    let quicpeer_id = node.peer_id().to_string();
    PY.saw_quicpeer(&mut remote, &quicpeer_id, "inbound", start);
    let (_, py_rtt) = remote_pinged(&mut remote, &quicpeer_id, start)
        .unwrap_or_else(|| panic!("quicpeer did not answer py's ping:\n{}", remote.report()));
    println!(
        "quicpeer -> py-libp2p: connected and pinged, RTT {} (py's pings of quicpeer: {py_rtt:.1} ms)",
        ms(rtt)
    );
}

#[test]
fn py_libp2p_dials_and_pings_a_quicpeer_listener() {
    init_tracing();
    let rtt = PY.dials_and_pings_quicpeer();
    println!("py-libp2p -> quicpeer: connected and pinged, RTT {rtt:.1} ms");
}

/// quicpeer restarts (same identity, same port) under a py-libp2p dialer that pings it every
/// 200 ms. The restarted quicpeer answers the stale connection's packets with stateless resets,
/// as it does for rust-libp2p and js-libp2p, but aioquic (1.7.2) never checks a packet it
/// cannot decrypt against the peer's reset tokens (RFC 9000 section 10.3.1): py-libp2p keeps
/// the stale connection, its pings fail, and it lets go only at the idle timeout (the lower of
/// its own 600 s and quicpeer's 10 s), then dials again. The test holds that behaviour so that
/// an aioquic that learns resets shows up here (and docs/interop.md gets updated).
#[test]
fn a_restarted_quicpeer_listener_is_dropped_by_the_py_libp2p_dialer_at_its_idle_timeout() {
    init_tracing();
    let QuicpeerRestarted {
        mut node,
        mut remote,
        remote_id: id,
        quicpeer_id,
        crashed,
        up,
    } = PY.dialer_under_restarting_quicpeer();

    // The stale connection ends at py's idle timer, not at the first reset: bound the wait by
    // the idle timeout plus the usual step.
    let (failed_at, _) = remote
        .events
        .wait_for(crashed, STEP, |e| match e {
            PeerEvent::PingFailed { .. } => Some(()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("py's pings did not fail:\n{}", remote.report()));
    let (closed_at, closed) = remote
        .events
        .wait_for(crashed, IDLE_TIMEOUT + STEP, |e| match e {
            PeerEvent::QuicClosed { .. } => Some(e.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("py kept the stale connection:\n{}", remote.report()));
    let PeerEvent::QuicClosed { reason, .. } = &closed else {
        unreachable!("picked a QuicClosed")
    };
    assert!(
        reason.starts_with("Idle timeout"),
        "py-libp2p closed the stale connection with {reason:?}, not at its idle timeout: if \
         aioquic now acts on stateless resets, update this test and docs/interop.md:\n{}",
        remote.report()
    );
    let (pinged_at, _) = remote_pinged(&mut remote, &quicpeer_id, closed_at)
        .unwrap_or_else(|| panic!("py did not ping again:\n{}", remote.report()));
    let (reconnected_at, _, direction, _) = connected(&mut node, peer_id(&id), closed_at)
        .unwrap_or_else(|| panic!("no new connection:\n{}", report(&mut node, up)));
    assert_eq!(direction, Direction::Inbound);
    println!(
        "restart A/py (quicpeer listener restarts under a py-libp2p dialer): back up after {}; \
         py's first ping failed after {} (5 s ping timeout), py closed the stale connection \
         ({reason:?}) after {}, reconnected after {}, pinged after {} (all from the crash)",
        ms(up - crashed),
        ms(failed_at - crashed),
        ms(closed_at - crashed),
        ms(reconnected_at - crashed),
        ms(pinged_at - crashed),
    );
}

/// A py-libp2p listener that quicpeer is connected to is killed and started again (same
/// identity, same port). quicpeer notices the silence and replaces the connection.
#[test]
fn quicpeer_recovers_from_a_restarted_py_libp2p_listener() {
    init_tracing();
    listener_restarts_under_quicpeer(PY.name, PY.start, |port| PY.listener(port));
}
