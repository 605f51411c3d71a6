//! [`Relay`]: the relay server, a sans-IO machine around a [`Host`].
//!
//! The relay takes the hop streams the host negotiates, answers RESERVE and CONNECT, opens
//! stop streams to the targets of circuits and splices the two streams of each circuit. It
//! watches the manager's connection events: a reservation lives on the connection that made
//! it and is freed in the call that reports that connection's death, whatever the cause; a
//! circuit ends in the same call when either end's connection dies.
//!
//! Everything it holds is bounded: hop streams being read and circuits being set up
//! ([`RelayConfig::max_pending`]), reservations and held slots ([`RelayConfig::max_reservations`]), circuits
//! (`max_circuits`), one request per hop stream (4 KiB), and per circuit direction one chunk
//! of [`SPLICE_CHUNK`] bytes in flight: the relay reads a side only when the other has taken
//! what was read before, so a fast sender meets QUIC's flow control, not a growing buffer.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tracing::{debug, trace};

use super::codec::{self, CodecError, HopMessage, Limit, Reservation, Status, StopMessage};
use super::config::RelayConfig;
use super::event::{CircuitEnd, CircuitId, End, FreeCause, RelayEvent};
use super::voucher::Voucher;
use super::{HOP_PROTOCOL, STOP_PROTOCOL};
use crate::address::{Multiaddr, Protocol};
use crate::protocols::closed::ClosedStreams;
use crate::protocols::host::RESET_CODE;
use crate::protocols::multistream::ProtocolNameError;
use crate::protocols::{Host, HostEvent, OutboundId};
use crate::{Cause, ConnId, Event, Keypair, PeerId, Read, SansIo, StreamError, StreamId, Transmit};

/// Bytes read from one side of a circuit at a time: the most a circuit buffers per direction.
pub const SPLICE_CHUNK: usize = 16 * 1024;
/// Streams the relay closed are remembered so that their late events are not passed on; the
/// memory is first pruned at this many (see `protocols::closed`).
const CLOSED_MEMORY: usize = 256;

/// Why a [`Relay`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The keypair given is not the host's identity: vouchers would not verify.
    #[error("the keypair is not the host's identity")]
    KeypairMismatch,
    /// The host refused to register the hop protocol.
    #[error(transparent)]
    Protocol(#[from] ProtocolNameError),
}

/// A reservation, on the connection that made it.
#[derive(Debug)]
struct Reserved {
    peer: PeerId,
    ip: Option<IpAddr>,
    expires: Instant,
}

/// The slot of a reservation whose connection died, held for its peer until `until`.
#[derive(Debug)]
struct Held {
    peer: PeerId,
    ip: Option<IpAddr>,
    until: Instant,
}

/// One direction of a circuit.
#[derive(Debug, Default)]
struct Pipe {
    /// Read from one side, not yet taken by the other.
    pending: Vec<u8>,
    /// Bytes read from the sending side (the relay's own messages not counted).
    bytes: u64,
    /// The sending side finished.
    eof: bool,
    /// The receiving side was finished in turn.
    finished: bool,
}

#[derive(Debug)]
struct Circuit {
    src: PeerId,
    dst: PeerId,
    /// The source's hop stream.
    src_stream: StreamId,
    /// The stop stream to the destination, once opened.
    dst_stream: Option<StreamId>,
    limit: Option<Limit>,
    /// Until open: when the setup fails; once open: the duration limit, if any.
    deadline: Option<Instant>,
    open: bool,
    to_dst: Pipe,
    to_src: Pipe,
}

/// What the relay does with a stream it holds.
#[derive(Debug)]
enum Role {
    /// An inbound hop stream: reading its request.
    Request {
        peer: PeerId,
        buf: Vec<u8>,
        deadline: Instant,
    },
    /// Writing a final answer, then finishing the stream.
    Answering { out: Vec<u8> },
    /// A stream of a circuit (its source's hop stream, or the stop stream once opened).
    Circuit(u64),
}

