//! A block: the events of one customer bucket, appended by one batch or merged from several.
//!
//! Key: bucket (u16, big-endian) ++ the first batch it holds (u64, big-endian), so one
//! customer's events across all batches are one prefix range scan.
//!
//! Value: records sorted by (handle, event_time, id), each customer's a run. Written today in
//! format 5, which puts a directory of the runs in front of them, so that a reader of one
//! customer (the profile path) reads the directory and that customer's run, not the block:
//!
//! | field | |
//! |---|---|
//! | head | `[u8 5][count][first batch][last - first][runs][directory bytes]` (varints) |
//! | directory | per run, in handle order: subject handle (16), records (varint), bytes (varint), check (8) |
//! | check (8) | of the head and the directory |
//! | runs | each run's records, back to back |
//!
//! A check is blake3's first 8 bytes, as a value-log pointer's (see `vlog`): that one covers the
//! whole block, read whole; the directory's and each run's cover a read of a part. A record of a
//! run is
//!
//! | size | field |
//! |---|---|
//! | 1 | head: bit 0 payload erased; bit 2 the payload is the envelope's tail ([`FLAG_TAIL`]); bit 1 recorded when the run's previous record was, bit 3 as it happened (either: the recorded_at field is left out) |
//! | 1 | kind |
//! | varint | event_time − the previous record's event_time (zigzag; the run's first from 0) |
//! | varint | recorded_at − event_time (zigzag), unless the head leaves it out |
//! | varint | the batch that appended it − first batch |
//! | 32 | event id |
//! | varint | length `n` of what follows |
//! | n | live: the sealed envelope, or its tail (ChaCha20 under the subject's key); erased: the tombstone, the erasure request number (u64, n = 8) |
//!
//! Why: a customer's records are a run (one handle), its times close together and mostly
//! recorded as they happened, and a block's batches few: 31–38 bytes of a record's fixed 70
//! (78 in a segment) were repeats and zeros. The id and the sealed payload are random bytes and
//! stay as they are, so a record is read in place, payload borrowed, no decompression buffer.
//! A payload leaves out what the record already says (the envelope's version, kind and event
//! time: 10 bytes), and a record its recorded_at where the head bits give it (every record of
//! a feed recorded as it happened, or of a load recorded at once).
//! A bucket holds some 25 customers of the peer set, so a profile read a block 25 times larger
//! than it needed, and hashed it whole.
//!
//! Formats 1 to 4 (written by stores of format 8 and earlier) are still read:
//! - format 4, as format 5 with no head bits but bit 0: every payload a whole envelope, every
//!   recorded_at stored;
//! - format 3, compact, without a directory: `[u8 3][count][first batch][last - first]`, then the
//!   records as above, except that the head's bit 1 says a handle (16 bytes) follows it (the
//!   first record's, and each new customer's) and that event times are deltas across runs;
//! - format 1, one batch's events (the batch is the key's): `[u8 1][u32 count]` then records;
//! - format 2, a segment merged from the blocks of batches `first..=last` (see `compaction`):
//!   `[u8 2][u32 count][u64 first][u64 last]` then records, each followed by its batch (u64),
//!
//! a record of formats 1 and 2 being handle (16), event_time (8), recorded_at (8), kind (1),
//! flags (1), id (32), length (u32) and payload, integers big-endian.

use std::ops::Range;

use integer_encoding::VarInt;

use crate::envelope::{EventId, Handle};
use crate::error::{Result, StorageError};

const BATCH_BLOCK: u8 = 1;
const SEGMENT: u8 = 2;
const COMPACT: u8 = 3;
const DIRECTED: u8 = 4;
const TRIMMED: u8 = 5;
/// Every block's first byte: what a value-log pointer must not start with (see `vlog`).
#[cfg(test)]
pub(crate) const FORMATS: [u8; 5] = [BATCH_BLOCK, SEGMENT, COMPACT, DIRECTED, TRIMMED];
/// Format 3's head bit: a handle follows.
const NEW_HANDLE: u8 = 2;
/// Format 5's head bits that leave a record's `recorded_at` field out: it was recorded when the
/// run's record before it was (a load records its rows at one time), or as it happened (a feed
/// that sets `recorded_at` from `event_time`).
const SAME_RECORDED: u8 = 2;
const AS_IT_HAPPENED: u8 = 8;
/// Bytes a reader of one customer reads from the front of a block first: the directory of
/// some 280 runs, and every run of a block no longer than this, so that a bulk-loaded
/// bucket's many small blocks cost one read each, a compacted bucket's large segment two.
pub const FRONT: usize = 8192;
type Check = [u8; 8];
const CHECK: usize = 8;
/// Buckets customers are spread over (the top 12 bits of the handle).
pub const BUCKETS: u16 = 4096;
pub const FLAG_ERASED: u8 = 1;
/// The payload is the sealed envelope from its subject on: its first [`crate::envelope::TAIL_AT`]
/// bytes (version, kind, event time) are the record's own fields, so they are not stored.
/// Only format 5 holds such records.
pub const FLAG_TAIL: u8 = 4;
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

