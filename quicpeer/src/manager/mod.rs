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
//! let mut manager = Manager::new(Instant::now(), SystemTime::now(), identity, Config::default(), [7; 32])?;
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
mod book;
pub(crate) mod cid;
mod config;
mod conn;
mod dial;
mod event;
mod lifecycle;
mod metrics;
mod pacing;
mod queue;
mod streams;
pub(crate) mod timers;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use libp2p_identity::PeerId;
use quinn_proto::{
    ConnectionError, ConnectionHandle, DatagramEvent, Dir, EndpointConfig,
    HashedConnectionIdGenerator, TransportConfig, TransportErrorCode, VarInt,
};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
#[cfg(feature = "internals")]
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use tracing::{debug, debug_span, info, trace, warn, Span};

use crate::identity::resumption::TICKET_KEY_INFO;
use crate::identity::{
    CertificateError, Identity, LoadedCertificate, RestartKeys, TlsContext, TlsError,
    VerificationSlot, WallClock,
};
use backoff::Backoff;
pub use book::PeerRecord;
use book::Seen;
use cid::{KeyedCidGenerator, ShardRouter};
pub use config::{Config, KeyMode, Limits, ReconnectPolicy, ResponseRate};
use conn::{Conn, Phase, Probe};
use dial::Peer;
pub use event::{
    Cause, ChunksRead, ConnId, ConnectFailure, ConnectionStats, DialError, DialOutcome, Direction,
    Event, HandshakeFailure, Read, ReadStatus, StreamError, StreamId, Transmit,
};
use lifecycle::{ack_eliciting_frames, suspicion_deadline};
pub use metrics::{
    CountsBy, FailureKind, Histogram, Label, LossKind, Metrics, RedialReason, Refusal,
    RestartSignal,
};
use pacing::TokenBucket;
use queue::{EventQueue, Queued};
use timers::TimerIndex;

/// Application close code: normal close.
pub const CLOSE_NORMAL: u64 = 0;
/// Application close code: this connection was superseded by another to the same peer.
pub const CLOSE_SUPERSEDED: u64 = 0x7170_0001;
/// Application close code: closed to stay within a connection limit.
pub const CLOSE_LIMIT: u64 = 0x7170_0002;
/// Application close code: the node is about to restart ([`Manager::close_all_restarting`]);
/// the reason phrase says for how long (`restarting; downtime_ms=<n>`). Other libp2p
/// implementations see an ordinary close.
pub const CLOSE_RESTARTING: u64 = 0x7170_0003;
/// The largest application error code QUIC can carry (a variable-length integer, 2^62 - 1).
/// Every code quicpeer takes or reports (stream resets and stops, connection closes) is a
/// `u64` in `0..=MAX_APP_CODE`.
pub const MAX_APP_CODE: u64 = (1 << 62) - 1;

/// The SNI-less server name handed to quinn; with SNI disabled it never goes on the wire.
const SERVER_NAME: &str = "l";
/// The longest restart a peer may announce: it keeps our redial schedule short for this long
/// at most (twice over), whatever it claims.
const MAX_ANNOUNCED_DOWNTIME: Duration = Duration::from_secs(60);
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
    Config(#[from] ConfigError),
}

/// A [`Config`] value the manager cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `max_udp_payload` is outside QUIC's range (1200 to 65527 bytes).
    #[error("max_udp_payload {0} is outside 1200..=65527")]
    MaxUdpPayload(u16),
    /// `idle_timeout` does not fit QUIC's transport parameter (2^62 - 1 ms).
    #[error("idle_timeout {0:?} is too large for QUIC")]
    IdleTimeout(Duration),
    /// A flow-control window (`stream_receive_window`, `receive_window`) above QUIC's 2^62 - 1.
    #[error("flow-control window {0} is above 2^62 - 1")]
    Window(u64),
    /// The TLS configuration offers no cipher suite QUIC can start with (a build without
    /// TLS_AES_128_GCM_SHA256).
    #[error("the TLS configuration lacks a QUIC initial cipher suite")]
    NoQuicCipherSuite,
    /// `shard` is set but the restart keys are random per process: the shards would not
    /// recognise each other's connection IDs. Use `KeyMode::DerivedFromIdentity` (with an
    /// identity whose secret can be extracted) or `KeyMode::Explicit`.
    #[error("a sharded manager needs restart keys shared by every shard")]
    ShardWithoutSharedKeys,
}

