//! TLS 1.3 session resumption between quicpeer nodes, surviving a restart of the server.
//!
//! A reconnect after a restart is a full mutual handshake: a certificate signed and verified on
//! each side, each verification two signature checks. Resumption replaces the certificates with
//! a pre-shared key from an earlier session (still with a fresh key exchange, `psk_dhe_ke`), so
//! the re-handshake costs what quinn's key schedule costs. What makes it work across a restart,
//! and keeps a resumed connection as authenticated as a full one:
//!
//! - **Ticket keys from the identity.** The server seals its tickets (stateless, RFC 8446 §4.6.1)
//!   with a key derived from its identity and the current *rotation period*
//!   ([`ROTATION`], 12 hours): a restarted process derives the same key and accepts the tickets
//!   its previous incarnation issued. A ticket opens during the period it was issued in and the
//!   next one, and rustls lets it live [`ROTATION`] at most, so no ticket outlives 24 hours. A
//!   ticket sealed under another identity, of an older period, or altered in any byte does not
//!   open, and the handshake falls back to a full one.
//! - **Misuse-resistant sealing.** The nonce of each ticket is an HMAC of its plaintext (a
//!   synthetic IV), so no randomness is needed and two processes with the same identity can
//!   never reuse a nonce with different plaintexts.
//! - **The PeerId bound and checked again on both sides.** rustls keeps the peer's certificate
//!   chain in the session (the client's chain inside the server's sealed ticket, the server's in
//!   the client's memory). After a resumed handshake neither verifier runs, so the manager reads
//!   that chain back ([`VerificationSlot::complete_resumption`](super::VerificationSlot)): the
//!   server takes the client's PeerId from the certificate it verified when it issued the ticket,
//!   and the client checks that the server's is the PeerId it dialed. A client keeps tickets per
//!   PeerId and offers one only to a dial of that PeerId.
//! - **Only between quicpeer nodes.** quicpeer's certificates carry a marker in their serial
//!   number. A server issues tickets only to clients whose verified certificate has it, and a
//!   client keeps tickets only from such servers (or from a connection that was itself resumed
//!   from such a ticket), so stock libp2p peers, whose servers may issue tickets of their own,
//!   keep full handshakes both ways. No 0-RTT: nothing quicpeer sends first is safe to replay.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libp2p_identity::PeerId;
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, NONCE_LEN};
use ring::{hkdf, hmac};
use rustls::client::ClientSessionStore;
use rustls::pki_types::ServerName;
use rustls::server::ProducesTickets;
use rustls::NamedGroup;

use super::tls::{lock, PeerVerifier, VerificationSlot, WallClock};

/// How long a ticket key is used for sealing; tickets of the previous period still open.
pub const ROTATION: Duration = Duration::from_secs(12 * 60 * 60);
/// HKDF info for the ticket master secret derived from the identity.
pub const TICKET_KEY_INFO: &[u8] = b"quicpeer tls session ticket key";
/// The first bytes of every sealed ticket: format and version.
const MAGIC: &[u8; 4] = b"qpt1";
/// The serial number prefix of quicpeer's certificates: a server whose certificate has it
/// seals tickets this module can resume with.
pub(crate) const SERIAL_MARKER: &[u8; 8] = b"quicpeer";
/// Peers whose tickets a client keeps; the least recently stored go first.
const MAX_PEERS: usize = 4096;
/// Tickets kept per peer (each is used once).
const TICKETS_PER_PEER: usize = 2;

/// Whether a DER certificate carries quicpeer's serial-number marker (a cheap scan of the first
/// bytes, where the serial number sits: `SEQUENCE { SEQUENCE { [0] version, INTEGER serial`).
pub(crate) fn has_serial_marker(der: &[u8]) -> bool {
    let head = der.get(..40).unwrap_or(der);
    let mut pattern = [0u8; 2 + SERIAL_MARKER.len()];
    pattern[0] = 0x02; // INTEGER
    pattern[1] = 16; // the marker and 8 bytes of the certificate key's hash
    pattern[2..].copy_from_slice(SERIAL_MARKER);
    head.windows(pattern.len()).any(|w| w == pattern)
}

