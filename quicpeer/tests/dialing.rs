//! Peer-level dialing in the simulation: address racing, fail-fast on ICMP errors, suspicion
//! redial against peers that never reset, make-before-break, limits and slots.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use quicpeer::sim::{Network, NodeId};
use quicpeer::{
    Cause, Config, ConnId, DialError, DialOutcome, Event, HandshakeFailure, KeyMode,
    ReconnectPolicy,
};
use support::*;

/// An address where nothing lives in the simulation.
fn dead(n: u8) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 200 + n], 9))
}

fn dial_failed(
    net: &Network,
    node: NodeId,
    since: Instant,
) -> Option<(Instant, Vec<(SocketAddr, Cause)>)> {
    find(net, node, since, |e| match e {
        Event::DialFailed { errors, .. } => Some(errors.clone()),
        _ => None,
    })
}

fn quiet_config() -> Config {
    let mut config = config(Duration::from_secs(1), Duration::from_secs(10));
    config.reconnect = ReconnectPolicy::never();
    config
}

#[test]
fn a_black_holed_first_address_loses_to_the_second_after_the_stagger() {
    let mut net = Network::new(1);
    let a = net.add_node("a", identity(1), Config::default());
    let b = net.add_node("b", identity(2), Config::default());
    let (peer_b, addr_b, start) = (net.peer_id(b), net.addr(b), net.now());
    let outcome = net
        .manager(a)
        .expect("up")
        .dial(start, peer_b, [dead(1), addr_b]);
    assert_eq!(outcome, Ok(DialOutcome::Started));
    assert!(
        net.run_until(Duration::from_secs(2), |n| connected(n, a, peer_b, start)
            .is_some())
    );
    let (at, _) = connected(&net, a, peer_b, start).expect("connected");
    let stagger = Config::default().dial_stagger;
    assert_eq!(
        at - start,
        stagger + Duration::from_millis(10),
        "stagger plus one RTT"
    );
    net.run_for(Duration::from_secs(10));
    // The losing attempt is closed quietly: no failure is reported for a dial that succeeded.
    assert!(dial_failed(&net, a, start).is_none());
    assert_eq!(net.manager(a).map(|m| m.live_connections()), Some(1));
}

#[test]
fn when_every_address_fails_the_error_lists_each() {
    let mut net = Network::new(2);
    let a = net.add_node("a", identity(1), Config::default());
    let peer = identity(9).peer_id();
    let start = net.now();
    net.manager(a)
        .expect("up")
        .dial(start, peer, [dead(1), dead(2)])
        .expect("started");
    net.run_for(Duration::from_secs(10));
    let (_, errors) = dial_failed(&net, a, start).expect("failed");
    let timed_out = Cause::HandshakeFailed(HandshakeFailure::TimedOut);
    assert_eq!(
        errors,
        vec![(dead(1), timed_out.clone()), (dead(2), timed_out)]
    );
}

#[test]
fn an_unreachable_address_fails_fast_and_the_next_starts_at_once() {
    let mut net = Network::new(3);
    net.icmp_unreachable = true;
    let a = net.add_node("a", identity(1), Config::default());
    let b = net.add_node("b", identity(2), Config::default());
    let (peer_b, addr_b, start) = (net.peer_id(b), net.addr(b), net.now());
    net.manager(a)
        .expect("up")
        .dial(start, peer_b, [dead(1), addr_b])
        .expect("started");
    assert!(
        net.run_until(Duration::from_secs(1), |n| connected(n, a, peer_b, start)
            .is_some())
    );
    let (at, _) = connected(&net, a, peer_b, start).expect("connected");
    // One RTT for the ICMP error to come back, then one RTT on the second address, well
    // before the 250 ms stagger.
    assert_eq!(at - start, Duration::from_millis(20));

    // Alone, the unreachable address fails in one round trip instead of the handshake timeout.
    net.stop(b);
    let since = net.now();
    let peer = identity(9).peer_id();
    net.manager(a)
        .expect("up")
        .dial(since, peer, [dead(2)])
        .expect("started");
    net.run_for(Duration::from_secs(1));
    let (failed_at, errors) = dial_failed(&net, a, since).expect("failed");
    assert_eq!(
        errors,
        vec![(
            dead(2),
            Cause::HandshakeFailed(HandshakeFailure::Unreachable)
        )]
    );
    assert_eq!(failed_at - since, Duration::from_millis(10));
}

