//! The set of event ids already in the log, for idempotent appends.
//!
//! Ids are blake3 hashes, so their first 16 bytes are already uniformly distributed:
//! they are the set's key and its hash (no second hashing pass over millions of ids).

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use crate::envelope::EventId;
use crate::error::{Result, StorageError};

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

/// The value of a `block_ids` entry, beside the block of the same key: the last batch the block
/// holds (u64), then the 128-bit prefixes of its event ids, ascending. The duplicate check of an
/// append reads these for the buckets it touches, never the whole log.
pub fn encode_ids(last_batch: u64, ids: &mut [u128]) -> Vec<u8> {
    ids.sort_unstable();
    let mut out = Vec::with_capacity(8 + ids.len() * 16);
    out.extend_from_slice(&last_batch.to_be_bytes());
    for id in ids.iter() {
        out.extend_from_slice(&id.to_be_bytes());
    }
    out
}

/// The last batch and the id prefixes of a `block_ids` value.
pub fn decode_ids(bytes: &[u8]) -> Result<(u64, impl Iterator<Item = u128> + '_)> {
    let bad = || StorageError::Corrupt(format!("block ids entry of {} bytes", bytes.len()));
    if bytes.len() < 8 || !(bytes.len() - 8).is_multiple_of(16) {
        return Err(bad());
    }
    let (last, ids) = bytes.split_at(8);
    let last = u64::from_be_bytes(last.try_into().map_err(|_| bad())?);
    Ok((
        last,
        ids.chunks_exact(16).map(|c| {
            let mut b = [0u8; 16];
            b.copy_from_slice(c);
            u128::from_be_bytes(b)
        }),
    ))
}
