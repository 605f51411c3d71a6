//! Restart detection and fresh reconnects, in the deterministic simulation.
//!
//! Each test builds a small `sim::Network`, restarts a node (its state dropped, its identity
//! and address kept) and asserts when and how the other side noticed and recovered. The
//! figures each test prints are simulated time, so they are the same on every machine.

mod support;

use std::time::{Duration, Instant};

use quicpeer::sim::{Link, Network, NodeId};
use quicpeer::{Cause, ConnId, Event, KeyMode};
use support::*;

const LATENCY: Duration = Duration::from_millis(5);
const RTT: Duration = Duration::from_millis(10);

fn pair(seed: u64, keep_alive: Duration, idle: Duration) -> (Network, NodeId, NodeId) {
    init_tracing();
    let mut net = Network::new(seed);
    let a = net.add_node("dialer", identity(1), config(keep_alive, idle));
    let b = net.add_node("listener", identity(2), config(keep_alive, idle));
    (net, a, b)
}

/// Sends a message on `conn` every 20 ms until it is lost, for at most `limit`.
fn send_until_lost(net: &mut Network, a: NodeId, conn: ConnId, since: Instant, limit: Duration) {
    let deadline = net.now() + limit;
    while net.now() < deadline && lost(net, a, conn, since).is_none() {
        send_message(net, a, conn, b"hello");
        net.run_for(Duration::from_millis(20));
    }
}

fn wait_reconnected(
    net: &mut Network,
    a: NodeId,
    b: NodeId,
    old: ConnId,
    since: Instant,
) -> (Instant, ConnId) {
    let peer = net.peer_id(b);
    let found = net.run_until(Duration::from_secs(30), |n| {
        connected(n, a, peer, since).is_some_and(|(_, (_, replaced))| replaced == Some(old))
    });
    assert!(found, "no reconnect replacing {old}");
    let (at, (conn, _)) = connected(net, a, peer, since).expect("reconnected");
    (at, conn)
}

#[test]
fn restart_while_sending_is_detected_within_one_rtt_and_reconnected_within_one_handshake() {
    let (mut net, a, b) = pair(1, Duration::from_secs(5), Duration::from_secs(10));
    let old = connect(&mut net, a, b);
    for _ in 0..3 {
        send_message(&mut net, a, old, b"before");
        net.run_for(Duration::from_millis(20));
    }

    net.restart(b);
    let restarted = net.now();
    send_until_lost(&mut net, a, old, restarted, Duration::from_secs(1));

    let (detected, cause) = lost(&net, a, old, restarted).expect("the stale connection was lost");
    assert_eq!(cause, Cause::PeerRestarted);
    let first_send = net
        .sent(a)
        .iter()
        .find(|s| s.at >= restarted && s.conn == Some(old))
        .map(|s| s.at)
        .expect("the dialer sent on the old connection after the restart");
    let detection = detected - first_send;
    assert!(
        detection <= RTT,
        "detected {} after the first packet, RTT is {}",
        ms(detection),
        ms(RTT)
    );

    // The fresh connection starts in the same call that saw the reset.
    let reconnecting = find(&net, a, restarted, |e| match e {
        Event::Reconnecting { lost, attempt, .. } if *lost == old => Some(*attempt),
        _ => None,
    });
    assert_eq!(reconnecting, Some((detected, 1)));

    let (reconnected, new) = wait_reconnected(&mut net, a, b, old, restarted);
    assert_ne!(new, old);
    let handshake = reconnected - detected;
    assert!(
        handshake <= RTT + Duration::from_millis(1),
        "reconnect took {}",
        ms(handshake)
    );

    // The stale connection never carried another byte once the reset arrived.
    assert!(net
        .sent(a)
        .iter()
        .all(|s| s.conn != Some(old) || s.at < detected));

    // And the new one works: the listener sees a stream from the dialer on it.
    let since = net.now();
    send_message(&mut net, a, new, b"after");
    net.run_for(Duration::from_millis(50));
    let peer_a = net.peer_id(a);
    assert!(find(&net, b, since, |e| match e {
        Event::StreamOpened { peer, .. } if *peer == peer_a => Some(()),
        _ => None,
    })
    .is_some());
    println!(
        "restart while sending: detected {} after the first stale packet, reconnected {} later (RTT {})",
        ms(detection),
        ms(handshake),
        ms(RTT)
    );
}

