//! The canonical envelope of an event: the exact bytes its identity is the hash of.
//!
//! Layout (version 1), all integers big-endian:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | envelope version = 1 |
//! | 1 | 1 | kind (defined by the caller; storage only routes on it) |
//! | 2 | 8 | event_time, i64 microseconds since the Unix epoch, UTC |
//! | 10 | 2 | subject length `n` (u16) |
//! | 12 | n | subject (customer id), UTF-8 |
//! | 12+n | rest | body: the kind's canonical field encoding, opaque here |
//!
//! `recorded_at` is deliberately absent: the same fact delivered twice has one identity.

use crate::error::{Result, StorageError};

pub const ENVELOPE_VERSION: u8 = 1;
const HEADER: usize = 12;
/// Where an envelope's tail starts: what a block stores of it, the version, kind and event
/// time before it being the record's own fields (see `block::FLAG_TAIL`).
pub const TAIL_AT: usize = 10;

/// 32-byte blake3 hash naming an event.
pub type EventId = [u8; 32];

/// An event in canonical form, before storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub kind: u8,
    pub subject: String,
    pub event_time: i64,
    pub recorded_at: i64,
    pub body: Vec<u8>,
}

impl NewEvent {
    pub fn envelope(&self) -> Result<Vec<u8>> {
        encode(self.kind, &self.subject, self.event_time, &self.body)
    }
}

pub fn encode(kind: u8, subject: &str, event_time: i64, body: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(HEADER + subject.len() + body.len());
    encode_with(&mut out, kind, subject, event_time, |out| out.extend_from_slice(body))?;
    Ok(out)
}

/// Appends the envelope to `out`, its body written by `body`: the one encoder, so an
/// [`EventBatch`] packs envelopes without an intermediate buffer per event.
fn encode_with(
    out: &mut Vec<u8>,
    kind: u8,
    subject: &str,
    event_time: i64,
    body: impl FnOnce(&mut Vec<u8>),
) -> Result<()> {
    let n = u16::try_from(subject.len())
        .map_err(|_| StorageError::InvalidEvent(format!("subject is {} bytes; at most 65535", subject.len())))?;
    out.push(ENVELOPE_VERSION);
    out.push(kind);
    out.extend_from_slice(&event_time.to_be_bytes());
    out.extend_from_slice(&n.to_be_bytes());
    out.extend_from_slice(subject.as_bytes());
    body(out);
    Ok(())
}

/// Events in canonical form with their envelopes back to back in one buffer: what
/// [`crate::EventLog::append_batch`] takes. Filling one (and reusing it, [`EventBatch::clear`])
/// costs no allocation per event, where a [`NewEvent`] costs two and its envelope a third.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventBatch {
    bytes: Vec<u8>,
    events: Vec<Packed>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Packed {
    /// The envelope is `bytes[start..end]`.
    start: usize,
    end: usize,
    recorded_at: i64,
}

/// One event of an [`EventBatch`], borrowing its envelope.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PackedEvent<'a> {
    pub envelope: &'a [u8],
    pub subject: &'a [u8],
    pub kind: u8,
    pub event_time: i64,
    pub recorded_at: i64,
}

impl EventBatch {
    /// Room for `events` events of `bytes` envelope bytes in all.
    pub fn with_capacity(events: usize, bytes: usize) -> Self {
        EventBatch {
            bytes: Vec::with_capacity(bytes),
            events: Vec::with_capacity(events),
        }
    }

    /// The batch of `events`, in their order.
    pub fn from_events(events: &[NewEvent]) -> Result<Self> {
        let bytes = events.iter().map(|e| HEADER + e.subject.len() + e.body.len()).sum();
        let mut batch = EventBatch::with_capacity(events.len(), bytes);
        for e in events {
            batch.push(e.kind, &e.subject, e.event_time, e.recorded_at, |out| {
                out.extend_from_slice(&e.body)
            })?;
        }
        Ok(batch)
    }

