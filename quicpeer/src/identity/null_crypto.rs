//! A handshake without cryptography, for fuzzing only (feature `fuzzing`).
//!
//! A fuzz execution that needs a connected pair pays a full TLS 1.3 handshake: ECDSA signatures
//! and their verification, X25519, and rustls' state machine, several times the cost of
//! everything else the execution does. And with real packet protection, almost no input a fuzzer
//! invents gets past decryption, so the frame handling behind it is reached only through the
//! honest peer's own packets. Fuzzing harnesses of QUIC stacks therefore commonly swap the
//! cryptography out for a null scheme; this module is quicpeer's.
//!
//! What it keeps is what the connection manager relies on: the libp2p certificate of each side
//! crosses the wire and is checked by the same [`verify_certificate_chain`] (self-signature,
//! validity at the manager's wall-clock time, the libp2p extension's host-key signature, the
//! PeerId a dialer expects), and the verdict lands in the connection's [`VerificationSlot`], as
//! the TLS verifiers leave it. Transport parameters are exchanged in the handshake as in TLS.
//! What it drops: confidentiality and integrity (packets are sealed with a 16-byte tag of zeros
//! that nobody checks, header protection is the identity), the proof of possession of the
//! certificate key (there is no CertificateVerify), key exchange, session resumption and 0-RTT.
//! Nothing here is safe on a real network; [`Config::null_crypto`](crate::Config::null_crypto)
//! is the only way in, and it exists only with the feature. A [`NullCrypto`] checks each
//! certificate's signatures once and remembers it (see there).
//!
//! The handshake has four messages, each `type (1 byte) | length (2 bytes, big endian) | body`,
//! in the CRYPTO streams where TLS would put its flights:
//!
//! | message | level | body |
//! |---|---|---|
//! | client hello | Initial | the client's transport parameters |
//! | server hello | Initial | empty |
//! | server finished | Handshake | the server's transport parameters, then its certificate |
//! | client finished | Handshake | the client's certificate |
//!
//! Inside each finished message, the transport parameters and the certificate are each prefixed
//! by their own 2-byte length.

use std::any::Any;
use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use bytes::BytesMut;
use libp2p_identity::PeerId;
use quinn_proto::crypto::{
    self, CryptoError, ExportKeyingMaterialError, HeaderKey, KeyPair, Keys, PacketKey,
    UnsupportedVersion,
};
use quinn_proto::transport_parameters::TransportParameters;
use quinn_proto::{ConnectError, ConnectionId, Side, TransportError, TransportErrorCode};
use rustls::pki_types::CertificateDer;
use tracing::debug;

use super::certificate::{session_peer, verify_certificate_chain, CertificateError, VerifiedPeer};
use super::resumption;
use super::tls::{VerificationSlot, WallClock};

/// Length of the (unchecked, all-zero) tag that stands in for the AEAD's.
pub const TAG_LEN: usize = 16;
/// The longest handshake message accepted; a longer one fails the handshake.
const MAX_MESSAGE: usize = 16 * 1024;

const CLIENT_HELLO: u8 = 1;
const SERVER_HELLO: u8 = 2;
const SERVER_FINISHED: u8 = 3;
const CLIENT_FINISHED: u8 = 4;

/// The TLS alert quinn reports for a malformed handshake message (`decode_error`).
const DECODE_ERROR: u8 = 50;
/// The TLS alert for a message out of order (`unexpected_message`).
const UNEXPECTED_MESSAGE: u8 = 10;
/// The TLS alert for a rejected certificate (`bad_certificate`).
const BAD_CERTIFICATE: u8 = 42;

/// Header protection that protects nothing.
struct NullHeaderKey;

impl HeaderKey for NullHeaderKey {
    fn decrypt(&self, _pn_offset: usize, _packet: &mut [u8]) {}
    fn encrypt(&self, _pn_offset: usize, _packet: &mut [u8]) {}
    fn sample_size(&self) -> usize {
        TAG_LEN
    }
}

/// Packet protection that leaves the payload in the clear, with a tag of zeros nobody checks.
struct NullPacketKey;

impl PacketKey for NullPacketKey {
    fn encrypt(&self, _packet: u64, buf: &mut [u8], header_len: usize) {
        let tag_start = buf.len().saturating_sub(TAG_LEN).max(header_len);
        buf[tag_start..].fill(0);
    }

    fn decrypt(
        &self,
        _packet: u64,
        _header: &[u8],
        payload: &mut BytesMut,
    ) -> Result<(), CryptoError> {
        let len = payload.len().checked_sub(TAG_LEN).ok_or(CryptoError)?;
        payload.truncate(len);
        Ok(())
    }

