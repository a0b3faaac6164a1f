//! `GET /artifacts/{hash}` (what an artifact is and where it comes from, never its body; for a
//! model also its card, `cis_models::card`) and `GET /snapshots`.

use std::collections::HashMap;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::Json;
use cis_storage::{hex, ArtifactHash, Store, StoredArtifact};
use serde_json::{json, Value};

use crate::api::error::AppError;
use crate::api::params::Params;
use crate::api::{blocking, AppState};
use cis_core::artifact;
use cis_core::time::{self, Timestamp};
use cis_features::snapshot::{self, Header, Provenance, SnapshotError};
use cis_models::churn::Learned;
use cis_models::metrics::Metrics;
use cis_models::{scores, Model, ModelKind};

/// Artifact kinds whose index is searched to name an artifact's parents.
fn known_kinds() -> Vec<&'static str> {
    let mut k = vec![snapshot::KIND, scores::KIND];
    k.extend(ModelKind::ALL.map(ModelKind::artifact_kind));
    k
}

/// hash → (kind, as-of) for every artifact of a known kind: a scan of the small index.
fn index(store: &Store) -> Result<HashMap<ArtifactHash, (String, i64)>, AppError> {
    let mut out = HashMap::new();
    for kind in known_kinds() {
        for r in store.artifacts().list(kind, i64::MAX)? {
            out.insert(r.hash, (r.kind, r.as_of));
        }
    }
    Ok(out)
}

fn metrics(m: &Metrics) -> Value {
    json!({
        "rows": m.rows,
        "positive_rate": m.positive_rate,
        "roc_auc": m.roc_auc,
        "log_loss": m.log_loss,
        "brier": m.brier,
    })
}

/// A model's kind and headline numbers.
pub fn model_summary(model: &Model) -> Value {
    match model {
        Model::Churn(m) => {
            let mut summary = json!({
                "model": "churn",
                "method": m.params.method.name(),
                "features": m.features.len(),
                "cutoffs": m.cutoffs.iter().map(|t| time::format(*t)).collect::<Vec<_>>(),
                "horizon_days": m.horizon_days,
                "labels_known_at": time::format(m.labels_known_at),
                "train": metrics(&m.train),
                "validation": metrics(&m.validation),
                // Scored on a later cutoff it did not learn from (null: validated on the split only).
                "forward_validation": m.forward.as_ref().map(|f| json!({
                    "cutoff": time::format(f.cutoff),
                    "snapshot": f.snapshot,
                    "metrics": metrics(&f.metrics),
                })),
            });
            // A survival model also says how it ranks and predicts the time to the next order.
            if let Some(Learned::Survival(cox)) = &m.learned {
                summary["survival"] = json!({
                    "method": "cox",
                    "train": cox.train,
                    "validation": cox.validation,
                });
            }
            // A method chosen by forward validation says on which cutoff and among what.
            if let Some(s) = &m.selection {
                summary["selection"] = json!({
                    "cutoff": time::format(s.cutoff),
                    "chosen": s.candidates.get(s.chosen).map(|c| c.params.summary()),
                    "candidates": s.candidates.iter().map(|c| json!({
                        "method": c.params.summary(),
                        "forward": metrics(&c.forward),
                    })).collect::<Vec<_>>(),
                });
            }
            summary
        }
        Model::Clv(m) => {
            let mut summary = json!({
                "model": "clv",
                "gamma_gamma": { "p": m.gamma_gamma.p, "q": m.gamma_gamma.q, "gamma": m.gamma_gamma.gamma },
                "monthly_discount": m.params.monthly_discount,
                "customers_fitted": m.customers_fitted,
                "repeat_customers_fitted": m.repeat_customers_fitted,
            });
            // Under the model's own key ("bgnbd", "pareto_nbd" or "mbgnbd"), as it is stored.
            summary[m.purchases.key()] = m
                .purchases
                .parameters()
                .iter()
                .map(|(name, value)| ((*name).to_owned(), json!(value)))
                .collect::<serde_json::Map<_, _>>()
                .into();
            summary
        }
        Model::Segments(m) => json!({
            "model": "segments",
            "k": m.k,
            "silhouette": m.silhouette,
            "segments": m.segments.iter().map(|s| json!({
                "id": s.id,
                "name": s.name,
                "description": s.description,
                "size": s.size,
            })).collect::<Vec<_>>(),
        }),
        Model::Embedding(m) => json!({
            "model": "embedding",
            "dims": m.params.dims,
            "features": m.features.len(),
            "customers": m.customers,
            "explained_variance_ratio": m.explained_variance_ratio,
        }),
    }
}

