//! The key hash: the mixer behind the shard choice, and the seeded hasher of the shard maps.

use std::hash::{BuildHasher, Hasher};

/// Mixes `bytes` into `h`, a word at a time (multiply, rotate).
#[inline]
pub(super) fn mix(mut h: u64, bytes: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let word = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        h = (h ^ word).wrapping_mul(K).rotate_left(29);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut last = [0u8; 8];
        last[..rest.len()].copy_from_slice(rest);
        h = (h ^ u64::from_le_bytes(last))
            .wrapping_mul(K)
            .rotate_left(29);
    }
    h
}

/// Murmur3's finaliser: every input bit affects every output bit.
#[inline]
pub(super) fn fmix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Hashes keys in the shard maps: [`mix`] and [`fmix`], several times cheaper than SipHash on
/// short keys, keyed with a random seed per store so that colliding keys cannot be prepared in
/// advance (memcached hashes keys without any key at all).
#[derive(Debug, Clone, Copy)]
pub(super) struct KeyHash {
    pub(super) seed: u64,
}

impl BuildHasher for KeyHash {
    type Hasher = KeyHasher;

    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(self.seed)
    }
}

/// The hasher [`KeyHash`] builds.
#[derive(Debug)]
pub(super) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        self.0 = mix(self.0, bytes);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.0 = mix(self.0, &(n as u64).to_le_bytes());
    }

    #[inline]
    fn finish(&self) -> u64 {
        fmix(self.0)
    }
}