#[test]
fn restart_while_idle_is_detected_at_the_next_keep_alive() {
    for keep_alive in [Duration::from_millis(300), Duration::from_secs(2)] {
        let (mut net, a, b) = pair(2, keep_alive, Duration::from_secs(10));
        let old = connect(&mut net, a, b);
        net.run_for(Duration::from_millis(100));
        net.restart(b);
        let restarted = net.now();
        net.run_until(keep_alive * 3, |n| lost(n, a, old, restarted).is_some());
        let (detected, cause) = lost(&net, a, old, restarted).expect("the restart was detected");
        assert_eq!(cause, Cause::PeerRestarted);
        let detection = detected - restarted;
        assert!(
            detection <= keep_alive + RTT,
            "keep-alive {}: detected after {}",
            ms(keep_alive),
            ms(detection)
        );
        let (reconnected, _) = wait_reconnected(&mut net, a, b, old, restarted);
        println!(
            "idle restart, keep-alive {}: detected after {}, reconnected after {}",
            ms(keep_alive),
            ms(detection),
            ms(reconnected - restarted)
        );
    }
}

#[test]
fn with_quinns_default_keys_there_is_no_reset_and_recovery_waits_for_the_idle_timeout() {
    let keep_alive = Duration::from_secs(1);
    let idle = Duration::from_secs(10);
    let (mut net, a, b) = pair(3, keep_alive, idle);
    for node in [a, b] {
        let mut config = config(keep_alive, idle);
        config.keys = KeyMode::RandomPerProcess;
        // Bare quinn behaviour: no suspicion redial (tests/dialing.rs covers that recovery).
        config.suspicion_ptos = None;
        net.set_config(node, config);
        net.restart(node);
    }
    let old = connect(&mut net, a, b);
    net.run_for(Duration::from_millis(100));
    net.restart(b);
    let restarted = net.now();
    net.run_until(idle * 2, |n| lost(n, a, old, restarted).is_some());

    let (detected, cause) = lost(&net, a, old, restarted).expect("the connection died eventually");
    assert_eq!(cause, Cause::IdleTimeout);
    assert!(
        detected - restarted >= idle - keep_alive,
        "lost after {}",
        ms(detected - restarted)
    );
    // The restarted node could not recognise the old connection IDs: it sent no reset.
    assert!(net
        .sent(b)
        .iter()
        .all(|s| s.at < restarted || s.conn.is_some()));
    let (reconnected, _) = wait_reconnected(&mut net, a, b, old, restarted);
    println!(
        "default keys: lost after {} (idle timeout), reconnected after {}",
        ms(detected - restarted),
        ms(reconnected - restarted)
    );

    // Same scenario with derived keys: the restarted node does send a reset.
    let (mut net, a, b) = pair(3, keep_alive, idle);
    let old = connect(&mut net, a, b);
    net.restart(b);
    let restarted = net.now();
    net.run_until(keep_alive * 2, |n| lost(n, a, old, restarted).is_some());
    assert_eq!(
        lost(&net, a, old, restarted).map(|(_, c)| c),
        Some(Cause::PeerRestarted)
    );
    assert!(net
        .sent(b)
        .iter()
        .any(|s| s.at >= restarted && s.conn.is_none()));
}

#[test]
fn restart_mid_handshake_recovers() {
    for offset_ms in [2, 5, 7, 10, 12, 14] {
        let (mut net, a, b) = pair(
            4 + offset_ms,
            Duration::from_millis(500),
            Duration::from_secs(10),
        );
        let start = net.now();
        net.dial(a, b);
        net.run_for(Duration::from_millis(offset_ms));
        net.restart(b);
        let peer_a = net.peer_id(a);
        let peer_b = net.peer_id(b);
        // Recovered: both sides hold one connection to each other, and data flows on it.
        let ok = net.run_until(Duration::from_secs(10), |n| {
            connected(n, b, peer_a, start).is_some() && n.generation(b) == 1
        });
        assert!(
            ok,
            "restart at {offset_ms} ms: the listener never saw the dialer again"
        );
        net.run_for(Duration::from_millis(100));
        let conn = net
            .manager(a)
            .and_then(|m| m.connection(&peer_b))
            .expect("dialer connected");
        let since = net.now();
        send_message(&mut net, a, conn, b"ping");
        net.run_for(Duration::from_millis(50));
        assert!(
            find(&net, b, since, |e| matches!(e, Event::StreamOpened { .. })
                .then_some(()))
            .is_some(),
            "restart at {offset_ms} ms: data does not flow"
        );
        println!(
            "restart {offset_ms} ms into the handshake: working after {}",
            ms(since - start)
        );
    }
}