/// The server's ticket keys: a master secret from the identity, one sealing key per period.
pub(crate) struct TicketKeys {
    master: hkdf::Prk,
    clock: WallClock,
}

impl TicketKeys {
    pub(crate) fn new(secret: [u8; 32], clock: WallClock) -> Self {
        Self {
            master: hkdf::Salt::new(hkdf::HKDF_SHA256, b"quicpeer tickets").extract(&secret),
            clock,
        }
    }

    fn period(&self, now: SystemTime) -> u64 {
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        secs / ROTATION.as_secs()
    }

    /// The AEAD key and the nonce-derivation key of `period`.
    fn keys(&self, period: u64) -> Option<(LessSafeKey, hmac::Key)> {
        let info_aead = [b"aead".as_slice(), &period.to_be_bytes()];
        let info_iv = [b"siv".as_slice(), &period.to_be_bytes()];
        let mut aead_key = [0u8; 32];
        let mut iv_key = [0u8; 32];
        self.master
            .expand(&info_aead, hkdf::HKDF_SHA256)
            .and_then(|okm| okm.fill(&mut aead_key))
            .ok()?;
        self.master
            .expand(&info_iv, hkdf::HKDF_SHA256)
            .and_then(|okm| okm.fill(&mut iv_key))
            .ok()?;
        let key = UnboundKey::new(&aead::CHACHA20_POLY1305, &aead_key).ok()?;
        Some((
            LessSafeKey::new(key),
            hmac::Key::new(hmac::HMAC_SHA256, &iv_key),
        ))
    }

    /// `MAGIC | period (8, big-endian) | nonce (12) | ciphertext and tag`.
    fn seal(&self, now: SystemTime, plain: &[u8]) -> Option<Vec<u8>> {
        let period = self.period(now);
        let (key, iv_key) = self.keys(period)?;
        let tag = hmac::sign(&iv_key, plain);
        let nonce_bytes: [u8; NONCE_LEN] = tag.as_ref().get(..NONCE_LEN)?.try_into().ok()?;
        let mut out = Vec::with_capacity(MAGIC.len() + 8 + NONCE_LEN + plain.len() + 16);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&period.to_be_bytes());
        out.extend_from_slice(&nonce_bytes);
        let mut body = plain.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce_bytes),
            Aad::from(&out[..MAGIC.len() + 8]),
            &mut body,
        )
        .ok()?;
        out.extend_from_slice(&body);
        Some(out)
    }

    /// The plaintext of a ticket sealed by this identity in this period or the previous one.
    fn open(&self, now: SystemTime, ticket: &[u8]) -> Option<Vec<u8>> {
        let header_len = MAGIC.len() + 8;
        let (header, rest) = (ticket.get(..header_len)?, ticket.get(header_len..)?);
        if header.get(..MAGIC.len())? != MAGIC {
            return None;
        }
        let period = u64::from_be_bytes(header.get(MAGIC.len()..)?.try_into().ok()?);
        let current = self.period(now);
        if period != current && period.checked_add(1) != Some(current) {
            return None;
        }
        let nonce: [u8; NONCE_LEN] = rest.get(..NONCE_LEN)?.try_into().ok()?;
        let mut body = rest.get(NONCE_LEN..)?.to_vec();
        let (key, _) = self.keys(period)?;
        let plain = key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(header),
                &mut body,
            )
            .ok()?;
        Some(plain.to_vec())
    }
}

/// The ticketer of one inbound connection: seals and opens with the identity's keys, and notes
/// in the connection's slot that a ticket opened (the handshake may then be a resumption).
#[derive(Debug)]
pub(crate) struct ConnTicketer {
    pub(crate) keys: Arc<TicketKeys>,
    pub(crate) slot: VerificationSlot,
}

