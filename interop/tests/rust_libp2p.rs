//! quicpeer against rust-libp2p 0.57 (QUIC + ping), both directions, and restarts on each
//! side, over loopback. Every wait is bounded (`support::STEP`); the restart tests print the
//! times they measured (`cargo test -p quicpeer-interop --test rust_libp2p -- --nocapture`).

mod support;

use std::process::Command;
use std::time::Instant;

use quicpeer::{Cause, Direction};
use quicpeer_interop::quicpeer_node::{NodeConfig, QuicpeerNode};
use quicpeer_interop::{ChildPeer, Libp2pConfig, Libp2pPeer, PeerEvent};
use support::*;

fn loopback() -> libp2p::Multiaddr {
    "/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()
}

/// `libp2p-peer listen --seed 2` on `port` (0: any), as a process of its own.
fn libp2p_listener_process(port: u16) -> ChildPeer {
    let mut command = Command::new(env!("CARGO_BIN_EXE_libp2p-peer"));
    command.args([
        "listen",
        "--seed",
        "2",
        "--listen",
        &format!("/ip4/127.0.0.1/udp/{port}/quic-v1"),
    ]);
    ChildPeer::spawn("libp2p-peer", command).unwrap()
}

#[test]
fn quicpeer_dials_and_pings_a_rust_libp2p_listener() {
    init_tracing();
    let mut remote = Libp2pPeer::spawn(Libp2pConfig::listener(2, loopback())).unwrap();
    let addr = remote.listen_addr(STEP).expect("rust-libp2p listens");
    let remote_id = peer_id(&remote.peer_id().to_string());
    assert_eq!(
        remote_id,
        quicpeer::Identity::from_ed25519_seed([2; 32]).peer_id(),
        "the same seed gives the same PeerId in both implementations"
    );

    let mut node = QuicpeerNode::spawn(NodeConfig::new(1)).unwrap();
    let start = Instant::now();
    node.dial(&addr.to_string()).unwrap();

    // quicpeer verified the listener's certificate against the dialed /p2p/ id...
    let (_, conn, direction, _) = connected(&mut node, remote_id, start)
        .unwrap_or_else(|| panic!("no connection:\n{}", report(&mut node, start)));
    assert_eq!(direction, Direction::Outbound);
    // ...its pings get answers...
    let (_, ping_conn, rtt) = pinged(&mut node, remote_id, start)
        .unwrap_or_else(|| panic!("no ping answer:\n{}", report(&mut node, start)));
    assert_eq!(ping_conn, conn);
    // ...and rust-libp2p saw quicpeer's PeerId and got its own pings answered by quicpeer.
    let quicpeer_id = node.peer_id().to_string();
    remote
        .events
        .wait_for(start, STEP, |e| match e {
            PeerEvent::Connected {
                peer, direction, ..
            } if *peer == quicpeer_id => {
                assert_eq!(direction, "inbound");
                Some(())
            }
            _ => None,
        })
        .expect("rust-libp2p saw quicpeer's PeerId");
    remote
        .events
        .wait_for(start, STEP, |e| match e {
            PeerEvent::Ping { peer, .. } if *peer == quicpeer_id => Some(()),
            _ => None,
        })
        .expect("quicpeer answered rust-libp2p's ping");
    println!(
        "quicpeer -> rust-libp2p: connected and pinged, RTT {}",
        ms(rtt)
    );
}

