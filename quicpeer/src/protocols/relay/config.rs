//! What a relay allows: its limits, with go- and rust-libp2p's defaults.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::address::Multiaddr;
use crate::PeerId;

/// Settings of a [`Relay`](super::Relay). Every limit is the relay's protection against its
/// clients; the defaults are those go-libp2p and rust-libp2p ship with, except
/// [`grace`](Self::grace), which they do not have.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RelayConfig {
    /// Reservations held at once, all clients together (go/rust: 128).
    pub max_reservations: usize,
    /// Reservations one PeerId may hold at once, one per connection (go-libp2p's former
    /// `MaxReservationsPerPeer`: 4).
    pub max_reservations_per_peer: usize,
    /// Reservations from one IP address (go-libp2p: 8).
    pub max_reservations_per_ip: usize,
    /// How long a reservation lasts unless refreshed by another RESERVE (go/rust: 1 hour).
    pub reservation_ttl: Duration,
    /// How long the slot of a reservation whose connection died stays held for that peer: a
    /// client that reserves again within it takes the slot back (no double count, no refusal
    /// at a full relay). The reservation itself is freed at once: no circuit goes to a dead
    /// connection. 2 s covers a restart's new handshake and a few RTTs.
    pub grace: Duration,
    /// Circuits open at once (go/rust: 16).
    pub max_circuits: usize,
    /// Circuits one peer takes part in at once, either end (rust-libp2p: 4).
    pub max_circuits_per_peer: usize,
    /// How long a circuit may last (go/rust: 2 minutes).
    pub circuit_duration: Duration,
    /// Bytes a circuit may carry each way (go/rust: 128 KiB).
    pub circuit_bytes: u64,
    /// Peers whose circuits (either end) have neither limit.
    pub unlimited: BTreeSet<PeerId>,
    /// How long a client may take to send its request, and a target to answer the relay's
    /// CONNECT, once the stream is negotiated.
    pub message_timeout: Duration,
    /// Hop streams read at once, and circuits being set up: what unanswered requests may
    /// hold.
    pub max_pending: usize,
    /// The relay's own addresses, sent in every reservation (with the relay's `/p2p/` part
    /// appended). rust-libp2p clients refuse a reservation without addresses.
    pub listen_addrs: Vec<Multiaddr>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            max_reservations: 128,
            max_reservations_per_peer: 4,
            max_reservations_per_ip: 8,
            reservation_ttl: Duration::from_secs(3600),
            grace: Duration::from_secs(2),
            max_circuits: 16,
            max_circuits_per_peer: 4,
            circuit_duration: Duration::from_secs(120),
            circuit_bytes: 1 << 17,
            unlimited: BTreeSet::new(),
            message_timeout: Duration::from_secs(10),
            max_pending: 64,
            listen_addrs: Vec::new(),
        }
    }
}
