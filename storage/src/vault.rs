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
use std::ops::Range;
use std::path::{Path, PathBuf};

use chacha20::cipher::{KeyIvInit, StreamCipher};
use chacha20::ChaCha20;
use wide::u32x4;

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
            // Sized once: grown key by key, the map rehashed itself ~17 times for the peer set's
            // 100,000 customers, holding old and new tables at once (a one-row ingest's peak
            // 42 → 38 MiB, its wall time 0.94 ×).
            keys.reserve(whole / RECORD);
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

/// Payloads of at most this many bytes (one ChaCha20 block) are opened [`LANES`] at a time.
const BLOCK: usize = 64;
/// How many payloads [`open_all`] computes keystream for at once: sixteen 32-bit lanes fill one
/// AVX-512 register (two AVX2 ones, four SSE2 ones). With four, the SSE2 width every x86-64 has,
/// ChaCha20 was a fifth of a full snapshot's time on a machine with AVX-512.
pub const LANES: usize = 16;

/// Opens sealed payloads one after another into `plain` (cleared first): payload i is
/// `plain[ends[i - 1]..ends[i]]` (from 0 for the first), the same bytes [`apply_cipher`] gives.
///
/// Why not [`apply_cipher`] on each: a full scan opens millions of payloads of one block
/// each, and the `chacha20` crate's vector backends compute four blocks of one stream per
/// call (its lanes are consecutive counters), so three quarters of their work was thrown
/// away and opening was half a scan's time. Here each lane is another payload's stream
/// (block 0 of RFC 8439 ChaCha20 under its own key and nonce), a word of every lane in one
/// vector ([`Lanes::keystream`]); a payload longer than a block goes through [`apply_cipher`].
pub fn open_all<'p>(
    payloads: impl IntoIterator<Item = (&'p Key, &'p EventId, &'p [u8])>,
    plain: &mut Vec<u8>,
    ends: &mut Vec<usize>,
) {
    plain.clear();
    ends.clear();
    let mut lanes = Lanes::default();
    for (key, id, sealed) in payloads {
        let start = plain.len();
        plain.extend_from_slice(sealed);
        let end = plain.len();
        ends.push(end);
        lanes.take(plain, key, id, start..end);
    }
    lanes.apply(plain);
}

/// Seals (or opens) payloads where they lie in `buf`, each under its key and id: what
/// [`apply_cipher`] on each gives, [`LANES`] at a time as in [`open_all`] (an append seals a
/// block's envelopes with it once they are copied into the block).
pub fn apply_all<'p>(buf: &mut [u8], payloads: impl IntoIterator<Item = (&'p Key, &'p EventId, Range<usize>)>) {
    let mut lanes = Lanes::default();
    for (key, id, at) in payloads {
        lanes.take(buf, key, id, at);
    }
    lanes.apply(buf);
}

/// One 32-bit word of every lane's ChaCha state.
type Word = [u32; LANES];

/// Up to [`LANES`] payloads waiting for their keystream: key and nonce words lane by lane.
#[derive(Default)]
struct Lanes {
    key: [Word; 8],
    nonce: [Word; 3],
    /// (start in the plain buffer, length) of each used lane's payload.
    spans: [(usize, usize); LANES],
    used: usize,
}

