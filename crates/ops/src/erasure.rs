//! Erasure of one customer (a data-subject request), keeping the log verifiable.
//!
//! `erase` does, in this order, each step durable before the next:
//! 1. records the request in the `erasures` ledger (hash-chained: who, when, why, how many events);
//! 2. erases the customer's events in the log: each record keeps its id, times and kind (so the
//!    hash chain still verifies) and its payload is replaced by a tombstone naming the request;
//!    the customer's key is destroyed (crypto-shredding: copies sled keeps in old pages become
//!    unreadable);
//! 3. redacts stored artifacts holding the customer's rows (snapshots: the row and its events'
//!    share of the visible count and digest, so the redacted body is exactly what the log now
//!    gives; scores: the row), recording each redaction so audits say "erasure", not "tampered";
//! 4. removes the customer's quarantined rows;
//! 5. records completion in the ledger.
//!
//! A crash inside step 2 is finished when the store is next opened; a crash after step 1 leaves
//! a request without completion, which the next `erase` of the same customer resumes.
//! What stays, by design: the customer id in the ledger, in redaction records and in the access
//! log (the audit trail of the request itself), event ids and times. Limits: see ARCHITECTURE.md.

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use cis_storage::{hex, ArtifactHash, Entry, StorageError, Store, Visibility};
use serde::{Deserialize, Serialize};

use cis_core::time::{self, Micros};
use cis_features::compute::digest_term;
use cis_features::snapshot::{self, SnapshotError};
use cis_ingest::records::{self, Quarantined};
use cis_models::{scores, ModelError};