    /// Appends an event whose body `body` writes (onto the end of the buffer it is given). A
    /// subject longer than 65535 bytes is refused and leaves the batch as it was.
    pub fn push(
        &mut self,
        kind: u8,
        subject: &str,
        event_time: i64,
        recorded_at: i64,
        body: impl FnOnce(&mut Vec<u8>),
    ) -> Result<()> {
        let start = self.bytes.len();
        encode_with(&mut self.bytes, kind, subject, event_time, body)?;
        self.events.push(Packed {
            start,
            end: self.bytes.len(),
            recorded_at,
        });
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Empties the batch, keeping its buffers for the next one.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.events.clear();
    }

    /// Event `i` (`i < len()`).
    pub(crate) fn get(&self, i: usize) -> PackedEvent<'_> {
        let p = self.events[i];
        let envelope = &self.bytes[p.start..p.end];
        // `push` wrote the header, so it is there and the subject fits.
        let n = u16::from_be_bytes([envelope[10], envelope[11]]) as usize;
        PackedEvent {
            envelope,
            subject: &envelope[HEADER..HEADER + n],
            kind: envelope[1],
            event_time: i64::from_be_bytes([
                envelope[2],
                envelope[3],
                envelope[4],
                envelope[5],
                envelope[6],
                envelope[7],
                envelope[8],
                envelope[9],
            ]),
            recorded_at: p.recorded_at,
        }
    }
}

pub fn event_id(envelope: &[u8]) -> EventId {
    *blake3::hash(envelope).as_bytes()
}

/// A decoded envelope borrowing from its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope<'a> {
    pub kind: u8,
    pub event_time: i64,
    pub subject: &'a str,
    pub body: &'a [u8],
}

pub fn decode(bytes: &[u8]) -> Result<Envelope<'_>> {
    if bytes.len() < TAIL_AT {
        return Err(bad("shorter than its header"));
    }
    if bytes[0] != ENVELOPE_VERSION {
        return Err(bad(&format!("unknown envelope version {}", bytes[0])));
    }
    let event_time = i64::from_be_bytes(bytes[2..10].try_into().map_err(|_| bad("time"))?);
    decode_tail(bytes[1], event_time, &bytes[TAIL_AT..])
}

/// [`decode`] of an envelope's tail (from [`TAIL_AT`] on), its kind and time given.
pub fn decode_tail(kind: u8, event_time: i64, tail: &[u8]) -> Result<Envelope<'_>> {
    let at = HEADER - TAIL_AT;
    let n = match tail {
        [hi, lo, ..] => u16::from_be_bytes([*hi, *lo]) as usize,
        _ => return Err(bad("shorter than its header")),
    };
    let subject_bytes = tail.get(at..at + n).ok_or_else(|| bad("subject runs past the end"))?;
    let subject = std::str::from_utf8(subject_bytes).map_err(|_| bad("subject is not UTF-8"))?;
    Ok(Envelope {
        kind,
        event_time,
        subject,
        body: &tail[at + n..],
    })
}

/// The bytes of an envelope before its tail (see [`TAIL_AT`]), with room for a tail of `tail`
/// bytes: what a stored tail is put back behind before it is hashed against its id.
pub fn head_before_tail(kind: u8, event_time: i64, tail: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(TAIL_AT + tail);
    out.push(ENVELOPE_VERSION);
    out.push(kind);
    out.extend_from_slice(&event_time.to_be_bytes());
    out
}

fn bad(why: &str) -> StorageError {
    StorageError::Corrupt(format!("event envelope: {why}"))
}

/// 16-byte handle of a subject: what blocks and the key vault are keyed by, so that
/// customer ids themselves only ever sit inside encrypted payloads.
pub type Handle = u128;

pub fn subject_handle(subject: &str) -> Handle {
    handle_of(subject.as_bytes())
}

/// [`subject_handle`] of a subject's UTF-8 bytes.
pub(crate) fn handle_of(subject: &[u8]) -> Handle {
    let h = blake3::hash(subject);
    let mut first = [0u8; 16];
    first.copy_from_slice(&h.as_bytes()[..16]);
    u128::from_be_bytes(first)
}

