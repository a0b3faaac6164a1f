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
    let outcomes = erase_all(store, &[customer.to_string()], reason, by, now)?;
    outcomes.into_iter().next().unwrap_or(Err(ErasureError::Inconsistent {
        request: 0,
        what: "left the customer without an outcome",
    }))
}

/// Erases each of `customers` as its own request (recorded, numbered and completed on its
/// own), carried out together: stage by stage for all of them, so stage 3 reads and rewrites
/// each stored artifact once for the batch instead of once per request. Unfinished requests
/// are finished first, together; a customer among them gets that request as its outcome. The
/// outcomes follow `customers`; an unknown customer is its own `Err` and holds up no other. A
/// customer named twice is erased once (the second outcome: already erased by that request).
pub fn erase_all(
    store: &Store,
    customers: &[String],
    reason: &str,
    by: &str,
    now: Timestamp,
) -> Result<Vec<Result<Outcome, ErasureError>>, ErasureError> {
    if reason.trim().is_empty() {
        return Err(ErasureError::NoReason);
    }
    let ledger = store.ledger(LEDGER)?;
    // Before "already erased?": a crash after stage 2 leaves every event erased and the rest
    // of the request undone, and only the ledger says so.
    let resumed = unfinished(&steps(&ledger)?);
    if !resumed.is_empty() {
        tracing::warn!(
            requests = resumed.len(),
            "resuming erasure requests a crash interrupted"
        );
        carry_out(&Batch {
            store,
            ledger: &ledger,
            now,
            requests: resumed.clone(),
        })?;
    }
    let mut slots = Vec::with_capacity(customers.len());
    let mut batch = Batch {
        store,
        ledger: &ledger,
        now,
        requests: Vec::new(),
    };
    for customer in customers {
        let earlier = resumed.iter().chain(&batch.requests).find(|(_, c)| c == customer);
        if let Some(&(request, _)) = earlier {
            slots.push(if batch.requests.iter().any(|(r, _)| *r == request) {
                Slot::Done(Ok(Outcome::AlreadyErased {
                    customer: customer.clone(),
                    requests: vec![request],
                }))
            } else {
                Slot::Listed(request)
            });
            continue;
        }
        slots.push(match live_events(store, customer)? {
            Live::Unknown => Slot::Done(Err(ErasureError::UnknownCustomer(customer.clone()))),
            Live::None { requests } => Slot::Done(Ok(Outcome::AlreadyErased {
                customer: customer.clone(),
                requests,
            })),
            Live::Some(events) => {
                let request = begin(&ledger, customer, reason, by, now, events)?;
                batch.requests.push((request, customer.clone()));
                Slot::Listed(request)
            }
        });
    }
    // Every request is recorded before any is carried out.
    ledger.flush()?;
    carry_out(&batch)?;
    let listed_all = requests(store)?;
    Ok(slots
        .into_iter()
        .map(|slot| match slot {
            Slot::Done(outcome) => outcome,
            Slot::Listed(request) => listed_all
                .iter()
                .find(|r| r.request == request)
                .cloned()
                .map(Outcome::Erased)
                .ok_or(ErasureError::Inconsistent {
                    request,
                    what: "is not recorded",
                }),
        })
        .collect())
}

/// A customer's outcome in [`erase_all`]: known already, or the request to list once done.
enum Slot {
    Done(Result<Outcome, ErasureError>),
    Listed(u64),
}

/// What the log holds of a customer.
enum Live {
    Unknown,
    /// Every event is erased, by these requests.
    None {
        requests: Vec<u64>,
    },
    /// This many events are live.
    Some(u64),
}

fn live_events(store: &Store, customer: &str) -> Result<Live, ErasureError> {
    let entries = store.log().subject_events(customer, Visibility::ALL)?;
    if entries.is_empty() {
        return Ok(Live::Unknown);
    }
    let live = entries.iter().filter(|e| matches!(e, Entry::Live(_))).count() as u64;
    if live > 0 {
        return Ok(Live::Some(live));
    }
    let requests: BTreeSet<u64> = entries
        .iter()
        .filter_map(|e| match e {
            Entry::Erased { request, .. } => Some(*request),
            Entry::Live(_) => None,
        })
        .collect();
    Ok(Live::None {
        requests: requests.into_iter().collect(),
    })
}

/// Stage 1: records a new request (durable once the caller flushes the ledger); returns its
/// number.
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

/// Recorded requests being carried out together: (request, customer), oldest first.
struct Batch<'a> {
    store: &'a Store,
    ledger: &'a Ledger,
    now: Timestamp,
    requests: Vec<(u64, String)>,
}

