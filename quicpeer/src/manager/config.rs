//! Configuration of a [`Manager`](super::Manager).

use std::sync::Arc;
use std::time::Duration;

use super::RestartKeys;

/// Where the keys that must survive a restart come from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum KeyMode {
    /// Derived from the identity (HKDF-SHA256): a restarted node answers packets of its old
    /// connections with valid stateless resets. The default, and the point of quicpeer.
    #[default]
    DerivedFromIdentity,
    /// Given explicitly, e.g. loaded from a key file for an identity whose secret cannot be
    /// extracted (RSA).
    Explicit(RestartKeys),
    /// Random per process, as quinn does by default: a restarted node drops the old packets
    /// silently and the other side only notices at its idle timeout. For comparisons.
    RandomPerProcess,
}

/// How the manager reconnects to a peer it lost.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ReconnectPolicy {
    /// Redial at once, inside the call that saw the stateless reset, when a peer restarted.
    pub on_restart: bool,
    /// Redial with backoff when a connection we dialed dies for another reason (idle timeout,
    /// transport error). Closes by the peer or by us are never redialed.
    pub on_other_loss: bool,
    /// Delay before the second attempt of a failed reconnect; doubles each time.
    pub backoff_initial: Duration,
    /// Upper bound of the delay between attempts.
    pub backoff_max: Duration,
    /// Fraction of each delay replaced by random jitter, in 0.0..=1.0.
    pub jitter: f64,
    /// Attempts after which the manager gives up and reports `DialFailed { retry_at: None }`.
    pub max_attempts: u32,
    /// After a peer announced a restart (`Cause::PeerRestarting`), failed reconnects are retried
    /// this often, without backoff, for twice the downtime it announced (plus one second): a
    /// dial to its closed port fails at once (ICMP), so the peer is found within this interval
    /// of being back. Also bounds how long a peer that announces restarts can keep us busy.
    pub restart_retry_interval: Duration,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        Self {
            on_restart: true,
            on_other_loss: true,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            jitter: 0.5,
            max_attempts: 8,
            restart_retry_interval: Duration::from_millis(20),
        }
    }
}

impl ReconnectPolicy {
    /// Never reconnect by itself.
    pub fn never() -> Self {
        Self {
            on_restart: false,
            on_other_loss: false,
            ..Self::default()
        }
    }
}

/// Bounds on what the manager holds. A slot is freed in the call in which its connection dies.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Connections of any state, all peers together.
    pub max_connections: usize,
    /// Established connections to one peer (a replacement in flight may exceed it by one).
    pub max_connections_per_peer: usize,
    /// Dials (to distinct peers) in progress at once.
    pub max_pending_dials: usize,
    /// Inbound handshakes in flight at once; above it, new clients are refused
    /// (`CONNECTION_REFUSED`) and retry with their backoff.
    pub max_inbound_handshakes: usize,
    /// Above this many inbound handshakes in flight, new clients must first prove their address
    /// with a stateless Retry (one more round trip, no state kept for them); so must they once
    /// three quarters of `max_connections` are in use, so that the last quarter of the table is
    /// left to clients that proved their address. `None`: never.
    ///
    /// With the defaults (Retry above 1 024, at most 4 096 in flight), clients from addresses
    /// nobody has validated hold at most 1 024 handshake slots, as forged Initials could, and
    /// the rest, up to 4 096, go to clients that answered a Retry: a flood of forged source
    /// addresses cannot lock real clients out, and a restart that brings thousands of real
    /// peers back at once is served 4 096 at a time instead of refusing most of them
    /// (`docs/benchmarks.md`, handshake limits).
    pub retry_above: Option<usize>,
    /// A peer whose connections died twice within this period is flapping: its new connections
    /// are refused, and reconnects to it wait, until the period has passed since the last death.
    /// Deaths by `Cause::PeerRestarted` do not count: a valid stateless reset proves that the
    /// peer restarted and lost the connection, not that the link flaps, so a peer is reconnected
    /// (and let back in) at once however quickly it restarts. Closes by us and replacements
    /// (`Superseded`) do not count either.
    pub flap_grace: Duration,
    /// Peers the peer book remembers ([`Manager::peer_book`](super::Manager::peer_book)); the
    /// least recently seen are forgotten first.
    pub max_peer_book: usize,
    /// How fast a restarted node dials its peer book
    /// ([`Manager::dial_peer_book`](super::Manager::dial_peer_book)), besides
    /// `max_pending_dials` (which the book's dials share with inbound handshakes): a burst of thousands of handshakes at once comes back as more
    /// handshake data than a socket buffer holds, and what is dropped waits for a probe
    /// timeout. The default, 2 000 a second after a burst of 64, is about what one core
    /// completes.
    pub peer_book_dials: ResponseRate,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 16_384,
            max_connections_per_peer: 2,
            max_pending_dials: 1024,
            max_inbound_handshakes: 4096,
            retry_above: Some(1024),
            flap_grace: Duration::from_secs(1),
            max_peer_book: 16_384,
            peer_book_dials: ResponseRate::new(64, 2_000),
        }
    }
}