/// The peer restarts with quinn's default keys, so it never sends a stateless reset (as
/// rust-libp2p, go-libp2p and js-libp2p nodes do today); suspicion redial recovers anyway.
#[test]
fn suspicion_redial_recovers_from_a_peer_that_never_resets() {
    for sending in [true, false] {
        let mut net = Network::new(4);
        let keep_alive = Duration::from_millis(500);
        let a = net.add_node(
            "a",
            identity(1),
            config(keep_alive, Duration::from_secs(10)),
        );
        let mut silent = config(keep_alive, Duration::from_secs(10));
        silent.keys = KeyMode::RandomPerProcess;
        let b = net.add_node("b", identity(2), silent);
        let old = connect(&mut net, a, b);
        net.run_for(Duration::from_millis(100));

        net.restart(b);
        let restarted = net.now();
        let peer_b = net.peer_id(b);
        let replaced = |n: &Network| {
            connected(n, a, peer_b, restarted).is_some_and(|(_, (_, r))| r == Some(old))
        };
        let deadline = restarted + Duration::from_secs(3);
        while !replaced(&net) && net.now() < deadline {
            if sending {
                send_message(&mut net, a, old, b"tick");
            }
            net.run_for(Duration::from_millis(20));
        }
        assert!(replaced(&net), "no replacement (sending: {sending})");
        let (at, (new, _)) = connected(&net, a, peer_b, restarted).expect("connected");
        let (suspected_at, since) = find(&net, a, restarted, |e| match e {
            Event::Unresponsive { conn, since, .. } if *conn == old => Some(*since),
            _ => None,
        })
        .expect("suspicion reported");
        assert!(since >= restarted);
        assert_eq!(
            lost(&net, a, old, restarted).map(|(_, c)| c),
            Some(Cause::Superseded { by: Some(new) })
        );
        let bound = if sending {
            Duration::from_millis(300)
        } else {
            keep_alive + Duration::from_millis(300)
        };
        assert!(
            at - restarted <= bound,
            "recovered after {}",
            ms(at - restarted)
        );
        println!(
            "non-resetting peer restarted ({}): suspected after {}, new connection after {}",
            if sending {
                "while sending every 20 ms"
            } else {
                "idle, keep-alive 500 ms"
            },
            ms(suspected_at - restarted),
            ms(at - restarted),
        );
    }
}

