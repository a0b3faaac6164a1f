//! The record of one `cis pipeline run`: every hash the run produced or read, stored as a
//! `pipeline-run` artifact (as-of = the run's cutoff T, parents = the artifacts it names).
//!
//! The body is JSON of [`RunRecord`]: structs and vectors in a fixed order, no maps, so the same
//! run gives the same bytes. A run is identified by its T and the hash of its pipeline file
//! ([`find`]): running the same T with the same file again is a no-op.

use cis_storage::{hex, unhex32, ArtifactHash, NewArtifact, StorageError, Store};
use serde::{Deserialize, Serialize};

use cis_core::artifact::{self, ArtifactError};
use cis_core::event::Kind;
use cis_core::time::{self, Timestamp};
use cis_models::ModelKind;

pub const KIND: &str = "pipeline-run";
pub const SCHEMA: u32 = 1;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error("pipeline run record encoding: {0}")]
    Json(#[from] serde_json::Error),
    #[error("pipeline run record {hash} names {field} {value}, which is not a hash")]
    NotAHash {
        hash: String,
        field: &'static str,
        value: String,
    },
}

/// One file the run ingested.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ingested {
    pub run: u64,
    pub kind: Kind,
    pub file: String,
    pub file_hash: String,
    pub accepted: u64,
    pub duplicates: u64,
    pub quarantined: u64,
}

/// One file the run found already ingested (same content, same kind) and skipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    pub kind: Kind,
    pub file: String,
    pub file_hash: String,
    /// The earlier run that ingested it.
    pub run: u64,
}

/// A model the run trained (it was due), or found stored already (same parents, same bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainedModel {
    pub kind: ModelKind,
    pub model: String,
    /// The snapshots it learned from.
    pub snapshots: Vec<String>,
    pub new: bool,
}

/// A model the scores used, and why it was chosen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsedModel {
    pub kind: ModelKind,
    pub model: String,
    /// `production` or `latest-trained`.
    pub rule: String,
}

/// A file the run exported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exported {
    pub table: String,
    pub format: String,
    /// Relative to the store directory (unless the pipeline file's `export.dir` is absolute).
    pub path: String,
    pub rows: u64,
    /// blake3 of the file as written.
    pub file_hash: String,
}

/// Drift of this run's snapshot against the previous run's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drift {
    pub report: String,
    pub previous_run: String,
    pub from_snapshot: String,
    pub significant: u64,
    pub moderate: u64,
}

/// The data-quality report over every ingest run, and the flags raised on this run's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quality {
    pub report: String,
    /// (ingest run, flag name) for each flag on a run this pipeline run ingested.
    pub flags: Vec<(u64, String)>,
}

/// What one pipeline run did, hash by hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The cutoff T.
    pub as_of: Timestamp,
    /// The knowledge time K of the snapshot and the labels.
    pub known_at: Timestamp,
    /// blake3 of the pipeline file's settings (canonical JSON of the parsed file).
    pub config_hash: String,
    pub ingested: Vec<Ingested>,
    pub skipped: Vec<Skipped>,
    /// The log's head after ingesting.
    pub log_head: String,
    pub snapshot: String,
    pub trained: Vec<TrainedModel>,
    /// Model kinds configured but not due for retraining (the latest model is recent enough).
    pub not_due: Vec<ModelKind>,
    pub models: Vec<UsedModel>,
    pub scores: String,
    pub exports: Vec<Exported>,
    pub drift: Option<Drift>,
    pub quality: Quality,
    /// Thresholds the run breached, each said in words.
    pub breaches: Vec<String>,
}

impl RunRecord {
    /// Every artifact the record names, each once, in the order the run made them: the
    /// artifact's parents.
    pub fn artifacts(&self) -> Vec<&str> {
        let mut out: Vec<&str> = vec![&self.snapshot];
        for t in &self.trained {
            out.extend(t.snapshots.iter().map(String::as_str));
            out.push(&t.model);
        }
        out.extend(self.models.iter().map(|m| m.model.as_str()));
        out.push(&self.scores);
        if let Some(d) = &self.drift {
            out.extend([d.previous_run.as_str(), d.from_snapshot.as_str(), d.report.as_str()]);
        }
        out.push(&self.quality.report);
        let mut seen = std::collections::BTreeSet::new();
        out.retain(|h| seen.insert(*h));
        out
    }
}

fn parse_hash(record: &str, field: &'static str, value: &str) -> Result<ArtifactHash, PipelineError> {
    unhex32(value).ok_or_else(|| PipelineError::NotAHash {
        hash: record.to_string(),
        field,
        value: value.to_string(),
    })
}

