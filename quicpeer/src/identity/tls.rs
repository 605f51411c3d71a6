//! rustls configurations for libp2p's QUIC: TLS 1.3 only, ALPN `libp2p`, mutual authentication
//! with self-signed libp2p certificates, no SNI, session resumption only between quicpeer nodes.
//!
//! rustls' stock verifiers want a certificate authority and reject unknown critical extensions;
//! libp2p has neither CAs nor a fixed extension criticality. So this module supplies its own
//! verifiers, which run [`verify_certificate_chain`] at the time of the core's [`WallClock`],
//! check the TLS 1.3 CertificateVerify with the certificate's key, and leave the verdict in a
//! per-connection [`VerificationSlot`] for the connection manager. A resumed session skips the
//! verifiers, so resumption is off unless [`TlsContext::enable_resumption`] turned it on, and
//! then the PeerId is read back from the session and checked again
//! ([`VerificationSlot::complete_resumption`]; the design is in [`super::resumption`]).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libp2p_identity::PeerId;
use quinn_proto::crypto::rustls::{NoInitialCipherSuite, QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, Resumption, Tls12Resumption};
use rustls::crypto::{verify_tls13_signature_with_raw_key, WebPkiSupportedAlgorithms};
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, SubjectPublicKeyInfoDer,
    UnixTime,
};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, NoServerSessionStorage, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::time_provider::TimeProvider;
use rustls::{
    ClientConfig, ConfigBuilder, DigitallySignedStruct, DistinguishedName, KeyLog, OtherError,
    PeerIncompatible, ServerConfig, SignatureScheme, WantsVerifier,
};
use tracing::debug;

use super::certificate::{self, verify_certificate_chain, VerifiedPeer};
use super::resumption::{self, ConnTicketer, DialSessions, SessionCache, TicketKeys};
use super::{generate_certificate, CertificateError, Identity};

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

/// quinn's server reads the wall clock for its address-validation tokens; hand it this clock
/// (`quinn_proto::ServerConfig::time_source`) so the core stays free of the system clock.
impl quinn_proto::TimeSource for WallClock {
    fn now(&self) -> SystemTime {
        self.get()
    }
}

impl TimeProvider for WallClock {
    fn current_time(&self) -> Option<UnixTime> {
        self.get()
            .duration_since(UNIX_EPOCH)
            .ok()
            .map(UnixTime::since_unix_epoch)
    }
}

/// Where a verifier leaves its verdict on the peer's certificate, for one connection.
///
/// The certificate is parsed once, in the verifier, at handshake time; the connection's owner
/// reads the PeerId (or the typed reason for rejection) from here afterwards. `Some(Ok(peer))`
/// appears only once the peer has also proven, with its CertificateVerify signature, that it
/// holds the certificate's key; `Some(Err(_))` as soon as anything is rejected. A resumed
/// handshake runs no verifier: the slot then notes the ticket, and
/// [`complete_resumption`](Self::complete_resumption) fills the verdict in from the session.
#[derive(Debug, Clone, Default)]
pub struct VerificationSlot(Arc<Mutex<SlotState>>);

#[derive(Debug, Default)]
struct SlotState {
    outcome: Option<Result<VerifiedPeer, CertificateError>>,
    /// The verified certificate carries quicpeer's serial marker (its server seals tickets we
    /// can resume with).
    quicpeer: bool,
    /// A ticket took part: offered by this client for a PeerId, or opened by this server.
    ticket: Option<Ticket>,
    /// The verdict came from a resumed session, not from a verifier.
    resumed: bool,
}

#[derive(Debug, Clone, Copy)]
enum Ticket {
    Offered(PeerId),
    Opened,
}

impl VerificationSlot {
    /// The verdict, once the verifier has run (or the resumption was completed).
    pub fn outcome(&self) -> Option<Result<PeerId, CertificateError>> {
        match lock(&self.0).outcome.as_ref()? {
            Ok(peer) => Some(Ok(peer.peer_id)),
            Err(error) => Some(Err(error.clone())),
        }
    }

