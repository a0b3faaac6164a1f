//! What an ingest run leaves behind besides events: its run record and its quarantine.
//! Both are JSON in storage journals (self-describing, so fields can be added later).

use std::ops::ControlFlow;

use cis_storage::Store;
use serde::{Deserialize, Serialize};

use crate::event::Kind;
use crate::ingest::source::Format;
use crate::ingest::IngestError;

pub const RUNS: &str = "ingest_runs";
pub const QUARANTINE: &str = "quarantine";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestRun {
    pub run: u64,
    pub kind: Kind,
    pub format: Format,
    pub file: String,
    /// blake3 of the file's bytes.
    pub file_hash: String,
    pub recorded_at: String,
    pub started_at: String,
    pub finished_at: String,
    pub rows: u64,
    pub accepted: u64,
    pub duplicates: u64,
    pub quarantined: u64,
    pub head_before: String,
    pub head_after: String,
    pub batches: Vec<u64>,
    pub dropped_columns: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantined {
    pub run: u64,
    pub file: String,
    pub line: u64,
    pub field: String,
    pub reason: String,
    /// The row as read, with personal-data fields redacted.
    pub raw: String,
}

fn key(run: u64, line: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&run.to_be_bytes());
    k[8..].copy_from_slice(&line.to_be_bytes());
    k
}

fn put<T: Serialize>(store: &Store, journal: &'static str, k: &[u8], v: &T) -> Result<(), IngestError> {
    let bytes = serde_json::to_vec(v).map_err(|e| IngestError::Record(e.to_string()))?;
    Ok(store.journal_put(journal, k, &bytes)?)
}

fn list<T: for<'de> Deserialize<'de>>(
    store: &Store,
    journal: &'static str,
    prefix: &[u8],
) -> Result<Vec<T>, IngestError> {
    let mut out = Vec::new();
    let mut bad = None;
    store.journal_visit(journal, prefix, |_, v| {
        match serde_json::from_slice(v) {
            Ok(r) => out.push(r),
            Err(e) => bad = Some(e.to_string()),
        }
        Ok(ControlFlow::Continue(()))
    })?;
    match bad {
        Some(e) => Err(IngestError::Record(e)),
        None => Ok(out),
    }
}

/// Written with the batch it belongs to, so it is durable when the batch is.
pub fn quarantine(store: &Store, q: &Quarantined) -> Result<(), IngestError> {
    put(store, QUARANTINE, &key(q.run, q.line), q)
}

/// Removes a quarantined row (erasure of the customer it names). Flushed by the caller.
pub fn remove_quarantined(store: &Store, q: &Quarantined) -> Result<(), IngestError> {
    Ok(store.journal_remove(QUARANTINE, &key(q.run, q.line))?)
}

pub fn record_run(store: &Store, run: &IngestRun) -> Result<(), IngestError> {
    put(store, RUNS, &run.run.to_be_bytes(), run)?;
    Ok(store.flush()?)
}

pub fn runs(store: &Store) -> Result<Vec<IngestRun>, IngestError> {
    list(store, RUNS, &[])
}

pub fn quarantined(store: &Store, run: Option<u64>) -> Result<Vec<Quarantined>, IngestError> {
    let prefix = run.map(u64::to_be_bytes);
    list(store, QUARANTINE, prefix.as_ref().map_or(&[][..], |p| &p[..]))
}
