//! What a [`Relay`](super::Relay) reports.

use std::fmt;
use std::net::SocketAddr;
use std::time::Instant;

use super::codec::{CodecError, Status};
use crate::protocols::HostEvent;
use crate::{Cause, ConnId, PeerId};

/// Names one circuit in the events that report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CircuitId(pub(crate) u64);

impl fmt::Display for CircuitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "circuit{}", self.0)
    }
}

/// Why a reservation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FreeCause {
    /// The connection that made it died (its slot stays held for the grace period).
    ConnectionLost(Cause),
    /// Its time ran out without a refresh.
    Expired,
}

impl fmt::Display for FreeCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FreeCause::ConnectionLost(cause) => write!(f, "connection lost: {cause}"),
            FreeCause::Expired => f.write_str("expired"),
        }
    }
}

/// Which end of a circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The peer that sent CONNECT.
    Source,
    /// The peer it reached.
    Destination,
}

/// Why a circuit ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CircuitEnd {
    /// Both ends finished their side.
    Done,
    /// An end reset or stopped its stream.
    Reset(End),
    /// An end's connection died.
    ConnectionLost(End, Cause),
    /// The circuit reached its duration limit.
    DurationLimit,
    /// The circuit reached its data limit in a direction.
    DataLimit,
}

impl fmt::Display for CircuitEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CircuitEnd::Done => f.write_str("done"),
            CircuitEnd::Reset(end) => write!(f, "reset by {end:?}"),
            CircuitEnd::ConnectionLost(end, cause) => {
                write!(f, "{end:?} connection lost: {cause}")
            }
            CircuitEnd::DurationLimit => f.write_str("duration limit"),
            CircuitEnd::DataLimit => f.write_str("data limit"),
        }
    }
}

/// What the relay tells its application. Drain with
/// [`SansIo::poll_event`](crate::SansIo::poll_event).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RelayEvent {
    /// An event of the host the relay did not consume: connections, pings, the streams of
    /// other protocols.
    Host(HostEvent),
    /// A reservation was granted (or refreshed).
    ReservationAccepted {
        /// The client.
        peer: PeerId,
        /// The connection it lives on.
        conn: ConnId,
        /// The client's address on it.
        addr: Option<SocketAddr>,
        /// When it expires unless refreshed.
        expires: Instant,
        /// A refresh of a reservation on the same connection.
        renewed: bool,
        /// It took back the slot its peer held from a connection that died within the
        /// grace period.
        reclaimed: bool,
    },
    /// A RESERVE was refused.
    ReservationRefused {
        /// The client.
        peer: PeerId,
        /// Its connection.
        conn: ConnId,
        /// The status sent.
        status: Status,
    },
    /// A reservation ended.
    ReservationFreed {
        /// The client.
        peer: PeerId,
        /// The connection it lived on.
        conn: ConnId,
        /// Why.
        cause: FreeCause,
    },
    /// A CONNECT was refused, or the target could not be reached.
    CircuitRefused {
        /// Who asked.
        src: PeerId,
        /// The target.
        dst: PeerId,
        /// The status sent.
        status: Status,
    },
    /// A circuit was set up.
    CircuitOpened {
        /// The circuit.
        id: CircuitId,
        /// Who asked.
        src: PeerId,
        /// The target.
        dst: PeerId,
    },
    /// A circuit ended.
    CircuitClosed {
        /// The circuit.
        id: CircuitId,
        /// Who asked.
        src: PeerId,
        /// The target.
        dst: PeerId,
        /// Bytes relayed from source to destination.
        to_dst: u64,
        /// Bytes relayed from destination to source.
        to_src: u64,
        /// Why.
        reason: CircuitEnd,
    },
    /// A hop request that could not be served as a request: malformed, over the size limit,
    /// of an unexpected type, or cut short.
    BadRequest {
        /// The client.
        peer: PeerId,
        /// What was wrong.
        error: CodecError,
        /// The status answered, or `None` when the stream was reset.
        status: Option<Status>,
    },
}