    fn tag_len(&self) -> usize {
        TAG_LEN
    }

    fn confidentiality_limit(&self) -> u64 {
        u64::MAX
    }

    fn integrity_limit(&self) -> u64 {
        u64::MAX
    }
}

fn keys() -> Keys {
    Keys {
        header: KeyPair {
            local: Box::new(NullHeaderKey),
            remote: Box::new(NullHeaderKey),
        },
        packet: packet_keys(),
    }
}

fn packet_keys() -> KeyPair<Box<dyn PacketKey>> {
    KeyPair {
        local: Box::new(NullPacketKey),
        remote: Box::new(NullPacketKey),
    }
}

/// Where the null handshake of one connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Client: the hello is still to be written. Server: waiting for the client's hello.
    Hello,
    /// Client: waiting for the server's hello.
    AwaitServerHello,
    /// Client: the server's hello arrived; the handshake keys are to be handed out.
    HandshakeKeys,
    /// Client: waiting for the server's finished message.
    AwaitServerFinished,
    /// Client: the server's finished message checked out; ours and the 1-RTT keys go out.
    /// Server: the client's hello arrived; our hello and the handshake keys go out.
    Reply,
    /// Server: our finished message and the 1-RTT keys go out.
    ServerFinished,
    /// Server: waiting for the client's finished message.
    AwaitClientFinished,
    /// The handshake is complete.
    Done,
}

/// Certificates remembered at most by one [`NullCrypto`].
const MAX_REMEMBERED: usize = 64;

/// The null handshake, as [`Config::null_crypto`](crate::Config::null_crypto) turns it on.
///
/// Clones share one memory of the certificates whose signatures they have checked: a
/// certificate seen again is checked as a resumed session's is
/// ([`session_peer`]: its form, validity at the manager's time, libp2p extension and PeerId,
/// without its two signatures, which are most of the cost). A harness gives every manager it
/// builds a clone of one `NullCrypto`, so that each certificate's signatures are checked once
/// per process instead of once per handshake.
#[derive(Clone, Default)]
pub struct NullCrypto {
    checked: Arc<Mutex<VecDeque<Vec<u8>>>>,
}

impl NullCrypto {
    /// A null handshake with nothing remembered.
    pub fn new() -> Self {
        Self::default()
    }

    fn verify(
        &self,
        now: SystemTime,
        der: &CertificateDer<'_>,
    ) -> Result<VerifiedPeer, CertificateError> {
        let mut checked = self.checked.lock().unwrap_or_else(PoisonError::into_inner);
        if checked.iter().any(|c| c[..] == der[..]) {
            return session_peer(now, der);
        }
        let verified = verify_certificate_chain(now, der, &[])?;
        if checked.len() == MAX_REMEMBERED {
            checked.pop_front();
        }
        checked.push_back(der.to_vec());
        Ok(verified)
    }
}

impl fmt::Debug for NullCrypto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NullCrypto").finish_non_exhaustive()
    }
}

/// The shared configuration of either side: our certificate, the clock certificates are
/// checked against, the memory of checked certificates.
#[derive(Clone)]
pub(crate) struct NullContext {
    pub(crate) certificate: CertificateDer<'static>,
    pub(crate) clock: WallClock,
    pub(crate) crypto: NullCrypto,
}

/// The client side: one per dial, as rustls' client configurations are.
pub(crate) struct NullClientConfig {
    context: NullContext,
    expected: Option<PeerId>,
    slot: VerificationSlot,
}

impl NullClientConfig {
    pub(crate) fn new(
        context: NullContext,
        expected: Option<PeerId>,
        slot: VerificationSlot,
    ) -> Self {
        Self {
            context,
            expected,
            slot,
        }
    }
}

impl crypto::ClientConfig for NullClientConfig {
    fn start_session(
        self: Arc<Self>,
        _version: u32,
        _server_name: &str,
        params: &TransportParameters,
    ) -> Result<Box<dyn crypto::Session>, ConnectError> {
        Ok(Box::new(NullSession::new(
            Side::Client,
            self.context.clone(),
            self.expected,
            self.slot.clone(),
            params,
        )))
    }
}

/// The server side: one per inbound connection (its slot is that connection's).
pub(crate) struct NullServerConfig {
    context: NullContext,
    slot: VerificationSlot,
}

impl NullServerConfig {
    pub(crate) fn new(context: NullContext, slot: VerificationSlot) -> Self {
        Self { context, slot }
    }
}

impl crypto::ServerConfig for NullServerConfig {
    fn initial_keys(
        &self,
        _version: u32,
        _dst_cid: &ConnectionId,
    ) -> Result<Keys, UnsupportedVersion> {
        Ok(keys())
    }