type Stage = fn(&Batch<'_>) -> Result<(), ErasureError>;

/// Stages 2 to 5, in order, each for every request of the batch. Each one, run again after a
/// crash at any point inside it or after it, leaves what one uninterrupted run leaves: that is
/// how a request is resumed (with the others left unfinished, or on its own).
const STAGES: [Stage; 5] = [
    erase_events,
    redact_artifacts,
    count_quarantined,
    remove_quarantined,
    complete,
];

fn carry_out(batch: &Batch<'_>) -> Result<(), ErasureError> {
    if batch.requests.is_empty() {
        return Ok(());
    }
    for stage in STAGES {
        stage(batch)?;
    }
    Ok(())
}

/// Stage 2: tombstones and key destruction (the log's own erase marker makes it resumable).
fn erase_events(batch: &Batch<'_>) -> Result<(), ErasureError> {
    // Noted first: whatever these requests remove from now on leaves superseded pages behind.
    batch.store.owe_compaction()?;
    let erasures: Vec<(&str, u64)> = batch.requests.iter().map(|(r, c)| (c.as_str(), *r)).collect();
    let counts = batch.store.log().erase_all(&erasures)?;
    for ((_, request), events) in erasures.iter().zip(counts) {
        tracing::info!(request, events, "event payloads erased and key destroyed");
    }
    Ok(())
}

/// Stage 3: artifacts that still hold a customer's row are redacted; those a crashed run
/// already redacted hold none and are left alone.
fn redact_artifacts(batch: &Batch<'_>) -> Result<(), ErasureError> {
    let mut erased = Vec::with_capacity(batch.requests.len());
    for (request, customer) in &batch.requests {
        erased.push((
            *request,
            customer.as_str(),
            erased_events(batch.store, customer, *request)?,
        ));
    }
    redact_snapshots(batch.store, &erased, batch.now)?;
    redact_scores(batch.store, &batch.requests, batch.now)
}

/// The events `request` erased, the share redacted snapshots lose: read back from the
/// tombstones, as a resumed run no longer sees them live.
fn erased_events(store: &Store, customer: &str, request: u64) -> Result<Vec<ErasedEvent>, ErasureError> {
    Ok(store
        .log()
        .subject_events(customer, Visibility::ALL)?
        .into_iter()
        .filter_map(|e| match e {
            Entry::Erased {
                id,
                event_time,
                recorded_at,
                request: by,
                ..
            } if by == request => Some(ErasedEvent {
                id,
                event_time: Timestamp::from_micros(event_time),
                recorded_at: Timestamp::from_micros(recorded_at),
            }),
            _ => None,
        })
        .collect())
}

/// Stage 4a: records the number of each customer's quarantined rows, unless a crashed run did.
fn count_quarantined(batch: &Batch<'_>) -> Result<(), ErasureError> {
    for (request, customer) in &batch.requests {
        if quarantine_count(batch.ledger, *request)?.is_none() {
            let rows = quarantined_of(batch.store, customer)?.len() as u64;
            append(
                batch.ledger,
                &Step::Quarantine {
                    request: *request,
                    rows,
                },
            )?;
        }
    }
    // Durable before stage 4b removes a row.
    batch.ledger.flush()?;
    Ok(())
}

/// Stage 4b: removes the customers' quarantined rows (those a crashed run did not).
fn remove_quarantined(batch: &Batch<'_>) -> Result<(), ErasureError> {
    for (_, customer) in &batch.requests {
        for q in quarantined_of(batch.store, customer)? {
            records::remove_quarantined(batch.store, &q)?;
        }
    }
    batch.store.flush()?;
    Ok(())
}

/// Stage 5: each completion, listing every artifact redacted for its request (by any run).
fn complete(batch: &Batch<'_>) -> Result<(), ErasureError> {
    let mut redacted: Vec<(String, Vec<u64>)> = Vec::new();
    for kind in [snapshot::KIND, scores::KIND] {
        for r in batch.store.artifacts().list(kind, i64::MAX)? {
            let notes = batch.store.artifacts().redactions(&r.hash)?;
            redacted.push((cis_storage::hex(&r.hash), notes.iter().map(|n| n.request).collect()));
        }
    }
    for (request, _) in &batch.requests {
        let quarantined_rows = quarantine_count(batch.ledger, *request)?.ok_or(ErasureError::Inconsistent {
            request: *request,
            what: "is completing without a quarantine count",
        })?;
        let artifacts = redacted
            .iter()
            .filter(|(_, requests)| requests.contains(request))
            .map(|(hash, _)| hash.clone())
            .collect();
        append(
            batch.ledger,
            &Step::Completed {
                request: *request,
                at: batch.now,
                artifacts,
                quarantined_rows,
            },
        )?;
    }
    batch.ledger.flush()?;
    Ok(())
}

fn quarantine_count(ledger: &Ledger, of: u64) -> Result<Option<u64>, ErasureError> {
    Ok(steps(ledger)?.into_iter().find_map(|s| match s {
        Step::Quarantine { request, rows } if request == of => Some(rows),
        _ => None,
    }))
}

/// Appends a step, not yet durable: each stage flushes the ledger once it has appended the
/// steps of every request of its batch, before anything depends on them.
fn append(ledger: &Ledger, step: &Step) -> Result<(), ErasureError> {
    ledger.append(&serde_json::to_vec(step)?)?;
    Ok(())
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

/// Removes each erased customer's row from every stored snapshot holding one, reading and
/// writing each snapshot once: `erased` is (request, customer, the events it erased). The
/// visible-event count and digest lose the customer's events visible at the snapshot's (T, K),
/// so the redacted body equals what the erased log computes.
fn redact_snapshots(
    store: &Store,
    erased: &[(u64, &str, Vec<ErasedEvent>)],
    now: Timestamp,
) -> Result<(), ErasureError> {
    for r in store.artifacts().list(snapshot::KIND, i64::MAX)? {
        let (_, mut snap) = snapshot::load(store, &r.hash)?;
        let removed: Vec<(u64, Vec<String>)> = erased
            .iter()
            .filter(|(_, customer, events)| snap.redact(customer, events))
            .map(|(request, customer, _)| (*request, vec![customer.to_string()]))
            .collect();
        if !removed.is_empty() {
            store
                .artifacts()
                .redact(&r.hash, snap.encode(), &removed, now.micros())?;
        }
    }
    Ok(())
}

/// Removes each customer's row from every stored score run holding one, once per run.
fn redact_scores(store: &Store, requests: &[(u64, String)], now: Timestamp) -> Result<(), ErasureError> {
    for r in store.artifacts().list(scores::KIND, i64::MAX)? {
        let (_, mut set) = scores::load_scores(store, &r.hash)?;
        let held: BTreeSet<&str> = set.rows.iter().map(|row| row.customer_id.as_str()).collect();
        let gone: BTreeSet<&str> = requests
            .iter()
            .map(|(_, customer)| customer.as_str())
            .filter(|customer| held.contains(customer))
            .collect();
        if gone.is_empty() {
            continue;
        }
        let removed: Vec<(u64, Vec<String>)> = requests
            .iter()
            .filter(|(_, customer)| gone.contains(customer.as_str()))
            .map(|(request, customer)| (*request, vec![customer.clone()]))
            .collect();
        set.rows.retain(|row| !gone.contains(row.customer_id.as_str()));
        store
            .artifacts()
            .redact(&r.hash, scores::encode(&set)?, &removed, now.micros())?;
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
                let batch = Batch {
                    store: &store,
                    ledger: &ledger,
                    now: Timestamp::from_micros(5),
                    requests: vec![(request, "c1".into())],
                };
                for stage in &STAGES[..stopped_after] {
                    stage(&batch).expect("stage");
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

    /// Each snapshot's body, and its redaction notes as (request, subjects), with whether the
    /// last note's content hash is the body's: what an audit reads.
    type Redacted = (Vec<u8>, Vec<(u64, Vec<String>)>, bool);

    fn redacted(store: &Store) -> Vec<Redacted> {
        let mut out = Vec::new();
        for r in store.artifacts().list(snapshot::KIND, i64::MAX).expect("list") {
            let a = store.artifacts().get(&r.hash).expect("get").expect("stored");
            let notes = store.artifacts().redactions(&r.hash).expect("redactions");
            let last_matches = notes.last().is_some_and(|n| n.content_hash == a.recomputed_hash());
            out.push((
                a.body,
                notes.into_iter().map(|n| (n.request, n.subjects)).collect(),
                last_matches,
            ));
        }
        out
    }

    #[test]
    fn a_batch_of_requests_ends_as_the_same_requests_one_by_one() {
        let now = Timestamp::from_micros(5);
        let one_by_one = two_customers();
        for c in ["c1", "c2"] {
            erase(&one_by_one, c, "r", "dpo", now).expect("erase");
        }
        let batched = two_customers();
        let names = ["c1", "c2", "c1", "nobody"].map(String::from);
        let outcomes = erase_all(&batched, &names, "r", "dpo", now).expect("erase all");
        let expected = requests(&one_by_one).expect("requests");
        assert_eq!(requests(&batched).expect("requests"), expected);
        assert_eq!(expected.iter().map(|r| r.artifacts.len()).collect::<Vec<_>>(), [2, 2]);
        assert!(matches!(&outcomes[0], Ok(Outcome::Erased(r)) if r == &expected[0]));
        assert!(matches!(&outcomes[1], Ok(Outcome::Erased(r)) if r == &expected[1]));
        assert!(
            matches!(&outcomes[2], Ok(Outcome::AlreadyErased { requests, .. }) if requests == &[1]),
            "{:?}",
            outcomes[2]
        );
        assert!(matches!(&outcomes[3], Err(ErasureError::UnknownCustomer(c)) if c == "nobody"));
        assert_eq!(redacted(&batched), redacted(&one_by_one));
        assert!(redacted(&batched)
            .iter()
            .all(|(_, notes, last_matches)| notes.len() == 2 && *last_matches));
        assert_eq!(
            batched.log().verify().expect("verify"),
            one_by_one.log().verify().expect("verify")
        );
        assert_eq!(
            records::quarantined(&batched, None).expect("quarantine"),
            records::quarantined(&one_by_one, None).expect("quarantine")
        );
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