/// The sans-IO connection manager. See the [module documentation](self) for the run loop.
pub struct Manager {
    identity: Identity,
    config: Config,
    tls: TlsContext,
    clock: WallClock,
    epoch: (Instant, SystemTime),
    /// When `clock` next needs moving: it shows whole milliseconds, and most calls come within
    /// one of the last (a burst of datagrams), so they skip the conversion.
    clock_next: Instant,
    endpoint: quinn_proto::Endpoint,
    transport: Arc<TransportConfig>,
    /// Boxed: a connection is about 6 KB (quinn's state inline), and a B-tree node holds eleven
    /// values, half-empty after sequential inserts; boxed, a manager with one connection holds
    /// 6 KB rather than a 70 KB node, and a hub about 3 KB less per connection.
    conns: BTreeMap<ConnId, Box<Conn>>,
    /// quinn's handle of each connection (a slab index, reused once drained) to ours: indexed
    /// directly, as quinn's slab is, so the per-datagram lookup hashes nothing.
    by_handle: HandleMap,
    peers: BTreeMap<PeerId, Peer>,
    next_conn: u64,
    events: EventQueue,
    responses: VecDeque<(Transmit, Vec<u8>)>,
    /// Connections that may have something to send, each once (`Conn::dirty`), in the order
    /// they became so: a flag and a queue rather than a set, as the receive path marks its
    /// connection at every datagram. Entries of connections gone since are skipped.
    dirty: VecDeque<ConnId>,
    /// Each connection's next deadline, so that `poll_timeout` and `handle_timeout` never visit
    /// every connection.
    timers: TimerIndex<ConnId>,
    /// Peers that may have a timer (a staggered dial attempt, a reconnect backoff); entries
    /// without one are dropped lazily.
    timed_peers: BTreeSet<PeerId>,
    /// Outbound connections still handshaking (the outbound twin of `inbound_handshakes`, left
    /// where that counter is decremented), so that an ICMP error, which anyone on the path can
    /// forge, costs a visit of the dials in flight rather than of every connection.
    dialing_conns: BTreeSet<ConnId>,
    /// When each peer was last seen connected: the peer book (`book`), bounded by
    /// `Limits::max_peer_book`.
    seen: BTreeMap<PeerId, Seen>,
    /// Peers with a dial in progress (`Peer::dial` set): what `Limits::max_pending_dials`
    /// counts. Kept where a dial starts and ends, so that a dial, and a peer-book dial
    /// started after every datagram, need not visit every peer to count them (debug builds
    /// check it against a scan in `poll_timeout`).
    pending_dials: usize,
    /// Peer-book dials waiting for a pending-dial slot or their turn (`Limits::peer_book_dials`).
    book_dials: VecDeque<PeerRecord>,
    book_bucket: TokenBucket,
    /// When the next paced peer-book dial may start.
    book_next: Option<Instant>,
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
    /// `close_all_restarting` was called: the closes announce a restart of this long.
    restart_notice: Option<Duration>,
    /// New inbound connections are accepted (see `set_accepting`).
    accepting: bool,
    /// Datagrams one transmit may carry (see `set_max_datagrams`).
    max_datagrams: usize,
    /// Which shard owns a datagram's connection, where this manager is a shard (`Config::shard`).
    router: Option<ShardRouter>,
    /// What the manager has counted (its gauges are filled in by `metrics`).
    metrics: Metrics,
    buf: Vec<u8>,
    /// quinn's events of one connection, between polling them and acting on them (`drive`):
    /// kept, so that a datagram's events allocate nothing.
    quinn_events: Vec<quinn_proto::Event>,
    span: Span,
}

impl Manager {
    /// Builds a manager for `identity`.
    ///
    /// `seed` drives every random choice the manager makes (connection IDs, jitter); give each
    /// process a fresh one. `now` and `wall_now` are the monotonic and the wall-clock time of
    /// this moment; later wall-clock times (for certificate validity) are derived from them.
    pub fn new(
        now: Instant,
        wall_now: SystemTime,
        identity: Identity,
        config: Config,
        seed: [u8; 32],
    ) -> Result<Self, ManagerError> {
        Self::build(now, wall_now, identity, config, seed, None)
    }

    /// Like [`Manager::new`], but presents `certificate` (signed by `key`), made beforehand by
    /// [`generate_certificate`](crate::identity::generate_certificate) for the same identity,
    /// instead of generating one. Generating the certificate is most of what `new` costs:
    /// fuzzers, benchmarks and tests that build many managers of one identity share one.
    #[cfg(feature = "internals")]
    #[doc(hidden)]
    pub fn with_certificate(
        now: Instant,
        wall_now: SystemTime,
        identity: Identity,
        config: Config,
        seed: [u8; 32],
        certificate: (CertificateDer<'static>, PrivatePkcs8KeyDer<'static>),
    ) -> Result<Self, ManagerError> {
        let (certificate, key) = certificate;
        let loaded = LoadedCertificate::load(certificate, key)
            .map_err(|e| ManagerError::Tls(Box::new(e)))?;
        Self::build(now, wall_now, identity, config, seed, Some(loaded))
    }

