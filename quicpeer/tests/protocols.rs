//! libp2p stream protocols over the manager: multistream-select and ping through `Host`, in the
//! deterministic simulation (`sim::Network<Host>`).

mod support;

use std::time::Duration;

use bytes::Bytes;
use quicpeer::address::to_multiaddr;
use quicpeer::protocols::multistream;
use quicpeer::protocols::{
    ping, Host, HostConfig, HostEvent, OutboundId, PingStartError, StreamFailure,
};
use quicpeer::sim::{Link, Network, NodeId};
use quicpeer::{Cause, Config, ConnId, Event, PeerId, Read, StreamError, StreamId};
use support::{identity, init_tracing, ms, xorshift};

const LATENCY: Duration = Duration::from_millis(5);
const ECHO: &str = "/test/echo/1.0.0";

type Net = Network<Host>;

fn hosts(seed: u64) -> (Net, NodeId, NodeId) {
    init_tracing();
    let mut net = Net::with_seed(seed);
    let config = (Config::default(), HostConfig::default());
    let a = net.add_node("a", identity(1), config.clone());
    let b = net.add_node("b", identity(2), config);
    (net, a, b)
}

fn host(net: &mut Net, node: NodeId) -> &mut Host {
    net.machine(node).expect("node is up")
}

/// The first event of `node` from index `from` on that `pick` maps to something.
fn find<T>(
    net: &Net,
    node: NodeId,
    from: usize,
    pick: impl FnMut(&HostEvent) -> Option<T>,
) -> Option<T> {
    net.events(node)
        .get(from..)
        .unwrap_or_default()
        .iter()
        .map(|(_, e)| e)
        .find_map(pick)
}

fn connected_to(peer: PeerId) -> impl Fn(&HostEvent) -> Option<ConnId> {
    move |e| match e {
        HostEvent::Manager(Event::Connected { peer: p, conn, .. }) if *p == peer => Some(*conn),
        _ => None,
    }
}

/// Connects `a` to `b`; returns `a`'s connection.
fn connect(net: &mut Net, a: NodeId, b: NodeId) -> ConnId {
    let (from, peer) = (net.events(a).len(), net.peer_id(b));
    net.dial(a, b);
    let up = net.run_until(Duration::from_secs(1), |n| {
        find(n, a, from, connected_to(peer)).is_some()
    });
    assert!(up, "no connection within 1 s");
    net.run_for(Duration::from_millis(50));
    find(net, a, from, connected_to(peer)).expect("connected")
}

fn ping_outcome(
    peer: PeerId,
) -> impl Fn(&HostEvent) -> Option<(ConnId, Result<Duration, StreamFailure>)> {
    move |e| match e {
        HostEvent::PingResult { peer: p, conn, rtt } if *p == peer => Some((*conn, Ok(*rtt))),
        HostEvent::PingFailed {
            peer: p,
            conn,
            error,
        } if *p == peer => Some((*conn, Err(error.clone()))),
        _ => None,
    }
}

/// `a` pings `b` and waits up to `limit` for the outcome.
fn ping(
    net: &mut Net,
    a: NodeId,
    b: NodeId,
    limit: Duration,
) -> (ConnId, Result<Duration, StreamFailure>) {
    let (from, peer, now) = (net.events(a).len(), net.peer_id(b), net.now());
    let conn = host(net, a).ping(now, peer).expect("ping started");
    net.run_until(limit, |n| find(n, a, from, ping_outcome(peer)).is_some());
    let (pinged, outcome) = find(net, a, from, ping_outcome(peer)).expect("ping outcome");
    assert_eq!(pinged, conn);
    (conn, outcome)
}

/// Reads what is readable on a stream the application holds.
fn read_all(net: &mut Net, node: NodeId, stream: StreamId) -> (Vec<u8>, bool) {
    let manager = host(net, node).manager_mut();
    let mut data = Vec::new();
    loop {
        match manager.stream_read(stream, 4096) {
            Ok(Read::Data(bytes)) => data.extend_from_slice(&bytes),
            Ok(Read::Finished) => return (data, true),
            Err(StreamError::Blocked) => return (data, false),
            Err(e) => panic!("read failed: {e}"),
        }
    }
}

