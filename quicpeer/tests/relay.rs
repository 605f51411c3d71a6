//! The circuit relay v2 server in the deterministic simulation (`sim::Network<Relay>`): every
//! node runs a `Relay`, and the clients speak hop and stop by hand over their hosts' streams.

mod support;

use std::time::Duration;

use quicpeer::address::{to_multiaddr, Protocol};
use quicpeer::protocols::relay::{
    codec, CircuitEnd, End, FreeCause, HopMessage, Limit, Relay, RelayConfig, RelayEvent, Status,
    StopMessage, Voucher, HOP_PROTOCOL, STOP_PROTOCOL,
};
use quicpeer::protocols::{HostConfig, HostEvent};
use quicpeer::sim::{Network, NodeId};
use quicpeer::{Cause, Config, Event, PeerId, Read, StreamError, StreamId};
use support::{identity, init_tracing};

type Net = Network<Relay>;

struct Setup {
    net: Net,
    relay: NodeId,
    a: NodeId,
    b: NodeId,
}

fn setup(seed: u64, relay_config: RelayConfig) -> Setup {
    init_tracing();
    let mut net = Net::with_seed(seed);
    let config = (Config::default(), HostConfig::default(), relay_config);
    let relay = net.add_node("relay", identity(1), config.clone());
    let plain = (
        Config::default(),
        HostConfig::default(),
        RelayConfig::default(),
    );
    let a = net.add_node("a", identity(2), plain.clone());
    let b = net.add_node("b", identity(3), plain);
    let addr = to_multiaddr(net.addr(relay), None);
    relay_of(&mut net, relay).set_listen_addrs(vec![addr]);
    for client in [a, b] {
        client_up(&mut net, client, relay);
    }
    Setup { net, relay, a, b }
}

fn relay_of(net: &mut Net, node: NodeId) -> &mut Relay {
    net.machine(node).expect("node is up")
}

/// Registers the stop protocol on a client and connects it to the relay.
fn client_up(net: &mut Net, client: NodeId, relay: NodeId) {
    let host = relay_of(net, client).host_mut();
    host.register(STOP_PROTOCOL).expect("valid protocol");
    let from = net.events(client).len();
    let relay_peer = net.peer_id(relay);
    net.dial(client, relay);
    let up = net.run_until(Duration::from_secs(2), |n| {
        n.events(client)[from..].iter().any(|(_, e)| {
            matches!(e, RelayEvent::Host(HostEvent::Manager(Event::Connected { peer, .. })) if *peer == relay_peer)
        })
    });
    assert!(up, "client not connected to the relay");
    net.run_for(Duration::from_millis(50));
}

/// Reads what is readable; `true` once the stream finished.
fn read_into(
    net: &mut Net,
    node: NodeId,
    stream: StreamId,
    buf: &mut Vec<u8>,
) -> Result<bool, StreamError> {
    let manager = relay_of(net, node).host_mut().manager_mut();
    loop {
        match manager.stream_read(stream, 64 * 1024) {
            Ok(Read::Data(bytes)) => buf.extend_from_slice(&bytes),
            Ok(Read::Finished) => return Ok(true),
            Err(StreamError::Blocked) => return Ok(false),
            Err(error) => return Err(error),
        }
    }
}

/// Opens a hop stream from `client` to the relay; returns it with its leftover.
fn open_hop(net: &mut Net, client: NodeId, relay: NodeId) -> (StreamId, Vec<u8>) {
    let (now, relay_peer, from) = (net.now(), net.peer_id(relay), net.events(client).len());
    let id = (relay_of(net, client).host_mut())
        .open_stream(now, relay_peer, [HOP_PROTOCOL])
        .expect("open");
    let mut found = None;
    net.run_until(Duration::from_secs(1), |n| {
        found = n.events(client)[from..].iter().find_map(|(_, e)| match e {
            RelayEvent::Host(HostEvent::OutboundStream {
                id: i,
                stream,
                leftover,
                ..
            }) if *i == id => Some((*stream, leftover.to_vec())),
            _ => None,
        });
        found.is_some()
    });
    found.expect("hop stream negotiated")
}

fn write(net: &mut Net, node: NodeId, stream: StreamId, data: &[u8]) {
    let manager = relay_of(net, node).host_mut().manager_mut();
    assert_eq!(manager.stream_write(stream, data), Ok(data.len()));
}

