//! The reservation voucher: a signed envelope (libp2p RFC 0002) in which the relay states that
//! it relays for a peer until a time.
//!
//! The envelope carries the relay's public key, the payload type, the payload (the
//! `ReservationVoucher` message) and a signature over the domain `libp2p-relay-rsvp`, the
//! payload type and the payload, each prefixed with its unsigned-varint length, so a signature
//! made for one domain or type can never pass for another.

use prost::Message as _;

use super::proto;
use crate::identity::PublicKey;
use crate::{Keypair, PeerId};

/// The envelope domain of reservation vouchers.
pub const DOMAIN: &str = "libp2p-relay-rsvp";
/// The payload type of reservation vouchers: the multicodec `0x0302`, as the bytes go- and
/// js-libp2p put in the envelope.
pub const PAYLOAD_TYPE: [u8; 2] = [0x03, 0x02];

/// Why a voucher could not be signed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VoucherError {
    /// The keypair could not sign (an RSA key that refuses the message length, say).
    #[error("signing failed: {0}")]
    Signing(String),
    /// The envelope or its payload is not valid protobuf, or misses a field.
    #[error("malformed envelope: {0}")]
    Malformed(&'static str),
    /// The envelope's key is no public key libp2p knows.
    #[error("invalid public key in the envelope")]
    InvalidKey,
    /// The envelope carries another payload type than a voucher's.
    #[error("payload type {0:02x?} is not a voucher's")]
    WrongPayloadType(Vec<u8>),
    /// The signature does not verify under the envelope's key and the voucher domain.
    #[error("bad signature")]
    BadSignature,
    /// The voucher's relay is not the key that signed it.
    #[error("voucher not signed by the relay it names")]
    WrongSigner,
}

/// What a relay vouches for: it relays for `peer` until `expiration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Voucher {
    /// The relay.
    pub relay: PeerId,
    /// The peer holding the reservation.
    pub peer: PeerId,
    /// When the reservation expires, in seconds since the UNIX epoch.
    pub expiration: u64,
}

/// The bytes an envelope's signature covers.
pub fn signed_bytes(domain: &str, payload_type: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(domain.len() + payload_type.len() + payload.len() + 30);
    for part in [domain.as_bytes(), payload_type, payload] {
        let mut buf = unsigned_varint::encode::usize_buffer();
        out.extend_from_slice(unsigned_varint::encode::usize(part.len(), &mut buf));
        out.extend_from_slice(part);
    }
    out
}

impl Voucher {
    /// The voucher's payload: the `ReservationVoucher` message.
    pub fn payload(&self) -> Vec<u8> {
        proto::ReservationVoucher {
            relay: Some(self.relay.to_bytes()),
            peer: Some(self.peer.to_bytes()),
            expiration: Some(self.expiration),
        }
        .encode_to_vec()
    }

    /// The voucher in an envelope signed with `keypair`, the relay's identity.
    pub fn sign(&self, keypair: &Keypair) -> Result<Vec<u8>, VoucherError> {
        let payload = self.payload();
        let signature = keypair
            .sign(&signed_bytes(DOMAIN, &PAYLOAD_TYPE, &payload))
            .map_err(|error| VoucherError::Signing(error.to_string()))?;
        Ok(proto::Envelope {
            public_key: Some(keypair.public().encode_protobuf()),
            payload_type: Some(PAYLOAD_TYPE.to_vec()),
            payload: Some(payload),
            signature: Some(signature),
        }
        .encode_to_vec())
    }