fn frame(message: &str) -> Vec<u8> {
    assert!(message.len() < 127, "a one-byte length prefix");
    let mut out = vec![message.len() as u8 + 1];
    out.extend_from_slice(message.as_bytes());
    out.push(b'\n');
    out
}

#[test]
fn ping_works_both_ways_with_an_rtt_of_two_link_latencies() {
    let (mut net, a, b) = hosts(1);
    connect(&mut net, a, b);
    for (from, to) in [(a, b), (b, a), (a, b)] {
        let (_, rtt) = ping(&mut net, from, to, Duration::from_secs(1));
        let rtt = rtt.expect("pong");
        assert!(
            rtt >= 2 * LATENCY && rtt <= 2 * LATENCY + Duration::from_millis(1),
            "rtt {}",
            ms(rtt)
        );
        println!("ping rtt {} (link latency {})", ms(rtt), ms(LATENCY));
    }
    // Each side holds its own ping stream and the other's.
    assert_eq!(host(&mut net, a).stream_count(), 2);
    assert_eq!(host(&mut net, b).stream_count(), 2);
}

#[test]
fn one_ping_stream_carries_many_pings() {
    let (mut net, a, b) = hosts(2);
    let conn = connect(&mut net, a, b);
    let peer_b = net.peer_id(b);
    for i in 0..200 {
        let (pinged, rtt) = ping(&mut net, a, b, Duration::from_secs(1));
        assert_eq!(pinged, conn);
        assert!(rtt.is_ok(), "ping {i}: {rtt:?}");
        // Pings in flight are refused, not queued.
        if i == 0 {
            let now = net.now();
            host(&mut net, a).ping(now, peer_b).expect("idle again");
            assert_eq!(
                host(&mut net, a).ping(now, peer_b),
                Err(quicpeer::protocols::PingStartError::InFlight)
            );
            net.run_for(Duration::from_millis(50));
        }
    }
    assert_eq!(host(&mut net, a).stream_count(), 1);
    assert_eq!(host(&mut net, b).stream_count(), 1);
    let inbound = net
        .events(b)
        .iter()
        .filter(|(_, e)| matches!(e, HostEvent::InboundStream { .. }))
        .count();
    assert_eq!(
        inbound, 0,
        "ping streams are never handed to the application"
    );
}

#[test]
fn a_registered_protocol_is_negotiated_and_handed_over() {
    let (mut net, a, b) = hosts(3);
    connect(&mut net, a, b);
    host(&mut net, b).register(ECHO).expect("valid name");
    let (peer_a, peer_b, now) = (net.peer_id(a), net.peer_id(b), net.now());
    let (from_a, from_b) = (net.events(a).len(), net.events(b).len());
    let open = host(&mut net, a)
        .open_stream(now, peer_b, ["/test/echo/2.0.0", ECHO])
        .expect("opened");
    net.run_for(Duration::from_millis(50));

    let (stream, opened) = find(&net, a, from_a, |e| match e {
        HostEvent::OutboundStream {
            peer,
            id,
            stream,
            protocol,
            leftover,
        } if *id == open => Some((*stream, (*peer, protocol.clone(), leftover.clone()))),
        _ => None,
    })
    .expect("negotiated");
    assert_eq!(opened, (peer_b, ECHO.to_owned(), Bytes::new()));
    let inbound = net.events(b)[from_b..]
        .iter()
        .position(|(_, e)| matches!(e, HostEvent::InboundStream { .. }))
        .map(|i| from_b + i)
        .expect("handed over to b");
    let HostEvent::InboundStream {
        peer,
        stream: theirs,
        protocol,
        leftover,
    } = net.events(b)[inbound].1.clone()
    else {
        unreachable!()
    };
    assert_eq!((peer, protocol.as_str()), (peer_a, ECHO));
    assert!(leftover.is_empty());
    // A readable event follows at once, so bytes already there are not missed.
    assert_eq!(
        net.events(b)[inbound + 1].1,
        HostEvent::Manager(Event::StreamReadable { stream: theirs })
    );
    assert_eq!(host(&mut net, a).stream_count(), 0);
    assert_eq!(host(&mut net, b).stream_count(), 0);

    // The application protocol: a sends, b echoes and finishes.
    let m = host(&mut net, a).manager_mut();
    m.stream_write(stream, b"hello").expect("write");
    m.stream_finish(stream).expect("finish");
    net.run_for(Duration::from_millis(50));
    assert_eq!(read_all(&mut net, b, theirs), (b"hello".to_vec(), true));
    let readable = net.events(b)[inbound + 2..].iter().any(|(_, e)| match e {
        HostEvent::Manager(Event::StreamReadable { stream }) => *stream == theirs,
        _ => false,
    });
    assert!(readable, "the data's own readable event passes through");
    let m = host(&mut net, b).manager_mut();
    m.stream_write(theirs, b"hello").expect("write");
    m.stream_finish(theirs).expect("finish");
    net.run_for(Duration::from_millis(50));
    assert_eq!(read_all(&mut net, a, stream), (b"hello".to_vec(), true));
    // The manager's stream events pass through for the application's streams only.
    assert!(!net.events(b)[from_b..]
        .iter()
        .any(|(_, e)| matches!(e, HostEvent::Manager(Event::StreamOpened { .. }))));
}

