//! Model decay: realised churn metrics of score runs whose labels have matured.
//!
//! A score run at T made by a churn model with horizon H predicts "no order in (T, T + H]".
//! Once the knowledge time K reaches T + H those labels exist ([`churn_labels`] refuses them
//! earlier), and the run's probabilities can be scored against them by the same
//! [`evaluate`] training used: ROC AUC, log loss, Brier score, calibration. Each measured run
//! becomes a `decay-report` artifact (parents: the score run and the model; as-of: K) holding
//! the realised metrics beside the model's training and validation metrics, and the log prefix
//! (batch, head) the labels were read from. Runs whose labels have not matured at K are listed
//! as pending with the date they mature; they are never scored early.
//!
//! The default K is the latest `recorded_at` in the log: what the store knows. The wall clock
//! would claim the silence after a feed stopped as "no order", labelling everyone churned.

use cis_storage::{hex, ArtifactHash, NewArtifact, StorageError, Store};
use serde::{Deserialize, Serialize};

use cis_core::time::{self, Timestamp};
use cis_features::labels::{churn_labels, matures_at, LabelError};
use cis_models::churn::ChurnModel;
use cis_models::metrics::{evaluate, Metrics};
use cis_models::scores::{self, ScoreSet};
use cis_models::{load, Model, ModelError, ModelKind};

pub const KIND: &str = "decay-report";
pub const SCHEMA: u32 = 1;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecayError {
    #[error(
        "no churn score run has matured labels as known at {}{}",
        time::format(*known_at),
        // No pending run: nothing more to say.
        next.map(|n| format!("; the first pending run matures at {}", time::format(n))).unwrap_or_default()
    )]
    NothingMatured {
        known_at: Timestamp,
        next: Option<Timestamp>,
    },
    #[error("no score run was made with churn model {0}")]
    NoRuns(String),
    #[error("model {hash} is a {kind:?} model; decay is measured for churn models")]
    NotChurn { hash: String, kind: ModelKind },
    #[error("the log is empty: there is nothing to take labels from")]
    EmptyLog,
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Label(#[from] LabelError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("decay report encoding: {0}")]
    Json(#[from] serde_json::Error),
}

/// The body of a `decay-report` artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecayReport {
    pub scores: String,
    pub model: String,
    pub scored_as_of: Timestamp,
    pub horizon_days: u32,
    pub matured_at: Timestamp,
    pub labels_known_at: Timestamp,
    /// The log prefix the labels were read from.
    pub log_batch: u64,
    pub log_head: String,
    pub realised: Metrics,
    pub training: Metrics,
    pub validation: Metrics,
}

impl DecayReport {
    /// Realised minus validation ROC AUC: negative when the model ranks worse than it did.
    pub fn auc_change(&self) -> f64 {
        self.realised.roc_auc - self.validation.roc_auc
    }
}

/// A score run whose labels do not exist yet at K.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pending {
    pub scores: String,
    pub model: String,
    pub scored_as_of: Timestamp,
    pub matures_at: Timestamp,
}

/// A matured run whose labels cannot measure it (e.g. every customer churned).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Unmeasurable {
    pub scores: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stored {
    pub hash: String,
    pub new: bool,
    pub report: DecayReport,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    pub known_at: Timestamp,
    pub reports: Vec<Stored>,
    pub pending: Vec<Pending>,
    pub unmeasurable: Vec<Unmeasurable>,
}

/// What the store knows: the latest `recorded_at` of any committed event.
pub fn store_known_at(store: &Store) -> Result<Timestamp, DecayError> {
    store
        .log()
        .batches()?
        .iter()
        .map(|b| Timestamp::from_micros(b.max_recorded_at))
        .max()
        .ok_or(DecayError::EmptyLog)
}

