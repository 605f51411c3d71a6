//! Circuit relay v2 (libp2p specs `relay/circuit-v2.md`): the relay side, sans-IO on a
//! [`Host`](super::Host).
//!
//! A peer behind a NAT cannot be dialed, but it can keep a connection to a relay and reserve a
//! slot there; others then reach it through the relay, which splices their streams. This
//! module holds the pieces: the hop and stop messages and their framing ([`codec`]), the
//! signed reservation voucher ([`voucher`]).

pub mod codec;
mod proto;
pub mod voucher;

pub use codec::{CodecError, HopMessage, Limit, Reservation, Status, StopMessage};
pub use voucher::{Voucher, VoucherError};

/// The hop protocol: clients reserve and connect.
pub const HOP_PROTOCOL: &str = "/libp2p/circuit/relay/0.2.0/hop";
/// The stop protocol: the relay tells a reserved client that a circuit arrives.
pub const STOP_PROTOCOL: &str = "/libp2p/circuit/relay/0.2.0/stop";
