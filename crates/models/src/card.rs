//! A model's card: what it is, what it learned from, how well it did and where it comes from,
//! as one JSON document (`cis models show HASH --json`). The layout is stable: fields are only
//! ever added; a change to what a field means raises [`CARD_SCHEMA`]. README ("Model cards")
//! documents every field.

use serde::Serialize;

use cis_core::time::{self, Timestamp};
use cis_core::Choice;
use cis_storage::{hex, Store, StoredArtifact};

use crate::churn::{ChurnMethod, ChurnSolver, ForwardValidation, Learned};
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
    /// `churn`, `clv` or `segments`.
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
    /// Churn: each feature's coefficient on the standardised feature, largest magnitude first
    /// (`--method survival`: its Cox coefficient, the log hazard ratio of the next order, so a
    /// positive one lowers churn). Empty for the other kinds.
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
        /// `--method survival` only: the Cox model's concordance and integrated Brier score.
        #[serde(skip_serializing_if = "Option::is_none")]
        survival: Option<Box<SurvivalCard>>,
    },
    Clv {
        customers_fitted: usize,
        repeat_customers_fitted: usize,
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
    pub coefficient: f64,
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
            let cox = m.learned.as_ref().map(|Learned::Survival(cox)| cox);
            let mut importance: Vec<Importance> = m
                .features
                .iter()
                .zip(cox.map_or(&m.coefficients, |c| &c.coefficients))
                .map(|(feature, c)| Importance {
                    feature: feature.clone(),
                    coefficient: *c,
                })
                .collect();
            importance.sort_by(|a, b| b.coefficient.abs().total_cmp(&a.coefficient.abs()));
            let method = match &m.params.method {
                ChurnMethod::Logistic => format!("logistic regression, L2 {} ({solver})", m.params.l2),
                ChurnMethod::Survival(p) => format!(
                    "Cox proportional hazards of the time to the next order (Efron ties, Breslow baseline), penalizer {}",
                    p.penalizer
                ),
            };
            (
                format!(
                    "{method}{}",
                    m.params
                        .clv_features
                        .as_ref()
                        .map_or_else(String::new, |c| format!(", with {} inputs", c.purchase_model.name()))
                ),
                m.definition_set.clone(),
                m.cutoffs.iter().map(|t| time::format(*t)).collect(),
                Some((time::format(m.labels_known_at), m.horizon_days)),
                CardMetrics::Churn {
                    train: m.train.clone(),
                    validation: m.validation.clone(),
                    forward: m.forward.clone(),
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