fn le_word(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

impl Lanes {
    /// Takes the payload at `at` in `buf` into a lane (applying the lanes once all are used),
    /// or, longer than a block, applies its cipher alone at once.
    fn take(&mut self, buf: &mut [u8], key: &Key, id: &EventId, at: Range<usize>) {
        if at.len() > BLOCK {
            apply_cipher(key, id, &mut buf[at]);
            return;
        }
        self.push(key, id, at.start, at.len());
        if self.used == LANES {
            self.apply(buf);
        }
    }

    fn push(&mut self, key: &Key, id: &EventId, start: usize, len: usize) {
        let lane = self.used;
        for (w, chunk) in self.key.iter_mut().zip(key.chunks_exact(4)) {
            w[lane] = le_word(chunk);
        }
        // The nonce is the id's first 12 bytes, as in `apply_cipher`.
        for (w, chunk) in self.nonce.iter_mut().zip(id.chunks_exact(4)) {
            w[lane] = le_word(chunk);
        }
        self.spans[lane] = (start, len);
        self.used += 1;
    }

    /// XORs each used lane's keystream into its payload and empties the lanes.
    fn apply(&mut self, plain: &mut [u8]) {
        if self.used == 0 {
            return;
        }
        let words = self.keystream();
        for (lane, &(start, len)) in self.spans[..self.used].iter().enumerate() {
            let mut data = [0u8; BLOCK];
            data[..len].copy_from_slice(&plain[start..start + len]);
            for (out, w) in data.chunks_exact_mut(4).zip(&words) {
                let v = le_word(out) ^ w[lane];
                out.copy_from_slice(&v.to_le_bytes());
            }
            plain[start..start + len].copy_from_slice(&data[..len]);
        }
        self.used = 0;
    }

    /// Block 0 (counter 0) of every lane's stream, word by word (RFC 8439, section 2.3): all
    /// sixteen lanes in one AVX-512 vector a word where the machine has it, else four lanes at a
    /// time in 128-bit vectors.
    fn keystream(&self) -> [Word; 16] {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: just checked.
            return unsafe { avx512::block0(&self.key, &self.nonce) };
        }
        self.keystream_by_four()
    }

    /// [`Lanes::keystream`] four lanes at a time.
    fn keystream_by_four(&self) -> [Word; 16] {
        let mut out = [[0; LANES]; 16];
        for quad in 0..LANES / 4 {
            let pick = |w: &Word| u32x4::new([w[4 * quad], w[4 * quad + 1], w[4 * quad + 2], w[4 * quad + 3]]);
            let words = block0_by_four(self.key.each_ref().map(pick), self.nonce.each_ref().map(pick));
            for (o, w) in out.iter_mut().zip(words) {
                o[4 * quad..4 * quad + 4].copy_from_slice(&w.to_array());
            }
        }
        out
    }
}

/// The ChaCha20 double round, ten times, then the input added, over the sixteen state words of
/// `$init` as vectors of lanes of whatever width (`$add(a, b)` adding two, `$xor_rotate(w, o, n)`
/// being `(w ^ o) <<< n`).
macro_rules! chacha_block {
    ($init:expr, $add:expr, $xor_rotate:expr) => {{
        let init = $init;
        let [mut x0, mut x1, mut x2, mut x3, mut x4, mut x5, mut x6, mut x7, mut x8, mut x9, mut x10, mut x11, mut x12, mut x13, mut x14, mut x15] =
            init;
        macro_rules! quarter {
            ($a:ident, $b:ident, $c:ident, $d:ident) => {
                $a = $add($a, $b);
                $d = $xor_rotate($d, $a, 16);
                $c = $add($c, $d);
                $b = $xor_rotate($b, $c, 12);
                $a = $add($a, $b);
                $d = $xor_rotate($d, $a, 8);
                $c = $add($c, $d);
                $b = $xor_rotate($b, $c, 7);
            };
        }
        for _ in 0..10 {
            quarter!(x0, x4, x8, x12);
            quarter!(x1, x5, x9, x13);
            quarter!(x2, x6, x10, x14);
            quarter!(x3, x7, x11, x15);
            quarter!(x0, x5, x10, x15);
            quarter!(x1, x6, x11, x12);
            quarter!(x2, x7, x8, x13);
            quarter!(x3, x4, x9, x14);
        }
        let x = [x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11, x12, x13, x14, x15];
        let mut out = x;
        for (o, i) in out.iter_mut().zip(init) {
            *o = $add(*o, i);
        }
        out
    }};
}

/// The initial state of block 0: constants, key, counter 0, nonce (RFC 8439, section 2.3).
fn initial<W: Copy>(key: [W; 8], nonce: [W; 3], splat: impl Fn(u32) -> W) -> [W; 16] {
    const SIGMA: [u32; 4] = [0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574];
    [
        splat(SIGMA[0]),
        splat(SIGMA[1]),
        splat(SIGMA[2]),
        splat(SIGMA[3]),
        key[0],
        key[1],
        key[2],
        key[3],
        key[4],
        key[5],
        key[6],
        key[7],
        splat(0),
        nonce[0],
        nonce[1],
        nonce[2],
    ]
}