#[test]
fn a_dial_naming_the_wrong_peer_fails_with_a_mismatch() {
    init_tracing();
    let mut remote = Libp2pPeer::spawn(Libp2pConfig::listener(2, loopback())).unwrap();
    let addr = remote.listen_addr(STEP).expect("rust-libp2p listens");
    let port = udp_port(&addr.to_string());
    let wrong = quicpeer::Identity::from_ed25519_seed([9; 32]).peer_id();

    let mut node = QuicpeerNode::spawn(NodeConfig::new(1)).unwrap();
    let start = Instant::now();
    node.dial(&format!("/ip4/127.0.0.1/udp/{port}/quic-v1/p2p/{wrong}"))
        .unwrap();
    let (_, errors) =
        node.events
            .wait_for(start, STEP, |e| match e {
                quicpeer::HostEvent::Manager(quicpeer::Event::DialFailed {
                    peer, errors, ..
                }) if *peer == wrong => Some(errors.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no dial failure:\n{}", report(&mut node, start)));
    let actual = peer_id(&remote.peer_id().to_string());
    assert!(
        errors.iter().any(|(_, cause)| matches!(
            cause,
            Cause::PeerIdMismatch { expected, actual: a } if *expected == wrong && *a == actual
        )),
        "{errors:?}"
    );
}

#[test]
fn rust_libp2p_dials_and_pings_a_quicpeer_listener() {
    init_tracing();
    let mut node = QuicpeerNode::spawn(NodeConfig::new(1)).unwrap();
    let start = Instant::now();
    let mut remote = Libp2pPeer::spawn(Libp2pConfig::dialer(
        3,
        node.multiaddr().to_string().parse().unwrap(),
    ))
    .unwrap();
    let quicpeer_id = node.peer_id().to_string();

    // rust-libp2p verified quicpeer's certificate against the dialed /p2p/ id, and quicpeer
    // answers its pings.
    let (_, rtt) = remote
        .events
        .wait_for(start, STEP, |e| match e {
            PeerEvent::Ping { peer, rtt_ms } if *peer == quicpeer_id => Some(*rtt_ms),
            _ => None,
        })
        .expect("quicpeer answered rust-libp2p's ping");
    let (_, _, direction, _) = connected(&mut node, peer_id(&remote.peer_id().to_string()), start)
        .unwrap_or_else(|| panic!("no connection:\n{}", report(&mut node, start)));
    assert_eq!(direction, Direction::Inbound);
    println!("rust-libp2p -> quicpeer: connected and pinged, RTT {rtt:.1} ms");
}

/// Restart case A: quicpeer restarts (same identity, same port) under a rust-libp2p dialer.
/// The restarted quicpeer answers the stale connection's next packet with a stateless reset,
/// which rust-libp2p reports at once instead of waiting out its 10 s idle timeout.
#[test]
fn a_restarted_quicpeer_listener_resets_the_rust_libp2p_dialer() {
    init_tracing();
    let node = QuicpeerNode::spawn(NodeConfig::new(1)).unwrap();
    let bind = node.local_addr();
    let quicpeer_id = node.peer_id().to_string();
    let mut remote = Libp2pPeer::spawn(Libp2pConfig::dialer(
        3,
        node.multiaddr().to_string().parse().unwrap(),
    ))
    .unwrap();
    let start = Instant::now();
    remote
        .events
        .wait_for(start, STEP, |e| match e {
            PeerEvent::Ping { peer, .. } if *peer == quicpeer_id => Some(()),
            _ => None,
        })
        .expect("connected and pinging before the restart");

    let crashed = Instant::now();
    node.crash();
    let mut node = QuicpeerNode::spawn(NodeConfig {
        bind,
        ..NodeConfig::new(1)
    })
    .unwrap();
    let up = Instant::now();

    let (closed_at, closed) = remote
        .events
        .wait_for(crashed, STEP, |e| {
            matches!(e, PeerEvent::Closed { .. }).then(|| e.clone())
        })
        .expect("rust-libp2p lost the stale connection");
    assert!(
        closed.is_stateless_reset(),
        "expected a stateless reset, got {closed:?}"
    );
    let detection = closed_at - crashed;
    assert!(
        detection < IDLE_TIMEOUT / 4,
        "the reset took {}",
        ms(detection)
    );
    let (pinged_at, ()) = remote
        .events
        .wait_for(closed_at, STEP, |e| match e {
            PeerEvent::Ping { peer, .. } if *peer == quicpeer_id => Some(()),
            _ => None,
        })
        .expect("rust-libp2p pings the restarted quicpeer on a new connection");
    let remote_id = peer_id(&remote.peer_id().to_string());
    let (reconnected_at, _, direction, _) = connected(&mut node, remote_id, up)
        .unwrap_or_else(|| panic!("no new connection:\n{}", report(&mut node, up)));
    assert_eq!(direction, Direction::Inbound);
    println!(
        "restart A (quicpeer listener restarts under a rust-libp2p dialer): back up after {}; \
         rust-libp2p closed the stale connection ({:?}) after {}, reconnected after {}, \
         pinged after {} (all from the crash; rust-libp2p pings every 200 ms)",
        ms(up - crashed),
        closed_cause(&closed),
        ms(detection),
        ms(reconnected_at - crashed),
        ms(pinged_at - crashed),
    );
}

fn closed_cause(event: &PeerEvent) -> String {
    match event {
        PeerEvent::Closed { cause, .. } => cause.clone().unwrap_or_default(),
        other => format!("{other:?}"),
    }
}

/// Restart case B: a rust-libp2p listener that quicpeer is connected to is killed and started
/// again (same identity, same port). rust-libp2p's connection-ID key is random per process, so
/// the restarted node drops the stale packets without a reset; quicpeer notices the silence
/// (`Unresponsive`), races a fresh dial, and replaces the connection.
#[test]
fn quicpeer_recovers_from_a_restarted_rust_libp2p_listener() {
    init_tracing();
    listener_restarts_under_quicpeer("rust-libp2p", STEP, libp2p_listener_process);
}