/// A non-resetting peer that takes a while to come back (a Node.js process restarts in about
/// half a second): the first suspicion redial finds its port closed and fails at once on the
/// ICMP error. The manager races the silent connection again, with backoff, until the peer is
/// back, instead of leaving the recovery to the idle timeout (found by the js-libp2p interop
/// test, where it took the full 10 s).
#[test]
fn suspicion_redial_retries_until_a_restarting_peer_is_back() {
    let mut net = Network::new(7);
    net.icmp_unreachable = true;
    let keep_alive = Duration::from_millis(500);
    let idle = Duration::from_secs(10);
    let a = net.add_node("a", identity(1), config(keep_alive, idle));
    let mut silent = config(keep_alive, idle);
    silent.keys = KeyMode::RandomPerProcess;
    let b = net.add_node("b", identity(2), silent);
    let old = connect(&mut net, a, b);
    let peer_b = net.peer_id(b);

    net.stop(b);
    let stopped = net.now();
    let downtime = Duration::from_secs(1);
    while net.now() < stopped + downtime {
        send_message(&mut net, a, old, b"anyone there?");
        net.run_for(Duration::from_millis(20));
    }
    let failed_first = find(&net, a, stopped, |e| match e {
        Event::Unresponsive { conn, .. } if *conn == old => Some(()),
        _ => None,
    });
    assert!(failed_first.is_some(), "suspected while the peer was down");
    assert_eq!(
        net.manager(a).and_then(|m| m.connection(&peer_b)),
        Some(old),
        "the failed replacement left the old connection in place"
    );

    net.restart(b);
    let back = net.now();
    let replaced =
        |n: &Network| connected(n, a, peer_b, stopped).is_some_and(|(_, (_, r))| r == Some(old));
    while !replaced(&net) && net.now() < back + Duration::from_secs(5) {
        send_message(&mut net, a, old, b"tick");
        net.run_for(Duration::from_millis(20));
    }
    let (at, (new, _)) = connected(&net, a, peer_b, stopped).expect("reconnected");
    assert!(replaced(&net), "no replacement");
    assert_eq!(
        lost(&net, a, old, stopped).map(|(_, c)| c),
        Some(Cause::Superseded { by: Some(new) }),
        "replaced by suspicion redial, not lost to the idle timeout"
    );
    // Retries back off from 100 ms, doubling, so the one after the peer is back comes within
    // the downtime again.
    assert!(
        at - back <= downtime,
        "reconnected {} after the peer was back",
        ms(at - back)
    );
    let unresponsive = net
        .events(a)
        .iter()
        .filter(|(_, e)| matches!(e, Event::Unresponsive { conn, .. } if *conn == old))
        .count();
    assert_eq!(unresponsive, 1, "one Unresponsive per silence");
    assert!(dial_failed(&net, a, stopped).is_none());
    println!(
        "non-resetting peer down for {}: reconnected {} after it was back",
        ms(downtime),
        ms(at - back)
    );
}

#[test]
fn a_failed_replacement_leaves_the_working_connection_alone() {
    let mut net = Network::new(5);
    let mut cfg = config(Duration::from_millis(500), Duration::from_secs(10));
    cfg.handshake_timeout = Duration::from_millis(150);
    let a = net.add_node("a", identity(1), cfg.clone());
    let b = net.add_node("b", identity(2), cfg);
    let old = connect(&mut net, a, b);
    let (peer_b, start) = (net.peer_id(b), net.now());

    // A 400 ms outage: long enough for suspicion and for the replacement's handshake to time
    // out, short enough for the old connection to survive it.
    let up = net.link(a, b);
    net.set_link(a, b, {
        let mut link = up;
        link.up = false;
        link
    });
    send_message(&mut net, a, old, b"into the void");
    net.run_for(Duration::from_millis(400));
    assert!(
        find(&net, a, start, |e| matches!(e, Event::Unresponsive { .. })
            .then_some(()))
        .is_some()
    );
    net.set_link(a, b, up);
    net.run_for(Duration::from_secs(2));

    assert_eq!(
        lost(&net, a, old, start),
        None,
        "the working connection was dropped"
    );
    assert_eq!(
        net.manager(a).and_then(|m| m.connection(&peer_b)),
        Some(old)
    );
    assert!(
        dial_failed(&net, a, start).is_none(),
        "a failed replacement is not a failed dial"
    );
    let since = net.now();
    send_message(&mut net, a, old, b"still here");
    net.run_for(Duration::from_millis(50));
    assert!(
        find(&net, b, since, |e| matches!(e, Event::StreamOpened { .. })
            .then_some(()))
        .is_some()
    );
}

