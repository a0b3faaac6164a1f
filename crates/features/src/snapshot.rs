//! Feature snapshots as immutable artifacts named by their hash.
//!
//! Body (schema 1, big-endian): `i64 T ‖ i64 K ‖ 32 definition-set hash ‖ u64 visible events
//! ‖ 16 visible digest ‖ u32 features ‖ (u32 len ‖ name)… ‖ u32 customers ‖ (u32 len ‖ id)…
//! ‖ f64 bits × customers × features` (row-major, `-0.0` written as `0.0`). The artifact hash
//! covers kind, schema, as-of T and the body, so it is a pure function of the visible log
//! content, T, K and the definition set. Provenance (not hashed): the log prefix read.

use cis_storage::{hex, ArtifactHash, EventId, NewArtifact, StorageError, Store, StoredArtifact};
use serde::{Deserialize, Serialize};

use crate::compute::{digest_term, materialise, ComputeError, Matrix};
use crate::defs::{definitions, set_hash};
use cis_core::artifact::{self, ArtifactError};
use cis_core::time::{self, Timestamp};
use cis_core::AsOf;

pub const KIND: &str = "snapshot";
pub const SCHEMA: u32 = 1;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    #[error(transparent)]
    Compute(#[from] ComputeError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error("snapshot {0} is malformed: {1}")]
    Malformed(String, #[source] DecodeError),
    /// A set of snapshots must share one feature list; this one's differs from the first's.
    #[error("snapshot {0} is malformed: built from another feature set")]
    OtherFeatureSet(String),
    #[error("customer '{0}' is not in the snapshot")]
    UnknownCustomer(String),
    #[error("snapshot provenance: {0}")]
    Provenance(#[from] serde_json::Error),
}

/// Why a snapshot body does not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("ends early")]
    EndsEarly,
    #[error("not UTF-8")]
    NotUtf8,
    #[error("trailing bytes")]
    TrailingBytes,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub as_of: Timestamp,
    pub known_at: Timestamp,
    pub definition_set: [u8; 32],
    pub features: Vec<String>,
    pub matrix: Matrix,
}

/// Where a snapshot was read from: provenance, not identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    pub log_batch: u64,
    pub log_head: String,
}

impl Snapshot {
    pub fn value(&self, customer: &str, feature: &str) -> Option<f64> {
        let i = self
            .matrix
            .customers
            .binary_search_by(|c| c.as_str().cmp(customer))
            .ok()?;
        let j = self.features.iter().position(|f| f == feature)?;
        Some(self.matrix.values[i * self.features.len() + j])
    }

    pub fn row(&self, customer: &str) -> Option<&[f64]> {
        let i = self
            .matrix
            .customers
            .binary_search_by(|c| c.as_str().cmp(customer))
            .ok()?;
        let w = self.features.len();
        Some(&self.matrix.values[i * w..(i + 1) * w])
    }