    fn retry_tag(&self, _version: u32, _orig_dst_cid: &ConnectionId, _packet: &[u8]) -> [u8; 16] {
        [0; 16]
    }

    fn start_session(
        self: Arc<Self>,
        _version: u32,
        params: &TransportParameters,
    ) -> Box<dyn crypto::Session> {
        Box::new(NullSession::new(
            Side::Server,
            self.context.clone(),
            None,
            self.slot.clone(),
            params,
        ))
    }
}

/// One connection's null handshake.
struct NullSession {
    side: Side,
    context: NullContext,
    expected: Option<PeerId>,
    slot: VerificationSlot,
    step: Step,
    /// Our transport parameters, encoded.
    local_params: Vec<u8>,
    /// The peer's, once its hello (server) or finished message (client) arrived.
    remote_params: Option<TransportParameters>,
    /// Handshake bytes received and not yet parsed into a whole message.
    pending: Vec<u8>,
}

impl NullSession {
    fn new(
        side: Side,
        context: NullContext,
        expected: Option<PeerId>,
        slot: VerificationSlot,
        params: &TransportParameters,
    ) -> Self {
        let mut local_params = Vec::new();
        params.write(&mut local_params);
        Self {
            side,
            context,
            expected,
            slot,
            step: Step::Hello,
            local_params,
            remote_params: None,
            pending: Vec::new(),
        }
    }

    /// Handles one whole message; returns whether handshake data became available.
    fn handle_message(&mut self, kind: u8, body: &[u8]) -> Result<bool, TransportError> {
        match (self.side, self.step, kind) {
            (Side::Server, Step::Hello, CLIENT_HELLO) => {
                self.remote_params = Some(self.read_params(body)?);
                self.step = Step::Reply;
                Ok(true)
            }
            (Side::Client, Step::AwaitServerHello, SERVER_HELLO) if body.is_empty() => {
                self.step = Step::HandshakeKeys;
                Ok(false)
            }
            (Side::Client, Step::AwaitServerFinished, SERVER_FINISHED) => {
                let (params, certificate) = split(body)?;
                self.remote_params = Some(self.read_params(params)?);
                self.verify(certificate)?;
                self.step = Step::Reply;
                Ok(true)
            }
            (Side::Server, Step::AwaitClientFinished, CLIENT_FINISHED) => {
                let (certificate, rest) = take_field(body)?;
                if !rest.is_empty() {
                    return Err(error(
                        DECODE_ERROR,
                        "trailing bytes in the finished message",
                    ));
                }
                self.verify(certificate)?;
                self.step = Step::Done;
                Ok(false)
            }
            _ => Err(error(UNEXPECTED_MESSAGE, "unexpected handshake message")),
        }
    }

    fn read_params(&self, bytes: &[u8]) -> Result<TransportParameters, TransportError> {
        // `read` takes the reader's side: a server refuses the parameters only servers send.
        TransportParameters::read(self.side, &mut &bytes[..]).map_err(TransportError::from)
    }

    /// Checks the peer's certificate as the TLS verifiers do and leaves the verdict in the slot.
    fn verify(&self, der: &[u8]) -> Result<(), TransportError> {
        let der = CertificateDer::from(der);
        let verdict = (self.context.crypto.verify(self.context.clock.get(), &der)).and_then(
            |peer| match self.expected {
                Some(expected) if expected != peer.peer_id => {
                    Err(CertificateError::PeerIdMismatch {
                        expected,
                        actual: peer.peer_id,
                    })
                }
                _ => Ok(peer),
            },
        );
        match verdict {
            Ok(peer) => {
                self.slot
                    .set_verified(peer, resumption::has_serial_marker(&der));
                Ok(())
            }
            Err(e) => {
                debug!(error = %e, "peer certificate rejected (null handshake)");
                self.slot.set(Err(e));
                Err(error(BAD_CERTIFICATE, "peer certificate rejected"))
            }
        }
    }
}

impl crypto::Session for NullSession {
    fn initial_keys(&self, _dst_cid: &ConnectionId, _side: Side) -> Keys {
        keys()
    }

    fn handshake_data(&self) -> Option<Box<dyn Any>> {
        self.remote_params
            .as_ref()
            .map(|_| Box::new(()) as Box<dyn Any>)
    }

    fn peer_identity(&self) -> Option<Box<dyn Any>> {
        None
    }

    fn early_crypto(&self) -> Option<(Box<dyn HeaderKey>, Box<dyn PacketKey>)> {
        None
    }

    fn early_data_accepted(&self) -> Option<bool> {
        None
    }

