//! A block: the events of one customer bucket, appended by one batch or merged from several.
//!
//! Key: bucket (u16, big-endian) ++ the first batch it holds (u64, big-endian), so one
//! customer's events across all batches are one prefix range scan.
//!
//! Value, integers big-endian, records sorted by (handle, event_time, id):
//! - format 1, one batch's events (the batch is the key's): `[u8 1][u32 count]` then records;
//! - format 2, a segment merged from the blocks of batches `first..=last` (see `compaction`):
//!   `[u8 2][u32 count][u64 first][u64 last]` then records, each followed by its batch (u64).
//!
//! | size | field |
//! |---|---|
//! | 16 | subject handle |
//! | 8 | event_time (i64 µs) |
//! | 8 | recorded_at (i64 µs) |
//! | 1 | kind |
//! | 1 | flags (bit 0: payload erased) |
//! | 32 | event id |
//! | 4 | length `n` (u32) of what follows |
//! | n | live: the sealed envelope (ChaCha20 under the subject's key); erased: the tombstone, the erasure request number (u64, n = 8) |
//! | 8 | format 2 only: the batch that appended the event |

use crate::envelope::{EventId, Handle};
use crate::error::{Result, StorageError};

const BATCH_BLOCK: u8 = 1;
const SEGMENT: u8 = 2;
/// Every block's first byte: what a value-log pointer must not start with (see `vlog`).
#[cfg(test)]
pub(crate) const FORMATS: [u8; 2] = [BATCH_BLOCK, SEGMENT];
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

/// Encodes the records of `span`, keyed `(bucket, span.first)`: format 1 for one batch,
/// a segment (format 2) for more. Every record must carry a batch of the span.
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
    let segment = span.first != span.last;
    if let Some(r) = records.iter().find(|r| r.batch < span.first || r.batch > span.last) {
        return Err(StorageError::Corrupt(format!(
            "block: a record of batch {} in a block of batches {}..={}",
            r.batch, span.first, span.last
        )));
    }
    let per_record = REC_HEADER + if segment { 8 } else { 0 };
    let size: usize = 21 + records.iter().map(|r| per_record + r.sealed.len()).sum::<usize>();
    out.clear();
    out.reserve(size);
    out.push(if segment { SEGMENT } else { BATCH_BLOCK });
    let count = u32::try_from(records.len()).map_err(|_| StorageError::InvalidEvent("block too large".into()))?;
    out.extend_from_slice(&count.to_be_bytes());
    if segment {
        out.extend_from_slice(&span.first.to_be_bytes());
        out.extend_from_slice(&span.last.to_be_bytes());
    }
    for r in records {
        out.extend_from_slice(&r.handle.to_be_bytes());
        out.extend_from_slice(&r.event_time.to_be_bytes());
        out.extend_from_slice(&r.recorded_at.to_be_bytes());
        out.push(r.kind);
        out.push(r.flags);
        out.extend_from_slice(&r.id);
        let n = u32::try_from(r.sealed.len()).map_err(|_| StorageError::InvalidEvent("payload too large".into()))?;
        out.extend_from_slice(&n.to_be_bytes());
        let at = out.len();
        out.extend_from_slice(r.sealed);
        seal(r, &mut out[at..])?;
        if segment {
            out.extend_from_slice(&r.batch.to_be_bytes());
        }
    }
    Ok(())
}

/// The batches the block stored under key batch `key_batch` holds, from its header alone.
pub fn span(key_batch: u64, bytes: &[u8]) -> Result<Span> {
    let bad = || StorageError::Corrupt("block: missing or unknown header".into());
    match bytes.first() {
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

    #[test]
    fn bucket_is_in_range() {
        assert_eq!(bucket_of(u128::MAX), BUCKETS - 1);
        assert_eq!(bucket_of(0), 0);
    }
}
