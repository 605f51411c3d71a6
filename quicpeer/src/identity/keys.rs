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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Identity;

    #[test]
    fn reset_key_known_answer() {
        let seed: [u8; 32] = std::array::from_fn(|i| i as u8);
        let identity = Identity::from_ed25519_seed(seed);
        assert_eq!(
            identity.peer_id().to_string(),
            "12D3KooWA4Xop1JaT3MHxwYMkCepYsv4iPVopMXwCz5iHYdBfeSB"
        );
        let keys = RestartKeys::derive(identity.keypair()).expect("Ed25519 keys derive");
        assert_eq!(
            hex::encode(keys.reset_key),
            "0ed5df63d247dfb8a4e0324469e4351b76992b557054a9f334d5fa56c7b911f3"
        );
        assert_ne!(keys.reset_key, keys.cid_key);
    }

    #[test]
    fn rsa_keys_cannot_be_derived() {
        let mut pkcs8 = include_bytes!("../../tests/data/rsa-2048.pk8").to_vec();
        let keypair = Keypair::rsa_from_pkcs8(&mut pkcs8).expect("test RSA key");
        assert!(RestartKeys::derive(&keypair).is_none());
    }
}
