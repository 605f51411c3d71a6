//! quicpeer: a sans-IO QUIC connection manager for peer-to-peer systems.
#![deny(missing_docs)]

pub mod identity;

pub use identity::{Identity, Keypair, PeerId};
