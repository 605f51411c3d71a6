//! Invariants the fuzz targets check after every step. A failed check panics with the
//! invariant's name: that panic is the finding.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Instant;

use quicpeer::{ConnId, Event, Manager, PeerId, StreamId, Transmit};

/// Bound on the datagrams one drain of `poll_transmit` may yield. The fuzz targets write at most
/// a few KiB per step, so a drain that goes on longer is a loop that does not end.
pub(super) const MAX_TRANSMITS_PER_DRAIN: usize = 4096;
/// Bound on the events one drain of `poll_event` may yield.
pub(super) const MAX_EVENTS_PER_DRAIN: usize = 4096;
/// `handle_timeout(now)` rounds after which a manager whose `poll_timeout` is still due at `now`
/// is declared spinning.
pub(super) const MAX_TIMER_ROUNDS: usize = 8;
/// Streams remembered as readable until the harness reads them (targets that never read
/// forget the newest beyond this).
const MAX_READABLE: usize = 256;

/// What a manager's events said, checked as they arrive.
#[derive(Debug, Default)]
pub(super) struct EventLog {
    connected: BTreeMap<ConnId, PeerId>,
    lost: BTreeSet<ConnId>,
    /// Streams reported opened or readable and not yet handed to [`Self::take_readable`].
    readable: BTreeSet<StreamId>,
}

impl EventLog {
    /// Checks one event against those before it and records it.
    pub(super) fn record(&mut self, event: &Event) {
        let alive = |log: &Self, conn: ConnId, what: &str| {
            assert!(
                log.connected.contains_key(&conn),
                "invariant: {what} about {conn}, which was never Connected"
            );
            assert!(
                !log.lost.contains(&conn),
                "invariant: {what} about {conn} after its ConnectionLost"
            );
        };
        match event {
            Event::Connected {
                peer,
                conn,
                replaced,
                ..
            } => {
                assert!(
                    !self.connected.contains_key(conn) && !self.lost.contains(conn),
                    "invariant: {conn} Connected twice"
                );
                if let Some(old) = replaced {
                    assert!(
                        self.connected.get(old) == Some(peer),
                        "invariant: {conn} replaces {old}, which was not a connection to {peer}"
                    );
                }
                self.connected.insert(*conn, *peer);
            }
            Event::ConnectionLost { peer, conn, .. } => {
                alive(self, *conn, "ConnectionLost");
                assert!(
                    self.connected.get(conn) == Some(peer),
                    "invariant: ConnectionLost of {conn} names another peer"
                );
                self.lost.insert(*conn);
            }
            Event::Unresponsive { conn, .. } => alive(self, *conn, "Unresponsive"),
            Event::Reconnecting { lost, .. } => assert!(
                self.lost.contains(lost),
                "invariant: Reconnecting after {lost}, which was not lost"
            ),
            Event::StreamOpened { stream, .. } => {
                alive(self, stream.conn(), "StreamOpened");
                self.note_readable(*stream);
            }
            Event::StreamReadable { stream } => {
                alive(self, stream.conn(), "StreamReadable");
                self.note_readable(*stream);
            }
            Event::StreamWritable { stream } => alive(self, stream.conn(), "StreamWritable"),
            Event::StreamsAvailable { conn, .. } => alive(self, *conn, "StreamsAvailable"),
            Event::StreamFinished { stream } => alive(self, stream.conn(), "StreamFinished"),
            Event::StreamStopped { stream, .. } => alive(self, stream.conn(), "StreamStopped"),
            Event::DialFailed { .. } => {}
            Event::ConnectFailed { conn, .. } => assert!(
                !self.connected.contains_key(conn),
                "invariant: ConnectFailed for {conn}, which was Connected"
            ),
            // `Event` is non-exhaustive: a new kind must get its check here before it ships.
            other => panic!("invariant: no check for {other:?}"),
        }
    }

    fn note_readable(&mut self, stream: StreamId) {
        if self.readable.len() < MAX_READABLE {
            self.readable.insert(stream);
        }
    }

    /// The streams reported opened or readable since the last call.
    pub(super) fn take_readable(&mut self) -> BTreeSet<StreamId> {
        std::mem::take(&mut self.readable)
    }

    /// Connections to `peer` that were Connected and not yet lost.
    pub(super) fn established(&self, peer: &PeerId) -> BTreeSet<ConnId> {
        self.connected
            .iter()
            .filter(|(conn, p)| *p == peer && !self.lost.contains(conn))
            .map(|(conn, _)| *conn)
            .collect()
    }

    /// Every peer a connection was ever reported to.
    pub(super) fn peers(&self) -> BTreeSet<PeerId> {
        self.connected.values().copied().collect()
    }