#[test]
fn an_unsupported_protocol_gets_na_and_a_typed_failure() {
    let (mut net, a, b) = hosts(4);
    connect(&mut net, a, b);
    let (peer_b, now, from) = (net.peer_id(b), net.now(), net.events(a).len());
    let open = host(&mut net, a)
        .open_stream(now, peer_b, ["/nope/1", "/nope/2"])
        .expect("opened");
    net.run_for(Duration::from_millis(50));
    let failed = find(&net, a, from, |e| match e {
        HostEvent::OutboundFailed { id, error, .. } if *id == open => Some(error.clone()),
        _ => None,
    });
    assert_eq!(
        failed,
        Some(StreamFailure::Unsupported {
            proposed: vec!["/nope/1".into(), "/nope/2".into()]
        })
    );
    // Both sides let go of the stream; the connection is fine.
    net.run_for(Duration::from_millis(50));
    assert_eq!(host(&mut net, a).stream_count(), 0);
    assert_eq!(host(&mut net, b).stream_count(), 0);
    assert!(ping(&mut net, a, b, Duration::from_secs(1)).1.is_ok());
}

#[test]
fn registering_checks_names_and_unregistering_refuses_again() {
    let (mut net, a, b) = hosts(12);
    connect(&mut net, a, b);
    let h = host(&mut net, b);
    assert_eq!(
        h.register(ping::PROTOCOL),
        Err(multistream::ProtocolNameError::Reserved(
            ping::PROTOCOL.into()
        ))
    );
    assert_eq!(
        h.register("echo"),
        Err(multistream::ProtocolNameError::NoLeadingSlash(
            "echo".into()
        ))
    );
    h.register(ECHO).expect("valid name");
    assert_eq!(h.protocols().collect::<Vec<_>>(), [ping::PROTOCOL, ECHO]);
    assert!(h.unregister(ECHO));
    assert!(!h.unregister(ECHO));
    let (peer_b, now, from) = (net.peer_id(b), net.now(), net.events(a).len());
    let open = host(&mut net, a)
        .open_stream(now, peer_b, [ECHO])
        .expect("open");
    net.run_for(Duration::from_millis(50));
    let failed = find(&net, a, from, |e| match e {
        HostEvent::OutboundFailed { id, error, .. } if *id == open => Some(error.clone()),
        _ => None,
    });
    assert_eq!(
        failed,
        Some(StreamFailure::Unsupported {
            proposed: vec![ECHO.into()]
        })
    );
    assert_eq!(
        host(&mut net, a).open_stream(now, peer_b, Vec::<String>::new()),
        Err(quicpeer::protocols::OpenError::InvalidProtocol(
            multistream::ProtocolNameError::NoProtocols
        ))
    );
    let stranger = identity(9).peer_id();
    assert_eq!(
        host(&mut net, a).open_stream(now, stranger, [ECHO]),
        Err(quicpeer::protocols::OpenError::NotConnected)
    );
    assert_eq!(
        host(&mut net, a).ping(now, stranger),
        Err(quicpeer::protocols::PingStartError::NotConnected)
    );
}