    /// The DER of the verified peer's certificate key (its SubjectPublicKeyInfo): fresh for
    /// every process of every libp2p implementation, so it tells incarnations of one PeerId
    /// apart. `None` after a resumption: the certificate in the session may be an earlier
    /// incarnation's, so it says nothing about this one.
    pub fn certificate_key(&self) -> Option<Vec<u8>> {
        let state = lock(&self.0);
        match state.outcome.as_ref() {
            Some(Ok(peer)) if !state.resumed => Some(peer.certificate_key_spki.clone()),
            _ => None,
        }
    }

    /// Whether the handshake resumed an earlier session.
    pub fn resumed(&self) -> bool {
        lock(&self.0).resumed
    }

    /// Records the verdict.
    pub(crate) fn set(&self, outcome: Result<VerifiedPeer, CertificateError>) {
        lock(&self.0).outcome = Some(outcome);
    }

    pub(crate) fn set_verified(&self, peer: VerifiedPeer, quicpeer: bool) {
        let mut state = lock(&self.0);
        state.outcome = Some(Ok(peer));
        state.quicpeer = quicpeer;
    }

    pub(crate) fn ticket_offered(&self, peer: PeerId) {
        lock(&self.0).ticket = Some(Ticket::Offered(peer));
    }

    pub(crate) fn ticket_opened(&self) {
        lock(&self.0).ticket = Some(Ticket::Opened);
    }

    /// Whether the verified peer is a quicpeer node: its certificate has the serial marker, or
    /// the session was resumed from a quicpeer ticket (which may not be completed yet when the
    /// next ticket is issued: a ticket this server opened was issued to a quicpeer client).
    pub(crate) fn peer_is_quicpeer(&self) -> bool {
        let state = lock(&self.0);
        match &state.outcome {
            Some(Ok(_)) => state.quicpeer || state.resumed,
            Some(Err(_)) => false,
            None => matches!(state.ticket, Some(Ticket::Opened)),
        }
    }

    /// Whether a ticket the server sent on this connection may be kept for `peer`: the server
    /// is verified as `peer`, and is a quicpeer node (or the session was itself resumed).
    pub(crate) fn may_keep_ticket_of(&self, peer: &PeerId) -> bool {
        let state = lock(&self.0);
        match &state.outcome {
            Some(Ok(p)) => p.peer_id == *peer && (state.quicpeer || state.resumed),
            Some(Err(_)) => false,
            // Resumed with a ticket kept for `peer` (not completed yet): only a holder of that
            // peer's ticket key could have opened it.
            None => matches!(state.ticket, Some(Ticket::Offered(p)) if p == *peer),
        }
    }

    /// After a handshake that completed without a verdict: if a ticket took part, the session
    /// was resumed, and `peer_certificates` (the chain rustls kept in the session, verified when
    /// the session began) names the peer. Checks it (validity at `now`, and on the client that it
    /// is the PeerId the ticket was kept for) and records the verdict. Returns whether it did.
    pub fn complete_resumption(
        &self,
        now: SystemTime,
        peer_certificates: Option<&[CertificateDer<'static>]>,
    ) -> bool {
        let mut state = lock(&self.0);
        if state.outcome.is_some() {
            return false;
        }
        let Some(ticket) = state.ticket else {
            return false;
        };
        let verdict = match peer_certificates {
            Some([end_entity]) => certificate::session_peer(now, end_entity),
            Some(chain) => Err(CertificateError::MoreThanOneCertificate { count: chain.len() }),
            None => Err(CertificateError::NoCertificate),
        };
        let verdict = verdict.and_then(|peer| match ticket {
            Ticket::Offered(expected) if expected != peer.peer_id => {
                Err(CertificateError::PeerIdMismatch {
                    expected,
                    actual: peer.peer_id,
                })
            }
            _ => Ok(peer),
        });
        if let Err(error) = &verdict {
            debug!(%error, "resumed session rejected");
        }
        state.resumed = verdict.is_ok();
        state.outcome = Some(verdict);
        true
    }
}

/// Locks `mutex`, ignoring poison: the data is a plain value that is always consistent.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A certificate with its signing key loaded, ready to present.
///
/// Loading checks the key (for ECDSA, a scalar multiplication), which costs more than building
/// everything else of a [`TlsContext`]: fuzzers and benchmarks that build many contexts of one
/// identity load its certificate once and share it.
#[derive(Clone)]
pub struct LoadedCertificate(Arc<CertifiedKey>);

impl LoadedCertificate {
    /// Loads `key` (PKCS #8) as the signing key of `certificate`.
    pub fn load(
        certificate: CertificateDer<'static>,
        key: PrivatePkcs8KeyDer<'static>,
    ) -> Result<Self, TlsError> {
        // Built directly: `with_single_cert` would parse our certificate with webpki, which
        // rejects the (allowed) critical libp2p extension.
        let provider = rustls::crypto::ring::default_provider();
        let signing_key = provider
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(key))?;
        Ok(Self(Arc::new(CertifiedKey::new(
            vec![certificate],
            signing_key,
        ))))
    }
}

