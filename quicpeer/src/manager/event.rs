//! What the manager tells its user: handles, events, and why connections die.

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libp2p_identity::PeerId;

use crate::identity::CertificateError;

/// An opaque handle of one QUIC connection. Never reused within a manager's lifetime, so an old
/// handle can never name a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub(crate) u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}", self.0)
    }
}

/// An opaque handle of one stream on one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId {
    pub(crate) conn: ConnId,
    pub(crate) id: quinn_proto::StreamId,
}

impl StreamId {
    /// The connection the stream belongs to.
    pub fn conn(&self) -> ConnId {
        self.conn
    }

    /// Whether the stream carries data both ways.
    pub fn is_bidirectional(&self) -> bool {
        self.id.dir() == quinn_proto::Dir::Bi
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/s{}", self.conn, self.id.index())
    }
}

/// Who opened a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// We dialed.
    Outbound,
    /// The peer dialed us.
    Inbound,
}

/// Why a handshake did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeFailure {
    /// No complete handshake within `Config::handshake_timeout` (or the idle timeout).
    #[error("handshake timed out")]
    TimedOut,
    /// We rejected the peer's certificate.
    #[error("peer certificate rejected: {0}")]
    Certificate(CertificateError),
    /// The peer aborted the handshake (for instance it rejected our certificate); `code` is the
    /// QUIC transport error code (0x100 + TLS alert for crypto errors).
    #[error("rejected by peer: code {code:#x} {reason}")]
    RejectedByPeer {
        /// QUIC transport error code.
        code: u64,
        /// The peer's reason phrase.
        reason: String,
    },
    /// The network reported the address unreachable (an ICMP error), so the attempt failed
    /// without waiting for the handshake timeout.
    #[error("address unreachable")]
    Unreachable,
    /// The peer refused the connection (`CONNECTION_REFUSED`), typically at a limit.
    #[error("refused by peer")]
    Refused,
    /// The peer speaks no QUIC version we do.
    #[error("no common QUIC version")]
    VersionMismatch,
    /// The attempt could not start on our side: nothing was sent.
    #[error("could not start: {0}")]
    Local(ConnectFailure),
}

/// Why a dial attempt could not start on our side.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectFailure {
    /// The address cannot be dialed (an unspecified address or port 0).
    #[error("address cannot be dialed")]
    InvalidAddress,
    /// The endpoint has no connection IDs left for another connection.
    #[error("connection IDs exhausted")]
    ConnectionIdsExhausted,
    /// The TLS configuration offers no cipher suite QUIC can start with.
    #[error("the TLS configuration lacks a QUIC initial cipher suite")]
    NoQuicCipherSuite,
    /// The endpoint is shutting down.
    #[error("endpoint stopping")]
    EndpointStopping,
    /// A refusal of quinn's that quicpeer's configuration should never meet (server name,
    /// version, client configuration): a bug, reported rather than hidden.
    #[error("quinn refused the connection: {0}")]
    Refused(String),
}

/// Why a connection ended or a dial attempt failed. Match on it to decide what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Cause {
    /// The peer restarted and lost the connection's state: it answered with a valid stateless
    /// reset (the manager then redials at once when `ReconnectPolicy::on_restart` is set), or it
    /// connected again as a new incarnation, with another certificate key under the same
    /// PeerId (the new connection, announced with `replaced: Some(..)`, takes over at once).
    #[error("peer restarted (stateless reset)")]
    PeerRestarted,
    /// The peer closed the connection because it is about to restart
    /// ([`Manager::close_all_restarting`](crate::Manager::close_all_restarting)); it expects to
    /// be back within `expected_downtime` (at most a minute is believed). A peer we dialed is
    /// redialed on a short schedule until it answers.
    #[error("peer restarting (back within {expected_downtime:?})")]
    PeerRestarting {
        /// How long the peer said it would be away.
        expected_downtime: Duration,
    },
    /// Nothing was heard from the peer for the idle timeout.
    #[error("idle timeout")]
    IdleTimeout,
    /// The peer's application closed the connection.
    #[error("closed by peer: code {code} {reason:?}")]
    ClosedByPeer {
        /// Application error code.
        code: u64,
        /// The peer's reason phrase.
        reason: String,
    },
    /// We closed it (`Manager::close`, or shutdown).
    #[error("closed locally")]
    ClosedLocally,
    /// The handshake failed.
    #[error("handshake failed: {0}")]
    HandshakeFailed(HandshakeFailure),
    /// The peer proved an identity other than the one dialed.
    #[error("peer id mismatch: expected {expected}, got {actual}")]
    PeerIdMismatch {
        /// The PeerId dialed.
        expected: PeerId,
        /// The PeerId the peer's certificate proves.
        actual: PeerId,
    },
    /// A QUIC protocol violation, detected by us or reported by the peer.
    #[error("transport error {code:#x}: {reason}")]
    TransportError {
        /// QUIC transport error code.
        code: u64,
        /// Reason phrase.
        reason: String,
    },
    /// Replaced by a newer connection to the same peer (make-before-break, simultaneous dial).
    #[error("superseded{}", by.map(|c| format!(" by {c}")).unwrap_or_default())]
    Superseded {
        /// The connection that took over, when known on this side.
        by: Option<ConnId>,
    },
    /// Closed to stay within `Config::limits`.
    #[error("connection limit reached")]
    LimitReached,
}

