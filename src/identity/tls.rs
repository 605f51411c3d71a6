//! rustls configurations for libp2p's QUIC: TLS 1.3 only, ALPN `libp2p`, mutual authentication
//! with self-signed libp2p certificates, no SNI, no session resumption.
//!
//! STUB: interface agreed between the identity and manager work; bodies to be written.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libp2p_identity::PeerId;

use super::{CertificateError, Identity};

/// The ALPN protocol of libp2p's QUIC.
pub const ALPN: &[u8] = b"libp2p";

/// Errors building the TLS context.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The certificate could not be generated.
    #[error("certificate generation failed: {0}")]
    Certificate(#[from] CertificateError),
    /// rustls refused the configuration.
    #[error("rustls configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The wall-clock time the core was given, shared with the certificate verifiers.
///
/// The sans-IO core never reads the system clock: the driver hands in the time, the manager
/// stores it here, and rustls' verifiers read it through [`rustls::time_provider::TimeProvider`].
#[derive(Debug, Clone)]
pub struct WallClock(Arc<AtomicU64>);

impl WallClock {
    /// A clock showing `now`.
    pub fn new(now: SystemTime) -> Self {
        let clock = Self(Arc::new(AtomicU64::new(0)));
        clock.set(now);
        clock
    }

    /// Moves the clock to `now` (millisecond resolution; times before 1970 read as 1970).
    pub fn set(&self, now: SystemTime) {
        let millis = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.0.store(millis, Ordering::Relaxed);
    }

    /// The time last set.
    pub fn get(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.0.load(Ordering::Relaxed))
    }
}

/// Where a verifier leaves its verdict on the peer's certificate, for one connection.
///
/// The certificate is parsed once, in the verifier, at handshake time; the connection's owner
/// reads the PeerId (or the typed reason for rejection) from here afterwards.
#[derive(Debug, Clone, Default)]
pub struct VerificationSlot(Arc<Mutex<Option<Result<PeerId, CertificateError>>>>);

impl VerificationSlot {
    /// The verdict, once the verifier has run.
    pub fn outcome(&self) -> Option<Result<PeerId, CertificateError>> {
        match self.0.lock() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// The certificate and key of one identity, and the rustls configurations built on them.
pub struct TlsContext {
    _identity: Identity,
    _clock: WallClock,
}

impl TlsContext {
    /// Generates the certificate for `identity`; verifiers read the time from `clock`.
    pub fn new(identity: &Identity, clock: WallClock) -> Result<Self, TlsError> {
        let _ = (identity, clock);
        todo!()
    }

    /// A client configuration for one dial; `expected` pins the remote PeerId.
    pub fn client_config(
        &self,
        expected: Option<PeerId>,
    ) -> (Arc<rustls::ClientConfig>, VerificationSlot) {
        let _ = expected;
        todo!()
    }

    /// A server configuration for one inbound connection.
    pub fn server_config(&self) -> (Arc<rustls::ServerConfig>, VerificationSlot) {
        todo!()
    }
}
