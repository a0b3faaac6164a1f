//! The "Customer Health Overview" dashboard: one server-rendered HTML page with inline SVG
//! charts and no external resources (the network may be closed).
//!
//! [`gather`] reads what the page shows from the store as of a time into plain data
//! ([`DashboardData`]); [`render()`] (in `render.rs`, maud templates) is a pure function of that
//! data, so the page can be tested without a server. [`routes`] serves it; a browser signs in
//! through [`sign_in`] (no token ever goes in a URL).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use cis_storage::{hex, ArtifactHash, Store};
use serde::Deserialize;

use crate::api::{authorize, bearer, blocking, metrics, AppError, AppState, ExtraRoutes};

use cis_core::time::{self, Timestamp};
use cis_ingest::records;
use cis_models::card::{self, CardMetrics};
use cis_models::promotion::{stage_name, Record};
use cis_models::scores::{self, ScoreSet};
use cis_models::ModelError;
use cis_ops::monitor::drift::{DriftError, DriftReport};
use cis_ops::monitor::quality::{self, QualityError, QualityReport};

mod render;
pub mod sign_in;

pub use render::render;

/// At most this many score runs are drawn in the risk trend.
const TREND_RUNS: usize = 12;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DashboardError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Quality(#[from] QualityError),
    #[error(transparent)]
    Drift(#[from] DriftError),
    #[error(transparent)]
    Storage(#[from] cis_storage::StorageError),
    /// A thread panicked while it held the memo of mean risks.
    #[error("dashboard memo poisoned")]
    Poisoned,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DashboardData {
    pub as_of: Timestamp,
    /// The latest score run as of T: (hash, scores).
    pub latest: Option<(String, ScoreSet)>,
    /// (as-of, mean risk) of the score runs up to T, oldest first.
    pub trend: Vec<(Timestamp, f64)>,
    /// Every ingest run and event-day, flagged with the default rules.
    pub quality: QualityReport,
    /// PSI per feature between the latest two snapshots as of T.
    pub drift: Option<Arc<DriftReport>>,
    /// The models behind the latest score run, from their cards.
    pub models: Vec<ModelSummary>,
}

/// What the Models section shows of one model: from its card (`cis models show --json`).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSummary {
    pub kind: &'static str,
    pub hash: String,
    pub method: String,
    pub as_of: String,
    /// The stage it held at the dashboard's T (`production`, `staging`, or `none`).
    pub stage: &'static str,
    /// (what, value) of its headline metrics.
    pub measures: Vec<(String, String)>,
    /// Churn: the features with the largest standardised coefficients, signed (gbt: the largest
    /// shares of the trees' split gain).
    pub drivers: Vec<(String, f64)>,
}

/// The strongest drivers the section lists.
const DRIVERS: usize = 5;

fn summary(store: &Store, hash: &str, stage: &'static str) -> Result<Option<ModelSummary>, DashboardError> {
    let Some(h) = cis_storage::unhex32(hash) else {
        return Ok(None);
    };
    let (stored, model) = cis_models::load(store, &h)?;
    let card = card::card(store, &stored, model, None)?;
    let measures = match &card.metrics {
        CardMetrics::Churn { train, validation, .. } => vec![
            ("validation ROC AUC".to_string(), format!("{:.3}", validation.roc_auc)),
            ("validation log loss".to_string(), format!("{:.3}", validation.log_loss)),
            ("training rows".to_string(), train.rows.to_string()),
        ],
        CardMetrics::Clv {
            customers_fitted,
            repeat_customers_fitted,
        } => vec![
            ("customers fitted".to_string(), customers_fitted.to_string()),
            ("repeat customers".to_string(), repeat_customers_fitted.to_string()),
        ],
        CardMetrics::Segments { k, silhouette, .. } => vec![
            ("segments".to_string(), k.to_string()),
            ("silhouette".to_string(), format!("{silhouette:.3}")),
        ],
        CardMetrics::Embedding { dims, explained, .. } => vec![
            ("dimensions".to_string(), dims.to_string()),
            ("variance explained".to_string(), format!("{:.1}%", 100.0 * explained)),
        ],
    };
    Ok(Some(ModelSummary {
        kind: card.kind,
        hash: card.hash,
        method: card.method,
        as_of: card.as_of,
        stage,
        measures,
        drivers: card
            .feature_importance
            .iter()
            .take(DRIVERS)
            .filter_map(|i| Some((i.feature.clone(), i.coefficient.or(i.gain_share)?)))
            .collect(),
    }))
}

/// A customer's risk: the churn probability, or 1 − P(alive) when no churn model scored it.
fn risk(r: &scores::ScoreRow) -> Option<f64> {
    r.churn_probability.or(r.p_alive.map(|p| 1.0 - p))
}

/// Mean risk of each score run of a store, by artifact hash (a store companion: a hash names
/// one content only within its store). Artifacts are immutable while a server holds the store,
/// so an entry never goes stale; without it every page load re-parsed up to [`TREND_RUNS`]
/// whole score sets.
#[derive(Default)]
struct MeanRisks(Mutex<HashMap<ArtifactHash, Option<f64>>>);

fn mean_risk(set: &ScoreSet) -> Option<f64> {
    let risks: Vec<f64> = set.rows.iter().filter_map(risk).collect();
    (!risks.is_empty()).then(|| risks.iter().sum::<f64>() / risks.len() as f64)
}

pub fn gather(store: &Store, as_of: Timestamp) -> Result<DashboardData, DashboardError> {
    let refs = store.artifacts().list(scores::KIND, as_of.micros())?;
    let mut trend = Vec::new();
    let mut latest = None;
    let memo = &store.companion::<MeanRisks>().0;
    for (i, r) in refs.iter().enumerate().skip(refs.len().saturating_sub(TREND_RUNS)) {
        let is_latest = i + 1 == refs.len();
        let known = memo.lock().map_err(|_| DashboardError::Poisoned)?.get(&r.hash).copied();
        let mean = match (known, is_latest) {
            (Some(mean), false) => mean,
            _ => {
                let (_, set) = scores::load_scores(store, &r.hash)?;
                let mean = mean_risk(&set);
                memo.lock().map_err(|_| DashboardError::Poisoned)?.insert(r.hash, mean);
                if is_latest {
                    latest = Some((hex(&r.hash), set));
                }
                mean
            }
        };
        if let Some(m) = mean {
            trend.push((Timestamp::from_micros(r.as_of), m));
        }
    }
    let runs = records::runs(store).map_err(QualityError::from)?;
    let mut models = Vec::new();
    if let Some((_, set)) = &latest {
        let record = Record::read(store)?;
        for (_, hash) in &set.models {
            let stage = stage_name(record.stage_of(hash, as_of));
            models.extend(summary(store, hash, stage)?);
        }
    }
    Ok(DashboardData {
        as_of,
        latest,
        trend,
        quality: quality::build(&runs, &quality::Filter::default(), &quality::Rules::default())?,
        drift: metrics::latest_drift(store, as_of)?,
        models,
    })
}

#[derive(Debug, Deserialize)]
pub struct DashboardQuery {
    /// A date or RFC 3339 time; default now.
    pub as_of: Option<String>,
    /// Refused when present: a URL is kept in history, logs and `Referer` headers, so it must
    /// never carry a token (old `?token=` links get a clear answer instead of a silent pass).
    pub token: Option<String>,
}

/// `GET /dashboard[?as_of=…]` with `Authorization: Bearer <token>` or a session cookie;
/// `POST /dashboard/session` signs in, `POST /dashboard/sign-out` signs out ([`sign_in`]).
pub fn routes() -> ExtraRoutes {
    ExtraRoutes {
        open: Router::new()
            .route("/dashboard", get(page))
            .route(sign_in::SIGN_IN, post(sign_in::sign_in))
            .route(sign_in::SIGN_OUT, post(sign_in::sign_out)),
        protected: Router::new(),
    }
}

/// The page for a bearer header (checked like the API's) or a live session; the sign-in
/// form for a browser without either.
async fn page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<DashboardQuery>,
) -> Result<Response, AppError> {
    if q.token.is_some() {
        return Err(AppError::param(
            "token",
            "a token never goes in a URL: sign in at /dashboard or send Authorization: Bearer <token>",
        ));
    }
    if headers.contains_key(header::AUTHORIZATION) {
        authorize(&state, bearer(&headers)?).await?;
    } else if let Some(refused) = sign_in::require_session(&state, &headers).await? {
        return Ok(refused);
    }
    let as_of = match q.as_of.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => time::parse_timestamp(s).map_err(|e| AppError::param("as_of", e.to_string()))?,
        None => time::now(),
    };
    let data = blocking(&state, move |s| gather(&s.store, as_of).map_err(AppError::internal)).await?;
    Ok(Html(render(&data)).into_response())
}