#[test]
fn two_restarts_in_a_row() {
    let (mut net, a, b) = pair(5, Duration::from_millis(200), Duration::from_secs(10));
    let mut conn = connect(&mut net, a, b);
    // Two restarts far apart, then two in quick succession (the second during the reconnect).
    for gap in [None, None, Some(Duration::from_millis(3))] {
        net.restart(b);
        let restarted = net.now();
        if let Some(gap) = gap {
            send_message(&mut net, a, conn, b"x");
            net.run_for(gap + RTT);
            net.restart(b);
        }
        send_until_lost(&mut net, a, conn, restarted, Duration::from_secs(2));
        assert_eq!(
            lost(&net, a, conn, restarted).map(|(_, c)| c),
            Some(Cause::PeerRestarted)
        );
        let peer_b = net.peer_id(b);
        assert!(net.run_until(Duration::from_secs(5), |n| {
            let m = n.events(a).iter().rev().find_map(|(_, e)| match e {
                Event::Connected { peer, conn, .. } if *peer == peer_b => Some(*conn),
                _ => None,
            });
            m.is_some_and(|c| c != conn)
        }));
        net.run_for(Duration::from_millis(300));
        conn = net
            .manager(a)
            .and_then(|m| m.connection(&peer_b))
            .expect("connected again");
        let since = net.now();
        send_message(&mut net, a, conn, b"alive?");
        net.run_for(Duration::from_millis(50));
        assert!(
            find(&net, b, since, |e| matches!(e, Event::StreamOpened { .. })
                .then_some(()))
            .is_some()
        );
    }
    let restarts = net
        .events(a)
        .iter()
        .filter(|(_, e)| {
            matches!(
                e,
                Event::ConnectionLost {
                    cause: Cause::PeerRestarted,
                    ..
                }
            )
        })
        .count();
    assert!(restarts >= 3, "saw {restarts} restarts");
}

#[test]
fn restart_under_loss_reorder_and_duplication() {
    let (mut net, a, b) = pair(6, Duration::from_millis(500), Duration::from_secs(10));
    let mut link = Link::with_latency(LATENCY);
    link.jitter = Duration::from_millis(2);
    link.loss = 0.2;
    link.duplicate = 0.1;
    link.reorder = 0.1;
    net.set_default_link(link);
    let since = net.now();
    let peer_b = net.peer_id(b);
    net.dial(a, b);
    assert!(
        net.run_until(Duration::from_secs(10), |n| connected(n, a, peer_b, since)
            .is_some())
    );
    let (_, (old, _)) = connected(&net, a, peer_b, since).expect("connected");
    net.run_for(Duration::from_millis(200));

    net.restart(b);
    let restarted = net.now();
    send_until_lost(&mut net, a, old, restarted, Duration::from_secs(5));
    let (detected, cause) = lost(&net, a, old, restarted).expect("restart detected");
    assert_eq!(cause, Cause::PeerRestarted);
    let (reconnected, _) = wait_reconnected(&mut net, a, b, old, restarted);
    assert!(reconnected - restarted < Duration::from_secs(3));
    println!(
        "20% loss: detected after {}, reconnected after {}",
        ms(detected - restarted),
        ms(reconnected - restarted)
    );
}

/// The restarted node is the dialer: the listener sees a handshake from a PeerId it holds a
/// (stale) connection to, under another certificate key (a new process), so the new connection
/// takes over the moment it is established, whatever the keys; no probe is waited for.
#[test]
fn restarted_node_dials_first() {
    for keys in [KeyMode::DerivedFromIdentity, KeyMode::RandomPerProcess] {
        let (mut net, a, b) = pair(7, Duration::from_secs(5), Duration::from_secs(10));
        let mut config = config(Duration::from_secs(5), Duration::from_secs(10));
        config.keys = keys.clone();
        net.set_config(a, config);
        net.restart(a);
        let old = {
            let since = net.now();
            let peer_a = net.peer_id(a);
            connect(&mut net, a, b);
            connected(&net, b, peer_a, since)
                .expect("listener saw the dialer")
                .1
                 .0
        };
        net.restart(a);
        let restarted = net.now();
        net.dial(a, b);
        let peer_a = net.peer_id(a);
        net.run_until(Duration::from_secs(1), |n| {
            lost(n, b, old, restarted).is_some()
        });
        let (gone, cause) =
            lost(&net, b, old, restarted).expect("the stale connection was dropped");
        assert_eq!(cause, Cause::PeerRestarted);
        let (at, (_, replaced)) =
            connected(&net, b, peer_a, restarted).expect("the new connection");
        assert_eq!(replaced, Some(old), "announced as taking over");
        assert_eq!(gone, at, "in the call that established the new connection");
        assert!(
            gone - restarted < Duration::from_millis(100),
            "took {}",
            ms(gone - restarted)
        );
        net.run_for(Duration::from_millis(200));
        let manager = net.manager(b).expect("up");
        assert_eq!(manager.connections(&peer_a).len(), 1);
        assert_ne!(manager.connection(&peer_a), Some(old));
        // The listener does not dial the restarted dialer itself: it never had its address.
        assert!(!manager.is_dialing(&peer_a));
        println!(
            "restarted dialer with {keys:?}: stale connection dropped after {} ({cause})",
            ms(gone - restarted)
        );
    }
}

