//! Scores: every customer of a snapshot scored by a churn, a CLV and a segment model, stored
//! as an artifact whose parents are the snapshot and the models and whose as-of is the
//! snapshot's T.

use cis_storage::{hex, ArtifactHash, NewArtifact, Store, StoredArtifact};
use serde::{Deserialize, Serialize};

use crate::churn::band;
use crate::lifetime::{rfm_columns, rfm_row};
use crate::promotion::{Record, Stage};
use crate::{load, Model, ModelError, ModelKind, ParamError};
use cis_core::artifact;
use cis_core::time::{self, Timestamp};
use cis_core::AsOf;
use cis_features::snapshot::{self, Snapshot};

pub const KIND: &str = "scores";
pub const SCHEMA: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreRow {
    pub customer_id: String,
    pub churn_probability: Option<f64>,
    pub churn_band: Option<String>,
    pub expected_purchases_90d: Option<f64>,
    pub p_alive: Option<f64>,
    pub clv_12m: Option<f64>,
    pub segment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreSet {
    pub as_of: Timestamp,
    pub snapshot: String,
    /// (kind, model hash) of every model used.
    pub models: Vec<(ModelKind, String)>,
    pub rows: Vec<ScoreRow>,
}

/// The latest knowledge a score set holds: its snapshot's known-at K or a model's as-of (a
/// model knows everything up to the T it was fitted at), whichever is later.
pub fn known_at(snapshot_known_at: Timestamp, model_as_ofs: impl IntoIterator<Item = Timestamp>) -> Timestamp {
    model_as_ofs.into_iter().fold(snapshot_known_at, Timestamp::max)
}

/// The (T, K) rule: a score set as of `as_of` holding knowledge up to `known_at` (see
/// [`known_at`]) may be shown with a read at `at` only if it is not after T and nothing it was
/// built from is later than K. Scores never know more than the read they are shown with.
pub fn usable_at(as_of: Timestamp, known_at: Timestamp, at: AsOf) -> bool {
    as_of <= at.as_of && known_at <= at.known_at
}

/// Why a default model was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// It held production for its kind at the snapshot's T (promoted at `since`).
    Production { since: Timestamp },
    /// No model of its kind was in production at T (or the one that was had learned from data
    /// after T, named here): the latest model trained with as-of ≤ T.
    LatestTrained { production_after_t: Option<String> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chosen {
    pub kind: ModelKind,
    pub hash: ArtifactHash,
    pub rule: Rule,
}

/// The models scoring uses when none are named, per kind: the production model at the
/// snapshot's T (by the promotion record), else the latest model whose as-of is not after T.
/// Either way a model that learned from data after T is never used: it would leak the future.
pub fn choose_models(store: &Store, record: &Record, as_of: Timestamp) -> Result<Vec<Chosen>, ModelError> {
    let mut out = Vec::new();
    for kind in ModelKind::SCORED {
        let mut production_after_t = None;
        if let Some(h) = record.holder(kind, Stage::Production, as_of) {
            let hash = artifact::resolve(store, &h.model)?;
            let a = artifact::fetch(store, &hash, kind.artifact_kind())?;
            if a.as_of <= as_of.micros() {
                out.push(Chosen {
                    kind,
                    hash,
                    rule: Rule::Production { since: h.since },
                });
                continue;
            }
            production_after_t = Some(h.model);
        }
        if let Some(r) = store.artifacts().latest(kind.artifact_kind(), as_of.micros())? {
            out.push(Chosen {
                kind,
                hash: r.hash,
                rule: Rule::LatestTrained { production_after_t },
            });
        }
    }
    Ok(out)
}

/// [`choose_models`]' hashes, with the store's promotion record.
pub fn default_models(store: &Store, as_of: Timestamp) -> Result<Vec<ArtifactHash>, ModelError> {
    let record = Record::read(store)?;
    Ok(choose_models(store, &record, as_of)?
        .into_iter()
        .map(|c| c.hash)
        .collect())
}

fn compute(
    snap: &Snapshot,
    snapshot_hash: &ArtifactHash,
    models: &[(ArtifactHash, Model)],
) -> Result<ScoreSet, ModelError> {
    let mut rows: Vec<ScoreRow> = snap
        .matrix
        .customers
        .iter()
        .map(|c| ScoreRow {
            customer_id: c.clone(),
            churn_probability: None,
            churn_band: None,
            expected_purchases_90d: None,
            p_alive: None,
            clv_12m: None,
            segment: None,
        })
        .collect();
    for (_, model) in models {
        match model {
            Model::Churn(m) => {
                // With CLV features, this fits the CLV model on this snapshot as training did on
                // each of its cutoffs: the same parameters and code, so the same inputs.
                let raw = m.rows(snap)?;
                for (row, x) in rows.iter_mut().zip(raw.chunks_exact(m.features.len())) {
                    let p = m.predict(x);
                    row.churn_probability = Some(p);
                    row.churn_band = Some(band(p).to_string());
                }
            }
            Model::Clv(m) => {
                let cols = rfm_columns(snap)?;
                for (i, row) in rows.iter_mut().enumerate() {
                    if let Some(r) = rfm_row(snap, &cols, i) {
                        let p = m.predict(&r);
                        row.expected_purchases_90d = Some(p.expected_purchases_90d);
                        row.p_alive = Some(p.p_alive);
                        row.clv_12m = Some(p.clv_12m);
                    }
                }
            }
            Model::Segments(m) => {
                for (row, s) in rows.iter_mut().zip(m.assign_all(snap)?) {
                    row.segment = Some(s.name.clone());
                }
            }
            // Refused above: an embedding adds no column to a score run.
            Model::Embedding(_) => {}
        }
    }
    Ok(ScoreSet {
        as_of: snap.as_of,
        snapshot: hex(snapshot_hash),
        models: models.iter().map(|(h, m)| (m.kind(), hex(h))).collect(),
        rows,
    })
}

/// The canonical body of a score run (erasure re-encodes a run without a customer's row).
pub fn encode(set: &ScoreSet) -> Result<Vec<u8>, ModelError> {
    Ok(serde_json::to_vec(set)?)
}

fn artifact(
    set: &ScoreSet,
    snapshot_hash: &ArtifactHash,
    models: &[(ArtifactHash, Model)],
) -> Result<NewArtifact, ModelError> {
    let mut parents = vec![*snapshot_hash];
    parents.extend(models.iter().map(|(h, _)| *h));
    Ok(NewArtifact {
        kind: KIND.into(),
        schema: SCHEMA,
        as_of: set.as_of.micros(),
        parents,
        body: encode(set)?,
        created_at: time::now().micros(),
        provenance: Vec::new(),
    })
}

/// Scores a snapshot with the given models (at most one per kind) and builds the artifact.
pub fn build(
    store: &Store,
    snapshot_hash: &ArtifactHash,
    model_hashes: &[ArtifactHash],
) -> Result<(NewArtifact, ScoreSet), ModelError> {
    let (_, snap) = snapshot::load(store, snapshot_hash)?;
    if model_hashes.is_empty() {
        return Err(ParamError::NoModel { as_of: snap.as_of }.into());
    }
    let mut models = Vec::new();
    for h in model_hashes {
        let (_, m) = load(store, h)?;
        if !ModelKind::SCORED.contains(&m.kind()) {
            return Err(ParamError::NotScored(m.kind()).into());
        }
        if models
            .iter()
            .any(|(_, other): &(ArtifactHash, Model)| other.kind() == m.kind())
        {
            return Err(ParamError::TwoOfAKind(m.kind()).into());
        }
        models.push((*h, m));
    }
    models.sort_by_key(|(_, m)| m.kind() as u8);
    let set = compute(&snap, snapshot_hash, &models)?;
    Ok((artifact(&set, snapshot_hash, &models)?, set))
}

pub fn score(
    store: &Store,
    snapshot_hash: &ArtifactHash,
    model_hashes: &[ArtifactHash],
) -> Result<(ArtifactHash, bool, ScoreSet), ModelError> {
    let (a, set) = build(store, snapshot_hash, model_hashes)?;
    let (hash, new) = store.artifacts().put(a)?;
    Ok((hash, new, set))
}

pub fn load_scores(store: &Store, hash: &ArtifactHash) -> Result<(StoredArtifact, ScoreSet), ModelError> {
    let a = artifact::fetch(store, hash, KIND)?;
    let set = serde_json::from_slice(&a.body)?;
    Ok((a, set))
}

#[cfg(test)]
mod rule_tests {
    use super::*;

    #[test]
    fn a_score_set_is_used_only_when_nothing_it_holds_is_after_k() {
        let u = Timestamp::from_micros;
        // Snapshot K = 10; models fitted at 8 and 14: the set knows up to 14.
        let k = known_at(u(10), [u(8), u(14)]);
        assert_eq!(k, u(14));
        assert_eq!(known_at(u(10), []), u(10), "no model: the snapshot's K");
        let at = |t, k| AsOf::new(Some(u(t)), Some(u(k)));
        assert!(usable_at(u(5), k, at(5, 14)), "K equal to what it knows");
        assert!(usable_at(u(5), k, at(20, 30)), "a later read");
        assert!(!usable_at(u(5), k, at(5, 13)), "a model knows 14, the read only 13");
        assert!(!usable_at(u(5), k, at(4, 30)), "the set is as of a T after the read's");
    }
}