    pub fn encode(&self) -> Vec<u8> {
        let m = &self.matrix;
        let mut out = Vec::with_capacity(96 + m.values.len() * 8 + m.customers.len() * 12);
        out.extend_from_slice(&self.as_of.micros().to_be_bytes());
        out.extend_from_slice(&self.known_at.micros().to_be_bytes());
        out.extend_from_slice(&self.definition_set);
        out.extend_from_slice(&m.visible_events.to_be_bytes());
        out.extend_from_slice(&m.visible_digest.to_be_bytes());
        for list in [&self.features, &m.customers] {
            out.extend_from_slice(&(list.len() as u32).to_be_bytes());
            for s in list.iter() {
                out.extend_from_slice(&(s.len() as u32).to_be_bytes());
                out.extend_from_slice(s.as_bytes());
            }
        }
        for v in &m.values {
            let v = if *v == 0.0 { 0.0f64 } else { *v };
            out.extend_from_slice(&v.to_bits().to_be_bytes());
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Snapshot, DecodeError> {
        let mut r = Reader { bytes, pos: 0 };
        let h = Header::read(&mut r)?;
        let mut customers = Vec::with_capacity(h.customers.min(1 << 20));
        for _ in 0..h.customers {
            customers.push(r.string()?);
        }
        let cells = customers
            .len()
            .checked_mul(h.features.len())
            .ok_or(DecodeError::EndsEarly)?;
        let raw = r.take(cells.checked_mul(8).ok_or(DecodeError::EndsEarly)?)?;
        let values = raw
            .chunks_exact(8)
            .map(|c| array(c).map(|b| f64::from_bits(u64::from_be_bytes(b))))
            .collect::<Result<_, _>>()?;
        if r.pos != bytes.len() {
            return Err(DecodeError::TrailingBytes);
        }
        Ok(Snapshot {
            as_of: h.as_of,
            known_at: h.known_at,
            definition_set: h.definition_set,
            features: h.features,
            matrix: Matrix {
                customers,
                values,
                visible_events: h.visible_events,
                visible_digest: h.visible_digest,
            },
        })
    }
}

/// One event of an erased customer, as much of it as a snapshot's redaction needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErasedEvent {
    pub id: EventId,
    pub event_time: Timestamp,
    pub recorded_at: Timestamp,
}

impl Snapshot {
    /// Takes `customer` out: their row goes, and those of their `events` that were visible at
    /// this snapshot's (T, K) leave the visible-event count and digest, so the body becomes what
    /// the log computes once the customer is erased (an audit then re-derives it). `false`, and
    /// nothing changed, when the snapshot has no row for the customer.
    pub fn redact(&mut self, customer: &str, events: &[ErasedEvent]) -> bool {
        let m = &mut self.matrix;
        let Ok(row) = m.customers.binary_search_by(|c| c.as_str().cmp(customer)) else {
            return false;
        };
        let width = self.features.len();
        m.customers.remove(row);
        m.values.drain(row * width..(row + 1) * width);
        for e in events {
            if e.event_time <= self.as_of && e.recorded_at <= self.known_at {
                m.visible_events = m.visible_events.saturating_sub(1);
                m.visible_digest = m.visible_digest.wrapping_sub(digest_term(&e.id));
            }
        }
        true
    }
}

/// The start of a snapshot body, up to the customer count: what a listing shows, read without
/// the customer ids or the matrix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub as_of: Timestamp,
    pub known_at: Timestamp,
    pub definition_set: [u8; 32],
    pub visible_events: u64,
    pub visible_digest: u128,
    pub features: Vec<String>,
    pub customers: usize,
}

/// A body read front to back.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

/// A slice as an array; every caller passes exactly N bytes (`take(N)`, `chunks_exact(8)`), so
/// the error is never taken.
fn array<const N: usize>(b: &[u8]) -> Result<[u8; N], DecodeError> {
    b.try_into().map_err(|_| DecodeError::EndsEarly)
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::EndsEarly)?;
        let s = self.bytes.get(self.pos..end).ok_or(DecodeError::EndsEarly)?;
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        array(self.take(N)?)
    }

    fn len(&mut self) -> Result<usize, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?) as usize)
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let len = self.len()?;
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| DecodeError::NotUtf8)
    }
}

impl Header {
    /// The header of a snapshot body; the rest of the body is not looked at.
    pub fn decode(body: &[u8]) -> Result<Header, DecodeError> {
        Header::read(&mut Reader { bytes: body, pos: 0 })
    }

    fn read(r: &mut Reader<'_>) -> Result<Header, DecodeError> {
        let as_of = Timestamp::from_micros(i64::from_be_bytes(r.array()?));
        let known_at = Timestamp::from_micros(i64::from_be_bytes(r.array()?));
        let definition_set = r.array()?;
        let visible_events = u64::from_be_bytes(r.array()?);
        let visible_digest = u128::from_be_bytes(r.array()?);
        let n = r.len()?;
        let mut features = Vec::with_capacity(n.min(1 << 20));
        for _ in 0..n {
            features.push(r.string()?);
        }
        Ok(Header {
            as_of,
            known_at,
            definition_set,
            visible_events,
            visible_digest,
            features,
            customers: r.len()?,
        })
    }
}

/// Computes the snapshot at (T, K) from the log, without storing it.
pub fn compute(store: &Store, at: AsOf) -> Result<Snapshot, SnapshotError> {
    let matrix = materialise(store, at)?;
    Ok(Snapshot {
        as_of: at.as_of,
        known_at: at.known_at,
        definition_set: set_hash(),
        features: definitions().iter().map(|d| d.name.clone()).collect(),
        matrix,
    })
}

fn artifact(snapshot: &Snapshot, provenance: &Provenance) -> Result<NewArtifact, SnapshotError> {
    Ok(NewArtifact {
        kind: KIND.into(),
        schema: SCHEMA,
        as_of: snapshot.as_of.micros(),
        parents: Vec::new(),
        body: snapshot.encode(),
        created_at: time::now().micros(),
        provenance: serde_json::to_vec(provenance)?,
    })
}