fn summary(state: &AppState, a: &StoredArtifact) -> Result<Value, AppError> {
    if a.kind == snapshot::KIND {
        let h = Header::decode(&a.body).map_err(|e| AppError::internal(SnapshotError::Malformed(hex(&a.hash), e)))?;
        let provenance: Option<Provenance> = serde_json::from_slice(&a.provenance).ok();
        return Ok(json!({
            "as_of": time::format(h.as_of),
            "known_at": time::format(h.known_at),
            "customers": h.customers,
            "features": h.features.len(),
            "visible_events": h.visible_events,
            "feature_definitions": hex(&h.definition_set),
            "read_from_log": provenance.map(|p| json!({ "log_batch": p.log_batch, "log_head": p.log_head })),
        }));
    }
    if a.kind == scores::KIND {
        let slot = state.scores.slot(&state.store, &a.hash)?;
        let m = &slot.meta;
        return Ok(json!({
            "rows": m.rows,
            "snapshot": m.snapshot,
            "snapshot_known_at": time::format(m.snapshot_known_at),
            "known_at": time::format(m.known_at),
            "models": m.models.iter().map(|(k, h, as_of)| json!({
                "kind": k,
                "hash": h,
                "as_of": time::format(*as_of),
            })).collect::<Vec<_>>(),
        }));
    }
    if ModelKind::of_artifact(&a.kind).is_some() {
        let model: Model = serde_json::from_slice(&a.body).map_err(AppError::internal)?;
        return Ok(model_summary(&model));
    }
    Ok(Value::Null)
}

fn describe(state: &AppState, text: &str) -> Result<Value, AppError> {
    let store = &state.store;
    let hash = artifact::resolve(store, text)?;
    let a = store
        .artifacts()
        .get(&hash)?
        .ok_or_else(|| AppError::NotFound(format!("no artifact {text}")))?;
    let index = index(store)?;
    let parents: Vec<Value> = a
        .parents
        .iter()
        .map(|p| {
            let (kind, as_of) = index.get(p).map_or((None, None), |(k, t)| {
                (Some(k.as_str()), Some(time::format(Timestamp::from_micros(*t))))
            });
            json!({ "hash": hex(p), "kind": kind, "as_of": as_of })
        })
        .collect();
    // A model's card (its conditional expectations, which are computed from the log, are left
    // to `cis models show`).
    let card = match ModelKind::of_artifact(&a.kind) {
        Some(_) => {
            let model: Model = serde_json::from_slice(&a.body).map_err(AppError::internal)?;
            serde_json::to_value(cis_models::card::card(store, &a, model, None)?).map_err(AppError::internal)?
        }
        None => Value::Null,
    };
    Ok(json!({
        "hash": hex(&a.hash),
        "kind": a.kind,
        "schema": a.schema,
        "as_of": time::format(Timestamp::from_micros(a.as_of)),
        "created_at": time::format(Timestamp::from_micros(a.created_at)),
        "body_bytes": a.body.len(),
        "content_matches_hash": a.recomputed_hash() == a.hash,
        "parents": parents,
        "summary": summary(state, &a)?,
        "card": card,
    }))
}

pub async fn artifact(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<Value>, AppError> {
    Params::parse(q, &[])?;
    let Path(text) = path.map_err(|e| AppError::param("hash", e.body_text()))?;
    // The artifact's bytes are read and hashed (tens of MB for a large snapshot): blocking.
    Ok(Json(blocking(&state, move |s| describe(s, &text)).await?))
}

pub async fn snapshots(
    State(state): State<AppState>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<Value>, AppError> {
    let params = Params::parse(q, &["as_of_before"])?;
    let before = params.time("as_of_before")?;
    let list = blocking(&state, move |s| {
        snapshot::list(&s.store, before.unwrap_or(Timestamp::MAX)).map_err(AppError::internal)
    })
    .await?;
    Ok(Json(json!({
        "as_of_before": before.map(time::format),
        "snapshots": list
            .iter()
            .map(|(h, t)| json!({ "hash": hex(h), "as_of": time::format(*t) }))
            .collect::<Vec<_>>(),
    })))
}
