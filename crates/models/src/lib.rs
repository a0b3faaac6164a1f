//! Models fitted on feature snapshots, stored as immutable artifacts with lineage.
//!
//! A model artifact's body is the JSON of [`Model`] (struct fields in a fixed order, no maps,
//! floats in serde_json's shortest round-trip form, so the same model always has the same
//! bytes); its parents are the snapshots it was trained on; its as-of is the latest time
//! whose information it contains (for churn, when its labels were known).

pub mod card;
pub mod churn;
pub mod clv;
pub mod embedding;
pub mod gbt;
pub mod lifetime;
pub mod logistic;
pub mod metrics;
pub mod promotion;
pub mod scores;
pub mod segments;
pub mod standardise;
pub mod survival;
pub mod train;

use cis_storage::{hex, ArtifactHash, NewArtifact, StorageError, Store, StoredArtifact};
use serde::{Deserialize, Serialize};

use cis_core::artifact::ArtifactError;
use cis_core::time::{self, Timestamp};
use cis_features::labels::LabelError;
use cis_features::snapshot::SnapshotError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    #[error("invalid hyperparameter: {0}")]
    Param(#[from] ParamError),
    #[error("the training set is empty")]
    EmptyTrainingSet,
    #[error("the {side} set ({rows} rows) holds only one class: churn cannot be learned or measured")]
    OneClass { side: &'static str, rows: usize },
    #[error("fitting failed: {0}")]
    Fit(#[from] FitError),
    #[error("artifact {hash} is a {kind}, not a model")]
    NotAModel { hash: String, kind: String },
    #[error("the snapshot lacks feature {0} that this model needs")]
    MissingFeature(String),
    #[error(transparent)]
    Metrics(#[from] metrics::MetricsError),
    #[error(transparent)]
    Clv(#[from] clv::ClvError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Label(#[from] LabelError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("model encoding: {0}")]
    Json(#[from] serde_json::Error),
    #[error("promotion record {seq} is malformed: {reason}")]
    PromotionRecord { seq: u64, reason: String },
}

/// An artifact that cannot be named or fetched is reported as the snapshot layer reports it, so a
/// missing model reads the same whichever layer looked it up.
impl From<ArtifactError> for ModelError {
    fn from(e: ArtifactError) -> Self {
        ModelError::Snapshot(SnapshotError::Artifact(e))
    }
}

/// A hyperparameter or argument out of its range, with the value given.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ParamError {
    #[error("validation share {0} is not in (0, 1)")]
    ValidationShare(f64),
    #[error("l2 penalty {0} must be finite and ≥ 0")]
    L2Penalty(f64),
    #[error("the survival penalizer {0} must be finite and ≥ 0")]
    Penalizer(f64),
    #[error("max_iterations must be at least 1")]
    MaxIterations,
    #[error("monthly discount {0} must be finite and > -1")]
    MonthlyDiscount(f64),
    #[error("the holdout of the purchase-model check must be at least 1 week")]
    HoldoutWeeks,
    #[error("k must be within 2..=20 (got {lo}..={hi})")]
    SegmentCount { lo: usize, hi: usize },
    #[error("segments on an embedding need the embedding model the parameters name, and only then one")]
    SegmentEmbedding,
    #[error("max_iterations ≥ 1 and silhouette_sample ≥ 10 are required")]
    SegmentSearch,
    #[error("HDBSCAN needs min_cluster_size ≥ 2 and min_samples ≥ 1, and no k (got min_cluster_size {min_cluster_size}, min_samples {min_samples})")]
    Hdbscan {
        min_cluster_size: usize,
        min_samples: usize,
    },
    #[error("no model to score with: none is given and none was trained as of {}", time::format(*as_of))]
    NoModel { as_of: Timestamp },
    #[error("{0:?} models are not scored: export them with `cis snapshot export --embedding`, or segment on them")]
    NotScored(ModelKind),
    #[error("two {0:?} models given; score with one of each kind")]
    TwoOfAKind(ModelKind),
    #[error("CLV features need a fixed BG/NBD or MBG/NBD purchase model (P(no purchase) has no closed form here for Pareto/NBD, and a forward choice needs an earlier snapshot scoring does not have)")]
    ClvFeatures,
    #[error("an embedding keeps 1 to {features} dimensions (the snapshot's features), not {dims}")]
    EmbeddingDims { dims: usize, features: usize },
    #[error("gbt {name} is {value}; it must be {rule}")]
    Gbt {
        name: &'static str,
        value: f64,
        rule: &'static str,
    },
    #[error("choosing the churn method by forward validation needs two or more cutoffs (the latest is held out) and a candidate")]
    SelectionCutoffs,
    #[error("the forward validation cutoff {} is not after every training cutoff (latest {})", time::format(*validation), time::format(*latest))]
    ForwardCutoff { validation: Timestamp, latest: Timestamp },
}

/// Why a fit did not produce a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FitError {
    #[error("{customers} customers are too few for {segments} segments")]
    TooFewCustomers { customers: usize, segments: usize },
    #[error("no k was tried")]
    NoSegmentCount,
    #[error("{customers} customers are more than HDBSCAN's limit of {limit} (it is quadratic in rows); use KMeans")]
    TooManyForHdbscan { customers: usize, limit: usize },
    #[error("HDBSCAN found no cluster among {customers} customers (all noise); lower min_cluster_size")]
    AllNoise { customers: usize },
    #[error(transparent)]
    Hdbscan(#[from] hdbscan::HdbscanError),
    #[error("{0} is not finite")]
    NotFinite(&'static str),
    #[error(transparent)]
    Linalg(#[from] linfa_linalg::LinalgError),
    #[error(transparent)]
    Shape(#[from] ndarray::ShapeError),
    #[error(transparent)]
    KMeans(#[from] linfa_clustering::KMeansError),
    #[error(transparent)]
    Linfa(#[from] linfa::Error),
    #[error(transparent)]
    Logistic(#[from] linfa_logistic::error::Error),
    #[error(transparent)]
    Newton(#[from] logistic::NewtonError),
    #[error(transparent)]
    Gbt(#[from] gbt::GbtError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    Churn,
    Clv,
    Segments,
    /// Behaviour embeddings ([`embedding`]): not scored, read by exports and segmentation.
    Embedding,
}

impl ModelKind {
    pub const ALL: [ModelKind; 4] = [
        ModelKind::Churn,
        ModelKind::Clv,
        ModelKind::Segments,
        ModelKind::Embedding,
    ];
    /// The kinds a score run uses, promotes and reports.
    pub const SCORED: [ModelKind; 3] = [ModelKind::Churn, ModelKind::Clv, ModelKind::Segments];

    pub fn artifact_kind(self) -> &'static str {
        match self {
            ModelKind::Churn => "model/churn",
            ModelKind::Clv => "model/clv",
            ModelKind::Segments => "model/segments",
            ModelKind::Embedding => "model/embedding",
        }
    }

    pub fn of_artifact(kind: &str) -> Option<ModelKind> {
        Self::ALL.into_iter().find(|k| k.artifact_kind() == kind)
    }
}

impl cis_core::Choice for ModelKind {
    const CHOICES: &'static [ModelKind] = &ModelKind::ALL;

    fn choice_name(self) -> &'static str {
        match self {
            ModelKind::Churn => "churn",
            ModelKind::Clv => "clv",
            ModelKind::Segments => "segments",
            ModelKind::Embedding => "embedding",
        }
    }
}

pub const SCHEMA: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "model", rename_all = "lowercase")]
pub enum Model {
    Churn(churn::ChurnModel),
    Clv(lifetime::ClvModel),
    Segments(segments::SegmentModel),
    Embedding(embedding::EmbeddingModel),
}

impl Model {
    pub fn kind(&self) -> ModelKind {
        match self {
            Model::Churn(_) => ModelKind::Churn,
            Model::Clv(_) => ModelKind::Clv,
            Model::Segments(_) => ModelKind::Segments,
            Model::Embedding(_) => ModelKind::Embedding,
        }
    }
}

/// A model with what is needed to store it: its as-of and the artifacts it learned from.
#[derive(Debug, Clone, PartialEq)]
pub struct Trained {
    pub model: Model,
    pub as_of: Timestamp,
    /// Snapshots, and for a churn model with CLV features also the CLV models that fed it.
    pub parents: Vec<ArtifactHash>,
    /// Models among `parents` made by the same training (a churn model's CLV inputs), stored with it.
    pub feeders: Vec<Trained>,
}

impl Trained {
    pub fn artifact(&self) -> Result<NewArtifact, ModelError> {
        Ok(NewArtifact {
            kind: self.model.kind().artifact_kind().into(),
            schema: SCHEMA,
            as_of: self.as_of.micros(),
            parents: self.parents.clone(),
            body: serde_json::to_vec(&self.model)?,
            created_at: time::now().micros(),
            provenance: Vec::new(),
        })
    }

    /// Stores the model, after the models that fed it (so no parent is missing); returns its hash
    /// and whether it was new.
    pub fn store(&self, store: &Store) -> Result<(ArtifactHash, bool), ModelError> {
        for feeder in &self.feeders {
            feeder.store(store)?;
        }
        Ok(store.artifacts().put(self.artifact()?)?)
    }
}

pub fn load(store: &Store, hash: &ArtifactHash) -> Result<(StoredArtifact, Model), ModelError> {
    let a = store
        .artifacts()
        .get(hash)?
        .ok_or_else(|| SnapshotError::Artifact(ArtifactError::NotFound(hex(hash))))?;
    if ModelKind::of_artifact(&a.kind).is_none() {
        return Err(ModelError::NotAModel {
            hash: hex(hash),
            kind: a.kind,
        });
    }
    let model = serde_json::from_slice(&a.body)?;
    Ok((a, model))
}

/// Columns of `wanted` in a snapshot's feature list.
pub fn columns(snapshot_features: &[String], wanted: &[String]) -> Result<Vec<usize>, ModelError> {
    wanted
        .iter()
        .map(|f| {
            snapshot_features
                .iter()
                .position(|g| g == f)
                .ok_or_else(|| ModelError::MissingFeature(f.clone()))
        })
        .collect()
}