    /// Like [`Manager::with_certificate`], with the certificate's key loaded beforehand too
    /// (loading an ECDSA key costs a scalar multiplication): for fuzzers that build managers
    /// by the thousand.
    #[cfg(feature = "internals")]
    #[doc(hidden)]
    pub fn with_loaded_certificate(
        now: Instant,
        wall_now: SystemTime,
        identity: Identity,
        config: Config,
        seed: [u8; 32],
        certificate: &LoadedCertificate,
    ) -> Result<Self, ManagerError> {
        Self::build(
            now,
            wall_now,
            identity,
            config,
            seed,
            Some(certificate.clone()),
        )
    }

    fn build(
        now: Instant,
        wall_now: SystemTime,
        identity: Identity,
        config: Config,
        seed: [u8; 32],
        certificate: Option<LoadedCertificate>,
    ) -> Result<Self, ManagerError> {
        let span = debug_span!("manager", local = %identity.peer_id());
        let mut rng = ChaCha20Rng::from_seed(seed);
        let clock = WallClock::new(wall_now);
        let mut tls = match &certificate {
            Some(certificate) => TlsContext::with_loaded(certificate, clock.clone()),
            None => TlsContext::new(&identity, clock.clone()),
        }
        .map_err(|e| ManagerError::Tls(Box::new(e)))?;
        if let Some(key_log) = &config.key_log {
            tls.set_key_log(key_log.clone());
        }
        #[cfg(feature = "fuzzing")]
        tls.set_null_crypto(config.null_crypto.clone());

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
        if config.tls_resumption {
            tls.enable_resumption(ticket_secret(
                &config.keys,
                &identity,
                &keys,
                derived,
                &mut rng,
            ));
        }
        let mut endpoint_config = EndpointConfig::new(Arc::new(ring::hmac::Key::new(
            ring::hmac::HMAC_SHA256,
            &keys.reset_key,
        )));
        let shard = config.shard;
        if shard.is_some() && !derived {
            return Err(ConfigError::ShardWithoutSharedKeys.into());
        }
        let router = shard.map(|own| ShardRouter::new(&keys.cid_key, own));
        if derived {
            let mut cid_seed = [0u8; 32];
            rng.fill_bytes(&mut cid_seed);
            let cid_key = keys.cid_key;
            endpoint_config
                .cid_generator(move || Box::new(KeyedCidGenerator::new(&cid_key, cid_seed, shard)));
        } else {
            let key = rng.next_u64();
            endpoint_config
                .cid_generator(move || Box::new(HashedConnectionIdGenerator::from_key(key)));
        }
        // Stateless responses are policed by our own token bucket (see `ResponseRate`).
        endpoint_config.min_reset_interval(Duration::ZERO);
        endpoint_config
            .max_udp_payload_size(config.max_udp_payload)
            .map_err(|_| ConfigError::MaxUdpPayload(config.max_udp_payload))?;

        let mut transport = TransportConfig::default();
        let idle = quinn_proto::IdleTimeout::try_from(config.idle_timeout)
            .map_err(|_| ConfigError::IdleTimeout(config.idle_timeout))?;
        transport
            .max_idle_timeout(Some(idle))
            .keep_alive_interval(config.keep_alive)
            .max_concurrent_bidi_streams(VarInt::from_u32(config.max_concurrent_bidi_streams))
            .max_concurrent_uni_streams(VarInt::from_u32(config.max_concurrent_uni_streams))
            .stream_receive_window(window(config.stream_receive_window)?)
            .receive_window(window(config.receive_window)?)
            .datagram_receive_buffer_size(None);
        let transport = Arc::new(transport);

        let mut endpoint_seed = [0u8; 32];
        rng.fill_bytes(&mut endpoint_seed);
        let (server, _) = tls
            .quic_server_config()
            .map_err(|_| ConfigError::NoQuicCipherSuite)?;
        let server = server_config(server, &transport, &clock);
        let endpoint = quinn_proto::Endpoint::new(
            Arc::new(endpoint_config),
            Some(server),
            false,
            Some(endpoint_seed),
        );
        let bucket = TokenBucket::new(config.stateless_responses, now);
        let book_bucket = TokenBucket::new(config.limits.peer_book_dials, now);
        Ok(Self {
            identity,
            config,
            tls,
            clock,
            epoch: (now, wall_now),
            clock_next: now,
            endpoint,
            transport,
            conns: BTreeMap::new(),
            by_handle: HandleMap::default(),
            peers: BTreeMap::new(),
            next_conn: 1,
            events: EventQueue::default(),
            responses: VecDeque::new(),
            dirty: VecDeque::new(),
            timers: TimerIndex::default(),
            timed_peers: BTreeSet::new(),
            dialing_conns: BTreeSet::new(),
            seen: BTreeMap::new(),
            pending_dials: 0,
            book_dials: VecDeque::new(),
            book_bucket,
            book_next: None,
            rng,
            bucket,
            inbound_handshakes: 0,
            live: 0,
            next_sweep: now,
            shutting_down: false,
            restart_notice: None,
            accepting: true,
            max_datagrams: 1,
            router,
            metrics: Metrics::default(),
            buf: Vec::new(),
            quinn_events: Vec::new(),
            span,
        })
    }