/// The relay server, a sans-IO machine around a [`Host`].
///
/// The relay takes the hop streams the host negotiates, answers RESERVE and CONNECT, opens
/// stop streams to the targets of circuits and splices the two streams of each circuit. It
/// watches the manager's connection events: a reservation lives on the connection that made
/// it and is freed in the call that reports that connection's death, whatever the cause; a
/// circuit ends in the same call when either end's connection dies.
///
/// Everything it holds is bounded: hop streams being read and circuits being set up
/// ([`RelayConfig::max_pending`]), reservations and held slots (`max_reservations`), circuits
/// (`max_circuits`), one request per hop stream (4 KiB), and per circuit direction one chunk
/// of [`SPLICE_CHUNK`] bytes in flight: the relay reads a side only when the other has taken
/// what was read before, so a fast sender meets QUIC's flow control, not a growing buffer.
pub struct Relay {
    host: Host,
    config: RelayConfig,
    keypair: Keypair,
    local: PeerId,
    /// The wall-clock time at `epoch`: reservations expire in UNIX seconds.
    wall_epoch: SystemTime,
    epoch: Instant,
    /// Remote addresses of the live connections, for the per-IP limit.
    addrs: BTreeMap<ConnId, SocketAddr>,
    reservations: BTreeMap<ConnId, Reserved>,
    held: Vec<Held>,
    streams: BTreeMap<StreamId, Role>,
    /// The stop streams being opened, by request.
    opening: BTreeMap<OutboundId, u64>,
    /// Stop streams still being opened for circuits that ended meanwhile: their outcome is
    /// the relay's, not the application's (a stream that opens is reset). Each is answered
    /// within the host's negotiation timeout or with its connection's loss.
    abandoned: BTreeSet<OutboundId>,
    circuits: BTreeMap<u64, Circuit>,
    /// Circuits being set up (not yet open), for `max_pending`.
    next_circuit: u64,
    /// Streams the relay closed whose late events may still come.
    closed: ClosedStreams,
    events: VecDeque<RelayEvent>,
}

impl Relay {
    /// A relay on `host` (which should be fresh), signing vouchers with `keypair`, the
    /// host's identity. `wall_now` is the wall-clock time at `now`.
    pub fn new(
        now: Instant,
        wall_now: SystemTime,
        mut host: Host,
        keypair: Keypair,
        config: RelayConfig,
    ) -> Result<Self, RelayError> {
        let local = host.manager().local_peer_id();
        if keypair.public().to_peer_id() != local {
            return Err(RelayError::KeypairMismatch);
        }
        host.register(HOP_PROTOCOL)?;
        Ok(Self {
            host,
            config,
            keypair,
            local,
            wall_epoch: wall_now,
            epoch: now,
            addrs: BTreeMap::new(),
            reservations: BTreeMap::new(),
            held: Vec::new(),
            streams: BTreeMap::new(),
            opening: BTreeMap::new(),
            abandoned: BTreeSet::new(),
            circuits: BTreeMap::new(),
            next_circuit: 1,
            closed: ClosedStreams::new(CLOSED_MEMORY),
            events: VecDeque::new(),
        })
    }

    // ---- getters ----

    /// The host, for queries.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The host, for commands (dials, pings, other protocols).
    pub fn host_mut(&mut self) -> &mut Host {
        &mut self.host
    }

    /// The configuration.
    pub fn config(&self) -> &RelayConfig {
        &self.config
    }

    /// Live reservations.
    pub fn reservation_count(&self) -> usize {
        self.reservations.len()
    }

    /// Slots in use: live reservations plus the slots held for peers whose connection died
    /// within the grace period.
    pub fn slots_in_use(&self) -> usize {
        self.reservations.len() + self.held.len()
    }

    /// Whether `peer` holds a live reservation.
    pub fn has_reservation(&self, peer: &PeerId) -> bool {
        self.reservations.values().any(|r| r.peer == *peer)
    }

    /// Circuits open or being set up.
    pub fn circuit_count(&self) -> usize {
        self.circuits.len()
    }

    // ---- commands ----

    /// Sets the addresses sent in reservations (the relay's `/p2p/` part is appended).
    pub fn set_listen_addrs(&mut self, addrs: Vec<Multiaddr>) {
        self.config.listen_addrs = addrs;
    }

    // ---- internals ----

    fn unix_secs(&self, at: Instant) -> u64 {
        let wall = self.wall_epoch + at.saturating_duration_since(self.epoch);
        wall.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
    }

    /// Takes in every event the host has queued; returns whether there was any.
    fn pump(&mut self, now: Instant) -> bool {
        let mut any = false;
        while let Some(event) = self.host.poll_event() {
            any = true;
            self.on_host_event(now, event);
        }
        // Only here, with the host's events drained (see `protocols::closed`): a burst of
        // answered reservations (a fleet reconnecting after a restart) has as many late
        // `StreamFinished` on their way.
        if self.closed.is_due() {
            self.closed.prune(self.host.manager_mut());
        }
        any
    }