impl fmt::Debug for LoadedCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedCertificate").finish_non_exhaustive()
    }
}

/// The certificate and key of one identity, and the rustls configurations built on them.
pub struct TlsContext {
    certificate: Arc<OwnCertificate>,
    algorithms: WebPkiSupportedAlgorithms,
    client: ConfigBuilder<ClientConfig, WantsVerifier>,
    server: ConfigBuilder<ServerConfig, WantsVerifier>,
    clock: WallClock,
    /// Session resumption, once enabled: the server's ticket keys and the client's tickets.
    resumption: Option<(Arc<TicketKeys>, Arc<SessionCache>)>,
    /// Where both sides' configurations log TLS secrets; rustls logs nothing by default.
    key_log: Option<Arc<dyn KeyLog>>,
    /// Handshakes use [`super::null_crypto`] instead of TLS (fuzzing only).
    #[cfg(feature = "fuzzing")]
    null_crypto: Option<super::null_crypto::NullCrypto>,
}

impl TlsContext {
    /// Generates the certificate for `identity`; verifiers read the time from `clock`.
    pub fn new(identity: &Identity, clock: WallClock) -> Result<Self, TlsError> {
        let (certificate, key) = generate_certificate(identity.keypair())?;
        Self::with_certificate(certificate, key, clock)
    }

    /// A context presenting `certificate` (signed by `key`) instead of a generated one; for tests
    /// that need a peer with a particular certificate.
    #[doc(hidden)]
    pub fn with_certificate(
        certificate: CertificateDer<'static>,
        key: PrivatePkcs8KeyDer<'static>,
        clock: WallClock,
    ) -> Result<Self, TlsError> {
        Self::with_loaded(&LoadedCertificate::load(certificate, key)?, clock)
    }

