//! The `certificate` target: arbitrary bytes as the certificate a peer presents.
//!
//! The bytes go to [`verify_certificate`] and [`verify_certificate_chain`], which must agree
//! and be deterministic. A certificate that passes then goes into a real TLS 1.3 handshake,
//! presented by a client that does not hold the certificate's key: our server's verifier must
//! reject the handshake signature and never report the certificate's PeerId as verified.

use std::sync::{Arc, OnceLock};

use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer, ServerName};

use super::datagram::wall_origin;
use quicpeer::identity::{verify_certificate, verify_certificate_chain, CertificateError};
use quicpeer::internals::{TlsContext, WallClock};
use quicpeer::Identity;

/// Rounds of a TLS handshake before it is declared stuck.
const MAX_ROUNDS: usize = 16;

/// The `certificate` fuzz target. Panics only when an invariant fails.
pub fn certificate(data: &[u8]) {
    let now = wall_origin();
    let verified = verify_certificate(now, data);
    assert_eq!(
        verify_certificate_chain(now, &CertificateDer::from(data), &[]),
        verified,
        "invariant: verify_certificate and verify_certificate_chain disagree"
    );
    let Ok(peer) = verified else {
        return;
    };
    assert_eq!(
        verify_certificate(now, data).as_ref(),
        Ok(&peer),
        "invariant: verification is not deterministic"
    );
    let (key, spki) = client_key();
    if peer.certificate_key_spki == *spki {
        // The input carries our own client key: the client does hold it.
        return;
    }
    handshake_without_the_key(data, key);
}

/// A P-256 key for the client (built once) and its SubjectPublicKeyInfo.
fn client_key() -> &'static (PrivatePkcs8KeyDer<'static>, Vec<u8>) {
    static KEY: OnceLock<(PrivatePkcs8KeyDer<'static>, Vec<u8>)> = OnceLock::new();
    KEY.get_or_init(|| {
        let key = match rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256) {
            Ok(key) => key,
            Err(error) => panic!("harness: cannot generate a P-256 key: {error}"),
        };
        let spki = rcgen::PublicKeyData::subject_public_key_info(&key);
        (PrivatePkcs8KeyDer::from(key.serialize_der()), spki)
    })
}

/// Our server, built once (its certificate generation is the costly part).
fn server() -> &'static TlsContext {
    static SERVER: OnceLock<TlsContext> = OnceLock::new();
    SERVER.get_or_init(|| {
        let identity = Identity::from_ed25519_seed([3; 32]);
        match TlsContext::new(&identity, WallClock::new(wall_origin())) {
            Ok(context) => context,
            Err(error) => panic!("harness: cannot build the server's TLS context: {error}"),
        }
    })
}

/// A client presents `certificate` but signs with `key`, which is not the certificate's key.
fn handshake_without_the_key(certificate: &[u8], key: &PrivatePkcs8KeyDer<'static>) {
    let client = match TlsContext::with_certificate(
        CertificateDer::from(certificate.to_vec()),
        key.clone_key(),
        WallClock::new(wall_origin()),
    ) {
        Ok(context) => context,
        Err(error) => panic!("harness: cannot build the client's TLS context: {error}"),
    };
    let (client_config, _) = client.client_config(None);
    let (server_config, slot) = server().server_config();
    let name = ServerName::try_from("l").unwrap_or_else(|_| unreachable!("a valid DNS name"));
    let (Ok(mut client), Ok(mut server)) = (
        rustls::ClientConnection::new(Arc::clone(&client_config), name),
        rustls::ServerConnection::new(Arc::clone(&server_config)),
    ) else {
        panic!("harness: rustls refused our configurations");
    };
    let mut wire = Vec::new();
    for _ in 0..MAX_ROUNDS {
        wire.clear();
        while client.wants_write() {
            if client.write_tls(&mut wire).is_err() {
                break;
            }
        }
        let mut input = wire.as_slice();
        while !input.is_empty() {
            match server.read_tls(&mut input) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let server_failed = server.process_new_packets().is_err();
        wire.clear();
        while server.wants_write() {
            if server.write_tls(&mut wire).is_err() {
                break;
            }
        }
        let mut input = wire.as_slice();
        while !input.is_empty() {
            match client.read_tls(&mut input) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let client_failed = client.process_new_packets().is_err();
        if server_failed || client_failed {
            break;
        }
        assert!(
            server.is_handshaking(),
            "invariant: the server completed a handshake with a client that lacks the key of \
             the certificate it presented"
        );
    }
    match slot.outcome() {
        Some(Err(CertificateError::BadHandshakeSignature)) => {}
        Some(Ok(peer)) => panic!(
            "invariant: {peer} verified for a client that does not hold its certificate's key"
        ),
        other => panic!(
            "invariant: a certificate that passed verification, presented without its key, \
             ended as {other:?} instead of a rejected handshake signature"
        ),
    }
}