/// The artifact `record` is stored as.
pub fn artifact(record: &RunRecord) -> Result<NewArtifact, PipelineError> {
    let parents = record
        .artifacts()
        .into_iter()
        .map(|h| parse_hash("(new)", "an artifact", h))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(NewArtifact {
        kind: KIND.into(),
        schema: SCHEMA,
        as_of: record.as_of.micros(),
        parents,
        body: serde_json::to_vec(record)?,
        created_at: time::now().micros(),
        provenance: Vec::new(),
    })
}

/// Stores the record; (hash, newly stored).
pub fn store(store: &Store, record: &RunRecord) -> Result<(ArtifactHash, bool), PipelineError> {
    Ok(store.artifacts().put(artifact(record)?)?)
}

pub fn load(store: &Store, hash: &ArtifactHash) -> Result<RunRecord, PipelineError> {
    let a = artifact::fetch(store, hash, KIND)?;
    Ok(serde_json::from_slice(&a.body)?)
}

/// The stored run of the pipeline file hashed `config_hash` at exactly `as_of`, if any.
pub fn find(
    store: &Store,
    as_of: Timestamp,
    config_hash: &str,
) -> Result<Option<(ArtifactHash, RunRecord)>, PipelineError> {
    for r in store.artifacts().list(KIND, as_of.micros())?.into_iter().rev() {
        if r.as_of != as_of.micros() {
            break;
        }
        let record = load(store, &r.hash)?;
        if record.config_hash == config_hash {
            return Ok(Some((r.hash, record)));
        }
    }
    Ok(None)
}

/// The latest stored run (of any pipeline file) whose T is before `as_of`: the one whose
/// snapshot drift is measured against.
pub fn previous(store: &Store, as_of: Timestamp) -> Result<Option<(ArtifactHash, RunRecord)>, PipelineError> {
    let before = as_of.micros().saturating_sub(1);
    match store.artifacts().latest(KIND, before)? {
        Some(r) => Ok(Some((r.hash, load(store, &r.hash)?))),
        None => Ok(None),
    }
}

/// `hash` of the record's snapshot, as bytes.
pub fn snapshot_hash(hash: &ArtifactHash, record: &RunRecord) -> Result<ArtifactHash, PipelineError> {
    parse_hash(&hex(hash), "snapshot", &record.snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(b: u8) -> String {
        hex(&[b; 32])
    }

    fn record(as_of: i64, config: &str) -> RunRecord {
        RunRecord {
            as_of: Timestamp::from_micros(as_of),
            known_at: Timestamp::from_micros(as_of),
            config_hash: config.into(),
            ingested: Vec::new(),
            skipped: Vec::new(),
            log_head: h(0),
            snapshot: h(1),
            trained: vec![TrainedModel {
                kind: ModelKind::Churn,
                model: h(2),
                snapshots: vec![h(3), h(1)],
                new: true,
            }],
            not_due: vec![ModelKind::Clv],
            models: vec![UsedModel {
                kind: ModelKind::Churn,
                model: h(2),
                rule: "latest-trained".into(),
            }],
            scores: h(4),
            exports: Vec::new(),
            drift: None,
            quality: Quality {
                report: h(5),
                flags: Vec::new(),
            },
            breaches: Vec::new(),
        }
    }

    #[test]
    fn the_parents_are_every_named_artifact_once_in_order() {
        let r = record(10, "c");
        let want: Vec<String> = [1, 3, 2, 4, 5].map(h).to_vec();
        assert_eq!(r.artifacts(), want.iter().map(String::as_str).collect::<Vec<_>>());
        let a = artifact(&r).expect("artifact");
        assert_eq!(a.parents, [1u8, 3, 2, 4, 5].map(|b| [b; 32]).to_vec());
        // The body is a pure function of the record.
        assert_eq!(a.body, artifact(&r.clone()).expect("again").body);
    }

    #[test]
    fn a_run_is_found_by_its_t_and_config_hash_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).expect("store");
        let (first, new) = store(&s, &record(10, "a")).expect("store");
        assert!(new);
        store(&s, &record(20, "a")).expect("store");
        store(&s, &record(20, "b")).expect("store");
        assert_eq!(
            find(&s, Timestamp::from_micros(10), "a").expect("find").map(|f| f.0),
            Some(first)
        );
        assert!(find(&s, Timestamp::from_micros(10), "b").expect("find").is_none());
        assert!(find(&s, Timestamp::from_micros(15), "a").expect("find").is_none());
        let (_, found) = find(&s, Timestamp::from_micros(20), "b")
            .expect("find")
            .expect("b at 20");
        assert_eq!(found.config_hash, "b");
        assert_eq!(
            previous(&s, Timestamp::from_micros(20)).expect("prev").map(|p| p.0),
            Some(first)
        );
        assert!(previous(&s, Timestamp::from_micros(10)).expect("prev").is_none());
    }
}
