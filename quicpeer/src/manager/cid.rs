//! Connection IDs an endpoint can recognise as its own after a restart.
//!
//! quinn drops a short-header packet whose destination CID fails its generator's `validate`
//! before it considers a stateless reset. Its default generator takes a random key per process,
//! so a restarted endpoint cannot recognise the CIDs it issued before and stays silent. This
//! generator tags each CID with a MAC under a key derived from the identity: the same key after a
//! restart, so the old CIDs still validate and the reset goes out.
//!
//! Layout: 12 random bytes then a 4-byte tag, `HMAC-SHA256(key, random)[..4]`. The random part
//! is long enough that CIDs (and the reset tokens computed from them) do not repeat over the
//! identity's lifetime even though the key never changes.
//!
//! A manager that is one shard of several on one port (`Config::shard`) puts its shard index
//! in the first byte of the random part (QUIC-LB's idea: the CID names the server that owns
//! the connection), leaving 11 random bytes. The tag covers that byte too, so a shard can tell
//! from a datagram alone, without any shared table, that it is addressed to a connection of
//! another shard ([`shard_of`]) and hand it over instead of answering it with a stateless
//! reset; a forged CID fails the tag and is not handed anywhere.

use std::time::Duration;

use quinn_proto::{ConnectionId, ConnectionIdGenerator, InvalidCid};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use ring::hmac;

const RANDOM_LEN: usize = 12;
const TAG_LEN: usize = 4;
/// Length of the connection IDs quicpeer issues.
pub const CID_LEN: usize = RANDOM_LEN + TAG_LEN;

/// A [`ConnectionIdGenerator`] whose CIDs carry a keyed tag (see the module docs).
pub(crate) struct KeyedCidGenerator {
    key: hmac::Key,
    rng: ChaCha20Rng,
    /// The shard index written into the first byte of every CID, if sharded.
    shard: Option<u8>,
}

impl KeyedCidGenerator {
    /// A generator tagging with `key` and drawing the random part from a stream seeded by `seed`;
    /// with `shard`, every CID names that shard in its first byte.
    pub(crate) fn new(key: &[u8; 32], seed: [u8; 32], shard: Option<u8>) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
            rng: ChaCha20Rng::from_seed(seed),
            shard,
        }
    }
}

fn tag(key: &hmac::Key, random: &[u8]) -> [u8; TAG_LEN] {
    let mac = hmac::sign(key, random);
    let mut tag = [0; TAG_LEN];
    tag.copy_from_slice(&mac.as_ref()[..TAG_LEN]);
    tag
}

/// Whether `cid` carries a valid tag under `key`.
fn is_valid(key: &hmac::Key, cid: &[u8]) -> bool {
    if cid.len() != CID_LEN {
        return false;
    }
    let (random, cid_tag) = cid.split_at(RANDOM_LEN);
    // The tag is not a secret the attacker can learn anything from by timing: a wrong guess
    // only means the packet is dropped instead of answered with a reset (or handed to a shard).
    tag(key, random) == cid_tag
}

/// The destination connection ID of a QUIC datagram's first packet, if it has the length of
/// ours: after the first byte in a short header, after the length byte in a long header.
fn destination_cid(datagram: &[u8]) -> Option<&[u8]> {
    let first = *datagram.first()?;
    if first & 0x80 == 0 {
        datagram.get(1..1 + CID_LEN)
    } else {
        // Long header: first byte, 4-byte version, DCID length, DCID.
        if usize::from(*datagram.get(5)?) != CID_LEN {
            return None;
        }
        datagram.get(6..6 + CID_LEN)
    }
}

/// What a sharded manager needs to route datagrams: the CID key and its own shard.
pub(crate) struct ShardRouter {
    key: hmac::Key,
    own: u8,
}

impl ShardRouter {
    pub(crate) fn new(key: &[u8; 32], own: u8) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
            own,
        }
    }

    /// The shard that owns the connection `datagram` is addressed to: the shard byte of its
    /// destination CID if that CID is one of ours (a valid tag). `None` for anything else
    /// (a client's first Initial, whose DCID the client picked; junk; a forged CID). The own
    /// shard is answered without computing the tag: that datagram stays here either way.
    pub(crate) fn shard_of(&self, datagram: &[u8]) -> Option<u8> {
        let cid = destination_cid(datagram)?;
        let shard = *cid.first()?;
        if shard == self.own {
            return Some(shard);
        }
        is_valid(&self.key, cid).then_some(shard)
    }
}

impl ConnectionIdGenerator for KeyedCidGenerator {
    fn generate_cid(&mut self) -> ConnectionId {
        let mut bytes = [0u8; CID_LEN];
        self.rng.fill_bytes(&mut bytes[..RANDOM_LEN]);
        if let Some(shard) = self.shard {
            bytes[0] = shard;
        }
        let tag = tag(&self.key, &bytes[..RANDOM_LEN]);
        bytes[RANDOM_LEN..].copy_from_slice(&tag);
        ConnectionId::new(&bytes)
    }

