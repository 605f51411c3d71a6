//! quicpeer: a sans-IO QUIC connection manager for peer-to-peer systems.
//!
//! Peers are named by their libp2p [`PeerId`], not by an address, and quicpeer speaks libp2p's
//! QUIC (`/quic-v1`, ALPN `libp2p`, TLS 1.3 with the libp2p certificate extension), so it
//! interoperates with rust-, js- and py-libp2p nodes. Its keys survive a restart: a restarted
//! peer answers the old connection's packets with a stateless reset, and the [`Manager`] turns
//! that into [`Cause::PeerRestarted`] and a fresh connection in the same call.
//!
//! This page is the tutorial: the loop, time, events, and where the other layers fit.
//!
//! # The loop
//!
//! A [`Manager`] does no I/O, reads no clock and spawns nothing. Datagrams and time go in,
//! datagrams and events come out, through five calls every machine of quicpeer shares
//! ([`SansIo`]):
//!
//! ```no_run
//! use std::time::{Instant, SystemTime};
//! use quicpeer::{Cause, Config, Event, Identity, Manager};
//! # fn recv() -> Option<(std::net::SocketAddr, Vec<u8>)> { None }
//! # fn send(_: std::net::SocketAddr, _: &[u8]) {}
//! # fn sleep_until(_: Option<Instant>) {}
//!
//! let identity = Identity::from_ed25519_seed([1; 32]);
//! let (now, wall_now) = (Instant::now(), SystemTime::now());
//! let mut manager = Manager::new(now, wall_now, identity, Config::default(), [7; 32])?;
//! # let (peer, addr) = (Identity::from_ed25519_seed([2; 32]).peer_id(), "127.0.0.1:4001".parse()?);
//! manager.dial(now, peer, [addr])?;
//! let mut buf = Vec::new();
//! loop {
//!     let now = Instant::now();
//!     // 1. Input: every datagram received, and the timers that are due.
//!     while let Some((from, datagram)) = recv() {
//!         manager.handle_datagram(now, from, None, &datagram);
//!     }
//!     if manager.poll_timeout().is_some_and(|t| t <= now) {
//!         manager.handle_timeout(now);
//!     }
//!     // 2. Output: datagrams until none is left, then events.
//!     while let Some(transmit) = manager.poll_transmit(now, &mut buf) {
//!         send(transmit.destination, &buf[..transmit.size]);
//!     }
//!     while let Some(event) = manager.poll_event() {
//!         match event {
//!             Event::Connected { peer, conn, .. } => println!("{peer} on {conn}"),
//!             Event::ConnectionLost { peer, cause: Cause::PeerRestarted, .. } => {
//!                 // A fresh handshake to `peer` is already on its way: `Reconnecting`, then
//!                 // `Connected { replaced: Some(..) }` follow.
//!                 println!("{peer} restarted");
//!             }
//!             other => println!("{other:?}"),
//!         }
//!     }
//!     // 3. Sleep until the next timer or datagram.
//!     sleep_until(manager.poll_timeout());
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Commands ([`Manager::dial`], [`Manager::close`], [`Manager::open_stream`],
//! [`Manager::stream_write`], …) may be issued between any two calls; after one, drain
//! `poll_transmit` and `poll_event` again, since it may have queued datagrams.
//!
//! # Time and randomness
//!
//! Time is an argument, never read: `now` is the first argument of every call that takes it,
//! and it never goes backwards. `poll_timeout` returns an absolute instant (or `None`: no timer
//! at all), never one that has already fired and been handled. Certificate validity needs a
//! wall-clock time too: the manager takes `wall_now` once, at construction, and derives later
//! wall-clock times from the monotonic ones it is given. Randomness comes from the `seed`
//! argument, so a run in the simulator is a function of its seed; give each process a fresh
//! seed in production.
//!
//! # Events
//!
//! Events name peers, not only connections. A connection that dies is an [`Event`]
//! ([`Event::ConnectionLost`] with a [`Cause`] to match on), never an `Err`: errors are for
//! commands the manager could not carry out ([`DialError`], [`StreamError`]), each an enum
//! whose variants say what to do. A slot of [`Limits`] is free in the call in which its
//! connection dies. Streams that were open on a lost connection are listed in the event, so the
//! application knows what to resend. When the peer's stream limit is reached, `open_stream`
//! fails with [`StreamError::Limit`] until [`Event::StreamsAvailable`] says to try again.
//!
//! # Layers and features
//!
//! | module | what it is for |
//! |---|---|
//! | [`identity`] | the libp2p certificate, its verification, keys derived from the identity |
//! | [`manager`] | the sans-IO core above |
//! | [`protocols`] | multistream-select and `/ipfs/ping/1.0.0` on the manager's streams: [`Host`], a manager that negotiates libp2p protocols, answers pings and pings |
//! | [`address`] | `/ip4\|ip6/…/udp/…/quic-v1[/p2p/…]` multiaddrs to and from socket addresses |
//! | [`machine`] | [`SansIo`], the loop every machine shares, and [`GracefulClose`] |
//! | `driver` (feature `mio`, default) | any [`SansIo`] machine on real UDP sockets: batching, ICMP errors, a `Handle` for other threads |
//! | `icmp` (feature `icmp`, in `mio`; Linux) | ICMP errors from a socket's error queue, for any driver to hand to `handle_unreachable` |
//! | `sim` (feature `sim`) | a deterministic network with a virtual clock, loss, reordering and restarts, to test code built on quicpeer |
//!
//! On real sockets, the mio driver runs the loop above and hands each event to a callback
//! with `&mut` access to the machine:
//!
//! ```no_run
//! # #[cfg(feature = "mio")]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::{Duration, Instant, SystemTime};
//! use quicpeer::driver::Driver;
//! use quicpeer::{Config, Event, Identity, Manager};
//!
//! let me = Identity::from_ed25519_seed([1; 32]);
//! let manager = Manager::new(Instant::now(), SystemTime::now(), me, Config::default(), [7; 32])?;
//! let mut driver = Driver::bind(manager, &["0.0.0.0:0".parse()?, "[::]:0".parse()?])?;
//! # let (peer, addr) = (Identity::from_ed25519_seed([2; 32]).peer_id(), "127.0.0.1:4001".parse()?);
//! let now = driver.now();
//! driver.machine_mut().dial(now, peer, [addr])?;
//! let handle = driver.handle(); // Send + Clone: handle.execute(|manager, now| ..), handle.stop()
//! std::thread::spawn(move || {
//!     std::thread::sleep(Duration::from_secs(10));
//!     let _ = handle.stop();
//! });
//! driver.run(|cx, event| match event {
//!     Event::Connected { peer, conn, .. } => {
//!         if let Ok(stream) = cx.open_stream(conn) {
//!             let _ = cx.stream_write(stream, b"hello");
//!         }
//!         println!("connected to {peer}");
//!     }
//!     Event::ConnectionLost { peer, cause, .. } => println!("lost {peer}: {cause}"),
//!     _ => {}
//! })?;
//! driver.shutdown(Duration::from_secs(1), |_, _| {})?; // close gracefully, then drain
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "mio"))]
//! # fn main() {}
//! ```
//!
//! `examples/echo.rs` is a complete embedding: two [`Host`]s on the driver, a registered
//! protocol, a dial by `/p2p/` multiaddr, and a negotiated stream.
#![deny(missing_docs)]