/// Materialises and stores the snapshot at (T, K); returns its hash and whether it was new.
pub fn create(store: &Store, at: AsOf) -> Result<(ArtifactHash, bool, Snapshot), SnapshotError> {
    let batches = store.log().batches()?;
    let provenance = Provenance {
        log_batch: batches.last().map_or(0, |b| b.seq),
        log_head: hex(&store.log().head()?),
    };
    let snapshot = compute(store, at)?;
    let (hash, new) = store.artifacts().put(artifact(&snapshot, &provenance)?)?;
    Ok((hash, new, snapshot))
}

pub fn load(store: &Store, hash: &ArtifactHash) -> Result<(StoredArtifact, Snapshot), SnapshotError> {
    let a = artifact::fetch(store, hash, KIND)?;
    let s = Snapshot::decode(&a.body).map_err(|e| SnapshotError::Malformed(hex(hash), e))?;
    Ok((a, s))
}

/// The outcome of recomputing a stored snapshot from the log.
#[derive(Debug, Clone, PartialEq)]
pub enum Replay {
    Identical,
    /// The first difference, in customer order then feature order.
    Differs {
        customer: String,
        feature: String,
        stored: Option<f64>,
        recomputed: Option<f64>,
    },
    /// Same values but different hash (the stored bytes or the definitions changed).
    HashMismatch {
        stored: String,
        recomputed: String,
    },
    /// The stored snapshot differs from its name only because erasure requests removed these
    /// customers from it; everything else re-derives identically.
    Erased {
        requests: Vec<u64>,
        customers: Vec<String>,
    },
}

pub fn replay(store: &Store, hash: &ArtifactHash) -> Result<Replay, SnapshotError> {
    let (stored_artifact, stored) = load(store, hash)?;
    let again = compute(
        store,
        AsOf {
            as_of: stored.as_of,
            known_at: stored.known_at,
        },
    )?;
    if let Some(d) = first_difference(&stored, &again) {
        return Ok(d);
    }
    let recomputed = artifact(
        &again,
        &Provenance {
            log_batch: 0,
            log_head: String::new(),
        },
    )?
    .hash();
    if recomputed == stored_artifact.hash && stored_artifact.recomputed_hash() == stored_artifact.hash {
        return Ok(Replay::Identical);
    }
    if recomputed == stored_artifact.recomputed_hash() {
        if let Some(Erasures { requests, customers }) = erased_by(store, &stored_artifact)? {
            return Ok(Replay::Erased { requests, customers });
        }
    }
    Ok(Replay::HashMismatch {
        stored: hex(&stored_artifact.hash),
        recomputed: hex(&recomputed),
    })
}

/// The erasure requests (and the customers they removed) that explain why artifact `a`'s
/// content no longer hashes to its name: `None` unless its current content is exactly what
/// its last recorded redaction left (anything else is tampering).
pub fn erased_by(store: &Store, a: &StoredArtifact) -> Result<Option<Erasures>, SnapshotError> {
    let redactions = store.artifacts().redactions(&a.hash)?;
    if redactions.last().map(|r| r.content_hash) != Some(a.recomputed_hash()) {
        return Ok(None);
    }
    let requests = redactions.iter().map(|r| r.request).collect();
    let mut customers: Vec<String> = redactions.into_iter().flat_map(|r| r.subjects).collect();
    customers.sort();
    customers.dedup();
    Ok(Some(Erasures { requests, customers }))
}

/// Erasure requests and the customers they removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Erasures {
    pub requests: Vec<u64>,
    pub customers: Vec<String>,
}

/// Row indices of the customers of `a` and `b` merged in id order (`None`: absent there).
fn merged_rows<'s>(a: &'s Snapshot, b: &'s Snapshot) -> Vec<(&'s str, Option<usize>, Option<usize>)> {
    let (ca, cb) = (&a.matrix.customers, &b.matrix.customers);
    let (mut i, mut j, mut out) = (0, 0, Vec::with_capacity(ca.len().max(cb.len())));
    while i < ca.len() || j < cb.len() {
        match (ca.get(i), cb.get(j)) {
            (Some(x), Some(y)) if x == y => {
                out.push((x.as_str(), Some(i), Some(j)));
                i += 1;
                j += 1;
            }
            (Some(x), Some(y)) if x < y => {
                out.push((x.as_str(), Some(i), None));
                i += 1;
            }
            (Some(x), None) => {
                out.push((x.as_str(), Some(i), None));
                i += 1;
            }
            (_, Some(y)) => {
                out.push((y.as_str(), None, Some(j)));
                j += 1;
            }
            (None, None) => break,
        }
    }
    out
}