/// i64 to bytes whose lexicographic order is numeric order (sign bit flipped).
pub fn sortable_i64(v: i64) -> [u8; 8] {
    ((v as u64) ^ (1 << 63)).to_be_bytes()
}

pub fn from_sortable_i64(b: [u8; 8]) -> i64 {
    (u64::from_be_bytes(b) ^ (1 << 63)) as i64
}

/// Lower-case hex digits of `bytes`; [`unhex`] reads them back.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The bytes of an even number of hex digits (either case); `None` for anything else.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            let pair = text.get(i..i + 2)?;
            // `from_str_radix` alone would accept a leading '+'.
            pair.bytes()
                .all(|b| b.is_ascii_hexdigit())
                .then(|| u8::from_str_radix(pair, 16).ok())
                .flatten()
        })
        .collect()
}

/// A 64-digit hex hash (an artifact's, a token's) as its 32 bytes.
pub fn unhex32(text: &str) -> Option<[u8; 32]> {
    unhex(text)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unhex_reads_what_hex_writes_and_nothing_else() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(unhex(&hex(&bytes)), Some(bytes));
        assert_eq!(unhex("00FFaB"), Some(vec![0, 255, 171]));
        assert_eq!(unhex(""), Some(Vec::new()));
        for bad in ["0", "abc", "+1", "0g", "é0", "éé"] {
            assert_eq!(unhex(bad), None, "{bad}");
        }
        let h = [7u8; 32];
        assert_eq!(unhex32(&hex(&h)), Some(h));
        assert_eq!(unhex32(&hex(&h[..31])), None, "31 bytes is not a hash");
        assert_eq!(unhex32(&format!("{}00", hex(&h))), None, "33 bytes is not a hash");
    }

    #[test]
    fn envelope_round_trips() {
        let bytes = encode(3, "cust-é", -5, b"body").expect("encodes");
        let env = decode(&bytes).expect("decodes");
        assert_eq!(
            env,
            Envelope {
                kind: 3,
                event_time: -5,
                subject: "cust-é",
                body: b"body"
            }
        );
    }

    #[test]
    fn a_batch_packs_the_envelopes_encode_writes() {
        let events = [
            NewEvent {
                kind: 3,
                subject: "cust-é".into(),
                event_time: -5,
                recorded_at: 9,
                body: b"body".to_vec(),
            },
            NewEvent {
                kind: 1,
                subject: String::new(),
                event_time: i64::MAX,
                recorded_at: i64::MIN,
                body: Vec::new(),
            },
        ];
        let mut batch = EventBatch::from_events(&events).expect("packs");
        assert_eq!(batch.len(), 2);
        for (i, e) in events.iter().enumerate() {
            let p = batch.get(i);
            assert_eq!(p.envelope, e.envelope().expect("encodes"), "event {i}");
            assert_eq!(p.subject, e.subject.as_bytes());
            assert_eq!(
                (p.kind, p.event_time, p.recorded_at),
                (e.kind, e.event_time, e.recorded_at)
            );
            assert_eq!(handle_of(p.subject), subject_handle(&e.subject));
        }
        let long = "x".repeat(65536);
        assert!(batch.push(1, &long, 0, 0, |_| ()).is_err());
        assert_eq!(batch.len(), 2, "a refused event is not half added");
        batch.clear();
        assert!(batch.is_empty());
    }

    #[test]
    fn sortable_order_matches_numeric_order() {
        let vals = [i64::MIN, -1, 0, 1, i64::MAX];
        for w in vals.windows(2) {
            assert!(sortable_i64(w[0]) < sortable_i64(w[1]));
            assert_eq!(from_sortable_i64(sortable_i64(w[0])), w[0]);
        }
    }

    #[test]
    fn truncated_envelope_is_an_error_not_a_panic() {
        let bytes = encode(1, "abc", 0, b"").expect("encodes");
        for cut in 0..bytes.len() {
            let r = decode(&bytes[..cut]);
            assert!(r.is_err(), "cut at {cut} decoded");
        }
    }
}
