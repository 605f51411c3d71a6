//! Manager behaviour other than restarts: dial errors, closes, streams, hostile datagrams.

mod support;

use std::time::Duration;

use bytes::Bytes;
use quicpeer::sim::{Link, Network, NodeId};
use quicpeer::{
    Cause, ChunksRead, Config, ConfigError, ConnId, ConnectFailure, Event, HandshakeFailure,
    Manager, ManagerError, Read, ReadStatus, StreamError, StreamId,
};
use support::*;

#[test]
fn dialing_the_wrong_peer_id_fails_with_a_typed_mismatch() {
    let mut net = Network::new(1);
    let a = net.add_node("a", identity(1), Config::default());
    let b = net.add_node("b", identity(2), Config::default());
    let impostor_expected = identity(3).peer_id();
    let (addr_b, now) = (net.addr(b), net.now());
    net.manager(a)
        .expect("up")
        .dial(now, impostor_expected, [addr_b])
        .expect("dial started");
    net.run_for(Duration::from_millis(200));
    let failed = find(&net, a, now, |e| match e {
        Event::DialFailed {
            peer,
            errors,
            retry_at,
        } => Some((*peer, errors.clone(), *retry_at)),
        _ => None,
    });
    let (_, (peer, errors, retry_at)) = failed.expect("dial failed");
    assert_eq!(peer, impostor_expected);
    assert_eq!(retry_at, None);
    assert_eq!(
        errors,
        vec![(
            addr_b,
            Cause::PeerIdMismatch {
                expected: impostor_expected,
                actual: net.peer_id(b)
            }
        )]
    );
    assert!(net
        .events(a)
        .iter()
        .all(|(_, e)| !matches!(e, Event::Connected { .. })));
}

#[test]
fn dialing_a_dead_address_times_out_the_handshake() {
    let mut net = Network::new(2);
    let a = net.add_node("a", identity(1), Config::default());
    let b = net.add_node("b", identity(2), Config::default());
    net.stop(b);
    let now = net.now();
    net.dial(a, b);
    net.run_for(Duration::from_secs(10));
    let (at, errors) = find(&net, a, now, |e| match e {
        Event::DialFailed { errors, .. } => Some(errors.clone()),
        _ => None,
    })
    .expect("dial failed");
    assert_eq!(
        errors,
        vec![(
            net.addr(b),
            Cause::HandshakeFailed(HandshakeFailure::TimedOut)
        )]
    );
    assert_eq!(at - now, Config::default().handshake_timeout);
    let peer_b = net.peer_id(b);
    assert!(!net.manager(a).expect("up").is_dialing(&peer_b));
}

#[test]
fn an_attempt_that_cannot_start_locally_fails_with_its_own_cause() {
    let mut net = Network::new(2);
    let a = net.add_node("a", identity(1), Config::default());
    let (now, peer) = (net.now(), identity(2).peer_id());
    // Port 0 cannot be dialed: quinn refuses before anything is sent.
    let unspecified: std::net::SocketAddr = "192.0.2.9:0".parse().expect("address");
    let m = net.manager(a).expect("up");
    assert!(m.dial(now, peer, [unspecified]).is_ok());
    net.run_for(Duration::from_millis(10));
    let (at, errors) = find(&net, a, now, |e| match e {
        Event::DialFailed { errors, .. } => Some(errors.clone()),
        _ => None,
    })
    .expect("dial failed");
    assert_eq!(at, now, "in the call that started it");
    assert_eq!(
        errors,
        vec![(
            unspecified,
            Cause::HandshakeFailed(HandshakeFailure::Local(ConnectFailure::InvalidAddress))
        )]
    );
}

#[test]
fn configuration_and_application_codes_out_of_range_are_typed_errors() {
    let mut config = Config::default();
    config.max_udp_payload = 1000;
    let (now, wall) = (std::time::Instant::now(), std::time::SystemTime::now());
    let built = Manager::new(now, wall, identity(1), config, [0; 32]);
    assert!(matches!(
        built,
        Err(ManagerError::Config(ConfigError::MaxUdpPayload(1000)))
    ));

    let (mut net, a, _, _, ours, _) = pair_with_stream(4, b"x");
    let m = net.manager(a).expect("up");
    let too_large = quicpeer::manager::MAX_APP_CODE + 1;
    assert_eq!(
        m.stream_reset(ours, too_large),
        Err(StreamError::CodeOutOfRange(too_large))
    );
    assert_eq!(
        m.stream_stop(ours, u64::MAX),
        Err(StreamError::CodeOutOfRange(u64::MAX))
    );
    assert_eq!(
        m.stream_reset(ours, quicpeer::manager::MAX_APP_CODE),
        Ok(())
    );
}