    fn on_host_event(&mut self, now: Instant, event: HostEvent) {
        match event {
            HostEvent::InboundStream {
                peer,
                stream,
                protocol,
                leftover,
            } if protocol == HOP_PROTOCOL => self.on_hop_stream(now, peer, stream, &leftover),
            HostEvent::OutboundStream {
                id,
                stream,
                leftover,
                ..
            } if self.opening.contains_key(&id) => {
                if let Some(circuit) = self.opening.remove(&id) {
                    self.on_stop_opened(now, circuit, stream, &leftover);
                }
            }
            HostEvent::OutboundFailed { id, error, .. } if self.opening.contains_key(&id) => {
                if let Some(circuit) = self.opening.remove(&id) {
                    debug!(%error, "stop stream failed");
                    self.refuse_circuit(circuit, Status::ConnectionFailed);
                }
            }
            HostEvent::OutboundStream { id, stream, .. } if self.abandoned.contains(&id) => {
                self.abandoned.remove(&id);
                trace!(%stream, "stop stream of an ended circuit: reset");
                self.reset(stream);
                self.remember_closed(stream);
            }
            HostEvent::OutboundFailed { id, .. } if self.abandoned.contains(&id) => {
                self.abandoned.remove(&id);
            }
            HostEvent::Manager(event) => self.on_manager_event(now, event),
            other => self.events.push_back(RelayEvent::Host(other)),
        }
    }

    fn on_manager_event(&mut self, now: Instant, event: Event) {
        match event {
            Event::Connected { conn, addr, .. } => {
                self.addrs.insert(conn, addr);
                self.events
                    .push_back(RelayEvent::Host(HostEvent::Manager(event)));
            }
            Event::ConnectionLost {
                peer,
                conn,
                addr,
                cause,
                mut unfinished_streams,
            } => {
                // The relay's streams are kept out before the loss is acted on: ending the
                // connection's circuits drops their streams from `streams`.
                unfinished_streams
                    .retain(|s| !self.streams.contains_key(s) && !self.closed.contains(s));
                self.on_connection_lost(now, conn, &cause);
                self.streams.retain(|s, _| s.conn() != conn);
                self.events.push_back(RelayEvent::Host(HostEvent::Manager(
                    Event::ConnectionLost {
                        peer,
                        conn,
                        addr,
                        cause,
                        unfinished_streams,
                    },
                )));
            }
            Event::StreamReadable { stream } if self.streams.contains_key(&stream) => {
                self.service(now, stream);
            }
            Event::StreamWritable { stream } if self.streams.contains_key(&stream) => {
                self.service(now, stream);
            }
            Event::StreamStopped { stream, .. } if self.streams.contains_key(&stream) => {
                match self.streams.get(&stream) {
                    Some(Role::Circuit(id)) => {
                        let id = *id;
                        let end = self.end_of(id, stream);
                        self.close_circuit(id, CircuitEnd::Reset(end));
                    }
                    _ => self.drop_stream(stream),
                }
            }
            Event::StreamReadable { stream }
            | Event::StreamWritable { stream }
            | Event::StreamFinished { stream }
            | Event::StreamStopped { stream, .. }
                if self.streams.contains_key(&stream) || self.closed.contains(&stream) => {}
            other => self
                .events
                .push_back(RelayEvent::Host(HostEvent::Manager(other))),
        }
    }

    fn end_of(&self, circuit: u64, stream: StreamId) -> End {
        match self.circuits.get(&circuit) {
            Some(c) if c.src_stream == stream => End::Source,
            _ => End::Destination,
        }
    }

    /// A connection died: frees its reservation (holding the slot for the grace period),
    /// ends its circuits and forgets its requests, all in this call.
    fn on_connection_lost(&mut self, now: Instant, conn: ConnId, cause: &Cause) {
        self.addrs.remove(&conn);
        if let Some(reserved) = self.reservations.remove(&conn) {
            debug!(peer = %reserved.peer, %conn, %cause, "reservation freed: its connection died");
            if !self.config.grace.is_zero() {
                self.held.push(Held {
                    peer: reserved.peer,
                    ip: reserved.ip,
                    until: now + self.config.grace,
                });
            }
            self.events.push_back(RelayEvent::ReservationFreed {
                peer: reserved.peer,
                conn,
                cause: FreeCause::ConnectionLost(cause.clone()),
            });
        }
        let dying: Vec<(u64, End)> = (self.circuits.iter())
            .filter_map(|(id, c)| {
                if c.src_stream.conn() == conn {
                    Some((*id, End::Source))
                } else if c.dst_stream.is_some_and(|s| s.conn() == conn) {
                    Some((*id, End::Destination))
                } else {
                    None
                }
            })
            .collect();
        for (id, end) in dying {
            self.close_circuit(id, CircuitEnd::ConnectionLost(end, cause.clone()));
        }
    }

    fn on_hop_stream(&mut self, now: Instant, peer: PeerId, stream: StreamId, leftover: &[u8]) {
        let pending = (self.streams.values())
            .filter(|h| matches!(h, Role::Request { .. }))
            .count()
            + self.circuits.values().filter(|c| !c.open).count();
        if pending >= self.config.max_pending {
            debug!(%peer, %stream, "too many requests in progress: hop stream reset");
            self.reset(stream);
            self.remember_closed(stream);
            return;
        }
        self.streams.insert(
            stream,
            Role::Request {
                peer,
                buf: leftover.to_vec(),
                deadline: now + self.config.message_timeout,
            },
        );
        self.service(now, stream);
    }