    /// The manager's span, entered for one call into it; none when no subscriber records it.
    /// Entering a disabled span still costs tracing's `log` fallback a check on entry and one on
    /// exit, about 100 instructions a datagram (`benches/callgrind.sh`).
    fn entered_span(&self) -> Option<tracing::span::EnteredSpan> {
        (!self.span.is_disabled()).then(|| self.span.clone().entered())
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

    /// The most datagrams one [`Transmit`] may carry (see [`Manager::set_max_datagrams`]).
    pub fn max_datagrams(&self) -> usize {
        self.max_datagrams
    }

    /// The shard this manager is ([`Config::shard`]), if it is one.
    pub fn shard(&self) -> Option<u8> {
        self.config.shard
    }

    /// Where this manager is a shard: the shard that owns the connection `datagram` is
    /// addressed to, read from its destination connection ID (whose tag is checked, unless it
    /// names this shard). A driver running several shards on one port hands a datagram that
    /// names another shard to that shard; one for this shard, or naming none (a new client's
    /// Initial, a CID of an earlier process with more shards, junk), it feeds here, where an
    /// unknown CID of ours is answered with a stateless reset. `None` when not sharded.
    pub fn datagram_shard(&self, datagram: &[u8]) -> Option<u8> {
        self.router.as_ref()?.shard_of(datagram)
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

    /// Connections by phase: (handshaking, established, closed but not yet drained);
    /// [`live_connections`](Self::live_connections) is the first two together.
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

    /// What the manager has counted so far, with the connection gauges as of now. Cheap
    /// enough for every scrape: it copies the counters and visits the connections once.
    pub fn metrics(&self) -> Metrics {
        let (handshaking, established, draining) = self.phase_counts();
        let mut metrics = self.metrics.clone();
        metrics.handshaking = handshaking as u64;
        metrics.established = established as u64;
        metrics.draining = draining as u64;
        metrics.peers_connected = (self.peers.values())
            .filter(|p| !p.established.is_empty())
            .count() as u64;
        metrics
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

    /// What a connection has sent, received and lost so far.
    pub fn stats(&self, conn: ConnId) -> Option<ConnectionStats> {
        (self.conns.get(&conn))
            .map(|c| ConnectionStats::from_quinn(c.inner.rtt(), &c.inner.stats()))
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
        let _span = self.entered_span();
        self.set_time(now);
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let event = self
            .endpoint
            .handle(now, from, local_ip, None, BytesMut::from(data), &mut buf);
        match event {
            Some(DatagramEvent::ConnectionEvent(handle, event)) => {
                if let Some(id) = self.by_handle.get(handle) {
                    let mut was_suspected = false;
                    if let Some(conn) = self.conns.get_mut(&id) {
                        conn.inner.handle_event(event);
                        // The peer still has this connection (or at least its CIDs).
                        conn.unanswered_since = None;
                        was_suspected = std::mem::take(&mut conn.suspected);
                        if conn.resuspect_at.take().is_some() {
                            // It was alive after all: the failed races count for nothing.
                            if let Some(p) = conn.peer.and_then(|peer| self.peers.get_mut(&peer)) {
                                p.backoff = Backoff::default();
                            }
                        }
                    }
                    self.drive(id, now);
                    if was_suspected {
                        self.silence_ended(id);
                    }
                }
            }
            Some(DatagramEvent::NewConnection(incoming)) => self.accept(incoming, now, &mut buf),
            Some(DatagramEvent::Response(transmit)) => self.queue_response(now, transmit, &buf),
            None => {}
        }
        self.buf = buf;
        if !self.book_dials.is_empty() {
            self.start_book_dials(now);
        }
    }

    /// Runs timers that are due at `now`: quinn's (loss detection, keep-alive, idle), and the
    /// manager's (handshake deadlines, probes, dial staggers, reconnect backoff).
    pub fn handle_timeout(&mut self, now: Instant) {
        let _span = self.entered_span();
        self.set_time(now);
        // Only the connections with a deadline at or before `now` are visited; each pass asks
        // the index again, as the previous pass may have changed deadlines. (The index takes
        // the due connections out and re-indexes them at their new deadlines before it next
        // answers, so one whose deadline passed without effect does not stay due.)
        for id in self.due_conns(now) {
            let Some(conn) = self.conns.get_mut(&id) else {
                continue;
            };
            if conn.inner.poll_timeout().is_some_and(|t| t <= now) {
                conn.inner.handle_timeout(now);
                // quinn can set a deadline at or before an instant its timers already ran at,
                // which running them again at that instant does nothing about: its pacer, asked
                // by `poll_transmit(now)`, answers with a time at or before `now` when it has
                // not gained tokens since (its delay rounds to zero on a near-zero RTT, or it
                // counts from its last refill), and the pacing timer's expiry does nothing but
                // let the next `poll_transmit` ask again. Reported as is, a driver whose clock
                // has not moved would spin; such a deadline is reported a microsecond after
                // the instant the timers ran at (`conn_deadline`), when the pacer has gained.
                conn.quinn_handled = Some(now);
                self.drive(id, now);
            }
        }

        for id in self.due_conns(now) {
            if self.conns.get(&id).is_some_and(
                |c| matches!(c.phase, Phase::Handshaking { deadline } if deadline <= now),
            ) {
                debug!(conn = %id, "handshake timed out");
                self.close_conn(id, now, Cause::HandshakeFailed(HandshakeFailure::TimedOut));
            }
        }

        for id in self.due_conns(now) {
            let probe = self.conns.get(&id).and_then(|c| c.probe);
            if let Some(probe) = probe.filter(|p| p.deadline <= now) {
                self.resolve_probe(id, probe, now);
            }
        }

        if let Some(ptos) = self.config.suspicion_ptos {
            for id in self.due_conns(now) {
                if self
                    .conns
                    .get(&id)
                    .is_some_and(|c| suspicion_deadline(c, ptos).is_some_and(|t| t <= now))
                {
                    self.suspect(id, now);
                }
            }
        }
        if now >= self.next_sweep {
            let grace = self.config.limits.flap_grace;
            self.peers.retain(|_, p| !p.is_idle(now, grace));
            self.next_sweep = now + Duration::from_secs(1);
        }

        let mut staggered = Vec::new();
        let mut retries = Vec::new();
        for peer_id in &self.timed_peers {
            let Some(peer) = self.peers.get(peer_id) else {
                continue;
            };
            if peer
                .dial
                .as_ref()
                .and_then(|d| d.next_at)
                .is_some_and(|t| t <= now)
            {
                staggered.push(*peer_id);
            }
            if let Some((_, lost)) = peer.retry.filter(|(at, _)| *at <= now) {
                retries.push((*peer_id, lost));
            }
        }
        for peer in staggered {
            self.start_next_attempt(peer, now);
        }
        for (peer, lost) in retries {
            if let Some(p) = self.peers.get_mut(&peer) {
                p.retry = None;
            }
            self.start_reconnect(peer, lost, now);
        }
        if !self.book_dials.is_empty() && self.book_next.is_none_or(|t| t <= now) {
            self.start_book_dials(now);
        }
    }

    // ---- commands ----

    /// Dials `peer` at `addrs` (merged with the addresses known for it). The peer's identity is
    /// verified in the handshake; the first verified connection wins.
    pub fn dial(
        &mut self,
        now: Instant,
        peer: PeerId,
        addrs: impl IntoIterator<Item = SocketAddr>,
    ) -> Result<DialOutcome, DialError> {
        let _span = self.entered_span();
        self.set_time(now);
        if peer == self.identity.peer_id() {
            return Err(DialError::SelfDial);
        }
        if self.shutting_down {
            return Err(DialError::ShuttingDown);
        }
        let pending = self.pending_dials;
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
            self.metrics.refusals.add(Refusal::MaxPendingDials);
            return Err(DialError::TooManyPendingDials);
        }
        if self.live >= self.config.limits.max_connections {
            self.metrics.refusals.add(Refusal::DialConnectionLimit);
            return Err(DialError::ConnectionLimit);
        }
        entry.retry = None;
        self.start_dial(peer, None, now);
        Ok(DialOutcome::Started)
    }

    /// Starts one connection to `addr`, outside any peer's dial, and returns it at once.
    /// `expected` pins the PeerId the handshake must verify (`None`: whoever answers, learned in
    /// the handshake). It ends as [`Event::Connected`] or [`Event::ConnectFailed`]; it is not
    /// retried, and its failure does not touch the peer's dial, backoff or addresses: for an
    /// embedder that owns its redial logic (a libp2p `Transport`). Once established it is a
    /// connection like any other.
    pub fn connect(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        expected: Option<PeerId>,
    ) -> Result<ConnId, DialError> {
        let _span = self.entered_span();
        self.set_time(now);
        if expected == Some(self.identity.peer_id()) {
            return Err(DialError::SelfDial);
        }
        if self.shutting_down {
            return Err(DialError::ShuttingDown);
        }
        if self.live >= self.config.limits.max_connections {
            return Err(DialError::ConnectionLimit);
        }
        let id = self
            .start_attempt(now, addr, expected)
            .map_err(DialError::Local)?;
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.standalone = true;
        }
        Ok(id)
    }

    /// Replaces the connection to a connected peer with a fresh one, make-before-break: the
    /// current connection stays in use until the new one is verified, and stays if the new one
    /// fails.
    pub fn redial(&mut self, now: Instant, peer: PeerId) -> Result<DialOutcome, DialError> {
        let _span = self.entered_span();
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
        let _span = self.entered_span();
        self.set_time(now);
        let failed: Vec<ConnId> = (self.dialing_conns.iter())
            .filter(|id| {
                self.conns
                    .get(id)
                    .is_some_and(|c| c.addr == addr && matches!(c.phase, Phase::Handshaking { .. }))
            })
            .copied()
            .collect();
        for id in failed {
            self.close_conn(
                id,
                now,
                Cause::HandshakeFailed(HandshakeFailure::Unreachable),
            );
        }
    }

    /// Whether new inbound connections are accepted. With `false`, clients are refused
    /// statelessly (`CONNECTION_REFUSED`) while the connections already established, and our own
    /// dials, go on: a listener that stops listening without closing what it holds.
    pub fn set_accepting(&mut self, accepting: bool) {
        self.accepting = accepting;
    }

    /// Whether new inbound connections are accepted ([`Manager::set_accepting`]).
    pub fn is_accepting(&self) -> bool {
        self.accepting
    }

    /// Sets the reconnect policy of one peer, overriding `Config::reconnect`.
    pub fn set_reconnect_policy(&mut self, peer: PeerId, policy: Option<ReconnectPolicy>) {
        self.peers.entry(peer).or_default().policy = policy;
    }

    /// Closes one connection (`ConnectionLost { cause: ClosedLocally }` follows).
    pub fn close(&mut self, now: Instant, conn: ConnId) {
        let _span = self.entered_span();
        self.set_time(now);
        self.close_conn(conn, now, Cause::ClosedLocally);
    }

    /// Closes every connection to `peer` and cancels its dials and reconnects.
    pub fn disconnect(&mut self, now: Instant, peer: PeerId) {
        let _span = self.entered_span();
        self.set_time(now);
        if let Some(p) = self.peers.get_mut(&peer) {
            p.retry = None;
            p.addrs.clear();
            let dial = p.dial.take();
            self.pending_dials -= usize::from(dial.is_some());
            let attempts = dial.map(|d| d.in_flight).unwrap_or_default();
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
        let _span = self.entered_span();
        self.set_time(now);
        self.shutting_down = true;
        let peers: Vec<PeerId> = self.peers.keys().copied().collect();
        for peer in peers {
            self.disconnect(now, peer);
        }
        let rest: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in rest {
            self.close_conn(id, now, Cause::ClosedLocally);
        }
    }

    /// Closes everything as [`Manager::close_all`] does, telling the peers that this node is
    /// about to restart and expects to be back within `expected_downtime`
    /// ([`CLOSE_RESTARTING`]). quicpeer peers report [`Cause::PeerRestarting`] and, for peers
    /// they dialed, redial on a short schedule (`ReconnectPolicy::restart_retry_interval`)
    /// until this node answers or twice the downtime has passed; other libp2p implementations
    /// see an ordinary close.
    pub fn close_all_restarting(&mut self, now: Instant, expected_downtime: Duration) {
        self.restart_notice = Some(expected_downtime);
        self.close_all(now);
    }

    /// Lets one [`Transmit`] carry up to `max` datagrams of one connection (segmentation
    /// offload): then its payload is datagrams of `segment_size` bytes back to back, the last
    /// one possibly shorter. A driver that sends such a batch in one system call (GSO) sets
    /// this; the mio driver does, from its sockets' capability. The default, 1, gives one
    /// datagram per transmit; 0 counts as 1. quinn builds a batch in one pass, so a bulk
    /// sender spends less per datagram.
    pub fn set_max_datagrams(&mut self, max: usize) {
        self.max_datagrams = max.max(1);
    }

    /// The next datagram (or, see [`Manager::set_max_datagrams`], run of datagrams) to send,
    /// written into `buf` (cleared first).
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        buf.clear();
        if let Some((transmit, bytes)) = self.responses.pop_front() {
            buf.extend_from_slice(&bytes);
            return Some(transmit);
        }
        while let Some(&id) = self.dirty.front() {
            let Some(conn) = self.conns.get_mut(&id) else {
                self.dirty.pop_front();
                continue;
            };
            match conn.inner.poll_transmit(now, self.max_datagrams, buf) {
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
                    conn.dirty = false;
                    self.dirty.pop_front();
                    // Leaving the dirty set: index the deadline its last changes left.
                    self.timers.touch(id);
                }
            }
        }
        None
    }