    fn validate(&self, cid: &ConnectionId) -> Result<(), InvalidCid> {
        if is_valid(&self.key, cid) {
            Ok(())
        } else {
            Err(InvalidCid)
        }
    }

    fn cid_len(&self) -> usize {
        CID_LEN
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cids_validate_across_instances_with_the_same_key() {
        let key = [7u8; 32];
        let mut before = KeyedCidGenerator::new(&key, [1; 32], None);
        let after = KeyedCidGenerator::new(&key, [2; 32], None);
        for _ in 0..100 {
            let cid = before.generate_cid();
            assert_eq!(cid.len(), CID_LEN);
            assert!(after.validate(&cid).is_ok());
        }
    }

    #[test]
    fn other_keys_and_lengths_are_rejected() {
        let mut ours = KeyedCidGenerator::new(&[7u8; 32], [1; 32], None);
        let theirs = KeyedCidGenerator::new(&[8u8; 32], [1; 32], None);
        let rejected = (0..100)
            .filter(|_| theirs.validate(&ours.generate_cid()).is_err())
            .count();
        // A 32-bit tag collides with probability 2^-32 per CID.
        assert_eq!(rejected, 100);
        assert!(ours.validate(&ConnectionId::new(&[0u8; 8])).is_err());
        assert!(ours.validate(&ConnectionId::new(&[])).is_err());
    }

    #[test]
    fn cids_do_not_repeat() {
        let mut generator = KeyedCidGenerator::new(&[7u8; 32], [1; 32], None);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            assert!(seen.insert(generator.generate_cid()));
        }
    }

    /// A short-header datagram to `cid`: first byte, DCID, then some payload.
    fn short(cid: &ConnectionId) -> Vec<u8> {
        let mut datagram = vec![0x40];
        datagram.extend_from_slice(cid);
        datagram.extend_from_slice(&[0xab; 40]);
        datagram
    }

    /// A long-header datagram (a Handshake packet) to `cid`.
    fn long(cid: &ConnectionId) -> Vec<u8> {
        let mut datagram = vec![0xe0, 0, 0, 0, 1, cid.len() as u8];
        datagram.extend_from_slice(cid);
        datagram.extend_from_slice(&[8, 1, 2, 3, 4, 5, 6, 7, 8, 0xcd, 0xcd]);
        datagram
    }

    #[test]
    fn shard_cids_name_their_shard_and_validate_everywhere() {
        let key = [7u8; 32];
        let mut shard3 = KeyedCidGenerator::new(&key, [1; 32], Some(3));
        let unsharded = KeyedCidGenerator::new(&key, [2; 32], None);
        let router0 = ShardRouter::new(&key, 0);
        let router3 = ShardRouter::new(&key, 3);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let cid = shard3.generate_cid();
            assert_eq!(cid.len(), CID_LEN);
            assert_eq!(cid[0], 3);
            // The shard byte is covered by the tag: any generator with the key validates it.
            assert!(unsharded.validate(&cid).is_ok());
            assert!(shard3.validate(&cid).is_ok());
            assert_eq!(router0.shard_of(&short(&cid)), Some(3));
            assert_eq!(router0.shard_of(&long(&cid)), Some(3));
            assert_eq!(router3.shard_of(&short(&cid)), Some(3));
            // The other 11 bytes stay random.
            assert!(seen.insert(cid[1..RANDOM_LEN].to_vec()));
        }
    }

    #[test]
    fn forged_or_foreign_cids_are_routed_nowhere() {
        let mut ours = KeyedCidGenerator::new(&[7u8; 32], [1; 32], Some(1));
        let mut theirs = KeyedCidGenerator::new(&[8u8; 32], [1; 32], Some(1));
        let router = ShardRouter::new(&[7u8; 32], 0);
        for _ in 0..100 {
            // Another key's CID with our shard byte: the tag fails.
            assert_eq!(router.shard_of(&short(&theirs.generate_cid())), None);
            // Our CID with its shard byte changed (to move it to another shard): the tag fails.
            let mut forged = ours.generate_cid().to_vec();
            forged[0] = 2;
            assert_eq!(router.shard_of(&short(&ConnectionId::new(&forged))), None);
        }
        // Too short, empty, a long header with another DCID length: nothing to route.
        let cid = ours.generate_cid();
        assert_eq!(router.shard_of(&short(&cid)[..CID_LEN]), None);
        assert_eq!(router.shard_of(&[]), None);
        let mut other_len = long(&cid);
        other_len[5] = 8;
        assert_eq!(router.shard_of(&other_len), None);
        assert_eq!(router.shard_of(&long(&cid)[..6]), None);
    }
}