/// Runs until one framed message arrived on `stream` (or the stream failed).
fn read_frame(
    net: &mut Net,
    node: NodeId,
    stream: StreamId,
    buf: &mut Vec<u8>,
) -> Result<Vec<u8>, StreamError> {
    for _ in 0..200 {
        read_into(net, node, stream, buf)?;
        if let Some(body) = codec::take_frame(buf).expect("valid frame") {
            return Ok(body);
        }
        net.run_for(Duration::from_millis(5));
    }
    panic!("no message within 1 s");
}

/// Sends `request` on a fresh hop stream and returns the relay's answer.
fn hop(
    net: &mut Net,
    client: NodeId,
    relay: NodeId,
    request: &[u8],
) -> Result<HopMessage, StreamError> {
    let (stream, mut buf) = open_hop(net, client, relay);
    write(net, client, stream, request);
    let body = read_frame(net, client, stream, &mut buf)?;
    Ok(HopMessage::decode(&body).expect("a hop message"))
}

fn status_of(message: &HopMessage) -> Status {
    match message {
        HopMessage::Status { status, .. } => *status,
        other => panic!("not a STATUS: {other:?}"),
    }
}

fn reserve(net: &mut Net, client: NodeId, relay: NodeId) -> HopMessage {
    hop(net, client, relay, &HopMessage::Reserve.encode()).expect("answered")
}

fn relay_events(net: &Net, relay: NodeId) -> Vec<RelayEvent> {
    (net.events(relay).iter())
        .map(|(_, e)| e.clone())
        .filter(|e| !matches!(e, RelayEvent::Host(_)))
        .collect()
}

#[test]
fn a_reservation_carries_addresses_a_voucher_and_limits() {
    let Setup {
        mut net, relay, a, ..
    } = setup(1, RelayConfig::default());
    let answer = reserve(&mut net, a, relay);
    let HopMessage::Status {
        status: Status::Ok,
        reservation: Some(reservation),
        limit,
    } = answer
    else {
        panic!("not accepted: {answer:?}");
    };
    let relay_peer = net.peer_id(relay);
    let expected = to_multiaddr(net.addr(relay), None).with(Protocol::P2p(relay_peer));
    assert_eq!(reservation.addrs, vec![expected]);
    let (voucher, _) = Voucher::open(&reservation.voucher.expect("voucher")).expect("verifies");
    assert_eq!(voucher.relay, relay_peer);
    assert_eq!(voucher.peer, net.peer_id(a));
    assert_eq!(voucher.expiration, reservation.expire);
    // The simulator's wall clock starts at 2026-01-01T00:00:00Z; the TTL is an hour.
    let sim_start = 1_767_225_600;
    let elapsed = net.elapsed().as_secs();
    assert!((sim_start + 3600..=sim_start + 3600 + elapsed).contains(&reservation.expire));
    assert_eq!(
        limit,
        Some(Limit {
            duration: Some(Duration::from_secs(120)),
            data: Some(1 << 17)
        })
    );
    let pa = net.peer_id(a);
    assert!(relay_of(&mut net, relay).has_reservation(&pa));
    // A second RESERVE on the same connection renews the reservation: one slot.
    assert_eq!(status_of(&reserve(&mut net, a, relay)), Status::Ok);
    assert_eq!(relay_of(&mut net, relay).slots_in_use(), 1);
    let renewed: Vec<bool> = (relay_events(&net, relay).into_iter())
        .filter_map(|e| match e {
            RelayEvent::ReservationAccepted { renewed, .. } => Some(renewed),
            _ => None,
        })
        .collect();
    assert_eq!(renewed, [false, true]);
}

