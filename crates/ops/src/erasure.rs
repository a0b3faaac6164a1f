//! Erasure of one customer (a data-subject request), keeping the log verifiable.
//!
//! `erase` carries a request through these stages, each durable before the next and each safe
//! to repeat (see [`STAGES`]):
//! 1. records the request in the `erasures` ledger (hash-chained: who, when, why, how many events);
//! 2. erases the customer's events in the log: each record keeps its id, times and kind (so the
//!    hash chain still verifies) and its payload is replaced by a tombstone naming the request;
//!    the customer's key is destroyed (crypto-shredding: copies sled keeps in old pages become
//!    unreadable);
//! 3. redacts stored artifacts holding the customer's rows (snapshots: the row and its events'
//!    share of the visible count and digest, so the redacted body is exactly what the log now
//!    gives; scores: the row), recording each redaction so audits say "erasure", not "tampered";
//! 4. records how many quarantined rows are the customer's, then removes them;
//! 5. records completion in the ledger.
//!
//! The store notes that it owes a rewrite of its database from stage 2 on; `cis erase` does the
//! rewrite ([`Store::compact`]) once the store is closed, and any later `cis erase` does it if a
//! crash came first.
//!
//! A crash inside stage 2 is finished when the store is next opened. A crash anywhere after
//! stage 1 leaves a request without completion: the next `erase` (of any customer) first carries
//! every such request through its remaining stages, under its own number, and only then looks
//! at what it was asked.
//! What stays, by design: the customer id in the ledger, in redaction records and in the access
//! log (the audit trail of the request itself), event ids and times. Limits: see ARCHITECTURE.md.

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use cis_storage::{Entry, Ledger, StorageError, Store, Visibility};
use serde::{Deserialize, Serialize};

