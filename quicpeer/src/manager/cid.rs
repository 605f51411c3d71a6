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
}

impl KeyedCidGenerator {
    /// A generator tagging with `key` and drawing the random part from a stream seeded by `seed`.
    pub(crate) fn new(key: &[u8; 32], seed: [u8; 32]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
            rng: ChaCha20Rng::from_seed(seed),
        }
    }

    fn tag(&self, random: &[u8]) -> [u8; TAG_LEN] {
        let mac = hmac::sign(&self.key, random);
        let mut tag = [0; TAG_LEN];
        tag.copy_from_slice(&mac.as_ref()[..TAG_LEN]);
        tag
    }
}

impl ConnectionIdGenerator for KeyedCidGenerator {
    fn generate_cid(&mut self) -> ConnectionId {
        let mut bytes = [0u8; CID_LEN];
        self.rng.fill_bytes(&mut bytes[..RANDOM_LEN]);
        let tag = self.tag(&bytes[..RANDOM_LEN]);
        bytes[RANDOM_LEN..].copy_from_slice(&tag);
        ConnectionId::new(&bytes)
    }

    fn validate(&self, cid: &ConnectionId) -> Result<(), InvalidCid> {
        if cid.len() != CID_LEN {
            return Err(InvalidCid);
        }
        let (random, tag) = cid.split_at(RANDOM_LEN);
        // The tag is not a secret the attacker can learn anything from by timing: a wrong guess
        // only means the packet is dropped instead of answered with a reset.
        if self.tag(random) == tag {
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
        let mut before = KeyedCidGenerator::new(&key, [1; 32]);
        let after = KeyedCidGenerator::new(&key, [2; 32]);
        for _ in 0..100 {
            let cid = before.generate_cid();
            assert_eq!(cid.len(), CID_LEN);
            assert!(after.validate(&cid).is_ok());
        }
    }

    #[test]
    fn other_keys_and_lengths_are_rejected() {
        let mut ours = KeyedCidGenerator::new(&[7u8; 32], [1; 32]);
        let theirs = KeyedCidGenerator::new(&[8u8; 32], [1; 32]);
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
        let mut generator = KeyedCidGenerator::new(&[7u8; 32], [1; 32]);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            assert!(seen.insert(generator.generate_cid()));
        }
    }
}