impl std::fmt::Debug for TicketKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TicketKeys { .. }")
    }
}

impl ProducesTickets for ConnTicketer {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        ROTATION.as_secs() as u32
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        // Tickets go to quicpeer clients only (no ticket is sent when this returns `None`).
        if !self.slot.peer_is_quicpeer() {
            return None;
        }
        self.keys.seal(self.keys.clock.get(), plain)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        let plain = self.keys.open(self.keys.clock.get(), cipher)?;
        self.slot.ticket_opened();
        Some(plain)
    }
}

/// A ticket and the verifier of the connection it came on.
pub(crate) type Kept = (rustls::client::Tls13ClientSessionValue, Arc<PeerVerifier>);

/// A client's tickets, per PeerId, bounded.
#[derive(Debug, Default)]
pub(crate) struct SessionCache {
    inner: Mutex<CacheState>,
}

#[derive(Debug, Default)]
struct CacheState {
    /// Each peer's tickets (with the verifier of the connection each came on) and the stamp of
    /// its last store.
    tickets: BTreeMap<PeerId, (u64, VecDeque<Kept>)>,
    /// Peers by the stamp of their last store, for eviction.
    order: BTreeMap<u64, PeerId>,
    next_stamp: u64,
    kx_hints: BTreeMap<PeerId, NamedGroup>,
}

impl SessionCache {
    fn insert(&self, peer: PeerId, value: Kept) {
        let mut state = lock(&self.inner);
        let stamp = state.next_stamp;
        state.next_stamp += 1;
        let previous = state.tickets.get(&peer).map(|(s, _)| *s);
        if let Some(old) = previous {
            state.order.remove(&old);
        }
        state.order.insert(stamp, peer);
        let entry = state.tickets.entry(peer).or_default();
        entry.0 = stamp;
        entry.1.push_back(value);
        while entry.1.len() > TICKETS_PER_PEER {
            entry.1.pop_front();
        }
        while state.tickets.len() > MAX_PEERS {
            let Some((_, oldest)) = state.order.pop_first() else {
                break;
            };
            state.tickets.remove(&oldest);
            state.kx_hints.remove(&oldest);
        }
    }

    /// Takes the newest ticket kept for `peer`, for one dial.
    /// A ticket whose verifier is in use by a handshake still in flight is left where it is:
    /// two handshakes must never share a verifier (it reports to one connection's slot).
    pub(crate) fn reserve(&self, peer: &PeerId) -> Option<Kept> {
        let mut state = lock(&self.inner);
        let (stamp, tickets) = state.tickets.get_mut(peer)?;
        let free = tickets
            .iter()
            .rposition(|(_, verifier)| verifier.is_idle())?;
        let value = tickets.remove(free);
        if tickets.is_empty() {
            let stamp = *stamp;
            state.tickets.remove(peer);
            state.order.remove(&stamp);
        }
        value
    }
}

/// The session store of one dial: the ticket reserved for it, and the shared cache, seen
/// through the PeerId the dial expects, for the tickets its connection brings.
#[derive(Debug)]
pub(crate) struct DialSessions {
    pub(crate) cache: Arc<SessionCache>,
    pub(crate) peer: PeerId,
    pub(crate) slot: VerificationSlot,
    /// The dial's verifier: tickets kept from this connection resume under it only.
    pub(crate) verifier: Arc<PeerVerifier>,
    pub(crate) reserved: Mutex<Option<rustls::client::Tls13ClientSessionValue>>,
}

impl ClientSessionStore for DialSessions {
    fn set_kx_hint(&self, _server_name: ServerName<'static>, group: NamedGroup) {
        let mut state = lock(&self.cache.inner);
        if state.tickets.contains_key(&self.peer) || state.kx_hints.len() < MAX_PEERS {
            state.kx_hints.insert(self.peer, group);
        }
    }