#[test]
fn redial_is_make_before_break() {
    let mut net = Network::new(6);
    let a = net.add_node("a", identity(1), Config::default());
    let b = net.add_node("b", identity(2), Config::default());
    let old = connect(&mut net, a, b);
    let (peer_b, start) = (net.peer_id(b), net.now());
    assert_eq!(
        net.manager(a).expect("up").redial(start, peer_b),
        Ok(DialOutcome::Started)
    );
    // Until the replacement is verified, the old connection is the one in use.
    assert_eq!(
        net.manager(a).and_then(|m| m.connection(&peer_b)),
        Some(old)
    );
    net.run_for(Duration::from_millis(100));
    let events: Vec<&Event> = net
        .events(a)
        .iter()
        .filter(|(at, _)| *at >= start)
        .map(|(_, e)| e)
        .collect();
    let new = match events.as_slice() {
        [Event::Connected {
            conn,
            replaced: Some(r),
            ..
        }, Event::ConnectionLost {
            conn: lost, cause, ..
        }, ..] => {
            assert_eq!((*r, *lost), (old, old));
            assert_eq!(*cause, Cause::Superseded { by: Some(*conn) });
            *conn
        }
        other => panic!("expected Connected then ConnectionLost, got {other:?}"),
    };
    assert_eq!(
        net.manager(a).and_then(|m| m.connection(&peer_b)),
        Some(new)
    );
    assert_eq!(
        net.manager(a).map(|m| m.connections(&peer_b)),
        Some(vec![new])
    );
    let peer_a = net.peer_id(a);
    let on_b = find(&net, b, start, |e| match e {
        Event::ConnectionLost { peer, cause, .. } if *peer == peer_a => Some(cause.clone()),
        _ => None,
    });
    assert_eq!(on_b.map(|(_, c)| c), Some(Cause::Superseded { by: None }));
    assert_eq!(
        net.manager(b).map(|m| m.connections(&peer_a).len()),
        Some(1)
    );
}

/// A dialer allowed one connection: whatever kills it, the slot is free in the same call, so
/// a dial to another peer right after succeeds.
#[test]
fn a_slot_is_released_in_the_call_its_connection_dies_whatever_the_cause() {
    type Kill = fn(&mut Network, NodeId, NodeId, ConnId);
    let kills: [(&str, Kill); 4] = [
        ("restart", |net, _, b, _| net.restart(b)),
        ("idle timeout", |net, _, b, _| net.stop(b)),
        ("closed by peer", |net, _, b, _| {
            let now = net.now();
            net.manager(b).expect("up").close_all(now);
        }),
        ("closed locally", |net, a, _, conn| {
            let now = net.now();
            net.manager(a).expect("up").close(now, conn);
        }),
    ];
    for (name, kill) in kills {
        let mut net = Network::new(7);
        let mut cfg = quiet_config();
        cfg.limits.max_connections = 1;
        let a = net.add_node("a", identity(1), cfg);
        let b = net.add_node("b", identity(2), quiet_config());
        let c = net.add_node("c", identity(3), quiet_config());
        let conn = connect(&mut net, a, b);
        let (peer_c, addr_c) = (net.peer_id(c), net.addr(c));
        let now = net.now();
        assert_eq!(
            net.manager(a).expect("up").dial(now, peer_c, [addr_c]),
            Err(DialError::ConnectionLimit),
            "{name}: the limit holds while connected"
        );
        let since = net.now();
        kill(&mut net, a, b, conn);
        send_message(&mut net, a, conn, b"poke");
        assert!(
            net.run_until(Duration::from_secs(20), |n| lost(n, a, conn, since)
                .is_some()),
            "{name}"
        );
        let now = net.now();
        let m = net.manager(a).expect("up");
        assert_eq!(m.live_connections(), 0, "{name}: slot still held");
        assert_eq!(
            m.dial(now, peer_c, [addr_c]),
            Ok(DialOutcome::Started),
            "{name}"
        );
    }

    // A failed handshake frees its slot too.
    let mut net = Network::new(8);
    let mut cfg = quiet_config();
    cfg.limits.max_connections = 1;
    let a = net.add_node("a", identity(1), cfg);
    let now = net.now();
    let m = net.manager(a).expect("up");
    m.dial(now, identity(9).peer_id(), [dead(1)])
        .expect("started");
    assert_eq!(
        m.dial(now, identity(8).peer_id(), [dead(2)]),
        Err(DialError::ConnectionLimit)
    );
    net.run_for(Duration::from_secs(6));
    assert_eq!(net.manager(a).map(|m| m.live_connections()), Some(0));
}

