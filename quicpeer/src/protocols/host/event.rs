//! What a [`Host`](super::Host) reports, and why its commands and streams fail.

use std::time::Duration;

use bytes::Bytes;

use crate::address::AddressError;
use crate::protocols::multistream::{MultistreamError, ProtocolNameError};
use crate::protocols::ping::PingError;
use crate::{Cause, ConnId, DialError, Event, PeerId, StreamError, StreamId};

/// Why a stream the host worked on for the application (a negotiation or a ping) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamFailure {
    /// The peer supports none of the protocols proposed (it answered `na` to each).
    #[error("peer supports none of {proposed:?}")]
    Unsupported {
        /// The protocols proposed, in order.
        proposed: Vec<String>,
    },
    /// The peer broke multistream-select, or ended the stream during it.
    #[error("negotiation failed: {0}")]
    Negotiation(MultistreamError),
    /// The peer's ping echo was wrong.
    #[error("ping failed: {0}")]
    Ping(PingError),
    /// The stream failed: the peer reset or stopped it, or finished it too early.
    #[error("stream failed: {0}")]
    Stream(StreamError),
    /// The connection died; a reconnect, if any, is reported by the manager's events.
    #[error("connection lost: {0}")]
    ConnectionLost(Cause),
    /// No answer in time (see [`HostConfig`](super::HostConfig)): the negotiation or the ping
    /// took longer than its timeout.
    #[error("timed out")]
    TimedOut,
}

/// Why [`Host::open_stream`](super::Host::open_stream) could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// No established connection to the peer: dial it first.
    #[error("peer not connected")]
    NotConnected,
    /// A protocol name cannot be proposed.
    #[error(transparent)]
    InvalidProtocol(#[from] ProtocolNameError),
    /// The stream could not be opened. (Never [`StreamError::Limit`]: the host waits for the
    /// peer's credit instead.)
    #[error(transparent)]
    Stream(#[from] StreamError),
}

/// Why [`Host::ping`](super::Host::ping) could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PingStartError {
    /// No established connection to the peer: dial it first.
    #[error("peer not connected")]
    NotConnected,
    /// A ping to this peer is in flight; wait for its result.
    #[error("a ping is already in flight")]
    InFlight,
    /// The ping stream could not be opened. (Never [`StreamError::Limit`]: the host waits for
    /// the peer's credit instead.)
    #[error(transparent)]
    Stream(#[from] StreamError),
}

/// Why [`Host::dial_addrs`](super::Host::dial_addrs) could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DialAddrsError {
    /// An address is not a dialable libp2p QUIC multiaddr, or they disagree on the peer.
    #[error(transparent)]
    Address(#[from] AddressError),
    /// The manager refused the dial.
    #[error(transparent)]
    Dial(#[from] DialError),
}

/// Names one [`Host::open_stream`](super::Host::open_stream) request in the events that
/// report its outcome. The stream itself may be opened later than the call: when the peer's
/// stream limit is reached, the host waits for the peer's credit and opens it then.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OutboundId(pub(crate) u64);

impl std::fmt::Display for OutboundId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "o{}", self.0)
    }
}

/// What the host tells its application. Drain with
/// [`SansIo::poll_event`](crate::SansIo::poll_event).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HostEvent {
    /// An event of the manager: connections, dials, and the streams of the application.
    ///
    /// Never `StreamOpened` (the host negotiates every inbound stream and reports it as
    /// [`HostEvent::InboundStream`]), and never an event of a stream the host holds. The
    /// `unfinished_streams` of a `ConnectionLost` list only the application's streams.
    Manager(Event),
    /// The peer opened a stream and negotiated a registered protocol; the stream is now the
    /// application's. A `Manager(StreamReadable)` for it follows at once, since more bytes may
    /// be waiting: read until `Err(Blocked)`.
    InboundStream {
        /// The peer.
        peer: PeerId,
        /// The stream.
        stream: StreamId,
        /// The protocol agreed.
        protocol: String,
        /// Bytes that arrived after the negotiation: the first application data.
        leftover: Bytes,
    },
    /// A stream opened with [`open_stream`](super::Host::open_stream) agreed on a protocol; it
    /// is now the application's. A `Manager(StreamReadable)` for it follows, as for inbound
    /// streams.
    OutboundStream {
        /// The peer.
        peer: PeerId,
        /// The request, as `open_stream` returned it.
        id: OutboundId,
        /// The stream.
        stream: StreamId,
        /// The protocol agreed: the first of the proposals the peer supports.
        protocol: String,
        /// Bytes that arrived after the negotiation.
        leftover: Bytes,
    },
    /// A stream opened with [`open_stream`](super::Host::open_stream) failed; the host has
    /// reset it.
    OutboundFailed {
        /// The peer.
        peer: PeerId,
        /// The request, as `open_stream` returned it.
        id: OutboundId,
        /// The stream, if it was opened (not while it waited for the peer's stream credit).
        stream: Option<StreamId>,
        /// Why.
        error: StreamFailure,
    },
    /// A ping's echo came back.
    PingResult {
        /// The peer.
        peer: PeerId,
        /// The connection pinged.
        conn: ConnId,
        /// From writing the payload to reading its echo.
        rtt: Duration,
    },
    /// A ping failed.
    PingFailed {
        /// The peer.
        peer: PeerId,
        /// The connection pinged.
        conn: ConnId,
        /// Why.
        error: StreamFailure,
    },
}