#[test]
fn connect_starts_one_attempt_and_reports_its_own_failure() {
    let mut net = Network::new(41);
    let a = net.add_node("a", identity(1), Config::default());
    let b = net.add_node("b", identity(2), Config::default());
    let (peer_a, peer_b, addr_b, now) = (net.peer_id(a), net.peer_id(b), net.addr(b), net.now());

    // Whoever answers: the PeerId comes out of the handshake.
    let m = net.manager(a).expect("up");
    let any = m.connect(now, addr_b, None).expect("started");
    // The wrong PeerId: refused by our verifier.
    let wrong = m
        .connect(now, addr_b, Some(identity(9).peer_id()))
        .expect("started");
    // Nobody there.
    let dead: std::net::SocketAddr = "192.0.2.77:4001".parse().expect("address");
    let nowhere = m.connect(now, dead, Some(peer_b)).expect("started");
    assert_eq!(
        m.connect(now, addr_b, Some(peer_a)),
        Err(quicpeer::DialError::SelfDial)
    );
    net.run_for(Config::default().handshake_timeout + Duration::from_millis(10));

    let (_, (conn, _)) = connected(&net, a, peer_b, now).expect("the open connect succeeded");
    assert_eq!(conn, any);
    let failed = |conn| {
        find(&net, a, now, |e| match e {
            Event::ConnectFailed {
                conn: c,
                addr,
                cause,
            } if *c == conn => Some((*addr, cause.clone())),
            _ => None,
        })
        .map(|(_, f)| f)
    };
    assert_eq!(failed(any), None);
    assert!(matches!(
        failed(wrong),
        Some((addr, Cause::PeerIdMismatch { actual, .. })) if addr == addr_b && actual == peer_b
    ));
    assert_eq!(
        failed(nowhere),
        Some((dead, Cause::HandshakeFailed(HandshakeFailure::TimedOut)))
    );
    // No peer-level dial took part: nothing was retried or reported as a dial.
    let m = net.manager(a).expect("up");
    assert!(!m.is_dialing(&peer_b));
    assert!(find(&net, a, now, |e| matches!(e, Event::DialFailed { .. })
        .then_some(()))
    .is_none());
}

#[test]
fn a_manager_that_stops_accepting_refuses_new_clients_and_keeps_its_connections() {
    let mut net = Network::new(42);
    let a = net.add_node("a", identity(1), Config::default());
    let b = net.add_node("b", identity(2), Config::default());
    let c = net.add_node("c", identity(3), Config::default());
    let kept = connect(&mut net, a, b);
    let m = net.manager(b).expect("up");
    m.set_accepting(false);
    assert!(!m.is_accepting());
    let now = net.now();
    net.dial(c, b);
    net.run_for(Duration::from_millis(100));
    let refused = find(&net, c, now, |e| match e {
        Event::DialFailed { errors, .. } => Some(errors.clone()),
        _ => None,
    })
    .expect("c's dial failed");
    assert_eq!(
        refused.1,
        vec![(
            net.addr(b),
            Cause::HandshakeFailed(HandshakeFailure::Refused)
        )]
    );
    assert_eq!(
        lost(&net, a, kept, now),
        None,
        "the established connection stays"
    );
    let peer_b = net.peer_id(b);
    assert_eq!(net.manager(a).expect("up").connection(&peer_b), Some(kept));
    // And accepting again lets c in.
    net.manager(b).expect("up").set_accepting(true);
    let again = net.now();
    net.dial(c, b);
    net.run_for(Duration::from_millis(100));
    assert!(connected(&net, c, peer_b, again).is_some());
}