#[test]
fn reservations_are_refused_at_each_limit() {
    type Tweak = fn(&mut RelayConfig);
    let cases: [(&str, Tweak); 3] = [
        ("total", |c| c.max_reservations = 1),
        ("per peer", |c| c.max_reservations_per_peer = 0),
        ("per ip", |c| c.max_reservations_per_ip = 0),
    ];
    for (name, limit) in cases {
        let mut config = RelayConfig::default();
        limit(&mut config);
        let Setup {
            mut net,
            relay,
            a,
            b,
        } = setup(2, config);
        let first = status_of(&reserve(&mut net, a, relay));
        let second = status_of(&reserve(&mut net, b, relay));
        let expected = if name == "total" {
            [Status::Ok, Status::ResourceLimitExceeded]
        } else {
            [Status::ResourceLimitExceeded; 2]
        };
        assert_eq!([first, second], expected, "{name}");
        let refused = (relay_events(&net, relay).iter())
            .filter(|e| {
                matches!(
                    e,
                    RelayEvent::ReservationRefused {
                        status: Status::ResourceLimitExceeded,
                        ..
                    }
                )
            })
            .count();
        assert_eq!(refused, if name == "total" { 1 } else { 2 }, "{name}");
    }
}

#[test]
fn a_crashed_client_gets_its_slot_back_at_once() {
    let mut config = RelayConfig::default();
    config.max_reservations = 1;
    config.max_reservations_per_peer = 1;
    let Setup {
        mut net,
        relay,
        a,
        b,
    } = setup(3, config);
    for round in 0..5 {
        assert_eq!(
            status_of(&reserve(&mut net, a, relay)),
            Status::Ok,
            "round {round}"
        );
        // Crash: state dropped, nothing sent; back with the same identity.
        let from = net.events(relay).len();
        net.restart(a);
        net.run_for(Duration::from_millis(200));
        client_up(&mut net, a, relay);
        let freed = net.events(relay)[from..].iter().find_map(|(_, e)| match e {
            RelayEvent::ReservationFreed {
                cause: FreeCause::ConnectionLost(cause),
                ..
            } => Some(cause.clone()),
            _ => None,
        });
        let cause = freed.expect("the dead connection's reservation is freed");
        assert!(
            matches!(cause, Cause::PeerRestarted | Cause::Superseded { .. }),
            "freed because {cause:?}"
        );
        // The relay is full, but the slot is held for this client, which takes it back.
        assert_eq!(relay_of(&mut net, relay).slots_in_use(), 1);
        assert_eq!(relay_of(&mut net, relay).reservation_count(), 0);
    }
    assert_eq!(status_of(&reserve(&mut net, a, relay)), Status::Ok);
    let reclaimed = (relay_events(&net, relay).iter())
        .filter(|e| {
            matches!(
                e,
                RelayEvent::ReservationAccepted {
                    reclaimed: true,
                    ..
                }
            )
        })
        .count();
    assert_eq!(reclaimed, 5);
    assert_eq!(relay_of(&mut net, relay).slots_in_use(), 1);
    // No one else gets the slot while it is taken.
    assert_eq!(
        status_of(&reserve(&mut net, b, relay)),
        Status::ResourceLimitExceeded
    );
}

#[test]
fn a_held_slot_is_released_after_the_grace_period() {
    let mut config = RelayConfig::default();
    config.max_reservations = 1;
    config.grace = Duration::from_secs(2);
    let Setup {
        mut net,
        relay,
        a,
        b,
    } = setup(4, config);
    assert_eq!(status_of(&reserve(&mut net, a, relay)), Status::Ok);
    net.restart(a);
    client_up(&mut net, a, relay);
    // a's slot is held for a: b is refused within the grace period...
    assert_eq!(
        status_of(&reserve(&mut net, b, relay)),
        Status::ResourceLimitExceeded
    );
    // ...and served after it.
    net.run_for(Duration::from_secs(2));
    assert_eq!(relay_of(&mut net, relay).slots_in_use(), 0);
    assert_eq!(status_of(&reserve(&mut net, b, relay)), Status::Ok);
    // Now a is the one refused.
    assert_eq!(
        status_of(&reserve(&mut net, a, relay)),
        Status::ResourceLimitExceeded
    );
}