#[test]
fn a_lazy_dialer_s_first_data_arrives_as_leftover() {
    let (mut net, a, b) = hosts(5);
    let conn = connect(&mut net, a, b);
    host(&mut net, b).register(ECHO).expect("valid name");
    let from = net.events(b).len();
    // Header, proposal and data in one write, as rust-libp2p's V1Lazy dialer does.
    let mut bytes = frame(multistream::HEADER);
    bytes.extend(frame(ECHO));
    bytes.extend_from_slice(b"early data");
    let m = host(&mut net, a).manager_mut();
    let stream = m.open_stream(conn).expect("stream");
    m.stream_write(stream, &bytes).expect("write");
    net.run_for(Duration::from_millis(50));
    let leftover = find(&net, b, from, |e| match e {
        HostEvent::InboundStream { leftover, .. } => Some(leftover.clone()),
        _ => None,
    });
    assert_eq!(leftover, Some(Bytes::from_static(b"early data")));
    // a sees the listener's answer on its raw stream.
    let mut answer = frame(multistream::HEADER);
    answer.extend(frame(ECHO));
    assert_eq!(read_all(&mut net, a, stream), (answer, false));
}

#[test]
fn after_the_peer_restarts_pings_run_on_the_new_connection() {
    let (mut net, a, b) = hosts(6);
    let old = connect(&mut net, a, b);
    assert!(ping(&mut net, a, b, Duration::from_secs(1)).1.is_ok());

    net.restart(b);
    // The first ping's packet draws the stateless reset: the ping fails with the cause.
    let (conn, outcome) = ping(&mut net, a, b, Duration::from_secs(1));
    assert_eq!(conn, old);
    assert_eq!(
        outcome,
        Err(StreamFailure::ConnectionLost(Cause::PeerRestarted))
    );
    // Nothing of the old connection is left in the host.
    assert_eq!(host(&mut net, a).stream_count(), 0);
    let peer_b = net.peer_id(b);
    let from = net.events(a).len();
    net.run_until(Duration::from_secs(1), |n| {
        find(n, a, from, connected_to(peer_b)).is_some()
    });
    net.run_for(Duration::from_millis(50));
    let (conn, outcome) = ping(&mut net, a, b, Duration::from_secs(1));
    assert_ne!(conn, old);
    assert!(outcome.is_ok(), "{outcome:?}");
    // And the restarted side pings back.
    assert!(ping(&mut net, b, a, Duration::from_secs(1)).1.is_ok());
}

#[test]
fn streams_of_a_closed_connection_are_dropped_at_once() {
    let (mut net, a, b) = hosts(7);
    let conn = connect(&mut net, a, b);
    host(&mut net, b).register(ECHO).expect("valid name");
    let (peer_b, now, from) = (net.peer_id(b), net.now(), net.events(a).len());
    let h = host(&mut net, a);
    h.ping(now, peer_b).expect("ping");
    let open = h.open_stream(now, peer_b, [ECHO]).expect("open");
    assert_eq!(h.stream_count(), 2);
    h.manager_mut().close(now, conn);
    // Nothing moved on the network: the host's next poll sees the loss and reports it.
    let mut buf = Vec::new();
    while quicpeer::SansIo::poll_transmit(h, now, &mut buf).is_some() {}
    let mut events = Vec::new();
    while let Some(event) = quicpeer::SansIo::poll_event(h) {
        events.push(event);
    }
    assert_eq!(h.stream_count(), 0);
    let cause = StreamFailure::ConnectionLost(Cause::ClosedLocally);
    let peer_b_lost = net.peer_id(b);
    assert!(events.contains(&HostEvent::PingFailed {
        peer: peer_b_lost,
        conn,
        error: cause.clone()
    }));
    assert!(events.iter().any(|e| matches!(
        e,
        HostEvent::OutboundFailed { peer, id, stream: Some(_), error }
            if *peer == peer_b && *id == open && *error == cause
    )));
    // The host's streams are not among the application's unfinished ones.
    let unfinished = events.iter().find_map(|e| match e {
        HostEvent::Manager(Event::ConnectionLost {
            unfinished_streams, ..
        }) => Some(unfinished_streams.clone()),
        _ => None,
    });
    assert_eq!(unfinished, Some(Vec::new()));
    net.run_for(Duration::from_millis(50));
    assert!(net.events(a)[from..].is_empty());
    assert_eq!(host(&mut net, b).stream_count(), 0);
}

