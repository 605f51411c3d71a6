//! The sans-IO connection manager: peers, dials, connections, limits and events over one
//! `quinn_proto::Endpoint`.
//!
//! The manager is the state machine the rest of quicpeer hangs on. It does no I/O, reads no
//! clock and spawns nothing: datagrams and time go in, datagrams and events come out. It shuttles
//! quinn's endpoint and connection events itself, keys its state by [`PeerId`], and turns the
//! ways a connection dies into a [`Cause`] the application can match on. When a peer restarts,
//! its stateless reset kills the stale connection and the manager starts a fresh one in the same
//! [`Manager::handle_datagram`] call.
//!
//! # The loop
//!
//! ```no_run
//! # use std::time::{Instant, SystemTime};
//! # use quicpeer::{Config, Identity, Manager};
//! # fn recv() -> Option<(std::net::SocketAddr, Vec<u8>)> { None }
//! # fn send(_: std::net::SocketAddr, _: &[u8]) {}
//! # fn sleep_until(_: Option<Instant>) {}
//! let identity = Identity::from_ed25519_seed([1; 32]);
//! let mut manager = Manager::new(identity, Config::default(), [7; 32], Instant::now(), SystemTime::now())?;
//! let mut buf = Vec::new();
//! loop {
//!     let now = Instant::now();
//!     while let Some((from, datagram)) = recv() {
//!         manager.handle_datagram(now, from, None, &datagram);
//!     }
//!     if manager.poll_timeout().is_some_and(|t| t <= now) {
//!         manager.handle_timeout(now);
//!     }
//!     while let Some(transmit) = manager.poll_transmit(now, &mut buf) {
//!         send(transmit.destination, &buf[..transmit.size]);
//!     }
//!     while let Some(event) = manager.poll_event() {
//!         println!("{event:?}");
//!     }
//!     sleep_until(manager.poll_timeout());
//! }
//! # Ok::<(), quicpeer::ManagerError>(())
//! ```
//!
//! Rules: `now` never goes backwards between calls; after any `handle_*` call or command, drain
//! [`Manager::poll_transmit`] until `None`, drain [`Manager::poll_event`], then wait until
//! [`Manager::poll_timeout`] (or the next datagram).

mod backoff;
pub mod cid;
mod config;
mod event;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use libp2p_identity::PeerId;
use quinn_proto::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn_proto::{
    ConnectionError, ConnectionHandle, DatagramEvent, Dir, EndpointConfig,
    HashedConnectionIdGenerator, TransportConfig, TransportErrorCode, VarInt,
};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use tracing::{debug, debug_span, info, trace, warn, Span};

use crate::identity::{
    CertificateError, Identity, RestartKeys, TlsContext, TlsError, VerificationSlot, WallClock,
};
use backoff::Backoff;
use cid::KeyedCidGenerator;
pub use config::{Config, KeyMode, Limits, ReconnectPolicy, ResponseRate};
pub use event::{
    Cause, ConnId, DialError, DialOutcome, Direction, Event, HandshakeFailure, Read, StreamError,
    StreamId, Transmit,
};

/// Application close code: normal close.
pub const CLOSE_NORMAL: u32 = 0;
/// Application close code: this connection was superseded by another to the same peer.
pub const CLOSE_SUPERSEDED: u32 = 0x7170_0001;
/// Application close code: closed to stay within a connection limit.
pub const CLOSE_LIMIT: u32 = 0x7170_0002;

/// The SNI-less server name handed to quinn; with SNI disabled it never goes on the wire.
const SERVER_NAME: &str = "l";
/// Bound on stateless responses waiting for `poll_transmit`.
const MAX_QUEUED_RESPONSES: usize = 1024;

/// Errors constructing a [`Manager`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManagerError {
    /// The TLS context could not be built.
    #[error(transparent)]
    Tls(Box<TlsError>),
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    Config(&'static str),
}

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Handshaking {
        deadline: Instant,
    },
    Established,
    /// Lost and reported; kept until quinn has drained it.
    Closed,
}

/// A PING sent on an established connection to learn whether it is still alive, because a
/// second connection to the same peer completed.
#[derive(Debug, Clone, Copy)]
struct Probe {
    challenger: ConnId,
    deadline: Instant,
    rx_before: u64,
}

struct Conn {
    handle: ConnectionHandle,
    inner: quinn_proto::Connection,
    slot: VerificationSlot,
    direction: Direction,
    addr: SocketAddr,
    /// The dialed PeerId (outbound), then the verified one.
    peer: Option<PeerId>,
    phase: Phase,
    /// `Connected` was emitted, so `ConnectionLost` must be.
    announced: bool,
    /// Streams whose sending half is not yet finished and acknowledged, stopped or reset.
    send_open: BTreeSet<quinn_proto::StreamId>,
    /// Streams whose receiving half has not reached its end or a reset.
    recv_open: BTreeSet<quinn_proto::StreamId>,
    probe: Option<Probe>,
    /// Since when our ack-eliciting packets have gone unanswered (cleared by any datagram in).
    unanswered_since: Option<Instant>,
    /// Suspicion already acted on for the current silence.
    suspected: bool,
    /// A suspicion redial failed (the peer is still down): race the silent connection again
    /// at this time, if the silence lasts.
    resuspect_at: Option<Instant>,
    /// Ack-eliciting frames sent so far, to tell which transmits expect an answer.
    eliciting_sent: u64,
    span: Span,
}

/// A dial of one peer over one or more addresses.
#[derive(Debug, Default)]
struct Dial {
    pending: VecDeque<SocketAddr>,
    in_flight: BTreeSet<ConnId>,
    errors: Vec<(SocketAddr, Cause)>,
    /// When the next pending address starts while attempts are in flight.
    next_at: Option<Instant>,
    /// A reconnect after this connection was lost.
    replaces: Option<ConnId>,
}

#[derive(Default)]
struct Peer {
    preferred: Option<ConnId>,
    established: BTreeSet<ConnId>,
    /// Addresses we may dial, from `dial` calls and successful outbound connections.
    addrs: Vec<SocketAddr>,
    dial: Option<Dial>,
    backoff: Backoff,
    /// A reconnect is scheduled: when, and for which lost connection.
    retry: Option<(Instant, ConnId)>,
    policy: Option<ReconnectPolicy>,
    /// When a connection to the peer last died (for flap detection).
    last_loss: Option<Instant>,
    /// The peer is flapping: refuse its connections and hold reconnects until then.
    refuse_until: Option<Instant>,
}

impl Peer {
    /// Nothing worth keeping: no connection, dial, policy, address or recent loss.
    fn is_idle(&self, now: Instant, grace: Duration) -> bool {
        self.established.is_empty()
            && self.dial.is_none()
            && self.retry.is_none()
            && self.policy.is_none()
            && self.addrs.is_empty()
            && self.last_loss.is_none_or(|t| now >= t + grace)
            && self.refuse_until.is_none_or(|t| now >= t)
    }

    fn is_flapping(&self, now: Instant) -> bool {
        self.refuse_until.is_some_and(|t| now < t)
    }
}

