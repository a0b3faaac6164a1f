//! The set of event ids already in the log, for idempotent appends.
//!
//! Ids are blake3 hashes, so their first 8 bytes are already uniformly distributed: they are
//! the set's key and its hash (no second hashing pass over millions of ids). A prefix is a
//! filter, not the answer: two events may share one, so an append confirms a prefix already
//! present against the full ids its bucket's blocks hold before calling an event a duplicate.

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
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64;
    }
}

/// 64-bit id prefixes: the ids a bucket may hold. Two events of a bucket of 10^5 share a prefix
/// with odds of about 10^-9, and then the append reads the bucket's blocks to tell them apart.
pub type IdSet = HashSet<u64, BuildHasherDefault<PrefixHasher>>;

/// A map keyed by a hash prefix (event id or subject handle), hashed by identity.
pub type PrefixMap<V> = HashMap<u128, V, BuildHasherDefault<PrefixHasher>>;

/// Full event ids, hashed by their own bytes.
pub type FullIds = HashSet<EventId, BuildHasherDefault<PrefixHasher>>;

/// What an append knows of one bucket's ids: the prefix of every id stored there or appended
/// by the run, and, once a new event's prefix is already among them, every full id too.
pub struct Known {
    prefixes: IdSet,
    full: Option<FullIds>,
}

impl Known {
    pub fn new(prefixes: IdSet) -> Known {
        Known { prefixes, full: None }
    }

    /// Takes `id` as new to the bucket, unless the bucket holds it already: returns whether
    /// it is new. When its prefix is known, the answer is the full ids': `stored` reads the
    /// bucket's from its blocks (once), and `pending` are those this batch took so far, not in
    /// a block yet.
    pub fn insert<'a>(
        &mut self,
        id: &EventId,
        stored: impl FnOnce() -> Result<FullIds>,
        pending: impl Iterator<Item = &'a EventId>,
    ) -> Result<bool> {
        if self.prefixes.insert(prefix(id)) {
            if let Some(full) = &mut self.full {
                full.insert(*id);
            }
            return Ok(true);
        }
        let full = match &mut self.full {
            Some(full) => full,
            None => {
                let mut full = stored()?;
                full.extend(pending.copied());
                self.full.insert(full)
            }
        };
        Ok(full.insert(*id))
    }
}

pub fn prefix(id: &EventId) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&id[..8]);
    u64::from_be_bytes(b)
}

/// The top bit of a `block_ids` value's first word: its prefixes are 8 bytes (store format 9),
/// not 16. No batch number reaches it.
const SHORT: u64 = 1 << 63;

/// The value of a `block_ids` entry, beside the block of the same key: the last batch the block
/// holds (u64, with [`SHORT`] set), then the 64-bit prefixes of its event ids, ascending. The
/// duplicate check of an append reads these for the buckets it touches, never the whole log.
pub fn encode_ids(last_batch: u64, ids: &mut [u64]) -> Vec<u8> {
    ids.sort_unstable();
    let mut out = Vec::with_capacity(8 + ids.len() * 8);
    out.extend_from_slice(&(last_batch | SHORT).to_be_bytes());
    for id in ids.iter() {
        out.extend_from_slice(&id.to_be_bytes());
    }
    out
}

/// The last batch and the 64-bit id prefixes of a `block_ids` value: of 8 bytes each, or the
/// first 8 of each 16 in an entry written before store format 9.
pub fn decode_ids(bytes: &[u8]) -> Result<(u64, impl Iterator<Item = u64> + '_)> {
    let bad = || StorageError::Corrupt(format!("block ids entry of {} bytes", bytes.len()));
    let (last, ids) = bytes.split_first_chunk::<8>().ok_or_else(bad)?;
    let last = u64::from_be_bytes(*last);
    let width = if last & SHORT != 0 { 8 } else { 16 };
    if !ids.len().is_multiple_of(width) {
        return Err(bad());
    }
    Ok((
        last & !SHORT,
        ids.chunks_exact(width).map(|c| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&c[..8]);
            u64::from_be_bytes(b)
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_prefix_is_settled_by_the_full_ids() {
        let id = |first: u8, last: u8| -> EventId {
            let mut id = [first; 32];
            id[31] = last;
            id
        };
        let stored = [id(1, 1), id(2, 2)];
        let mut known = Known::new(stored.iter().map(prefix).collect());
        let read = std::cell::Cell::new(0);
        let blocks = || {
            read.set(read.get() + 1);
            Ok(stored.iter().copied().collect::<FullIds>())
        };
        assert!(known.insert(&id(3, 3), blocks, std::iter::empty()).expect("insert"));
        assert_eq!(read.get(), 0, "a new prefix needs no block");
        assert!(!known
            .insert(&id(1, 1), blocks, [&id(3, 3)].into_iter())
            .expect("insert"));
        assert_eq!(read.get(), 1);
        // Same prefix, another id: new, and the blocks are not read again.
        assert!(known.insert(&id(1, 9), blocks, std::iter::empty()).expect("insert"));
        assert!(
            !known.insert(&id(3, 3), blocks, std::iter::empty()).expect("insert"),
            "pending"
        );
        assert!(!known.insert(&id(1, 9), blocks, std::iter::empty()).expect("insert"));
        assert!(known.insert(&id(4, 4), blocks, std::iter::empty()).expect("insert"));
        assert!(!known.insert(&id(4, 4), blocks, std::iter::empty()).expect("insert"));
        assert_eq!(read.get(), 1);
    }

    #[test]
    fn entries_of_both_widths_read_as_64_bit_prefixes() {
        let short = encode_ids(7, &mut [3u64 << 40, 1]);
        assert_eq!(short.len(), 8 + 2 * 8);
        let (last, ids) = decode_ids(&short).expect("decodes");
        assert_eq!((last, ids.collect::<Vec<_>>()), (7, vec![1, 3 << 40]));
        // Written before format 9: the batch bare, then 16 bytes an id.
        let mut long = 7u64.to_be_bytes().to_vec();
        long.extend_from_slice(&((5u128 << 64) | 9).to_be_bytes());
        let (last, ids) = decode_ids(&long).expect("decodes");
        assert_eq!((last, ids.collect::<Vec<_>>()), (7, vec![5]));
        assert!(decode_ids(&long[..20]).is_err());
        assert!(decode_ids(&short[..20]).is_err());
        assert!(decode_ids(&short[..5]).is_err());
    }
}