#[test]
fn a_silent_peer_times_pings_and_negotiations_out() {
    init_tracing();
    let mut net = Net::with_seed(8);
    let mut config = Config::default();
    config.idle_timeout = Duration::from_secs(30);
    let host_config = HostConfig::new(Duration::from_secs(2), Duration::from_secs(1));
    let a = net.add_node("a", identity(1), (config.clone(), host_config.clone()));
    let b = net.add_node("b", identity(2), (config, host_config.clone()));
    let conn = connect(&mut net, a, b);
    host(&mut net, b).register(ECHO).expect("valid name");
    net.set_link(a, b, Link::down());
    let (peer_b, start, from) = (net.peer_id(b), net.now(), net.events(a).len());
    let open = host(&mut net, a)
        .open_stream(start, peer_b, [ECHO])
        .expect("open");
    let (_, outcome) = ping(&mut net, a, b, Duration::from_secs(5));
    assert_eq!(outcome, Err(StreamFailure::TimedOut));
    net.run_for(Duration::from_secs(2));
    let (at, error) = net.events(a)[from..]
        .iter()
        .find_map(|(at, e)| match e {
            HostEvent::OutboundFailed { id, error, .. } if *id == open => {
                Some((*at, error.clone()))
            }
            _ => None,
        })
        .expect("negotiation failed");
    assert_eq!(error, StreamFailure::TimedOut);
    assert_eq!(at - start, host_config.negotiation_timeout);
    assert_eq!(host(&mut net, a).stream_count(), 0);
    assert_eq!(host(&mut net, a).manager().connection(&peer_b), Some(conn));
}

#[test]
fn a_stalled_or_hostile_inbound_stream_is_bounded_and_dropped() {
    let (mut net, a, b) = hosts(9);
    let conn = connect(&mut net, a, b);
    let m = host(&mut net, a).manager_mut();
    // A header and nothing more: b waits for the negotiation timeout, then resets.
    let stalled = m.open_stream(conn).expect("stream");
    m.stream_write(stalled, &frame(multistream::HEADER))
        .expect("write");
    // An oversized message: b resets at once.
    let oversized = m.open_stream(conn).expect("stream");
    let mut bytes = frame(multistream::HEADER);
    bytes.extend_from_slice(b"\xff\x7f");
    bytes.extend(std::iter::repeat_n(b'x', 4000));
    m.stream_write(oversized, &bytes).expect("write");
    // Garbage instead of the header: a frame without its newline.
    let garbage = m.open_stream(conn).expect("stream");
    m.stream_write(garbage, b"\x03GET / HTTP/1.1")
        .expect("write");
    net.run_for(Duration::from_millis(50));
    assert_eq!(host(&mut net, b).stream_count(), 1);
    let reset = |net: &mut Net, stream| {
        matches!(
            host(net, a).manager_mut().stream_read(stream, 100),
            Err(StreamError::Reset(_))
        )
    };
    assert!(reset(&mut net, oversized));
    assert!(reset(&mut net, garbage));
    net.run_for(HostConfig::default().negotiation_timeout);
    assert_eq!(host(&mut net, b).stream_count(), 0);
    // The stalled stream got the header back, then a reset.
    let m = host(&mut net, a).manager_mut();
    let mut answer = Vec::new();
    let end = loop {
        match m.stream_read(stalled, 100) {
            Ok(Read::Data(d)) => answer.extend_from_slice(&d),
            other => break other,
        }
    };
    assert!(answer.is_empty() || answer == frame(multistream::HEADER));
    assert!(matches!(end, Err(StreamError::Reset(_))), "{end:?}");
    assert!(ping(&mut net, a, b, Duration::from_secs(1)).1.is_ok());
}

