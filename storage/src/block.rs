//! A block: the events of one customer bucket appended by one batch.
//!
//! Key: bucket (u16, big-endian) ++ batch sequence (u64, big-endian), so one customer's
//! events across all batches are one prefix range scan.
//!
//! Value (format 1), integers big-endian:
//! `[u8 format = 1][u32 count]` then `count` records, sorted by (handle, event_time, id):
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

use crate::envelope::{EventId, Handle};
use crate::error::{Result, StorageError};

pub const BLOCK_FORMAT: u8 = 1;
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

pub fn encode(records: &[Record<'_>]) -> Result<Vec<u8>> {
    let size: usize = 5 + records.iter().map(|r| REC_HEADER + r.sealed.len()).sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.push(BLOCK_FORMAT);
    let count = u32::try_from(records.len()).map_err(|_| StorageError::InvalidEvent("block too large".into()))?;
    out.extend_from_slice(&count.to_be_bytes());
    for r in records {
        out.extend_from_slice(&r.handle.to_be_bytes());
        out.extend_from_slice(&r.event_time.to_be_bytes());
        out.extend_from_slice(&r.recorded_at.to_be_bytes());
        out.push(r.kind);
        out.push(r.flags);
        out.extend_from_slice(&r.id);
        let n = u32::try_from(r.sealed.len()).map_err(|_| StorageError::InvalidEvent("payload too large".into()))?;
        out.extend_from_slice(&n.to_be_bytes());
        out.extend_from_slice(r.sealed);
    }
    Ok(out)
}

/// Decodes every record; a malformed block is an error, never a panic.
pub fn decode(bytes: &[u8]) -> Result<Vec<Record<'_>>> {
    let mut out = Vec::new();
    for_each(bytes, |r| {
        out.push(r);
        Ok::<_, StorageError>(())
    })?;
    Ok(out)
}

/// Calls `f` on each record in order without collecting them; stops at `f`'s first error
/// (of the caller's type `E`).
pub fn for_each<'a, E: From<StorageError>>(
    bytes: &'a [u8],
    mut f: impl FnMut(Record<'a>) -> Result<(), E>,
) -> Result<(), E> {
    let bad = |why: &str| StorageError::Corrupt(format!("block: {why}"));
    if bytes.len() < 5 || bytes[0] != BLOCK_FORMAT {
        return Err(bad("missing or unknown header").into());
    }
    let count = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
    let mut pos = 5;
    for _ in 0..count {
        let h = bytes
            .get(pos..pos + REC_HEADER)
            .ok_or_else(|| bad("record header runs past the end"))?;
        let n = u32::from_be_bytes([h[66], h[67], h[68], h[69]]) as usize;
        let sealed = bytes
            .get(pos + REC_HEADER..pos + REC_HEADER + n)
            .ok_or_else(|| bad("payload runs past the end"))?;
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
        })?;
        pos += REC_HEADER + n;
    }
    if pos != bytes.len() {
        return Err(bad("trailing bytes after the last record").into());
    }
    Ok(())
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
            },
            Record {
                handle: 9,
                event_time: 5,
                recorded_at: 6,
                kind: 1,
                flags: FLAG_ERASED,
                id: [8; 32],
                sealed: &42u64.to_be_bytes(),
            },
        ];
        let bytes = encode(&recs).expect("encodes");
        let back = decode(&bytes).expect("decodes");
        assert_eq!(back.len(), 2);
        assert_eq!(
            (back[0].handle, back[0].event_time, back[0].sealed),
            (1, -3, &b"abc"[..])
        );
        assert!(back[1].erased());
        assert_eq!(back[1].erasure_request().expect("tombstone"), Some(42));
        assert_eq!(back[0].erasure_request().expect("live"), None);
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn bucket_is_in_range() {
        assert_eq!(bucket_of(u128::MAX), BUCKETS - 1);
        assert_eq!(bucket_of(0), 0);
    }
}
