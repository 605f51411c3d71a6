//! What an operator watches: counters and latency histograms kept by the manager.
//!
//! The manager counts as it goes (a handful of integer additions at the points where
//! connections start, complete, fail and die) and hands out a [`Metrics`] snapshot on request
//! ([`Manager::metrics`](crate::Manager::metrics)). The library exports nothing by itself: a
//! node turns the snapshot into whatever its monitoring reads (the `quicpeer` CLI serves it in
//! the Prometheus text format). Every counter only grows for the manager's lifetime; the
//! connection gauges are read at the time of the snapshot.
//!
//! Labelled counters are [`CountsBy`] over a small enum whose [`Label::as_str`] is the label
//! value an exporter uses, so a new variant appears in every export without exporter changes.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use super::event::{Cause, Direction, HandshakeFailure};

/// The most values a label of [`CountsBy`] may take.
const MAX_LABELS: usize = 16;

/// A label of a [`CountsBy`] counter: an enum whose every value has a name.
pub trait Label: Copy + fmt::Debug + 'static {
    /// Every value, in the order exporters list them.
    const ALL: &'static [Self];
    /// The label's name (`cause`, `direction`, …).
    const NAME: &'static str;
    /// The value as an exporter writes it (snake case).
    fn as_str(self) -> &'static str;
    /// The value's position in [`ALL`](Self::ALL).
    fn index(self) -> usize;
}

/// A counter split by one label.
#[derive(Clone, PartialEq, Eq)]
pub struct CountsBy<K: Label> {
    counts: [u64; MAX_LABELS],
    label: PhantomData<K>,
}

impl<K: Label> Default for CountsBy<K> {
    fn default() -> Self {
        Self {
            counts: [0; MAX_LABELS],
            label: PhantomData,
        }
    }
}

impl<K: Label> CountsBy<K> {
    /// The count for one label value.
    pub fn get(&self, key: K) -> u64 {
        self.counts.get(key.index()).copied().unwrap_or(0)
    }

    /// Every label value with its count, zeros included, in [`Label::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (K, u64)> + '_ {
        K::ALL.iter().map(|k| (*k, self.get(*k)))
    }

    /// All label values together.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub(crate) fn add(&mut self, key: K) {
        if let Some(count) = self.counts.get_mut(key.index()) {
            *count += 1;
        }
    }

    /// Adds another counter's counts, label by label.
    pub fn merge(&mut self, other: &Self) {
        for (count, more) in self.counts.iter_mut().zip(other.counts.iter()) {
            *count = count.saturating_add(*more);
        }
    }
}

impl<K: Label> fmt::Debug for CountsBy<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(
                self.iter()
                    .filter(|(_, n)| *n > 0)
                    .map(|(k, n)| (k.as_str(), n)),
            )
            .finish()
    }
}

/// Defines a label enum: its variants, their names and [`Label`].
macro_rules! label {
    ($(#[$meta:meta])* $name:ident, $label:literal { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
        }

        impl Label for $name {
            const ALL: &'static [Self] = &[$(Self::$variant,)*];
            const NAME: &'static str = $label;
            fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)*
                }
            }
            fn index(self) -> usize {
                self as usize
            }
        }
    };
}

impl Label for Direction {
    const ALL: &'static [Self] = &[Direction::Inbound, Direction::Outbound];
    const NAME: &'static str = "direction";
    fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
    fn index(self) -> usize {
        match self {
            Direction::Inbound => 0,
            Direction::Outbound => 1,
        }
    }
}

label! {
    /// Why a handshake did not complete ([`Metrics::handshakes_failed`]).
    FailureKind, "cause" {
        /// [`HandshakeFailure::TimedOut`].
        TimedOut => "timed_out",
        /// [`HandshakeFailure::Certificate`]: we rejected the peer's certificate.
        Certificate => "certificate",
        /// [`HandshakeFailure::RejectedByPeer`].
        RejectedByPeer => "rejected_by_peer",
        /// [`HandshakeFailure::Unreachable`] (an ICMP error).
        Unreachable => "unreachable",
        /// [`HandshakeFailure::Refused`]: the peer was at a limit.
        Refused => "refused",
        /// [`HandshakeFailure::VersionMismatch`].
        VersionMismatch => "version_mismatch",
        /// [`HandshakeFailure::Local`]: the attempt could not start.
        Local => "local",
        /// [`Cause::PeerIdMismatch`]: the peer proved another identity than the one dialed.
        PeerIdMismatch => "peer_id_mismatch",
        /// The peer answered with a stateless reset before the handshake completed.
        Reset => "reset",
        /// We gave the attempt up: another attempt of the dial won, a limit, a close, or a
        /// transport error.
        Abandoned => "abandoned",
    }
}

