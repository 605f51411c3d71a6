//! libp2p's stream protocols, sans-IO, on top of the [`Manager`](crate::Manager).
//!
//! A QUIC connection to a libp2p node is not usable with raw streams: every stream starts with
//! a multistream-select negotiation, and every node expects its pings answered. This layer adds
//! both, so quicpeer can talk to libp2p nodes stream by stream:
//!
//! - [`multistream`]: multistream-select 1.0, the dialer and listener as byte-level machines;
//! - [`ping`]: `/ipfs/ping/1.0.0`, the pinger and the responder;
//! - [`host`]: [`Host`], which owns a manager, runs both on its streams, and implements
//!   [`SansIo`](crate::SansIo) so the same drivers and simulator host it;
//! - [`relay`]: circuit relay v2, the relay server on top of a [`Host`].
//! - [`channel`]: [`Channels`](channel::Channels), exactly-once message channels to a set of
//!   peers on a host, kept in a durable [`Store`](channel::Store) across crashes.
//!
//! The codecs know nothing of QUIC: bytes in, bytes out, typed errors, bounded buffers.

pub mod channel;
mod closed;
pub mod host;
pub mod multistream;
pub mod ping;
pub mod relay;

pub use host::{
    DialAddrsError, Host, HostConfig, HostEvent, OpenError, OutboundId, PingStartError,
    StreamFailure,
};
