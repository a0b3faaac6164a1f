//! A block: the events of one customer bucket, appended by one batch or merged from several.
//!
//! Key: bucket (u16, big-endian) ++ the first batch it holds (u64, big-endian), so one
//! customer's events across all batches are one prefix range scan.
//!
//! Value: records sorted by (handle, event_time, id). Written today in format 3, compact:
//! `[u8 3][count][first batch][last - first]` (varints), then each record as
//!
//! | size | field |
//! |---|---|
//! | 1 | head: bit 0 payload erased, bit 1 a handle follows (the first record's, and each new customer's) |
//! | 0 or 16 | subject handle (else the previous record's) |
//! | 1 | kind |
//! | varint | event_time − the previous record's event_time (zigzag; the first's from 0) |
//! | varint | recorded_at − event_time (zigzag) |
//! | varint | the batch that appended it − first batch |
//! | 32 | event id |
//! | varint | length `n` of what follows |
//! | n | live: the sealed envelope (ChaCha20 under the subject's key); erased: the tombstone, the erasure request number (u64, n = 8) |
//!
//! Why: a customer's records are a run (one handle), its times close together and mostly
//! recorded as they happened, and a block's batches few: 31–38 bytes of a record's fixed 70
//! (78 in a segment) were repeats and zeros. The id and the sealed payload are random bytes and
//! stay as they are, so a record is read in place, payload borrowed, no decompression buffer.
//! Formats 1 and 2 (fixed-width, written by stores of format 6 and earlier) are still read:
//! - format 1, one batch's events (the batch is the key's): `[u8 1][u32 count]` then records;
//! - format 2, a segment merged from the blocks of batches `first..=last` (see `compaction`):
//!   `[u8 2][u32 count][u64 first][u64 last]` then records, each followed by its batch (u64),
//!
//! a record of either being handle (16), event_time (8), recorded_at (8), kind (1), flags (1),
//! id (32), length (u32) and payload, integers big-endian.

use crate::envelope::{EventId, Handle};
use crate::error::{Result, StorageError};

use integer_encoding::VarInt;

const BATCH_BLOCK: u8 = 1;
const SEGMENT: u8 = 2;
const COMPACT: u8 = 3;
/// Every block's first byte: what a value-log pointer must not start with (see `vlog`).
#[cfg(test)]
pub(crate) const FORMATS: [u8; 3] = [BATCH_BLOCK, SEGMENT, COMPACT];
/// Format 3's head bit: a handle follows.
const NEW_HANDLE: u8 = 2;
/// Buckets customers are spread over (the top 12 bits of the handle).
pub const BUCKETS: u16 = 4096;
pub const FLAG_ERASED: u8 = 1;
const REC_HEADER: usize = 16 + 8 + 8 + 1 + 1 + 32 + 4;

pub fn bucket_of(handle: Handle) -> u16 {
    (handle >> (128 - 12)) as u16
}

pub fn block_key(bucket: u16, batch: u64) -> [u8; 10] {
    let mut k = [0u8; 10];
    k[..2].copy_from_slice(&bucket.to_be_bytes());
    k[2..].copy_from_slice(&batch.to_be_bytes());
    k
}

/// The keys of every block of `bucket`: `start..end`.
pub fn bucket_range(bucket: u16) -> ([u8; 10], [u8; 10]) {
    (block_key(bucket, 0), block_key(bucket, u64::MAX))
}

pub fn split_block_key(key: &[u8]) -> Result<(u16, u64)> {
    if key.len() != 10 {
        return Err(StorageError::Corrupt(format!("block key of {} bytes", key.len())));
    }
    let bucket = u16::from_be_bytes([key[0], key[1]]);
    let mut b = [0u8; 8];
    b.copy_from_slice(&key[2..]);
    Ok((bucket, u64::from_be_bytes(b)))
}

/// One stored record, borrowing its sealed payload from the block bytes.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    pub handle: Handle,
    pub event_time: i64,
    pub recorded_at: i64,
    pub kind: u8,
    pub flags: u8,
    pub id: EventId,
    pub sealed: &'a [u8],
    /// The batch that appended it.
    pub batch: u64,
}