/// Column pairs (name, index in a, index in b) of the features both snapshots have.
fn shared_columns<'s>(a: &'s Snapshot, b: &'s Snapshot) -> Vec<(&'s str, usize, usize)> {
    a.features
        .iter()
        .enumerate()
        .filter_map(|(ja, f)| b.features.iter().position(|g| g == f).map(|jb| (f.as_str(), ja, jb)))
        .collect()
}

fn cell(s: &Snapshot, row: Option<usize>, col: usize) -> Option<f64> {
    row.map(|r| s.matrix.values[r * s.features.len() + col])
}

fn first_difference(a: &Snapshot, b: &Snapshot) -> Option<Replay> {
    if a.features != b.features {
        let feature = a
            .features
            .iter()
            .zip(&b.features)
            .find(|(x, y)| x != y)
            .map_or_else(|| "(feature list)".to_string(), |(x, _)| x.clone());
        return Some(Replay::Differs {
            customer: String::new(),
            feature,
            stored: None,
            recomputed: None,
        });
    }
    for (customer, ia, ib) in merged_rows(a, b) {
        for (j, f) in a.features.iter().enumerate() {
            let (x, y) = (cell(a, ia, j), cell(b, ib, j));
            if x.map(f64::to_bits) != y.map(f64::to_bits) {
                return Some(Replay::Differs {
                    customer: customer.to_string(),
                    feature: f.clone(),
                    stored: x,
                    recomputed: y,
                });
            }
        }
    }
    None
}

/// Per-feature summary of how B differs from A, over the customers in both.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeatureDiff {
    pub feature: String,
    pub changed: usize,
    pub mean_a: f64,
    pub mean_b: f64,
    pub max_abs_change: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diff {
    pub only_in_a: usize,
    pub only_in_b: usize,
    pub in_both: usize,
    pub features: Vec<FeatureDiff>,
    pub features_only_in_a: Vec<String>,
    pub features_only_in_b: Vec<String>,
}

pub fn diff(a: &Snapshot, b: &Snapshot) -> Diff {
    let rows = merged_rows(a, b);
    let both: Vec<(usize, usize)> = rows.iter().filter_map(|&(_, x, y)| x.zip(y)).collect();
    let n = both.len().max(1) as f64;
    let features = shared_columns(a, b)
        .into_iter()
        .map(|(f, ja, jb)| {
            let (mut changed, mut sum_a, mut sum_b, mut max) = (0usize, 0.0, 0.0, 0.0f64);
            for &(ia, ib) in &both {
                let x = a.matrix.values[ia * a.features.len() + ja];
                let y = b.matrix.values[ib * b.features.len() + jb];
                sum_a += x;
                sum_b += y;
                if x.to_bits() != y.to_bits() {
                    changed += 1;
                    max = max.max((y - x).abs());
                }
            }
            FeatureDiff {
                feature: f.to_string(),
                changed,
                mean_a: sum_a / n,
                mean_b: sum_b / n,
                max_abs_change: max,
            }
        })
        .collect();
    Diff {
        only_in_a: a.matrix.customers.len() - both.len(),
        only_in_b: b.matrix.customers.len() - both.len(),
        in_both: both.len(),
        features,
        features_only_in_a: a.features.iter().filter(|f| !b.features.contains(f)).cloned().collect(),
        features_only_in_b: b.features.iter().filter(|f| !a.features.contains(f)).cloned().collect(),
    }
}