    /// Does what a stream needs: read a request, flush an answer, splice a circuit.
    fn service(&mut self, now: Instant, stream: StreamId) {
        match self.streams.get(&stream) {
            Some(Role::Request { .. }) => self.read_request(now, stream),
            Some(Role::Answering { .. }) => self.flush_answer(stream),
            Some(Role::Circuit(id)) => {
                let id = *id;
                self.splice(now, id);
            }
            None => {}
        }
    }

    fn read_request(&mut self, now: Instant, stream: StreamId) {
        loop {
            let Some(Role::Request { peer, buf, .. }) = self.streams.get_mut(&stream) else {
                return;
            };
            let peer = *peer;
            match codec::take_frame(buf) {
                Ok(Some(body)) => return self.on_request(now, peer, stream, &body),
                Ok(None) => {}
                Err(error) => return self.bad_request(peer, stream, error),
            }
            let room = (2 + codec::MAX_MESSAGE).saturating_sub(buf.len());
            match self.host.manager_mut().stream_read(stream, room.max(1)) {
                Ok(Read::Data(bytes)) => {
                    if let Some(Role::Request { buf, .. }) = self.streams.get_mut(&stream) {
                        buf.extend_from_slice(&bytes);
                    }
                }
                Ok(Read::Finished) => return self.bad_request(peer, stream, CodecError::Truncated),
                Err(StreamError::Blocked) => return,
                Err(error) => {
                    debug!(%peer, %stream, %error, "hop stream failed before its request");
                    return self.drop_stream(stream);
                }
            }
        }
    }

    fn bad_request(&mut self, peer: PeerId, stream: StreamId, error: CodecError) {
        let status = match error {
            CodecError::Oversize(_) | CodecError::Truncated => None,
            _ => Some(Status::MalformedMessage),
        };
        debug!(%peer, %stream, %error, "bad hop request");
        match status {
            Some(status) => self.answer(stream, status_only(status)),
            None => self.drop_stream(stream),
        }
        self.events.push_back(RelayEvent::BadRequest {
            peer,
            error,
            status,
        });
    }

    fn on_request(&mut self, now: Instant, peer: PeerId, stream: StreamId, body: &[u8]) {
        let leftover = match self.streams.get_mut(&stream) {
            Some(Role::Request { buf, .. }) => std::mem::take(buf),
            _ => Vec::new(),
        };
        match HopMessage::decode(body) {
            Ok(HopMessage::Reserve) => self.on_reserve(now, peer, stream),
            Ok(HopMessage::Connect { peer: dst }) => {
                self.on_connect(now, peer, dst, stream, leftover)
            }
            Ok(HopMessage::Status { .. }) => {
                self.answer(stream, status_only(Status::UnexpectedMessage));
                self.events.push_back(RelayEvent::BadRequest {
                    peer,
                    error: CodecError::UnknownType(2),
                    status: Some(Status::UnexpectedMessage),
                });
            }
            Err(error) => self.bad_request(peer, stream, error),
        }
    }

    fn limit_for(&self, a: &PeerId, b: &PeerId) -> Option<Limit> {
        if self.config.unlimited.contains(a) || self.config.unlimited.contains(b) {
            return None;
        }
        Some(Limit {
            duration: Some(self.config.circuit_duration),
            data: Some(self.config.circuit_bytes),
        })
    }

