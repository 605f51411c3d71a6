//! Circuit relay v2 (libp2p specs `relay/circuit-v2.md`): the relay side, sans-IO on a
//! [`Host`](super::Host).
//!
//! A peer behind a NAT cannot be dialed, but it can keep a connection to a relay and reserve a
//! slot there; others then reach it through the relay, which splices their streams. This
//! module holds the pieces: the hop and stop messages and their framing ([`codec`]), the
//! signed reservation voucher ([`voucher`]), the limits ([`RelayConfig`]) and the server
//! ([`Relay`]), which owns a host the way the host owns a manager and implements
//! [`SansIo`](crate::SansIo), so the same drivers and simulator run it.
//!
//! What sets it apart from go-, rust- and js-libp2p's relays: a reservation lives on the
//! connection that made it and is freed in the very call in which the manager reports that
//! connection dead (a stateless reset, a restarted client's new connection superseding the
//! old one, an idle timeout), so a client that crashes and comes back is never refused for
//! a slot its dead self still holds. A short grace period keeps the slot for that client
//! alone, so a flapping link does not churn slots either. A circuit goes to its target over
//! the target's newest live connection.

pub mod codec;
mod config;
mod event;
mod proto;
mod server;
pub mod voucher;

pub use codec::{CodecError, HopMessage, Limit, Reservation, Status, StopMessage};
pub use config::RelayConfig;
pub use event::{CircuitEnd, CircuitId, End, FreeCause, RelayEvent};
pub use server::{Relay, RelayError, SPLICE_CHUNK};
pub use voucher::{Voucher, VoucherError};

/// The hop protocol: clients reserve and connect.
pub const HOP_PROTOCOL: &str = "/libp2p/circuit/relay/0.2.0/hop";
/// The stop protocol: the relay tells a reserved client that a circuit arrives.
pub const STOP_PROTOCOL: &str = "/libp2p/circuit/relay/0.2.0/stop";
