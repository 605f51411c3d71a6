//! The null handshake of feature `fuzzing` (`Config::null_crypto`): what it keeps of TLS (the
//! certificates, the PeerId a dialer expects, restart detection) and that it really leaves the
//! packets in the clear, in the simulation.

mod support;

use std::time::Duration;

use quicpeer::identity::null_crypto::NullCrypto;
use quicpeer::sim::Network;
use quicpeer::{Cause, Config, DialOutcome, Event};
use support::*;

fn null() -> Config {
    null_sharing(&NullCrypto::new())
}

/// A configuration whose null handshake shares `crypto`'s memory of checked certificates.
fn null_sharing(crypto: &NullCrypto) -> Config {
    let mut config = config(Duration::from_secs(1), Duration::from_secs(10));
    config.null_crypto = Some(crypto.clone());
    config
}

#[test]
fn null_handshake_verifies_both_peer_ids_and_carries_stream_data_in_the_clear() {
    let mut net = Network::new(1);
    net.capture_payloads = true;
    let a = net.add_node("a", identity(1), null());
    let b = net.add_node("b", identity(2), null());
    let (peer_a, peer_b) = (net.peer_id(a), net.peer_id(b));
    let start = net.now();
    let conn = connect(&mut net, a, b);
    assert!(
        connected(&net, b, peer_a, start).is_some(),
        "b saw a's PeerId"
    );
    assert_eq!(
        net.manager(a).and_then(|m| m.connection(&peer_b)),
        Some(conn)
    );

    let message = b"a message nobody encrypted";
    send_message(&mut net, a, conn, message);
    net.run_for(Duration::from_millis(100));
    let clear = net
        .captured()
        .iter()
        .any(|c| c.data.windows(message.len()).any(|w| w == message));
    assert!(clear, "the stream's bytes travel in the clear");
}

#[test]
fn null_handshake_refuses_a_peer_that_is_not_the_expected_one() {
    // Once with fresh memories, once after the certificate was checked and remembered: the
    // PeerId check does not depend on the memory.
    for remembered in [false, true] {
        let shared = NullCrypto::new();
        let mut net = Network::new(2);
        let a = net.add_node("a", identity(1), null_sharing(&shared));
        let b = net.add_node("b", identity(2), null_sharing(&shared));
        if remembered {
            connect(&mut net, a, b);
        }
        let (now, addr_b) = (net.now(), net.addr(b));
        let someone_else = identity(3).peer_id();
        let outcome = net
            .manager(a)
            .expect("up")
            .dial(now, someone_else, [addr_b]);
        assert_eq!(outcome, Ok(DialOutcome::Started));
        net.run_for(Duration::from_secs(1));
        let errors = find(&net, a, now, |e| match e {
            Event::DialFailed { errors, .. } => Some(errors.clone()),
            _ => None,
        })
        .map(|(_, errors)| errors)
        .expect("the dial failed");
        assert!(
            errors.iter().any(|(_, cause)| matches!(
                cause,
                Cause::PeerIdMismatch { expected, actual }
                    if *expected == someone_else && *actual == net.peer_id(b)
            )),
            "remembered: {remembered}: {errors:?}"
        );
    }
}

#[test]
fn a_restarted_null_peer_is_detected_by_its_stateless_reset() {
    let mut net = Network::new(3);
    let a = net.add_node("a", identity(1), null());
    let b = net.add_node("b", identity(2), null());
    let conn = connect(&mut net, a, b);
    let since = net.now();
    net.restart(b);
    assert!(
        net.run_until(Duration::from_secs(3), |n| lost(n, a, conn, since)
            .is_some())
    );
    let (_, cause) = lost(&net, a, conn, since).expect("lost");
    assert_eq!(cause, Cause::PeerRestarted);
}

#[test]
fn a_null_peer_and_a_tls_peer_do_not_connect() {
    let mut net = Network::new(4);
    let a = net.add_node("a", identity(1), null());
    let b = net.add_node(
        "b",
        identity(2),
        config(Duration::from_secs(1), Duration::from_secs(10)),
    );
    let (peer_a, peer_b, since) = (net.peer_id(a), net.peer_id(b), net.now());
    net.dial(a, b);
    net.dial(b, a);
    net.run_for(Duration::from_secs(8));
    assert!(connected(&net, a, peer_b, since).is_none());
    assert!(connected(&net, b, peer_a, since).is_none());
}