    fn on_reserve(&mut self, now: Instant, peer: PeerId, stream: StreamId) {
        let conn = stream.conn();
        let ip = self.addrs.get(&conn).map(SocketAddr::ip);
        let renewed = self.reservations.contains_key(&conn);
        let mut reclaimed = false;
        if !renewed {
            // A slot held for this peer is its own again: taken back before the limits are
            // counted, so the peer never counts twice.
            if let Some(at) = self.held.iter().position(|h| h.peer == peer) {
                self.held.swap_remove(at);
                reclaimed = true;
            }
            let refusal = if self.slots_in_use() >= self.config.max_reservations {
                Some("total")
            } else if self.slots_of(|p, _| *p == peer) >= self.config.max_reservations_per_peer {
                Some("per peer")
            } else if (self.slots_of(|_, i| ip.is_some() && i == ip))
                >= self.config.max_reservations_per_ip
            {
                Some("per IP")
            } else {
                None
            };
            if let Some(limit) = refusal {
                debug!(%peer, %conn, limit, "reservation refused at a limit");
                let status = Status::ResourceLimitExceeded;
                self.answer(stream, status_only(status));
                self.events
                    .push_back(RelayEvent::ReservationRefused { peer, conn, status });
                return;
            }
        }
        let expires = now + self.config.reservation_ttl;
        self.reservations
            .insert(conn, Reserved { peer, ip, expires });
        let expire = self.unix_secs(expires);
        let voucher = Voucher {
            relay: self.local,
            peer,
            expiration: expire,
        };
        let voucher = match voucher.sign(&self.keypair) {
            Ok(signed) => Some(signed),
            Err(error) => {
                debug!(%error, "voucher not signed: reservation sent without it");
                None
            }
        };
        let addrs = (self.config.listen_addrs.iter())
            .map(|a| with_p2p(a, self.local))
            .collect();
        let answer = HopMessage::Status {
            status: Status::Ok,
            reservation: Some(Reservation {
                expire,
                addrs,
                voucher,
            }),
            limit: self.limit_for(&peer, &peer),
        };
        debug!(%peer, %conn, renewed, reclaimed, "reservation accepted");
        self.answer(stream, answer.encode());
        self.events.push_back(RelayEvent::ReservationAccepted {
            peer,
            conn,
            addr: self.addrs.get(&conn).copied(),
            expires,
            renewed,
            reclaimed,
        });
    }

    /// Slots (live and held) whose peer and IP match.
    fn slots_of(&self, matches: impl Fn(&PeerId, Option<IpAddr>) -> bool) -> usize {
        let live = (self.reservations.values())
            .filter(|r| matches(&r.peer, r.ip))
            .count();
        live + self.held.iter().filter(|h| matches(&h.peer, h.ip)).count()
    }

    fn circuits_of(&self, peer: &PeerId) -> usize {
        (self.circuits.values())
            .filter(|c| c.src == *peer || c.dst == *peer)
            .count()
    }

    fn on_connect(
        &mut self,
        now: Instant,
        src: PeerId,
        dst: PeerId,
        stream: StreamId,
        leftover: Vec<u8>,
    ) {
        let refusal = if dst == src || dst == self.local {
            Some(Status::PermissionDenied)
        } else if !self.has_reservation(&dst) {
            Some(Status::NoReservation)
        } else if self.circuits.len() >= self.config.max_circuits
            || self.circuits_of(&src) >= self.config.max_circuits_per_peer
            || self.circuits_of(&dst) >= self.config.max_circuits_per_peer
        {
            Some(Status::ResourceLimitExceeded)
        } else {
            None
        };
        if let Some(status) = refusal {
            debug!(%src, %dst, %status, "CONNECT refused");
            self.answer(stream, status_only(status));
            self.events
                .push_back(RelayEvent::CircuitRefused { src, dst, status });
            return;
        }
        let id = self.next_circuit;
        self.next_circuit += 1;
        // The host opens it on the peer's preferred connection: its newest live one.
        let opened = self.host.open_stream(now, dst, [STOP_PROTOCOL]);
        let mut circuit = Circuit {
            src,
            dst,
            src_stream: stream,
            dst_stream: None,
            limit: self.limit_for(&src, &dst),
            deadline: Some(now + self.config.message_timeout),
            open: false,
            to_dst: Pipe::default(),
            to_src: Pipe::default(),
        };
        circuit.to_dst.bytes = leftover.len() as u64;
        circuit.to_dst.pending = leftover;
        self.circuits.insert(id, circuit);
        self.streams.insert(stream, Role::Circuit(id));
        match opened {
            Ok(outbound) => {
                trace!(%src, %dst, circuit = id, "opening the stop stream");
                self.opening.insert(outbound, id);
            }
            Err(error) => {
                debug!(%src, %dst, %error, "cannot open the stop stream");
                self.refuse_circuit(id, Status::ConnectionFailed);
            }
        }
    }

    fn on_stop_opened(&mut self, now: Instant, id: u64, stream: StreamId, leftover: &[u8]) {
        let Some(circuit) = self.circuits.get_mut(&id) else {
            // The circuit ended while its stop stream was negotiated.
            self.reset(stream);
            self.remember_closed(stream);
            return;
        };
        circuit.dst_stream = Some(stream);
        // Until the answer, `to_src.pending` gathers the stop stream's bytes.
        circuit.to_src.pending.extend_from_slice(leftover);
        let connect = StopMessage::Connect {
            peer: circuit.src,
            limit: circuit.limit,
        }
        .encode();
        self.streams.insert(stream, Role::Circuit(id));
        match self.host.manager_mut().stream_write(stream, &connect) {
            Ok(n) if n == connect.len() => {}
            // A fresh stream takes a few hundred bytes: anything else is a failed stream.
            _ => return self.refuse_circuit(id, Status::ConnectionFailed),
        }
        self.splice(now, id);
    }