pub mod address;
#[cfg(feature = "book-file")]
pub mod book_file;
#[cfg(feature = "mio")]
pub mod driver;
#[cfg(all(feature = "icmp", target_os = "linux"))]
pub mod icmp;
pub mod identity;
pub mod machine;
pub mod manager;
pub mod protocols;
#[cfg(feature = "sim")]
pub mod sim;

/// Internals that the workspace's fuzz targets, comparison benchmarks and TLS tests drive
/// directly (feature `internals`): the TLS context behind the manager's rustls configurations,
/// with a clock they set, and a manager that reuses a certificate. Not part of the API: no
/// embedder needs them, and they may change in any release.
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod internals {
    pub use crate::identity::tls::{LoadedCertificate, TlsContext, VerificationSlot, WallClock};
    pub use crate::manager::cid::CID_LEN;
}

pub use identity::{Identity, Keypair, PeerId};
pub use machine::{GracefulClose, SansIo};
pub use manager::{
    Cause, ChunksRead, Config, ConfigError, ConnId, ConnectFailure, ConnectionStats, DialError,
    DialOutcome, Direction, Event, HandshakeFailure, KeyMode, Limits, Manager, ManagerError,
    Metrics, PeerRecord, Read, ReadStatus, ReconnectPolicy, ResponseRate, StreamError, StreamId,
    Transmit,
};
pub use protocols::{Host, HostConfig, HostEvent};

/// The README's examples, compiled and run as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
