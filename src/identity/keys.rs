//! Keys that must survive a restart, derived from the identity (DESIGN.md section 5).
//!
//! A restarted node must answer packets of connections it has forgotten with a valid stateless
//! reset. That needs two keys that are the same before and after the restart: the key that
//! computes reset tokens, and the key that lets the endpoint recognise a connection ID as one it
//! issued (quinn drops packets whose CID fails that check before it would send a reset).

use libp2p_identity::Keypair;

/// HKDF info for the stateless-reset key; the same derivation as rust-libp2p's QUIC transport.
pub const RESET_KEY_INFO: &[u8] = b"libp2p quic stateless reset key";
/// HKDF info for the connection-ID generator key.
pub const CID_KEY_INFO: &[u8] = b"quicpeer quic connection id key";

/// The two keys an endpoint needs to send valid stateless resets after a restart.
#[derive(Clone, PartialEq, Eq)]
pub struct RestartKeys {
    /// HMAC-SHA256 key for stateless-reset tokens.
    pub reset_key: [u8; 32],
    /// Key of the connection-ID generator's tag.
    pub cid_key: [u8; 32],
}

impl RestartKeys {
    /// Derives both keys from the identity with HKDF-SHA256 (`Keypair::derive_secret`).
    ///
    /// Returns `None` for keys whose secret cannot be extracted (RSA); the caller then falls back
    /// to keys of its own (a key file, or random keys that do not survive a restart).
    pub fn derive(keypair: &Keypair) -> Option<Self> {
        Some(Self {
            reset_key: keypair.derive_secret(RESET_KEY_INFO)?,
            cid_key: keypair.derive_secret(CID_KEY_INFO)?,
        })
    }
}

impl std::fmt::Debug for RestartKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RestartKeys { .. }")
    }
}