/// Something the manager has to tell its user. Drain with `Manager::poll_event`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A connection completed its handshake and the peer's identity is verified.
    Connected {
        /// The verified peer.
        peer: PeerId,
        /// The new connection.
        conn: ConnId,
        /// The peer's address on this connection.
        addr: SocketAddr,
        /// Who dialed.
        direction: Direction,
        /// The connection this one takes over from (a reconnect after a loss, or a replacement).
        replaced: Option<ConnId>,
    },
    /// An established connection ended. Its slot is already free.
    ConnectionLost {
        /// The peer.
        peer: PeerId,
        /// The connection; it will never carry another byte.
        conn: ConnId,
        /// The peer's address on this connection.
        addr: SocketAddr,
        /// Why.
        cause: Cause,
        /// Streams that were still open: what the application may need to resend.
        unfinished_streams: Vec<StreamId>,
    },
    /// The manager started a fresh connection to a peer it lost.
    Reconnecting {
        /// The peer.
        peer: PeerId,
        /// The connection that was lost.
        lost: ConnId,
        /// Attempt number, from 1.
        attempt: u32,
    },
    /// An established connection has had no answer for the suspicion period: the peer may have
    /// restarted without resetting it. A fresh dial now races it; if it wins, `Connected` with
    /// `replaced: Some(conn)` follows and this connection ends as `Superseded`. If the dial
    /// finds the peer's port closed (it is still restarting), it is tried again with the
    /// reconnect policy's backoff while the silence lasts; this event is not repeated.
    Unresponsive {
        /// The peer.
        peer: PeerId,
        /// The silent connection, still in use until its successor is verified.
        conn: ConnId,
        /// Since when our ack-eliciting packets went unanswered.
        since: Instant,
    },
    /// Every address of a dial failed.
    DialFailed {
        /// The peer.
        peer: PeerId,
        /// Each address tried, with its own error.
        errors: Vec<(SocketAddr, Cause)>,
        /// When a reconnect will try again, if it will.
        retry_at: Option<Instant>,
    },
    /// A connection started with [`Manager::connect`](crate::Manager::connect) ended before it
    /// was established (a connection that was is reported by `ConnectionLost`).
    ConnectFailed {
        /// The connection.
        conn: ConnId,
        /// The address it was started to.
        addr: SocketAddr,
        /// Why.
        cause: Cause,
    },
    /// The peer opened a stream.
    StreamOpened {
        /// The peer.
        peer: PeerId,
        /// The new stream.
        stream: StreamId,
    },
    /// A stream has data (or its end, or a reset) to read. Never reported for a stream the
    /// application has already read to its end or reset, or stopped ([`Manager::poll_event`](crate::Manager::poll_event)
    /// drops one queued before that read).
    StreamReadable {
        /// The stream.
        stream: StreamId,
    },
    /// The peer raised its limit on the streams we may open on `conn`: an
    /// [`open_stream`](crate::Manager::open_stream) that failed with [`StreamError::Limit`]
    /// may succeed now. (quinn's `StreamEvent::Available` for bidirectional streams, the only
    /// kind the manager opens.)
    StreamsAvailable {
        /// The peer.
        peer: PeerId,
        /// The connection whose limit was raised.
        conn: ConnId,
    },
    /// A stream that was blocked on flow control can take more data.
    StreamWritable {
        /// The stream.
        stream: StreamId,
    },
    /// All data written on a finished stream was acknowledged.
    StreamFinished {
        /// The stream.
        stream: StreamId,
    },
    /// The peer asked us to stop sending on a stream.
    StreamStopped {
        /// The stream.
        stream: StreamId,
        /// The peer's error code.
        code: u64,
    },
}

/// A datagram to send. Its payload is in the buffer given to `Manager::poll_transmit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it.
    pub destination: SocketAddr,
    /// Payload length in the buffer.
    pub size: usize,
    /// With segmentation offload: the size of each datagram in the payload.
    pub segment_size: Option<usize>,
    /// The local IP to send from, when it matters.
    pub src_ip: Option<std::net::IpAddr>,
    /// ECN codepoint bits to set (RFC 3168), if any.
    pub ecn: Option<u8>,
    /// The connection it belongs to; `None` for stateless responses such as resets.
    pub conn: Option<ConnId>,
}