    /// A context presenting a certificate whose key is already loaded.
    #[doc(hidden)]
    pub fn with_loaded(
        certificate: &LoadedCertificate,
        clock: WallClock,
    ) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let time: Arc<dyn TimeProvider> = Arc::new(clock.clone());
        let versions = &[&rustls::version::TLS13];
        Ok(Self {
            certificate: Arc::new(OwnCertificate(certificate.0.clone())),
            algorithms: provider.signature_verification_algorithms,
            client: ClientConfig::builder_with_details(provider.clone(), time.clone())
                .with_protocol_versions(versions)?,
            server: ServerConfig::builder_with_details(provider, time)
                .with_protocol_versions(versions)?,
            clock,
            resumption: None,
            key_log: None,
            #[cfg(feature = "fuzzing")]
            null_crypto: None,
        })
    }

    /// Turns TLS 1.3 session resumption on (see [`super::resumption`]): the server seals
    /// tickets with keys derived from `ticket_secret` (derive it from the identity, so that a
    /// restarted node accepts its predecessor's tickets), and dials of a known PeerId offer a
    /// ticket kept from an earlier connection to it.
    pub fn enable_resumption(&mut self, ticket_secret: [u8; 32]) {
        self.resumption = Some((
            Arc::new(TicketKeys::new(ticket_secret, self.clock.clone())),
            Arc::new(SessionCache::default()),
        ));
    }

    /// Logs the TLS secrets of every connection configured from now on to `key_log` (the
    /// `SSLKEYLOGFILE` hook; see [`Config::key_log`](crate::Config::key_log)).
    pub fn set_key_log(&mut self, key_log: Arc<dyn KeyLog>) {
        self.key_log = Some(key_log);
    }

    /// Makes every connection configured from now on use the null handshake of
    /// [`super::null_crypto`] instead of TLS. Fuzzing only: it protects nothing.
    #[cfg(feature = "fuzzing")]
    pub fn set_null_crypto(&mut self, null_crypto: Option<super::null_crypto::NullCrypto>) {
        self.null_crypto = null_crypto;
    }

    #[cfg(feature = "fuzzing")]
    fn null_context(&self) -> Option<super::null_crypto::NullContext> {
        Some(super::null_crypto::NullContext {
            certificate: self.certificate.0.cert.first()?.clone(),
            clock: self.clock.clone(),
            crypto: self.null_crypto.clone()?,
        })
    }

    /// quinn's client configuration for one dial; `expected` pins the remote PeerId.
    pub(crate) fn quic_client_config(
        &self,
        expected: Option<PeerId>,
    ) -> Result<(Arc<dyn quinn_proto::crypto::ClientConfig>, VerificationSlot), NoInitialCipherSuite>
    {
        #[cfg(feature = "fuzzing")]
        if let Some(context) = self.null_context() {
            let slot = VerificationSlot::default();
            let config = super::null_crypto::NullClientConfig::new(context, expected, slot.clone());
            return Ok((Arc::new(config), slot));
        }
        let (client, slot) = self.client_config(expected);
        Ok((Arc::new(QuicClientConfig::try_from(client)?), slot))
    }

    /// quinn's server configuration for one inbound connection.
    pub(crate) fn quic_server_config(
        &self,
    ) -> Result<(Arc<dyn quinn_proto::crypto::ServerConfig>, VerificationSlot), NoInitialCipherSuite>
    {
        #[cfg(feature = "fuzzing")]
        if let Some(context) = self.null_context() {
            let slot = VerificationSlot::default();
            let config = super::null_crypto::NullServerConfig::new(context, slot.clone());
            return Ok((Arc::new(config), slot));
        }
        let (server, slot) = self.server_config();
        Ok((Arc::new(QuicServerConfig::try_from(server)?), slot))
    }

    /// A client configuration for one dial; `expected` pins the remote PeerId.
    pub fn client_config(
        &self,
        expected: Option<PeerId>,
    ) -> (Arc<rustls::ClientConfig>, VerificationSlot) {
        let slot = VerificationSlot::default();
        // A kept ticket is reserved for this dial now, with the verifier of the connection it
        // came from: rustls resumes only under the very verifier that saw the session begin.
        let sessions = match (&self.resumption, expected) {
            (Some((_, cache)), Some(peer)) => Some((cache, peer, cache.reserve(&peer))),
            _ => None,
        };
        let verifier = match sessions.as_ref().and_then(|(_, _, r)| r.as_ref()) {
            Some((_, verifier)) => {
                verifier.bind(slot.clone());
                verifier.clone()
            }
            None => PeerVerifier::new(expected, self.algorithms, slot.clone()),
        };
        let mut config = self
            .client
            .clone()
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_client_cert_resolver(self.certificate.clone());
        config.alpn_protocols = vec![ALPN.to_vec()];
        config.enable_sni = false;
        if let Some(key_log) = &self.key_log {
            config.key_log = key_log.clone();
        }
        config.resumption = match sessions {
            Some((cache, peer, reserved)) => Resumption::store(Arc::new(DialSessions {
                cache: cache.clone(),
                peer,
                slot: slot.clone(),
                verifier,
                reserved: Mutex::new(reserved.map(|(ticket, _)| ticket)),
            }))
            .tls12_resumption(Tls12Resumption::Disabled),
            // A dial of an unknown PeerId has no ticket to offer and nowhere to keep one.
            None => Resumption::disabled(),
        };
        (Arc::new(config), slot)
    }

    /// A server configuration for one inbound connection.
    pub fn server_config(&self) -> (Arc<rustls::ServerConfig>, VerificationSlot) {
        let slot = VerificationSlot::default();
        let verifier = PeerVerifier::new(None, self.algorithms, slot.clone());
        let mut config = self
            .server
            .clone()
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(self.certificate.clone());
        config.alpn_protocols = vec![ALPN.to_vec()];
        if let Some(key_log) = &self.key_log {
            config.key_log = key_log.clone();
        }
        // Stateless tickets only: nothing is stored per client on the server.
        config.session_storage = Arc::new(NoServerSessionStorage {});
        match &self.resumption {
            Some((keys, _)) => {
                config.ticketer = Arc::new(ConnTicketer {
                    keys: keys.clone(),
                    slot: slot.clone(),
                });
                config.send_tls13_tickets = 1;
            }
            None => config.send_tls13_tickets = 0,
        }
        // No 0-RTT: nothing quicpeer sends first is safe to replay. (QUIC allows only 0 or
        // u32::MAX here.)
        config.max_early_data_size = 0;
        (Arc::new(config), slot)
    }
}