use cis_core::time::{self, Timestamp};
use cis_features::snapshot::{self, ErasedEvent, SnapshotError};
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
    /// The ledger lacks a step this process wrote or must have written before (`what`).
    #[error("erasure ledger is inconsistent: request {request} {what}")]
    Inconsistent { request: u64, what: &'static str },
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
        at: Timestamp,
        events: u64,
    },
    /// How many quarantined rows are the customer's, recorded before any is removed: a crash
    /// part-way through the removal must not make the completion undercount them.
    Quarantine { request: u64, rows: u64 },
    Completed {
        request: u64,
        at: Timestamp,
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
/// Unfinished requests are finished first; if one was `customer`'s, that is the outcome.
pub fn erase(store: &Store, customer: &str, reason: &str, by: &str, now: Timestamp) -> Result<Outcome, ErasureError> {
    if reason.trim().is_empty() {
        return Err(ErasureError::NoReason);
    }
    let ledger = store.ledger(LEDGER)?;
    // Before "already erased?": a crash after stage 2 leaves every event erased and the rest
    // of the request undone, and only the ledger says so.
    let mut resumed = None;
    for (request, of) in unfinished(&steps(&ledger)?) {
        tracing::warn!(request, "resuming an erasure request a crash interrupted");
        carry_out(&Job {
            store,
            ledger: &ledger,
            request,
            customer: &of,
            now,
        })?;
        if of == customer {
            resumed = Some(request);
        }
    }
    if let Some(request) = resumed {
        return listed(store, request).map(Outcome::Erased);
    }
    let entries = store.log().subject_events(customer, Visibility::ALL)?;
    if entries.is_empty() {
        return Err(ErasureError::UnknownCustomer(customer.to_string()));
    }
    let live = entries.iter().filter(|e| matches!(e, Entry::Live(_))).count() as u64;
    if live == 0 {
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
    let request = begin(&ledger, customer, reason, by, now, live)?;
    carry_out(&Job {
        store,
        ledger: &ledger,
        request,
        customer,
        now,
    })?;
    listed(store, request).map(Outcome::Erased)
}

/// Stage 1: records a new request; returns its number.
fn begin(
    ledger: &Ledger,
    customer: &str,
    reason: &str,
    by: &str,
    now: Timestamp,
    events: u64,
) -> Result<u64, ErasureError> {
    // Requests are numbered 1, 2, 3, … in the order they were made.
    let made = steps(ledger)?
        .iter()
        .filter(|s| matches!(s, Step::Requested { .. }))
        .count() as u64;
    let request = made + 1;
    append(
        ledger,
        &Step::Requested {
            request,
            customer: customer.to_string(),
            reason: reason.to_string(),
            by: by.to_string(),
            at: now,
            events,
        },
    )?;
    Ok(request)
}

/// A recorded request being carried out.
struct Job<'a> {
    store: &'a Store,
    ledger: &'a Ledger,
    request: u64,
    customer: &'a str,
    now: Timestamp,
}

type Stage = fn(&Job<'_>) -> Result<(), ErasureError>;

/// Stages 2 to 5, in order. Each one, run again after a crash at any point inside it or after
/// it, leaves what one uninterrupted run leaves: that is how a request is resumed.
const STAGES: [Stage; 5] = [
    erase_events,
    redact_artifacts,
    count_quarantined,
    remove_quarantined,
    complete,
];

fn carry_out(job: &Job<'_>) -> Result<(), ErasureError> {
    for stage in STAGES {
        stage(job)?;
    }
    Ok(())
}

/// Stage 2: tombstones and key destruction (the log's own erase marker makes it resumable).
fn erase_events(job: &Job<'_>) -> Result<(), ErasureError> {
    // Noted first: whatever this request removes from now on leaves superseded pages behind.
    job.store.owe_compaction()?;
    let events = job.store.log().erase(job.customer, job.request)?;
    tracing::info!(request = job.request, events, "event payloads erased and key destroyed");
    Ok(())
}

/// Stage 3: artifacts that still hold the customer's row are redacted; those a crashed run
/// already redacted hold none and are left alone.
fn redact_artifacts(job: &Job<'_>) -> Result<(), ErasureError> {
    // The events this request erased, the share redacted snapshots lose: read back from the
    // tombstones, as a resumed run no longer sees them live.
    let events: Vec<ErasedEvent> = job
        .store
        .log()
        .subject_events(job.customer, Visibility::ALL)?
        .into_iter()
        .filter_map(|e| match e {
            Entry::Erased {
                id,
                event_time,
                recorded_at,
                request,
                ..
            } if request == job.request => Some(ErasedEvent {
                id,
                event_time: Timestamp::from_micros(event_time),
                recorded_at: Timestamp::from_micros(recorded_at),
            }),
            _ => None,
        })
        .collect();
    redact_snapshots(job.store, job.customer, &events, job.request, job.now)?;
    redact_scores(job.store, job.customer, job.request, job.now)
}

/// Stage 4a: records the number of the customer's quarantined rows, unless a crashed run did.
fn count_quarantined(job: &Job<'_>) -> Result<(), ErasureError> {
    if quarantine_count(job)?.is_none() {
        let rows = quarantined_of(job.store, job.customer)?.len() as u64;
        append(
            job.ledger,
            &Step::Quarantine {
                request: job.request,
                rows,
            },
        )?;
    }
    Ok(())
}

/// Stage 4b: removes the customer's quarantined rows (those a crashed run did not).
fn remove_quarantined(job: &Job<'_>) -> Result<(), ErasureError> {
    for q in quarantined_of(job.store, job.customer)? {
        records::remove_quarantined(job.store, &q)?;
    }
    job.store.flush()?;
    Ok(())
}

/// Stage 5: the completion, listing every artifact redacted for this request (by any run).
fn complete(job: &Job<'_>) -> Result<(), ErasureError> {
    let quarantined_rows = quarantine_count(job)?.ok_or(ErasureError::Inconsistent {
        request: job.request,
        what: "is completing without a quarantine count",
    })?;
    let mut artifacts = Vec::new();
    for kind in [snapshot::KIND, scores::KIND] {
        for r in job.store.artifacts().list(kind, i64::MAX)? {
            if job
                .store
                .artifacts()
                .redactions(&r.hash)?
                .iter()
                .any(|n| n.request == job.request)
            {
                artifacts.push(cis_storage::hex(&r.hash));
            }
        }
    }
    append(
        job.ledger,
        &Step::Completed {
            request: job.request,
            at: job.now,
            artifacts,
            quarantined_rows,
        },
    )
}

fn quarantine_count(job: &Job<'_>) -> Result<Option<u64>, ErasureError> {
    Ok(steps(job.ledger)?.into_iter().find_map(|s| match s {
        Step::Quarantine { request, rows } if request == job.request => Some(rows),
        _ => None,
    }))
}

fn append(ledger: &Ledger, step: &Step) -> Result<(), ErasureError> {
    ledger.append(&serde_json::to_vec(step)?)?;
    ledger.flush()?;
    Ok(())
}

fn listed(store: &Store, request: u64) -> Result<ErasureRequest, ErasureError> {
    requests(store)?
        .into_iter()
        .find(|r| r.request == request)
        .ok_or(ErasureError::Inconsistent {
            request,
            what: "is not recorded",
        })
}

/// Requests that were recorded but never completed, oldest first: (request, customer).
fn unfinished(steps: &[Step]) -> Vec<(u64, String)> {
    let mut open: Vec<(u64, String)> = Vec::new();
    for step in steps {
        match step {
            Step::Requested { request, customer, .. } => open.push((*request, customer.clone())),
            Step::Completed { request, .. } => open.retain(|(r, _)| r != request),
            Step::Quarantine { .. } => {}
        }
    }
    open
}

fn steps(ledger: &Ledger) -> Result<Vec<Step>, ErasureError> {
    let mut out = Vec::new();
    ledger.visit(1, |r| {
        out.push(serde_json::from_slice(&r.body).map_err(ErasureError::Record)?);
        Ok::<_, ErasureError>(ControlFlow::Continue(()))
    })?;
    Ok(out)
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
            // The completion repeats the count.
            Step::Quarantine { .. } => {}
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
    events: &[ErasedEvent],
    request: u64,
    now: Timestamp,
) -> Result<(), ErasureError> {
    for r in store.artifacts().list(snapshot::KIND, i64::MAX)? {
        let (_, mut snap) = snapshot::load(store, &r.hash)?;
        if !snap.redact(customer, events) {
            continue;
        }
        store.artifacts().redact(
            &r.hash,
            snap.encode(),
            request,
            vec![customer.to_string()],
            now.micros(),
        )?;
    }
    Ok(())
}

/// Removes the customer's row from every stored score run holding one.
fn redact_scores(store: &Store, customer: &str, request: u64, now: Timestamp) -> Result<(), ErasureError> {
    for r in store.artifacts().list(scores::KIND, i64::MAX)? {
        let (_, mut set) = scores::load_scores(store, &r.hash)?;
        let before = set.rows.len();
        set.rows.retain(|row| row.customer_id != customer);
        if set.rows.len() == before {
            continue;
        }
        store.artifacts().redact(
            &r.hash,
            scores::encode(&set)?,
            request,
            vec![customer.to_string()],
            now.micros(),
        )?;
    }
    Ok(())
}

/// The quarantined rows of the customer (their raw text may hold its data): rows whose
/// customer id was read, by that id; rows too malformed to read one, by a whole-token match of
/// the raw text.
fn quarantined_of(store: &Store, customer: &str) -> Result<Vec<Quarantined>, ErasureError> {
    Ok(records::quarantined(store, None)?
        .into_iter()
        .filter(|q| match &q.customer {
            Some(c) => c == customer,
            // A row that could not be aligned with its header keeps no text: it names no one,
            // so it could be this customer's.
            None => q.raw.is_empty() || mentions(&q.raw, customer),
        })
        .collect())
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
            at: Timestamp::EPOCH,
            events: 1,
        };
        ledger
            .append(&serde_json::to_vec(&requested).expect("json"))
            .expect("append");
        drop(ledger);
        let Outcome::Erased(r) = erase(&store, "a", "again", "dpo", Timestamp::from_micros(1)).expect("erase") else {
            panic!("a had an event");
        };
        assert_eq!((r.request, r.reason.as_str(), r.completed_at.is_some()), (1, "r", true));
        let Outcome::Erased(next) = erase(&store, "b", "another", "dpo", Timestamp::from_micros(2)).expect("erase")
        else {
            panic!("b had an event");
        };
        assert_eq!(next.request, 2);
        assert_eq!(requests(&store).expect("list").len(), 2);
    }

    /// c1 and c2 with orders, one bad order of c1's quarantined, two snapshots holding both.
    fn two_customers() -> Store {
        use cis_core::event::Kind;
        use cis_ingest::{ingest_file, source::Format, IngestOptions};
        let dir = tempfile::tempdir().expect("tempdir");
        let orders = dir.path().join("orders.csv");
        std::fs::write(
            &orders,
            "order_id,customer_id,event_time,amount,currency\no1,c1,2024-02-01,10.00,EUR\n\
             o2,c2,2024-02-02,12.50,EUR\no3,c1,2024-02-03,not-money,EUR\no4,c1,2024-03-01,7.25,EUR\n",
        )
        .expect("write");
        let store = Store::in_memory().expect("store");
        let opts = IngestOptions::new(Kind::Order, Format::Csv);
        let run = ingest_file(&store, &orders, &opts, &mut |_| {}).expect("ingest");
        assert_eq!((run.accepted, run.quarantined), (3, 1));
        for day in ["2024-02-15", "2024-06-01"] {
            let at = cis_core::AsOf::new(Some(time::parse_timestamp(day).expect("day")), None);
            snapshot::create(&store, at).expect("snapshot");
        }
        store
    }

    /// What an erasure leaves: the log's verification, the requests, each snapshot's body and
    /// redactions, the quarantine.
    fn end_state(store: &Store) -> impl PartialEq + std::fmt::Debug {
        let artifacts: Vec<_> = store
            .artifacts()
            .list(snapshot::KIND, i64::MAX)
            .expect("list")
            .into_iter()
            .map(|r| {
                let body = store.artifacts().get(&r.hash).expect("get").expect("stored").body;
                (body, store.artifacts().redactions(&r.hash).expect("redactions"))
            })
            .collect();
        (
            store.log().verify().expect("verify"),
            requests(store).expect("requests"),
            artifacts,
            records::quarantined(store, None).expect("quarantine"),
        )
    }

    #[test]
    fn a_request_stopped_after_any_stage_ends_as_an_uninterrupted_one() {
        let reference = two_customers();
        let Outcome::Erased(done) = erase(&reference, "c1", "r", "dpo", Timestamp::from_micros(5)).expect("erase")
        else {
            panic!("c1 has events");
        };
        assert_eq!((done.events, done.artifacts.len(), done.quarantined_rows), (2, 2, 1));
        for stopped_after in 0..STAGES.len() {
            for rerun in ["c1", "c2"] {
                let store = two_customers();
                let ledger = store.ledger(LEDGER).expect("ledger");
                let request = begin(&ledger, "c1", "r", "dpo", Timestamp::from_micros(5), 2).expect("request");
                let job = Job {
                    store: &store,
                    ledger: &ledger,
                    request,
                    customer: "c1",
                    now: Timestamp::from_micros(5),
                };
                for stage in &STAGES[..stopped_after] {
                    stage(&job).expect("stage");
                }
                drop(ledger);
                // Re-running for the customer resumes the request; an erasure of anyone else
                // finishes it first, then makes its own.
                let outcome = erase(&store, rerun, "r", "dpo", Timestamp::from_micros(5)).expect("re-run");
                if rerun == "c1" {
                    assert_eq!(outcome, Outcome::Erased(done.clone()), "after stage {stopped_after}");
                    assert_eq!(end_state(&store), end_state(&reference), "after stage {stopped_after}");
                } else {
                    let Outcome::Erased(next) = outcome else {
                        panic!("c2 has events");
                    };
                    assert_eq!(next.request, 2);
                    assert_eq!(
                        requests(&store).expect("requests")[0],
                        done,
                        "after stage {stopped_after}"
                    );
                }
            }
        }
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