#[test]
fn at_most_two_inbound_ping_streams_per_connection() {
    let (mut net, a, b) = hosts(10);
    let conn = connect(&mut net, a, b);
    let mut request = frame(multistream::HEADER);
    request.extend(frame(ping::PROTOCOL));
    request.extend_from_slice(&[1; ping::PAYLOAD_LEN]);
    let mut streams = Vec::new();
    for _ in 0..3 {
        let m = host(&mut net, a).manager_mut();
        let stream = m.open_stream(conn).expect("stream");
        m.stream_write(stream, &request).expect("write");
        streams.push(stream);
        net.run_for(Duration::from_millis(20));
    }
    assert_eq!(host(&mut net, b).stream_count(), 2);
    let mut echo = frame(multistream::HEADER);
    echo.extend(frame(ping::PROTOCOL));
    echo.extend_from_slice(&[1; ping::PAYLOAD_LEN]);
    for stream in &streams[1..] {
        assert_eq!(read_all(&mut net, a, *stream), (echo.clone(), false));
    }
    // The oldest was answered, then reset.
    let m = host(&mut net, a).manager_mut();
    let mut first = Vec::new();
    let error = loop {
        match m.stream_read(streams[0], 4096) {
            Ok(Read::Data(d)) => first.extend_from_slice(&d),
            other => break other,
        }
    };
    assert!(matches!(error, Err(StreamError::Reset(_))), "{error:?}");
    // Finishing a ping stream closes it cleanly on both sides.
    m.stream_finish(streams[2]).expect("finish");
    net.run_for(Duration::from_millis(50));
    assert_eq!(host(&mut net, b).stream_count(), 1);
    assert_eq!(read_all(&mut net, a, streams[2]), (Vec::new(), true));
}

/// The peer sends its ping and finishes the stream in one go: the host reads the payload and
/// the end, echoes, and finishes its side too.
#[test]
fn a_ping_stream_finished_with_its_payload_is_echoed_and_finished() {
    let (mut net, a, b) = hosts(14);
    let conn = connect(&mut net, a, b);
    let mut request = frame(multistream::HEADER);
    request.extend(frame(ping::PROTOCOL));
    let payloads: Vec<u8> = (0..3 * ping::PAYLOAD_LEN).map(|i| i as u8).collect();
    let m = host(&mut net, a).manager_mut();
    let stream = m.open_stream(conn).expect("stream");
    m.stream_write(stream, &request).expect("write");
    net.run_for(Duration::from_millis(20));
    // Three pings and the end in one packet, after the negotiation.
    let m = host(&mut net, a).manager_mut();
    m.stream_write(stream, &payloads).expect("write");
    m.stream_finish(stream).expect("finish");
    net.run_for(Duration::from_millis(50));
    let mut echo = frame(multistream::HEADER);
    echo.extend(frame(ping::PROTOCOL));
    echo.extend_from_slice(&payloads);
    assert_eq!(read_all(&mut net, a, stream), (echo, true));
    assert_eq!(host(&mut net, b).stream_count(), 0);
}

#[test]
fn dialing_from_multiaddrs() {
    let (mut net, a, b) = hosts(11);
    let (peer_b, addr_b, now) = (net.peer_id(b), net.addr(b), net.now());
    let addrs = [
        to_multiaddr(addr_b, None),
        to_multiaddr(addr_b, Some(peer_b)),
    ];
    let (peer, _) = host(&mut net, a).dial_addrs(now, &addrs).expect("dial");
    assert_eq!(peer, peer_b);
    assert!(net.run_until(Duration::from_secs(1), |n| find(
        n,
        a,
        0,
        connected_to(peer_b)
    )
    .is_some()));
    let wrong = [
        to_multiaddr(addr_b, Some(peer_b)),
        to_multiaddr(addr_b, Some(net.peer_id(a))),
    ];
    let now = net.now();
    assert!(matches!(
        host(&mut net, a).dial_addrs(now, &wrong),
        Err(quicpeer::protocols::DialAddrsError::Address(
            quicpeer::address::AddressError::PeerIdMismatch { .. }
        ))
    ));
}