    /// The next event for the application.
    ///
    /// Events wait in a queue until polled. Each call into the manager adds a bounded number
    /// of them (one datagram, one timer round or one command can only open, establish or end so
    /// many streams and connections, and those are bounded by quinn's stream limits and
    /// [`Limits`]), so an application that drains the queue after every call, as the loop
    /// above does, holds a bounded queue whatever the peers send; one that never polls lets it
    /// grow.
    ///
    /// A `StreamReadable` queued before the application read the stream to its end (or reset,
    /// or stopped it) is dropped here: a read would only fail with `Closed`.
    pub fn poll_event(&mut self) -> Option<Event> {
        let conns = &self.conns;
        self.events.pop(|stream| read_ended(conns, stream))
    }

    /// Whether events wait for [`Manager::poll_event`] (some may still be dropped by it).
    pub(crate) fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// The application can read nothing more from `stream`: it read its end or reset, or
    /// stopped it (false while its connection is unknown: reads say why).
    pub(crate) fn read_ended(&self, stream: StreamId) -> bool {
        read_ended(&self.conns, stream)
    }

    /// When [`Manager::handle_timeout`] must be called next, if ever.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.refresh_timers();
        let mut next = self.timers.next();
        if !self.timed_peers.is_empty() {
            let peers = &self.peers;
            self.timed_peers
                .retain(|p| peers.get(p).and_then(peer_deadline).is_some());
            for peer in self.timed_peers.iter().filter_map(|p| peers.get(p)) {
                next = min_deadline(next, peer_deadline(peer));
            }
        }
        #[cfg(debug_assertions)]
        debug_assert_eq!(next, self.scan_timeout(), "the timer index lost a deadline");
        debug_assert_eq!(
            self.pending_dials,
            self.peers.values().filter(|p| p.dial.is_some()).count(),
            "the count of pending dials drifted"
        );
        min_deadline(next, self.book_next)
    }

    /// `poll_timeout` the slow way, visiting every connection and peer: what debug builds
    /// check the index against.
    #[cfg(debug_assertions)]
    fn scan_timeout(&mut self) -> Option<Instant> {
        let ptos = self.config.suspicion_ptos;
        let mut next = None;
        for conn in self.conns.values_mut() {
            next = min_deadline(next, conn_deadline(conn, ptos));
        }
        for peer in self.peers.values() {
            next = min_deadline(next, peer_deadline(peer));
        }
        next
    }

    /// Notes that `id` may have something to send.
    pub(super) fn mark_dirty(&mut self, id: ConnId) {
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.queue_dirty(id, &mut self.dirty);
        }
    }

    /// Re-indexes the deadlines of connections that changed (and of those waiting to send,
    /// which may have).
    fn refresh_timers(&mut self) {
        for id in &self.dirty {
            self.timers.touch(*id);
        }
        let ptos = self.config.suspicion_ptos;
        let conns = &mut self.conns;
        self.timers
            .refresh(|id| conns.get_mut(&id).and_then(|c| conn_deadline(c, ptos)));
    }

    /// The connections with a deadline at or before `now`.
    fn due_conns(&mut self, now: Instant) -> Vec<ConnId> {
        self.refresh_timers();
        self.timers.due(now)
    }

    // ---- internals ----

    fn set_time(&mut self, now: Instant) {
        if now < self.clock_next {
            return;
        }
        let elapsed = now.saturating_duration_since(self.epoch.0);
        self.clock.set(self.epoch.1 + elapsed);
        self.clock_next = now.checked_add(Duration::from_millis(1)).unwrap_or(now);
    }

    fn queue_response(&mut self, now: Instant, transmit: quinn_proto::Transmit, buf: &[u8]) {
        if self.responses.len() >= MAX_QUEUED_RESPONSES || !self.bucket.take(now) {
            debug!(to = %transmit.destination, "stateless response dropped by rate limit");
            self.metrics.responses_dropped += 1;
            return;
        }
        let mut bytes = buf.get(..transmit.size).unwrap_or(buf).to_vec();
        // quinn's stateless responses are Retry, version negotiation and refusals (long
        // headers), and stateless resets, which look like short-header packets.
        if bytes.first().is_some_and(|b| b & 0x80 == 0) {
            self.metrics.stateless_resets_sent += 1;
            fit_reset(&mut bytes, usize::from(self.config.max_udp_payload));
        }
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
}

