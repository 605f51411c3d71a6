//! Certificate verification: the spec's vectors, hostile certificates, and property tests.

#[path = "support/vectors.rs"]
mod vectors;

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proptest::prelude::*;
use quicpeer::identity::certificate::CertificateParams;
use quicpeer::identity::{
    generate_certificate, verify_certificate, verify_certificate_chain, CertificateError, Keypair,
    PeerId, LIBP2P_EXTENSION_OID,
};
use rustls::pki_types::CertificateDer;

/// 2026-01-01T00:00:00Z: inside every vector's validity.
fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_767_225_600)
}

const DAY: Duration = Duration::from_secs(86_400);

fn host_key() -> &'static Keypair {
    static KEY: OnceLock<Keypair> = OnceLock::new();
    KEY.get_or_init(Keypair::generate_ed25519)
}

fn build(params: CertificateParams<'_>) -> Vec<u8> {
    params.generate().expect("generate").0.to_vec()
}

#[allow(clippy::result_large_err)] // the library's error type, as is
fn verify(der: &[u8]) -> Result<PeerId, CertificateError> {
    verify_certificate(now(), der).map(|peer| peer.peer_id)
}

/// One valid certificate of [`host_key`], shared by the tests that mutate it.
fn valid_certificate() -> &'static [u8] {
    static DER: OnceLock<Vec<u8>> = OnceLock::new();
    DER.get_or_init(|| build(CertificateParams::new(host_key())))
}

#[test]
fn spec_vectors() {
    let vectors = vectors::load();
    assert_eq!(vectors.len(), 8, "the file holds eight vectors");
    let (mut accepted, mut rejected) = (0, 0);
    for vector in &vectors {
        let result = verify(&vector.der);
        match &vector.expect {
            Some(peer_id) => {
                assert_eq!(
                    result.map(|p| p.to_string()).as_ref(),
                    Ok(peer_id),
                    "{}",
                    vector.name
                );
                accepted += 1;
            }
            None => {
                assert_eq!(
                    result,
                    Err(CertificateError::BadExtensionSignature),
                    "{}",
                    vector.name
                );
                rejected += 1;
            }
        }
    }
    assert_eq!((accepted, rejected), (6, 2));
}

#[test]
fn spec_vectors_are_checked_against_the_given_time() {
    let vector = &vectors::load()[0];
    let before = UNIX_EPOCH + Duration::from_secs(100_000_000); // 1973
    assert_eq!(
        verify_certificate(before, &vector.der),
        Err(CertificateError::NotYetValid)
    );
}

#[test]
fn generated_certificate_verifies_for_every_key_type() {
    let mut rsa = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/rsa-2048.pk8"
    ))
    .expect("read RSA key");
    for keypair in [
        Keypair::generate_ed25519(),
        Keypair::generate_ecdsa(),
        Keypair::generate_secp256k1(),
        Keypair::rsa_from_pkcs8(&mut rsa).expect("RSA key"),
    ] {
        let (der, _key) = generate_certificate(&keypair).expect("generate");
        let peer = verify_certificate(now(), &der).expect("verifies");
        assert_eq!(peer.peer_id, keypair.public().to_peer_id());
        // The SPKI is the certificate key's: P-256, not the host key.
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).expect("parse");
        assert_eq!(peer.certificate_key_spki, parsed.public_key().raw);
    }
}

#[test]
fn generated_extension_is_not_critical() {
    let (_, parsed) = x509_parser::parse_x509_certificate(valid_certificate()).expect("parse");
    let extensions = parsed.extensions();
    assert_eq!(extensions.len(), 1);
    assert!(!extensions[0].critical);
    assert_eq!(extensions[0].oid.to_id_string(), "1.3.6.1.4.1.53594.1.1");
}

#[test]
fn critical_libp2p_extension_is_accepted() {
    let der = build(CertificateParams {
        critical: true,
        ..CertificateParams::new(host_key())
    });
    assert_eq!(verify(&der), Ok(host_key().public().to_peer_id()));
}

#[test]
fn expired() {
    let der = build(CertificateParams {
        not_before: now() - 10 * DAY,
        not_after: now() - DAY,
        ..CertificateParams::new(host_key())
    });
    assert_eq!(verify(&der), Err(CertificateError::Expired));
    // The same certificate was fine while it lasted: only `now` decides.
    assert!(verify_certificate(now() - 2 * DAY, &der).is_ok());
}

#[test]
fn not_yet_valid() {
    let der = build(CertificateParams {
        not_before: now() + DAY,
        not_after: now() + 10 * DAY,
        ..CertificateParams::new(host_key())
    });
    assert_eq!(verify(&der), Err(CertificateError::NotYetValid));
}

#[test]
fn missing_extension() {
    let der = build(CertificateParams {
        libp2p_extensions: 0,
        ..CertificateParams::new(host_key())
    });
    assert_eq!(verify(&der), Err(CertificateError::MissingExtension));
}

#[test]
fn duplicate_extension() {
    let der = build(CertificateParams {
        libp2p_extensions: 2,
        ..CertificateParams::new(host_key())
    });
    assert_eq!(verify(&der), Err(CertificateError::DuplicateExtension));
}