pub const LEDGER: &str = "erasures";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErasureError {
    #[error("no customer '{0}' in the log: nothing to erase")]
    UnknownCustomer(String),
    #[error("an erasure needs a reason (the data-subject request it answers)")]
    NoReason,
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Ingest(#[from] cis_ingest::IngestError),
    #[error("erasure ledger record: {0}")]
    Record(#[from] serde_json::Error),
}

/// One step of a request, as recorded in the ledger (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "lowercase")]
enum Step {
    Requested {
        request: u64,
        customer: String,
        reason: String,
        by: String,
        at: Micros,
        events: u64,
    },
    Completed {
        request: u64,
        at: Micros,
        artifacts: Vec<String>,
        quarantined_rows: u64,
    },
}

/// A request as `cis erasures` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErasureRequest {
    pub request: u64,
    pub customer: String,
    pub reason: String,
    pub by: String,
    pub requested_at: String,
    /// Events whose payloads were erased.
    pub events: u64,
    /// `None` while the request is unfinished (a crash interrupted it).
    pub completed_at: Option<String>,
    /// Artifacts whose rows for the customer were removed.
    pub artifacts: Vec<String>,
    pub quarantined_rows: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Erased(ErasureRequest),
    /// Every event of the customer was already erased, by these requests.
    AlreadyErased {
        customer: String,
        requests: Vec<u64>,
    },
}

/// Erases `customer` (see the module doc). `by` names who asked; `now` stamps the records.
pub fn erase(store: &Store, customer: &str, reason: &str, by: &str, now: Micros) -> Result<Outcome, ErasureError> {
    if reason.trim().is_empty() {
        return Err(ErasureError::NoReason);
    }
    let entries = store.log().subject_events(customer, Visibility::ALL)?;
    if entries.is_empty() {
        return Err(ErasureError::UnknownCustomer(customer.to_string()));
    }
    let live: Vec<(cis_storage::EventId, Micros, Micros)> = entries
        .iter()
        .filter_map(|e| match e {
            Entry::Live(ev) => Some((ev.id, ev.event_time, ev.recorded_at)),
            Entry::Erased { .. } => None,
        })
        .collect();
    if live.is_empty() {
        let requests: BTreeSet<u64> = entries
            .iter()
            .filter_map(|e| match e {
                Entry::Erased { request, .. } => Some(*request),
                Entry::Live(_) => None,
            })
            .collect();
        return Ok(Outcome::AlreadyErased {
            customer: customer.to_string(),
            requests: requests.into_iter().collect(),
        });
    }
    let ledger = store.ledger(LEDGER)?;
    let recorded = steps(&ledger)?;
    let request = match unfinished(&recorded, customer) {
        Some(r) => {
            tracing::warn!(request = r, "resuming an erasure request a crash interrupted");
            r
        }
        None => {
            // Requests are numbered 1, 2, 3, … in the order they were made.
            let request = 1 + recorded.iter().filter(|s| matches!(s, Step::Requested { .. })).count() as u64;
            let step = Step::Requested {
                request,
                customer: customer.to_string(),
                reason: reason.to_string(),
                by: by.to_string(),
                at: now,
                events: live.len() as u64,
            };
            ledger.append(&serde_json::to_vec(&step)?)?;
            ledger.flush()?;
            request
        }
    };
    let events = store.log().erase(customer, request)?;
    tracing::info!(request, events, "event payloads erased and key destroyed");
    let mut artifacts = redact_snapshots(store, customer, &live, request, now)?;
    artifacts.extend(redact_scores(store, customer, request, now)?);
    let quarantined_rows = remove_quarantined(store, customer)?;
    let step = Step::Completed {
        request,
        at: now,
        artifacts: artifacts.iter().map(|h| hex(h)).collect(),
        quarantined_rows,
    };
    ledger.append(&serde_json::to_vec(&step)?)?;
    ledger.flush()?;
    let listed = requests(store)?.into_iter().find(|r| r.request == request);
    listed
        .map(Outcome::Erased)
        .ok_or_else(|| ErasureError::Storage(StorageError::Corrupt(format!("erasure request {request} not recorded"))))
}

/// The request for `customer` that was recorded but never completed, if any.
fn unfinished(steps: &[Step], customer: &str) -> Option<u64> {
    let mut open = None;
    for step in steps {
        match step {
            Step::Requested {
                request, customer: c, ..
            } if c == customer => open = Some(*request),
            Step::Completed { request, .. } if open == Some(*request) => open = None,
            _ => {}
        }
    }
    open
}

fn steps(ledger: &cis_storage::Ledger) -> Result<Vec<Step>, ErasureError> {
    let mut out = Vec::new();
    let mut bad = None;
    ledger.visit(1, |r| {
        match serde_json::from_slice(&r.body) {
            Ok(s) => out.push(s),
            Err(e) => bad = Some(e),
        }
        Ok(ControlFlow::Continue(()))
    })?;
    match bad {
        Some(e) => Err(e.into()),
        None => Ok(out),
    }
}

/// Every recorded request, oldest first.
pub fn requests(store: &Store) -> Result<Vec<ErasureRequest>, ErasureError> {
    let mut out: Vec<ErasureRequest> = Vec::new();
    for step in steps(&store.ledger(LEDGER)?)? {
        match step {
            Step::Requested {
                request,
                customer,
                reason,
                by,
                at,
                events,
            } => out.push(ErasureRequest {
                request,
                customer,
                reason,
                by,
                requested_at: time::format(at),
                events,
                completed_at: None,
                artifacts: Vec::new(),
                quarantined_rows: 0,
            }),
            Step::Completed {
                request,
                at,
                artifacts,
                quarantined_rows,
            } => {
                if let Some(r) = out.iter_mut().find(|r| r.request == request) {
                    r.completed_at = Some(time::format(at));
                    r.artifacts = artifacts;
                    r.quarantined_rows = quarantined_rows;
                }
            }
        }
    }
    Ok(out)
}

/// How audits and replays say that an artifact differs because of erasure.
pub fn explain(requests: &[u64], customers: &[String]) -> String {
    let list = |v: Vec<String>| v.join(", ");
    format!(
        "differs because of erasure request {} (erased customers: {})",
        list(requests.iter().map(u64::to_string).collect()),
        list(customers.to_vec())
    )
}

/// Removes the customer's row from every stored snapshot holding one. The visible-event count
/// and digest lose the customer's events visible at the snapshot's (T, K), so the redacted
/// body equals what the erased log computes.
fn redact_snapshots(
    store: &Store,
    customer: &str,
    events: &[(cis_storage::EventId, Micros, Micros)],
    request: u64,
    now: Micros,
) -> Result<Vec<ArtifactHash>, ErasureError> {
    let mut done = Vec::new();
    for r in store.artifacts().list(snapshot::KIND, i64::MAX)? {
        let (_, mut snap) = snapshot::load(store, &r.hash)?;
        let m = &mut snap.matrix;
        let Ok(row) = m.customers.binary_search_by(|c| c.as_str().cmp(customer)) else {
            continue;
        };
        let width = snap.features.len();
        m.customers.remove(row);
        m.values.drain(row * width..(row + 1) * width);
        for (id, event_time, recorded_at) in events {
            if *event_time <= snap.as_of && *recorded_at <= snap.known_at {
                m.visible_events = m.visible_events.saturating_sub(1);
                m.visible_digest = m.visible_digest.wrapping_sub(digest_term(id));
            }
        }
        store
            .artifacts()
            .redact(&r.hash, snap.encode(), request, vec![customer.to_string()], now)?;
        done.push(r.hash);
    }
    Ok(done)
}

/// Removes the customer's row from every stored score run holding one.
fn redact_scores(store: &Store, customer: &str, request: u64, now: Micros) -> Result<Vec<ArtifactHash>, ErasureError> {
    let mut done = Vec::new();
    for r in store.artifacts().list(scores::KIND, i64::MAX)? {
        let (_, mut set) = scores::load_scores(store, &r.hash)?;
        let before = set.rows.len();
        set.rows.retain(|row| row.customer_id != customer);
        if set.rows.len() == before {
            continue;
        }
        store
            .artifacts()
            .redact(&r.hash, scores::encode(&set)?, request, vec![customer.to_string()], now)?;
        done.push(r.hash);
    }
    Ok(done)
}

/// Removes quarantined rows of the customer (their raw text may hold its data): rows whose
/// customer id was read, by that id; rows too malformed to read one, by a whole-token match of
/// the raw text.
fn remove_quarantined(store: &Store, customer: &str) -> Result<u64, ErasureError> {
    let rows: Vec<Quarantined> = records::quarantined(store, None)?
        .into_iter()
        .filter(|q| match &q.customer {
            Some(c) => c == customer,
            // A row that could not be aligned with its header keeps no text: it names no one,
            // so it could be this customer's.
            None => q.raw.is_empty() || mentions(&q.raw, customer),
        })
        .collect();
    for q in &rows {
        records::remove_quarantined(store, q)?;
    }
    store.flush()?;
    Ok(rows.len() as u64)
}

/// `raw` holds `customer` as a whole token (not as part of a longer id).
fn mentions(raw: &str, customer: &str) -> bool {
    let part_of_id = |c: char| c.is_alphanumeric() || c == '_' || c == '-';
    raw.match_indices(customer).any(|(i, _)| {
        let before = raw[..i].chars().next_back();
        let after = raw[i + customer.len()..].chars().next();
        !before.is_some_and(part_of_id) && !after.is_some_and(part_of_id)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_a_crash_interrupted_is_resumed_not_repeated() {
        let store = Store::in_memory().expect("store");
        let event = |c: &str, t: i64| cis_storage::NewEvent {
            kind: 1,
            subject: c.into(),
            event_time: t,
            recorded_at: t,
            body: vec![t as u8],
        };
        store
            .log()
            .append(vec![event("a", 1), event("b", 2)], 1, 0)
            .expect("append");
        // Recorded, then the process died before the log was touched.
        let ledger = store.ledger(LEDGER).expect("ledger");
        let requested = Step::Requested {
            request: 1,
            customer: "a".into(),
            reason: "r".into(),
            by: "dpo".into(),
            at: 0,
            events: 1,
        };
        ledger
            .append(&serde_json::to_vec(&requested).expect("json"))
            .expect("append");
        drop(ledger);
        let Outcome::Erased(r) = erase(&store, "a", "again", "dpo", 1).expect("erase") else {
            panic!("a had an event");
        };
        assert_eq!((r.request, r.reason.as_str(), r.completed_at.is_some()), (1, "r", true));
        let Outcome::Erased(next) = erase(&store, "b", "another", "dpo", 2).expect("erase") else {
            panic!("b had an event");
        };
        assert_eq!(next.request, 2);
        assert_eq!(requests(&store).expect("list").len(), 2);
    }

    #[test]
    fn mentions_matches_whole_ids_only() {
        assert!(mentions("c-1,2024-01-01,x", "c-1"));
        assert!(mentions(r#"{"customer_id":"c7","amount":"x"}"#, "c7"));
        assert!(!mentions("c-10,2024-01-01", "c-1"));
        assert!(!mentions("abc7,1", "c7"));
        assert!(!mentions("", "c7"));
    }
}
