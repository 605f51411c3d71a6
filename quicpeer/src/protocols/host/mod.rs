//! [`Host`]: the manager plus libp2p's stream protocols, as one sans-IO machine.
//!
//! A libp2p peer does not just open a QUIC stream and write: every stream first agrees on a
//! protocol with multistream-select, and every node answers `/ipfs/ping/1.0.0`. The host owns a
//! [`Manager`] and does that work on its streams: it negotiates every inbound stream as the
//! listener, answers pings itself, hands streams of the protocols the application
//! [registered](Host::register) over in [`HostEvent::InboundStream`], negotiates the streams the
//! application [opens](Host::open_stream), and [pings](Host::ping) peers on one reused stream
//! per connection. The manager's own events pass through as [`HostEvent::Manager`].
//!
//! The host holds a stream only while it negotiates it or while the stream carries pings; once
//! handed over, the stream is the application's, to use through [`Host::manager_mut`]. Streams
//! of a connection that dies are dropped in the call that reports the loss, every buffer is
//! bounded, and every negotiation and ping has a deadline.
//!
//! ```no_run
//! # use std::time::{Instant, SystemTime};
//! # use quicpeer::protocols::{Host, HostConfig, HostEvent};
//! # use quicpeer::{Config, Identity, Manager, SansIo};
//! # fn recv() -> Option<(std::net::SocketAddr, Vec<u8>)> { None }
//! # fn send(_: std::net::SocketAddr, _: &[u8]) {}
//! # fn sleep_until(_: Option<Instant>) {}
//! let (now, wall) = (Instant::now(), SystemTime::now());
//! let identity = Identity::from_ed25519_seed([1; 32]);
//! let manager = Manager::new(now, wall, identity, Config::default(), [7; 32])?;
//! let mut host = Host::new(now, manager, HostConfig::default(), [8; 32]);
//! host.register("/my-app/1.0.0")?;
//! let mut buf = Vec::new();
//! loop {
//!     let now = Instant::now();
//!     while let Some((from, datagram)) = recv() {
//!         host.handle_datagram(now, from, None, &datagram);
//!     }
//!     if host.poll_timeout().is_some_and(|t| t <= now) {
//!         host.handle_timeout(now);
//!     }
//!     while let Some(transmit) = host.poll_transmit(now, &mut buf) {
//!         send(transmit.destination, &buf[..transmit.size]);
//!     }
//!     while let Some(event) = host.poll_event() {
//!         if let HostEvent::InboundStream { stream: _, leftover: _, .. } = event {
//!             // `leftover` is the first data; read the rest with
//!             // host.manager_mut().stream_read_chunks
//!         }
//!     }
//!     sleep_until(host.poll_timeout());
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod event;
mod stream;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use tracing::{debug, trace};

use crate::manager::timers::TimerIndex;
pub use event::{DialAddrsError, HostEvent, OpenError, OutboundId, PingStartError, StreamFailure};
use stream::{ConnState, HostStream, Input, Outcome, Queued, Role, Timed};

use super::multistream::{validate_protocol_name, Dialer, Listener, ProtocolNameError};
use super::ping::{self, Responder};
use crate::address::{self, Multiaddr};
use crate::{
    Cause, ConnId, DialOutcome, Event, Manager, PeerId, Read, ReadStatus, SansIo, StreamError,
    StreamId, Transmit,
};

/// Application error code with which the host resets and stops a stream it abandons.
pub const RESET_CODE: u64 = 0;
/// Bytes read from a stream at a time while the host holds it; also the most a negotiation can
/// hand over as leftover.
const READ_CHUNK: usize = 1024;
/// Inbound ping streams kept per connection; the ping spec asks listeners to accept at most two.
const MAX_INBOUND_PINGS: usize = 2;
/// Streams the host closed are remembered per connection so that their late events are not
/// passed on; the memory is first pruned at this many (see `protocols::closed`).
const CLOSED_MEMORY: usize = 32;

/// Settings of a [`Host`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HostConfig {
    /// How long a stream may take to agree on a protocol, either way, before it is reset.
    pub negotiation_timeout: Duration,
    /// How long a ping may take, from [`Host::ping`] to the echo (negotiation included).
    pub ping_timeout: Duration,
}

