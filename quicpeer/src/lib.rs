//! quicpeer: a sans-IO QUIC connection manager for peer-to-peer systems.
//!
//! Peers are named by their libp2p [`PeerId`], not by an address, and quicpeer speaks libp2p's
//! QUIC (`/quic-v1`, ALPN `libp2p`), so it interoperates with libp2p nodes. Its keys survive a
//! restart: a restarted peer answers the old connection's packets with a stateless reset, and
//! the [`Manager`] turns that into [`Cause::PeerRestarted`] and a fresh connection at once.
//!
//! Layers, from the bottom: [`identity`] (certificates and keys), [`manager`] (the sans-IO core),
//! [`protocols`] (multistream-select and ping on the manager's streams, as [`Host`]),
//! [`address`] (libp2p QUIC multiaddrs to and from socket addresses), [`sim`] (a
//! deterministic network to test and benchmark any of these machines), `driver` (any of
//! them on real UDP sockets with mio; the default `mio` feature), and [`bench`](mod@bench) (the benchmark
//! workloads behind `quicpeer bench` and `benches/`).
#![deny(missing_docs)]

pub mod address;
#[cfg(feature = "mio")]
pub mod driver;
pub mod identity;
pub mod machine;
pub mod manager;
pub mod protocols;
#[cfg(feature = "sim")]
pub mod sim;

pub use identity::{Identity, Keypair, PeerId};
pub use machine::{GracefulClose, SansIo};
pub use manager::{
    Cause, ChunksRead, Config, ConnId, DialError, DialOutcome, Direction, Event, HandshakeFailure,
    KeyMode, Limits, Manager, ManagerError, Read, ReadStatus, ReconnectPolicy, StreamError,
    StreamId, Transmit,
};
pub use protocols::{Host, HostConfig, HostEvent};

/// The README's examples, compiled and run as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