#[test]
fn simultaneous_dial_ends_with_one_connection_both_sides_agree_on() {
    for (seed, delay_ms) in [(8, 0), (9, 1), (10, 4)] {
        let (mut net, a, b) = pair(seed, Duration::from_secs(5), Duration::from_secs(10));
        net.dial(a, b);
        net.run_for(Duration::from_millis(delay_ms));
        net.dial(b, a);
        net.run_for(Duration::from_secs(1));
        let (peer_a, peer_b) = (net.peer_id(a), net.peer_id(b));
        let direction = |net: &mut Network, node: NodeId, peer| {
            let manager = net.manager(node).expect("up");
            let conns = manager.connections(&peer);
            assert_eq!(conns.len(), 1, "delay {delay_ms} ms: {conns:?}");
            assert_eq!(manager.connection(&peer), Some(conns[0]));
            let conn = conns[0];
            net.events(node)
                .iter()
                .find_map(|(_, e)| match e {
                    Event::Connected {
                        conn: c, direction, ..
                    } if *c == conn => Some(*direction),
                    _ => None,
                })
                .expect("announced")
        };
        let on_a = direction(&mut net, a, peer_b);
        let on_b = direction(&mut net, b, peer_a);
        assert_ne!(
            on_a, on_b,
            "delay {delay_ms} ms: both sides must keep the same connection"
        );
    }
}

#[test]
fn an_idle_network_does_not_spin() {
    let (mut net, a, b) = pair(11, Duration::from_secs(1), Duration::from_secs(10));
    connect(&mut net, a, b);
    let steps = net.steps();
    net.run_for(Duration::from_secs(60));
    let taken = net.steps() - steps;
    // One keep-alive a second each way and its acknowledgement, give or take timers.
    assert!(taken <= 60 * 8, "{taken} steps for a quiet minute");
    println!("quiet minute: {taken} steps");
}

/// The peer comes back on another port: the old address goes dark, nobody resets anything.
/// The application learns the new address (as from a DHT or an identify exchange) and hands it
/// to `dial`, which records it even though the peer still looks connected; the suspicion
/// redial then races the dead connection over both addresses and the new port wins.
#[test]
fn restart_on_a_new_port_is_found_by_the_suspicion_redial() {
    let (mut net, a, b) = pair(12, Duration::from_millis(500), Duration::from_secs(10));
    let old = connect(&mut net, a, b);
    let old_addr = net.addr(b);
    let new_addr = net.restart_on_new_port(b);
    assert_ne!(old_addr, new_addr);
    let restarted = net.now();
    let peer_b = net.peer_id(b);
    let outcome = net
        .manager(a)
        .expect("up")
        .dial(restarted, peer_b, [new_addr]);
    assert_eq!(outcome, Ok(quicpeer::DialOutcome::AlreadyConnected(old)));
    let (at, new) = wait_reconnected(&mut net, a, b, old, restarted);
    assert_eq!(
        lost(&net, a, old, restarted).map(|(_, c)| c),
        Some(Cause::Superseded { by: Some(new) })
    );
    let addr = find(&net, a, restarted, |e| match e {
        Event::Connected { conn, addr, .. } if *conn == new => Some(*addr),
        _ => None,
    });
    assert_eq!(addr.map(|(_, a)| a), Some(new_addr));
    println!(
        "restart on a new port: new connection after {}",
        ms(at - restarted)
    );
}

/// A node that restarts on a new port and dials its peer (as a node with a peer book does): the
/// peer sees the same PeerId under a new certificate key and switches in the call that
/// establishes the new connection, one and a half round trips after the dial, while its old
/// connection still points at the dead port (no reset can come from there).
#[test]
fn restart_on_a_new_port_is_found_by_the_new_certificate_key() {
    let (mut net, a, b) = pair(14, Duration::from_secs(5), Duration::from_secs(10));
    connect(&mut net, a, b);
    let (peer_a, peer_b) = (net.peer_id(a), net.peer_id(b));
    let on_b = net
        .manager(b)
        .expect("up")
        .connection(&peer_a)
        .expect("b holds a's connection");
    net.restart_on_new_port(a);
    let restarted = net.now();
    net.dial(a, b);
    net.run_until(Duration::from_secs(1), |n| {
        lost(n, b, on_b, restarted).is_some()
    });
    let (gone, cause) = lost(&net, b, on_b, restarted).expect("the stale connection was dropped");
    assert_eq!(cause, Cause::PeerRestarted);
    let (at, (new, replaced)) = connected(&net, b, peer_a, restarted).expect("new connection");
    assert_eq!((replaced, gone), (Some(on_b), at));
    // Client Initial, server flight, client Finished: 1.5 RTT of 10 ms.
    assert_eq!(at - restarted, Duration::from_millis(15));
    net.run_for(Duration::from_millis(100));
    let manager = net.manager(b).expect("up");
    assert_eq!(manager.connections(&peer_a), vec![new]);
    // B never redials a peer that found it.
    assert!(!manager.is_dialing(&peer_a));
    assert!(net.manager(a).expect("up").connection(&peer_b).is_some());
    println!(
        "restart on a new port, found by the certificate key after {}",
        ms(at - restarted)
    );
}