/// `b` connects to `a` through the relay; `a` accepts. Returns (b's hop stream, b's buffer,
/// a's stop stream, a's buffer).
fn circuit(
    net: &mut Net,
    relay: NodeId,
    a: NodeId,
    b: NodeId,
) -> (StreamId, Vec<u8>, StreamId, Vec<u8>, Option<Limit>) {
    let (hop_stream, mut hop_buf) = open_hop(net, b, relay);
    let from = net.events(a).len();
    write(
        net,
        b,
        hop_stream,
        &HopMessage::Connect {
            peer: net.peer_id(a),
        }
        .encode(),
    );
    let mut stop = None;
    net.run_until(Duration::from_secs(1), |n| {
        stop = n.events(a)[from..].iter().find_map(|(_, e)| match e {
            RelayEvent::Host(HostEvent::InboundStream {
                stream,
                protocol,
                leftover,
                ..
            }) if protocol == STOP_PROTOCOL => Some((*stream, leftover.to_vec())),
            _ => None,
        });
        stop.is_some()
    });
    let (stop_stream, mut stop_buf) = stop.expect("a stop stream reaches a");
    let body = read_frame(net, a, stop_stream, &mut stop_buf).expect("stop CONNECT");
    let StopMessage::Connect { peer, limit } = StopMessage::decode(&body).expect("stop message")
    else {
        panic!("not a CONNECT");
    };
    assert_eq!(peer, net.peer_id(b));
    write(
        net,
        a,
        stop_stream,
        &StopMessage::Status(Status::Ok).encode(),
    );
    let body = read_frame(net, b, hop_stream, &mut hop_buf).expect("hop STATUS");
    let answer = HopMessage::decode(&body).expect("hop message");
    assert_eq!(status_of(&answer), Status::Ok);
    (hop_stream, hop_buf, stop_stream, stop_buf, limit)
}

/// Runs until `want` bytes arrived on `stream`.
fn receive(net: &mut Net, node: NodeId, stream: StreamId, buf: &mut Vec<u8>, want: usize) -> bool {
    let mut finished = false;
    for _ in 0..400 {
        finished |= read_into(net, node, stream, buf).expect("stream alive");
        if buf.len() >= want {
            return finished;
        }
        net.run_for(Duration::from_millis(5));
    }
    panic!("only {} of {want} bytes arrived", buf.len());
}

/// Runs until `stream` finished; whether it did within 2 s.
fn finished(net: &mut Net, node: NodeId, stream: StreamId, buf: &mut Vec<u8>) -> bool {
    for _ in 0..400 {
        if read_into(net, node, stream, buf).expect("stream alive") {
            return true;
        }
        net.run_for(Duration::from_millis(5));
    }
    false
}

#[test]
fn a_circuit_splices_bytes_both_ways_and_counts_them() {
    let Setup {
        mut net,
        relay,
        a,
        b,
    } = setup(5, RelayConfig::default());
    assert_eq!(status_of(&reserve(&mut net, a, relay)), Status::Ok);
    let (hop_stream, mut hop_buf, stop_stream, mut stop_buf, limit) =
        circuit(&mut net, relay, a, b);
    assert_eq!(limit.and_then(|l| l.data), Some(1 << 17));
    // 40 KiB one way (more than one splice chunk), 3 bytes back.
    let big: Vec<u8> = (0..40 * 1024).map(|i| (i % 251) as u8).collect();
    let mut sent = 0;
    while sent < big.len() {
        let manager = relay_of(&mut net, b).host_mut().manager_mut();
        match manager.stream_write(hop_stream, &big[sent..]) {
            Ok(n) => sent += n,
            Err(StreamError::Blocked) => {}
            Err(e) => panic!("write failed: {e}"),
        }
        receive(&mut net, a, stop_stream, &mut stop_buf, 0);
        net.run_for(Duration::from_millis(5));
    }
    receive(&mut net, a, stop_stream, &mut stop_buf, big.len());
    assert_eq!(stop_buf, big);
    write(&mut net, a, stop_stream, b"pong");
    receive(&mut net, b, hop_stream, &mut hop_buf, 4);
    assert_eq!(hop_buf, b"pong");
    // Both finish: the circuit ends as done.
    for (node, stream) in [(a, stop_stream), (b, hop_stream)] {
        relay_of(&mut net, node)
            .host_mut()
            .manager_mut()
            .stream_finish(stream)
            .expect("finish");
    }
    assert!(finished(&mut net, a, stop_stream, &mut stop_buf));
    assert!(finished(&mut net, b, hop_stream, &mut hop_buf));
    assert_eq!((stop_buf.len(), hop_buf.len()), (big.len(), 4));
    net.run_for(Duration::from_millis(50));
    let closed = relay_events(&net, relay).into_iter().find_map(|e| match e {
        RelayEvent::CircuitClosed {
            to_dst,
            to_src,
            reason,
            ..
        } => Some((to_dst, to_src, reason)),
        _ => None,
    });
    assert_eq!(closed, Some((big.len() as u64, 4, CircuitEnd::Done)));
    assert_eq!(relay_of(&mut net, relay).circuit_count(), 0);
}

