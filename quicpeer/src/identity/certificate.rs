//! The libp2p TLS certificate: generation and verification (libp2p/specs tls/tls.md).
//!
//! libp2p peers have no certificate authority. Each side presents a self-signed certificate for a
//! throwaway key and proves, in a custom extension, that its long-lived host key endorsed that
//! certificate key. This module is the only place that knows that format: it builds our
//! certificate, and it turns a peer's certificate into a verified [`PeerId`] or into a precise
//! [`CertificateError`]. Everything here is a pure function of its inputs; in particular the
//! validity period is checked against the `now` the caller passes, never against the system clock.

use std::time::{SystemTime, UNIX_EPOCH};

use libp2p_identity::{Keypair, PeerId, PublicKey};
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use tracing::debug;
use x509_parser::asn1_rs::{oid, Error as Asn1Error, FromDer, Sequence};
use x509_parser::certificate::X509CertificateParser;
use x509_parser::error::X509Error;
use x509_parser::nom::{self, Parser};
use x509_parser::oid_registry::{
    Oid, OID_PKCS1_RSASSAPSS, OID_PKCS1_SHA256WITHRSA, OID_PKCS1_SHA384WITHRSA,
    OID_PKCS1_SHA512WITHRSA, OID_SIG_ECDSA_WITH_SHA256, OID_SIG_ECDSA_WITH_SHA384, OID_SIG_ED25519,
};

/// OID of the libp2p public key extension: 1.3.6.1.4.1.53594.1.1.
pub const LIBP2P_EXTENSION_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 53594, 1, 1];

/// [`LIBP2P_EXTENSION_OID`] as x509-parser sees it.
#[rustfmt::skip] // rustfmt would split the OID's dotted literal
const LIBP2P_EXTENSION: Oid<'static> = oid!(1.3.6.1.4.1.53594.1.1);

/// What the host key signs: this prefix, then the DER SubjectPublicKeyInfo of the certificate key.
const SIGNING_PREFIX: &[u8] = b"libp2p-tls-handshake:";

/// Self-signature algorithms we accept: the ones with a hash of at least 256 bits that ring can
/// verify. The spec forbids MD5 and SHA-1.
const ALLOWED_SIGNATURE_ALGORITHMS: &[&Oid<'static>] = &[
    &OID_SIG_ECDSA_WITH_SHA256,
    &OID_SIG_ECDSA_WITH_SHA384,
    &OID_SIG_ED25519,
    &OID_PKCS1_SHA256WITHRSA,
    &OID_PKCS1_SHA384WITHRSA,
    &OID_PKCS1_SHA512WITHRSA,
    &OID_PKCS1_RSASSAPSS,
];

/// Why a peer's certificate was rejected, or ours could not be made. Each variant is one reason.
///
/// Every rejection means the same thing for the connection (abort the handshake); the variants
/// say whom to blame and what to look at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertificateError {
    /// The peer presented no certificate. A broken peer: libp2p requires mutual authentication.
    #[error("no certificate presented")]
    NoCertificate,
    /// The peer presented a chain; libp2p allows exactly one self-signed certificate. The peer
    /// speaks another TLS profile than libp2p's.
    #[error("{count} certificates presented, expected exactly one")]
    MoreThanOneCertificate {
        /// How many certificates the peer sent.
        count: usize,
    },
    /// The bytes are not a DER X.509 certificate (the parser's message is attached). A broken or
    /// hostile peer.
    #[error("not a DER X.509 certificate: {0}")]
    BadDer(String),
    /// Bytes follow the certificate's DER encoding. A broken or hostile peer.
    #[error("trailing data after the certificate")]
    TrailingData,
    /// The certificate's validity starts after `now`. Usually one of the two clocks is wrong:
    /// check the time the core is given.
    #[error("certificate not yet valid")]
    NotYetValid,
    /// The certificate's validity ended before `now`. The peer must make a new certificate (or
    /// our clock is wrong).
    #[error("certificate expired")]
    Expired,
    /// The certificate's self-signature does not verify with its own key (or the signature
    /// algorithm inside the signed part differs from the outer one). Corrupted or forged.
    #[error("bad self-signature")]
    BadSelfSignature,
    /// The self-signature uses an algorithm we do not accept (a hash shorter than 256 bits, an
    /// unsupported curve, or an unknown algorithm). The peer must use e.g. ECDSA P-256 SHA-256.
    #[error("unsupported signature algorithm {oid}")]
    UnsupportedSignatureAlgorithm {
        /// The dotted OID of the algorithm.
        oid: String,
    },
    /// The certificate has no libp2p extension (1.3.6.1.4.1.53594.1.1): it is not a libp2p
    /// certificate, so it names no peer.
    #[error("libp2p extension missing")]
    MissingExtension,
    /// The libp2p extension appears more than once; which host key is meant is ambiguous.
    #[error("libp2p extension present more than once")]
    DuplicateExtension,
    /// The libp2p extension's value is not a DER `SignedKey ::= SEQUENCE { publicKey OCTET
    /// STRING, signature OCTET STRING }`. A broken or hostile peer.
    #[error("libp2p extension is not a DER SignedKey")]
    BadExtensionEncoding,
    /// The host key cannot be decoded from the extension's protobuf (malformed, or a key type
    /// libp2p does not know; the decoder's message is attached).
    #[error("bad host key in the libp2p extension: {0}")]
    BadHostKey(String),
    /// The host key's signature over the certificate key does not verify: the host key did not
    /// endorse this certificate. Forged, or a replay of another peer's host key.
    #[error("libp2p extension signature does not verify")]
    BadExtensionSignature,
    /// The certificate has a critical extension we do not understand; the spec requires
    /// aborting.
    #[error("unknown critical extension {oid}")]
    UnknownCriticalExtension {
        /// The dotted OID of the extension.
        oid: String,
    },
    /// The peer's TLS 1.3 CertificateVerify signature does not verify with its certificate key:
    /// the peer does not hold the key of the certificate it presented.
    #[error("handshake signature does not verify with the certificate key")]
    BadHandshakeSignature,
    /// The certificate is valid but names another peer than the one dialed. The address is
    /// stale or belongs to someone else: drop it for `expected`.
    #[error("peer id mismatch: expected {expected}, got {actual}")]
    PeerIdMismatch {
        /// The PeerId the dialer asked for.
        expected: PeerId,
        /// The PeerId the certificate proves.
        actual: PeerId,
    },
    /// Our own certificate could not be generated (key generation, signing with the host key, or
    /// encoding failed; the message says which).
    #[error("certificate generation failed: {0}")]
    Generation(String),
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
    CertificateParams::new(keypair).generate()
}