    /// Stops waiting for the stop streams being opened for circuit `id`; their outcome, when
    /// the host reports it, is dropped (a stream that opened is reset).
    fn abandon_opening(&mut self, id: u64) {
        let ids: Vec<OutboundId> = (self.opening.iter())
            .filter(|(_, circuit)| **circuit == id)
            .map(|(outbound, _)| *outbound)
            .collect();
        for outbound in ids {
            self.opening.remove(&outbound);
            self.abandoned.insert(outbound);
        }
    }

    /// A circuit in setup could not be made: `status` to its source, the stop stream reset.
    fn refuse_circuit(&mut self, id: u64, status: Status) {
        let Some(circuit) = self.circuits.remove(&id) else {
            return;
        };
        self.abandon_opening(id);
        if let Some(stop) = circuit.dst_stream {
            self.streams.remove(&stop);
            self.reset(stop);
            self.remember_closed(stop);
        }
        self.answer(circuit.src_stream, status_only(status));
        self.events.push_back(RelayEvent::CircuitRefused {
            src: circuit.src,
            dst: circuit.dst,
            status,
        });
    }

    /// Waits for the target's answer on the stop stream (setup), or moves bytes both ways.
    fn splice(&mut self, now: Instant, id: u64) {
        let Some(circuit) = self.circuits.get(&id) else {
            return;
        };
        if !circuit.open {
            let Some(stop) = circuit.dst_stream else {
                return;
            };
            return self.read_stop_answer(now, id, stop);
        }
        let (src, dst) = match circuit.dst_stream {
            Some(dst) => (circuit.src_stream, dst),
            None => return,
        };
        if let Some(end) = self.pipe(id, src, dst, true) {
            return self.close_circuit(id, end);
        }
        if let Some(end) = self.pipe(id, dst, src, false) {
            return self.close_circuit(id, end);
        }
        if (self.circuits.get(&id)).is_some_and(|c| c.to_dst.finished && c.to_src.finished) {
            self.close_circuit(id, CircuitEnd::Done);
        }
    }

    fn read_stop_answer(&mut self, now: Instant, id: u64, stop: StreamId) {
        loop {
            let Some(circuit) = self.circuits.get_mut(&id) else {
                return;
            };
            let buf = &mut circuit.to_src.pending;
            match codec::take_frame(buf) {
                Ok(Some(body)) => {
                    return match StopMessage::decode(&body) {
                        Ok(StopMessage::Status(Status::Ok)) => self.open_circuit(now, id),
                        Ok(other) => {
                            debug!(circuit = id, ?other, "target refused the circuit");
                            self.refuse_circuit(id, Status::ConnectionFailed)
                        }
                        Err(error) => {
                            debug!(circuit = id, %error, "target answered garbage");
                            self.refuse_circuit(id, Status::ConnectionFailed)
                        }
                    };
                }
                Ok(None) => {}
                Err(_) => return self.refuse_circuit(id, Status::ConnectionFailed),
            }
            let room = (2 + codec::MAX_MESSAGE).saturating_sub(buf.len()).max(1);
            match self.host.manager_mut().stream_read(stop, room) {
                Ok(Read::Data(bytes)) => {
                    if let Some(circuit) = self.circuits.get_mut(&id) {
                        circuit.to_src.pending.extend_from_slice(&bytes);
                    }
                }
                Err(StreamError::Blocked) => return,
                Ok(Read::Finished) | Err(_) => {
                    return self.refuse_circuit(id, Status::ConnectionFailed)
                }
            }
        }
    }

    fn open_circuit(&mut self, now: Instant, id: u64) {
        let Some(circuit) = self.circuits.get_mut(&id) else {
            return;
        };
        circuit.open = true;
        circuit.deadline = (circuit.limit).and_then(|l| l.duration).map(|d| now + d);
        // The answer to the source goes first, then what the target sent after its STATUS.
        let mut out = HopMessage::Status {
            status: Status::Ok,
            reservation: None,
            limit: circuit.limit,
        }
        .encode();
        circuit.to_src.bytes = circuit.to_src.pending.len() as u64;
        out.append(&mut circuit.to_src.pending);
        circuit.to_src.pending = out;
        let (src, dst) = (circuit.src, circuit.dst);
        debug!(%src, %dst, circuit = id, "circuit open");
        self.events.push_back(RelayEvent::CircuitOpened {
            id: CircuitId(id),
            src,
            dst,
        });
        self.splice(now, id);
    }