impl FailureKind {
    /// The kind of a handshake that ended with `cause`.
    pub fn of(cause: &Cause) -> Self {
        match cause {
            Cause::HandshakeFailed(failure) => match failure {
                HandshakeFailure::TimedOut => Self::TimedOut,
                HandshakeFailure::Certificate(_) => Self::Certificate,
                HandshakeFailure::RejectedByPeer { .. } => Self::RejectedByPeer,
                HandshakeFailure::Unreachable => Self::Unreachable,
                HandshakeFailure::Refused => Self::Refused,
                HandshakeFailure::VersionMismatch => Self::VersionMismatch,
                HandshakeFailure::Local(_) => Self::Local,
            },
            Cause::IdleTimeout => Self::TimedOut,
            Cause::PeerIdMismatch { .. } => Self::PeerIdMismatch,
            Cause::PeerRestarted => Self::Reset,
            _ => Self::Abandoned,
        }
    }
}

label! {
    /// Why an established connection ended ([`Metrics::connections_lost`]); one per
    /// [`Cause`].
    LossKind, "cause" {
        /// [`Cause::PeerRestarted`].
        PeerRestarted => "peer_restarted",
        /// [`Cause::PeerRestarting`].
        PeerRestarting => "peer_restarting",
        /// [`Cause::IdleTimeout`].
        IdleTimeout => "idle_timeout",
        /// [`Cause::ClosedByPeer`].
        ClosedByPeer => "closed_by_peer",
        /// [`Cause::ClosedLocally`].
        ClosedLocally => "closed_locally",
        /// [`Cause::HandshakeFailed`] (after the connection was announced: not expected).
        HandshakeFailed => "handshake_failed",
        /// [`Cause::PeerIdMismatch`].
        PeerIdMismatch => "peer_id_mismatch",
        /// [`Cause::TransportError`].
        TransportError => "transport_error",
        /// [`Cause::Superseded`].
        Superseded => "superseded",
        /// [`Cause::LimitReached`].
        LimitReached => "limit_reached",
        /// A cause added after this list was written.
        Other => "other",
    }
}

impl LossKind {
    /// The kind of `cause`.
    pub fn of(cause: &Cause) -> Self {
        match cause {
            Cause::PeerRestarted => Self::PeerRestarted,
            Cause::PeerRestarting { .. } => Self::PeerRestarting,
            Cause::IdleTimeout => Self::IdleTimeout,
            Cause::ClosedByPeer { .. } => Self::ClosedByPeer,
            Cause::ClosedLocally => Self::ClosedLocally,
            Cause::HandshakeFailed(_) => Self::HandshakeFailed,
            Cause::PeerIdMismatch { .. } => Self::PeerIdMismatch,
            Cause::TransportError { .. } => Self::TransportError,
            Cause::Superseded { .. } => Self::Superseded,
            Cause::LimitReached => Self::LimitReached,
        }
    }
}

label! {
    /// How the manager learned that a peer restarted ([`Metrics::restarts_detected`]).
    RestartSignal, "signal" {
        /// A valid stateless reset ended an established connection.
        StatelessReset => "stateless_reset",
        /// The peer connected with another certificate key under its PeerId (restart epoch).
        Epoch => "epoch",
        /// An established connection went unanswered for the suspicion period.
        Suspicion => "suspicion",
        /// The peer announced its restart ([`Cause::PeerRestarting`]).
        Announced => "announced",
    }
}

label! {
    /// Why the manager dialed a peer again by itself ([`Metrics::redials`]).
    RedialReason, "reason" {
        /// A connection was lost and the reconnect policy asked for a fresh one.
        Reconnect => "reconnect",
        /// An unanswered connection is raced with a fresh dial.
        Suspicion => "suspicion",
    }
}

label! {
    /// What a limit refused ([`Metrics::refusals`]).
    Refusal, "limit" {
        /// An inbound connection at `Limits::max_connections`.
        MaxConnections => "max_connections",
        /// An inbound connection at `Limits::max_inbound_handshakes`.
        MaxInboundHandshakes => "max_inbound_handshakes",
        /// A connection past `Limits::max_connections_per_peer`.
        MaxConnectionsPerPeer => "max_connections_per_peer",
        /// An inbound connection of a flapping peer (`Limits::flap_grace`).
        Flapping => "flapping",
        /// An inbound connection while not accepting ([`Manager::set_accepting`](crate::Manager::set_accepting)).
        NotAccepting => "not_accepting",
        /// An inbound connection during shutdown.
        ShuttingDown => "shutting_down",
        /// A dial at `Limits::max_pending_dials`.
        MaxPendingDials => "max_pending_dials",
        /// A dial at `Limits::max_connections`.
        DialConnectionLimit => "dial_connection_limit",
    }
}