#[test]
fn random_bytes_on_inbound_streams_never_break_the_host() {
    let (mut net, a, b) = hosts(13);
    let conn = connect(&mut net, a, b);
    host(&mut net, b).register(ECHO).expect("valid name");
    let mut next = xorshift(0x2545_f491_4f6c_dd1d);
    for round in 0..60 {
        let m = host(&mut net, a).manager_mut();
        let Ok(stream) = m.open_stream(conn) else {
            break;
        };
        // Half the streams start with a valid header, so the proposal parser gets garbage too.
        let mut bytes = if round % 2 == 0 {
            frame(multistream::HEADER)
        } else {
            Vec::new()
        };
        let len = (next() % 3000) as usize;
        bytes.extend((0..len).map(|_| next() as u8));
        let _ = m.stream_write(stream, &bytes);
        if next().is_multiple_of(2) {
            let _ = m.stream_finish(stream);
        }
        net.run_for(Duration::from_millis(5));
        assert!(host(&mut net, b).stream_count() <= round + 1);
    }
    net.run_for(HostConfig::default().negotiation_timeout + Duration::from_millis(100));
    assert_eq!(host(&mut net, b).stream_count(), 0);
    assert!(ping(&mut net, a, b, Duration::from_secs(1)).1.is_ok());
}

#[test]
fn manager_events_pass_through_including_icmp_driven_dial_failures() {
    let (mut net, a, b) = hosts(14);
    net.icmp_unreachable = true;
    net.stop(b);
    let (peer_b, addr_b, now) = (net.peer_id(b), net.addr(b), net.now());
    host(&mut net, a)
        .dial_addrs(now, &[to_multiaddr(addr_b, Some(peer_b))])
        .expect("dial");
    net.run_for(Duration::from_millis(100));
    let errors = find(&net, a, 0, |e| match e {
        HostEvent::Manager(Event::DialFailed { peer, errors, .. }) if *peer == peer_b => {
            Some(errors.clone())
        }
        _ => None,
    });
    assert_eq!(
        errors,
        Some(vec![(
            addr_b,
            Cause::HandshakeFailed(quicpeer::HandshakeFailure::Unreachable)
        )])
    );
}

/// A host whose peer allows it one stream at a time.
fn hosts_one_stream(seed: u64) -> (Net, NodeId, NodeId, ConnId) {
    init_tracing();
    let mut net = Net::with_seed(seed);
    let mut one_stream = Config::default();
    one_stream.max_concurrent_bidi_streams = 1;
    let a = net.add_node("a", identity(1), (Config::default(), HostConfig::default()));
    let b = net.add_node("b", identity(2), (one_stream, HostConfig::default()));
    let conn = connect(&mut net, a, b);
    host(&mut net, b).register(ECHO).expect("valid name");
    (net, a, b, conn)
}

fn outbound_stream(net: &Net, node: NodeId, from: usize, open: OutboundId) -> Option<StreamId> {
    find(net, node, from, |e| match e {
        HostEvent::OutboundStream { id, stream, .. } if *id == open => Some(*stream),
        _ => None,
    })
}

/// B reads the stream A opened to its end and finishes its own side: the stream is gone, and
/// B grants A another.
fn close_inbound(net: &mut Net, b: NodeId, from: usize) {
    let theirs = net.events(b)[from..]
        .iter()
        .rev()
        .find_map(|(_, e)| match e {
            HostEvent::InboundStream { stream, .. } => Some(*stream),
            _ => None,
        })
        .expect("b holds a stream of a");
    assert_eq!(read_all(net, b, theirs), (Vec::new(), true));
    host(net, b)
        .manager_mut()
        .stream_finish(theirs)
        .expect("finish");
    net.run_for(Duration::from_millis(50));
}