    /// Moves what it can from `from` to `to`; `Some` when the circuit must end, and why.
    fn pipe(&mut self, id: u64, from: StreamId, to: StreamId, forward: bool) -> Option<CircuitEnd> {
        let sender = if forward {
            End::Source
        } else {
            End::Destination
        };
        loop {
            // A circuit that is gone has nothing to move.
            let circuit = self.circuits.get_mut(&id)?;
            let data_limit = circuit.limit.and_then(|l| l.data);
            let pipe = if forward {
                &mut circuit.to_dst
            } else {
                &mut circuit.to_src
            };
            let manager = self.host.manager_mut();
            if !pipe.pending.is_empty() {
                match manager.stream_write(to, &pipe.pending) {
                    Ok(n) => {
                        pipe.pending.drain(..n);
                        if !pipe.pending.is_empty() {
                            return None;
                        }
                    }
                    Err(StreamError::Blocked) => return None,
                    Err(_) => return Some(CircuitEnd::Reset(other(sender))),
                }
            }
            if pipe.eof {
                if !pipe.finished {
                    pipe.finished = true;
                    let _ = manager.stream_finish(to);
                }
                return None;
            }
            match manager.stream_read(from, SPLICE_CHUNK) {
                Ok(Read::Data(bytes)) => {
                    pipe.bytes += bytes.len() as u64;
                    if data_limit.is_some_and(|limit| pipe.bytes > limit) {
                        return Some(CircuitEnd::DataLimit);
                    }
                    pipe.pending.extend_from_slice(&bytes);
                }
                Ok(Read::Finished) => pipe.eof = true,
                Err(StreamError::Blocked) => return None,
                Err(_) => return Some(CircuitEnd::Reset(sender)),
            }
        }
    }

    fn close_circuit(&mut self, id: u64, reason: CircuitEnd) {
        let Some(circuit) = self.circuits.remove(&id) else {
            return;
        };
        self.abandon_opening(id);
        if !circuit.open {
            // Never opened: the source learns it as a failed CONNECT.
            if let Some(stop) = circuit.dst_stream {
                self.streams.remove(&stop);
                self.reset(stop);
                self.remember_closed(stop);
            }
            let status = Status::ConnectionFailed;
            if matches!(reason, CircuitEnd::ConnectionLost(End::Source, _)) {
                self.streams.remove(&circuit.src_stream);
            } else {
                self.answer(circuit.src_stream, status_only(status));
            }
            self.events.push_back(RelayEvent::CircuitRefused {
                src: circuit.src,
                dst: circuit.dst,
                status,
            });
            return;
        }
        let streams = [Some(circuit.src_stream), circuit.dst_stream];
        for stream in streams.into_iter().flatten() {
            self.streams.remove(&stream);
            if reason != CircuitEnd::Done {
                self.reset(stream);
            }
            self.remember_closed(stream);
        }
        debug!(src = %circuit.src, dst = %circuit.dst, circuit = id, %reason, "circuit closed");
        self.events.push_back(RelayEvent::CircuitClosed {
            id: CircuitId(id),
            src: circuit.src,
            dst: circuit.dst,
            to_dst: circuit.to_dst.bytes,
            to_src: circuit.to_src.bytes,
            reason,
        });
    }

    /// Writes a final answer on a hop stream, then finishes it.
    fn answer(&mut self, stream: StreamId, out: Vec<u8>) {
        self.streams.insert(stream, Role::Answering { out });
        // No more requests on this stream: what else the client sends is dropped.
        let _ = self.host.manager_mut().stream_stop(stream, RESET_CODE);
        self.flush_answer(stream);
    }

    fn flush_answer(&mut self, stream: StreamId) {
        let Some(Role::Answering { out }) = self.streams.get_mut(&stream) else {
            return;
        };
        let manager = self.host.manager_mut();
        match manager.stream_write(stream, out) {
            Ok(n) => {
                out.drain(..n);
                if out.is_empty() {
                    let _ = manager.stream_finish(stream);
                    self.streams.remove(&stream);
                    self.remember_closed(stream);
                }
            }
            Err(StreamError::Blocked) => {}
            Err(_) => self.drop_stream(stream),
        }
    }

    /// Resets a stream the relay holds and forgets it.
    fn drop_stream(&mut self, stream: StreamId) {
        self.streams.remove(&stream);
        self.reset(stream);
        self.remember_closed(stream);
    }

    fn reset(&mut self, stream: StreamId) {
        let manager = self.host.manager_mut();
        let _ = manager.stream_reset(stream, RESET_CODE);
        let _ = manager.stream_stop(stream, RESET_CODE);
    }

    fn remember_closed(&mut self, stream: StreamId) {
        self.closed.insert(stream);
    }