/// How to build a libp2p certificate. [`CertificateParams::new`] gives the spec's certificate, as
/// [`generate_certificate`] makes it; the knobs exist so tests can build hostile certificates.
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct CertificateParams<'a> {
    /// The host key whose public key goes into the extension.
    pub host_key: &'a Keypair,
    /// The key that signs the extension; another key than `host_key` makes a forgery.
    pub extension_signer: &'a Keypair,
    /// Start of the validity period (second resolution).
    pub not_before: SystemTime,
    /// End of the validity period (second resolution).
    pub not_after: SystemTime,
    /// How many copies of the libp2p extension to include (the spec wants exactly one).
    pub libp2p_extensions: usize,
    /// Whether the libp2p extension is marked critical (the current spec says not; the original
    /// spec did).
    pub critical: bool,
    /// More extensions, after the libp2p one(s): (OID, critical, DER value).
    pub extra_extensions: Vec<(Vec<u64>, bool, Vec<u8>)>,
    /// Whether the serial number carries quicpeer's marker (without it, the certificate looks
    /// like another implementation's, whose session tickets quicpeer does not keep).
    pub serial_marker: bool,
}

impl<'a> CertificateParams<'a> {
    /// The spec's certificate for `host_key`: one non-critical extension signed by `host_key`,
    /// valid from 1975-01-01 to 4096-01-01 like rust-libp2p's.
    pub fn new(host_key: &'a Keypair) -> Self {
        Self {
            host_key,
            extension_signer: host_key,
            not_before: rcgen::date_time_ymd(1975, 1, 1).into(),
            not_after: rcgen::date_time_ymd(4096, 1, 1).into(),
            libp2p_extensions: 1,
            critical: false,
            extra_extensions: Vec::new(),
            serial_marker: true,
        }
    }