    /// Opens an envelope: checks its type and signature, and that the voucher's relay signed
    /// it; returns the voucher and the signer's key.
    pub fn open(envelope: &[u8]) -> Result<(Self, PublicKey), VoucherError> {
        let envelope = proto::Envelope::decode(envelope)
            .map_err(|_| VoucherError::Malformed("envelope is not protobuf"))?;
        let key = envelope
            .public_key
            .ok_or(VoucherError::Malformed("no public key"))?;
        let key = PublicKey::try_decode_protobuf(&key).map_err(|_| VoucherError::InvalidKey)?;
        let payload_type = envelope.payload_type.unwrap_or_default();
        if payload_type != PAYLOAD_TYPE {
            return Err(VoucherError::WrongPayloadType(payload_type));
        }
        let payload = envelope.payload.unwrap_or_default();
        let signature = envelope.signature.unwrap_or_default();
        if !key.verify(&signed_bytes(DOMAIN, &payload_type, &payload), &signature) {
            return Err(VoucherError::BadSignature);
        }
        let voucher = proto::ReservationVoucher::decode(payload.as_slice())
            .map_err(|_| VoucherError::Malformed("payload is not protobuf"))?;
        let id = |bytes: Option<Vec<u8>>| {
            let bytes = bytes.ok_or(VoucherError::Malformed("voucher misses a peer"))?;
            PeerId::from_bytes(&bytes).map_err(|_| VoucherError::Malformed("invalid peer id"))
        };
        let voucher = Voucher {
            relay: id(voucher.relay)?,
            peer: id(voucher.peer)?,
            expiration: (voucher.expiration).ok_or(VoucherError::Malformed("no expiration"))?,
        };
        if key.to_peer_id() != voucher.relay {
            return Err(VoucherError::WrongSigner);
        }
        Ok((voucher, key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Identity;

    fn voucher(relay: &Identity) -> Voucher {
        Voucher {
            relay: relay.peer_id(),
            peer: Identity::from_ed25519_seed([9; 32]).peer_id(),
            expiration: 1_800_000_000,
        }
    }

    #[test]
    fn a_signed_voucher_opens_and_verifies_with_libp2p_identity() {
        let relay = Identity::from_ed25519_seed([1; 32]);
        let signed = voucher(&relay).sign(relay.keypair()).expect("signed");
        let (opened, key) = Voucher::open(&signed).expect("opens");
        assert_eq!(opened, voucher(&relay));
        assert_eq!(key, relay.keypair().public());
        // Checked again by hand, with libp2p-identity alone, as a client does.
        let envelope = proto::Envelope::decode(signed.as_slice()).expect("envelope");
        let payload = envelope.payload.expect("payload");
        let public =
            PublicKey::try_decode_protobuf(&envelope.public_key.expect("key")).expect("key");
        let msg = signed_bytes("libp2p-relay-rsvp", &[0x03, 0x02], &payload);
        assert!(public.verify(&msg, &envelope.signature.expect("signature")));
        assert!(!public.verify(&signed_bytes("libp2p-other", &[0x03, 0x02], &payload), &[]));
    }

    #[test]
    fn tampering_is_caught() {
        let relay = Identity::from_ed25519_seed([1; 32]);
        let signed = voucher(&relay).sign(relay.keypair()).expect("signed");
        let mut envelope = proto::Envelope::decode(signed.as_slice()).expect("envelope");
        let mut forged = voucher(&relay);
        forged.expiration += 1;
        envelope.payload = Some(forged.payload());
        assert_eq!(
            Voucher::open(&envelope.encode_to_vec()),
            Err(VoucherError::BadSignature)
        );
        envelope.payload_type = Some(vec![0x03, 0x01]);
        assert!(matches!(
            Voucher::open(&envelope.encode_to_vec()),
            Err(VoucherError::WrongPayloadType(_))
        ));
        // Signed by someone other than the relay it names.
        let other = Identity::from_ed25519_seed([2; 32]);
        let signed = voucher(&relay).sign(other.keypair()).expect("signed");
        assert!(matches!(
            Voucher::open(&signed),
            Err(VoucherError::WrongSigner)
        ));
        assert!(matches!(
            Voucher::open(&[0xff, 0xff, 0xff]),
            Err(VoucherError::Malformed(_))
        ));
    }
}