/// What a libp2p Swarm expects of its transport: several connections to a peer stay side by
/// side, and a silent one is reported without a redial (the Swarm owns redials).
#[test]
fn without_tie_break_and_suspicion_redial_connections_stay_and_silence_is_only_reported() {
    let mut net = Network::new(43);
    let mut swarm_like = Config::default();
    swarm_like.tie_break = false;
    swarm_like.suspicion_redial = false;
    swarm_like.limits.max_connections_per_peer = 3;
    let a = net.add_node("a", identity(1), swarm_like.clone());
    let b = net.add_node("b", identity(2), swarm_like);
    let (peer_b, addr_b, now) = (net.peer_id(b), net.addr(b), net.now());
    let m = net.manager(a).expect("up");
    let first = m.connect(now, addr_b, Some(peer_b)).expect("started");
    let second = m.connect(now, addr_b, Some(peer_b)).expect("started");
    net.run_for(Duration::from_secs(1));
    let mut conns = net.manager(a).expect("up").connections(&peer_b);
    conns.sort();
    assert_eq!(conns, vec![first, second], "no tie-break closed one");
    assert_eq!(lost(&net, a, first, now), None);

    // B goes silent; A writes on one connection and gets no answer.
    net.set_link(a, b, quicpeer::sim::Link::down());
    let silent = net.now();
    send_message(&mut net, a, first, b"anyone?");
    net.run_for(Duration::from_secs(2));
    let unresponsive = find(&net, a, silent, |e| match e {
        Event::Unresponsive { conn, .. } => Some(*conn),
        _ => None,
    });
    assert_eq!(unresponsive.map(|(_, c)| c), Some(first));
    assert!(
        !net.manager(a).expect("up").is_dialing(&peer_b),
        "no redial"
    );
    assert!(
        find(&net, a, silent, |e| matches!(e, Event::Reconnecting { .. })
            .then_some(()))
        .is_none()
    );
}

#[test]
fn a_dial_joins_one_in_progress_and_a_connected_peer_is_not_redialed() {
    let mut net = Network::new(3);
    let a = net.add_node("a", identity(1), Config::default());
    let b = net.add_node("b", identity(2), Config::default());
    let (peer_b, addr_b, now) = (net.peer_id(b), net.addr(b), net.now());
    let m = net.manager(a).expect("up");
    assert_eq!(
        m.dial(now, peer_b, [addr_b]),
        Ok(quicpeer::DialOutcome::Started)
    );
    assert_eq!(
        m.dial(now, peer_b, [addr_b]),
        Ok(quicpeer::DialOutcome::Joined)
    );
    assert_eq!(
        m.dial(now, m.local_peer_id(), [addr_b]),
        Err(quicpeer::DialError::SelfDial)
    );
    net.run_for(Duration::from_millis(100));
    let conn = net
        .manager(a)
        .and_then(|m| m.connection(&peer_b))
        .expect("connected");
    let now = net.now();
    assert_eq!(
        net.manager(a).expect("up").dial(now, peer_b, []),
        Ok(quicpeer::DialOutcome::AlreadyConnected(conn))
    );
    let connects = net
        .events(a)
        .iter()
        .filter(|(_, e)| matches!(e, Event::Connected { .. }))
        .count();
    assert_eq!(connects, 1);
}

#[test]
fn closing_frees_the_slot_at_once_and_tells_the_peer() {
    let mut net = Network::new(4);
    let a = net.add_node("a", identity(1), Config::default());
    let b = net.add_node("b", identity(2), Config::default());
    let conn = connect(&mut net, a, b);
    let (peer_a, peer_b) = (net.peer_id(a), net.peer_id(b));
    let now = net.now();
    let m = net.manager(a).expect("up");
    m.close(now, conn);
    // Freed in the same call, before any packet moved.
    assert_eq!(m.connection(&peer_b), None);
    assert!(m.connected_peers().is_empty());
    net.run_for(Duration::from_millis(50));
    assert_eq!(
        lost(&net, a, conn, now).map(|(_, c)| c),
        Some(Cause::ClosedLocally)
    );
    let on_b = find(&net, b, now, |e| match e {
        Event::ConnectionLost { peer, cause, .. } if *peer == peer_a => Some(cause.clone()),
        _ => None,
    });
    assert_eq!(
        on_b.map(|(_, c)| c),
        Some(Cause::ClosedByPeer {
            code: 0,
            reason: String::new()
        })
    );
    // Nobody redials a peer that closed on purpose.
    net.run_for(Duration::from_secs(5));
    assert!(net
        .events(a)
        .iter()
        .all(|(at, e)| *at <= now || !matches!(e, Event::Reconnecting { .. })));
    assert!(net
        .events(b)
        .iter()
        .all(|(at, e)| *at <= now || !matches!(e, Event::Reconnecting { .. })));
    // Once drained, nothing is held.
    net.run_for(Duration::from_secs(5));
    assert_eq!(net.manager(a).map(|m| m.connection_count()), Some(0));
    assert_eq!(net.manager(b).map(|m| m.connection_count()), Some(0));
}