    fn is_handshaking(&self) -> bool {
        self.step != Step::Done
    }

    fn read_handshake(&mut self, buf: &[u8]) -> Result<bool, TransportError> {
        if self.pending.len() + buf.len() > MAX_MESSAGE + 3 {
            return Err(error(DECODE_ERROR, "handshake message too long"));
        }
        self.pending.extend_from_slice(buf);
        let mut ready = false;
        while self.pending.len() >= 3 {
            let len = usize::from(u16::from_be_bytes([self.pending[1], self.pending[2]]));
            if self.pending.len() < 3 + len {
                break;
            }
            let message: Vec<u8> = self.pending.drain(..3 + len).collect();
            ready |= self.handle_message(message[0], &message[3..])?;
        }
        Ok(ready)
    }

    fn transport_parameters(&self) -> Result<Option<TransportParameters>, TransportError> {
        Ok(self.remote_params)
    }

    fn write_handshake(&mut self, buf: &mut Vec<u8>) -> Option<Keys> {
        match (self.side, self.step) {
            (Side::Client, Step::Hello) => {
                message(buf, CLIENT_HELLO, &[&self.local_params]);
                self.step = Step::AwaitServerHello;
                None
            }
            (Side::Client, Step::HandshakeKeys) => {
                self.step = Step::AwaitServerFinished;
                Some(keys())
            }
            (Side::Client, Step::Reply) => {
                message(buf, CLIENT_FINISHED, &[&field(&self.context.certificate)]);
                self.step = Step::Done;
                Some(keys())
            }
            (Side::Server, Step::Reply) => {
                message(buf, SERVER_HELLO, &[]);
                self.step = Step::ServerFinished;
                Some(keys())
            }
            (Side::Server, Step::ServerFinished) => {
                let params = field(&self.local_params);
                let certificate = field(&self.context.certificate);
                message(buf, SERVER_FINISHED, &[&params, &certificate]);
                self.step = Step::AwaitClientFinished;
                Some(keys())
            }
            _ => None,
        }
    }

    fn next_1rtt_keys(&mut self) -> Option<KeyPair<Box<dyn PacketKey>>> {
        Some(packet_keys())
    }

    fn is_valid_retry(&self, _orig_dst_cid: &ConnectionId, _header: &[u8], payload: &[u8]) -> bool {
        payload.len() >= TAG_LEN
    }

    fn export_keying_material(
        &self,
        output: &mut [u8],
        _label: &[u8],
        _context: &[u8],
    ) -> Result<(), ExportKeyingMaterialError> {
        output.fill(0);
        Ok(())
    }
}

/// A connection error carrying TLS alert `alert`, as rustls' would.
fn error(alert: u8, reason: &str) -> TransportError {
    TransportError {
        code: TransportErrorCode::crypto(alert),
        frame: None,
        reason: reason.into(),
    }
}

/// `bytes` prefixed by its 2-byte length (every field here is far below 64 KiB).
fn field(bytes: &[u8]) -> Vec<u8> {
    let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    let mut out = Vec::with_capacity(2 + bytes.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&bytes[..usize::from(len)]);
    out
}

/// Appends one message of type `kind` whose body is `parts` in order.
fn message(buf: &mut Vec<u8>, kind: u8, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    buf.push(kind);
    buf.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes());
    for part in parts {
        buf.extend_from_slice(part);
    }
}

/// Splits one length-prefixed field off the front of `bytes`.
fn take_field(bytes: &[u8]) -> Result<(&[u8], &[u8]), TransportError> {
    let malformed = || error(DECODE_ERROR, "malformed handshake message");
    let (len, rest) = bytes.split_first_chunk::<2>().ok_or_else(malformed)?;
    let len = usize::from(u16::from_be_bytes(*len));
    if rest.len() < len {
        return Err(malformed());
    }
    Ok(rest.split_at(len))
}

/// The two fields of the server's finished message: parameters and certificate.
fn split(body: &[u8]) -> Result<(&[u8], &[u8]), TransportError> {
    let (params, rest) = take_field(body)?;
    let (certificate, rest) = take_field(rest)?;
    if !rest.is_empty() {
        return Err(error(
            DECODE_ERROR,
            "trailing bytes in the finished message",
        ));
    }
    Ok((params, certificate))
}

/// Seals `payload` behind `header` as the null packet protection does: the header, the payload
/// in the clear, a tag of zeros. For harnesses that write packets themselves.
pub fn seal(header: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut packet = Vec::with_capacity(header.len() + payload.len() + TAG_LEN);
    packet.extend_from_slice(header);
    packet.extend_from_slice(payload);
    packet.extend_from_slice(&[0; TAG_LEN]);
    packet
}