/// Shortens a stateless reset to `max` bytes where it is longer. quinn pads a reset to just
/// under the datagram that drew it (RFC 9000 §10.3: smaller, so two endpoints cannot reset each
/// other forever), whatever our `max_udp_payload`, so a peer's jumbo datagram (or a forged one)
/// drew a reset larger than any datagram we are configured to send. A reset is a first byte,
/// unpredictable bits and the 16-byte token last: dropping bits from the middle keeps it one.
fn fit_reset(reset: &mut Vec<u8>, max: usize) {
    const TOKEN: usize = 16;
    // RFC 9000 §10.3: a reset shorter than 21 bytes cannot be told from a real packet's end.
    let max = max.max(TOKEN + 5);
    if reset.len() > max {
        reset.drain(max - TOKEN..reset.len() - TOKEN);
    }
}

/// The secret the TLS session-ticket keys derive from: from the identity where the restart keys
/// are (so a restarted node opens its predecessor's tickets), from the explicit reset key where
/// those were given, random otherwise.
fn ticket_secret(
    mode: &KeyMode,
    identity: &Identity,
    keys: &RestartKeys,
    derived: bool,
    rng: &mut ChaCha20Rng,
) -> [u8; 32] {
    let from_identity = matches!(mode, KeyMode::DerivedFromIdentity)
        .then(|| identity.keypair().derive_secret(TICKET_KEY_INFO))
        .flatten();
    if let Some(secret) = from_identity {
        return secret;
    }
    if derived {
        // Explicit keys: a one-way function of the reset key, under its own label.
        let tag = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &keys.reset_key),
            TICKET_KEY_INFO,
        );
        let mut secret = [0u8; 32];
        secret.copy_from_slice(tag.as_ref().get(..32).unwrap_or(&[0; 32]));
        return secret;
    }
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut secret);
    secret
}