#[test]
fn streams_carry_data_and_unfinished_ones_are_reported_on_loss() {
    let mut net = Network::new(5);
    let a = net.add_node("a", identity(1), Config::default());
    let b = net.add_node("b", identity(2), Config::default());
    let conn = connect(&mut net, a, b);
    let m = net.manager(a).expect("up");
    let done = m.open_stream(conn).expect("stream");
    assert_eq!(m.stream_write(done, b"complete message"), Ok(16));
    m.stream_finish(done).expect("finish");
    let open = m.open_stream(conn).expect("stream");
    assert_eq!(m.stream_write(open, b"half"), Ok(4));
    net.run_for(Duration::from_millis(50));

    // The listener reads the finished stream to its end.
    let opened: Vec<_> = net
        .events(b)
        .iter()
        .filter_map(|(_, e)| match e {
            Event::StreamOpened { stream, .. } => Some(*stream),
            _ => None,
        })
        .collect();
    assert_eq!(opened.len(), 2);
    let mb = net.manager(b).expect("up");
    let mut received = Vec::new();
    loop {
        match mb.stream_read(opened[0], 4) {
            Ok(Read::Data(bytes)) => received.extend_from_slice(&bytes),
            Ok(Read::Finished) => break,
            Err(e) => panic!("read failed: {e}"),
        }
    }
    assert_eq!(received, b"complete message");
    assert_eq!(
        mb.stream_read(opened[1], 100),
        Ok(Read::Data(bytes::Bytes::from_static(b"half")))
    );
    assert_eq!(mb.stream_read(opened[1], 100), Err(StreamError::Blocked));
    // Replying on the finished stream completes it on both sides.
    mb.stream_finish(opened[0]).expect("finish reply");
    net.run_for(Duration::from_millis(50));
    let m = net.manager(a).expect("up");
    assert_eq!(m.stream_read(done, 100), Ok(Read::Finished));

    net.restart(b);
    let restarted = net.now();
    let m = net.manager(a).expect("up");
    let _ = m.stream_write(open, b" more");
    net.run_for(Duration::from_millis(50));
    let unfinished = find(&net, a, restarted, |e| match e {
        Event::ConnectionLost {
            unfinished_streams,
            cause,
            ..
        } => Some((cause.clone(), unfinished_streams.clone())),
        _ => None,
    });
    assert_eq!(
        unfinished.map(|(_, u)| u),
        Some((Cause::PeerRestarted, vec![open]))
    );
    let m = net.manager(a).expect("up");
    assert_eq!(
        m.stream_write(open, b"x"),
        Err(StreamError::UnknownConnection)
    );
}

#[test]
fn an_open_refused_at_the_peers_stream_limit_succeeds_after_its_credit_event() {
    let mut net = Network::new(31);
    let a = net.add_node("a", identity(1), Config::default());
    let mut one_stream = Config::default();
    one_stream.max_concurrent_bidi_streams = 1;
    let b = net.add_node("b", identity(2), one_stream);
    let conn = connect(&mut net, a, b);
    let peer_b = net.peer_id(b);

    let since = net.now();
    let m = net.manager(a).expect("up");
    let first = m.open_stream(conn).expect("the peer allows one stream");
    assert_eq!(m.stream_write(first, b"one"), Ok(3));
    assert_eq!(m.stream_finish(first), Ok(()));
    assert_eq!(m.open_stream(conn), Err(StreamError::Limit));
    net.run_for(Duration::from_millis(50));
    // No credit while B holds the stream open.
    let credit = |net: &Network, since| {
        find(net, a, since, |e| match e {
            Event::StreamsAvailable { peer, conn: c } if *c == conn => Some(*peer),
            _ => None,
        })
    };
    assert_eq!(credit(&net, since), None);
    let m = net.manager(a).expect("up");
    assert_eq!(m.open_stream(conn), Err(StreamError::Limit));

    // B reads the stream to its end and finishes its side: the stream is gone, and B's
    // MAX_STREAMS lets A open another.
    let theirs = opened_stream(&net, b, since);
    let m = net.manager(b).expect("up");
    assert_eq!(
        m.stream_read(theirs, 100),
        Ok(Read::Data(Bytes::from_static(b"one")))
    );
    assert_eq!(m.stream_read(theirs, 100), Ok(Read::Finished));
    assert_eq!(m.stream_finish(theirs), Ok(()));
    let freed = net.now();
    net.run_for(Duration::from_millis(50));
    let (_, peer) = credit(&net, freed).expect("StreamsAvailable after B freed the stream");
    assert_eq!(peer, peer_b);
    let m = net.manager(a).expect("up");
    let second = m.open_stream(conn).expect("open after the credit");
    assert_ne!(second, first);
    assert_eq!(m.open_stream(conn), Err(StreamError::Limit));
}

