//! Per-customer encryption keys (for crypto-shredding on erasure).
//!
//! Every event payload is sealed under its customer's key, so destroying the key makes
//! the payload unreadable wherever sled still keeps an old copy of it. Keys therefore do
//! not live in sled (whose log keeps old pages): they live in `keys.bin`, which is only
//! appended to, and is rewritten whole (new file, fsync, rename) when a key is destroyed.
//!
//! `keys.bin`: the 8-byte magic `CISKEYS1`, then 48-byte records: handle (16, big-endian)
//! followed by the key (32). A torn final record from a crash is ignored and truncated.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use chacha20::cipher::{KeyIvInit, StreamCipher};
use chacha20::ChaCha20;

use crate::envelope::{EventId, Handle};
use crate::error::{io_err, Result, StorageError};
use crate::idset::PrefixMap;

const MAGIC: &[u8; 8] = b"CISKEYS1";
const RECORD: usize = 48;

pub type Key = [u8; 32];

pub struct Vault {
    keys: PrefixMap<Key>,
    file: Option<PathBuf>,
}

impl Vault {
    pub fn in_memory() -> Self {
        Vault {
            keys: PrefixMap::default(),
            file: None,
        }
    }

    pub fn open(path: &Path) -> Result<Self> {
        let mut keys = PrefixMap::default();
        if path.exists() {
            let mut bytes = Vec::new();
            File::open(path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .map_err(io_err(path))?;
            if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
                return Err(StorageError::Corrupt(format!("{}: not a cis key file", path.display())));
            }
            let body = &bytes[MAGIC.len()..];
            let whole = body.len() / RECORD * RECORD;
            for rec in body[..whole].chunks_exact(RECORD) {
                let mut h = [0u8; 16];
                h.copy_from_slice(&rec[..16]);
                let mut k = [0u8; 32];
                k.copy_from_slice(&rec[16..]);
                keys.insert(u128::from_be_bytes(h), k);
            }
            if whole != body.len() {
                tracing::warn!(path = %path.display(), "dropping a torn key record left by a crash");
                let f = OpenOptions::new().write(true).open(path).map_err(io_err(path))?;
                f.set_len((MAGIC.len() + whole) as u64).map_err(io_err(path))?;
                f.sync_all().map_err(io_err(path))?;
            }
        } else {
            write_whole(path, &keys)?;
        }
        Ok(Vault {
            keys,
            file: Some(path.to_path_buf()),
        })
    }

    pub fn get(&self, handle: Handle) -> Option<&Key> {
        self.keys.get(&handle)
    }

    /// Makes sure every handle has a key, creating and durably saving the missing ones
    /// before returning (so no payload is ever written under a key that could be lost).
    pub fn ensure(&mut self, handles: impl IntoIterator<Item = Handle>) -> Result<()> {
        let mut fresh = Vec::new();
        for h in handles {
            if let std::collections::hash_map::Entry::Vacant(slot) = self.keys.entry(h) {
                let mut key = [0u8; 32];
                getrandom::fill(&mut key).map_err(|e| StorageError::Random(e.to_string()))?;
                slot.insert(key);
                fresh.push((h, key));
            }
        }
        if let (Some(path), false) = (&self.file, fresh.is_empty()) {
            let mut buf = Vec::with_capacity(fresh.len() * RECORD);
            for (h, k) in &fresh {
                buf.extend_from_slice(&h.to_be_bytes());
                buf.extend_from_slice(k);
            }
            let mut f = OpenOptions::new().append(true).open(path).map_err(io_err(path))?;
            f.write_all(&buf).map_err(io_err(path))?;
            f.sync_data().map_err(io_err(path))?;
        }
        Ok(())
    }

    /// Destroys the keys of `handles`; the file is rewritten so the old bytes leave it.
    pub fn destroy(&mut self, handles: &[Handle]) -> Result<()> {
        for h in handles {
            self.keys.remove(h);
        }
        if let Some(path) = &self.file {
            write_whole(path, &self.keys)?;
        }
        Ok(())
    }
}

fn write_whole(path: &Path, keys: &PrefixMap<Key>) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut sorted: Vec<_> = keys.iter().collect();
    sorted.sort_by_key(|(h, _)| **h);
    let mut buf = Vec::with_capacity(MAGIC.len() + sorted.len() * RECORD);
    buf.extend_from_slice(MAGIC);
    for (h, k) in sorted {
        buf.extend_from_slice(&h.to_be_bytes());
        buf.extend_from_slice(k);
    }
    let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(&buf).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    if let Some(dir) = path.parent() {
        File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))?;
    }
    Ok(())
}

/// Seals (or opens: the cipher is its own inverse) a payload in place. The nonce is the
/// event id's first 12 bytes: unique per event, and the same event always seals the same.
pub fn apply_cipher(key: &Key, id: &EventId, data: &mut [u8]) {
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&id[..12]);
    let mut cipher = ChaCha20::new(key.into(), &nonce.into());
    cipher.apply_keystream(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_survive_reopen_and_destroyed_keys_leave_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys.bin");
        let mut v = Vault::open(&path).expect("open");
        v.ensure([1, 2, 3]).expect("ensure");
        let k2 = *v.get(2).expect("key 2");
        drop(v);
        let mut v = Vault::open(&path).expect("reopen");
        assert_eq!(v.get(2), Some(&k2));
        v.destroy(&[2]).expect("destroy");
        let bytes = std::fs::read(&path).expect("read");
        assert!(!bytes.windows(32).any(|w| w == k2), "destroyed key still in the file");
        assert!(Vault::open(&path).expect("reopen").get(2).is_none());
    }

    #[test]
    fn torn_tail_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys.bin");
        let mut v = Vault::open(&path).expect("open");
        v.ensure([7]).expect("ensure");
        drop(v);
        let mut f = OpenOptions::new().append(true).open(&path).expect("open for append");
        f.write_all(&[9u8; 20]).expect("write torn tail");
        let v = Vault::open(&path).expect("reopen");
        assert!(v.get(7).is_some());
        assert_eq!(
            std::fs::metadata(&path).expect("meta").len(),
            (MAGIC.len() + RECORD) as u64
        );
    }

    #[test]
    fn cipher_round_trips() {
        let key = [5u8; 32];
        let id = [9u8; 32];
        let mut data = b"hello world".to_vec();
        apply_cipher(&key, &id, &mut data);
        assert_ne!(&data, b"hello world");
        apply_cipher(&key, &id, &mut data);
        assert_eq!(&data, b"hello world");
    }
}