    fn kx_hint(&self, _server_name: &ServerName<'_>) -> Option<NamedGroup> {
        lock(&self.cache.inner).kx_hints.get(&self.peer).copied()
    }

    fn set_tls12_session(
        &self,
        _server_name: ServerName<'static>,
        _value: rustls::client::Tls12ClientSessionValue,
    ) {
    }

    fn tls12_session(
        &self,
        _server_name: &ServerName<'_>,
    ) -> Option<rustls::client::Tls12ClientSessionValue> {
        None
    }

    fn remove_tls12_session(&self, _server_name: &ServerName<'static>) {}

    fn insert_tls13_ticket(
        &self,
        _server_name: ServerName<'static>,
        value: rustls::client::Tls13ClientSessionValue,
    ) {
        // Tickets arrive after the handshake: keep them only from a verified quicpeer server
        // that is the peer this dial is for.
        if self.slot.may_keep_ticket_of(&self.peer) {
            self.cache.insert(self.peer, (value, self.verifier.clone()));
        }
    }

    fn take_tls13_ticket(
        &self,
        _server_name: &ServerName<'static>,
    ) -> Option<rustls::client::Tls13ClientSessionValue> {
        let value = lock(&self.reserved).take()?;
        self.slot.ticket_offered(self.peer);
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(secret: u8, at: SystemTime) -> TicketKeys {
        TicketKeys::new([secret; 32], WallClock::new(at))
    }

    fn at(hours: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000 + hours * 3600)
    }

    #[test]
    fn a_ticket_opens_under_the_same_identity_in_its_period_and_the_next() {
        let k = keys(1, at(0));
        let ticket = k.seal(at(0), b"session state").expect("sealed");
        assert_eq!(
            k.open(at(0), &ticket).as_deref(),
            Some(&b"session state"[..])
        );
        // A restarted process derives the same keys.
        let restarted = keys(1, at(5));
        assert_eq!(
            restarted.open(at(5), &ticket).as_deref(),
            Some(&b"session state"[..])
        );
        // The next period still opens it; the one after does not (expired).
        let next = at(0) + ROTATION;
        assert!(k.open(next, &ticket).is_some());
        assert!(k.open(next + ROTATION, &ticket).is_none());
    }

    #[test]
    fn tampered_foreign_and_malformed_tickets_do_not_open() {
        let k = keys(1, at(0));
        let ticket = k.seal(at(0), b"session state").expect("sealed");
        for i in 0..ticket.len() {
            let mut bad = ticket.clone();
            bad[i] ^= 0x01;
            assert!(k.open(at(0), &bad).is_none(), "byte {i} altered");
        }
        assert!(
            keys(2, at(0)).open(at(0), &ticket).is_none(),
            "another identity"
        );
        for len in 0..ticket.len() {
            assert!(
                k.open(at(0), &ticket[..len]).is_none(),
                "truncated to {len}"
            );
        }
        assert!(k.open(at(0), b"").is_none());
    }

    #[test]
    fn nonces_depend_on_the_plaintext_only() {
        let k = keys(1, at(0));
        let a = k.seal(at(0), b"one").expect("sealed");
        let b = k.seal(at(0), b"two").expect("sealed");
        assert_eq!(k.seal(at(0), b"one"), Some(a.clone()), "deterministic");
        assert_ne!(
            a[12..24],
            b[12..24],
            "different plaintexts, different nonces"
        );
    }

    #[test]
    fn the_serial_marker_is_found_in_our_certificates_only() {
        let identity = crate::Identity::from_ed25519_seed([3; 32]);
        let (ours, _) = crate::identity::generate_certificate(identity.keypair()).expect("cert");
        assert!(has_serial_marker(&ours));
        let other = rcgen::generate_simple_self_signed(vec!["x".into()]).expect("cert");
        assert!(!has_serial_marker(other.cert.der()));
        assert!(!has_serial_marker(&[]));
    }
}
