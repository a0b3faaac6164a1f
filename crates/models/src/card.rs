//! A model's card: what it is, what it learned from, how well it did and where it comes from,
//! as one JSON document (`cis models show HASH --json`). The layout is stable: fields are only
//! ever added; a change to what a field means raises [`CARD_SCHEMA`]. README ("Model cards")
//! documents every field.

use serde::Serialize;

use cis_core::time::{self, Timestamp};
use cis_core::Choice;
use cis_storage::{hex, Store, StoredArtifact};

use crate::churn::{ChurnMethod, ChurnSolver, ForwardValidation, Learned, Selection};
use crate::lifetime::ConditionalExpectations;
use crate::metrics::Metrics;
use crate::segments::SegmentMethod;
use crate::survival::SurvivalMetrics;
use crate::{Model, ModelError};

pub const CARD_SCHEMA: u32 = 1;

#[derive(Debug, Clone, Serialize)]
pub struct ModelCard {
    pub card_schema: u32,
    pub hash: String,
    /// `churn`, `clv`, `segments` or `embedding`.
    pub kind: &'static str,
    pub method: String,
    pub as_of: String,
    pub created_at: String,
    pub definition_set: String,
    pub learned_from: LearnedFrom,
    /// The model's parents (snapshots, and the CLV models that fed a churn model), each snapshot
    /// with the log prefix it was computed from.
    pub lineage: Vec<Parent>,
    pub metrics: CardMetrics,
    /// Churn: each feature's coefficient on the standardised feature (logistic; `--method
    /// survival`: its Cox coefficient, the log hazard ratio of the next order, so a positive one
    /// lowers churn) or share of the trees' split gain (gbt); embedding: each feature's loading on
    /// the first dimension (as a coefficient); largest magnitude first. Empty for the other kinds.
    pub feature_importance: Vec<Importance>,
    /// CLV: mean holdout repeat purchases by calibration frequency, predicted vs actual, when
    /// the log holds the holdout (computed from the log, not stored).
    pub conditional_expectations: Option<ConditionalExpectations>,
    /// The model as stored (coefficients, standardisation, parameters…).
    pub model: Model,
}

#[derive(Debug, Clone, Serialize)]
pub struct LearnedFrom {
    /// The parents that are snapshots (training cutoffs, then a churn model's forward validation
    /// cutoff).
    pub snapshots: Vec<String>,
    /// Churn with CLV features: the CLV models whose outputs were inputs, one per snapshot above,
    /// in the same order. Empty otherwise.
    pub models: Vec<String>,
    /// The training cutoffs (churn: every labelled cutoff; otherwise the snapshot's as-of).
    pub cutoffs: Vec<String>,
    /// Churn only: when the labels were known, and their horizon.
    pub labels_known_at: Option<String>,
    pub horizon_days: Option<u32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Parent {
    pub hash: String,
    pub kind: String,
    pub as_of: String,
    /// The log batch and head the snapshot was computed from (absent for an artifact that does
    /// not record them).
    pub log_batch: Option<u64>,
    pub log_head: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "of", rename_all = "lowercase")]