impl HostConfig {
    /// A configuration with these timeouts.
    pub fn new(negotiation_timeout: Duration, ping_timeout: Duration) -> Self {
        Self {
            negotiation_timeout,
            ping_timeout,
        }
    }
}

impl Default for HostConfig {
    /// rust-libp2p's figures: 10 s to negotiate a stream, 20 s for a ping.
    fn default() -> Self {
        Self {
            negotiation_timeout: Duration::from_secs(10),
            ping_timeout: Duration::from_secs(20),
        }
    }
}

/// The manager plus multistream-select and ping. See the [module documentation](self).
pub struct Host {
    manager: Manager,
    config: HostConfig,
    rng: ChaCha20Rng,
    protocols: BTreeSet<String>,
    conns: BTreeMap<ConnId, ConnState>,
    events: VecDeque<HostEvent>,
    /// The latest time given.
    now: Instant,
    /// Scratch for the chunks of one read, kept for its allocation.
    chunks: Vec<Bytes>,
    /// The negotiation and ping deadlines of the streams (and of the opens waiting for stream
    /// credit), so that `poll_timeout` and the expiry of deadlines never visit every stream of
    /// every connection.
    deadlines: TimerIndex<Timed>,
    /// Numbers the application's outbound requests and the queued opens.
    next_key: u64,
    /// Connections whose memory of closed streams reached its pruning length.
    prune_due: Vec<ConnId>,
}

impl Host {
    /// A host around `manager`, which should be fresh (or have no undrained events the host
    /// must see). `seed` drives the ping payloads.
    pub fn new(now: Instant, manager: Manager, config: HostConfig, seed: [u8; 32]) -> Self {
        Self {
            manager,
            config,
            rng: ChaCha20Rng::from_seed(seed),
            protocols: BTreeSet::new(),
            conns: BTreeMap::new(),
            events: VecDeque::new(),
            now,
            chunks: Vec::new(),
            deadlines: TimerIndex::default(),
            next_key: 1,
            prune_due: Vec::new(),
        }
    }

    // ---- getters ----

    /// The manager, for queries.
    pub fn manager(&self) -> &Manager {
        &self.manager
    }

    /// The manager, for commands (dial, close, and the streams handed over). Its events reach
    /// the application through [`HostEvent::Manager`].
    pub fn manager_mut(&mut self) -> &mut Manager {
        &mut self.manager
    }

    /// The protocols inbound streams may negotiate: ping and those registered.
    pub fn protocols(&self) -> impl Iterator<Item = &str> {
        std::iter::once(ping::PROTOCOL).chain(self.protocols.iter().map(String::as_str))
    }

    /// Streams the host holds now (negotiating, or carrying pings), all connections together.
    pub fn stream_count(&self) -> usize {
        self.conns.values().map(|c| c.streams.len()).sum()
    }

    // ---- input ----

    /// Feeds an ICMP "unreachable" about a datagram sent to `addr`, as
    /// [`Manager::handle_unreachable`] does; a driver that sees ICMP errors calls it.
    pub fn handle_unreachable(&mut self, now: Instant, addr: SocketAddr) {
        self.now = now;
        self.manager.handle_unreachable(now, addr);
        self.pump(now);
    }

    // ---- commands ----

    /// Accepts inbound streams of `protocol` from now on; they arrive as
    /// [`HostEvent::InboundStream`].
    pub fn register(&mut self, protocol: impl Into<String>) -> Result<(), ProtocolNameError> {
        let protocol = protocol.into();
        validate_protocol_name(&protocol)?;
        if protocol == ping::PROTOCOL {
            return Err(ProtocolNameError::Reserved(protocol));
        }
        self.protocols.insert(protocol);
        Ok(())
    }

    /// Refuses `protocol` from now on; returns whether it was registered.
    pub fn unregister(&mut self, protocol: &str) -> bool {
        self.protocols.remove(protocol)
    }

    /// Dials a peer at libp2p QUIC multiaddrs; their `/p2p/` parts name the peer and must agree.
    pub fn dial_addrs(
        &mut self,
        now: Instant,
        addrs: &[Multiaddr],
    ) -> Result<(PeerId, DialOutcome), DialAddrsError> {
        self.now = now;
        let (peer, sockets) = address::peer_addrs(addrs)?;
        let outcome = self.manager.dial(now, peer, sockets)?;
        Ok((peer, outcome))
    }