/// A rate with bursts (a token bucket): of stateless responses (resets, version negotiation,
/// refusals) in [`Config::stateless_responses`], of peer-book dials in
/// [`Limits::peer_book_dials`].
///
/// quinn paces stateless resets to one per 20 ms per endpoint: a node restarting under a
/// thousand stale peers would need 20 s to reset them all. quicpeer turns quinn's pacing off and
/// polices all stateless responses with this bucket instead. Loops cannot form either way: a
/// stateless reset is always smaller than the packet that caused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResponseRate {
    /// Responses that may be sent back to back.
    pub burst: u32,
    /// Sustained responses per second.
    pub per_second: u32,
}

impl ResponseRate {
    /// `burst` responses back to back, `per_second` sustained.
    pub fn new(burst: u32, per_second: u32) -> Self {
        Self { burst, per_second }
    }
}

impl Default for ResponseRate {
    fn default() -> Self {
        // A restarted node under a thousand stale peers answers them all at once; a reset costs
        // two HMACs, so even the sustained rate is a small share of one core.
        Self {
            burst: 1024,
            per_second: 20_000,
        }
    }
}

/// Configuration of a [`Manager`](super::Manager). `Config::default()` suits most uses.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Where the restart keys come from.
    pub keys: KeyMode,
    /// Interval of keep-alive PINGs on idle connections; also bounds how long an idle dialer
    /// takes to notice a restarted peer.
    pub keep_alive: Option<Duration>,
    /// Idle timeout negotiated with the peer.
    pub idle_timeout: Duration,
    /// A handshake not complete after this long fails with `HandshakeFailed(TimedOut)`.
    pub handshake_timeout: Duration,
    /// Reconnection behaviour.
    pub reconnect: ReconnectPolicy,
    /// Connection and handshake limits.
    pub limits: Limits,
    /// Pacing of stateless resets and other stateless responses.
    pub stateless_responses: ResponseRate,
    /// When a second connection to a peer completes, the first is probed with a PING; it is
    /// considered stale if nothing comes back within this many RTTs (and at least `probe_min`).
    pub probe_rtts: u32,
    /// Lower bound of the probe's wait.
    pub probe_min: Duration,
    /// Delay before the next address of a dial is tried while earlier attempts are in flight.
    pub dial_stagger: Duration,
    /// Suspicion redial, for peers that restart without sending stateless resets: when an
    /// established connection we dialed has had no answer for this many probe timeouts
    /// (estimated as `3 × RTT + 25 ms` each), a fresh dial races it; if the dial wins, the old
    /// connection ends as `Superseded`, and if it fails, the old one stays (and is raced again
    /// with the reconnect backoff when the failure was the peer's closed port). `None`: off.
    pub suspicion_ptos: Option<u32>,
    /// Largest UDP payload the manager sends.
    pub max_udp_payload: u16,
    /// Bidirectional streams the peer may have open at once on a connection (QUIC's
    /// `initial_max_streams_bidi`, raised as streams end). A peer at the limit waits for credit,
    /// as we do for the peer's limit ([`Event::StreamsAvailable`](super::Event::StreamsAvailable)).
    pub max_concurrent_bidi_streams: u32,
    /// Unidirectional streams the peer may have open at once. Default 0, as libp2p-quic's:
    /// libp2p uses bidirectional streams only, and quinn prepares the state of every stream the
    /// peer may open, about 32 bytes each per connection (100 of them were 3.2 KB of an idle
    /// connection's 30 KB). A peer opening one anyway breaks the limit, a connection error.
    pub max_concurrent_uni_streams: u32,
    /// Bytes the peer may send on one stream beyond what the application has read (QUIC's
    /// per-stream flow-control window).
    pub stream_receive_window: u64,
    /// Bytes the peer may send on all streams of a connection together beyond what the
    /// application has read (the connection's flow-control window).
    pub receive_window: u64,
    /// The restart epoch: a second connection from a known PeerId under another certificate key
    /// is a new incarnation of the peer and replaces the old connection at once. Off, such a
    /// connection is treated as one of the same process: the old one is probed first.
    pub restart_epoch: bool,
    /// When a second connection to a peer completes, probe the older one and keep one of the
    /// two (a stale one goes, and of two live ones the tie-break keeps the connection dialed by
    /// the smaller PeerId on both sides). Off, both stay, up to
    /// `Limits::max_connections_per_peer`: what a libp2p Swarm, which manages its connections
    /// itself, expects. A new incarnation (`restart_epoch`) still replaces the old connection.
    pub tie_break: bool,
    /// Whether an `Event::Unresponsive` connection is raced with a fresh dial. Off, the event
    /// is still reported and redialing is left to the application (a libp2p Swarm dials with
    /// `PeerCondition::Always`).
    pub suspicion_redial: bool,
    /// TLS 1.3 session resumption between quicpeer nodes: a reconnect to a peer this node has
    /// been connected to skips both certificates (a pre-shared key from the earlier session,
    /// with a fresh key exchange), and the server's ticket keys derive from the identity (with
    /// [`KeyMode::DerivedFromIdentity`]), so a restarted node resumes its peers' sessions. The
    /// PeerId is read back from the session and checked again on both sides. Stock libp2p
    /// peers keep full handshakes; no 0-RTT.
    pub tls_resumption: bool,
    /// Where the TLS secrets of every connection are logged, in the NSS key log format that
    /// Wireshark reads (`SSLKEYLOGFILE`): for debugging captures, and for tests that need a
    /// connection's 1-RTT keys. Wired into the rustls configurations of both sides (dials and
    /// inbound connections). `None` (the default) logs nothing; `rustls::KeyLogFile` writes to
    /// the file named by `SSLKEYLOGFILE`. Anyone holding these secrets can read and forge the
    /// connection's traffic: never enable it in production.
    pub key_log: Option<Arc<dyn rustls::KeyLog>>,
    /// Replaces TLS with a handshake that has no cryptography at all (feature `fuzzing`;
    /// default `None`, TLS): packets in the clear, no proof that a peer holds its certificate's
    /// key, no key exchange. The libp2p certificates are still exchanged and checked, so
    /// PeerIds and their verdicts work as with TLS. For fuzz harnesses, whose executions would
    /// otherwise be mostly TLS handshakes and whose invented packets would otherwise never get
    /// past decryption; both sides must have it on. Never on a real network. See
    /// [`NullCrypto`](crate::identity::null_crypto::NullCrypto).
    #[cfg(feature = "fuzzing")]
    pub null_crypto: Option<crate::identity::null_crypto::NullCrypto>,
    /// This manager is shard `index` of several on one UDP port (`SO_REUSEPORT`, the mio
    /// driver's `Sharded`): every connection ID it issues names the shard in its first byte,
    /// under the identity's tag, so that a datagram that reaches another shard (its sender's
    /// address changed) is handed to this one instead of drawing a stateless reset
    /// ([`Manager::datagram_shard`](super::Manager::datagram_shard)). Needs restart keys that
    /// every shard shares (`KeyMode::DerivedFromIdentity` or `Explicit`). `None` (the
    /// default): not sharded. [`Config::for_shard`] sets it and splits the limits.
    pub shard: Option<u8>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            keys: KeyMode::default(),
            keep_alive: Some(Duration::from_secs(5)),
            idle_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(5),
            reconnect: ReconnectPolicy::default(),
            limits: Limits::default(),
            stateless_responses: ResponseRate::default(),
            probe_rtts: 3,
            probe_min: Duration::from_millis(10),
            dial_stagger: Duration::from_millis(250),
            suspicion_ptos: Some(3),
            max_udp_payload: 1452,
            // quinn's default.
            max_concurrent_bidi_streams: 100,
            // libp2p-quic's: no unidirectional streams.
            max_concurrent_uni_streams: 0,
            // quinn's defaults: windows for 100 Mbit/s at 100 ms.
            stream_receive_window: 1_250_000,
            receive_window: (1 << 62) - 1,
            restart_epoch: true,
            tie_break: true,
            suspicion_redial: true,
            tls_resumption: true,
            key_log: None,
            #[cfg(feature = "fuzzing")]
            null_crypto: None,
            shard: None,
        }
    }
}