/// quinn's connection handles to `ConnId`s. quinn's handles are slab indices, dense and reused
/// after a connection drains, so a vector indexed by them is as large as the most connections
/// held at once.
#[derive(Debug, Default)]
struct HandleMap(Vec<Option<ConnId>>);

impl HandleMap {
    fn get(&self, handle: ConnectionHandle) -> Option<ConnId> {
        self.0.get(handle.0).copied().flatten()
    }

    fn insert(&mut self, handle: ConnectionHandle, id: ConnId) {
        if self.0.len() <= handle.0 {
            self.0.resize(handle.0 + 1, None);
        }
        if let Some(slot) = self.0.get_mut(handle.0) {
            *slot = Some(id);
        }
    }

    /// Forgets `handle` if it still names `id` (quinn may have given it to a newer connection).
    fn remove_if(&mut self, handle: ConnectionHandle, id: ConnId) {
        if let Some(slot) = self.0.get_mut(handle.0).filter(|s| **s == Some(id)) {
            *slot = None;
        }
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
    crypto: Arc<dyn quinn_proto::crypto::ServerConfig>,
    transport: &Arc<TransportConfig>,
    clock: &WallClock,
) -> Arc<quinn_proto::ServerConfig> {
    let mut config = quinn_proto::ServerConfig::with_crypto(crypto);
    config.transport_config(transport.clone());
    // Retry and validation tokens carry timestamps: they must come from the time we were given,
    // not from the system clock quinn would read by default.
    config.time_source(Arc::new(clock.clone()));
    Arc::new(config)
}

/// A flow-control window of the configuration as QUIC's varint.
fn window(bytes: u64) -> Result<VarInt, ConfigError> {
    VarInt::from_u64(bytes).map_err(|_| ConfigError::Window(bytes))
}

/// The earlier of two optional deadlines.
fn min_deadline(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The earliest instant at which `conn` needs `handle_timeout`: quinn's timers, the handshake
/// deadline, the liveness probe, the suspicion deadline.
fn conn_deadline(conn: &mut Conn, suspicion_ptos: Option<u32>) -> Option<Instant> {
    // Asked for each connection a datagram touched: plain comparisons, cheapest first.
    let handled = conn.quinn_handled;
    let mut next = conn.inner.poll_timeout().map(|t| match handled {
        Some(handled) if t <= handled => handled + QUINN_TIMER_FLOOR,
        _ => t,
    });
    if let Phase::Handshaking { deadline } = conn.phase {
        next = min_deadline(next, Some(deadline));
    }
    if let Some(probe) = conn.probe {
        next = min_deadline(next, Some(probe.deadline));
    }
    if let Some(ptos) = suspicion_ptos {
        next = min_deadline(next, suspicion_deadline(conn, ptos));
    }
    next
}

/// Whether nothing more can be read from `stream` ([`Manager::read_ended`]).
fn read_ended(conns: &BTreeMap<ConnId, Box<Conn>>, stream: StreamId) -> bool {
    conns
        .get(&stream.conn)
        .is_some_and(|c| !c.recv_open.contains(&stream.id))
}

/// How far past the instant quinn's timers last ran at a quinn deadline at or before it is
/// reported.
const QUINN_TIMER_FLOOR: Duration = Duration::from_micros(1);

/// The earliest timer of a peer: the next staggered dial attempt, or the reconnect backoff.
fn peer_deadline(peer: &Peer) -> Option<Instant> {
    min_deadline(
        peer.dial.as_ref().and_then(|d| d.next_at),
        peer.retry.map(|(at, _)| at),
    )
}

#[cfg(test)]
mod tests {
    use super::fit_reset;

    #[test]
    fn a_shortened_reset_keeps_its_first_byte_and_its_token() {
        let reset: Vec<u8> = (0..1_700u32).map(|i| i as u8).collect();
        let mut short = reset.clone();
        fit_reset(&mut short, 1_452);
        assert_eq!(short.len(), 1_452);
        assert_eq!(short[..1_436], reset[..1_436]);
        assert_eq!(
            short[1_436..],
            reset[1_700 - 16..],
            "the token is the last 16 bytes"
        );
        let mut fits = reset[..1_000].to_vec();
        fit_reset(&mut fits, 1_452);
        assert_eq!(fits, reset[..1_000], "a reset that fits is left alone");
        let mut tiny = reset.clone();
        fit_reset(&mut tiny, 3);
        assert_eq!(tiny.len(), 21, "never below the 21 bytes a reset needs");
    }
}