/// The stream `node` saw opened on its connection from the peer, after `since`.
fn opened_stream(net: &Network, node: NodeId, since: std::time::Instant) -> StreamId {
    find(net, node, since, |e| match e {
        Event::StreamOpened { stream, .. } => Some(*stream),
        _ => None,
    })
    .expect("the peer opened a stream")
    .1
}

/// A pair connected A to B, and a stream A opened and wrote `first` on, as B sees it.
fn pair_with_stream(
    seed: u64,
    first: &[u8],
) -> (Network, NodeId, NodeId, ConnId, StreamId, StreamId) {
    let mut net = Network::new(seed);
    let a = net.add_node("a", identity(1), Config::default());
    let b = net.add_node("b", identity(2), Config::default());
    let conn = connect(&mut net, a, b);
    let since = net.now();
    let m = net.manager(a).expect("up");
    let ours = m.open_stream(conn).expect("stream");
    assert_eq!(m.stream_write(ours, first), Ok(first.len()));
    net.run_for(Duration::from_millis(20));
    let theirs = opened_stream(&net, b, since);
    (net, a, b, conn, ours, theirs)
}

fn concat(chunks: &[Bytes]) -> Vec<u8> {
    chunks.iter().flat_map(|c| c.iter().copied()).collect()
}

#[test]
fn stream_read_chunks_drains_many_chunks_in_one_call_then_reports_the_end() {
    // 40 writes, each in its own packet: the receiver holds 40 chunks when it reads.
    let pattern: Vec<u8> = (0..4000u32).map(|i| (i % 251) as u8).collect();
    let (mut net, a, b, _, ours, theirs) = pair_with_stream(20, &pattern[..100]);
    for piece in pattern[100..].chunks(100) {
        let m = net.manager(a).expect("up");
        assert_eq!(m.stream_write(ours, piece), Ok(piece.len()));
        net.run_for(Duration::from_millis(1));
    }
    net.run_for(Duration::from_millis(20));

    let mb = net.manager(b).expect("up");
    let mut chunks: Vec<Bytes> = Vec::new();
    let read = mb.stream_read_chunks(theirs, usize::MAX, &mut chunks);
    assert_eq!(
        read,
        Ok(ChunksRead {
            bytes: pattern.len(),
            status: ReadStatus::Blocked
        })
    );
    assert!(chunks.len() > 1, "{} chunk(s)", chunks.len());
    assert_eq!(concat(&chunks), pattern);
    println!("one call read {} chunks", chunks.len());

    // Nothing new: no bytes, still blocked, nothing appended.
    chunks.clear();
    let read = mb.stream_read_chunks(theirs, usize::MAX, &mut chunks);
    assert_eq!(
        read,
        Ok(ChunksRead {
            bytes: 0,
            status: ReadStatus::Blocked
        })
    );
    assert!(chunks.is_empty());

    // The last bytes and the end arrive together: one call reads both.
    let m = net.manager(a).expect("up");
    assert_eq!(m.stream_write(ours, b"tail"), Ok(4));
    m.stream_finish(ours).expect("finish");
    net.run_for(Duration::from_millis(20));
    let mb = net.manager(b).expect("up");
    let read = mb.stream_read_chunks(theirs, usize::MAX, &mut chunks);
    assert_eq!(
        read,
        Ok(ChunksRead {
            bytes: 4,
            status: ReadStatus::Finished
        })
    );
    assert_eq!(concat(&chunks), b"tail");
    // Read to its end, the stream is gone: both reads say so.
    assert_eq!(
        mb.stream_read_chunks(theirs, usize::MAX, &mut chunks),
        Err(StreamError::Closed)
    );
    assert_eq!(mb.stream_read(theirs, 100), Err(StreamError::Closed));
}

