//! Interop between quicpeer and real libp2p nodes: rust-libp2p (in process, or as the
//! `libp2p-peer` binary), js-libp2p (`js/peer.mjs`, a Node.js child process) and py-libp2p
//! (`py/peer.py`, a Python child process).
//!
//! Every comparison peer reports the same [`PeerEvent`]s (printed as JSON lines when it runs as
//! a process), so the tests in `tests/` wait on them the same way: [`EventLog::wait_for`], each
//! wait bounded by a deadline. See `docs/interop.md` for what is tested and what was measured.
#![deny(missing_docs)]

pub mod events;
pub mod js;
pub mod libp2p_peer;
pub mod process;
pub mod py;
pub mod quicpeer_node;
pub mod relay_node;

pub use events::{EventLog, PeerEvent, Stamped};
pub use libp2p_peer::{Libp2pConfig, Libp2pPeer};
pub use process::ChildPeer;