/// A restart proven by a stateless reset is a new incarnation of the peer, not a flapping link:
/// two restarts within 200 ms (well inside `Limits::flap_grace`) are each reconnected in the
/// call that saw the reset, one handshake later.
#[test]
fn two_restarts_within_the_flap_grace_are_each_reconnected_at_once() {
    let (mut net, a, b) = pair(13, Duration::from_secs(5), Duration::from_secs(10));
    let grace = quicpeer::Config::default().limits.flap_grace;
    let mut conn = connect(&mut net, a, b);
    let first = net.now();
    for round in 1..=2 {
        net.restart(b);
        let restarted = net.now();
        send_until_lost(&mut net, a, conn, restarted, Duration::from_secs(1));
        let (detected, cause) = lost(&net, a, conn, restarted).expect("restart detected");
        assert_eq!(cause, Cause::PeerRestarted, "restart {round}");
        let reconnecting = find(&net, a, restarted, |e| match e {
            Event::Reconnecting { lost, .. } if *lost == conn => Some(()),
            _ => None,
        });
        assert_eq!(
            reconnecting.map(|(at, _)| at),
            Some(detected),
            "restart {round}: the reconnect starts in the call that saw the reset"
        );
        let (reconnected, new) = wait_reconnected(&mut net, a, b, conn, restarted);
        assert!(
            reconnected - detected <= 2 * RTT,
            "restart {round}: reconnected {} after the reset",
            ms(reconnected - detected)
        );
        println!(
            "restart {round} at +{}: reconnected {} after the reset",
            ms(restarted - first),
            ms(reconnected - detected)
        );
        conn = new;
        net.run_for(Duration::from_millis(50));
    }
    assert!(net.now() - first < Duration::from_millis(200));
    assert!(Duration::from_millis(200) < grace);
}

