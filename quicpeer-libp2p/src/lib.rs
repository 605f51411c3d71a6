//! quicpeer as a rust-libp2p (0.57) transport: a drop-in for libp2p-quic whose connections
//! notice a restarted peer in a round trip instead of an idle timeout.
//!
//! # The one-line switch
//!
//! It is built like libp2p-quic's transport, `Transport::new(Config::new(&keypair))`, and
//! speaks the same wire protocol (`/quic-v1`, TLS 1.3 with the libp2p certificate extension,
//! ALPN `libp2p`), so a Swarm switches by replacing `.with_quic()` with
//! `.with_other_transport(..)`; every behaviour, and every stock peer, stays as it was:
//!
//! ```no_run
//! # use libp2p_swarm::dummy;
//! # fn build(keypair: libp2p_identity::Keypair) -> Result<(), Box<dyn std::error::Error>> {
//! # let behaviour = dummy::Behaviour;
//! // Before: libp2p::SwarmBuilder::with_existing_identity(keypair).with_tokio().with_quic()
//! let builder = libp2p::SwarmBuilder::with_existing_identity(keypair)
//!     .with_tokio()
//!     .with_other_transport(|k| quicpeer_libp2p::Transport::new(quicpeer_libp2p::Config::new(k)))?;
//! let mut swarm = builder.with_behaviour(|_| behaviour)?.build();
//! swarm.listen_on("/ip4/0.0.0.0/udp/0/quic-v1".parse()?)?;
//! // ... the run loop as ever: `swarm.select_next_some().await` ...
//! # Ok(())
//! # }
//! ```
//!
//! (`libp2p` here is the facade crate of the application; this crate needs only its small
//! parts, `libp2p-core`, `libp2p-swarm` and `libp2p-identity`.) It needs a tokio runtime: each
//! socket gets a driver task (quicpeer-tokio's).
//!
//! # Restarts
//!
//! A peer that restarts with the same key on the same address answers the old connection's
//! packets with a stateless reset the old connection accepts (quicpeer derives its reset and
//! connection-ID keys from the identity), so the connection ends at once with
//! [`Cause::PeerRestarted`]. The Swarm reports it as
//! `SwarmEvent::ConnectionClosed { cause: Some(ConnectionError::IO(e)), .. }`, and
//! [`cause_of`]`(&e)` says `Some(Cause::PeerRestarted)`. This holds for stock peers too: a
//! stock libp2p-quic dialer of a restarted quicpeer listener learns it in one round trip.
//!
//! A Swarm never redials by itself; [`reconnect::Behaviour`] does: on a restart it dials the
//! peer again, and on a silent connection (a stock libp2p-quic peer that restarted sends no
//! reset the old connection can check, quicpeer's suspicion reports it) it dials a fresh
//! connection alongside the silent one (`PeerCondition::Always`, make-before-break).
//!
//! # What it does and does not do
//!
//! - `listen_on("/ip4|ip6/<ip>/udp/<port>/quic-v1")`: one socket per listener, IPv4 or IPv6;
//!   port 0 reports the bound port; an unspecified IP reports the loopback address and the
//!   address of the interface of the default route (no interface watching). A dial to a family
//!   with no listener goes out from a dial-only socket of that family.
//! - `dial` with or without `/p2p/<peer>`: a wrong PeerId fails with
//!   [`Error::PeerIdMismatch`]; a dropped dial future closes its attempt. `PortUse::Reuse`
//!   (the Swarm's default) dials from a listening socket of the family, so that peers observe
//!   the listen address; `PortUse::New` from a fresh socket.
//! - Any other multiaddr is refused with `TransportError::MultiaddrNotSupported`.
//! - The hole-punch role (DCUtR's `Endpoint::Listener` with `PortUse::New`), as libp2p-quic:
//!   random datagrams from the listening socket to the peer's address, until the peer's
//!   connection from that address comes in and completes the dial (or the handshake timeout
//!   passes). With `PortUse::Reuse` that role dials as a dialer does, as libp2p-quic's does;
//!   that is what DCUtR asks for in rust-libp2p 0.57 (both sides dial from their listening
//!   sockets at once).
//! - Beside rust-libp2p's relay client (`.with_relay_client(..)` after the switch) and DCUtR:
//!   a relayed connection upgrades to a direct one where the observed addresses are reachable,
//!   and stays when they are not.
//!
//! # Modules
//!
//! - `transport` (private): [`Transport`];
//! - `muxer` (private): [`Connection`] (the `StreamMuxer`), [`Stream`];
//! - `error` (private): [`Error`], [`cause_of`];
//! - [`reconnect`]: the behaviour that redials.
#![deny(missing_docs)]

mod error;
mod muxer;
pub mod reconnect;
mod transport;

use std::time::Duration;

pub use error::{cause_of, Error};
pub use muxer::{Connection, Stream};
pub use quicpeer::Cause;
use quicpeer::ReconnectPolicy;
pub use transport::Transport;

/// The transport's configuration: the host key and quicpeer's connection settings, set for a
/// Swarm (several connections per peer, no automatic redials: the Swarm and
/// [`reconnect::Behaviour`] own those).
#[derive(Clone)]
#[non_exhaustive]
pub struct Config {
    /// The host keypair: the PeerId the handshake proves.
    pub keypair: libp2p_identity::Keypair,
    /// quicpeer's settings. [`Config::new`] sets the libp2p mode: `tie_break` and
    /// `suspicion_redial` off, reconnects off, no unidirectional streams, up to
    /// [`MAX_CONNECTIONS_PER_PEER`] connections per peer.
    pub quic: quicpeer::Config,
    /// Where silent connections are reported ([`Config::with_signals`]).
    pub signals: Option<reconnect::Signals>,
}

/// Connections per peer a [`Config::new`] allows: a Swarm may hold a dialed and an accepted
/// connection and a make-before-break replacement at once.
pub const MAX_CONNECTIONS_PER_PEER: usize = 8;

impl Config {
    /// The configuration for `keypair`, as libp2p-quic's `Config::new`.
    pub fn new(keypair: &libp2p_identity::Keypair) -> Self {
        let mut quic = quicpeer::Config::default();
        quic.tie_break = false;
        quic.suspicion_redial = false;
        quic.reconnect = ReconnectPolicy::never();
        quic.max_concurrent_uni_streams = 0;
        quic.limits.max_connections_per_peer = MAX_CONNECTIONS_PER_PEER;
        // libp2p-quic's: 10 s idle timeout, keep-alive well within it.
        quic.idle_timeout = Duration::from_secs(10);
        Config {
            keypair: keypair.clone(),
            quic,
            signals: None,
        }
    }

    /// Reports silent connections to a [`reconnect::Behaviour`] (its
    /// [`signals`](reconnect::Behaviour::signals)).
    pub fn with_signals(mut self, signals: reconnect::Signals) -> Self {
        self.signals = Some(signals);
        self
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("peer_id", &self.keypair.public().to_peer_id())
            .field("quic", &self.quic)
            .finish_non_exhaustive()
    }
}