    /// Opens a stream to `peer` and negotiates the first of `protocols` (in order of
    /// preference) the peer supports. The result comes as [`HostEvent::OutboundStream`] or
    /// [`HostEvent::OutboundFailed`], both carrying the returned id.
    ///
    /// When the peer's limit on concurrent streams is reached, the open waits (in order with
    /// the others) until the peer allows more streams; the negotiation timeout runs from this
    /// call.
    pub fn open_stream<I>(
        &mut self,
        now: Instant,
        peer: PeerId,
        protocols: I,
    ) -> Result<OutboundId, OpenError>
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.now = now;
        let dialer = Dialer::new(protocols)?;
        let conn = self
            .manager
            .connection(&peer)
            .ok_or(OpenError::NotConnected)?;
        let id = OutboundId(self.take_key());
        let deadline = now + self.config.negotiation_timeout;
        self.open_or_queue(now, conn, peer, Role::Opening { dialer, id }, deadline)?;
        Ok(id)
    }

    /// Pings `peer` on its preferred connection, over the connection's ping stream (opened on
    /// the first ping, then reused). The result comes as [`HostEvent::PingResult`] or
    /// [`HostEvent::PingFailed`]; returns the connection pinged.
    pub fn ping(&mut self, now: Instant, peer: PeerId) -> Result<ConnId, PingStartError> {
        self.now = now;
        let conn = self
            .manager
            .connection(&peer)
            .ok_or(PingStartError::NotConnected)?;
        let deadline = Some(now + self.config.ping_timeout);
        let mut payload = [0u8; ping::PAYLOAD_LEN];
        self.rng.fill_bytes(&mut payload);
        if self.conns.get(&conn).is_some_and(|state| {
            (state.queued.iter()).any(|q| matches!(q.role, Role::PingOpening { .. }))
        }) {
            // The ping stream waits for the peer's stream credit, its first ping with it.
            return Err(PingStartError::InFlight);
        }
        let existing = self.conns.get_mut(&conn).and_then(|state| {
            let id = state.ping?;
            Some((id, state.streams.get_mut(&id)?))
        });
        let stream = match existing {
            Some((id, stream)) => {
                let Role::Pinging(pinger) = &mut stream.role else {
                    // Still negotiating, so its first ping is in flight.
                    return Err(PingStartError::InFlight);
                };
                let bytes = pinger
                    .start(now, payload)
                    .map_err(|_| PingStartError::InFlight)?;
                stream.out.extend_from_slice(&bytes);
                stream.deadline = deadline;
                id
            }
            None => {
                let dialer = match Dialer::new([ping::PROTOCOL]) {
                    Ok(dialer) => dialer,
                    Err(_) => unreachable!("the ping protocol name is valid"),
                };
                let role = Role::PingOpening { dialer, payload };
                let deadline = now + self.config.ping_timeout;
                trace!(%peer, %conn, "ping on a new stream");
                self.open_or_queue(now, conn, peer, role, deadline)?;
                return Ok(conn);
            }
        };
        trace!(%peer, %conn, %stream, "ping");
        self.service(conn, stream, now);
        Ok(conn)
    }

    // ---- internals ----

    fn take_key(&mut self) -> u64 {
        let key = self.next_key;
        self.next_key += 1;
        key
    }

    /// Opens an outbound stream for `role` (`Opening` or `PingOpening`) and starts it, or,
    /// when the peer's stream limit is reached (or earlier opens wait already), queues it until
    /// the peer allows more streams.
    fn open_or_queue(
        &mut self,
        now: Instant,
        conn: ConnId,
        peer: PeerId,
        role: Role,
        deadline: Instant,
    ) -> Result<(), StreamError> {
        let waiting = self.conns.get(&conn).is_some_and(|s| !s.queued.is_empty());
        let opened = if waiting {
            Err(StreamError::Limit)
        } else {
            self.manager.open_stream(conn)
        };
        match opened {
            Ok(id) => {
                self.start_outbound(now, conn, peer, id, role, deadline);
                Ok(())
            }
            Err(StreamError::Limit) => {
                debug!(%peer, %conn, "stream limit reached: the open waits for the peer's credit");
                let key = self.take_key();
                let state = (self.conns)
                    .entry(conn)
                    .or_insert_with(|| ConnState::new(peer));
                state.queued.push_back(Queued {
                    key,
                    role,
                    deadline,
                });
                self.deadlines.touch(Timed::Queued(conn, key));
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    /// Takes on a freshly opened outbound stream and starts its negotiation.
    fn start_outbound(
        &mut self,
        now: Instant,
        conn: ConnId,
        peer: PeerId,
        id: StreamId,
        role: Role,
        deadline: Instant,
    ) {
        let ping = matches!(role, Role::PingOpening { .. });
        self.insert(conn, peer, id, role, Some(deadline));
        if ping {
            if let Some(state) = self.conns.get_mut(&conn) {
                state.ping = Some(id);
            }
        }
        self.service(conn, id, now);
    }

    /// The peer allows more streams on `conn`: opens the queued streams, in order, while it
    /// lets us.
    fn open_queued(&mut self, now: Instant, conn: ConnId) {
        loop {
            let Some(state) = self.conns.get_mut(&conn) else {
                return;
            };
            let peer = state.peer;
            if state.queued.is_empty() {
                return;
            }
            let id = match self.manager.open_stream(conn) {
                Ok(id) => id,
                Err(StreamError::Limit) => return,
                Err(error) => {
                    debug!(%conn, %error, "queued opens cannot proceed");
                    return;
                }
            };
            let Some(queued) = self.conns.get_mut(&conn).and_then(|s| s.queued.pop_front()) else {
                return;
            };
            self.deadlines.touch(Timed::Queued(conn, queued.key));
            trace!(%peer, %conn, stream = %id, "queued open proceeds");
            self.start_outbound(now, conn, peer, id, queued.role, queued.deadline);
        }
    }

    /// Reports the failure of an outbound request that has no stream (queued, or never
    /// opened).
    fn report_unopened(&mut self, conn: ConnId, peer: PeerId, role: &Role, error: StreamFailure) {
        match role {
            Role::Opening { id, .. } => self.events.push_back(HostEvent::OutboundFailed {
                peer,
                id: *id,
                stream: None,
                error,
            }),
            Role::PingOpening { .. } => {
                self.events
                    .push_back(HostEvent::PingFailed { peer, conn, error })
            }
            _ => {}
        }
    }

    fn insert(
        &mut self,
        conn: ConnId,
        peer: PeerId,
        id: StreamId,
        role: Role,
        deadline: Option<Instant>,
    ) {
        let state = self
            .conns
            .entry(conn)
            .or_insert_with(|| ConnState::new(peer));
        let mut stream = HostStream {
            role,
            out: Vec::new(),
            deadline,
            eof: false,
        };
        if let Role::Opening { dialer, .. } | Role::PingOpening { dialer, .. } = &mut stream.role {
            stream.out = dialer.take_output();
        }
        state.streams.insert(id, stream);
        self.deadlines.touch(Timed::Stream(id));
    }

    fn stream_mut(&mut self, conn: ConnId, id: StreamId) -> Option<&mut HostStream> {
        self.conns.get_mut(&conn)?.streams.get_mut(&id)
    }

    /// Drains the manager's events, acting on those about the host's streams.
    /// Returns whether there was any.
    fn pump(&mut self, now: Instant) -> bool {
        let mut took = false;
        while let Some(event) = self.manager.poll_event() {
            took = true;
            self.on_manager_event(event, now);
        }
        if !self.prune_due.is_empty() {
            self.prune_closed();
        }
        took
    }

    /// Prunes the memory of closed streams of the connections that reached their pruning
    /// length; only here, with the manager's events drained (see `protocols::closed`).
    fn prune_closed(&mut self) {
        for conn in self.prune_due.drain(..) {
            if let Some(state) = self.conns.get_mut(&conn) {
                state.closed.prune(&mut self.manager);
            }
        }
    }

    fn on_manager_event(&mut self, event: Event, now: Instant) {
        match event {
            Event::StreamOpened { peer, stream } => {
                if !stream.is_bidirectional() {
                    // libp2p opens bidirectional streams only.
                    debug!(%peer, %stream, "stopping a unidirectional stream");
                    let _ = self.manager.stream_stop(stream, RESET_CODE);
                    return;
                }
                let deadline = now + self.config.negotiation_timeout;
                let role = Role::Accepting(Listener::new());
                self.insert(stream.conn(), peer, stream, role, Some(deadline));
                self.service(stream.conn(), stream, now);
            }
            Event::StreamReadable { stream } | Event::StreamWritable { stream }
                if self.holds(stream) =>
            {
                self.service(stream.conn(), stream, now);
            }
            Event::StreamStopped { stream, code } if self.holds(stream) => {
                self.fail(
                    stream.conn(),
                    stream,
                    StreamFailure::Stream(StreamError::Reset(code)),
                );
            }
            Event::StreamReadable { stream }
            | Event::StreamWritable { stream }
            | Event::StreamFinished { stream }
            | Event::StreamStopped { stream, .. }
                if self.holds(stream) || self.closed(stream) =>
            {
                trace!(%stream, "event of a host stream");
            }
            Event::ConnectionLost {
                peer,
                conn,
                addr,
                cause,
                mut unfinished_streams,
            } => {
                if let Some(state) = self.conns.remove(&conn) {
                    for id in state.streams.keys() {
                        self.deadlines.touch(Timed::Stream(*id));
                    }
                    for queued in &state.queued {
                        self.deadlines.touch(Timed::Queued(conn, queued.key));
                    }
                    // Neither the streams the host holds nor those it closed lately (a ping
                    // stream finished but not yet acknowledged is still open in the manager).
                    unfinished_streams
                        .retain(|s| !state.streams.contains_key(s) && !state.closed.contains(s));
                    self.report_lost(conn, state, &cause);
                }
                self.events
                    .push_back(HostEvent::Manager(Event::ConnectionLost {
                        peer,
                        conn,
                        addr,
                        cause,
                        unfinished_streams,
                    }));
            }
            Event::StreamsAvailable { peer, conn } => {
                self.open_queued(now, conn);
                // Passed on too: the application may wait for credit for its own opens.
                self.events
                    .push_back(HostEvent::Manager(Event::StreamsAvailable { peer, conn }));
            }
            other => self.events.push_back(HostEvent::Manager(other)),
        }
    }

    fn holds(&self, stream: StreamId) -> bool {
        self.conns
            .get(&stream.conn())
            .is_some_and(|c| c.streams.contains_key(&stream))
    }

    fn closed(&self, stream: StreamId) -> bool {
        self.conns
            .get(&stream.conn())
            .is_some_and(|c| c.closed.contains(&stream))
    }

    /// Reports what the death of a connection did to the work in progress on its streams.
    fn report_lost(&mut self, conn: ConnId, state: ConnState, cause: &Cause) {
        let peer = state.peer;
        for (stream_id, stream) in state.streams {
            let error = StreamFailure::ConnectionLost(cause.clone());
            match stream.role {
                Role::Opening { id, .. } => self.events.push_back(HostEvent::OutboundFailed {
                    peer,
                    id,
                    stream: Some(stream_id),
                    error,
                }),
                Role::PingOpening { .. } | Role::Pinging(_) if stream.deadline.is_some() => self
                    .events
                    .push_back(HostEvent::PingFailed { peer, conn, error }),
                _ => {}
            }
        }
        for queued in state.queued {
            let error = StreamFailure::ConnectionLost(cause.clone());
            self.report_unopened(conn, peer, &queued.role, error);
        }
    }

    /// Writes what a stream has pending, as far as flow control allows.
    fn flush(&mut self, conn: ConnId, id: StreamId) -> Result<(), StreamError> {
        let Some(stream) = self
            .conns
            .get_mut(&conn)
            .and_then(|c| c.streams.get_mut(&id))
        else {
            return Ok(());
        };
        while !stream.out.is_empty() {
            match self.manager.stream_write(id, &stream.out) {
                Ok(0) | Err(StreamError::Blocked) => break,
                Ok(written) => {
                    stream.out.drain(..written);
                }
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// Moves a stream on as far as it goes: writes, reads, and acts on what it read.
    fn service(&mut self, conn: ConnId, id: StreamId, now: Instant) {
        // Whatever happens to the stream here may move its deadline.
        self.deadlines.touch(Timed::Stream(id));
        // The last read found nothing more: the next `StreamReadable` brings the host back.
        let mut blocked = false;
        loop {
            if let Err(error) = self.flush(conn, id) {
                self.fail(conn, id, StreamFailure::Stream(error));
                return;
            }
            let Some(stream) = self.stream_mut(conn, id) else {
                return;
            };
            if !stream.out.is_empty() {
                // Wait for `StreamWritable`; reading on would only grow `out`.
                return;
            }
            match &stream.role {
                Role::Accepted(_) => return self.hand_over(conn, id),
                Role::PingIn {
                    finishing: true, ..
                } => {
                    // The peer is done: finish our side too, after the last echo.
                    let _ = self.manager.stream_finish(id);
                    return self.forget(conn, id);
                }
                _ => {}
            }
            // A ping stream stays the host's to its end, so it is read in bulk, its end
            // included. A negotiating stream may be handed over after any message: it is read
            // a chunk at a time, so that its end stays in the manager for the application.
            let bulk = matches!(
                stream.role,
                Role::PingOpening { .. } | Role::Pinging(_) | Role::PingIn { .. }
            );
            let read = if std::mem::take(&mut stream.eof) {
                None
            } else if blocked {
                return;
            } else if bulk {
                match self.read_bulk(id) {
                    Ok((data, status)) => {
                        blocked = status == ReadStatus::Blocked;
                        if status == ReadStatus::Finished {
                            // Acted on after the data, even if the host must wait for
                            // `StreamWritable` in between.
                            if let Some(stream) = self.stream_mut(conn, id) {
                                stream.eof = true;
                            }
                        }
                        if data.is_empty() {
                            // Nothing new; an end it found is acted on at the next turn.
                            continue;
                        }
                        Some(data)
                    }
                    Err(error) => return self.fail(conn, id, StreamFailure::Stream(error)),
                }
            } else {
                match self.manager.stream_read(id, READ_CHUNK) {
                    Ok(Read::Data(bytes)) => Some(bytes),
                    Ok(Read::Finished) => None,
                    Err(StreamError::Blocked) => return,
                    Err(error) => return self.fail(conn, id, StreamFailure::Stream(error)),
                }
            };
            let Self {
                conns, protocols, ..
            } = self;
            let Some(stream) = conns.get_mut(&conn).and_then(|c| c.streams.get_mut(&id)) else {
                return;
            };
            let input = match &read {
                Some(bytes) => Input::Data(bytes),
                None => Input::Eof,
            };
            let supported = |p: &str| p == ping::PROTOCOL || protocols.contains(p);
            match stream.role.on_input(input, &mut stream.out, now, supported) {
                Outcome::Continue => {}
                Outcome::Accepted(negotiated) if negotiated.protocol == ping::PROTOCOL => {
                    let mut responder = Responder::new();
                    responder.handle_data(&negotiated.leftover, &mut stream.out);
                    stream.role = Role::PingIn {
                        responder,
                        finishing: false,
                    };
                    stream.deadline = None;
                    self.add_inbound_ping(conn, id);
                }
                Outcome::Accepted(negotiated) => stream.role = Role::Accepted(negotiated),
                Outcome::Opened(negotiated) => {
                    let outbound = match stream.role {
                        Role::Opening { id, .. } => Some(id),
                        _ => None,
                    };
                    let peer = conns.get(&conn).map(|c| c.peer);
                    self.forget_quietly(conn, id);
                    if let (Some(peer), Some(outbound)) = (peer, outbound) {
                        self.events.push_back(HostEvent::OutboundStream {
                            peer,
                            id: outbound,
                            stream: id,
                            protocol: negotiated.protocol,
                            leftover: Bytes::from(negotiated.leftover),
                        });
                        self.events
                            .push_back(HostEvent::Manager(Event::StreamReadable { stream: id }));
                    }
                    return;
                }
                Outcome::Pong(rtt) => {
                    stream.deadline = None;
                    if let Some(peer) = conns.get(&conn).map(|c| c.peer) {
                        self.events
                            .push_back(HostEvent::PingResult { peer, conn, rtt });
                    }
                }
                Outcome::Fail(error) => return self.fail(conn, id, error),
            }
        }
    }

    /// Reads up to [`READ_CHUNK`] bytes of a stream in one read session, as one buffer.
    fn read_bulk(&mut self, id: StreamId) -> Result<(Bytes, ReadStatus), StreamError> {
        let mut chunks = std::mem::take(&mut self.chunks);
        let result = self.manager.stream_read_chunks(id, READ_CHUNK, &mut chunks);
        let data = match chunks.as_slice() {
            [] => Bytes::new(),
            [one] => one.clone(),
            many => Bytes::from(many.concat()),
        };
        chunks.clear();
        self.chunks = chunks;
        result.map(|read| (data, read.status))
    }

    /// Keeps at most [`MAX_INBOUND_PINGS`] ping streams of the peer, dropping the oldest.
    fn add_inbound_ping(&mut self, conn: ConnId, id: StreamId) {
        let Some(state) = self.conns.get_mut(&conn) else {
            return;
        };
        state.inbound_pings.push_back(id);
        if state.inbound_pings.len() > MAX_INBOUND_PINGS {
            if let Some(oldest) = state.inbound_pings.pop_front() {
                debug!(%conn, stream = %oldest, "dropping the oldest inbound ping stream");
                self.reset(oldest);
                self.forget(conn, oldest);
            }
        }
    }

    /// Hands a negotiated inbound stream over to the application.
    fn hand_over(&mut self, conn: ConnId, id: StreamId) {
        let Some(state) = self.conns.get_mut(&conn) else {
            return;
        };
        let peer = state.peer;
        let Some(HostStream {
            role: Role::Accepted(negotiated),
            ..
        }) = state.streams.remove(&id)
        else {
            return;
        };
        self.deadlines.touch(Timed::Stream(id));
        debug!(%peer, stream = %id, protocol = %negotiated.protocol, "inbound stream negotiated");
        self.events.push_back(HostEvent::InboundStream {
            peer,
            stream: id,
            protocol: negotiated.protocol,
            leftover: Bytes::from(negotiated.leftover),
        });
        self.events
            .push_back(HostEvent::Manager(Event::StreamReadable { stream: id }));
    }

    /// Abandons a stream: resets it and tells whom it concerns.
    fn fail(&mut self, conn: ConnId, id: StreamId, error: StreamFailure) {
        if error == StreamFailure::Stream(StreamError::UnknownConnection) {
            // The manager lost the connection, and its `ConnectionLost` waits in the events
            // behind the one being handled: that event reports this stream, with the cause of
            // the loss, and drops it. (Dropped here, with the stream's halves still open in the
            // manager, the stream would reach the application among the lost connection's
            // `unfinished_streams`.)
            return;
        }
        let Some(state) = self.conns.get(&conn) else {
            return;
        };
        let peer = state.peer;
        let Some(stream) = state.streams.get(&id) else {
            return;
        };
        match &stream.role {
            Role::Opening { id: outbound, .. } => {
                debug!(%peer, stream = %id, %error, "outbound negotiation failed");
                self.events.push_back(HostEvent::OutboundFailed {
                    peer,
                    id: *outbound,
                    stream: Some(id),
                    error,
                });
            }
            Role::PingOpening { .. } | Role::Pinging(_) if stream.deadline.is_some() => {
                debug!(%peer, stream = %id, %error, "ping failed");
                self.events
                    .push_back(HostEvent::PingFailed { peer, conn, error });
            }
            _ => debug!(%peer, stream = %id, %error, "dropping stream"),
        }
        self.reset(id);
        self.forget(conn, id);
    }

    /// Resets and stops a stream, as far as it is still open.
    fn reset(&mut self, id: StreamId) {
        // Either half may be closed already; what is left of it is closed now.
        let _ = self.manager.stream_reset(id, RESET_CODE);
        let _ = self.manager.stream_stop(id, RESET_CODE);
    }

    /// Drops the host's state of a stream it closed, remembering it to swallow late events.
    fn forget(&mut self, conn: ConnId, id: StreamId) {
        self.forget_quietly(conn, id);
        if let Some(state) = self.conns.get_mut(&conn) {
            if state.closed.insert(id) {
                self.prune_due.push(conn);
            }
        }
    }

    /// Drops the host's state of a stream (closed, or handed over).
    fn forget_quietly(&mut self, conn: ConnId, id: StreamId) {
        self.deadlines.touch(Timed::Stream(id));
        if let Some(state) = self.conns.get_mut(&conn) {
            state.streams.remove(&id);
            state.inbound_pings.retain(|s| *s != id);
            if state.ping == Some(id) {
                state.ping = None;
            }
        }
    }

    /// Fails every negotiation and ping whose deadline passed.
    fn expire(&mut self, now: Instant) {
        self.refresh_deadlines();
        for timed in self.deadlines.due(now) {
            match timed {
                Timed::Stream(id) => {
                    let expired = (self.conns.get(&id.conn()))
                        .and_then(|state| state.streams.get(&id))
                        .is_some_and(|s| s.deadline.is_some_and(|d| d <= now));
                    if expired {
                        self.fail(id.conn(), id, StreamFailure::TimedOut);
                    }
                }
                Timed::Queued(conn, key) => {
                    let Some(state) = self.conns.get_mut(&conn) else {
                        continue;
                    };
                    let peer = state.peer;
                    let Some(at) = state.queued.iter().position(|q| q.key == key) else {
                        continue;
                    };
                    if state.queued[at].deadline > now {
                        continue;
                    }
                    if let Some(queued) = state.queued.remove(at) {
                        debug!(%peer, %conn, "an open waited for stream credit until its deadline");
                        self.report_unopened(conn, peer, &queued.role, StreamFailure::TimedOut);
                    }
                }
            }
        }
    }

    /// Re-indexes the deadlines marked stale.
    fn refresh_deadlines(&mut self) {
        let conns = &self.conns;
        self.deadlines.refresh(|timed| match timed {
            Timed::Stream(id) => (conns.get(&id.conn()))
                .and_then(|state| state.streams.get(&id))
                .and_then(|s| s.deadline),
            Timed::Queued(conn, key) => (conns.get(&conn))
                .and_then(|state| state.queued.iter().find(|q| q.key == key))
                .map(|q| q.deadline),
        });
    }

    /// The earliest deadline, the slow way: what debug builds check the index against.
    #[cfg(debug_assertions)]
    fn scan_deadlines(&self) -> Option<Instant> {
        let streams = (self.conns.values())
            .flat_map(|c| c.streams.values())
            .filter_map(|s| s.deadline);
        let queued = (self.conns.values())
            .flat_map(|c| c.queued.iter())
            .map(|q| q.deadline);
        streams.chain(queued).min()
    }
}

impl SansIo for Host {
    type Event = HostEvent;

    fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        local_ip: Option<IpAddr>,
        data: &[u8],
    ) {
        self.now = now;
        self.manager.handle_datagram(now, from, local_ip, data);
        self.pump(now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        self.manager.handle_timeout(now);
        self.pump(now);
        self.expire(now);
    }

    fn handle_unreachable(&mut self, now: Instant, addr: SocketAddr) {
        Host::handle_unreachable(self, now, addr);
    }

    fn set_max_datagrams(&mut self, max: usize) {
        self.manager.set_max_datagrams(max);
    }

    fn shard(&self) -> Option<u8> {
        self.manager.shard()
    }

    fn datagram_shard(&self, datagram: &[u8]) -> Option<u8> {
        self.manager.datagram_shard(datagram)
    }

    /// The host flushes here: it first takes in what the manager has to report (including
    /// what the application's own commands through [`Host::manager_mut`] caused), and what it
    /// writes in answer (pings, negotiations) goes out in the same run of calls. So
    /// `poll_timeout` never has to ask for a wake-up to send.
    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        self.now = now;
        loop {
            let took_events = self.pump(now);
            if let Some(transmit) = self.manager.poll_transmit(now, buf) {
                return Some(transmit);
            }
            // Sending may queue manager events (a connection that died of it): act on them
            // before reporting that nothing is left to send.
            if !took_events && !self.manager.has_events() {
                return None;
            }
        }
    }

    /// The host's events, as of the last `handle_*`, command or `poll_transmit`: call
    /// `poll_transmit` first, as the loop does.
    fn poll_event(&mut self) -> Option<HostEvent> {
        while let Some(event) = self.events.pop_front() {
            // As the manager does: no `StreamReadable` for a stream read to its end since the
            // event was queued (the host queues one after each handed-over stream).
            if let HostEvent::Manager(Event::StreamReadable { stream }) = &event {
                if self.manager.read_ended(*stream) {
                    continue;
                }
            }
            return Some(event);
        }
        None
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        self.refresh_deadlines();
        let streams = self.deadlines.next();
        #[cfg(debug_assertions)]
        debug_assert_eq!(
            streams,
            self.scan_deadlines(),
            "the deadline index lost one"
        );
        self.manager.poll_timeout().into_iter().chain(streams).min()
    }
}