/// The restarting node is the dialer: after each of three restarts within 300 ms it dials the
/// listener again, and the listener, which saw each old connection die of a stateless reset,
/// takes every new connection instead of refusing the peer as flapping.
#[test]
fn a_dialer_restarting_again_and_again_is_not_refused_as_flapping() {
    let (mut net, a, b) = pair(14, Duration::from_secs(5), Duration::from_secs(10));
    let peer_a = net.peer_id(a);
    connect(&mut net, a, b);
    let first = net.now();
    let mut last = first;
    for round in 1..=3 {
        net.restart(a);
        let restarted = net.now();
        last = restarted;
        let conn = connect(&mut net, a, b);
        net.run_for(Duration::from_millis(50));
        assert_eq!(
            lost(&net, a, conn, restarted),
            None,
            "restart {round}: the listener closed the new connection"
        );
        let manager = net.manager(b).expect("up");
        assert_eq!(
            manager.connections(&peer_a).len(),
            1,
            "restart {round}: the stale connection is gone, the new one kept"
        );
        let old_causes: Vec<Cause> = net
            .events(b)
            .iter()
            .filter(|(at, _)| *at >= restarted)
            .filter_map(|(_, e)| match e {
                Event::ConnectionLost { cause, .. } => Some(cause.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(old_causes, vec![Cause::PeerRestarted], "restart {round}");
    }
    assert!(
        last - first < Duration::from_millis(300),
        "restarts over {}",
        ms(last - first)
    );
}

/// An idle link (keep-alive 5 s): the listener restarts and, given its previous process's peer
/// book, dials its peers at once. The dialer sees the listener's PeerId under a new certificate
/// key and switches 1.5 round trips after the restart, where without the book it would learn of
/// the restart only at its next keep-alive.
#[test]
fn a_restarted_node_with_a_peer_book_is_found_at_once_on_an_idle_link() {
    for (with_book, seed) in [(true, 15), (false, 16)] {
        let (mut net, a, b) = pair(seed, Duration::from_secs(5), Duration::from_secs(10));
        let old = connect(&mut net, a, b);
        let peer_a = net.peer_id(a);
        net.run_for(Duration::from_millis(500));
        let book = net.manager(b).expect("up").peer_book();
        assert_eq!(book.len(), 1);
        assert_eq!(book[0].peer, peer_a);
        assert_eq!(book[0].direction, quicpeer::Direction::Inbound);
        assert_eq!(book[0].addrs, vec![net.addr(a)]);

        net.restart(b);
        let restarted = net.now();
        if with_book {
            let queued = net
                .manager(b)
                .expect("up")
                .dial_peer_book(restarted, book, 16);
            assert_eq!(queued, 1);
        }
        net.run_until(Duration::from_secs(6), |n| {
            lost(n, a, old, restarted).is_some()
        });
        let (gone, cause) = lost(&net, a, old, restarted).expect("the restart was found");
        assert_eq!(cause, Cause::PeerRestarted);
        if with_book {
            assert_eq!(gone - restarted, Duration::from_millis(15), "1.5 RTT");
            let (at, (_, replaced)) =
                connected(&net, a, net.peer_id(b), restarted).expect("the listener dialed back");
            assert_eq!((at, replaced), (gone, Some(old)));
        } else {
            // The next keep-alive draws the stateless reset.
            assert!(
                gone - restarted > Duration::from_secs(1),
                "{}",
                ms(gone - restarted)
            );
        }
        net.run_until(Duration::from_secs(1), |n| {
            connected(n, a, n.peer_id(b), restarted).is_some()
        });
        let (fresh, _) = connected(&net, a, net.peer_id(b), restarted).expect("fresh connection");
        println!(
            "idle link, peer book {with_book}: restart found after {}, fresh connection after {}",
            ms(gone - restarted),
            ms(fresh - restarted)
        );
    }
}

#[test]
fn the_peer_book_is_bounded_and_dials_the_most_recent_first_within_the_dial_limit() {
    use quicpeer::{Direction, PeerRecord};
    use std::time::{SystemTime, UNIX_EPOCH};
    init_tracing();
    let mut net = Network::new(17);
    let mut cfg = config(Duration::from_secs(5), Duration::from_secs(10));
    cfg.limits.max_pending_dials = 2;
    cfg.limits.max_peer_book = 3;
    let a = net.add_node("a", identity(1), cfg);
    let now = net.now();
    let dead = |i: u16| std::net::SocketAddr::from(([192, 0, 2, 200], 5000 + i));
    // Ten peers nobody answers for, seen at t = 1..=10 s; and one record of ourselves.
    let mut book: Vec<PeerRecord> = (1..=10u8)
        .map(|i| {
            let seen = UNIX_EPOCH + Duration::from_secs(u64::from(i));
            PeerRecord::new(
                identity(100 + i).peer_id(),
                vec![dead(u16::from(i))],
                Direction::Outbound,
                seen,
            )
        })
        .collect();
    book.push(PeerRecord::new(
        net.peer_id(a),
        vec![dead(0)],
        Direction::Outbound,
        SystemTime::now(),
    ));
    let m = net.manager(a).expect("up");
    assert_eq!(m.dial_peer_book(now, book, 4), 4);
    // The four most recent, two at a time.
    let dialing: Vec<u8> = (1..=10u8)
        .filter(|i| m.is_dialing(&identity(100 + i).peer_id()))
        .collect();
    assert_eq!(dialing, vec![9, 10]);
    let recorded: Vec<_> = m.peer_book().iter().map(|r| r.peer).collect();
    let expected: Vec<_> = [10u8, 9, 8]
        .iter()
        .map(|i| identity(100 + i).peer_id())
        .collect();
    assert_eq!(
        recorded, expected,
        "the book keeps the most recent of what it was given, up to its bound"
    );
    // When those fail (handshake timeout), the next two start.
    net.run_for(quicpeer::Config::default().handshake_timeout + Duration::from_millis(10));
    let m = net.manager(a).expect("up");
    let dialing: Vec<u8> = (1..=10u8)
        .filter(|i| m.is_dialing(&identity(100 + i).peer_id()))
        .collect();
    assert_eq!(dialing, vec![7, 8]);
}

/// A planned restart: the listener closes everything announcing 300 ms of downtime. The dialer
/// reports `PeerRestarting`, keeps redialing every `restart_retry_interval` (each attempt fails
/// at once on the closed port) and is back one round trip after the listener is.
#[test]
fn a_planned_restart_is_redialed_on_a_short_schedule_until_the_peer_is_back() {
    let (mut net, a, b) = pair(18, Duration::from_secs(5), Duration::from_secs(10));
    net.icmp_unreachable = true;
    let old = connect(&mut net, a, b);
    let peer_b = net.peer_id(b);
    let downtime = Duration::from_millis(300);
    let closing = net.now();
    net.manager(b)
        .expect("up")
        .close_all_restarting(closing, downtime);
    net.run_for(Duration::from_millis(20));
    let (_, cause) = lost(&net, a, old, closing).expect("the close arrived");
    assert_eq!(
        cause,
        Cause::PeerRestarting {
            expected_downtime: downtime
        }
    );
    net.stop(b);
    net.run_for(downtime);
    // The dialer kept trying, without backoff: one attempt per interval, give or take.
    let interval = quicpeer::ReconnectPolicy::default().restart_retry_interval;
    let failures = net.events(a).iter().filter(|(at, e)| {
        *at >= closing
            && matches!(
                e,
                Event::DialFailed {
                    retry_at: Some(_),
                    ..
                }
            )
    });
    let failures = failures.count() as u32;
    assert!(
        failures >= downtime.as_millis() as u32 / interval.as_millis() as u32 / 2,
        "{failures} attempts in {downtime:?}"
    );
    net.restart(b);
    let back = net.now();
    net.run_until(Duration::from_secs(1), |n| {
        connected(n, a, peer_b, back).is_some()
    });
    let (at, (_, replaced)) = connected(&net, a, peer_b, back).expect("reconnected");
    assert_eq!(replaced, Some(old));
    assert!(
        at - back <= interval + Duration::from_millis(10),
        "{} after the peer was back",
        ms(at - back)
    );
    println!(
        "planned restart: reconnected {} after the peer was back ({failures} attempts)",
        ms(at - back)
    );
}

#[test]
fn peer_book_dials_are_paced() {
    use quicpeer::{Direction, PeerRecord, ResponseRate};
    use std::time::UNIX_EPOCH;
    init_tracing();
    let mut net = Network::new(19);
    let mut cfg = config(Duration::from_secs(5), Duration::from_secs(10));
    cfg.limits.peer_book_dials = ResponseRate::new(2, 10);
    let a = net.add_node("a", identity(1), cfg);
    let dead = |i: u16| std::net::SocketAddr::from(([192, 0, 2, 201], 6000 + i));
    let book: Vec<PeerRecord> = (1..=5u8)
        .map(|i| {
            let seen = UNIX_EPOCH + Duration::from_secs(u64::from(i));
            let addrs = vec![dead(u16::from(i))];
            PeerRecord::new(
                identity(100 + i).peer_id(),
                addrs,
                Direction::Outbound,
                seen,
            )
        })
        .collect();
    let now = net.now();
    assert_eq!(net.manager(a).expect("up").dial_peer_book(now, book, 5), 5);
    let dialing = |net: &mut Network| {
        let m = net.manager(a).expect("up");
        (1..=5u8)
            .filter(|i| m.is_dialing(&identity(100 + i).peer_id()))
            .count()
    };
    // A burst of two, then one every 100 ms (the dials to nowhere stay pending meanwhile).
    assert_eq!(dialing(&mut net), 2);
    net.run_for(Duration::from_millis(99));
    assert_eq!(dialing(&mut net), 2);
    net.run_for(Duration::from_millis(2));
    assert_eq!(dialing(&mut net), 3);
    net.run_for(Duration::from_millis(200));
    assert_eq!(dialing(&mut net), 5);
}

/// Inbound handshakes in flight count against the peer book's window: while peers come back by
/// themselves, the book's dials wait for them instead of adding handshakes.
#[test]
fn inbound_handshakes_in_flight_hold_back_peer_book_dials() {
    use quicpeer::{Direction, PeerRecord};
    use std::time::UNIX_EPOCH;
    init_tracing();
    let mut net = Network::new(23);
    let mut cfg = config(Duration::from_secs(5), Duration::from_secs(10));
    cfg.limits.max_pending_dials = 3;
    let a = net.add_node("a", identity(1), cfg.clone());
    let clients: Vec<NodeId> = (2..=3u8)
        .map(|i| net.add_node(&format!("c{i}"), identity(i), cfg.clone()))
        .collect();
    // Two clients dial `a`; once their Initials are in, their links go down: `a` holds two
    // inbound handshakes until its handshake timeout.
    let (peer_a, addr_a) = (net.peer_id(a), net.addr(a));
    let now = net.now();
    for &c in &clients {
        let outcome = net.manager(c).expect("up").dial(now, peer_a, [addr_a]);
        assert!(outcome.is_ok(), "{outcome:?}");
    }
    net.run_for(Duration::from_millis(7));
    for &c in &clients {
        net.set_link(a, c, Link::down());
    }
    let dead = |i: u16| std::net::SocketAddr::from(([192, 0, 2, 202], 7000 + i));
    let book: Vec<PeerRecord> = (1..=4u8)
        .map(|i| {
            let seen = UNIX_EPOCH + Duration::from_secs(u64::from(i));
            let addrs = vec![dead(u16::from(i))];
            PeerRecord::new(
                identity(100 + i).peer_id(),
                addrs,
                Direction::Outbound,
                seen,
            )
        })
        .collect();
    let now = net.now();
    assert_eq!(net.manager(a).expect("up").dial_peer_book(now, book, 4), 4);
    let dialing = |net: &mut Network| {
        let m = net.manager(a).expect("up");
        (1..=4u8)
            .filter(|i| m.is_dialing(&identity(100 + i).peer_id()))
            .collect::<Vec<u8>>()
    };
    // Three handshakes at once: two inbound, so one dial, the most recent peer.
    assert_eq!(dialing(&mut net), vec![4]);
    // The inbound handshakes and that dial time out together; the other three start.
    net.run_for(quicpeer::Config::default().handshake_timeout);
    assert_eq!(dialing(&mut net), vec![1, 2, 3]);
}

/// With one connection allowed per peer, the new incarnation's connection is not refused for
/// the stale one's slot: the stale one is leaving, and the new one replaces it.
#[test]
fn a_new_incarnation_is_let_in_at_a_per_peer_limit_of_one() {
    init_tracing();
    let mut net = Network::new(20);
    let mut one = config(Duration::from_secs(5), Duration::from_secs(10));
    one.limits.max_connections_per_peer = 1;
    let a = net.add_node("a", identity(1), one.clone());
    let b = net.add_node("b", identity(2), one);
    connect(&mut net, a, b);
    let peer_a = net.peer_id(a);
    let on_b = net
        .manager(b)
        .expect("up")
        .connection(&peer_a)
        .expect("connected");
    net.restart_on_new_port(a);
    let restarted = net.now();
    net.dial(a, b);
    net.run_until(Duration::from_secs(1), |n| {
        lost(n, b, on_b, restarted).is_some()
    });
    assert_eq!(
        lost(&net, b, on_b, restarted).map(|(_, c)| c),
        Some(Cause::PeerRestarted)
    );
    let (_, (new, replaced)) = connected(&net, b, peer_a, restarted).expect("let in");
    assert_eq!(replaced, Some(on_b));
    net.run_for(Duration::from_millis(100));
    assert_eq!(net.manager(b).expect("up").connections(&peer_a), vec![new]);
}

#[test]
fn a_peer_named_twice_in_a_book_is_dialed_once() {
    use quicpeer::{Direction, PeerRecord};
    use std::time::UNIX_EPOCH;
    let mut net = Network::new(21);
    let a = net.add_node(
        "a",
        identity(1),
        config(Duration::from_secs(5), Duration::from_secs(10)),
    );
    let at = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
    let addr = |port: u16| std::net::SocketAddr::from(([192, 0, 2, 202], port));
    let (p, q) = (identity(120).peer_id(), identity(121).peer_id());
    let book = vec![
        PeerRecord::new(p, vec![addr(1)], Direction::Outbound, at(5)),
        PeerRecord::new(q, vec![addr(2)], Direction::Outbound, at(4)),
        PeerRecord::new(p, vec![addr(3)], Direction::Outbound, at(1)),
    ];
    let now = net.now();
    let m = net.manager(a).expect("up");
    assert_eq!(m.dial_peer_book(now, book, 10), 2);
    let kept: Vec<_> = m
        .peer_book()
        .into_iter()
        .map(|r| (r.peer, r.addrs))
        .collect();
    assert_eq!(
        kept,
        vec![(p, vec![addr(1)]), (q, vec![addr(2)])],
        "the most recent record of each"
    );
}

/// The restarted peer's book dial and our own reconnect race: A's packet draws a stateless
/// reset and A redials at the moment B, back with its peer book, dials A. B's connection
/// completes at A first and is the one A's reconnect was for: A drops its dial instead of
/// making a second connection to the same process for the tie-break to close.
#[test]
fn a_reconnect_racing_the_restarted_peers_own_dial_yields_to_it() {
    init_tracing();
    let (mut net, a, b) = pair(22, Duration::from_secs(5), Duration::from_secs(10));
    let old = connect(&mut net, a, b);
    let (peer_a, peer_b) = (net.peer_id(a), net.peer_id(b));
    net.run_for(Duration::from_millis(200));
    let book = net.manager(b).expect("up").peer_book();
    net.restart(b);
    let restarted = net.now();
    send_message(&mut net, a, old, b"are you there?");
    net.manager(b)
        .expect("up")
        .dial_peer_book(restarted, book, 16);
    net.run_for(Duration::from_millis(300));

    assert_eq!(
        lost(&net, a, old, restarted).map(|(_, c)| c),
        Some(Cause::PeerRestarted)
    );
    let connected_at_a: Vec<_> = net
        .events(a)
        .iter()
        .filter_map(|(at, e)| match e {
            Event::Connected {
                conn,
                replaced,
                direction,
                ..
            } if *at >= restarted => Some((*conn, *replaced, *direction)),
            _ => None,
        })
        .collect();
    assert_eq!(
        connected_at_a.len(),
        1,
        "one fresh connection: {connected_at_a:?}"
    );
    let (new, replaced, direction) = connected_at_a[0];
    assert_eq!(replaced, Some(old));
    assert_eq!(
        direction,
        quicpeer::Direction::Inbound,
        "B's dial, not ours"
    );
    let superseded = net.events(a).iter().any(|(at, e)| {
        *at >= restarted
            && matches!(
                e,
                Event::ConnectionLost {
                    cause: Cause::Superseded { .. },
                    ..
                }
            )
    });
    assert!(!superseded, "no second connection was made to be closed");
    assert_eq!(net.manager(a).expect("up").connections(&peer_b), vec![new]);
    assert_eq!(net.manager(b).expect("up").connections(&peer_a).len(), 1);
    assert!(!net.manager(a).expect("up").is_dialing(&peer_b));
}