impl Record<'_> {
    pub fn erased(&self) -> bool {
        self.flags & FLAG_ERASED != 0
    }

    /// The erasure request an erased record's tombstone names.
    pub fn erasure_request(&self) -> Result<Option<u64>> {
        if !self.erased() {
            return Ok(None);
        }
        let bytes: [u8; 8] = self
            .sealed
            .try_into()
            .map_err(|_| StorageError::Corrupt("block: malformed erasure tombstone".into()))?;
        Ok(Some(u64::from_be_bytes(bytes)))
    }
}

/// The batches a block holds: `first..=last` (one batch: `first == last`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub first: u64,
    pub last: u64,
}

impl Span {
    pub fn batch(batch: u64) -> Span {
        Span {
            first: batch,
            last: batch,
        }
    }
}

/// Encodes the records of `span`, keyed `(bucket, span.first)` (format 3). Every record must
/// carry a batch of the span.
pub fn encode(span: Span, records: &[Record<'_>]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    encode_into(span, records, &mut out, |_, _| Ok(()))?;
    Ok(out)
}

/// [`encode`] into `out` (cleared first, so one buffer serves many blocks), with `seal`
/// applied to each record's payload once it is copied into the block: an append hands in
/// plaintext envelopes and seals them there, so each is copied once.
pub fn encode_into(
    span: Span,
    records: &[Record<'_>],
    out: &mut Vec<u8>,
    mut seal: impl FnMut(&Record<'_>, &mut [u8]) -> Result<()>,
) -> Result<()> {
    if let Some(r) = records.iter().find(|r| r.batch < span.first || r.batch > span.last) {
        return Err(StorageError::Corrupt(format!(
            "block: a record of batch {} in a block of batches {}..={}",
            r.batch, span.first, span.last
        )));
    }
    if let Some(r) = records.iter().find(|r| r.flags & !FLAG_ERASED != 0) {
        return Err(StorageError::Corrupt(format!(
            "block: unknown record flags {:#x}",
            r.flags
        )));
    }
    // Worst case a record: head, handle, kind, three 10-byte varints, id, a 5-byte length.
    let size: usize = 21 + records.iter().map(|r| 85 + r.sealed.len()).sum::<usize>();
    out.clear();
    out.reserve(size);
    out.push(COMPACT);
    let count = u32::try_from(records.len()).map_err(|_| StorageError::InvalidEvent("block too large".into()))?;
    put(out, count);
    put(out, span.first);
    put(out, span.last - span.first);
    let (mut handle, mut time) = (None, 0i64);
    for r in records {
        let new_handle = handle != Some(r.handle);
        out.push(r.flags | if new_handle { NEW_HANDLE } else { 0 });
        if new_handle {
            out.extend_from_slice(&r.handle.to_be_bytes());
            handle = Some(r.handle);
        }
        out.push(r.kind);
        put(out, r.event_time.wrapping_sub(time));
        time = r.event_time;
        put(out, r.recorded_at.wrapping_sub(r.event_time));
        put(out, r.batch - span.first);
        out.extend_from_slice(&r.id);
        let n = u32::try_from(r.sealed.len()).map_err(|_| StorageError::InvalidEvent("payload too large".into()))?;
        put(out, n);
        let at = out.len();
        out.extend_from_slice(r.sealed);
        seal(r, &mut out[at..])?;
    }
    Ok(())
}

fn put<V: VarInt>(out: &mut Vec<u8>, v: V) {
    let mut buf = [0u8; 10];
    let n = v.encode_var(&mut buf);
    out.extend_from_slice(&buf[..n]);
}

/// Format 3's header: (count, span, where the records start).
fn compact_header(key_batch: u64, bytes: &[u8]) -> Result<(usize, Span, usize)> {
    let mut r = Reader { bytes, pos: 1 };
    let count: u32 = r.varint("count")?;
    let first: u64 = r.varint("first batch")?;
    let extra: u64 = r.varint("batches")?;
    let span = Span {
        first,
        last: first
            .checked_add(extra)
            .ok_or_else(|| StorageError::Corrupt("block: batches past u64".into()))?,
    };
    if span.first != key_batch {
        return Err(StorageError::Corrupt(format!(
            "block: batches {}..={} stored under batch {key_batch}",
            span.first, span.last
        )));
    }
    Ok((count as usize, span, r.pos))
}

/// The bytes of a format-3 block, read front to back, every read bounds-checked.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let out = self
            .pos
            .checked_add(n)
            .and_then(|end| self.bytes.get(self.pos..end))
            .ok_or_else(|| StorageError::Corrupt(format!("block: {what} runs past the end")))?;
        self.pos += n;
        Ok(out)
    }

    fn byte(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }

    fn varint<V: VarInt>(&mut self, what: &str) -> Result<V> {
        let rest = self.bytes.get(self.pos..).unwrap_or_default();
        let (v, n) = V::decode_var(rest).ok_or_else(|| StorageError::Corrupt(format!("block: malformed {what}")))?;
        self.pos += n;
        Ok(v)
    }
}

/// The batches the block stored under key batch `key_batch` holds, from its header alone.
pub fn span(key_batch: u64, bytes: &[u8]) -> Result<Span> {
    let bad = || StorageError::Corrupt("block: missing or unknown header".into());
    match bytes.first() {
        Some(&COMPACT) => Ok(compact_header(key_batch, bytes)?.1),
        Some(&BATCH_BLOCK) if bytes.len() >= 5 => Ok(Span::batch(key_batch)),
        Some(&SEGMENT) if bytes.len() >= 21 => {
            let word =
                |at: usize| -> Result<u64> { Ok(u64::from_be_bytes(bytes[at..at + 8].try_into().map_err(|_| bad())?)) };
            let span = Span {
                first: word(5)?,
                last: word(13)?,
            };
            if span.first != key_batch || span.last <= span.first {
                return Err(StorageError::Corrupt(format!(
                    "block: segment of batches {}..={} stored under batch {key_batch}",
                    span.first, span.last
                )));
            }
            Ok(span)
        }
        _ => Err(bad()),
    }
}

/// Decodes every record; a malformed block is an error, never a panic.
pub fn decode(key_batch: u64, bytes: &[u8]) -> Result<(Span, Vec<Record<'_>>)> {
    let mut out = Vec::new();
    let span = for_each(key_batch, bytes, |r| {
        out.push(r);
        Ok::<_, StorageError>(())
    })?;
    Ok((span, out))
}

/// Calls `f` on each record in order without collecting them; stops at `f`'s first error
/// (of the caller's type `E`). Returns the block's span.
pub fn for_each<'a, E: From<StorageError>>(
    key_batch: u64,
    bytes: &'a [u8],
    mut f: impl FnMut(Record<'a>) -> Result<(), E>,
) -> Result<Span, E> {
    if bytes.first() == Some(&COMPACT) {
        return for_each_compact(key_batch, bytes, f);
    }
    let bad = |why: &str| StorageError::Corrupt(format!("block: {why}"));
    let span = span(key_batch, bytes)?;
    let segment = span.first != span.last;
    let count = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
    let mut pos = if segment { 21 } else { 5 };
    for _ in 0..count {
        let h = bytes
            .get(pos..pos + REC_HEADER)
            .ok_or_else(|| bad("record header runs past the end"))?;
        let n = u32::from_be_bytes([h[66], h[67], h[68], h[69]]) as usize;
        let sealed = bytes
            .get(pos + REC_HEADER..pos + REC_HEADER + n)
            .ok_or_else(|| bad("payload runs past the end"))?;
        pos += REC_HEADER + n;
        let batch = if segment {
            let b = bytes.get(pos..pos + 8).ok_or_else(|| bad("batch runs past the end"))?;
            pos += 8;
            u64::from_be_bytes(b.try_into().map_err(|_| bad("batch"))?)
        } else {
            key_batch
        };
        let mut id = [0u8; 32];
        id.copy_from_slice(&h[34..66]);
        f(Record {
            handle: u128::from_be_bytes(h[..16].try_into().map_err(|_| bad("handle"))?),
            event_time: i64::from_be_bytes(h[16..24].try_into().map_err(|_| bad("event_time"))?),
            recorded_at: i64::from_be_bytes(h[24..32].try_into().map_err(|_| bad("recorded_at"))?),
            kind: h[32],
            flags: h[33],
            id,
            sealed,
            batch,
        })?;
    }
    if pos != bytes.len() {
        return Err(bad("trailing bytes after the last record").into());
    }
    Ok(span)
}

#[cfg(test)]
/// Formats 1 and 2, as stores of format 6 and earlier wrote them.
pub(crate) fn encode_fixed(span: Span, records: &[Record<'_>]) -> Vec<u8> {
    let segment = span.first != span.last;
    let mut out = vec![if segment { SEGMENT } else { BATCH_BLOCK }];
    out.extend_from_slice(&(records.len() as u32).to_be_bytes());
    if segment {
        out.extend_from_slice(&span.first.to_be_bytes());
        out.extend_from_slice(&span.last.to_be_bytes());
    }
    for r in records {
        out.extend_from_slice(&r.handle.to_be_bytes());
        out.extend_from_slice(&r.event_time.to_be_bytes());
        out.extend_from_slice(&r.recorded_at.to_be_bytes());
        out.extend_from_slice(&[r.kind, r.flags]);
        out.extend_from_slice(&r.id);
        out.extend_from_slice(&(r.sealed.len() as u32).to_be_bytes());
        out.extend_from_slice(r.sealed);
        if segment {
            out.extend_from_slice(&r.batch.to_be_bytes());
        }
    }
    out
}

/// [`for_each`] of a format-3 block.
fn for_each_compact<'a, E: From<StorageError>>(
    key_batch: u64,
    bytes: &'a [u8],
    mut f: impl FnMut(Record<'a>) -> Result<(), E>,
) -> Result<Span, E> {
    let (count, span, pos) = compact_header(key_batch, bytes)?;
    let mut r = Reader { bytes, pos };
    let (mut handle, mut time) = (None, 0i64);
    for _ in 0..count {
        let head = r.byte("record head")?;
        if head & !(FLAG_ERASED | NEW_HANDLE) != 0 {
            return Err(StorageError::Corrupt(format!("block: unknown record head {head:#x}")).into());
        }
        if head & NEW_HANDLE != 0 {
            let h = r.take(16, "handle")?;
            handle = Some(u128::from_be_bytes(
                h.try_into()
                    .map_err(|_| StorageError::Corrupt("block: handle".into()))?,
            ));
        }
        let handle = handle.ok_or_else(|| StorageError::Corrupt("block: a record before any handle".into()))?;
        let kind = r.byte("kind")?;
        time = time.wrapping_add(r.varint::<i64>("event_time")?);
        let recorded_at = time.wrapping_add(r.varint::<i64>("recorded_at")?);
        let batch = span
            .first
            .checked_add(r.varint::<u64>("batch")?)
            .filter(|b| *b <= span.last)
            .ok_or_else(|| {
                StorageError::Corrupt(format!(
                    "block: a record outside batches {}..={}",
                    span.first, span.last
                ))
            })?;
        let mut id = [0u8; 32];
        id.copy_from_slice(r.take(32, "event id")?);
        let n: u32 = r.varint("payload length")?;
        let sealed = r.take(n as usize, "payload")?;
        f(Record {
            handle,
            event_time: time,
            recorded_at,
            kind,
            flags: head & FLAG_ERASED,
            id,
            sealed,
            batch,
        })?;
    }
    if r.pos != bytes.len() {
        return Err(StorageError::Corrupt("block: trailing bytes after the last record".into()).into());
    }
    Ok(span)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_round_trips_and_rejects_truncation() {
        let recs = [
            Record {
                handle: 1,
                event_time: -3,
                recorded_at: 4,
                kind: 2,
                flags: 0,
                id: [7; 32],
                sealed: b"abc",
                batch: 3,
            },
            Record {
                handle: 9,
                event_time: 5,
                recorded_at: 6,
                kind: 1,
                flags: FLAG_ERASED,
                id: [8; 32],
                sealed: &42u64.to_be_bytes(),
                batch: 3,
            },
        ];
        let bytes = encode(Span::batch(3), &recs).expect("encodes");
        let (span, back) = decode(3, &bytes).expect("decodes");
        assert_eq!((span, back.len()), (Span::batch(3), 2));
        assert_eq!(
            (back[0].handle, back[0].event_time, back[0].sealed),
            (1, -3, &b"abc"[..])
        );
        assert!(back[1].erased());
        assert_eq!(back[1].erasure_request().expect("tombstone"), Some(42));
        assert_eq!(back[0].erasure_request().expect("live"), None);
        for cut in 0..bytes.len() {
            assert!(decode(3, &bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn a_segment_keeps_each_records_batch_and_checks_its_span() {
        let rec = |batch, id| Record {
            handle: 5,
            event_time: 1,
            recorded_at: 2,
            kind: 1,
            flags: 0,
            id: [id; 32],
            sealed: b"xyz",
            batch,
        };
        let span = Span { first: 2, last: 9 };
        let bytes = encode(span, &[rec(2, 1), rec(9, 2), rec(4, 3)]).expect("encodes");
        let (back_span, back) = decode(2, &bytes).expect("decodes");
        assert_eq!(back_span, span);
        assert_eq!(back.iter().map(|r| r.batch).collect::<Vec<_>>(), [2, 9, 4]);
        assert!(decode(3, &bytes).is_err(), "a segment under another key is corrupt");
        assert!(encode(span, &[rec(10, 1)]).is_err(), "a record outside the span");
        for cut in 0..bytes.len() {
            assert!(decode(2, &bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    /// What a test compares records by.
    fn fields(records: &[Record<'_>]) -> Vec<String> {
        records.iter().map(|r| format!("{r:?}")).collect()
    }

    #[test]
    fn blocks_of_the_fixed_width_formats_read_as_the_compact_one() {
        let rec = |handle, event_time, recorded_at, batch, id| Record {
            handle,
            event_time,
            recorded_at,
            kind: 3,
            flags: if id == 4 { FLAG_ERASED } else { 0 },
            id: [id; 32],
            sealed: if id == 4 {
                &[0, 0, 0, 0, 0, 0, 0, 9]
            } else {
                b"sealed bytes"
            },
            batch,
        };
        let records = [
            rec(5, i64::MIN, i64::MAX, 4, 1),
            rec(5, -7, -7, 6, 2),
            rec(5, 1 << 40, (1 << 40) + 86_400_000_000, 4, 3),
            rec(u128::MAX, 0, 0, 9, 4),
        ];
        for span in [Span::batch(4), Span { first: 4, last: 9 }] {
            let records: Vec<Record<'_>> = records
                .iter()
                .map(|r| Record {
                    batch: r.batch.min(span.last),
                    ..*r
                })
                .collect();
            let compact = encode(span, &records).expect("encodes");
            let fixed = encode_fixed(span, &records);
            assert!(
                compact.len() < fixed.len(),
                "{} against {} bytes",
                compact.len(),
                fixed.len()
            );
            for bytes in [&compact, &fixed] {
                let (back_span, back) = decode(4, bytes).expect("decodes");
                assert_eq!((back_span, fields(&back)), (span, fields(&records)));
            }
        }
    }

    #[test]
    fn a_compact_block_of_one_customer_spends_little_on_each_record() {
        let records: Vec<Record<'_>> = (0..100)
            .map(|i| Record {
                handle: 77,
                event_time: 1_700_000_000_000_000 + i * 3_600_000_000,
                recorded_at: 1_700_000_000_000_000 + i * 3_600_000_000,
                kind: 1,
                flags: 0,
                id: [i as u8; 32],
                sealed: &[0xAB; 40],
                batch: 12,
            })
            .collect();
        let bytes = encode(Span::batch(12), &records).expect("encodes");
        // Head, kind, 5 bytes of an hour's delta, two zeros, the id, a length: 42 bytes and the
        // payload (the first record's time, from 0, takes 3 bytes more).
        // The header (4 bytes) and the one handle (16) are the block's, not a record's.
        let per_record = (bytes.len() - 20) as f64 / 100.0 - 40.0;
        assert!(per_record <= 42.05, "{per_record} bytes a record besides the payload");
    }

    #[test]
    fn bucket_is_in_range() {
        assert_eq!(bucket_of(u128::MAX), BUCKETS - 1);
        assert_eq!(bucket_of(0), 0);
    }
}