impl fmt::Debug for TlsContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsContext").finish_non_exhaustive()
    }
}

/// Serves our one certificate to every peer, on both sides of the handshake.
#[derive(Debug)]
struct OwnCertificate(Arc<CertifiedKey>);

impl ResolvesClientCert for OwnCertificate {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl ResolvesServerCert for OwnCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// Verifies the peer's certificate for one connection, on either side. (On the client, a
/// verifier outlives its connection while the tickets it saw issued are kept: a dial resuming
/// one of them must use it, and [`bind`](Self::bind)s it to its own slot.)
#[derive(Debug)]
pub(crate) struct PeerVerifier {
    /// The PeerId the dialer wants; `None` on the server side.
    expected: Option<PeerId>,
    slot: Mutex<VerificationSlot>,
    /// The certificate that passed, until its CertificateVerify signature has been checked.
    /// With whether it carries quicpeer's serial marker.
    verified: Mutex<Option<(VerifiedPeer, bool)>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PeerVerifier {
    fn new(
        expected: Option<PeerId>,
        algorithms: WebPkiSupportedAlgorithms,
        slot: VerificationSlot,
    ) -> Arc<Self> {
        Arc::new(Self {
            expected,
            slot: Mutex::new(slot),
            verified: Mutex::new(None),
            algorithms,
        })
    }

    /// Makes the verifier report to `slot` from now on (a dial resuming a ticket it saw issued).
    pub(crate) fn bind(&self, slot: VerificationSlot) {
        *lock(&self.slot) = slot;
        *lock(&self.verified) = None;
    }

    fn slot(&self) -> VerificationSlot {
        lock(&self.slot).clone()
    }

    /// Whether no handshake is using the verifier: the last one it served has its verdict.
    pub(crate) fn is_idle(&self) -> bool {
        lock(&lock(&self.slot).0).outcome.is_some()
    }

    /// Checks the certificate at `now` (the [`WallClock`]'s time: rustls reads it from the
    /// configuration's time provider).
    fn verify_certificate(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        let now = UNIX_EPOCH + Duration::from_secs(now.as_secs());
        let verified = verify_certificate_chain(now, end_entity, intermediates)
            .and_then(|peer| match self.expected {
                Some(expected) if expected != peer.peer_id => {
                    let actual = peer.peer_id;
                    debug!(%expected, %actual, "peer certificate names another peer");
                    Err(CertificateError::PeerIdMismatch { expected, actual })
                }
                _ => Ok(peer),
            })
            .map_err(|error| self.reject(error))?;
        let quicpeer = resumption::has_serial_marker(end_entity);
        *lock(&self.verified) = Some((verified, quicpeer));
        Ok(())
    }

    /// Checks the CertificateVerify signature with the key of the certificate that passed.
    fn verify_signature(
        &self,
        message: &[u8],
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let Some((peer, quicpeer)) = lock(&self.verified).take() else {
            return Err(rustls::Error::General(
                "CertificateVerify before a verified certificate".into(),
            ));
        };
        let spki = SubjectPublicKeyInfoDer::from(peer.certificate_key_spki.as_slice());
        match verify_tls13_signature_with_raw_key(message, &spki, dss, &self.algorithms) {
            Ok(valid) => {
                debug!(peer = %peer.peer_id, "peer certificate verified");
                self.slot().set_verified(peer, quicpeer);
                Ok(valid)
            }
            Err(error) => {
                debug!(%error, "handshake signature rejected");
                self.slot()
                    .set(Err(CertificateError::BadHandshakeSignature));
                Err(error)
            }
        }
    }

    /// Records `error` in the slot and wraps it for rustls (which answers with an alert).
    fn reject(&self, error: CertificateError) -> rustls::Error {
        self.slot().set(Err(error.clone()));
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(OtherError(Arc::new(
            error,
        ))))
    }