/// Snapshot artifacts whose as-of is not after `t`, oldest first.
pub fn list(store: &Store, before: Timestamp) -> Result<Vec<(ArtifactHash, Timestamp)>, SnapshotError> {
    Ok(store
        .artifacts()
        .list(KIND, before.micros())?
        .into_iter()
        .map(|r| (r.hash, Timestamp::from_micros(r.as_of)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_by_two() -> Snapshot {
        Snapshot {
            as_of: Timestamp::from_micros(875_577_600_000_000),
            known_at: Timestamp::from_micros(875_664_000_000_000),
            definition_set: [9; 32],
            features: vec!["recency_days".into(), "frequency".into()],
            matrix: Matrix {
                customers: vec!["a".into(), "b".into()],
                values: vec![1.0, 2.0, -0.5, 4.0],
                visible_events: 12,
                visible_digest: 0xfeed,
            },
        }
    }

    #[test]
    fn the_header_is_the_start_of_what_decode_reads() {
        let s = two_by_two();
        let body = s.encode();
        assert_eq!(Snapshot::decode(&body), Ok(s.clone()));
        let h = Header::decode(&body).expect("header");
        assert_eq!(
            h,
            Header {
                as_of: s.as_of,
                known_at: s.known_at,
                definition_set: s.definition_set,
                visible_events: 12,
                visible_digest: 0xfeed,
                features: s.features.clone(),
                customers: 2,
            }
        );
        // The header ends before the customer ids: a body cut after it still has a header.
        let cut = 8 + 8 + 32 + 8 + 16 + 4 + (4 + 12) + (4 + 9) + 4;
        assert_eq!(Header::decode(&body[..cut]), Ok(h));
        assert_eq!(Header::decode(&body[..cut - 1]), Err(DecodeError::EndsEarly));
        assert_eq!(Snapshot::decode(&body[..cut]), Err(DecodeError::EndsEarly));
        let mut long = body.clone();
        long.push(0);
        assert_eq!(Snapshot::decode(&long), Err(DecodeError::TrailingBytes));
    }

    #[test]
    fn a_body_decodes_back_and_a_damaged_one_says_how() {
        let snap = Snapshot {
            as_of: Timestamp::from_micros(7),
            known_at: Timestamp::from_micros(9),
            definition_set: [3; 32],
            features: vec!["f1".into(), "f2".into()],
            matrix: Matrix {
                customers: vec!["a".into()],
                values: vec![1.5, -2.0],
                visible_events: 4,
                visible_digest: 5,
            },
        };
        let body = snap.encode();
        assert_eq!(Snapshot::decode(&body), Ok(snap));
        assert_eq!(Snapshot::decode(&body[..body.len() - 1]), Err(DecodeError::EndsEarly));
        let mut longer = body.clone();
        longer.push(0);
        assert_eq!(Snapshot::decode(&longer), Err(DecodeError::TrailingBytes));
        // The first feature name's first byte, after the 72-byte header and two lengths.
        let mut bad = body;
        bad[80] = 0xff;
        assert_eq!(Snapshot::decode(&bad), Err(DecodeError::NotUtf8));
        assert_eq!(DecodeError::NotUtf8.to_string(), "not UTF-8");
    }
    /// A snapshot redacted of a customer equals the one computed from a log that never had them.
    #[test]
    fn redacting_a_customer_equals_computing_without_them() {
        use cis_core::event::{Event, Money, Order, Payload};
        let order = |customer: &str, id: &str, day: i64, recorded_day: i64| {
            Event {
                customer_id: customer.into(),
                event_time: Timestamp::from_day(day),
                payload: Payload::Order(Order {
                    order_id: id.into(),
                    amount: Money {
                        minor: 1250,
                        currency: "USD".into(),
                    },
                    quantity: None,
                    channel: None,
                }),
            }
            .into_new_event(Timestamp::from_day(recorded_day))
        };
        let others = vec![order("a", "o1", 1, 1), order("c", "o2", 2, 3)];
        // b's o4 happened by T but was recorded after K, and o5 happened after T: neither is visible.
        let b = vec![order("b", "o3", 1, 2), order("b", "o4", 3, 9), order("b", "o5", 6, 6)];
        let with = Store::in_memory().expect("store");
        with.log()
            .append([others.clone(), b.clone()].concat(), 1, 0)
            .expect("append");
        let without = Store::in_memory().expect("store");
        without.log().append(others, 1, 0).expect("append");
        let at = AsOf::new(Some(Timestamp::from_day(5)), Some(Timestamp::from_day(5)));

        let mut snap = compute(&with, at).expect("snapshot");
        assert_eq!(snap.matrix.visible_events, 3);
        let erased: Vec<ErasedEvent> = b
            .iter()
            .map(|e| ErasedEvent {
                id: cis_storage::envelope::event_id(&e.envelope().expect("envelope")),
                event_time: Timestamp::from_micros(e.event_time),
                recorded_at: Timestamp::from_micros(e.recorded_at),
            })
            .collect();
        assert!(snap.redact("b", &erased));
        assert_eq!(snap.encode(), compute(&without, at).expect("snapshot").encode());
        assert!(
            !snap.redact("b", &erased),
            "a second redaction finds no row and changes nothing"
        );
        assert_eq!(snap.matrix.visible_events, 2);
    }
}