    /// Generates a fresh P-256 certificate key and the self-signed certificate.
    pub fn generate(
        &self,
    ) -> Result<(CertificateDer<'static>, PrivatePkcs8KeyDer<'static>), CertificateError> {
        let certificate_key =
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(generation)?;

        let mut message = SIGNING_PREFIX.to_vec();
        message.extend(rcgen::PublicKeyData::subject_public_key_info(
            &certificate_key,
        ));
        let signature = self.extension_signer.sign(&message).map_err(generation)?;
        let value = encode_signed_key(&self.host_key.public().encode_protobuf(), &signature);
        let mut libp2p_extension =
            rcgen::CustomExtension::from_oid_content(LIBP2P_EXTENSION_OID, value);
        libp2p_extension.set_criticality(self.critical);

        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        // quicpeer's marker and 8 bytes of the certificate key's hash: a quicpeer client keeps
        // session tickets only from servers whose certificate has it (`identity::resumption`).
        let key_hash = ring::digest::digest(
            &ring::digest::SHA256,
            &rcgen::PublicKeyData::subject_public_key_info(&certificate_key),
        );
        let mut serial = super::resumption::SERIAL_MARKER.to_vec();
        serial.extend_from_slice(key_hash.as_ref().get(..8).unwrap_or_default());
        if self.serial_marker {
            params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        }
        params.not_before = to_datetime(self.not_before)?;
        params.not_after = to_datetime(self.not_after)?;
        params.custom_extensions = vec![libp2p_extension; self.libp2p_extensions];
        for (oid, critical, value) in &self.extra_extensions {
            let mut extension = rcgen::CustomExtension::from_oid_content(oid, value.clone());
            extension.set_criticality(*critical);
            params.custom_extensions.push(extension);
        }
        let certificate = params.self_signed(&certificate_key).map_err(generation)?;
        Ok((
            certificate.der().clone(),
            PrivatePkcs8KeyDer::from(certificate_key.serialize_der()),
        ))
    }
}

/// Verifies one DER certificate at wall-clock time `now`.
pub fn verify_certificate(now: SystemTime, der: &[u8]) -> Result<VerifiedPeer, CertificateError> {
    let result = verify(der, now);
    if let Err(error) = &result {
        debug!(%error, "rejected peer certificate");
    }
    result
}

/// Verifies a presented chain: exactly one certificate, then [`verify_certificate`].
pub fn verify_certificate_chain(
    now: SystemTime,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
) -> Result<VerifiedPeer, CertificateError> {
    if !intermediates.is_empty() {
        let error = CertificateError::MoreThanOneCertificate {
            count: 1 + intermediates.len(),
        };
        debug!(%error, "rejected peer certificate");
        return Err(error);
    }
    verify_certificate(now, end_entity)
}

/// The peer of a certificate kept in a resumed TLS session: the certificate was verified in
/// full when the session began (and the session came back sealed under our own ticket key, or
/// from our own memory), so its signatures are not checked again; its form, its validity at
/// `now` and its libp2p extension are, and the PeerId is derived from it anew.
pub fn session_peer(now: SystemTime, der: &[u8]) -> Result<VerifiedPeer, CertificateError> {
    examine(der, now, Signatures::Trusted)
}

/// Whether [`examine`] checks the certificate's signatures.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Signatures {
    Check,
    /// Checked before, when the session that kept the certificate began.
    Trusted,
}

fn verify(der: &[u8], now: SystemTime) -> Result<VerifiedPeer, CertificateError> {
    examine(der, now, Signatures::Check)
}

fn examine(
    der: &[u8],
    now: SystemTime,
    signatures: Signatures,
) -> Result<VerifiedPeer, CertificateError> {
    // Deep parsing of known extensions is of no use to us and only widens the attack surface.
    let (rest, certificate) = X509CertificateParser::new()
        .with_deep_parse_extensions(false)
        .parse(der)
        .map_err(|e| CertificateError::BadDer(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CertificateError::TrailingData);
    }

    let validity = certificate.validity();
    let now = unix_seconds(now);
    if now < validity.not_before.timestamp() {
        debug!(not_before = %validity.not_before, "certificate not yet valid");
        return Err(CertificateError::NotYetValid);
    }
    if now > validity.not_after.timestamp() {
        debug!(not_after = %validity.not_after, "certificate expired");
        return Err(CertificateError::Expired);
    }

    let mut libp2p_extension = None;
    for extension in certificate.extensions() {
        if extension.oid == LIBP2P_EXTENSION {
            if libp2p_extension.replace(extension.value).is_some() {
                return Err(CertificateError::DuplicateExtension);
            }
        } else if extension.critical {
            return Err(CertificateError::UnknownCriticalExtension {
                oid: extension.oid.to_id_string(),
            });
        }
    }
    let libp2p_extension = libp2p_extension.ok_or(CertificateError::MissingExtension)?;

    let algorithm = &certificate.signature_algorithm;
    if !ALLOWED_SIGNATURE_ALGORITHMS.contains(&&algorithm.algorithm) {
        return Err(CertificateError::UnsupportedSignatureAlgorithm {
            oid: algorithm.algorithm.to_id_string(),
        });
    }
    if certificate.tbs_certificate.signature != *algorithm {
        return Err(CertificateError::BadSelfSignature);
    }
    let (host_key, signature) = decode_signed_key(libp2p_extension)?;
    let host_key = PublicKey::try_decode_protobuf(host_key)
        .map_err(|e| CertificateError::BadHostKey(e.to_string()))?;
    let spki = certificate.public_key().raw;
    if signatures == Signatures::Trusted {
        return Ok(VerifiedPeer {
            peer_id: host_key.to_peer_id(),
            certificate_key_spki: spki.to_vec(),
        });
    }
    certificate.verify_signature(None).map_err(|e| match e {
        X509Error::SignatureUnsupportedAlgorithm => {
            CertificateError::UnsupportedSignatureAlgorithm {
                oid: algorithm.algorithm.to_id_string(),
            }
        }
        _ => CertificateError::BadSelfSignature,
    })?;

    let mut message = SIGNING_PREFIX.to_vec();
    message.extend_from_slice(spki);
    if !host_key.verify(&message, signature) {
        return Err(CertificateError::BadExtensionSignature);
    }

    Ok(VerifiedPeer {
        peer_id: host_key.to_peer_id(),
        certificate_key_spki: spki.to_vec(),
    })
}