    fn supported_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// libp2p is TLS 1.3 only; rustls never negotiates 1.2 with these configurations, and a TLS 1.2
/// signature is refused should it ever be asked for.
fn refuse_tls12() -> Result<HandshakeSignatureValid, rustls::Error> {
    Err(rustls::Error::PeerIncompatible(
        PeerIncompatible::Tls12NotOffered,
    ))
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verify_certificate(end_entity, intermediates, now)
            .map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        refuse_tls12()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        _cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify_signature(message, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.supported_schemes()
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.verify_certificate(end_entity, intermediates, now)
            .map(|()| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        refuse_tls12()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        _cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify_signature(message, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quinn_proto::crypto::rustls::{QuicClientConfig, QuicServerConfig};

    fn context() -> TlsContext {
        let identity = Identity::from_ed25519_seed([7; 32]);
        TlsContext::new(
            &identity,
            WallClock::new(UNIX_EPOCH + Duration::from_secs(1_767_225_600)),
        )
        .expect("context")
    }

    #[test]
    fn configs_are_accepted_by_quinn() {
        let tls = context();
        let (client, _) = tls.client_config(None);
        let (server, _) = tls.server_config();
        QuicClientConfig::try_from(client).expect("quinn accepts the client config");
        QuicServerConfig::try_from(server).expect("quinn accepts the server config");
    }

    #[test]
    fn configs_are_tls13_only_without_sni_or_resumption() {
        let tls = context();
        let (client, _) = tls.client_config(None);
        assert!(!client.enable_sni);
        assert_eq!(client.alpn_protocols, vec![ALPN.to_vec()]);
        assert!(!client.enable_early_data);

        let (server, _) = tls.server_config();
        assert_eq!(server.alpn_protocols, vec![ALPN.to_vec()]);
        assert_eq!(server.send_tls13_tickets, 0);
        assert!(!server.session_storage.can_cache());
        assert!(!server.ticketer.enabled());
    }

    #[test]
    fn each_connection_gets_its_own_slot() {
        let tls = context();
        let (_, first) = tls.client_config(None);
        let (_, second) = tls.client_config(None);
        first.set(Err(CertificateError::NoCertificate));
        assert_eq!(first.outcome(), Some(Err(CertificateError::NoCertificate)));
        assert_eq!(second.outcome(), None);
    }

    #[test]
    fn wall_clock_is_the_time_provider() {
        let at = UNIX_EPOCH + Duration::from_secs(42);
        let clock = WallClock::new(at);
        assert_eq!(
            clock.current_time(),
            Some(UnixTime::since_unix_epoch(Duration::from_secs(42)))
        );
    }
}