#[test]
fn a_circuit_ends_at_its_data_limit_and_when_an_end_dies() {
    let mut config = RelayConfig::default();
    config.circuit_bytes = 1000;
    let Setup {
        mut net,
        relay,
        a,
        b,
    } = setup(6, config);
    assert_eq!(status_of(&reserve(&mut net, a, relay)), Status::Ok);
    let (hop_stream, ..) = circuit(&mut net, relay, a, b);
    write(&mut net, b, hop_stream, &[7; 1500]);
    net.run_for(Duration::from_millis(100));
    assert!(relay_events(&net, relay).iter().any(|e| matches!(
        e,
        RelayEvent::CircuitClosed {
            reason: CircuitEnd::DataLimit,
            ..
        }
    )));
    // A second circuit, then a crashes: the circuit ends in the call that reports it.
    let (hop_stream, mut hop_buf, ..) = circuit(&mut net, relay, a, b);
    net.restart(a);
    client_up(&mut net, a, relay);
    net.run_for(Duration::from_millis(50));
    let ended = relay_events(&net, relay).into_iter().find_map(|e| match e {
        RelayEvent::CircuitClosed {
            reason: CircuitEnd::ConnectionLost(end, _),
            ..
        } => Some(end),
        _ => None,
    });
    assert_eq!(ended, Some(End::Destination));
    assert!(matches!(
        read_into(&mut net, b, hop_stream, &mut hop_buf),
        Err(StreamError::Reset(_))
    ));
}

#[test]
fn after_a_restart_circuits_reach_the_new_connection() {
    let Setup {
        mut net,
        relay,
        a,
        b,
    } = setup(7, RelayConfig::default());
    assert_eq!(status_of(&reserve(&mut net, a, relay)), Status::Ok);
    net.restart(a);
    client_up(&mut net, a, relay);
    assert_eq!(status_of(&reserve(&mut net, a, relay)), Status::Ok);
    // The first dial through the relay works.
    let (hop_stream, mut hop_buf, stop_stream, _, _) = circuit(&mut net, relay, a, b);
    write(&mut net, a, stop_stream, b"hi");
    receive(&mut net, b, hop_stream, &mut hop_buf, 2);
    assert_eq!(hop_buf, b"hi");
}

#[test]
fn connect_refusals_carry_the_spec_status() {
    let Setup {
        mut net,
        relay,
        a,
        b,
    } = setup(8, RelayConfig::default());
    let (pa, pb) = (net.peer_id(a), net.peer_id(b));
    let connect = |peer: PeerId| HopMessage::Connect { peer }.encode();
    // No reservation yet.
    let answer = hop(&mut net, b, relay, &connect(pa)).expect("answered");
    assert_eq!(status_of(&answer), Status::NoReservation);
    // To oneself, even with a reservation.
    assert_eq!(status_of(&reserve(&mut net, b, relay)), Status::Ok);
    let answer = hop(&mut net, b, relay, &connect(pb)).expect("answered");
    assert_eq!(status_of(&answer), Status::PermissionDenied);
    // To the relay itself.
    let to_relay = connect(net.peer_id(relay));
    let answer = hop(&mut net, b, relay, &to_relay).expect("answered");
    assert_eq!(status_of(&answer), Status::PermissionDenied);
    // To a peer that holds a reservation but refuses the stop CONNECT.
    assert_eq!(status_of(&reserve(&mut net, a, relay)), Status::Ok);
    relay_of(&mut net, a).host_mut().unregister(STOP_PROTOCOL);
    let answer = hop(&mut net, b, relay, &connect(pa)).expect("answered");
    assert_eq!(status_of(&answer), Status::ConnectionFailed);
    let refused: Vec<Status> = (relay_events(&net, relay).into_iter())
        .filter_map(|e| match e {
            RelayEvent::CircuitRefused { status, .. } => Some(status),
            _ => None,
        })
        .collect();
    assert_eq!(
        refused,
        [
            Status::NoReservation,
            Status::PermissionDenied,
            Status::PermissionDenied,
            Status::ConnectionFailed
        ]
    );
}