/// Seconds since the Unix epoch, negative before it, saturating far from it.
fn unix_seconds(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

fn generation(error: impl std::fmt::Display) -> CertificateError {
    CertificateError::Generation(error.to_string())
}

fn to_datetime(time: SystemTime) -> Result<time::OffsetDateTime, CertificateError> {
    time::OffsetDateTime::from_unix_timestamp(unix_seconds(time))
        .map_err(|e| generation(format!("validity time out of range: {e}")))
}

const DER_OCTET_STRING: u8 = 0x04;
const DER_SEQUENCE: u8 = 0x30;

/// DER of `SignedKey ::= SEQUENCE { publicKey OCTET STRING, signature OCTET STRING }`.
fn encode_signed_key(public_key: &[u8], signature: &[u8]) -> Vec<u8> {
    let mut fields = Vec::new();
    write_der(DER_OCTET_STRING, public_key, &mut fields);
    write_der(DER_OCTET_STRING, signature, &mut fields);
    let mut out = Vec::new();
    write_der(DER_SEQUENCE, &fields, &mut out);
    out
}

/// Appends one DER tag-length-value (definite length, minimal length encoding).
fn write_der(tag: u8, content: &[u8], out: &mut Vec<u8>) {
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let significant = &bytes[bytes.iter().take_while(|&&b| b == 0).count()..];
        out.push(0x80 | significant.len() as u8);
        out.extend_from_slice(significant);
    }
    out.extend_from_slice(content);
}

/// Splits a DER `SignedKey` into (publicKey, signature); nothing may follow either.
fn decode_signed_key(value: &[u8]) -> Result<(&[u8], &[u8]), CertificateError> {
    let bad = |_| CertificateError::BadExtensionEncoding;
    let (rest, fields) = Sequence::from_der_and_then(value, |content| {
        Ok::<_, nom::Err<Asn1Error>>((&[][..], content))
    })
    .map_err(bad)?;
    if !rest.is_empty() {
        return Err(CertificateError::BadExtensionEncoding);
    }
    let (fields, public_key) = <&[u8]>::from_der(fields).map_err(bad)?;
    let (fields, signature) = <&[u8]>::from_der(fields).map_err(bad)?;
    if !fields.is_empty() {
        return Err(CertificateError::BadExtensionEncoding);
    }
    Ok((public_key, signature))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms_of_the_oid_agree() {
        assert_eq!(Oid::from(LIBP2P_EXTENSION_OID), Ok(LIBP2P_EXTENSION));
    }

    #[test]
    fn signed_key_round_trips_short_and_long() {
        for (key_len, sig_len) in [(0, 0), (36, 64), (127, 128), (300, 256), (70_000, 3)] {
            let key = vec![0xaa; key_len];
            let sig = vec![0x55; sig_len];
            let der = encode_signed_key(&key, &sig);
            assert_eq!(decode_signed_key(&der), Ok((&key[..], &sig[..])));
        }
    }

    #[test]
    fn signed_key_rejects_extra_fields_and_trailing_bytes() {
        let mut der = encode_signed_key(b"key", b"sig");
        der.push(0);
        assert_eq!(
            decode_signed_key(&der),
            Err(CertificateError::BadExtensionEncoding)
        );

        let mut fields = Vec::new();
        for _ in 0..3 {
            write_der(DER_OCTET_STRING, b"x", &mut fields);
        }
        let mut three = Vec::new();
        write_der(DER_SEQUENCE, &fields, &mut three);
        assert_eq!(
            decode_signed_key(&three),
            Err(CertificateError::BadExtensionEncoding)
        );
    }

    #[test]
    fn unix_seconds_handles_both_sides_of_the_epoch() {
        use std::time::Duration;
        assert_eq!(unix_seconds(UNIX_EPOCH + Duration::from_secs(5)), 5);
        assert_eq!(unix_seconds(UNIX_EPOCH - Duration::from_secs(5)), -5);
    }
}