/// Block 0 of four lanes, in 128-bit vectors (SSE2 on every x86-64, NEON on aarch64).
fn block0_by_four(key: [u32x4; 8], nonce: [u32x4; 3]) -> [u32x4; 16] {
    chacha_block!(
        initial(key, nonce, u32x4::splat),
        |a: u32x4, b: u32x4| a + b,
        |w: u32x4, o: u32x4, n: u32| {
            let v = w ^ o;
            (v << n) | (v >> (32 - n))
        }
    )
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::{
        __m512i, _mm512_add_epi32, _mm512_loadu_si512, _mm512_rolv_epi32, _mm512_set1_epi32, _mm512_storeu_si512,
        _mm512_xor_si512,
    };

    use super::{initial, Word};

    /// Block 0 of all sixteen lanes, a word of each in one 512-bit vector.
    ///
    /// # Safety
    /// The machine must have AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn block0(key: &[Word; 8], nonce: &[Word; 3]) -> [Word; 16] {
        // SAFETY (both): a `Word` is 64 bytes, one unaligned 512-bit load or store.
        let load = |w: &Word| unsafe { _mm512_loadu_si512(w.as_ptr().cast()) };
        let splat = |v: u32| _mm512_set1_epi32(v as i32);
        let words: [__m512i; 16] = chacha_block!(
            initial(key.each_ref().map(load), nonce.each_ref().map(load), splat),
            |a, b| _mm512_add_epi32(a, b),
            |w, o, n: u32| _mm512_rolv_epi32(_mm512_xor_si512(w, o), _mm512_set1_epi32(n as i32))
        );
        let mut out = [[0; super::LANES]; 16];
        for (o, w) in out.iter_mut().zip(words) {
            unsafe { _mm512_storeu_si512(o.as_mut_ptr().cast(), w) };
        }
        out
    }
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

    /// Opening many at once gives what opening each alone gives, at every length around the
    /// one-block boundary and with a lane group left part full.
    #[test]
    fn open_all_equals_apply_cipher_on_each() {
        let payloads: Vec<(Key, EventId, Vec<u8>)> = (0..23u8)
            .map(|i| {
                let len = [0, 1, 12, 56, 63, 64, 65, 100, 128, 200][usize::from(i) % 10];
                let key = [i.wrapping_mul(37).wrapping_add(1); 32].map(|b| b ^ i);
                let mut id = [0u8; 32];
                for (j, b) in id.iter_mut().enumerate() {
                    *b = (j as u8).wrapping_mul(i).wrapping_add(7);
                }
                (key, id, (0..len).map(|b| (b as u8) ^ i).collect())
            })
            .collect();
        let (mut plain, mut ends) = (Vec::new(), Vec::new());
        open_all(payloads.iter().map(|(k, id, p)| (k, id, &p[..])), &mut plain, &mut ends);
        let mut expected = Vec::new();
        for (key, id, p) in &payloads {
            let mut one = p.clone();
            apply_cipher(key, id, &mut one);
            expected.extend_from_slice(&one);
        }
        assert_eq!(plain, expected);
        let lengths: Vec<usize> = payloads.iter().map(|p| p.2.len()).collect();
        let mut starts = vec![0];
        starts.extend(&ends[..ends.len() - 1]);
        assert_eq!(
            ends.iter().zip(&starts).map(|(e, s)| e - s).collect::<Vec<_>>(),
            lengths
        );
    }

    /// Both ways of computing the lanes' keystream agree (on a machine without AVX-512 both
    /// are the four-lane one; `open_all_equals_apply_cipher_on_each` checks that against the
    /// `chacha20` crate).
    #[test]
    fn the_sixteen_lane_keystream_is_four_four_lane_ones() {
        let mut lanes = Lanes::default();
        for i in 0..LANES as u8 {
            let key = [i.wrapping_mul(91).wrapping_add(3); 32].map(|b| b.rotate_left(u32::from(i % 8)));
            let mut id = [0u8; 32];
            for (j, b) in id.iter_mut().enumerate() {
                *b = (j as u8).wrapping_mul(i.wrapping_add(13)) ^ 0x5a;
            }
            lanes.push(&key, &id, 0, BLOCK);
        }
        assert_eq!(lanes.keystream(), lanes.keystream_by_four());
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