#[test]
fn circuits_are_refused_at_their_limits() {
    let mut config = RelayConfig::default();
    config.max_circuits = 1;
    let Setup {
        mut net,
        relay,
        a,
        b,
    } = setup(9, config);
    assert_eq!(status_of(&reserve(&mut net, a, relay)), Status::Ok);
    let _open = circuit(&mut net, relay, a, b);
    let connect = HopMessage::Connect {
        peer: net.peer_id(a),
    };
    let answer = hop(&mut net, b, relay, &connect.encode());
    assert_eq!(
        status_of(&answer.expect("answered")),
        Status::ResourceLimitExceeded
    );
}

#[test]
fn bad_requests_get_a_status_or_a_reset() {
    let Setup {
        mut net, relay, a, ..
    } = setup(10, RelayConfig::default());
    // Not protobuf.
    let answer = hop(&mut net, a, relay, &[2, 0xff, 0xff]).expect("answered");
    assert_eq!(status_of(&answer), Status::MalformedMessage);
    // No type.
    let answer = hop(&mut net, a, relay, &[0]).expect("answered");
    assert_eq!(status_of(&answer), Status::MalformedMessage);
    // A STATUS sent to the relay.
    let status = HopMessage::Status {
        status: Status::Ok,
        reservation: None,
        limit: None,
    };
    let answer = hop(&mut net, a, relay, &status.encode()).expect("answered");
    assert_eq!(status_of(&answer), Status::UnexpectedMessage);
    // Over 4 KiB: the stream is reset before the body is read.
    let mut oversize = vec![0x81, 0x20];
    oversize.extend_from_slice(&[0; 1000]);
    let answer = hop(&mut net, a, relay, &oversize);
    assert!(matches!(answer, Err(StreamError::Reset(_))), "{answer:?}");
    let bad: Vec<Option<Status>> = (relay_events(&net, relay).into_iter())
        .filter_map(|e| match e {
            RelayEvent::BadRequest { status, .. } => Some(status),
            _ => None,
        })
        .collect();
    assert_eq!(
        bad,
        [
            Some(Status::MalformedMessage),
            Some(Status::MalformedMessage),
            Some(Status::UnexpectedMessage),
            None
        ]
    );
    assert_eq!(relay_of(&mut net, relay).slots_in_use(), 0);
}

#[test]
fn a_circuit_ends_at_its_duration_unless_a_peer_is_unlimited() {
    let mut config = RelayConfig::default();
    config.circuit_duration = Duration::from_secs(1);
    let Setup {
        mut net,
        relay,
        a,
        b,
    } = setup(11, config.clone());
    assert_eq!(status_of(&reserve(&mut net, a, relay)), Status::Ok);
    let (_, _, _, _, limit) = circuit(&mut net, relay, a, b);
    assert_eq!(limit.and_then(|l| l.duration), Some(Duration::from_secs(1)));
    net.run_for(Duration::from_millis(1100));
    assert!(relay_events(&net, relay).iter().any(|e| matches!(
        e,
        RelayEvent::CircuitClosed {
            reason: CircuitEnd::DurationLimit,
            ..
        }
    )));
    // With b trusted: no limit sent, and the circuit outlives the duration.
    config.unlimited.insert(net.peer_id(b));
    let Setup {
        mut net,
        relay,
        a,
        b,
    } = setup(12, config);
    assert_eq!(status_of(&reserve(&mut net, a, relay)), Status::Ok);
    let (hop_stream, mut hop_buf, stop_stream, _, limit) = circuit(&mut net, relay, a, b);
    assert_eq!(limit, None);
    net.run_for(Duration::from_secs(3));
    write(&mut net, a, stop_stream, &[1; 5000]);
    receive(&mut net, b, hop_stream, &mut hop_buf, 5000);
    assert_eq!(relay_of(&mut net, relay).circuit_count(), 1);
}