fn churn_model(store: &Store, hash: &ArtifactHash) -> Result<ChurnModel, DecayError> {
    match load(store, hash)?.1 {
        Model::Churn(m) => Ok(m),
        other => Err(DecayError::NotChurn {
            hash: hex(hash),
            kind: other.kind(),
        }),
    }
}

/// Predictions and customers of a run, for the rows that have a churn probability.
fn predictions(set: &ScoreSet) -> (Vec<String>, Vec<f64>) {
    set.rows
        .iter()
        .filter_map(|r| r.churn_probability.map(|p| (r.customer_id.clone(), p)))
        .unzip()
}

/// Measures every churn score run (only those made by `model`, if given) whose labels have
/// matured at `known_at`, and stores one report per run. Nothing is stored unless at least one
/// run was measured. `created_at` is the reports' wall-clock stamp (outside their hash).
pub fn measure(
    store: &Store,
    model: Option<&ArtifactHash>,
    known_at: Timestamp,
    created_at: Timestamp,
) -> Result<Outcome, DecayError> {
    let wanted = model.map(|h| churn_model(store, h).map(|_| hex(h))).transpose()?;
    let (log_batch, head) = store.log().head_at(i64::MAX)?;
    let mut runs = Vec::new();
    let mut pending = Vec::new();
    let mut unmeasurable = Vec::new();
    let mut seen = false;
    for r in store.artifacts().list(scores::KIND, i64::MAX)? {
        let (_, set) = scores::load_scores(store, &r.hash)?;
        let Some((_, model_hex)) = set.models.iter().find(|(k, _)| *k == ModelKind::Churn) else {
            continue;
        };
        if wanted.as_ref().is_some_and(|w| w != model_hex) {
            continue;
        }
        seen = true;
        let model_hash = cis_core::artifact::resolve(store, model_hex).map_err(ModelError::from)?;
        let m = churn_model(store, &model_hash)?;
        let matures = matures_at(set.as_of, m.horizon_days);
        if matures > known_at {
            pending.push(Pending {
                scores: hex(&r.hash),
                model: model_hex.clone(),
                scored_as_of: set.as_of,
                matures_at: matures,
            });
            continue;
        }
        let (customers, predicted) = predictions(&set);
        let labels = churn_labels(store, &customers, set.as_of, m.horizon_days, known_at)?;
        let realised = match evaluate(&predicted, &labels) {
            Ok(metrics) => metrics,
            Err(e) => {
                unmeasurable.push(Unmeasurable {
                    scores: hex(&r.hash),
                    reason: e.to_string(),
                });
                continue;
            }
        };
        let report = DecayReport {
            scores: hex(&r.hash),
            model: model_hex.clone(),
            scored_as_of: set.as_of,
            horizon_days: m.horizon_days,
            matured_at: matures,
            labels_known_at: known_at,
            log_batch,
            log_head: hex(&head),
            realised,
            training: m.train,
            validation: m.validation,
        };
        runs.push((r.hash, model_hash, report));
    }
    if let (Some(w), false) = (wanted, seen) {
        return Err(DecayError::NoRuns(w));
    }
    if runs.is_empty() {
        return Err(DecayError::NothingMatured {
            known_at,
            next: pending.iter().map(|p| p.matures_at).min(),
        });
    }
    let mut reports = Vec::new();
    for (scores_hash, model_hash, report) in runs {
        let (hash, new) = store.artifacts().put(NewArtifact {
            kind: KIND.into(),
            schema: SCHEMA,
            as_of: known_at.micros(),
            parents: vec![scores_hash, model_hash],
            body: serde_json::to_vec(&report)?,
            created_at: created_at.micros(),
            provenance: Vec::new(),
        })?;
        tracing::info!(report = %hex(&hash), scores = %report.scores, auc = report.realised.roc_auc, "decay report");
        reports.push(Stored {
            hash: hex(&hash),
            new,
            report,
        });
    }
    Ok(Outcome {
        known_at,
        reports,
        pending,
        unmeasurable,
    })
}