#[test]
fn unknown_critical_extension() {
    let der = build(CertificateParams {
        extra_extensions: vec![(vec![1, 2, 3, 4], true, vec![0x05, 0x00])],
        ..CertificateParams::new(host_key())
    });
    assert_eq!(
        verify(&der),
        Err(CertificateError::UnknownCriticalExtension {
            oid: "1.2.3.4".into()
        })
    );
}

#[test]
fn unknown_non_critical_extension_is_ignored() {
    let der = build(CertificateParams {
        extra_extensions: vec![(vec![1, 2, 3, 4], false, vec![0x05, 0x00])],
        ..CertificateParams::new(host_key())
    });
    assert_eq!(verify(&der), Ok(host_key().public().to_peer_id()));
}

#[test]
fn extension_signed_by_another_key() {
    let other = Keypair::generate_ed25519();
    let der = build(CertificateParams {
        extension_signer: &other,
        ..CertificateParams::new(host_key())
    });
    assert_eq!(verify(&der), Err(CertificateError::BadExtensionSignature));
}

#[test]
fn extension_that_is_not_a_signed_key() {
    // No libp2p extension of our own, then one whose value is an INTEGER instead of a SignedKey.
    let der = build(CertificateParams {
        libp2p_extensions: 0,
        extra_extensions: vec![(LIBP2P_EXTENSION_OID.to_vec(), false, vec![0x02, 0x01, 0x07])],
        ..CertificateParams::new(host_key())
    });
    assert_eq!(verify(&der), Err(CertificateError::BadExtensionEncoding));
}

#[test]
fn broken_self_signature() {
    // The DER ends inside the signature value.
    let mut der = valid_certificate().to_vec();
    *der.last_mut().expect("nonempty") ^= 0x01;
    assert_eq!(verify(&der), Err(CertificateError::BadSelfSignature));
}

/// DER of the OID ecdsa-with-SHA256 (1.2.840.10045.4.3.2), which our certificates are signed with.
const ECDSA_SHA256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];

/// `der` with the `nth` occurrence of ecdsa-with-SHA256 turned into ecdsa-with-SHA512, an
/// algorithm ring does not verify (same length, so the DER stays well formed).
fn with_sha512_algorithm(der: &[u8], nth: usize) -> Vec<u8> {
    let at = der
        .windows(ECDSA_SHA256.len())
        .enumerate()
        .filter(|(_, w)| *w == ECDSA_SHA256)
        .nth(nth)
        .expect("algorithm identifier")
        .0;
    let mut der = der.to_vec();
    der[at + ECDSA_SHA256.len() - 1] = 0x04;
    der
}

#[test]
fn unsupported_signature_algorithm() {
    // Occurrence 0 is inside the signed part, occurrence 1 the outer algorithm; once the first is
    // changed, the outer one is the first left.
    let both = with_sha512_algorithm(&with_sha512_algorithm(valid_certificate(), 0), 0);
    assert_eq!(
        verify(&both),
        Err(CertificateError::UnsupportedSignatureAlgorithm {
            oid: "1.2.840.10045.4.3.4".into()
        })
    );
}

#[test]
fn inner_and_outer_signature_algorithms_must_agree() {
    let inner_only = with_sha512_algorithm(valid_certificate(), 0);
    assert_eq!(verify(&inner_only), Err(CertificateError::BadSelfSignature));
}

#[test]
fn garbage_der() {
    for garbage in [
        &b""[..],
        b"hello",
        &[0x30, 0x03, 0x02, 0x01, 0x00],
        &[0xff; 64],
    ] {
        assert!(
            matches!(verify(garbage), Err(CertificateError::BadDer(_))),
            "{garbage:?}"
        );
    }
}

#[test]
fn every_truncation_is_an_error() {
    let der = valid_certificate();
    for len in 0..der.len() {
        let result = verify(&der[..len]);
        assert!(
            matches!(result, Err(CertificateError::BadDer(_))),
            "prefix {len}: {result:?}"
        );
    }
}

#[test]
fn trailing_data() {
    let mut der = valid_certificate().to_vec();
    der.push(0);
    assert_eq!(verify(&der), Err(CertificateError::TrailingData));
}

#[test]
fn chain_of_two() {
    let der = CertificateDer::from(valid_certificate());
    assert_eq!(
        verify_certificate_chain(now(), &der, std::slice::from_ref(&der)),
        Err(CertificateError::MoreThanOneCertificate { count: 2 })
    );
    assert_eq!(
        verify_certificate_chain(now(), &der, &[]).map(|p| p.peer_id),
        Ok(host_key().public().to_peer_id())
    );
}

#[test]
fn errors_are_described() {
    let error = CertificateError::MoreThanOneCertificate { count: 2 };
    assert_eq!(
        error.to_string(),
        "2 certificates presented, expected exactly one"
    );
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = verify(&bytes);
    }

    #[test]
    fn flipped_bytes_never_verify_as_another_peer(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4)
    ) {
        let mut der = valid_certificate().to_vec();
        for (index, mask) in flips {
            let i = index.index(der.len());
            der[i] ^= mask;
        }
        if let Ok(peer_id) = verify(&der) {
            prop_assert_eq!(peer_id, host_key().public().to_peer_id());
        }
    }
}