/// Upper bounds of the [`Histogram`] buckets, in milliseconds: from one loopback round trip to
/// an idle timeout.
const BUCKETS_MS: [u64; 15] = [
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 30_000, 60_000,
];

/// A latency distribution in fixed buckets (1 ms to 60 s, and above), as Prometheus keeps one.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Histogram {
    /// Observations per bucket; the last one holds those above the largest bound.
    counts: [u64; BUCKETS_MS.len() + 1],
    sum: Duration,
    count: u64,
}

impl Histogram {
    pub(crate) fn observe(&mut self, value: Duration) {
        let bucket = BUCKETS_MS
            .iter()
            .position(|bound| value <= Duration::from_millis(*bound))
            .unwrap_or(BUCKETS_MS.len());
        if let Some(c) = self.counts.get_mut(bucket) {
            *c += 1;
        }
        self.sum = self.sum.saturating_add(value);
        self.count += 1;
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Adds another histogram's observations (bucket by bucket, sum and count).
    pub fn merge(&mut self, other: &Self) {
        for (count, more) in self.counts.iter_mut().zip(other.counts.iter()) {
            *count = count.saturating_add(*more);
        }
        self.sum = self.sum.saturating_add(other.sum);
        self.count = self.count.saturating_add(other.count);
    }

    /// The sum of every observation.
    pub fn sum(&self) -> Duration {
        self.sum
    }

    /// Each bucket's upper bound (`None` for the last, unbounded one) and the observations in
    /// it alone (not cumulative).
    pub fn buckets(&self) -> impl Iterator<Item = (Option<Duration>, u64)> + '_ {
        let bounds = BUCKETS_MS
            .iter()
            .map(|ms| Some(Duration::from_millis(*ms)))
            .chain(std::iter::once(None));
        bounds.zip(self.counts.iter().copied())
    }

    /// The upper bound of the bucket that holds the `q` quantile (0.0 to 1.0), `None` when
    /// empty or when it falls in the unbounded bucket. A bucket bound, not an interpolation.
    pub fn quantile_bound(&self, q: f64) -> Option<Duration> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (bound, n) in self.buckets() {
            seen += n;
            if seen >= rank {
                return bound;
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_observation_lands_in_the_first_bucket_whose_bound_holds_it() {
        let mut h = Histogram::default();
        h.observe(Duration::from_micros(1_840)); // above 1 ms: the 2 ms bucket
        h.observe(Duration::from_millis(2)); // a bound is inclusive
        h.observe(Duration::from_secs(61)); // past the last bound
        let counts: Vec<_> = h.buckets().filter(|(_, n)| *n > 0).collect();
        assert_eq!(
            counts,
            [(Some(Duration::from_millis(2)), 2), (None, 1)],
            "{h:?}"
        );
        assert_eq!(h.count(), 3);
        assert_eq!(h.sum(), Duration::from_micros(61_003_840));
        assert_eq!(h.quantile_bound(0.5), Some(Duration::from_millis(2)));
        assert_eq!(h.quantile_bound(1.0), None);
        assert_eq!(Histogram::default().quantile_bound(0.5), None);
    }

    #[test]
    fn merged_metrics_add_counters_gauges_and_histograms() {
        let mut a = Metrics {
            established: 2,
            peers_connected: 2,
            stateless_resets_sent: 5,
            ..Metrics::default()
        };
        a.handshakes_started.add(Direction::Inbound);
        a.handshake_latency.observe(Duration::from_millis(3));
        let mut b = Metrics {
            established: 1,
            peers_connected: 1,
            ..Metrics::default()
        };
        b.handshakes_started.add(Direction::Inbound);
        b.handshakes_started.add(Direction::Outbound);
        b.handshake_latency.observe(Duration::from_millis(40));
        b.handshake_latency.observe(Duration::from_secs(90));

        let mut node = a.clone();
        node.merge(&b);
        assert_eq!(node.established, 3);
        assert_eq!(node.peers_connected, 3);
        assert_eq!(node.stateless_resets_sent, 5);
        assert_eq!(node.handshakes_started.get(Direction::Inbound), 2);
        assert_eq!(node.handshakes_started.get(Direction::Outbound), 1);
        assert_eq!(node.handshake_latency.count(), 3);
        assert_eq!(node.handshake_latency.sum(), Duration::from_millis(90_043));
        let buckets: Vec<_> = node
            .handshake_latency
            .buckets()
            .filter(|(_, n)| *n > 0)
            .collect();
        assert_eq!(
            buckets,
            [
                (Some(Duration::from_millis(5)), 1),
                (Some(Duration::from_millis(50)), 1),
                (None, 1)
            ]
        );
        // Merging nothing changes nothing.
        let before = node.clone();
        node.merge(&Metrics::default());
        assert_eq!(node, before);
    }
}

impl fmt::Debug for Histogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.count)
            .field("sum", &self.sum)
            .field("p50_bound", &self.quantile_bound(0.5))
            .field("p99_bound", &self.quantile_bound(0.99))
            .finish()
    }
}