#[test]
fn stream_read_chunks_stops_at_its_byte_budget() {
    let pattern: Vec<u8> = (0..3000u32).map(|i| (i % 253) as u8).collect();
    let (mut net, a, b, _, ours, theirs) = pair_with_stream(21, &pattern[..1000]);
    for piece in pattern[1000..].chunks(1000) {
        let m = net.manager(a).expect("up");
        assert_eq!(m.stream_write(ours, piece), Ok(piece.len()));
        net.run_for(Duration::from_millis(1));
    }
    net.manager(a)
        .expect("up")
        .stream_finish(ours)
        .expect("finish");
    net.run_for(Duration::from_millis(20));

    let mb = net.manager(b).expect("up");
    let mut chunks: Vec<Bytes> = Vec::new();
    // A budget of nothing reads nothing.
    assert_eq!(
        mb.stream_read_chunks(theirs, 0, &mut chunks),
        Ok(ChunksRead {
            bytes: 0,
            status: ReadStatus::BudgetReached
        })
    );
    assert!(chunks.is_empty());
    // 700 bytes at a time: budgets end inside chunks, which are split, never exceeded.
    let mut reads = Vec::new();
    loop {
        let before = chunks.len();
        let read = mb
            .stream_read_chunks(theirs, 700, &mut chunks)
            .expect("read");
        let appended: usize = chunks[before..].iter().map(Bytes::len).sum();
        assert_eq!(appended, read.bytes);
        reads.push(read);
        if read.status != ReadStatus::BudgetReached {
            break;
        }
    }
    assert_eq!(concat(&chunks), pattern);
    let budget = |bytes| ChunksRead {
        bytes,
        status: ReadStatus::BudgetReached,
    };
    assert_eq!(
        reads,
        vec![
            budget(700),
            budget(700),
            budget(700),
            budget(700),
            ChunksRead {
                bytes: 200,
                status: ReadStatus::Finished
            }
        ]
    );
}

#[test]
fn stream_read_chunks_reports_a_reset_and_unknown_streams() {
    let (mut net, a, b, conn, ours, theirs) = pair_with_stream(22, b"doomed");
    net.manager(a)
        .expect("up")
        .stream_reset(ours, 7)
        .expect("reset");
    net.run_for(Duration::from_millis(20));
    let mb = net.manager(b).expect("up");
    let mut chunks: Vec<Bytes> = Vec::new();
    // quinn discards what a reset stream carried: the reset is all there is to read.
    assert_eq!(
        mb.stream_read_chunks(theirs, usize::MAX, &mut chunks),
        Err(StreamError::Reset(7))
    );
    assert!(chunks.is_empty());
    assert_eq!(
        mb.stream_read_chunks(theirs, usize::MAX, &mut chunks),
        Err(StreamError::Closed)
    );

    // A stream we stopped reading is no longer readable.
    let since = net.now();
    let m = net.manager(a).expect("up");
    let second = m.open_stream(conn).expect("stream");
    assert_eq!(m.stream_write(second, b"unwanted"), Ok(8));
    net.run_for(Duration::from_millis(20));
    let stopped = opened_stream(&net, b, since);
    let mb = net.manager(b).expect("up");
    mb.stream_stop(stopped, 3).expect("stop");
    assert_eq!(
        mb.stream_read_chunks(stopped, usize::MAX, &mut chunks),
        Err(StreamError::Closed)
    );

    // A stream of a connection that is gone.
    let now = net.now();
    net.manager(b).expect("up").close(now, stopped.conn());
    net.run_for(Duration::from_millis(20));
    let mb = net.manager(b).expect("up");
    assert_eq!(
        mb.stream_read_chunks(stopped, usize::MAX, &mut chunks),
        Err(StreamError::UnknownConnection)
    );
    assert!(chunks.is_empty());
}

#[test]
fn stream_read_chunks_returns_flow_control_credit_as_it_reads() {
    // More than three times quinn's default stream receive window, read only with
    // stream_read_chunks: the transfer completes only if reading grants the sender credit.
    const LEN: usize = 4 * 1024 * 1024;
    let data: Vec<u8> = (0..LEN).map(|i| (i % 249) as u8).collect();
    let (mut net, a, b, _, ours, theirs) = pair_with_stream(23, &data[..1000]);
    let (mut written, mut finished) = (1000, false);
    let mut received: Vec<u8> = Vec::with_capacity(LEN);
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut end = false;
    for _ in 0..10_000 {
        let m = net.manager(a).expect("up");
        while written < LEN {
            match m.stream_write(ours, &data[written..(written + 65_536).min(LEN)]) {
                Ok(n) => written += n,
                Err(StreamError::Blocked) => break,
                Err(e) => panic!("write: {e}"),
            }
        }
        if written == LEN && !finished {
            m.stream_finish(ours).expect("finish");
            finished = true;
        }
        net.run_for(Duration::from_millis(1));
        let mb = net.manager(b).expect("up");
        // 256 KiB per call at most, as an application sharing its time between streams would.
        loop {
            let read = mb
                .stream_read_chunks(theirs, 256 * 1024, &mut chunks)
                .expect("read");
            for chunk in chunks.drain(..) {
                received.extend_from_slice(&chunk);
            }
            match read.status {
                ReadStatus::BudgetReached => continue,
                ReadStatus::Blocked => break,
                ReadStatus::Finished => {
                    end = true;
                    break;
                }
            }
        }
        if end {
            break;
        }
    }
    assert!(end, "{} of {LEN} bytes", received.len());
    assert!(received == data, "corrupted");
}

