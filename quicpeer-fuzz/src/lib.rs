//! The bodies of the fuzz targets in `fuzz/` (feature `fuzzing`).
//!
//! Each target in `fuzz/fuzz_targets/` is a one-line wrapper over a function here, so the
//! targets compile with the library on stable Rust and `tests/fuzz_corpus.rs` replays every
//! corpus file through exactly the code the fuzzer runs. What a peer controls is what is fuzzed:
//!
//! - [`datagram`]: arbitrary datagrams from arbitrary addresses into a listening or a connected
//!   [`Manager`](quicpeer::Manager), interleaved with the honest peer's real packets (delivered,
//!   dropped, duplicated, corrupted) and with time on a monotonic virtual clock read from the
//!   input; on quicpeer's null handshake ([`Config::null_crypto`](quicpeer::Config::null_crypto):
//!   certificates checked, packets in the clear), so that invented packets reach the frame
//!   decoder and an execution is not mostly a TLS handshake; [`datagram_tls`] runs the same
//!   inputs on real TLS;
//! - [`frames`]: arbitrary QUIC frames inside 1-RTT packets of an established connection of the
//!   target, in place of the honest peer's packets, interleaved with honest traffic; on the null
//!   handshake; [`frames_tls`] seals them with the peer's real keys (logged through
//!   [`Config::key_log`](quicpeer::Config::key_log));
//! - [`ops`]: arbitrary sequences of operations (dials, closes, restarts, link failures, time,
//!   streams) against a [`sim::Network`](quicpeer::sim::Network) of two to four nodes, on the
//!   null handshake; [`ops_tls`] on real TLS;
//! - [`host`]: two [`Host`](quicpeer::protocols::Host)s (multistream-select, ping, queued
//!   opens, timeouts) whose applications open, ping, register, read, abandon, and write raw
//!   bytes past their host onto the other's, across lossy links and restarts; on the null
//!   handshake;
//! - [`certificate`]: arbitrary bytes as a peer's certificate, into the verifier and, when they
//!   pass it, into a TLS handshake;
//! - [`multistream`]: arbitrary bytes on a fresh libp2p stream, into the multistream-select
//!   listener and dialer and the ping responder and pinger, whole and in fragments;
//! - [`relay`]: arbitrary bytes on a circuit relay v2 hop or stop stream, into the framing and
//!   the message decoders, whole and in fragments, and every body into the voucher opener.
//! - [`relay_server`]: a circuit relay v2 server with small limits and three clients that
//!   reserve, connect, write raw hop bytes, answer or break stop streams, crash and redial;
//!   reservations freed with their connections, limits kept, nothing held at the end;
//! - [`federation`]: three nodes exchanging messages over peer channels while they crash
//!   (each keeping its store), lose links and receive raw channel bytes: exactly once, in
//!   per-origin order, every accepted message delivered everywhere in the end;
//! - [`channel`]: arbitrary bytes on a peer channel stream, into the channel codec, whole and
//!   in fragments.
//! - [`address`]: multiaddrs as text and as bytes, into the address parser, round trips and
//!   `peer_addrs` checked.
//! - [`peer_book`]: bytes as a peer book file, into its reader, bounds and round trip checked.
//!
//! Every target checks invariants after each step and panics, with the invariant's name, when
//! one fails: a panic here is a finding. [`seeds`] builds the seed corpora from real packets.

mod address;
mod certificate;
mod channel;
mod datagram;
mod federation;
mod frames;
mod host;
mod invariants;
mod multistream;
mod node;
mod ops;
mod peer_book;
mod relay;
mod relay_server;
pub mod seeds;

pub use address::address;
pub use certificate::certificate;
pub use channel::channel;
pub use datagram::{datagram, datagram_tls, Crypto, DatagramInput, Mode, Payload, Source, Step};
pub use federation::{federation, FederationInput, FederationOp, Topology};
pub use frames::{
    frames, frames_tls, Data, Frame, FramesInput, Step as FrameStep, Value, VARINT_MAX,
};
pub use host::{host, HostInput, HostLink, HostOp};
pub use multistream::{multistream, Role, PING_PAYLOAD, PROPOSALS, SUPPORTED};
pub use ops::{ops, ops_tls, LinkChange, Op, OpsInput};
pub use peer_book::{book_owner, peer_book};
pub use relay::{relay, RelayKind};
pub use relay_server::{relay_server, RelayInput, RelayOp};

/// Reads operations until the input ends, one fails to decode, or there are `max`: what a
/// sequence target runs.
fn decode_ops<'a, T: arbitrary::Arbitrary<'a>>(
    u: &mut arbitrary::Unstructured<'a>,
    max: usize,
) -> Vec<T> {
    let mut ops = Vec::new();
    while !u.is_empty() && ops.len() < max {
        match decode(u) {
            Some(op) => ops.push(op),
            None => break,
        }
    }
    ops
}

/// Reads a whole fuzz input as a `T` the way libFuzzer's `arbitrary` integration does, except
/// that the caller decides what to do with the bytes left over.
fn decode<'a, T: arbitrary::Arbitrary<'a>>(u: &mut arbitrary::Unstructured<'a>) -> Option<T> {
    T::arbitrary(u).ok()
}
