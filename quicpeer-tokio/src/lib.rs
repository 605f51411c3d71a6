//! quicpeer on tokio: an async API in quinn's shape over quicpeer's sans-IO [`Manager`],
//! keyed by peers.
//!
//! An [`Endpoint`] owns one UDP socket and one tokio task that runs the manager's loop. You
//! connect to a *peer* ([`PeerId`]) at some addresses, and the handshake proves its identity;
//! a [`Connection`] opens and accepts bidirectional streams, whose halves are tokio's
//! [`AsyncWrite`](tokio::io::AsyncWrite) ([`SendStream`]) and
//! [`AsyncRead`](tokio::io::AsyncRead) ([`RecvStream`]); with the feature `futures-io` they
//! implement futures-io's `AsyncWrite` and `AsyncRead` too.
//!
//! ```no_run
//! use quicpeer::{Config, Identity};
//! use quicpeer_tokio::Endpoint;
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let me = Endpoint::bind(Identity::from_ed25519_seed([1; 32]), Config::default(), "0.0.0.0:0".parse()?)?;
//! let peer = Identity::from_ed25519_seed([2; 32]).peer_id();
//! let connection = me.connect(peer, ["127.0.0.1:4001".parse()?]).await?;
//! let (mut send, mut recv) = connection.open_bi().await?;
//! send.write_all(b"hello").await?;
//! send.shutdown().await?; // finishes the stream
//! let mut answer = Vec::new();
//! recv.read_to_end(&mut answer).await?;
//! me.close().await; // tells the peers, then stops the driver task
//! # Ok(())
//! # }
//! ```
//!
//! # Restarts
//!
//! The peer-to-peer part: when a peer restarts with its identity (same keys, same address),
//! it answers the old connection's packets with a stateless reset. The connection is then
//! lost with [`Cause::PeerRestarted`]: its streams fail with an `io::Error` whose inner error
//! is [`StreamError::ConnectionLost`]`(Cause::PeerRestarted)`, and by then the endpoint has
//! already dialed the peer again (if it had dialed it; the manager's
//! [`ReconnectPolicy`](quicpeer::ReconnectPolicy)). [`Endpoint::events`] reports
//! [`PeerEvent::Connected`] for the fresh connection, and [`Endpoint::connect`] or
//! [`Endpoint::connection`] hands it out:
//!
//! ```no_run
//! # use quicpeer::Cause;
//! # use quicpeer_tokio::{Connection, Endpoint, StreamError};
//! # use tokio::io::AsyncReadExt;
//! # async fn example(me: &Endpoint, connection: &Connection) -> Result<(), Box<dyn std::error::Error>> {
//! let (_send, mut recv) = connection.open_bi().await?;
//! let mut buf = [0; 1024];
//! if let Err(e) = recv.read(&mut buf).await {
//!     if let Some(StreamError::ConnectionLost(Cause::PeerRestarted)) =
//!         e.get_ref().and_then(|e| e.downcast_ref::<StreamError>())
//!     {
//!         // The redial in flight (or its result): no address needed, the endpoint knows them.
//!         let fresh = me.connect(connection.peer_id(), []).await?;
//!         let (_send, _recv) = fresh.open_bi().await?;
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Backpressure and memory
//!
//! Nothing here buffers stream data: a write hands bytes to QUIC as far as the peer's flow
//! control allows and otherwise waits (its waker woken by the manager's `StreamWritable`), a
//! read takes bytes out of QUIC or waits for `StreamReadable`, and [`Connection::open_bi`] at
//! the peer's stream limit waits for `StreamsAvailable`. The queues the crate keeps are of
//! handles, bounded by the manager's limits, and of peer events, in a bounded broadcast
//! channel that drops the oldest for a receiver that lags.
//!
//! # Modules
//!
//! - `endpoint`: [`Endpoint`], [`PeerEvent`], [`ConnectError`];
//! - `connection`: [`Connection`], [`ConnectionError`];
//! - `stream`: [`SendStream`], [`RecvStream`], [`StreamError`];
//! - `driver` (private): the task that owns the socket and loops the manager;
//! - `shared` (private): the state behind one mutex that the task and the handles share.
//!
//! # Sockets
//!
//! An endpoint binds one socket (one address family), with the mio driver's settings: 4 MiB
//! buffers where the kernel allows, and batching through quinn-udp (`recvmmsg` with GRO, GSO
//! runs of up to 64 000 bytes on send) where the platform has it; [`Endpoint::stats`] counts
//! its datagrams and system calls. On one stream over loopback it costs about the mio
//! driver's CPU per byte (`docs/benchmarks.md`, `compare throughput`).
//!
//! [`Manager`]: quicpeer::Manager
#![deny(missing_docs)]

mod connection;
mod driver;
mod endpoint;
mod shared;
mod stream;

pub use connection::{Connection, ConnectionError};
pub use endpoint::{
    ConnectError, Endpoint, EndpointStats, PeerEvent, CLOSE_GRACE, EVENT_CAPACITY, RAW_QUEUE,
};
pub use quicpeer::{Cause, Config, ConnId, ConnectionStats, Identity, PeerId, StreamId};
pub use stream::{RecvStream, SendStream, StreamError};