#[test]
fn garbage_datagrams_never_panic_and_never_get_an_answer_larger_than_themselves() {
    let mut net = Network::new(6);
    let a = net.add_node("a", identity(1), Config::default());
    let b = net.add_node("b", identity(2), Config::default());
    connect(&mut net, a, b);
    let from = net.addr(b);
    let mut next = xorshift(0x9e3779b97f4a7c15);
    let mut buf = Vec::new();
    for len in (0..1500).step_by(7) {
        let datagram: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let now = net.now();
        let m = net.manager(a).expect("up");
        m.handle_datagram(now, from, None, &datagram);
        while let Some(t) = m.poll_transmit(now, &mut buf) {
            if t.conn.is_none() {
                assert!(
                    t.size < datagram.len().max(1),
                    "answered {len} bytes with {}",
                    t.size
                );
            }
        }
    }
    // The real connection is unharmed.
    net.run_for(Duration::from_millis(100));
    assert_eq!(net.manager(a).map(|m| m.connected_peers().len()), Some(1));
    let _ = Link::default();
}

/// quinn pads a stateless reset to just under the datagram that drew it; a jumbo datagram
/// (a path with a larger MTU, or a forged one) must not draw a reset larger than the
/// `max_udp_payload` we are configured to send. Found by the `datagram` fuzz target.
#[test]
fn a_stateless_reset_to_a_jumbo_datagram_fits_max_udp_payload() {
    let mut net = Network::new(8);
    let a = net.add_node("a", identity(1), Config::default());
    let b = net.add_node("b", identity(2), Config::default());
    net.capture_payloads = true;
    connect(&mut net, a, b);
    net.capture_payloads = false;
    // The start of a short-header packet b sent on the connection: a's connection ID, which
    // a restarted a recognises as its own (derived keys) but no longer has a connection for.
    let header: Vec<u8> = (net.captured().iter().rev())
        .find(|c| c.node == b && c.data.first().is_some_and(|x| x & 0x80 == 0))
        .map(|c| c.data[..21].to_vec())
        .expect("b sent a short-header packet");
    net.restart(a);
    let max = usize::from(Config::default().max_udp_payload);
    let from = net.addr(b);
    let mut next = xorshift(0x2545f4914f6cdd1d);
    let mut buf = Vec::new();
    let mut resets = 0;
    for (i, len) in [1_000usize, max, max + 1, 4_000, 9_000]
        .into_iter()
        .enumerate()
    {
        // A stale connection's short-header packet, `len` bytes long.
        let mut datagram: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        datagram[..header.len()].copy_from_slice(&header);
        // quinn sends at most one reset per 20 ms.
        net.run_for(Duration::from_millis(50));
        let now = net.now();
        let m = net.manager(a).expect("up");
        m.handle_datagram(now, from, None, &datagram);
        while let Some(t) = m.poll_transmit(now, &mut buf) {
            assert_eq!(t.conn, None, "datagram {i}");
            assert!(t.size <= max, "a {}-byte reset to {len} bytes", t.size);
            assert!(t.size < len, "a {}-byte reset to {len} bytes", t.size);
            assert!(t.size >= 21, "a reset of {} bytes is too short", t.size);
            assert_eq!(
                buf[0] & 0xc0,
                0x40,
                "a reset looks like a short-header packet"
            );
            resets += 1;
        }
    }
    assert_eq!(resets, 5, "every datagram drew a reset");
}