/// Why a dial could not be started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DialError {
    /// No address given, and none known for the peer.
    #[error("no address to dial")]
    NoAddresses,
    /// `Limits::max_pending_dials` dials are already in progress.
    #[error("too many pending dials")]
    TooManyPendingDials,
    /// The attempt could not start on our side ([`Manager::connect`](crate::Manager::connect)).
    #[error("could not start: {0}")]
    Local(ConnectFailure),
    /// `Limits::max_connections` connections exist already.
    #[error("connection limit reached")]
    ConnectionLimit,
    /// A peer cannot dial itself.
    #[error("cannot dial our own PeerId")]
    SelfDial,
    /// `close_all` was called: the manager is shutting down.
    #[error("shutting down")]
    ShuttingDown,
    /// `redial` needs a connected peer.
    #[error("peer not connected")]
    NotConnected,
}

/// How a dial request was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialOutcome {
    /// A new dial started.
    Started,
    /// A dial to this peer was in progress; its addresses were merged in.
    Joined,
    /// The peer is connected already; nothing was started.
    AlreadyConnected(ConnId),
}

/// Errors of stream operations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The connection is unknown or no longer established.
    #[error("no such connection")]
    UnknownConnection,
    /// The peer is not connected.
    #[error("peer not connected")]
    NotConnected,
    /// The stream is closed or was never open.
    #[error("stream closed")]
    Closed,
    /// The peer's limit on concurrent streams is reached: try again after
    /// [`Event::StreamsAvailable`] for the connection, which comes when the peer allows more
    /// (usually as streams it had accepted end).
    #[error("stream limit reached")]
    Limit,
    /// Flow control: try again after `StreamWritable` / `StreamReadable`.
    #[error("blocked")]
    Blocked,
    /// The peer stopped the stream (on write) or reset it (on read) with this code.
    #[error("stopped or reset by peer with code {0}")]
    Reset(u64),
    /// An application error code above [`MAX_APP_CODE`](crate::manager::MAX_APP_CODE), which
    /// QUIC cannot carry.
    #[error("application error code {0} is above 2^62 - 1")]
    CodeOutOfRange(u64),
    /// A write, finish or reset on a unidirectional stream the peer opened: it only carries
    /// data to us. (libp2p uses bidirectional streams only; a peer may open unidirectional
    /// ones anyway, up to `Config::max_concurrent_uni_streams`.) Read it, or stop it.
    #[error("the peer's unidirectional stream has no sending half")]
    ReceiveOnly,
}

/// What one connection has sent, received and lost so far ([`Manager::stats`](crate::Manager::stats)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ConnectionStats {
    /// The smoothed round-trip time.
    pub rtt: Duration,
    /// The congestion window, in bytes.
    pub congestion_window: u64,
    /// The path's maximum datagram size in use.
    pub mtu: u16,
    /// UDP datagrams sent.
    pub datagrams_sent: u64,
    /// System calls (transmits) those datagrams went out in; fewer than the datagrams where
    /// a driver batches them (segmentation offload).
    pub transmits: u64,
    /// UDP payload bytes sent.
    pub bytes_sent: u64,
    /// UDP datagrams received.
    pub datagrams_received: u64,
    /// UDP payload bytes received.
    pub bytes_received: u64,
    /// Packets declared lost.
    pub lost_packets: u64,
    /// Bytes in the packets declared lost.
    pub lost_bytes: u64,
    /// Times the congestion controller backed off.
    pub congestion_events: u64,
}

impl ConnectionStats {
    pub(crate) fn from_quinn(rtt: Duration, stats: &quinn_proto::ConnectionStats) -> Self {
        Self {
            rtt,
            congestion_window: stats.path.cwnd,
            mtu: stats.path.current_mtu,
            datagrams_sent: stats.udp_tx.datagrams,
            transmits: stats.udp_tx.ios,
            bytes_sent: stats.udp_tx.bytes,
            datagrams_received: stats.udp_rx.datagrams,
            bytes_received: stats.udp_rx.bytes,
            lost_packets: stats.path.lost_packets,
            lost_bytes: stats.path.lost_bytes,
            congestion_events: stats.path.congestion_events,
        }
    }
}

/// What a read returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// Bytes, in order.
    Data(bytes::Bytes),
    /// The peer finished the stream; nothing more will come.
    Finished,
}

/// What one `Manager::stream_read_chunks` call read, and why it stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunksRead {
    /// Bytes appended to the output, at most the call's `max_bytes`.
    pub bytes: usize,
    /// Why the call stopped reading.
    pub status: ReadStatus,
}

/// Where a stream stands after `Manager::stream_read_chunks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadStatus {
    /// Everything received so far was read and the stream is still open: wait for the next
    /// `Event::StreamReadable`.
    Blocked,
    /// `max_bytes` were read and more may be waiting: call again (which may read nothing and
    /// report `Blocked` or `Finished`).
    BudgetReached,
    /// The peer finished the stream and all of it has been read: nothing more will come, and
    /// further reads fail with `StreamError::Closed`.
    Finished,
}