#[test]
fn silent_requests_are_bounded_in_number_and_in_time() {
    let mut config = RelayConfig::default();
    config.max_pending = 1;
    config.message_timeout = Duration::from_secs(2);
    let Setup {
        mut net, relay, a, ..
    } = setup(13, config);
    // One hop stream that says nothing holds the only place...
    let (silent, mut silent_buf) = open_hop(&mut net, a, relay);
    write(&mut net, a, silent, &[0x80]);
    // ...so the next is reset as soon as it is negotiated (the client may see the reset
    // before the negotiation's answer: then its open fails).
    let (now, relay_peer, from) = (net.now(), net.peer_id(relay), net.events(a).len());
    let id = (relay_of(&mut net, a).host_mut())
        .open_stream(now, relay_peer, [HOP_PROTOCOL])
        .expect("open");
    net.run_for(Duration::from_millis(100));
    let outcome = net.events(a)[from..].iter().find_map(|(_, e)| match e {
        RelayEvent::Host(HostEvent::OutboundStream { id: i, stream, .. }) if *i == id => {
            Some(Some(*stream))
        }
        RelayEvent::Host(HostEvent::OutboundFailed { id: i, .. }) if *i == id => Some(None),
        _ => None,
    });
    if let Some(Some(second)) = outcome {
        assert!(matches!(
            read_into(&mut net, a, second, &mut Vec::new()),
            Err(StreamError::Reset(_))
        ));
    } else {
        assert_eq!(
            outcome,
            Some(None),
            "the second hop stream neither failed nor opened"
        );
    }
    let pa = net.peer_id(a);
    assert!(!relay_of(&mut net, relay).has_reservation(&pa));
    // The silent one is reset at its deadline, and its place is free again.
    net.run_for(Duration::from_secs(2));
    assert!(matches!(
        read_into(&mut net, a, silent, &mut silent_buf),
        Err(StreamError::Reset(_))
    ));
    assert_eq!(status_of(&reserve(&mut net, a, relay)), Status::Ok);
}

/// A fleet asks for reservations at the same moment (as after a relay restart): the relay
/// answers and finishes hundreds of hop streams at once, and the acknowledgements of those
/// answers (`StreamFinished`) must not reach the relay's application, which owns no stream.
/// The relay once remembered only its last 256 closed streams.
#[test]
fn a_burst_of_answered_reservations_leaves_no_late_events() {
    const CLIENTS: u8 = 160;
    const STREAMS_EACH: usize = 2;
    let mut config = RelayConfig::default();
    // Every hop stream waits for its request at once.
    config.max_pending = STREAMS_EACH * usize::from(CLIENTS);
    let Setup {
        mut net,
        relay,
        a,
        b,
    } = setup(12, config);
    let plain = (
        Config::default(),
        HostConfig::default(),
        RelayConfig::default(),
    );
    let mut clients = vec![a, b];
    for i in 0..CLIENTS - 2 {
        let client = net.add_node(&format!("c{i}"), identity(10 + i), plain.clone());
        client_up(&mut net, client, relay);
        clients.push(client);
    }
    let streams: Vec<(NodeId, StreamId)> = (clients.iter())
        .flat_map(|&client| std::iter::repeat_n(client, STREAMS_EACH))
        .map(|client| (client, open_hop(&mut net, client, relay).0))
        .collect();
    let from = net.events(relay).len();
    // Every request written at the same instant.
    for &(client, stream) in &streams {
        write(&mut net, client, stream, &HopMessage::Reserve.encode());
    }
    net.run_for(Duration::from_secs(2));
    let events = &net.events(relay)[from..];
    let late: Vec<_> = (events.iter())
        .filter(|(_, e)| {
            matches!(
                e,
                RelayEvent::Host(HostEvent::Manager(
                    Event::StreamReadable { .. }
                        | Event::StreamWritable { .. }
                        | Event::StreamFinished { .. }
                        | Event::StreamStopped { .. }
                ))
            )
        })
        .collect();
    assert!(
        late.is_empty(),
        "{} late events: {:?}",
        late.len(),
        late.first()
    );
    // Every request was answered (a reservation, or a refusal past the limits).
    let mut answered = 0;
    for &(client, stream) in &streams {
        let mut buf = Vec::new();
        if read_frame(&mut net, client, stream, &mut buf).is_ok() {
            answered += 1;
        }
    }
    assert_eq!(answered, streams.len());
}
