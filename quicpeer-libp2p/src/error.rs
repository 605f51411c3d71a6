//! [`Error`]: what the transport and its connections fail with. It exists so that a Swarm's
//! `io::Error`s (a muxer's error reaches `SwarmEvent::ConnectionClosed` wrapped in one) still
//! say *why* in quicpeer's terms: [`cause_of`] digs out the [`Cause`], and a peer restart reads
//! as [`Cause::PeerRestarted`].

use std::io;
use std::net::SocketAddr;

use libp2p_identity::PeerId;
use quicpeer::Cause;
use quicpeer_tokio::ConnectError;

/// Why the transport, a dial or a connection failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A socket could not be bound or set up.
    #[error("socket: {0}")]
    Io(#[from] io::Error),
    /// The transport was used outside a tokio runtime (it spawns one driver task per socket).
    #[error("quicpeer-libp2p needs a tokio runtime")]
    NoRuntime,
    /// The dialed address answered with another PeerId than the `/p2p/` of the address.
    #[error("peer id mismatch: dialed {expected}, the peer proved {actual}")]
    PeerIdMismatch {
        /// The PeerId of the dialed address.
        expected: PeerId,
        /// The PeerId the peer's certificate proves.
        actual: PeerId,
        /// The same, as quicpeer's [`Cause::PeerIdMismatch`]: the error's source, so that
        /// [`cause_of`] finds it behind wrappers that hide this error but not its source (the
        /// Swarm's `Either` of transports).
        #[source]
        cause: Cause,
    },
    /// The dial's handshake failed (timeout, refused, unreachable, ...).
    #[error("dial of {addr} failed: {cause}")]
    HandshakeFailed {
        /// The address dialed.
        addr: SocketAddr,
        /// Why.
        #[source]
        cause: Cause,
    },
    /// The dial could not start (a limit, our own PeerId, the endpoint stopping).
    #[error("dial not started: {0}")]
    Dial(ConnectError),
    /// The connection ended; [`Cause::PeerRestarted`] when the peer restarted (a stateless
    /// reset from its new incarnation).
    #[error("connection lost: {0}")]
    ConnectionLost(#[source] Cause),
    /// A hole punch (a dial in the `Endpoint::Listener` role) needs a listening socket of the
    /// address family to punch from and to be dialed at; there is none.
    #[error("no listener to hole-punch from")]
    NoListenerForHolePunch,
    /// A hole punch to this address is already in progress.
    #[error("hole punch to {0} already in progress")]
    HolePunchInProgress(SocketAddr),
    /// The peer's connection did not come in within the handshake timeout of the hole punch.
    #[error("hole punch timed out")]
    HolePunchTimedOut,
    /// The endpoint behind the connection or listener stopped.
    #[error("endpoint closed")]
    EndpointClosed,
}

impl Error {
    /// Why the connection or dial ended, in quicpeer's terms, when known.
    pub fn cause(&self) -> Option<&Cause> {
        match self {
            Error::ConnectionLost(cause)
            | Error::PeerIdMismatch { cause, .. }
            | Error::HandshakeFailed { cause, .. } => Some(cause),
            _ => None,
        }
    }

    pub(crate) fn from_connect(error: ConnectError) -> Self {
        match error {
            ConnectError::Failed {
                cause: cause @ Cause::PeerIdMismatch { expected, actual },
                ..
            } => Error::PeerIdMismatch {
                expected,
                actual,
                cause,
            },
            ConnectError::Failed { addr, cause } => Error::HandshakeFailed { addr, cause },
            ConnectError::EndpointClosed => Error::EndpointClosed,
            other => Error::Dial(other),
        }
    }
}

/// The quicpeer [`Cause`] inside an error of this transport, however the Swarm wrapped it:
/// for the `io::Error` of `SwarmEvent::ConnectionClosed { cause: Some(ConnectionError::IO(e)) }`
/// pass `&e`. A peer restart is `Some(Cause::PeerRestarted)`.
pub fn cause_of<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a Cause> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(ours) = e.downcast_ref::<Error>() {
            if let Some(cause) = ours.cause() {
                return Some(cause);
            }
        }
        if let Some(cause) = e.downcast_ref::<Cause>() {
            return Some(cause);
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if let Some(inner) = io.get_ref() {
                let inner: &(dyn std::error::Error + 'static) = inner;
                if let Some(cause) = cause_of(inner) {
                    return Some(cause);
                }
            }
        }
        next = e.source();
    }
    None
}
