//! The set of event ids already in the log, for idempotent appends.
//!
//! Ids are blake3 hashes, so their first 16 bytes are already uniformly distributed:
//! they are the set's key and its hash (no second hashing pass over millions of ids).

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use crate::envelope::EventId;

#[derive(Default)]
pub struct PrefixHasher(u64);

impl Hasher for PrefixHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(b);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64;
    }
}

/// 128-bit id prefixes: a false "duplicate" needs two distinct events whose hashes agree
/// on 128 bits (birthday bound ~2^64 events), which we accept.
pub type IdSet = HashSet<u128, BuildHasherDefault<PrefixHasher>>;

/// A map keyed by a hash prefix (event id or subject handle), hashed by identity.
pub type PrefixMap<V> = HashMap<u128, V, BuildHasherDefault<PrefixHasher>>;

pub fn prefix(id: &EventId) -> u128 {
    let mut b = [0u8; 16];
    b.copy_from_slice(&id[..16]);
    u128::from_be_bytes(b)
}