/// Encodes the records of `span`, keyed `(bucket, span.first)` (format 5). Every record must
/// carry a batch of the span, and the records come sorted by customer.
pub fn encode(span: Span, records: &[Record<'_>]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    encode_into(span, records, &mut out, |_, _| Ok(()))?;
    Ok(out)
}

#[cfg(test)]
/// Format 4, as stores of format 8 wrote it.
pub(crate) fn encode_directed(span: Span, records: &[Record<'_>]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    encode_runs(DIRECTED, span, records, &mut out, |_, _| Ok(()))?;
    Ok(out)
}

/// [`encode`] into `out` (cleared first, so one buffer serves many blocks), with `seal`
/// applied to the records' payloads once they are copied into the block, before the checks
/// are computed over them: it is handed the block and where each record's payload lies in it,
/// in record order. An append hands in plaintext envelopes and seals them there, so each is
/// copied once, and all of a block's at once ([`crate::vault::apply_all`]).
pub fn encode_into(
    span: Span,
    records: &[Record<'_>],
    out: &mut Vec<u8>,
    seal: impl FnOnce(&mut [u8], &[Range<usize>]) -> Result<()>,
) -> Result<()> {
    encode_runs(TRIMMED, span, records, out, seal)
}

/// [`encode_into`] in `format`, 4 or 5 (format 4 has neither a tail nor [`SAME_RECORDED`]).
fn encode_runs(
    format: u8,
    span: Span,
    records: &[Record<'_>],
    out: &mut Vec<u8>,
    seal: impl FnOnce(&mut [u8], &[Range<usize>]) -> Result<()>,
) -> Result<()> {
    check_records(span, records)?;
    if format == DIRECTED && records.iter().any(|r| r.flags & FLAG_TAIL != 0) {
        return Err(StorageError::Corrupt(
            "block: format 4 holds whole envelopes only".into(),
        ));
    }
    // Whether format 5 leaves the record's recorded_at out, and which bit says why.
    let omits = |prev: Option<&Record<'_>>, r: &Record<'_>| if format == TRIMMED { recorded_bit(prev, r) } else { 0 };
    // The runs' sizes first, so that the directory is written in front of them in one pass.
    let mut runs: Vec<(Handle, u64, usize)> = Vec::new();
    let mut prev: Option<&Record<'_>> = None;
    for r in records {
        match runs.last_mut() {
            Some((h, n, bytes)) if *h == r.handle => {
                *n += 1;
                *bytes += record_len(span, r, prev.map_or(0, |p| p.event_time), omits(prev, r) != 0);
            }
            Some((h, ..)) if *h > r.handle => {
                return Err(StorageError::Corrupt("block: records not sorted by customer".into()));
            }
            _ => runs.push((r.handle, 1, record_len(span, r, 0, omits(None, r) != 0))),
        }
        prev = Some(r);
    }
    let directory: usize = runs
        .iter()
        .map(|(_, n, bytes)| 16 + n.required_space() + bytes.required_space() + CHECK)
        .sum();
    out.clear();
    out.reserve(32 + directory + CHECK + runs.iter().map(|r| r.2).sum::<usize>());
    out.push(format);
    let count = u32::try_from(records.len()).map_err(|_| StorageError::InvalidEvent("block too large".into()))?;
    put(out, count);
    put(out, span.first);
    put(out, span.last - span.first);
    put(out, runs.len() as u64);
    put(out, directory as u64);
    // Each run's check is known once its payloads are sealed: written in place afterwards.
    let mut checks = Vec::with_capacity(runs.len());
    for (handle, n, bytes) in &runs {
        out.extend_from_slice(&handle.to_be_bytes());
        put(out, *n);
        put(out, *bytes as u64);
        checks.push(out.len());
        out.extend_from_slice(&[0; CHECK]);
    }
    let directory_check = out.len();
    out.extend_from_slice(&[0; CHECK]);
    let mut payloads = Vec::with_capacity(records.len());
    let mut run_ends = Vec::with_capacity(runs.len());
    let mut rest = records;
    for (_, n, bytes) in &runs {
        let (run, after) = rest.split_at(*n as usize);
        rest = after;
        let start = out.len();
        let mut prev: Option<&Record<'_>> = None;
        for r in run {
            let omitted = omits(prev, r);
            out.push(r.flags | omitted);
            payloads.push(put_record(
                out,
                span,
                r,
                prev.map_or(0, |p| p.event_time),
                omitted != 0,
            )?);
            prev = Some(r);
        }
        if out.len() - start != *bytes {
            return Err(StorageError::Corrupt("block: a run's size was misjudged".into()));
        }
        run_ends.push(out.len());
    }
    seal(out, &payloads)?;
    let mut start = directory_check + CHECK;
    for (at, end) in checks.into_iter().zip(run_ends) {
        let check = crate::vlog::check(&out[start..end]);
        out[at..at + CHECK].copy_from_slice(&check);
        start = end;
    }
    let check = crate::vlog::check(&out[..directory_check]);
    out[directory_check..directory_check + CHECK].copy_from_slice(&check);
    Ok(())
}

/// What every block format refuses to hold: a record outside the span, unknown flags.
fn check_records(span: Span, records: &[Record<'_>]) -> Result<()> {
    if let Some(r) = records.iter().find(|r| r.batch < span.first || r.batch > span.last) {
        return Err(StorageError::Corrupt(format!(
            "block: a record of batch {} in a block of batches {}..={}",
            r.batch, span.first, span.last
        )));
    }
    if let Some(r) = records.iter().find(|r| r.flags & !(FLAG_ERASED | FLAG_TAIL) != 0) {
        return Err(StorageError::Corrupt(format!(
            "block: unknown record flags {:#x}",
            r.flags
        )));
    }
    Ok(())
}

/// The head bit of format 5 that leaves `r`'s recorded_at out, if any, `prev` being the run's
/// record before it.
fn recorded_bit(prev: Option<&Record<'_>>, r: &Record<'_>) -> u8 {
    if r.recorded_at == r.event_time {
        AS_IT_HAPPENED
    } else if prev.is_some_and(|p| p.recorded_at == r.recorded_at) {
        SAME_RECORDED
    } else {
        0
    }
}

/// Bytes of a record after its handle (if any), `time` being the previous record's event time;
/// `omitted`: its recorded_at is left out.
fn record_len(span: Span, r: &Record<'_>, time: i64, omitted: bool) -> usize {
    let recorded_len = if omitted {
        0
    } else {
        r.recorded_at.wrapping_sub(r.event_time).required_space()
    };
    2 + r.event_time.wrapping_sub(time).required_space()
        + recorded_len
        + (r.batch - span.first).required_space()
        + 32
        + r.sealed.len().required_space()
        + r.sealed.len()
}

/// A record from its kind on (its head byte and handle are the format's), `time` and
/// `omitted` as for [`record_len`]; returns where its payload lies in `out`.
fn put_record(out: &mut Vec<u8>, span: Span, r: &Record<'_>, time: i64, omitted: bool) -> Result<Range<usize>> {
    out.push(r.kind);
    put(out, r.event_time.wrapping_sub(time));
    if !omitted {
        put(out, r.recorded_at.wrapping_sub(r.event_time));
    }
    put(out, r.batch - span.first);
    out.extend_from_slice(&r.id);
    let n = u32::try_from(r.sealed.len()).map_err(|_| StorageError::InvalidEvent("payload too large".into()))?;
    put(out, n);
    let at = out.len();
    out.extend_from_slice(r.sealed);
    Ok(at..out.len())
}

#[cfg(test)]
/// Format 3, as stores of format 7 wrote it.
pub(crate) fn encode_compact(span: Span, records: &[Record<'_>]) -> Result<Vec<u8>> {
    check_records(span, records)?;
    let mut out = vec![COMPACT];
    put(&mut out, records.len() as u32);
    put(&mut out, span.first);
    put(&mut out, span.last - span.first);
    let (mut handle, mut time) = (None, 0i64);
    for r in records {
        let new_handle = handle != Some(r.handle);
        out.push(r.flags | if new_handle { NEW_HANDLE } else { 0 });
        if new_handle {
            out.extend_from_slice(&r.handle.to_be_bytes());
            handle = Some(r.handle);
        }
        put_record(&mut out, span, r, time, false)?;
        time = r.event_time;
    }
    Ok(out)
}

fn put<V: VarInt>(out: &mut Vec<u8>, v: V) {
    let mut buf = [0u8; 10];
    let n = v.encode_var(&mut buf);
    out.extend_from_slice(&buf[..n]);
}

/// Format 3's header, and the front of formats 4 and 5: (count, span, where the rest starts).
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

    fn handle(&mut self) -> Result<Handle> {
        let h = self.take(16, "handle")?;
        Ok(u128::from_be_bytes(
            h.try_into()
                .map_err(|_| StorageError::Corrupt("block: handle".into()))?,
        ))
    }

    /// A record of formats 3 to 5 from its kind on: `head` its head byte, `time` the previous
    /// record's event time (updated), `recorded` its recorded_at (for [`SAME_RECORDED`]).
    fn record(
        &mut self,
        span: Span,
        handle: Handle,
        head: u8,
        time: &mut i64,
        recorded: Option<i64>,
    ) -> Result<Record<'a>> {
        let kind = self.byte("kind")?;
        *time = time.wrapping_add(self.varint::<i64>("event_time")?);
        let recorded_at = match (head & (SAME_RECORDED | AS_IT_HAPPENED), recorded) {
            (0, _) => time.wrapping_add(self.varint::<i64>("recorded_at")?),
            (AS_IT_HAPPENED, _) => *time,
            (SAME_RECORDED, Some(recorded_at)) => recorded_at,
            _ => return Err(StorageError::Corrupt(format!("block: unknown record head {head:#x}"))),
        };
        let flags = head & !(SAME_RECORDED | AS_IT_HAPPENED);
        let batch = span
            .first
            .checked_add(self.varint::<u64>("batch")?)
            .filter(|b| *b <= span.last)
            .ok_or_else(|| {
                StorageError::Corrupt(format!(
                    "block: a record outside batches {}..={}",
                    span.first, span.last
                ))
            })?;
        let mut id = [0u8; 32];
        id.copy_from_slice(self.take(32, "event id")?);
        let n: u32 = self.varint("payload length")?;
        let sealed = self.take(n as usize, "payload")?;
        Ok(Record {
            handle,
            event_time: *time,
            recorded_at,
            kind,
            flags,
            id,
            sealed,
            batch,
        })
    }
}

/// The batches the block stored under key batch `key_batch` holds, from its header alone.
pub fn span(key_batch: u64, bytes: &[u8]) -> Result<Span> {
    let bad = || StorageError::Corrupt("block: missing or unknown header".into());
    match bytes.first() {
        Some(&COMPACT | &DIRECTED | &TRIMMED) => Ok(compact_header(key_batch, bytes)?.1),
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
    match bytes.first() {
        Some(&DIRECTED | &TRIMMED) => return for_each_directed(key_batch, bytes, f),
        Some(&COMPACT) => return for_each_compact(key_batch, bytes, f),
        _ => {}
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
            handle = Some(r.handle()?);
        }
        let handle = handle.ok_or_else(|| StorageError::Corrupt("block: a record before any handle".into()))?;
        f(r.record(span, handle, head & FLAG_ERASED, &mut time, None)?)?;
    }
    if r.pos != bytes.len() {
        return Err(StorageError::Corrupt("block: trailing bytes after the last record".into()).into());
    }
    Ok(span)
}

/// [`for_each`] of a format-4 or -5 block, read whole (its checks are the value log's business then).
fn for_each_directed<'a, E: From<StorageError>>(
    key_batch: u64,
    bytes: &'a [u8],
    mut f: impl FnMut(Record<'a>) -> Result<(), E>,
) -> Result<Span, E> {
    let directory = Directory::parse(key_batch, bytes)?;
    for run in &directory.runs {
        directory.records(run, run.bytes_of(bytes)?, &mut f)?;
    }
    if directory.end != bytes.len() {
        return Err(StorageError::Corrupt("block: trailing bytes after the last run".into()).into());
    }
    Ok(directory.span)
}

/// Whether each run of a format-4 or -5 block matches its check (other formats have none): what
/// `verify` asks of a block besides decoding, since a whole read checks the block only.
pub fn check_runs(key_batch: u64, bytes: &[u8]) -> Result<()> {
    if !matches!(bytes.first(), Some(&DIRECTED | &TRIMMED)) {
        return Ok(());
    }
    let directory = Directory::parse(key_batch, bytes)?;
    directory
        .runs
        .iter()
        .try_for_each(|run| run.check(run.bytes_of(bytes)?))
}

/// How many bytes at the front of a block hold its head, directory and the directory's
/// check, read from its first bytes: `None` unless it is a format-4 or -5 block (one to read whole).
pub fn directory_len(key_batch: u64, front: &[u8]) -> Result<Option<usize>> {
    if !matches!(front.first(), Some(&DIRECTED | &TRIMMED)) {
        return Ok(None);
    }
    Ok(Some(directed_head(key_batch, front)?.end + CHECK))
}

/// A format-4 or -5 block's head: its records, batches and runs, and where its directory is.
struct DirectedHead {
    count: usize,
    span: Span,
    runs: u64,
    /// The directory's bytes: `start..end`, its check after them.
    start: usize,
    end: usize,
}

fn directed_head(key_batch: u64, bytes: &[u8]) -> Result<DirectedHead> {
    let (count, span, pos) = compact_header(key_batch, bytes)?;
    let mut r = Reader { bytes, pos };
    let runs: u64 = r.varint("runs")?;
    let listed: u64 = r.varint("directory bytes")?;
    let end = usize::try_from(listed)
        .ok()
        .and_then(|d| r.pos.checked_add(d))
        .filter(|end| end.checked_add(CHECK).is_some())
        .ok_or_else(|| StorageError::Corrupt("block: a directory past any size".into()))?;
    Ok(DirectedHead {
        count,
        span,
        runs,
        start: r.pos,
        end,
    })
}

/// A format-4 or -5 block's directory, checked: where each customer's run is and what it hashes to.
pub struct Directory {
    pub span: Span,
    /// The block's format, 4 or 5: which bits a record's head may have.
    format: u8,
    runs: Vec<Run>,
    /// Where the last run ends: the block's length.
    end: usize,
}

/// One customer's run: its records, where they are in the block, their check.
pub struct Run {
    handle: Handle,
    records: u64,
    at: usize,
    len: usize,
    check: Check,
}

impl Run {
    /// Where the run is in the block: what a reader of it alone reads.
    pub fn range(&self) -> (usize, usize) {
        (self.at, self.len)
    }

    fn bytes_of<'a>(&self, block: &'a [u8]) -> Result<&'a [u8]> {
        block
            .get(self.at..self.at + self.len)
            .ok_or_else(|| StorageError::Corrupt("block: a run past the block's end".into()))
    }

    fn check(&self, bytes: &[u8]) -> Result<()> {
        if bytes.len() != self.len || crate::vlog::check(bytes) != self.check {
            return Err(StorageError::Corrupt(format!(
                "block: the run of {} bytes at {} does not match its check",
                self.len, self.at
            )));
        }
        Ok(())
    }
}

impl Directory {
    /// The directory of the format-4 or -5 block stored under `key_batch`, from the block's first
    /// [`directory_len`] bytes (or more), checked against its check.
    pub fn parse(key_batch: u64, front: &[u8]) -> Result<Directory> {
        let format = match front.first() {
            Some(&f @ (DIRECTED | TRIMMED)) => f,
            _ => {
                return Err(StorageError::Corrupt(
                    "block: no directory in this block's format".into(),
                ))
            }
        };
        let DirectedHead {
            count,
            span,
            runs,
            start,
            end: listed_end,
        } = directed_head(key_batch, front)?;
        if listed_end + CHECK > front.len() {
            return Err(StorageError::Corrupt("block: the directory runs past the end".into()));
        }
        if crate::vlog::check(&front[..listed_end]) != front[listed_end..listed_end + CHECK] {
            return Err(StorageError::Corrupt(
                "block: the directory does not match its check".into(),
            ));
        }
        let mut r = Reader {
            bytes: &front[..listed_end],
            pos: start,
        };
        let (mut out, mut at, mut total) = (Vec::<Run>::new(), listed_end + CHECK, 0u64);
        for _ in 0..runs {
            let handle = r.handle()?;
            if out.last().is_some_and(|prev| prev.handle >= handle) {
                return Err(StorageError::Corrupt("block: runs out of customer order".into()));
            }
            let records: u64 = r.varint("a run's records")?;
            let len = usize::try_from(r.varint::<u64>("a run's bytes")?)
                .map_err(|_| StorageError::Corrupt("block: a run past any size".into()))?;
            let check = r
                .take(CHECK, "a run's check")?
                .try_into()
                .map_err(|_| StorageError::Corrupt("block: a run's check".into()))?;
            out.push(Run {
                handle,
                records,
                at,
                len,
                check,
            });
            at = at
                .checked_add(len)
                .ok_or_else(|| StorageError::Corrupt("block: runs past any size".into()))?;
            total += records;
        }
        if r.pos != listed_end || total != count as u64 {
            return Err(StorageError::Corrupt(
                "block: the directory disagrees with the block's head".into(),
            ));
        }
        Ok(Directory {
            span,
            format,
            runs: out,
            end: at,
        })
    }

    /// The run of the customer `handle`, if the block holds any record of theirs.
    pub fn run(&self, handle: Handle) -> Option<&Run> {
        let i = self.runs.binary_search_by_key(&handle, |r| r.handle).ok()?;
        self.runs.get(i)
    }

    /// Calls `f` on the records of `run`, read alone as `bytes`: checked against the run's
    /// check first, since the value log's covers only the whole block.
    pub fn for_each_in<'a, E: From<StorageError>>(
        &self,
        run: &Run,
        bytes: &'a [u8],
        mut f: impl FnMut(Record<'a>) -> Result<(), E>,
    ) -> Result<(), E> {
        run.check(bytes)?;
        self.records(run, bytes, &mut f)
    }

    fn records<'a, E: From<StorageError>>(
        &self,
        run: &Run,
        bytes: &'a [u8],
        f: &mut impl FnMut(Record<'a>) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut r = Reader { bytes, pos: 0 };
        let known = match self.format {
            TRIMMED => FLAG_ERASED | SAME_RECORDED | FLAG_TAIL | AS_IT_HAPPENED,
            _ => FLAG_ERASED,
        };
        let (mut time, mut recorded) = (0i64, None);
        for _ in 0..run.records {
            let head = r.byte("record head")?;
            if head & !known != 0 {
                return Err(StorageError::Corrupt(format!("block: unknown record head {head:#x}")).into());
            }
            let record = r.record(self.span, run.handle, head, &mut time, recorded)?;
            recorded = Some(record.recorded_at);
            f(record)?;
        }
        if r.pos != bytes.len() {
            return Err(StorageError::Corrupt("block: trailing bytes after a run's last record".into()).into());
        }
        Ok(())
    }
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
    fn a_customers_run_reads_alone_checked_and_as_the_whole_block_reads_it() {
        let payloads: Vec<Vec<u8>> = (0..60u8).map(|i| vec![i; 20 + usize::from(i)]).collect();
        let records: Vec<Record<'_>> = payloads
            .iter()
            .enumerate()
            .map(|(i, p)| Record {
                handle: 10 + (i as u128) / 7,
                event_time: 1_000 + i as i64,
                recorded_at: 2_000,
                kind: 2,
                flags: 0,
                id: [i as u8; 32],
                sealed: p,
                batch: 3 + (i as u64) % 4,
            })
            .collect();
        let span = Span { first: 3, last: 6 };
        let bytes = encode(span, &records).expect("encodes");
        let n = directory_len(3, &bytes[..16]).expect("head").expect("a directory");
        let directory = Directory::parse(3, &bytes[..n]).expect("the directory alone parses");
        assert_eq!(directory.span, span);
        check_runs(3, &bytes).expect("every run matches its check");
        for handle in 10..19u128 {
            let run = directory.run(handle).expect("a run");
            let (at, len) = run.range();
            let mut alone = Vec::new();
            directory
                .for_each_in(run, &bytes[at..at + len], |r| {
                    alone.push(r);
                    Ok::<_, StorageError>(())
                })
                .expect("the run reads alone");
            let whole: Vec<Record<'_>> = decode(3, &bytes).expect("decodes").1;
            let whole: Vec<Record<'_>> = whole.into_iter().filter(|r| r.handle == handle).collect();
            assert_eq!(fields(&alone), fields(&whole), "customer {handle}");
        }
        assert!(directory.run(9).is_none() && directory.run(19).is_none());
        // A flipped byte in a run fails its check; in the directory, the directory's.
        let run = directory.run(12).expect("a run");
        let (at, len) = run.range();
        let mut damaged = bytes.clone();
        damaged[at + len - 1] ^= 1;
        let read = directory.for_each_in(run, &damaged[at..at + len], |_| Ok::<_, StorageError>(()));
        assert!(read.is_err_and(|e| e.to_string().contains("does not match its check")));
        assert!(check_runs(3, &damaged).is_err());
        let mut damaged = bytes.clone();
        damaged[n - CHECK - 3] ^= 1;
        assert!(Directory::parse(3, &damaged[..n]).is_err());
        assert!(Directory::parse(3, &bytes[..n - 1]).is_err(), "a directory cut short");
        let mut unsorted = records.clone();
        unsorted.swap(0, 59);
        assert!(encode(span, &unsorted).is_err(), "records out of customer order");
    }

    #[test]
    fn blocks_of_the_earlier_formats_read_as_the_current_one() {
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
            let format_3 = encode_compact(span, &records).expect("encodes");
            let format_4 = encode_directed(span, &records).expect("encodes");
            for bytes in [&compact, &fixed, &format_3, &format_4] {
                let (back_span, back) = decode(4, bytes).expect("decodes");
                assert_eq!((back_span, fields(&back)), (span, fields(&records)));
            }
        }
    }

    #[test]
    fn a_compact_block_of_one_customer_spends_little_on_each_record() {
        let records = |n: i64| -> Vec<Record<'static>> {
            (0..n)
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
                .collect()
        };
        let size = |n| encode(Span::batch(12), &records(n)).expect("encodes").len();
        // Head, kind, 5 bytes of an hour's delta, a zero batch delta, the id, a length: 41 bytes
        // and the payload (recorded as it happened: no recorded time). The head, the directory
        // and the run's first time are the block's.
        let per_record = (size(200) - size(100)) as f64 / 100.0 - 40.0;
        assert!(per_record <= 41.05, "{per_record} bytes a record besides the payload");
    }

    #[test]
    fn a_run_recorded_at_one_time_stores_that_time_once() {
        let records = |n: i64, recorded: &dyn Fn(i64) -> i64| -> Vec<Record<'static>> {
            (0..n)
                .map(|i| Record {
                    handle: 77,
                    event_time: 1_700_000_000_000_000 + i * 3_600_000_000,
                    recorded_at: recorded(i),
                    kind: 1,
                    flags: FLAG_TAIL,
                    id: [i as u8; 32],
                    sealed: &[0xAB; 40],
                    batch: 12,
                })
                .collect()
        };
        let bulk = |i: i64| 1_800_000_000_000_000 + i / 50;
        let (a, b) = (records(100, &bulk), records(200, &bulk));
        let size = |r: &[Record<'_>]| encode(Span::batch(12), r).expect("encodes").len();
        // The same 41 bytes and the payload: the recorded time is stored once for each of its
        // four values (the first record of each fifty), then left out.
        let per_record = (size(&b) - size(&a)) as f64 / 100.0 - 40.0;
        assert!(per_record <= 41.2, "{per_record} bytes a record besides the payload");
        let bytes = encode(Span::batch(12), &b).expect("encodes");
        let (_, back) = decode(12, &bytes).expect("decodes");
        assert_eq!(fields(&back), fields(&b));
        assert!(
            back.iter().all(|r| r.flags == FLAG_TAIL),
            "the layout bit is not a flag"
        );
        assert!(encode_directed(Span::batch(12), &b).is_err(), "format 4 holds no tails");
        let as_recorded = records(3, &|i| 1_700_000_000_000_000 + i * 3_600_000_000);
        let bytes = encode(Span::batch(12), &as_recorded).expect("encodes");
        let (_, back) = decode(12, &bytes).expect("decodes");
        assert_eq!(fields(&back), fields(&as_recorded));
    }

    #[test]
    fn bucket_is_in_range() {
        assert_eq!(bucket_of(u128::MAX), BUCKETS - 1);
        assert_eq!(bucket_of(0), 0);
    }
}