#[test]
fn opens_at_the_peers_stream_limit_wait_for_its_credit_in_order() {
    let (mut net, a, b, conn) = hosts_one_stream(21);
    let (peer_b, now, from) = (net.peer_id(b), net.now(), net.events(a).len());
    let h = host(&mut net, a);
    let first = h.open_stream(now, peer_b, [ECHO]).expect("open");
    let second = h
        .open_stream(now, peer_b, [ECHO])
        .expect("queued, not refused");
    // A ping's stream waits behind the second open; its ping counts as in flight.
    assert_eq!(h.ping(now, peer_b), Ok(conn));
    assert_eq!(h.ping(now, peer_b), Err(PingStartError::InFlight));
    net.run_for(Duration::from_millis(50));
    let first_stream = outbound_stream(&net, a, from, first).expect("the first opens at once");
    assert_eq!(outbound_stream(&net, a, from, second), None);

    // A finishes its stream; B reads it to its end and finishes its side: B's credit comes,
    // the host passes it on and opens the second stream, not yet the ping's.
    let from_b = 0;
    (host(&mut net, a).manager_mut())
        .stream_finish(first_stream)
        .expect("finish");
    net.run_for(Duration::from_millis(50));
    let credit_from = net.events(a).len();
    close_inbound(&mut net, b, from_b);
    let second_stream =
        outbound_stream(&net, a, from, second).expect("the second open proceeds on credit");
    assert_ne!(second_stream, first_stream);
    let credit = find(&net, a, credit_from, |e| match e {
        HostEvent::Manager(Event::StreamsAvailable { peer, conn: c }) if *c == conn => Some(*peer),
        _ => None,
    });
    assert_eq!(
        credit,
        Some(peer_b),
        "the credit event reaches the application"
    );
    assert_eq!(find(&net, a, from, ping_outcome(peer_b)), None);

    // Once the second stream is gone too, the ping goes out and is answered.
    (host(&mut net, a).manager_mut())
        .stream_finish(second_stream)
        .expect("finish");
    net.run_for(Duration::from_millis(50));
    close_inbound(&mut net, b, from_b);
    net.run_until(Duration::from_secs(1), |n| {
        find(n, a, from, ping_outcome(peer_b)).is_some()
    });
    let (pinged, outcome) = find(&net, a, from, ping_outcome(peer_b)).expect("ping outcome");
    assert_eq!(pinged, conn);
    assert!(outcome.is_ok(), "{outcome:?}");
}

#[test]
fn an_open_that_never_gets_credit_fails_at_its_negotiation_timeout() {
    let (mut net, a, b, _) = hosts_one_stream(22);
    let (peer_b, start, from) = (net.peer_id(b), net.now(), net.events(a).len());
    let h = host(&mut net, a);
    let held = h.open_stream(start, peer_b, [ECHO]).expect("open");
    let waiting = h.open_stream(start, peer_b, [ECHO]).expect("queued");
    let timeout = HostConfig::default().negotiation_timeout;
    net.run_for(timeout + Duration::from_millis(100));
    assert!(outbound_stream(&net, a, from, held).is_some());
    let (at, failure) = net.events(a)[from..]
        .iter()
        .find_map(|(at, e)| match e {
            HostEvent::OutboundFailed {
                id, stream, error, ..
            } if *id == waiting => Some((*at, (*stream, error.clone()))),
            _ => None,
        })
        .expect("the queued open failed");
    assert_eq!(failure, (None, StreamFailure::TimedOut));
    assert_eq!(at - start, timeout);
}

/// A peer that fails many negotiations at once (more than the host's first pruning length of
/// 32 closed streams): the late stops and acknowledgements of those streams reach neither
/// application, on either side.
#[test]
fn many_failed_negotiations_leave_no_late_events() {
    let (mut net, a, b) = hosts(11);
    connect(&mut net, a, b);
    let (peer_b, now) = (net.peer_id(b), net.now());
    let (from_a, from_b) = (net.events(a).len(), net.events(b).len());
    let mut opens = Vec::new();
    for _ in 0..40 {
        opens.push(
            host(&mut net, a)
                .open_stream(now, peer_b, ["/never/1.0.0"])
                .expect("open"),
        );
    }
    net.run_for(Duration::from_secs(2));
    let failed = net.events(a)[from_a..]
        .iter()
        .filter(|(_, e)| {
            matches!(
                e,
                HostEvent::OutboundFailed {
                    error: StreamFailure::Unsupported { .. },
                    ..
                }
            )
        })
        .count();
    assert_eq!(failed, opens.len());
    for node in [a, b] {
        let from = if node == a { from_a } else { from_b };
        let stream_events: Vec<_> = net.events(node)[from..]
            .iter()
            .filter(|(_, e)| {
                matches!(
                    e,
                    HostEvent::Manager(
                        Event::StreamReadable { .. }
                            | Event::StreamWritable { .. }
                            | Event::StreamFinished { .. }
                            | Event::StreamStopped { .. }
                    )
                )
            })
            .collect();
        assert!(stream_events.is_empty(), "{stream_events:?}");
        assert_eq!(host(&mut net, node).stream_count(), 0);
    }
}