/// A token bucket (see [`ResponseRate`]).
struct TokenBucket {
    rate: ResponseRate,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(rate: ResponseRate, now: Instant) -> Self {
        Self {
            rate,
            tokens: f64::from(rate.burst),
            last: now,
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * f64::from(self.rate.per_second))
            .min(f64::from(self.rate.burst));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The sans-IO connection manager. See the [module documentation](self) for the run loop.
pub struct Manager {
    identity: Identity,
    config: Config,
    tls: TlsContext,
    clock: WallClock,
    epoch: (Instant, SystemTime),
    endpoint: quinn_proto::Endpoint,
    transport: Arc<TransportConfig>,
    conns: BTreeMap<ConnId, Conn>,
    by_handle: HashMap<ConnectionHandle, ConnId>,
    peers: BTreeMap<PeerId, Peer>,
    next_conn: u64,
    events: VecDeque<Event>,
    responses: VecDeque<(Transmit, Vec<u8>)>,
    /// Connections that may have something to send.
    dirty: BTreeSet<ConnId>,
    rng: ChaCha20Rng,
    bucket: TokenBucket,
    inbound_handshakes: usize,
    /// Connections handshaking or established: what the connection limit counts. A connection
    /// leaves the count the moment it dies, not when quinn has drained it.
    live: usize,
    /// When idle peer entries are next swept away.
    next_sweep: Instant,
    /// `close_all` was called: no new connections, no reconnects.
    shutting_down: bool,
    buf: Vec<u8>,
    span: Span,
}

impl Manager {
    /// Builds a manager for `identity`.
    ///
    /// `seed` drives every random choice the manager makes (connection IDs, jitter); give each
    /// process a fresh one. `now` and `wall_now` are the monotonic and the wall-clock time of
    /// this moment; later wall-clock times (for certificate validity) are derived from them.
    pub fn new(
        identity: Identity,
        config: Config,
        seed: [u8; 32],
        now: Instant,
        wall_now: SystemTime,
    ) -> Result<Self, ManagerError> {
        Self::build(identity, config, seed, now, wall_now, None)
    }

    /// Like [`Manager::new`], but presents `certificate` (signed by `key`), made beforehand by
    /// [`generate_certificate`](crate::identity::generate_certificate) for the same identity,
    /// instead of generating one. Generating the certificate is most of what `new` costs:
    /// fuzzers, benchmarks and tests that build many managers of one identity share one.
    #[doc(hidden)]
    pub fn with_certificate(
        identity: Identity,
        config: Config,
        seed: [u8; 32],
        now: Instant,
        wall_now: SystemTime,
        certificate: (CertificateDer<'static>, PrivatePkcs8KeyDer<'static>),
    ) -> Result<Self, ManagerError> {
        Self::build(identity, config, seed, now, wall_now, Some(certificate))
    }

    fn build(
        identity: Identity,
        config: Config,
        seed: [u8; 32],
        now: Instant,
        wall_now: SystemTime,
        certificate: Option<(CertificateDer<'static>, PrivatePkcs8KeyDer<'static>)>,
    ) -> Result<Self, ManagerError> {
        let span = debug_span!("manager", local = %identity.peer_id());
        let mut rng = ChaCha20Rng::from_seed(seed);
        let clock = WallClock::new(wall_now);
        let tls = match certificate {
            Some((certificate, key)) => {
                TlsContext::with_certificate(certificate, key, clock.clone())
            }
            None => TlsContext::new(&identity, clock.clone()),
        }
        .map_err(|e| ManagerError::Tls(Box::new(e)))?;

        let (keys, derived) = match &config.keys {
            KeyMode::DerivedFromIdentity => match RestartKeys::derive(identity.keypair()) {
                Some(keys) => (keys, true),
                None => {
                    warn!(
                        "identity has no extractable secret (RSA?): restart keys are random, so a \
                         restart of this node will not reset its peers' connections; \
                         use KeyMode::Explicit with keys from a file to fix this"
                    );
                    (random_keys(&mut rng), false)
                }
            },
            KeyMode::Explicit(keys) => (keys.clone(), true),
            KeyMode::RandomPerProcess => (random_keys(&mut rng), false),
        };
        let mut endpoint_config = EndpointConfig::new(Arc::new(ring::hmac::Key::new(
            ring::hmac::HMAC_SHA256,
            &keys.reset_key,
        )));
        if derived {
            let mut cid_seed = [0u8; 32];
            rng.fill_bytes(&mut cid_seed);
            let cid_key = keys.cid_key;
            endpoint_config
                .cid_generator(move || Box::new(KeyedCidGenerator::new(&cid_key, cid_seed)));
        } else {
            let key = rng.next_u64();
            endpoint_config
                .cid_generator(move || Box::new(HashedConnectionIdGenerator::from_key(key)));
        }
        // Stateless responses are policed by our own token bucket (see `ResponseRate`).
        endpoint_config.min_reset_interval(Duration::ZERO);
        endpoint_config
            .max_udp_payload_size(config.max_udp_payload)
            .map_err(|_| ManagerError::Config("max_udp_payload out of range"))?;

        let mut transport = TransportConfig::default();
        let idle = quinn_proto::IdleTimeout::try_from(config.idle_timeout)
            .map_err(|_| ManagerError::Config("idle_timeout out of range"))?;
        transport
            .max_idle_timeout(Some(idle))
            .keep_alive_interval(config.keep_alive)
            .datagram_receive_buffer_size(None);
        let transport = Arc::new(transport);

        let mut endpoint_seed = [0u8; 32];
        rng.fill_bytes(&mut endpoint_seed);
        let (server, _) = tls.server_config();
        let server = server_config(server, &transport, &clock)?;
        let endpoint = quinn_proto::Endpoint::new(
            Arc::new(endpoint_config),
            Some(server),
            false,
            Some(endpoint_seed),
        );
        let bucket = TokenBucket::new(config.stateless_responses, now);
        Ok(Self {
            identity,
            config,
            tls,
            clock,
            epoch: (now, wall_now),
            endpoint,
            transport,
            conns: BTreeMap::new(),
            by_handle: HashMap::new(),
            peers: BTreeMap::new(),
            next_conn: 1,
            events: VecDeque::new(),
            responses: VecDeque::new(),
            dirty: BTreeSet::new(),
            rng,
            bucket,
            inbound_handshakes: 0,
            live: 0,
            next_sweep: now,
            shutting_down: false,
            buf: Vec::new(),
            span,
        })
    }

    // ---- getters ----

    /// Our own PeerId.
    pub fn local_peer_id(&self) -> PeerId {
        self.identity.peer_id()
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The connection currently used for `peer`, if any.
    pub fn connection(&self, peer: &PeerId) -> Option<ConnId> {
        self.peers.get(peer)?.preferred
    }

    /// Every established connection to `peer`.
    pub fn connections(&self, peer: &PeerId) -> Vec<ConnId> {
        self.peers
            .get(peer)
            .map(|p| p.established.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Peers with at least one established connection.
    pub fn connected_peers(&self) -> Vec<PeerId> {
        self.peers
            .iter()
            .filter(|(_, p)| p.preferred.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    /// Whether a dial or a scheduled reconnect to `peer` is under way.
    pub fn is_dialing(&self, peer: &PeerId) -> bool {
        self.peers
            .get(peer)
            .is_some_and(|p| p.dial.is_some() || p.retry.is_some())
    }

    /// Connections of any state held now (handshaking, established, draining).
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Connections that hold a slot: handshaking or established.
    pub fn live_connections(&self) -> usize {
        self.live
    }

    /// Connections by phase: (handshaking, established, closed but not yet drained). For the
    /// fuzz targets' invariants (`live_connections` must equal the first two together).
    #[cfg(feature = "fuzzing")]
    #[doc(hidden)]
    pub fn phase_counts(&self) -> (usize, usize, usize) {
        let mut counts = (0, 0, 0);
        for conn in self.conns.values() {
            match conn.phase {
                Phase::Handshaking { .. } => counts.0 += 1,
                Phase::Established => counts.1 += 1,
                Phase::Closed => counts.2 += 1,
            }
        }
        counts
    }

    /// The peer of a connection.
    pub fn peer_of(&self, conn: ConnId) -> Option<PeerId> {
        self.conns
            .get(&conn)
            .filter(|c| c.phase == Phase::Established)
            .and_then(|c| c.peer)
    }

    /// The smoothed RTT of an established connection.
    pub fn rtt(&self, conn: ConnId) -> Option<Duration> {
        self.conns
            .get(&conn)
            .filter(|c| c.phase == Phase::Established)
            .map(|c| c.inner.rtt())
    }

    /// quinn's statistics of a connection (packets, bytes, losses, path).
    pub fn stats(&self, conn: ConnId) -> Option<quinn_proto::ConnectionStats> {
        self.conns.get(&conn).map(|c| c.inner.stats())
    }

    // ---- input ----

    /// Feeds one received UDP datagram. `local_ip` is the address it was received on, where the
    /// driver knows it.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        local_ip: Option<IpAddr>,
        data: &[u8],
    ) {
        let _span = self.span.clone().entered();
        self.set_time(now);
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let event = self
            .endpoint
            .handle(now, from, local_ip, None, BytesMut::from(data), &mut buf);
        match event {
            Some(DatagramEvent::ConnectionEvent(handle, event)) => {
                if let Some(&id) = self.by_handle.get(&handle) {
                    if let Some(conn) = self.conns.get_mut(&id) {
                        conn.inner.handle_event(event);
                        // The peer still has this connection (or at least its CIDs).
                        conn.unanswered_since = None;
                        conn.suspected = false;
                        if conn.resuspect_at.take().is_some() {
                            // It was alive after all: the failed races count for nothing.
                            if let Some(p) = conn.peer.and_then(|peer| self.peers.get_mut(&peer)) {
                                p.backoff = Backoff::default();
                            }
                        }
                    }
                    self.drive(id, now);
                }
            }
            Some(DatagramEvent::NewConnection(incoming)) => self.accept(incoming, now, &mut buf),
            Some(DatagramEvent::Response(transmit)) => self.queue_response(now, transmit, &buf),
            None => {}
        }
        self.buf = buf;
    }

    /// Runs timers that are due at `now`: quinn's (loss detection, keep-alive, idle), and the
    /// manager's (handshake deadlines, probes, dial staggers, reconnect backoff).
    pub fn handle_timeout(&mut self, now: Instant) {
        let _span = self.span.clone().entered();
        self.set_time(now);
        let due: Vec<ConnId> = self
            .conns
            .iter_mut()
            .filter_map(|(id, c)| c.inner.poll_timeout().filter(|t| *t <= now).map(|_| *id))
            .collect();
        for id in due {
            if let Some(conn) = self.conns.get_mut(&id) {
                conn.inner.handle_timeout(now);
            }
            self.drive(id, now);
        }

        let expired: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.phase, Phase::Handshaking { deadline } if deadline <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            debug!(conn = %id, "handshake timed out");
            self.close_conn(id, now, Cause::HandshakeFailed(HandshakeFailure::TimedOut));
        }

        let probes: Vec<(ConnId, Probe)> = self
            .conns
            .iter()
            .filter_map(|(id, c)| c.probe.filter(|p| p.deadline <= now).map(|p| (*id, p)))
            .collect();
        for (id, probe) in probes {
            self.resolve_probe(id, probe, now);
        }

        if let Some(ptos) = self.config.suspicion_ptos {
            let suspects: Vec<ConnId> = self
                .conns
                .iter()
                .filter(|(_, c)| suspicion_deadline(c, ptos).is_some_and(|t| t <= now))
                .map(|(id, _)| *id)
                .collect();
            for id in suspects {
                self.suspect(id, now);
            }
        }

        if now >= self.next_sweep {
            let grace = self.config.limits.flap_grace;
            self.peers.retain(|_, p| !p.is_idle(now, grace));
            self.next_sweep = now + Duration::from_secs(1);
        }

        let mut staggered = Vec::new();
        let mut retries = Vec::new();
        for (peer_id, peer) in &self.peers {
            if peer
                .dial
                .as_ref()
                .and_then(|d| d.next_at)
                .is_some_and(|t| t <= now)
            {
                staggered.push(*peer_id);
            }
            if let Some((at, lost)) = peer.retry.filter(|(at, _)| *at <= now) {
                retries.push((*peer_id, lost, at));
            }
        }
        for peer in staggered {
            self.start_next_attempt(peer, now);
        }
        for (peer, lost, _) in retries {
            if let Some(p) = self.peers.get_mut(&peer) {
                p.retry = None;
            }
            self.start_reconnect(peer, lost, now);
        }
    }

    // ---- commands ----

    /// Dials `peer` at `addrs` (merged with the addresses known for it). The peer's identity is
    /// verified in the handshake; the first verified connection wins.
    pub fn dial(
        &mut self,
        peer: PeerId,
        addrs: impl IntoIterator<Item = SocketAddr>,
        now: Instant,
    ) -> Result<DialOutcome, DialError> {
        let _span = self.span.clone().entered();
        self.set_time(now);
        if peer == self.identity.peer_id() {
            return Err(DialError::SelfDial);
        }
        if self.shutting_down {
            return Err(DialError::ShuttingDown);
        }
        let pending = self.peers.values().filter(|p| p.dial.is_some()).count();
        let entry = self.peers.entry(peer).or_default();
        for addr in addrs {
            if !entry.addrs.contains(&addr) {
                entry.addrs.push(addr);
            }
        }
        if let Some(conn) = entry.preferred {
            return Ok(DialOutcome::AlreadyConnected(conn));
        }
        if let Some(dial) = &mut entry.dial {
            for addr in &entry.addrs {
                if !dial.pending.contains(addr) && !dial.errors.iter().any(|(a, _)| a == addr) {
                    dial.pending.push_back(*addr);
                }
            }
            return Ok(DialOutcome::Joined);
        }
        if entry.addrs.is_empty() {
            self.forget_if_idle(peer, now);
            return Err(DialError::NoAddresses);
        }
        if pending >= self.config.limits.max_pending_dials {
            return Err(DialError::TooManyPendingDials);
        }
        if self.live >= self.config.limits.max_connections {
            return Err(DialError::ConnectionLimit);
        }
        entry.retry = None;
        self.start_dial(peer, None, now);
        Ok(DialOutcome::Started)
    }

    /// Replaces the connection to a connected peer with a fresh one, make-before-break: the
    /// current connection stays in use until the new one is verified, and stays if the new one
    /// fails.
    pub fn redial(&mut self, peer: PeerId, now: Instant) -> Result<DialOutcome, DialError> {
        let _span = self.span.clone().entered();
        self.set_time(now);
        let entry = self.peers.get(&peer).ok_or(DialError::NotConnected)?;
        let current = entry.preferred.ok_or(DialError::NotConnected)?;
        if entry.dial.is_some() {
            return Ok(DialOutcome::Joined);
        }
        if entry.addrs.is_empty() {
            return Err(DialError::NoAddresses);
        }
        self.start_dial(peer, Some(current), now);
        Ok(DialOutcome::Started)
    }

    /// Reports that the network declared `addr` unreachable (an ICMP error the driver read).
    /// Handshakes in flight to it fail at once and their dials move on to the next address;
    /// established connections are left to QUIC's own loss detection, since such errors can be
    /// forged.
    pub fn handle_unreachable(&mut self, now: Instant, addr: SocketAddr) {
        let _span = self.span.clone().entered();
        self.set_time(now);
        let failed: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                c.addr == addr
                    && c.direction == Direction::Outbound
                    && matches!(c.phase, Phase::Handshaking { .. })
            })
            .map(|(id, _)| *id)
            .collect();
        for id in failed {
            self.close_conn(
                id,
                now,
                Cause::HandshakeFailed(HandshakeFailure::Unreachable),
            );
        }
    }

    /// Sets the reconnect policy of one peer, overriding `Config::reconnect`.
    pub fn set_reconnect_policy(&mut self, peer: PeerId, policy: Option<ReconnectPolicy>) {
        self.peers.entry(peer).or_default().policy = policy;
    }

    /// Closes one connection (`ConnectionLost { cause: ClosedLocally }` follows).
    pub fn close(&mut self, conn: ConnId, now: Instant) {
        let _span = self.span.clone().entered();
        self.set_time(now);
        self.close_conn(conn, now, Cause::ClosedLocally);
    }

    /// Closes every connection to `peer` and cancels its dials and reconnects.
    pub fn disconnect(&mut self, peer: PeerId, now: Instant) {
        let _span = self.span.clone().entered();
        self.set_time(now);
        if let Some(p) = self.peers.get_mut(&peer) {
            p.retry = None;
            p.addrs.clear();
            let attempts = p.dial.take().map(|d| d.in_flight).unwrap_or_default();
            let established: Vec<ConnId> = p.established.iter().copied().collect();
            for id in attempts.into_iter().chain(established) {
                self.close_conn(id, now, Cause::ClosedLocally);
            }
        }
        self.forget_if_idle(peer, now);
    }

    /// Closes every connection and cancels every dial, for a graceful shutdown: from now on new
    /// inbound connections are refused, `dial` fails with [`DialError::ShuttingDown`] and lost
    /// peers are not reconnected. Keep driving the loop until [`Manager::connection_count`] is
    /// zero (or a deadline) so the closes go out.
    pub fn close_all(&mut self, now: Instant) {
        self.shutting_down = true;
        let peers: Vec<PeerId> = self.peers.keys().copied().collect();
        for peer in peers {
            self.disconnect(peer, now);
        }
        let rest: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in rest {
            self.close_conn(id, now, Cause::ClosedLocally);
        }
    }

    /// Opens a bidirectional stream on `conn`.
    pub fn open_stream(&mut self, conn: ConnId) -> Result<StreamId, StreamError> {
        let c = self.established_mut(conn)?;
        let id = c.inner.streams().open(Dir::Bi).ok_or(StreamError::Limit)?;
        c.send_open.insert(id);
        c.recv_open.insert(id);
        Ok(StreamId { conn, id })
    }

    /// Opens a bidirectional stream on the preferred connection to `peer`.
    pub fn open_stream_to(&mut self, peer: &PeerId) -> Result<StreamId, StreamError> {
        let conn = self.connection(peer).ok_or(StreamError::NotConnected)?;
        self.open_stream(conn)
    }

    /// Writes as much of `data` as flow control allows; returns how much was taken.
    pub fn stream_write(&mut self, stream: StreamId, data: &[u8]) -> Result<usize, StreamError> {
        let c = self.established_mut(stream.conn)?;
        let written = c
            .inner
            .send_stream(stream.id)
            .write(data)
            .map_err(|e| match e {
                quinn_proto::WriteError::Blocked => StreamError::Blocked,
                quinn_proto::WriteError::Stopped(code) => StreamError::Reset(code.into_inner()),
                quinn_proto::WriteError::ClosedStream => StreamError::Closed,
            })?;
        self.dirty.insert(stream.conn);
        Ok(written)
    }

    /// Finishes the sending half of a stream.
    pub fn stream_finish(&mut self, stream: StreamId) -> Result<(), StreamError> {
        let c = self.established_mut(stream.conn)?;
        c.inner
            .send_stream(stream.id)
            .finish()
            .map_err(|e| match e {
                quinn_proto::FinishError::Stopped(code) => StreamError::Reset(code.into_inner()),
                quinn_proto::FinishError::ClosedStream => StreamError::Closed,
            })?;
        self.dirty.insert(stream.conn);
        Ok(())
    }

    /// Abandons the sending half of a stream with an error code.
    pub fn stream_reset(&mut self, stream: StreamId, code: u32) -> Result<(), StreamError> {
        let c = self.established_mut(stream.conn)?;
        c.inner
            .send_stream(stream.id)
            .reset(VarInt::from_u32(code))
            .map_err(|_| StreamError::Closed)?;
        c.send_open.remove(&stream.id);
        self.dirty.insert(stream.conn);
        Ok(())
    }

    /// Asks the peer to stop sending on a stream, and discards what it sent.
    pub fn stream_stop(&mut self, stream: StreamId, code: u32) -> Result<(), StreamError> {
        let c = self.established_mut(stream.conn)?;
        c.inner
            .recv_stream(stream.id)
            .stop(VarInt::from_u32(code))
            .map_err(|_| StreamError::Closed)?;
        c.recv_open.remove(&stream.id);
        self.dirty.insert(stream.conn);
        Ok(())
    }

    /// Reads up to `max` bytes in order. `Err(Blocked)` means nothing is there yet: wait for
    /// [`Event::StreamReadable`].
    pub fn stream_read(&mut self, stream: StreamId, max: usize) -> Result<Read, StreamError> {
        let c = self.established_mut(stream.conn)?;
        let mut recv = c.inner.recv_stream(stream.id);
        let mut chunks = recv.read(true).map_err(|_| StreamError::Closed)?;
        let result = match chunks.next(max) {
            Ok(Some(chunk)) => Ok(Read::Data(chunk.bytes)),
            Ok(None) => Ok(Read::Finished),
            Err(quinn_proto::ReadError::Blocked) => Err(StreamError::Blocked),
            Err(quinn_proto::ReadError::Reset(code)) => Err(StreamError::Reset(code.into_inner())),
        };
        // Finalizing may grant the peer more flow-control credit.
        let _ = chunks.finalize();
        if matches!(result, Ok(Read::Finished) | Err(StreamError::Reset(_))) {
            c.recv_open.remove(&stream.id);
        }
        self.dirty.insert(stream.conn);
        result
    }

    // ---- output ----

    /// The next datagram to send, written into `buf` (cleared first).
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        buf.clear();
        if let Some((transmit, bytes)) = self.responses.pop_front() {
            buf.extend_from_slice(&bytes);
            return Some(transmit);
        }
        while let Some(&id) = self.dirty.first() {
            let Some(conn) = self.conns.get_mut(&id) else {
                self.dirty.remove(&id);
                continue;
            };
            match conn.inner.poll_transmit(now, 1, buf) {
                Some(t) => {
                    trace!(conn = %id, size = t.size, to = %t.destination, "transmit");
                    let eliciting = ack_eliciting_frames(&conn.inner.stats().frame_tx);
                    if eliciting > conn.eliciting_sent {
                        conn.eliciting_sent = eliciting;
                        conn.unanswered_since.get_or_insert(now);
                    }
                    // Sending may queue endpoint events (retired CIDs) to handle.
                    self.drive(id, now);
                    return Some(Transmit {
                        destination: t.destination,
                        size: t.size,
                        segment_size: t.segment_size,
                        src_ip: t.src_ip,
                        ecn: t.ecn.map(|e| e as u8),
                        conn: Some(id),
                    });
                }
                None => {
                    self.dirty.remove(&id);
                }
            }
        }
        None
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Manager::handle_timeout`] must be called next, if ever.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        for conn in self.conns.values_mut() {
            consider(conn.inner.poll_timeout());
            if let Phase::Handshaking { deadline } = conn.phase {
                consider(Some(deadline));
            }
            consider(conn.probe.map(|p| p.deadline));
            if let Some(ptos) = self.config.suspicion_ptos {
                consider(suspicion_deadline(conn, ptos));
            }
        }
        for peer in self.peers.values() {
            consider(peer.dial.as_ref().and_then(|d| d.next_at));
            consider(peer.retry.map(|(at, _)| at));
        }
        next
    }

    // ---- internals ----

    fn set_time(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.epoch.0);
        self.clock.set(self.epoch.1 + elapsed);
    }

    fn established_mut(&mut self, conn: ConnId) -> Result<&mut Conn, StreamError> {
        match self.conns.get_mut(&conn) {
            Some(c) if c.phase == Phase::Established => Ok(c),
            _ => Err(StreamError::UnknownConnection),
        }
    }

    fn policy(&self, peer: &PeerId) -> &ReconnectPolicy {
        self.peers
            .get(peer)
            .and_then(|p| p.policy.as_ref())
            .unwrap_or(&self.config.reconnect)
    }

    fn forget_if_idle(&mut self, peer: PeerId, now: Instant) {
        let grace = self.config.limits.flap_grace;
        if self.peers.get(&peer).is_some_and(|p| p.is_idle(now, grace)) {
            self.peers.remove(&peer);
        }
    }

    fn queue_response(&mut self, now: Instant, transmit: quinn_proto::Transmit, buf: &[u8]) {
        if self.responses.len() >= MAX_QUEUED_RESPONSES || !self.bucket.take(now) {
            debug!(to = %transmit.destination, "stateless response dropped by rate limit");
            return;
        }
        let bytes = buf.get(..transmit.size).unwrap_or(buf).to_vec();
        self.responses.push_back((
            Transmit {
                destination: transmit.destination,
                size: bytes.len(),
                segment_size: None,
                src_ip: transmit.src_ip,
                ecn: None,
                conn: None,
            },
            bytes,
        ));
    }

    fn new_conn_id(&mut self) -> ConnId {
        let id = ConnId(self.next_conn);
        self.next_conn += 1;
        id
    }

    fn accept(&mut self, incoming: quinn_proto::Incoming, now: Instant, buf: &mut Vec<u8>) {
        let from = incoming.remote_address();
        let limits = &self.config.limits;
        if limits
            .retry_above
            .is_some_and(|n| self.inbound_handshakes >= n)
            && !incoming.remote_address_validated()
            && incoming.may_retry()
        {
            debug!(%from, "asking for address validation (Retry)");
            buf.clear();
            match self.endpoint.retry(incoming, buf) {
                Ok(transmit) => self.queue_response(now, transmit, buf),
                Err(e) => self.endpoint.ignore(e.into_incoming()),
            }
            return;
        }
        if self.shutting_down
            || self.inbound_handshakes >= limits.max_inbound_handshakes
            || self.live >= limits.max_connections
        {
            debug!(%from, "refusing inbound connection at limit");
            buf.clear();
            let transmit = self.endpoint.refuse(incoming, buf);
            self.queue_response(now, transmit, buf);
            return;
        }
        let (server, slot) = self.tls.server_config();
        let config = match server_config(server, &self.transport, &self.clock) {
            Ok(config) => config,
            Err(e) => {
                warn!(%from, "cannot build server config: {e}");
                self.endpoint.ignore(incoming);
                return;
            }
        };
        buf.clear();
        match self.endpoint.accept(incoming, now, buf, Some(config)) {
            Ok((handle, inner)) => {
                let id = self.new_conn_id();
                self.inbound_handshakes += 1;
                self.insert_conn(id, handle, inner, slot, Direction::Inbound, from, None, now);
            }
            Err(e) => {
                debug!(%from, "accept failed: {}", e.cause);
                if let Some(transmit) = e.response {
                    self.queue_response(now, transmit, buf);
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn insert_conn(
        &mut self,
        id: ConnId,
        handle: ConnectionHandle,
        inner: quinn_proto::Connection,
        slot: VerificationSlot,
        direction: Direction,
        addr: SocketAddr,
        peer: Option<PeerId>,
        now: Instant,
    ) {
        let span = match peer {
            Some(peer) => debug_span!(parent: &self.span, "conn", %id, ?direction, %addr, %peer),
            None => debug_span!(parent: &self.span, "conn", %id, ?direction, %addr),
        };
        span.in_scope(|| debug!("connection started"));
        self.live += 1;
        self.by_handle.insert(handle, id);
        self.conns.insert(
            id,
            Conn {
                handle,
                inner,
                slot,
                direction,
                addr,
                peer,
                phase: Phase::Handshaking {
                    deadline: now + self.config.handshake_timeout,
                },
                announced: false,
                send_open: BTreeSet::new(),
                recv_open: BTreeSet::new(),
                probe: None,
                unanswered_since: None,
                suspected: false,
                resuspect_at: None,
                eliciting_sent: 0,
                span,
            },
        );
        self.drive(id, now);
    }

    /// Starts a dial of `peer` over its known addresses.
    fn start_dial(&mut self, peer: PeerId, replaces: Option<ConnId>, now: Instant) {
        let Some(entry) = self.peers.get_mut(&peer) else {
            return;
        };
        entry.dial = Some(Dial {
            pending: rank_addresses(&entry.addrs),
            replaces,
            ..Dial::default()
        });
        self.start_next_attempt(peer, now);
    }

    /// Starts the next pending address of `peer`'s dial, and schedules the one after.
    fn start_next_attempt(&mut self, peer: PeerId, now: Instant) {
        let stagger = self.config.dial_stagger;
        let Some(dial) = self.peers.get_mut(&peer).and_then(|p| p.dial.as_mut()) else {
            return;
        };
        dial.next_at = None;
        let Some(addr) = dial.pending.pop_front() else {
            return;
        };
        if !dial.pending.is_empty() {
            dial.next_at = Some(now + stagger);
        }
        let (client, slot) = self.tls.client_config(Some(peer));
        let result = QuicClientConfig::try_from(client)
            .map_err(|e| e.to_string())
            .and_then(|crypto| {
                let mut config = quinn_proto::ClientConfig::new(Arc::new(crypto));
                config.transport_config(self.transport.clone());
                self.endpoint
                    .connect(now, config, addr, SERVER_NAME)
                    .map_err(|e| e.to_string())
            });
        match result {
            Ok((handle, inner)) => {
                let id = self.new_conn_id();
                if let Some(dial) = self.peers.get_mut(&peer).and_then(|p| p.dial.as_mut()) {
                    dial.in_flight.insert(id);
                }
                self.insert_conn(
                    id,
                    handle,
                    inner,
                    slot,
                    Direction::Outbound,
                    addr,
                    Some(peer),
                    now,
                );
            }
            Err(reason) => {
                debug!(%peer, %addr, "cannot start dial: {reason}");
                if let Some(dial) = self.peers.get_mut(&peer).and_then(|p| p.dial.as_mut()) {
                    dial.errors
                        .push((addr, Cause::TransportError { code: 0, reason }));
                }
                self.after_attempt_failed(peer, now);
            }
        }
    }

    /// After an attempt failed: start the next address at once, or fail the dial.
    fn after_attempt_failed(&mut self, peer: PeerId, now: Instant) {
        let Some(dial) = self.peers.get_mut(&peer).and_then(|p| p.dial.as_mut()) else {
            return;
        };
        if !dial.pending.is_empty() {
            self.start_next_attempt(peer, now);
        } else if dial.in_flight.is_empty() {
            self.fail_dial(peer, now);
        }
    }

    fn fail_dial(&mut self, peer: PeerId, now: Instant) {
        let policy = self.policy(&peer).clone();
        let Some(entry) = self.peers.get_mut(&peer) else {
            return;
        };
        let Some(dial) = entry.dial.take() else {
            return;
        };
        if let Some(old) = dial.replaces.filter(|old| entry.established.contains(old)) {
            // A replacement of a connection that is still up failed: the old one stays. If it
            // was a suspicion redial, the connection is still silent, and the peer's port
            // answered that nothing listens there (ICMP), the peer is down and likely
            // restarting: race it again after a backoff, and leave the connection to its idle
            // timeout only when the backoff gives up. (A timed-out attempt needs no retry: its
            // Initial retransmissions reach a peer that comes back within the handshake timeout.)
            let closed_port = !dial.errors.is_empty()
                && dial.errors.iter().all(|(_, cause)| {
                    *cause == Cause::HandshakeFailed(HandshakeFailure::Unreachable)
                });
            let silent = self
                .conns
                .get_mut(&old)
                .filter(|c| closed_port && c.suspected && c.unanswered_since.is_some());
            match silent {
                Some(conn) => match entry.backoff.fail(&policy, &mut self.rng) {
                    Some(delay) => {
                        info!(%peer, errors = ?dial.errors, ?delay, "suspicion redial failed; trying again");
                        conn.suspected = false;
                        conn.resuspect_at = Some(now + delay);
                    }
                    None => {
                        info!(%peer, errors = ?dial.errors, "suspicion redial failed; giving up")
                    }
                },
                None => {
                    info!(%peer, errors = ?dial.errors, "replacement dial failed; keeping the connection")
                }
            }
            return;
        }
        let mut retry_at = None;
        if let Some(lost) = dial.replaces {
            match entry.backoff.fail(&policy, &mut self.rng) {
                Some(delay) => {
                    let at = (now + delay).max(entry.refuse_until.unwrap_or(now));
                    retry_at = Some(at);
                    entry.retry = Some((at, lost));
                }
                None => info!(%peer, attempts = entry.backoff.failures(), "giving up reconnecting"),
            }
        }
        info!(%peer, errors = ?dial.errors, ?retry_at, "dial failed");
        self.events.push_back(Event::DialFailed {
            peer,
            errors: dial.errors,
            retry_at,
        });
        if retry_at.is_none() {
            if let Some(entry) = self.peers.get_mut(&peer) {
                entry.backoff = Backoff::default();
            }
        }
        self.forget_if_idle(peer, now);
    }

    fn start_reconnect(&mut self, peer: PeerId, lost: ConnId, now: Instant) {
        let Some(entry) = self.peers.get_mut(&peer) else {
            return;
        };
        if self.shutting_down
            || entry.addrs.is_empty()
            || entry.dial.is_some()
            || entry.preferred.is_some()
        {
            return;
        }
        if let Some(until) = entry.refuse_until.filter(|t| now < *t) {
            debug!(%peer, "flapping: reconnect held until the grace period ends");
            entry.retry = Some((until, lost));
            return;
        }
        let attempt = entry.backoff.failures() + 1;
        info!(%peer, %lost, attempt, "reconnecting");
        self.events.push_back(Event::Reconnecting {
            peer,
            lost,
            attempt,
        });
        self.start_dial(peer, Some(lost), now);
    }

    /// Polls a connection until it has nothing more to say, acting on what it says.
    fn drive(&mut self, id: ConnId, now: Instant) {
        let mut drained = false;
        loop {
            let Some(conn) = self.conns.get_mut(&id) else {
                return;
            };
            while let Some(event) = conn.inner.poll_endpoint_events() {
                drained |= event.is_drained();
                if let Some(event) = self.endpoint.handle_event(conn.handle, event) {
                    conn.inner.handle_event(event);
                }
            }
            let mut events = Vec::new();
            while let Some(event) = conn.inner.poll() {
                events.push(event);
            }
            if events.is_empty() {
                break;
            }
            for event in events {
                self.on_quinn_event(id, event, now);
            }
        }
        // A probed connection that is still open and heard from the peer is alive. (Checked
        // after its events: the datagram may have been the stateless reset that killed it.)
        if let Some(conn) = self.conns.get(&id) {
            if let Some(probe) = conn.probe.filter(|_| conn.phase == Phase::Established) {
                if conn.inner.stats().udp_rx.datagrams > probe.rx_before {
                    self.resolve_probe(id, probe, now);
                }
            }
        }
        self.dirty.insert(id);
        if drained {
            if self
                .conns
                .get(&id)
                .is_some_and(|c| c.phase != Phase::Closed)
            {
                // Drained without a ConnectionLost (should not happen): account for it.
                self.on_lost(id, Cause::ClosedLocally, now);
            }
            if let Some(conn) = self.conns.remove(&id) {
                conn.span.in_scope(|| trace!("drained"));
                // quinn reuses handles at once: a connection started while this one drained
                // (a reconnect) may own the same handle already.
                if self.by_handle.get(&conn.handle) == Some(&id) {
                    self.by_handle.remove(&conn.handle);
                }
            }
            self.dirty.remove(&id);
        }
    }

    fn on_quinn_event(&mut self, id: ConnId, event: quinn_proto::Event, now: Instant) {
        use quinn_proto::{Event as E, StreamEvent as S};
        match event {
            E::HandshakeDataReady | E::DatagramReceived | E::DatagramsUnblocked => {}
            E::Connected => self.on_connected(id, now),
            E::ConnectionLost { reason } => {
                let cause = self.classify(id, reason);
                self.on_lost(id, cause, now);
            }
            E::Stream(event) => {
                let Some(conn) = self.conns.get_mut(&id) else {
                    return;
                };
                let Some(peer) = conn.peer.filter(|_| conn.phase == Phase::Established) else {
                    return;
                };
                let event = match event {
                    S::Opened { dir } => {
                        while let Some(sid) = conn.inner.streams().accept(dir) {
                            if dir == Dir::Bi {
                                conn.send_open.insert(sid);
                            }
                            conn.recv_open.insert(sid);
                            let stream = StreamId { conn: id, id: sid };
                            self.events.push_back(Event::StreamOpened { peer, stream });
                        }
                        return;
                    }
                    S::Readable { id: sid } => Event::StreamReadable {
                        stream: StreamId { conn: id, id: sid },
                    },
                    S::Writable { id: sid } => Event::StreamWritable {
                        stream: StreamId { conn: id, id: sid },
                    },
                    S::Finished { id: sid } => {
                        conn.send_open.remove(&sid);
                        Event::StreamFinished {
                            stream: StreamId { conn: id, id: sid },
                        }
                    }
                    S::Stopped {
                        id: sid,
                        error_code,
                    } => {
                        conn.send_open.remove(&sid);
                        Event::StreamStopped {
                            stream: StreamId { conn: id, id: sid },
                            code: error_code.into_inner(),
                        }
                    }
                    S::Available { .. } => return,
                };
                self.events.push_back(event);
            }
        }
    }

    /// Turns quinn's reason into ours, using what the verifier recorded for handshake failures.
    fn classify(&self, id: ConnId, reason: ConnectionError) -> Cause {
        let Some(conn) = self.conns.get(&id) else {
            return Cause::ClosedLocally;
        };
        let established = conn.phase == Phase::Established;
        let verdict = conn.slot.outcome();
        match reason {
            ConnectionError::Reset => Cause::PeerRestarted,
            ConnectionError::TimedOut if established => Cause::IdleTimeout,
            ConnectionError::TimedOut => Cause::HandshakeFailed(HandshakeFailure::TimedOut),
            ConnectionError::ApplicationClosed(close)
                if close.error_code == VarInt::from_u32(CLOSE_SUPERSEDED) =>
            {
                Cause::Superseded { by: None }
            }
            ConnectionError::ApplicationClosed(close) => Cause::ClosedByPeer {
                code: close.error_code.into_inner(),
                reason: String::from_utf8_lossy(&close.reason).into_owned(),
            },
            ConnectionError::ConnectionClosed(close) => {
                let code = u64::from(close.error_code);
                let reason = String::from_utf8_lossy(&close.reason).into_owned();
                if established {
                    Cause::TransportError { code, reason }
                } else if close.error_code == TransportErrorCode::CONNECTION_REFUSED {
                    Cause::HandshakeFailed(HandshakeFailure::Refused)
                } else {
                    Cause::HandshakeFailed(HandshakeFailure::RejectedByPeer { code, reason })
                }
            }
            ConnectionError::TransportError(error) => match verdict {
                Some(Err(CertificateError::PeerIdMismatch { expected, actual })) => {
                    Cause::PeerIdMismatch { expected, actual }
                }
                Some(Err(error)) => Cause::HandshakeFailed(HandshakeFailure::Certificate(error)),
                _ => Cause::TransportError {
                    code: u64::from(error.code),
                    reason: error.reason,
                },
            },
            ConnectionError::VersionMismatch => {
                Cause::HandshakeFailed(HandshakeFailure::VersionMismatch)
            }
            ConnectionError::LocallyClosed => Cause::ClosedLocally,
            ConnectionError::CidsExhausted => Cause::TransportError {
                code: 0x1,
                reason: "connection IDs exhausted".into(),
            },
        }
    }

    fn on_connected(&mut self, id: ConnId, now: Instant) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let direction = conn.direction;
        let addr = conn.addr;
        let peer = match conn.slot.outcome() {
            Some(Ok(peer)) => peer,
            other => {
                // rustls completed without our verifier running: refuse to trust the connection.
                warn!(conn = %id, ?other, "handshake completed without a verified PeerId");
                self.close_conn(
                    id,
                    now,
                    Cause::HandshakeFailed(HandshakeFailure::Certificate(
                        CertificateError::NoCertificate,
                    )),
                );
                return;
            }
        };
        if direction == Direction::Inbound {
            self.inbound_handshakes = self.inbound_handshakes.saturating_sub(1);
            conn.span.record("peer", tracing::field::display(peer));
        }
        conn.peer = Some(peer);
        conn.phase = Phase::Established;

        let max_per_peer = self.config.limits.max_connections_per_peer;
        let entry = self.peers.entry(peer).or_default();
        // Was this the winning attempt of a dial?
        let mut replaced = None;
        let mut losers = Vec::new();
        if entry
            .dial
            .as_ref()
            .is_some_and(|d| d.in_flight.contains(&id))
        {
            if let Some(dial) = entry.dial.take() {
                losers.extend(dial.in_flight.into_iter().filter(|c| *c != id));
                replaced = dial.replaces;
            }
            entry.backoff = Backoff::default();
            entry.retry = None;
            // Remember what worked first.
            entry.addrs.retain(|a| *a != addr);
            entry.addrs.insert(0, addr);
        }
        let over_limit = entry.established.len() >= max_per_peer;
        if over_limit && replaced.is_none() {
            debug!(conn = %id, %peer, "closing: per-peer connection limit");
            self.close_conn(id, now, Cause::LimitReached);
            return;
        }
        if direction == Direction::Inbound && entry.is_flapping(now) {
            debug!(conn = %id, %peer, "closing: peer is flapping");
            self.close_conn(id, now, Cause::LimitReached);
            return;
        }
        // Make-before-break: a replacement takes over from a connection that is still up.
        let replacing = replaced.filter(|old| entry.established.contains(old));
        entry.established.insert(id);
        let previous = entry.preferred;
        if previous.is_none() || replacing.is_some() {
            entry.preferred = Some(id);
        }
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.announced = true;
            conn.span.in_scope(|| info!(?replaced, "connected"));
        }
        self.events.push_back(Event::Connected {
            peer,
            conn: id,
            addr,
            direction,
            replaced,
        });
        for loser in losers {
            self.close_conn(loser, now, Cause::Superseded { by: Some(id) });
        }
        if let Some(old) = replacing {
            self.close_conn(old, now, Cause::Superseded { by: Some(id) });
        } else if let Some(old) = previous {
            self.start_probe(old, id, now);
        }
    }

    /// A second connection to a peer completed while `old` is preferred: is `old` still alive?
    fn start_probe(&mut self, old: ConnId, challenger: ConnId, now: Instant) {
        let (probe_rtts, probe_min) = (self.config.probe_rtts, self.config.probe_min);
        let Some(conn) = self.conns.get_mut(&old) else {
            return;
        };
        if conn.probe.is_some() {
            // Already probing for another challenger: the newest one competes next time.
            return;
        }
        let wait = (conn.inner.rtt() * probe_rtts).max(probe_min);
        conn.inner.ping();
        conn.probe = Some(Probe {
            challenger,
            deadline: now + wait,
            rx_before: conn.inner.stats().udp_rx.datagrams,
        });
        conn.span
            .in_scope(|| debug!(%challenger, ?wait, "probing the older connection"));
        self.dirty.insert(old);
    }

    /// Ends a probe: if `old` heard back it is alive and one of the two goes by tie-break;
    /// otherwise `old` is stale and the challenger takes over.
    fn resolve_probe(&mut self, old: ConnId, probe: Probe, now: Instant) {
        let Some(conn) = self.conns.get_mut(&old) else {
            return;
        };
        conn.probe = None;
        let alive = conn.inner.stats().udp_rx.datagrams > probe.rx_before;
        let Some(challenger) = self.conns.get(&probe.challenger) else {
            return;
        };
        if challenger.phase != Phase::Established {
            return;
        }
        let loser = if alive {
            // Simultaneous dial: keep the connection dialed by the smaller PeerId; both sides
            // compute the same answer. If the same side dialed both, keep the newer.
            let local = self.identity.peer_id();
            let dialer = |c: &Conn| match (c.direction, c.peer) {
                (Direction::Outbound, _) => Some(local),
                (Direction::Inbound, peer) => peer,
            };
            let (old_dialer, new_dialer) = match self.conns.get(&old) {
                Some(o) => (dialer(o), dialer(challenger)),
                None => return,
            };
            if old_dialer != new_dialer && old_dialer < new_dialer {
                probe.challenger
            } else {
                old
            }
        } else {
            old
        };
        let winner = if loser == old { probe.challenger } else { old };
        debug!(%old, challenger = %probe.challenger, alive, %winner, "probe resolved");
        self.close_conn(loser, now, Cause::Superseded { by: Some(winner) });
        if let Some(peer) = self.conns.get(&winner).and_then(|c| c.peer) {
            if let Some(p) = self.peers.get_mut(&peer) {
                p.preferred = Some(winner);
            }
        }
    }

    /// Closes a connection we decided to end, and accounts for it at once.
    fn close_conn(&mut self, id: ConnId, now: Instant, cause: Cause) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if conn.phase == Phase::Closed {
            return;
        }
        let (code, reason): (u32, &[u8]) = match cause {
            Cause::Superseded { .. } => (CLOSE_SUPERSEDED, b"superseded"),
            Cause::LimitReached => (CLOSE_LIMIT, b"connection limit"),
            _ => (CLOSE_NORMAL, b""),
        };
        conn.inner
            .close(now, VarInt::from_u32(code), Bytes::from_static(reason));
        self.on_lost(id, cause, now);
        self.drive(id, now);
    }

    /// A connection ended: report it, free its slot, and decide what comes next for the peer.
    fn on_lost(&mut self, id: ConnId, cause: Cause, now: Instant) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if conn.phase == Phase::Closed {
            return;
        }
        let was_handshaking = matches!(conn.phase, Phase::Handshaking { .. });
        conn.phase = Phase::Closed;
        conn.probe = None;
        self.live = self.live.saturating_sub(1);
        let (direction, addr, announced) = (conn.direction, conn.addr, conn.announced);
        let peer = conn.peer;
        let unfinished: Vec<StreamId> = conn
            .send_open
            .union(&conn.recv_open)
            .map(|sid| StreamId { conn: id, id: *sid })
            .collect();
        conn.span.in_scope(|| info!(%cause, "connection lost"));
        if was_handshaking && direction == Direction::Inbound {
            self.inbound_handshakes = self.inbound_handshakes.saturating_sub(1);
        }
        let Some(peer) = peer else { return };

        if announced {
            self.events.push_back(Event::ConnectionLost {
                peer,
                conn: id,
                addr,
                cause: cause.clone(),
                unfinished_streams: unfinished,
            });
        }
        let grace = self.config.limits.flap_grace;
        let Some(entry) = self.peers.get_mut(&peer) else {
            return;
        };
        entry.established.remove(&id);
        if announced && !matches!(cause, Cause::Superseded { .. } | Cause::ClosedLocally) {
            if entry.last_loss.is_some_and(|t| now < t + grace) {
                warn!(%peer, "connections die repeatedly: refusing the peer for {grace:?}");
                entry.refuse_until = Some(now + grace);
            }
            entry.last_loss = Some(now);
        }
        if entry.preferred == Some(id) {
            // The newest remaining connection takes over.
            entry.preferred = entry.established.last().copied();
        }
        // A failed dial attempt?
        let mut attempt_failed = false;
        if let Some(dial) = entry.dial.as_mut() {
            if dial.in_flight.remove(&id) {
                dial.errors.push((addr, cause.clone()));
                attempt_failed = true;
            }
        }
        if attempt_failed {
            self.after_attempt_failed(peer, now);
            return;
        }
        // A connection with the peer ended: reconnect?
        let policy = self.policy(&peer);
        let wanted = match cause {
            Cause::PeerRestarted => policy.on_restart,
            Cause::IdleTimeout | Cause::TransportError { .. } => policy.on_other_loss,
            _ => false,
        };
        let Some(entry) = self.peers.get(&peer) else {
            return;
        };
        if announced && wanted && entry.preferred.is_none() && entry.dial.is_none() {
            if entry.addrs.is_empty() {
                debug!(%peer, "lost, but no address known to reconnect to");
            } else {
                self.start_reconnect(peer, id, now);
            }
        }
        self.forget_if_idle(peer, now);
    }

    /// A connection went unanswered for the suspicion period: race it with a fresh dial.
    fn suspect(&mut self, id: ConnId, now: Instant) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        conn.suspected = true;
        let (Some(peer), Some(since)) = (conn.peer, conn.unanswered_since) else {
            return;
        };
        let Some(entry) = self.peers.get(&peer) else {
            return;
        };
        if entry.preferred != Some(id) || entry.dial.is_some() || entry.addrs.is_empty() {
            return;
        }
        if conn.resuspect_at.is_some() {
            conn.span
                .in_scope(|| info!(?since, "still unanswered: racing it again"));
        } else {
            conn.span
                .in_scope(|| info!(?since, "unanswered: racing it with a fresh dial"));
            self.events.push_back(Event::Unresponsive {
                peer,
                conn: id,
                since,
            });
        }
        self.start_dial(peer, Some(id), now);
    }
}

fn random_keys(rng: &mut ChaCha20Rng) -> RestartKeys {
    let mut keys = RestartKeys {
        reset_key: [0; 32],
        cid_key: [0; 32],
    };
    rng.fill(&mut keys.reset_key);
    rng.fill(&mut keys.cid_key);
    keys
}

fn server_config(
    crypto: Arc<rustls::ServerConfig>,
    transport: &Arc<TransportConfig>,
    clock: &WallClock,
) -> Result<Arc<quinn_proto::ServerConfig>, ManagerError> {
    let crypto = QuicServerConfig::try_from(crypto)
        .map_err(|_| ManagerError::Config("TLS configuration lacks a QUIC initial cipher suite"))?;
    let mut config = quinn_proto::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport.clone());
    // Retry and validation tokens carry timestamps: they must come from the time we were given,
    // not from the system clock quinn would read by default.
    config.time_source(Arc::new(clock.clone()));
    Ok(Arc::new(config))
}

/// When an established connection becomes suspect: `ptos` probe timeouts after the first
/// unanswered ack-eliciting packet, or when a failed suspicion redial's backoff ends.
fn suspicion_deadline(conn: &Conn, ptos: u32) -> Option<Instant> {
    if conn.phase != Phase::Established || conn.suspected {
        return None;
    }
    let pto = conn.inner.rtt() * 3 + Duration::from_millis(25);
    conn.unanswered_since
        .map(|since| (since + pto * ptos).max(conn.resuspect_at.unwrap_or(since)))
}

/// Frames that make the peer acknowledge (everything but ACK, padding and CONNECTION_CLOSE).
fn ack_eliciting_frames(f: &quinn_proto::FrameStats) -> u64 {
    f.ack_frequency
        + f.crypto
        + f.data_blocked
        + f.datagram
        + u64::from(f.handshake_done)
        + f.immediate_ack
        + f.max_data
        + f.max_stream_data
        + f.max_streams_bidi
        + f.max_streams_uni
        + f.new_connection_id
        + f.new_token
        + f.path_challenge
        + f.path_response
        + f.ping
        + f.reset_stream
        + f.retire_connection_id
        + f.stream_data_blocked
        + f.streams_blocked_bidi
        + f.streams_blocked_uni
        + f.stop_sending
        + f.stream
}

/// Orders a dial's addresses as RFC 8305 (Happy Eyeballs) does: alternate address families,
/// starting with the family of the first address (the one that worked last, when known), and
/// keep the given order within each family.
fn rank_addresses(addrs: &[SocketAddr]) -> VecDeque<SocketAddr> {
    let Some(first) = addrs.first() else {
        return VecDeque::new();
    };
    let (mut same, mut other): (VecDeque<_>, VecDeque<_>) = addrs
        .iter()
        .copied()
        .partition(|a| a.is_ipv6() == first.is_ipv6());
    let mut ranked = VecDeque::with_capacity(addrs.len());
    while !same.is_empty() || !other.is_empty() {
        ranked.extend(same.pop_front());
        ranked.extend(other.pop_front());
    }
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_interleave_families_from_the_first() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap_or_else(|_| panic!("{s}"));
        let given = [
            a("[::1]:1"),
            a("[::1]:2"),
            a("[::1]:3"),
            a("10.0.0.1:1"),
            a("10.0.0.1:2"),
        ];
        let ranked: Vec<_> = rank_addresses(&given).into_iter().collect();
        assert_eq!(
            ranked,
            vec![given[0], given[3], given[1], given[4], given[2]]
        );
        assert!(rank_addresses(&[]).is_empty());
    }
}