    /// Ends what is due: requests not sent in time, setups not answered, circuits at their
    /// duration, reservations at their TTL, held slots at the end of their grace.
    fn expire(&mut self, now: Instant) {
        let late: Vec<StreamId> = (self.streams.iter())
            .filter(|(_, h)| matches!(h, Role::Request { deadline, .. } if *deadline <= now))
            .map(|(s, _)| *s)
            .collect();
        for stream in late {
            debug!(%stream, "no hop request in time");
            self.drop_stream(stream);
        }
        let due: Vec<(u64, bool)> = (self.circuits.iter())
            .filter(|(_, c)| c.deadline.is_some_and(|d| d <= now))
            .map(|(id, c)| (*id, c.open))
            .collect();
        for (id, open) in due {
            if open {
                self.close_circuit(id, CircuitEnd::DurationLimit);
            } else {
                debug!(circuit = id, "the target did not answer in time");
                self.refuse_circuit(id, Status::ConnectionFailed);
            }
        }
        let expired: Vec<ConnId> = (self.reservations.iter())
            .filter(|(_, r)| r.expires <= now)
            .map(|(c, _)| *c)
            .collect();
        for conn in expired {
            if let Some(reserved) = self.reservations.remove(&conn) {
                self.events.push_back(RelayEvent::ReservationFreed {
                    peer: reserved.peer,
                    conn,
                    cause: FreeCause::Expired,
                });
            }
        }
        self.held.retain(|h| h.until > now);
    }

    fn next_deadline(&self) -> Option<Instant> {
        let requests = self.streams.values().filter_map(|h| match h {
            Role::Request { deadline, .. } => Some(*deadline),
            _ => None,
        });
        let circuits = self.circuits.values().filter_map(|c| c.deadline);
        let reservations = self.reservations.values().map(|r| r.expires);
        let held = self.held.iter().map(|h| h.until);
        requests
            .chain(circuits)
            .chain(reservations)
            .chain(held)
            .min()
    }
}

fn other(end: End) -> End {
    match end {
        End::Source => End::Destination,
        End::Destination => End::Source,
    }
}

fn status_only(status: Status) -> Vec<u8> {
    HopMessage::Status {
        status,
        reservation: None,
        limit: None,
    }
    .encode()
}

/// `addr` ending in `/p2p/<peer>`.
fn with_p2p(addr: &Multiaddr, peer: PeerId) -> Multiaddr {
    if matches!(addr.iter().last(), Some(Protocol::P2p(_))) {
        addr.clone()
    } else {
        addr.clone().with(Protocol::P2p(peer))
    }
}

impl SansIo for Relay {
    type Event = RelayEvent;

    fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        local_ip: Option<IpAddr>,
        data: &[u8],
    ) {
        self.host.handle_datagram(now, from, local_ip, data);
        self.pump(now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.host.handle_timeout(now);
        self.pump(now);
        self.expire(now);
    }

    fn handle_unreachable(&mut self, now: Instant, addr: SocketAddr) {
        self.host.handle_unreachable(now, addr);
        self.pump(now);
    }

    fn set_max_datagrams(&mut self, max: usize) {
        self.host.set_max_datagrams(max);
    }

    fn shard(&self) -> Option<u8> {
        self.host.shard()
    }

    fn datagram_shard(&self, datagram: &[u8]) -> Option<u8> {
        self.host.datagram_shard(datagram)
    }

    /// As the host's: takes in the host's events first (connection deaths among them), and
    /// what the relay writes in answer goes out in the same run of calls.
    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        loop {
            if let Some(transmit) = self.host.poll_transmit(now, buf) {
                return Some(transmit);
            }
            if !self.pump(now) {
                return None;
            }
        }
    }

    fn poll_event(&mut self) -> Option<RelayEvent> {
        self.events.pop_front()
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        let own = self.next_deadline();
        self.host.poll_timeout().into_iter().chain(own).min()
    }
}

impl crate::GracefulClose for Relay {
    fn close_all(&mut self, now: Instant) {
        self.host.manager_mut().close_all(now);
    }

    fn is_closed(&self) -> bool {
        self.host.manager().connection_count() == 0
    }
}

#[cfg(feature = "sim")]
impl crate::sim::Simulated for Relay {
    /// The manager's configuration, the host's, and the relay's.
    type Config = (crate::Config, crate::HostConfig, RelayConfig);

    fn build(
        identity: crate::Identity,
        (config, host, relay): Self::Config,
        seed: [u8; 32],
        now: Instant,
        wall_now: SystemTime,
    ) -> Result<Self, crate::ManagerError> {
        let keypair = identity.keypair().clone();
        let host =
            <Host as crate::sim::Simulated>::build(identity, (config, host), seed, now, wall_now)?;
        match Relay::new(now, wall_now, host, keypair, relay) {
            Ok(relay) => Ok(relay),
            Err(error) => {
                unreachable!("the identity is the host's and HOP_PROTOCOL valid: {error}")
            }
        }
    }

    fn manager_mut(&mut self) -> &mut crate::Manager {
        self.host.manager_mut()
    }
}