impl Config {
    /// The configuration of shard `index` of `shards` on one port: [`Config::shard`] set, and
    /// the global bounds split between the shards ([`Limits::per_shard`], and the stateless
    /// response rate, which bounds what the node answers to strangers), so that the shards
    /// together hold what one manager with this configuration would. Each shard knows only its own connections: a shard at its
    /// connection limit refuses even while another has room.
    pub fn for_shard(&self, index: u8, shards: u8) -> Config {
        let n = u32::from(shards.max(1));
        let mut config = self.clone();
        config.shard = Some(index);
        config.limits = self.limits.per_shard(shards);
        config.stateless_responses = ResponseRate::new(
            self.stateless_responses.burst.div_ceil(n),
            self.stateless_responses.per_second.div_ceil(n),
        );
        config
    }
}

impl Limits {
    /// These limits split between `shards` managers (each bound divided, rounded up, at least
    /// 1): what each shard of a sharded node gets so that the node as a whole stays within
    /// them. The per-peer bound and the flapping grace stay as they are, and so does the pace
    /// of peer-book dials: it is set to what one core completes, and each shard has a core.
    pub fn per_shard(&self, shards: u8) -> Limits {
        let n = usize::from(shards.max(1));
        let split = |v: usize| v.div_ceil(n).max(1);
        Limits {
            max_connections: split(self.max_connections),
            max_connections_per_peer: self.max_connections_per_peer,
            max_pending_dials: split(self.max_pending_dials),
            max_inbound_handshakes: split(self.max_inbound_handshakes),
            retry_above: self.retry_above.map(|v| v.div_ceil(n)),
            flap_grace: self.flap_grace,
            max_peer_book: split(self.max_peer_book),
            peer_book_dials: self.peer_book_dials,
        }
    }
}
