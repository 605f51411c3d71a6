//! Identity: from a libp2p [`Keypair`] to QUIC-ready TLS, and from a peer's certificate back to a
//! verified [`PeerId`].
//!
//! libp2p's QUIC has no PeerId on the wire: each side presents a self-signed certificate whose
//! libp2p extension carries the host key and that key's signature over the certificate key. This
//! module generates that certificate ([`certificate`]), verifies a peer's
//! ([`verify_certificate_chain`]), builds the rustls configurations around them (the
//! manager's own business: TLS 1.3 only, ALPN `libp2p`, no SNI, session resumption only between
//! quicpeer nodes),
//! and derives the keys that must survive a restart ([`RestartKeys`]).

// `CertificateError::PeerIdMismatch` carries two PeerIds (80 bytes each; the manager matches on
// that shape). Errors are the cold path here, so the size is accepted rather than boxed.
#[allow(clippy::result_large_err)]
pub mod certificate;
pub mod keys;
#[cfg(feature = "fuzzing")]
#[allow(clippy::result_large_err)]
pub mod null_crypto;
pub(crate) mod resumption;
#[allow(clippy::result_large_err)]
pub(crate) mod tls;

pub use certificate::{
    generate_certificate, verify_certificate, verify_certificate_chain, CertificateError,
    VerifiedPeer, LIBP2P_EXTENSION_OID,
};
pub use keys::{RestartKeys, CID_KEY_INFO, RESET_KEY_INFO};
pub use libp2p_identity::{Keypair, PeerId, PublicKey};
pub(crate) use tls::{LoadedCertificate, TlsContext, VerificationSlot, WallClock};
pub use tls::{TlsError, ALPN};

/// A node's long-lived identity: its libp2p host keypair and the PeerId it names.
#[derive(Clone)]
pub struct Identity {
    keypair: Keypair,
    peer_id: PeerId,
}

impl Identity {
    /// Wraps a host keypair of any type libp2p supports.
    pub fn new(keypair: Keypair) -> Self {
        let peer_id = keypair.public().to_peer_id();
        Self { keypair, peer_id }
    }

    /// The Ed25519 identity whose 32-byte secret key is `seed`.
    pub fn from_ed25519_seed(seed: [u8; 32]) -> Self {
        let mut seed = seed;
        // `ed25519_from_bytes` only fails on a wrong length, and the length is fixed here.
        match Keypair::ed25519_from_bytes(&mut seed) {
            Ok(keypair) => Self::new(keypair),
            Err(_) => unreachable!("a 32-byte Ed25519 secret is always accepted"),
        }
    }

    /// The host keypair.
    pub fn keypair(&self) -> &Keypair {
        &self.keypair
    }

    /// The PeerId of the host key.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("peer_id", &self.peer_id)
            .finish_non_exhaustive()
    }
}