/// A snapshot of what the manager has counted ([`Manager::metrics`](crate::Manager::metrics)).
/// Counters grow for the manager's lifetime; the gauges are read when the snapshot is taken.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Metrics {
    /// Gauge: connections in their handshake.
    pub handshaking: u64,
    /// Gauge: established connections.
    pub established: u64,
    /// Gauge: connections closed and draining (they hold no slot).
    pub draining: u64,
    /// Gauge: peers with at least one established connection.
    pub peers_connected: u64,
    /// Handshakes started, by who dialed.
    pub handshakes_started: CountsBy<Direction>,
    /// Handshakes completed with a verified PeerId, by who dialed.
    pub handshakes_completed: CountsBy<Direction>,
    /// Handshakes that resumed an earlier TLS session (no certificates), by who dialed; a
    /// subset of those started (and, if the session checks out, of those completed).
    pub handshakes_resumed: CountsBy<Direction>,
    /// Handshakes that did not complete, by why.
    pub handshakes_failed: CountsBy<FailureKind>,
    /// Established connections that ended, by why.
    pub connections_lost: CountsBy<LossKind>,
    /// Restarts of peers noticed, by how.
    pub restarts_detected: CountsBy<RestartSignal>,
    /// Stateless resets sent: answers to packets of connections this node no longer has
    /// (after its own restart, these are what tell its peers).
    pub stateless_resets_sent: u64,
    /// Valid stateless resets received, on any connection.
    pub stateless_resets_received: u64,
    /// Retry packets sent to validate a client's address (`Limits::retry_above`).
    pub retries_sent: u64,
    /// Stateless responses dropped by their rate limit (`Config::stateless_responses`).
    pub responses_dropped: u64,
    /// Dials the manager started by itself, by why.
    pub redials: CountsBy<RedialReason>,
    /// Connections and dials refused to stay within a limit, by the limit.
    pub refusals: CountsBy<Refusal>,
    /// From a connection's first packet to its verified handshake.
    pub handshake_latency: Histogram,
    /// From losing a peer's last connection to a dead peer (a reset, a silence, an announced
    /// restart) to the next established connection with it: how long the peer was cut off.
    pub recovery_latency: Histogram,
}

impl Metrics {
    /// Adds another manager's metrics to these: what a node of several managers reports, such
    /// as the shards of [`driver::Sharded`](crate::driver::Sharded) behind one port, each of
    /// which counts only its own connections. Counters and histograms add up exactly, and so do
    /// the connection gauges (a connection lives in one shard). `peers_connected` adds up too,
    /// which counts a peer connected through two shards twice: an upper bound.
    ///
    /// ```
    /// # use quicpeer::Metrics;
    /// let shards = [Metrics::default(), Metrics::default()];
    /// let mut node = Metrics::default();
    /// for shard in &shards {
    ///     node.merge(shard);
    /// }
    /// assert_eq!(node, Metrics::default());
    /// ```
    pub fn merge(&mut self, other: &Metrics) {
        // Destructured, so that a new field cannot be forgotten here.
        let Metrics {
            handshaking,
            established,
            draining,
            peers_connected,
            handshakes_started,
            handshakes_completed,
            handshakes_resumed,
            handshakes_failed,
            connections_lost,
            restarts_detected,
            stateless_resets_sent,
            stateless_resets_received,
            retries_sent,
            responses_dropped,
            redials,
            refusals,
            handshake_latency,
            recovery_latency,
        } = other;
        for (mine, theirs) in [
            (&mut self.handshaking, handshaking),
            (&mut self.established, established),
            (&mut self.draining, draining),
            (&mut self.peers_connected, peers_connected),
            (&mut self.stateless_resets_sent, stateless_resets_sent),
            (
                &mut self.stateless_resets_received,
                stateless_resets_received,
            ),
            (&mut self.retries_sent, retries_sent),
            (&mut self.responses_dropped, responses_dropped),
        ] {
            *mine = mine.saturating_add(*theirs);
        }
        self.handshakes_started.merge(handshakes_started);
        self.handshakes_completed.merge(handshakes_completed);
        self.handshakes_resumed.merge(handshakes_resumed);
        self.handshakes_failed.merge(handshakes_failed);
        self.connections_lost.merge(connections_lost);
        self.restarts_detected.merge(restarts_detected);
        self.redials.merge(redials);
        self.refusals.merge(refusals);
        self.handshake_latency.merge(handshake_latency);
        self.recovery_latency.merge(recovery_latency);
    }
}
