//! The libp2p TLS certificate: generation and verification (libp2p/specs tls/tls.md).
//!
//! STUB: interface agreed between the identity and manager work; bodies to be written.

use std::time::SystemTime;

use libp2p_identity::{Keypair, PeerId};
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};

/// OID of the libp2p public key extension: 1.3.6.1.4.1.53594.1.1.
pub const LIBP2P_EXTENSION_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 53594, 1, 1];

/// Why a peer's certificate was rejected. Each variant is one reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertificateError {
    /// The peer presented no certificate.
    #[error("no certificate presented")]
    NoCertificate,
    /// Placeholder until the real enum lands.
    #[error("rejected: {0}")]
    Other(String),
    /// The certificate is valid but names another peer than the one dialed.
    #[error("peer id mismatch: expected {expected}, got {actual}")]
    PeerIdMismatch {
        /// The PeerId the dialer asked for.
        expected: PeerId,
        /// The PeerId the certificate proves.
        actual: PeerId,
    },
}

/// A certificate that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedPeer {
    /// The PeerId derived from the host key in the libp2p extension.
    pub peer_id: PeerId,
    /// DER of the certificate key's SubjectPublicKeyInfo, for the TLS 1.3 CertificateVerify.
    pub certificate_key_spki: Vec<u8>,
}

/// Generates a fresh certificate key (P-256) and a self-signed certificate carrying the libp2p
/// extension signed by `keypair`.
pub fn generate_certificate(
    keypair: &Keypair,
) -> Result<(CertificateDer<'static>, PrivatePkcs8KeyDer<'static>), CertificateError> {
    let _ = keypair;
    todo!()
}

/// Verifies one DER certificate at wall-clock time `now`.
pub fn verify_certificate(der: &[u8], now: SystemTime) -> Result<VerifiedPeer, CertificateError> {
    let _ = (der, now);
    todo!()
}

/// Verifies a presented chain: exactly one certificate, then [`verify_certificate`].
pub fn verify_certificate_chain(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: SystemTime,
) -> Result<VerifiedPeer, CertificateError> {
    let _ = (end_entity, intermediates, now);
    todo!()
}