    /// Whether `conn` was reported lost.
    pub(super) fn is_lost(&self, conn: ConnId) -> bool {
        self.lost.contains(&conn)
    }
}

/// Drains a manager's transmits and events, within bounds; `on_transmit` sees each datagram.
pub(super) fn drain(
    manager: &mut Manager,
    now: Instant,
    log: &mut EventLog,
    buf: &mut Vec<u8>,
    mut on_transmit: impl FnMut(&Transmit, &[u8]),
) {
    let max_payload = usize::from(manager.config().max_udp_payload);
    let mut transmits = 0;
    while let Some(transmit) = manager.poll_transmit(now, buf) {
        transmits += 1;
        assert!(
            transmits <= MAX_TRANSMITS_PER_DRAIN,
            "invariant: poll_transmit did not drain within {MAX_TRANSMITS_PER_DRAIN} datagrams"
        );
        assert!(
            transmit.size <= buf.len(),
            "invariant: transmit size {} beyond the {} bytes written",
            transmit.size,
            buf.len()
        );
        let segment = transmit.segment_size.unwrap_or(transmit.size);
        assert!(
            segment <= max_payload,
            "invariant: a {segment}-byte datagram exceeds max_udp_payload {max_payload}"
        );
        on_transmit(&transmit, &buf[..transmit.size]);
    }
    let mut events = 0;
    while let Some(event) = manager.poll_event() {
        events += 1;
        assert!(
            events <= MAX_EVENTS_PER_DRAIN,
            "invariant: poll_event did not drain within {MAX_EVENTS_PER_DRAIN} events"
        );
        log.record(&event);
    }
}

/// Runs the manager's timers due at `now` the way a driver does, draining after each round.
/// Afterwards `poll_timeout` is `None` or later than `now`: a driver can sleep.
pub(super) fn run_timers(
    manager: &mut Manager,
    now: Instant,
    log: &mut EventLog,
    buf: &mut Vec<u8>,
    mut on_transmit: impl FnMut(&Transmit, &[u8]),
) {
    drain(manager, now, log, buf, &mut on_transmit);
    for round in 0.. {
        match manager.poll_timeout() {
            Some(at) if at <= now => {
                assert!(
                    round < MAX_TIMER_ROUNDS,
                    "invariant: poll_timeout still due after {MAX_TIMER_ROUNDS} \
                     handle_timeout calls at the same instant (the driver would spin)"
                );
                manager.handle_timeout(now);
                drain(manager, now, log, buf, &mut on_transmit);
            }
            _ => break,
        }
    }
}

/// Checks what a manager's getters say against each other and against its event log.
pub(super) fn check_state(manager: &Manager, log: &EventLog) {
    let (handshaking, established, closed) = manager.phase_counts();
    let live = manager.live_connections();
    assert_eq!(
        live,
        handshaking + established,
        "invariant: live_connections {live} != handshaking {handshaking} + established \
         {established}"
    );
    assert_eq!(
        manager.connection_count(),
        handshaking + established + closed,
        "invariant: connection_count disagrees with the phases"
    );
    let limits = &manager.config().limits;
    assert!(
        live <= limits.max_connections,
        "invariant: {live} live connections over the limit of {}",
        limits.max_connections
    );
    let mut announced = 0;
    for peer in log.peers() {
        let connections = manager.connections(&peer);
        let held: BTreeSet<ConnId> = connections.iter().copied().collect();
        let reported = log.established(&peer);
        assert_eq!(
            held, reported,
            "invariant: connections({peer}) disagree with Connected minus ConnectionLost"
        );
        match manager.connection(&peer) {
            Some(preferred) => assert!(
                held.contains(&preferred),
                "invariant: preferred {preferred} to {peer} is not among its connections"
            ),
            None => assert!(
                held.is_empty(),
                "invariant: {peer} has connections but no preferred one"
            ),
        }
        assert!(
            held.len() <= limits.max_connections_per_peer + 1,
            "invariant: {} connections to {peer}, limit {} (+1 replacement)",
            held.len(),
            limits.max_connections_per_peer
        );
        announced += held.len();
    }
    assert_eq!(
        announced, established,
        "invariant: established connections that no Connected event announced"
    );
}

/// A stateless response (a transmit with no connection) must be smaller than the datagram that
/// caused it, so that two endpoints can never amplify each other into a loop.
pub(super) fn check_response(transmit: &Transmit, cause_len: usize, cause_from: SocketAddr) {
    if transmit.conn.is_none() {
        assert!(
            transmit.size <= cause_len,
            "invariant: a {}-byte stateless response to a {cause_len}-byte datagram",
            transmit.size
        );
        assert_eq!(
            transmit.destination, cause_from,
            "invariant: a stateless response goes somewhere else than to the sender"
        );
    }
}