pub enum CardMetrics {
    /// On the training rows, on the customer-disjoint validation split, and (`forward`, null when
    /// the model has none) on a later cutoff it did not learn from.
    Churn {
        train: Metrics,
        validation: Metrics,
        forward: Option<ForwardValidation>,
        /// With the method chosen by forward validation: the held-out cutoff, each candidate's
        /// parameters and metrics there, and which was chosen (absent otherwise).
        #[serde(skip_serializing_if = "Option::is_none")]
        selection: Option<Box<Selection>>,
        /// `--method survival` only: the Cox model's concordance and integrated Brier score.
        #[serde(skip_serializing_if = "Option::is_none")]
        survival: Option<Box<SurvivalCard>>,
    },
    Clv {
        customers_fitted: usize,
        repeat_customers_fitted: usize,
    },
    Embedding {
        dims: usize,
        customers: usize,
        /// Each dimension's share of the standardised features' variance, and their sum.
        explained_variance_ratio: Vec<f64>,
        explained: f64,
    },
    Segments {
        k: usize,
        silhouette: f64,
        silhouette_by_k: Vec<(usize, f64)>,
        /// HDBSCAN only: its parameters, and the share of customers it left unsegmented.
        #[serde(skip_serializing_if = "Option::is_none")]
        hdbscan: Option<HdbscanCard>,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct SurvivalCard {
    pub train: SurvivalMetrics,
    pub validation: SurvivalMetrics,
    /// Breslow's baseline cumulative hazard at the horizon.
    pub baseline_cumulative_hazard: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct HdbscanCard {
    pub min_cluster_size: usize,
    pub min_samples: usize,
    pub clusters: usize,
    pub noise_share: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Importance {
    pub feature: String,
    /// Logistic churn: the signed coefficient on the standardised feature.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coefficient: Option<f64>,
    /// GBT churn: the feature's share of the total split gain of every tree (≥ 0, summing to 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gain_share: Option<f64>,
}

impl Importance {
    fn magnitude(&self) -> f64 {
        self.coefficient.or(self.gain_share).map_or(0.0, f64::abs)
    }
}

/// One [`Importance`] per feature, `of` making each from its value.
fn importances(features: &[String], values: &[f64], of: impl Fn(String, f64) -> Importance) -> Vec<Importance> {
    features.iter().zip(values).map(|(f, v)| of(f.clone(), *v)).collect()
}

/// Signed weights (coefficients, loadings) as importances, in feature order.
fn coefficients(features: &[String], weights: &[f64]) -> Vec<Importance> {
    importances(features, weights, |feature, c| Importance {
        feature,
        coefficient: Some(c),
        gain_share: None,
    })
}

/// The snapshot provenance fields a card reads (written by `cis_features::snapshot`).
#[derive(serde::Deserialize)]
struct LogPrefix {
    log_batch: u64,
    log_head: String,
}

/// The card of stored model `stored` (decoded as `model`); `expectations` as computed by the
/// caller for a CLV model (it needs the log after the model's as-of).
pub fn card(
    store: &Store,
    stored: &StoredArtifact,
    model: Model,
    expectations: Option<ConditionalExpectations>,
) -> Result<ModelCard, ModelError> {
    let mut lineage = Vec::with_capacity(stored.parents.len());
    for hash in &stored.parents {
        let parent = store.artifacts().get(hash)?;
        let prefix = parent
            .as_ref()
            .and_then(|p| serde_json::from_slice::<LogPrefix>(&p.provenance).ok());
        lineage.push(Parent {
            hash: hex(hash),
            kind: parent.as_ref().map_or_else(|| "missing".into(), |p| p.kind.clone()),
            as_of: parent.as_ref().map_or_else(String::new, |p| stamp(p.as_of)),
            log_batch: prefix.as_ref().map(|p| p.log_batch),
            log_head: prefix.map(|p| p.log_head),
        });
    }
    let (snapshots, models): (Vec<&Parent>, Vec<&Parent>) = lineage
        .iter()
        .partition(|p| crate::ModelKind::of_artifact(&p.kind).is_none());
    let hashes = |ps: Vec<&Parent>| -> Vec<String> { ps.into_iter().map(|p| p.hash.clone()).collect() };
    let (snapshots, models) = (hashes(snapshots), hashes(models));
    let (method, definition_set, cutoffs, labels, metrics, feature_importance) = match &model {
        Model::Churn(m) => {
            let solver = match m.params.solver {
                ChurnSolver::Newton => "Newton",
                ChurnSolver::Lbfgs => "L-BFGS",
            };
            let cox = match &m.learned {
                Some(Learned::Survival(cox)) => Some(cox),
                _ => None,
            };
            let (learner, mut importance) = match (&m.params.method, &m.learned) {
                (ChurnMethod::Gbt(p), Some(Learned::Gbt(e))) => (
                    format!(
                        "gradient-boosted trees: {} trees of up to {} leaves (deepest {}), learning rate {}, min {} rows a leaf",
                        e.trees.len(),
                        p.max_leaf_nodes,
                        e.depth(),
                        p.learning_rate,
                        p.min_samples_leaf
                    ),
                    importances(&m.features, &e.importance, |feature, g| Importance {
                        feature,
                        coefficient: None,
                        gain_share: Some(g),
                    }),
                ),
                (ChurnMethod::Survival(p), Some(Learned::Survival(c))) => (
                    format!(
                        "Cox proportional hazards of the time to the next order (Efron ties, Breslow baseline), penalizer {}",
                        p.penalizer
                    ),
                    coefficients(&m.features, &c.coefficients),
                ),
                _ => (
                    format!("logistic regression, L2 {} ({solver})", m.params.l2),
                    coefficients(&m.features, &m.coefficients),
                ),
            };
            importance.sort_by(|a, b| b.magnitude().total_cmp(&a.magnitude()));
            (
                format!(
                    "{learner}{}{}",
                    m.params
                        .clv_features
                        .as_ref()
                        .map_or_else(String::new, |c| format!(", with {} inputs", c.purchase_model.name())),
                    m.selection.as_ref().map_or_else(String::new, |s| format!(
                        "; chosen by forward validation on {} among {}",
                        time::format(s.cutoff),
                        s.candidates
                            .iter()
                            .map(|c| c.params.summary())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                ),
                m.definition_set.clone(),
                m.cutoffs.iter().map(|t| time::format(*t)).collect(),
                Some((time::format(m.labels_known_at), m.horizon_days)),
                CardMetrics::Churn {
                    train: m.train.clone(),
                    validation: m.validation.clone(),
                    forward: m.forward.clone(),
                    selection: m.selection.clone(),
                    survival: cox.map(|c| {
                        Box::new(SurvivalCard {
                            train: c.train.clone(),
                            validation: c.validation.clone(),
                            baseline_cumulative_hazard: c.baseline_at_horizon(),
                        })
                    }),
                },
                importance,
            )
        }
        Model::Clv(m) => (
            format!("{} + Gamma-Gamma", m.purchases.kind().name()),
            m.definition_set.clone(),
            lineage.first().map(|p| p.as_of.clone()).into_iter().collect(),
            None,
            CardMetrics::Clv {
                customers_fitted: m.customers_fitted,
                repeat_customers_fitted: m.repeat_customers_fitted,
            },
            Vec::new(),
        ),
        Model::Segments(m) => (
            m.method_summary(),
            m.definition_set.clone(),
            lineage.iter().map(|p| p.as_of.clone()).collect(),
            None,
            CardMetrics::Segments {
                k: m.k,
                silhouette: m.silhouette,
                silhouette_by_k: m.silhouette_by_k.clone(),
                hdbscan: match m.params.method {
                    SegmentMethod::Kmeans => None,
                    SegmentMethod::Hdbscan {
                        min_cluster_size,
                        min_samples,
                    } => Some(HdbscanCard {
                        min_cluster_size,
                        min_samples,
                        clusters: m.k,
                        noise_share: m.noise_share(),
                    }),
                },
            },
            Vec::new(),
        ),
        Model::Embedding(m) => (
            format!(
                "principal components of {} standardised features, {} dimensions",
                m.features.len(),
                m.params.dims
            ),
            m.definition_set.clone(),
            lineage.iter().map(|p| p.as_of.clone()).collect(),
            None,
            CardMetrics::Embedding {
                dims: m.params.dims,
                customers: m.customers,
                explained_variance_ratio: m.explained_variance_ratio.clone(),
                explained: m.explained(),
            },
            // Loadings of the first dimension: what the main axis of behaviour is made of.
            {
                let mut loadings = coefficients(&m.features, m.components.first().map_or(&[][..], |c| c.as_slice()));
                loadings.sort_by(|a, b| b.magnitude().total_cmp(&a.magnitude()));
                loadings
            },
        ),
    };
    Ok(ModelCard {
        card_schema: CARD_SCHEMA,
        hash: hex(&stored.hash),
        kind: model.kind().choice_name(),
        method,
        as_of: stamp(stored.as_of),
        created_at: stamp(stored.created_at),
        definition_set,
        learned_from: LearnedFrom {
            snapshots,
            models,
            cutoffs,
            labels_known_at: labels.as_ref().map(|(k, _)| k.clone()),
            horizon_days: labels.map(|(_, h)| h),
        },
        lineage,
        metrics,
        feature_importance,
        conditional_expectations: expectations,
        model,
    })
}

fn stamp(micros: i64) -> String {
    time::format(Timestamp::from_micros(micros))
}