#[test]
fn at_capacity_inbound_handshakes_are_refused_and_dials_fail_typed() {
    let mut net = Network::new(9);
    let mut hub_cfg = quiet_config();
    hub_cfg.limits.max_connections = 2;
    hub_cfg.limits.max_pending_dials = 1;
    let hub = net.add_node("hub", identity(0), hub_cfg);
    let dialers: Vec<NodeId> = (1..=3)
        .map(|i| net.add_node(&format!("d{i}"), identity(i), quiet_config()))
        .collect();
    connect(&mut net, dialers[0], hub);
    connect(&mut net, dialers[1], hub);
    let since = net.now();
    net.dial(dialers[2], hub);
    net.run_for(Duration::from_millis(100));
    let (at, errors) = dial_failed(&net, dialers[2], since).expect("refused");
    assert_eq!(
        errors,
        vec![(
            net.addr(hub),
            Cause::HandshakeFailed(HandshakeFailure::Refused)
        )]
    );
    assert_eq!(
        at - since,
        Duration::from_millis(10),
        "refused in one round trip"
    );
    assert_eq!(net.manager(hub).map(|m| m.connected_peers().len()), Some(2));

    // The hub's own dials: one pending at most, and none past the connection limit.
    let now = net.now();
    let m = net.manager(hub).expect("up");
    assert_eq!(
        m.dial(now, identity(8).peer_id(), [dead(1)]),
        Err(DialError::ConnectionLimit)
    );
}

#[test]
fn pending_dials_are_bounded() {
    let mut net = Network::new(10);
    let mut cfg = quiet_config();
    cfg.limits.max_pending_dials = 1;
    let a = net.add_node("a", identity(1), cfg);
    let now = net.now();
    let m = net.manager(a).expect("up");
    assert_eq!(
        m.dial(now, identity(8).peer_id(), [dead(1)]),
        Ok(DialOutcome::Started)
    );
    assert_eq!(
        m.dial(now, identity(9).peer_id(), [dead(2)]),
        Err(DialError::TooManyPendingDials)
    );
}

#[test]
fn a_flapping_peer_is_refused_for_the_grace_period() {
    let mut net = Network::new(11);
    let hub = net.add_node("hub", identity(0), quiet_config());
    let d = net.add_node("d", identity(1), quiet_config());
    let peer_d = net.peer_id(d);
    // Two deaths within the grace period.
    for _ in 0..2 {
        let conn = connect(&mut net, d, hub);
        let now = net.now();
        net.manager(d).expect("up").close(now, conn);
        net.run_for(Duration::from_millis(50));
    }
    let since = net.now();
    let conn = connect(&mut net, d, hub);
    net.run_for(Duration::from_millis(50));
    assert_eq!(
        lost(&net, d, conn, since).map(|(_, c)| c),
        Some(Cause::ClosedByPeer {
            code: quicpeer::manager::CLOSE_LIMIT,
            reason: "connection limit".into()
        })
    );
    assert!(
        connected(&net, hub, peer_d, since).is_none(),
        "the hub never announced it"
    );

    // After the grace period the peer is welcome again.
    net.run_for(Config::default().limits.flap_grace);
    let since = net.now();
    let conn = connect(&mut net, d, hub);
    net.run_for(Duration::from_millis(100));
    assert_eq!(lost(&net, d, conn, since), None);
    assert!(connected(&net, hub, peer_d, since).is_some());
}