#[test]
fn after_close_all_new_connections_are_refused_and_dials_fail() {
    let mut net = Network::new(7);
    let a = net.add_node("a", identity(1), Config::default());
    let b = net.add_node("b", identity(2), Config::default());
    let c = net.add_node("c", identity(3), Config::default());
    connect(&mut net, b, a);
    let now = net.now();
    let (peer_c, addr_c) = (net.peer_id(c), net.addr(c));
    let m = net.manager(a).expect("up");
    m.close_all(now);
    assert_eq!(
        m.dial(now, peer_c, [addr_c]),
        Err(quicpeer::DialError::ShuttingDown)
    );
    net.run_for(Duration::from_secs(1));
    assert_eq!(net.manager(a).map(|m| m.connection_count()), Some(0));

    // A peer that dials the closing node (as a pinger redialing at once would) is refused.
    let since = net.now();
    net.dial(c, a);
    net.run_for(Duration::from_millis(100));
    let refused = find(&net, c, since, |e| match e {
        Event::DialFailed { errors, .. } => Some(errors.clone()),
        _ => None,
    });
    assert_eq!(
        refused.map(|(_, e)| e),
        Some(vec![(
            net.addr(a),
            Cause::HandshakeFailed(HandshakeFailure::Refused)
        )])
    );
}

#[test]
fn causes_read_well() {
    assert_eq!(Cause::Superseded { by: None }.to_string(), "superseded");
    assert_eq!(
        Cause::PeerRestarted.to_string(),
        "peer restarted (stateless reset)"
    );
}

/// Transmits of up to ten datagrams (what the mio driver allows where it has GSO) carry a bulk
/// stream intact through loss, reordering and duplication, as single datagrams do; and quinn
/// does batch them.
#[test]
fn batched_transmits_carry_bulk_data_intact() {
    const LEN: usize = 1 << 20;
    let data: Vec<u8> = (0..LEN).map(|i| (i * 7 + i / 1021) as u8).collect();
    for max in [1, 10] {
        let mut net = Network::new(11);
        net.max_datagrams = max;
        net.set_default_link({
            let mut link = Link::default();
            link.latency = Duration::from_millis(2);
            link.loss = 0.02;
            link.reorder = 0.05;
            link.duplicate = 0.01;
            link
        });
        let a = net.add_node("a", identity(1), Config::default());
        let b = net.add_node("b", identity(2), Config::default());
        assert_eq!(net.manager(a).map(|m| m.max_datagrams()), Some(max));
        let conn = connect(&mut net, a, b);
        let stream = net
            .manager(a)
            .expect("up")
            .open_stream(conn)
            .expect("stream");
        let (mut written, mut finished) = (0, false);
        let mut received = Vec::with_capacity(LEN);
        let mut inbound = None;
        for _ in 0..20_000 {
            let m = net.manager(a).expect("up");
            while written < LEN {
                match m.stream_write(stream, &data[written..(written + 65_536).min(LEN)]) {
                    Ok(n) => written += n,
                    Err(StreamError::Blocked) => break,
                    Err(e) => panic!("write: {e}"),
                }
            }
            if written == LEN && !finished {
                m.stream_finish(stream).expect("finish");
                finished = true;
            }
            net.run_for(Duration::from_millis(1));
            inbound = inbound.or_else(|| {
                net.events(b).iter().find_map(|(_, e)| match e {
                    Event::StreamOpened { stream, .. } => Some(*stream),
                    _ => None,
                })
            });
            let Some(inbound) = inbound else { continue };
            let mb = net.manager(b).expect("up");
            loop {
                match mb.stream_read(inbound, usize::MAX) {
                    Ok(Read::Data(bytes)) => received.extend_from_slice(&bytes),
                    Ok(Read::Finished) => break,
                    Err(StreamError::Blocked) => break,
                    Err(e) => panic!("read: {e}"),
                }
            }
            if received.len() == LEN {
                break;
            }
        }
        assert!(
            received == data,
            "max {max}: {} of {LEN} bytes, or corrupted",
            received.len()
        );
        let stats = net.manager(a).and_then(|m| m.stats(conn)).expect("stats");
        let (datagrams, transmits) = (stats.datagrams_sent, stats.transmits);
        println!(
            "max {max}: {datagrams} datagrams in {transmits} transmits, {} lost",
            stats.lost_packets
        );
        if max == 1 {
            assert_eq!(datagrams, transmits);
        } else {
            assert!(
                datagrams > 3 * transmits && datagrams <= 10 * transmits,
                "{datagrams} datagrams in {transmits} transmits"
            );
        }
    }
}