/// Connections that keep dying of something other than a restart (here idle timeouts: no
/// keep-alive) make the peer flapping: after the second death within `flap_grace` the
/// reconnect waits until the grace period has passed.
#[test]
fn reconnects_to_a_flapping_peer_wait_for_the_grace_period() {
    let mut net = Network::new(13);
    let mut cfg = config(Duration::from_secs(1), Duration::from_millis(100));
    cfg.keep_alive = None;
    cfg.suspicion_ptos = None;
    let a = net.add_node("a", identity(1), cfg.clone());
    let b = net.add_node("b", identity(2), cfg);
    let grace = Config::default().limits.flap_grace;
    let start = net.now();
    net.dial(a, b);
    net.run_for(Duration::from_secs(3));
    let losses: Vec<(Instant, Cause)> = net
        .events(a)
        .iter()
        .filter_map(|(at, e)| match e {
            Event::ConnectionLost { cause, .. } => Some((*at, cause.clone())),
            _ => None,
        })
        .collect();
    let reconnects: Vec<Instant> = net
        .events(a)
        .iter()
        .filter_map(|(at, e)| matches!(e, Event::Reconnecting { .. }).then_some(*at))
        .collect();
    assert!(losses.len() >= 3, "{losses:?}");
    assert!(losses[..2].iter().all(|(_, c)| *c == Cause::IdleTimeout));
    let (first, second) = (losses[0].0, losses[1].0);
    assert!(second - first < grace, "{losses:?}");
    // The first loss is redialed at once, the second waits for the grace period.
    assert_eq!(reconnects.first(), Some(&first));
    assert_eq!(reconnects.get(1), Some(&(second + grace)), "{reconnects:?}");
    println!(
        "idle-timeout flapping: deaths at +{} and +{}, second reconnect at +{}",
        ms(first - start),
        ms(second - start),
        ms(second + grace - start)
    );
}

#[test]
fn stateless_retry_under_load_costs_one_round_trip() {
    let mut net = Network::new(12);
    let mut hub_cfg = Config::default();
    hub_cfg.limits.retry_above = Some(0);
    let hub = net.add_node("hub", identity(0), hub_cfg);
    let d = net.add_node("d", identity(1), Config::default());
    let (peer_hub, start) = (net.peer_id(hub), net.now());
    net.dial(d, hub);
    assert!(
        net.run_until(Duration::from_secs(1), |n| connected(n, d, peer_hub, start)
            .is_some())
    );
    let (at, _) = connected(&net, d, peer_hub, start).expect("connected");
    assert_eq!(
        at - start,
        Duration::from_millis(20),
        "Retry, then the handshake"
    );
}

#[test]
fn unvalidated_handshakes_cannot_take_the_last_quarter_of_the_connection_table() {
    let mut net = Network::new(13);
    let mut hub_cfg = Config::default();
    hub_cfg.limits.max_connections = 8;
    // Far above the table: only the table's own reserve can send the silent clients to Retry.
    hub_cfg.limits.retry_above = Some(100);
    let hub = net.add_node("hub", identity(0), hub_cfg);
    // Eight clients whose Initials reach the hub and who then vanish: like forged sources,
    // they never answer, and each holds a handshake slot until the handshake times out.
    let silent: Vec<_> = (0..8)
        .map(|i| net.add_node(&format!("silent{i}"), identity(10 + i), Config::default()))
        .collect();
    for &s in &silent {
        net.dial(s, hub);
    }
    net.run_for(Duration::from_millis(1));
    for &s in &silent {
        net.stop(s);
    }
    net.run_for(Duration::from_millis(50));
    let metrics = net.manager(hub).expect("hub").metrics();
    // Six slots (three quarters of eight) went to unvalidated handshakes; the last two
    // silent clients were asked to prove their address instead.
    assert_eq!(metrics.handshaking, 6, "{metrics:?}");
    assert_eq!(metrics.retries_sent, 2, "{metrics:?}");

    // A real client still gets in, through a Retry, long before the silent ones time out.
    let newcomer = net.add_node("newcomer", identity(30), Config::default());
    let (peer_hub, start) = (net.peer_id(hub), net.now());
    net.dial(newcomer, hub);
    assert!(
        net.run_until(Duration::from_secs(1), |n| connected(
            n, newcomer, peer_hub, start
        )
        .is_some()),
        "the newcomer was locked out: {:?}",
        net.manager(hub).expect("hub").metrics()
    );
}
