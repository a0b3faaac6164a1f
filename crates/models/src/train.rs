//! Training entry points shared by `cis train` and `cis audit` (which re-derives a model by
//! running exactly this code again on the model's parents and stored parameters).

use cis_storage::{hex, ArtifactHash, Store};

use crate::churn::{clv_inputs, with_clv_inputs, Candidate, ChurnParams, ForwardValidation, Selection};
use crate::embedding::EmbeddingParams;
use crate::lifetime::{ClvModel, ClvParams};
use crate::segments::SegmentParams;
use crate::{Model, ModelError, ParamError, Trained};
use cis_core::time::Timestamp;
use cis_core::AsOf;
use cis_features::labels::{training_set, TrainingSet};
use cis_features::snapshot::{self, Snapshot, SnapshotError};

/// Churn on the snapshots at several cutoffs, labels as known at `known_at`, validated on the
/// customer-disjoint split only. The model's as-of is `known_at`: it contains information up to then.
pub fn churn(
    store: &Store,
    snapshots: &[ArtifactHash],
    params: ChurnParams,
    horizon_days: u32,
    known_at: Timestamp,
) -> Result<Trained, ModelError> {
    churn_validated(store, snapshots, None, params, horizon_days, known_at)
}

/// [`churn`], and with `validate_on` also validated forward in time: that later cutoff's customers,
/// labelled as known at `known_at` too, scored with the fitted model ([`ForwardValidation`]).
///
/// Parents: the training snapshots, then `validate_on`, then (with `params.clv_features`) the CLV
/// model fitted on each of those snapshots in the same order, which `Trained::store` stores first.
pub fn churn_validated(
    store: &Store,
    snapshots: &[ArtifactHash],
    validate_on: Option<&ArtifactHash>,
    params: ChurnParams,
    horizon_days: u32,
    known_at: Timestamp,
) -> Result<Trained, ModelError> {
    if snapshots.is_empty() {
        return Err(ModelError::EmptyTrainingSet);
    }
    let valid = params.validate()?;
    let mut feeders = Vec::new();
    let mut labelled = |hashes: &[ArtifactHash]| -> Result<TrainingSet, ModelError> {
        let set = training_set(store, hashes, horizon_days, known_at)?;
        let Some(clv_params) = &valid.params().clv_features else {
            return Ok(set);
        };
        let mut extra = Vec::with_capacity(set.churned.len());
        for hash in hashes {
            let (_, snap) = snapshot::load(store, hash)?;
            let model = clv_params.fit(&snap)?;
            extra.extend(clv_inputs(&model, &snap, horizon_days)?);
            feeders.push(clv_trained(hash, &snap, model));
        }
        Ok(with_clv_inputs(set, &extra))
    };
    let set = labelled(snapshots)?;
    let (_, first) = snapshot::load(store, &snapshots[0])?;
    let mut model = valid.fit(&set, hex(&first.definition_set))?;
    let mut parents = snapshots.to_vec();
    if let Some(v) = validate_on {
        let cutoff = Timestamp::from_micros(cis_core::artifact::fetch(store, v, snapshot::KIND)?.as_of);
        let latest = model.cutoffs.last().copied().unwrap_or(Timestamp::MIN);
        if cutoff <= latest {
            return Err(ParamError::ForwardCutoff {
                validation: cutoff,
                latest,
            }
            .into());
        }
        let forward = labelled(std::slice::from_ref(v))?;
        if forward.features != set.features {
            return Err(SnapshotError::OtherFeatureSet(hex(v)).into());
        }
        model.forward = Some(ForwardValidation {
            snapshot: hex(v),
            cutoff,
            metrics: model.evaluate_on(&forward)?,
        });
        parents.push(*v);
    }
    for feeder in &feeders {
        parents.push(feeder.artifact()?.hash());
    }
    Ok(Trained {
        model: Model::Churn(model),
        as_of: known_at,
        parents,
        feeders,
    })
}

/// The index in `snapshots` of the one with the latest cutoff (the first of equals); none when
/// there are none. Forward validation holds it out.
pub fn latest_cutoff(store: &Store, snapshots: &[ArtifactHash]) -> Result<Option<usize>, ModelError> {
    let mut latest: Option<(usize, i64)> = None;
    for (i, h) in snapshots.iter().enumerate() {
        let as_of = cis_core::artifact::fetch(store, h, snapshot::KIND)?.as_of;
        if latest.is_none_or(|(_, t)| as_of > t) {
            latest = Some((i, as_of));
        }
    }
    Ok(latest.map(|(i, _)| i))
}

/// Churn with the method chosen by forward-in-time validation ([`Selection`]): each of
/// `candidates` learns from every snapshot but the latest and is scored on the latest (labels as
/// known at `known_at`); the one of the lowest log loss there is fitted again on every snapshot,
/// and the choice is recorded in the model. Its parents are those of that last fit.
pub fn churn_selected(
    store: &Store,
    snapshots: &[ArtifactHash],
    candidates: &[ChurnParams],
    horizon_days: u32,
    known_at: Timestamp,
) -> Result<Trained, ModelError> {
    let held_out = &snapshots[latest_cutoff(store, snapshots)?.ok_or(ModelError::EmptyTrainingSet)?];
    let training: Vec<ArtifactHash> = snapshots.iter().filter(|h| *h != held_out).copied().collect();
    if training.is_empty() || candidates.is_empty() {
        return Err(ParamError::SelectionCutoffs.into());
    }
    let mut tried = Vec::with_capacity(candidates.len());
    for params in candidates {
        let t = churn_validated(store, &training, Some(held_out), params.clone(), horizon_days, known_at)?;
        let Model::Churn(m) = t.model else {
            return Err(ModelError::EmptyTrainingSet);
        };
        let forward = m.forward.ok_or(ModelError::EmptyTrainingSet)?;
        tracing::info!(method = %params.summary(), log_loss = forward.metrics.log_loss, auc = forward.metrics.roc_auc, "churn candidate");
        tried.push(Candidate {
            params: params.clone(),
            forward: forward.metrics,
        });
    }
    let chosen = (0..tried.len())
        .min_by(|&a, &b| tried[a].forward.log_loss.total_cmp(&tried[b].forward.log_loss))
        .unwrap_or(0);
    let mut trained = churn_validated(
        store,
        snapshots,
        None,
        tried[chosen].params.clone(),
        horizon_days,
        known_at,
    )?;
    if let Model::Churn(m) = &mut trained.model {
        m.selection = Some(Box::new(Selection {
            cutoff: Timestamp::from_micros(cis_core::artifact::fetch(store, held_out, snapshot::KIND)?.as_of),
            snapshot: hex(held_out),
            candidates: tried,
            chosen,
        }));
    }
    Ok(trained)
}

/// A CLV model fitted on one snapshot, ready to store (its parent is that snapshot).
fn clv_trained(hash: &ArtifactHash, snap: &Snapshot, model: ClvModel) -> Trained {
    Trained {
        model: Model::Clv(model),
        as_of: snap.as_of,
        parents: vec![*hash],
        feeders: Vec::new(),
    }
}

/// CLV on one snapshot. With `params.select_by_holdout_weeks` the purchase-count model is chosen by
/// a forward-in-time check ([`ClvParams::fit_selected`]) on the snapshot that many weeks earlier, at
/// the same knowledge time (created if not stored yet), which becomes the model's second parent.
pub fn clv(store: &Store, snapshot_hash: &ArtifactHash, params: ClvParams) -> Result<Trained, ModelError> {
    let Some(weeks) = params.select_by_holdout_weeks else {
        let (_, snap) = snapshot::load(store, snapshot_hash)?;
        let model = params.fit(&snap)?;
        return Ok(clv_trained(snapshot_hash, &snap, model));
    };
    if weeks == 0 {
        return Err(ParamError::HoldoutWeeks.into());
    }
    let (_, snap) = snapshot::load(store, snapshot_hash)?;
    let at = AsOf {
        as_of: snap.as_of.plus_days(-7 * i64::from(weeks)),
        known_at: snap.known_at,
    };
    let (calibration, ..) = snapshot::create(store, at)?;
    clv_selected(store, snapshot_hash, &calibration, params)
}

/// [`clv`] with the selection's calibration snapshot given (as an audit re-derives it).
fn clv_selected(
    store: &Store,
    snapshot_hash: &ArtifactHash,
    calibration_hash: &ArtifactHash,
    params: ClvParams,
) -> Result<Trained, ModelError> {
    let (_, snap) = snapshot::load(store, snapshot_hash)?;
    let (_, calibration) = snapshot::load(store, calibration_hash)?;
    let model = params.fit_selected(&calibration, &snap)?;
    Ok(Trained {
        model: Model::Clv(model),
        as_of: snap.as_of,
        parents: vec![*snapshot_hash, *calibration_hash],
        feeders: Vec::new(),
    })
}

/// Segments of one snapshot; with `params.embedding`, of that embedding model's vectors (a model
/// of the same feature set), which becomes the second parent.
pub fn segments(store: &Store, snapshot_hash: &ArtifactHash, params: SegmentParams) -> Result<Trained, ModelError> {
    let (_, snap) = snapshot::load(store, snapshot_hash)?;
    let mut parents = vec![*snapshot_hash];
    let embedding = match &params.embedding {
        None => None,
        Some(text) => {
            let hash = cis_core::artifact::resolve(store, text)?;
            let Model::Embedding(e) = crate::load(store, &hash)?.1 else {
                return Err(ParamError::SegmentEmbedding.into());
            };
            if e.definition_set != hex(&snap.definition_set) {
                return Err(SnapshotError::OtherFeatureSet(hex(&hash)).into());
            }
            parents.push(hash);
            Some(e)
        }
    };
    let model = params.fit(&snap, embedding.as_ref())?;
    Ok(Trained {
        model: Model::Segments(model),
        as_of: snap.as_of,
        parents,
        feeders: Vec::new(),
    })
}

/// A behaviour embedding of one snapshot ([`crate::embedding`]); its parent is that snapshot.
pub fn embedding(store: &Store, snapshot_hash: &ArtifactHash, params: EmbeddingParams) -> Result<Trained, ModelError> {
    let (_, snap) = snapshot::load(store, snapshot_hash)?;
    let model = params.fit(&snap)?;
    Ok(Trained {
        model: Model::Embedding(model),
        as_of: snap.as_of,
        parents: vec![*snapshot_hash],
        feeders: Vec::new(),
    })
}

/// Trains again from a stored model's parents and parameters.
pub fn retrain(store: &Store, model: &Model, parents: &[ArtifactHash]) -> Result<Trained, ModelError> {
    match model {
        Model::Churn(m) => {
            // Parents as `churn_validated` lays them out: snapshots, then one CLV model per snapshot.
            let snapshots = match m.params.clv_features {
                Some(_) => &parents[..parents.len() / 2],
                None => parents,
            };
            if let Some(s) = &m.selection {
                let candidates: Vec<ChurnParams> = s.candidates.iter().map(|c| c.params.clone()).collect();
                return churn_selected(store, snapshots, &candidates, m.horizon_days, m.labels_known_at);
            }
            let (train, validate_on) = match (&m.forward, snapshots.split_last()) {
                (Some(_), Some((last, rest))) => (rest, Some(last)),
                _ => (snapshots, None),
            };
            churn_validated(
                store,
                train,
                validate_on,
                m.params.clone(),
                m.horizon_days,
                m.labels_known_at,
            )
        }
        Model::Clv(m) => match parents {
            [snapshot, calibration] if m.params.select_by_holdout_weeks.is_some() => {
                clv_selected(store, snapshot, calibration, m.params.clone())
            }
            _ => clv(
                store,
                parents.first().ok_or(ModelError::EmptyTrainingSet)?,
                m.params.clone(),
            ),
        },
        Model::Segments(m) => segments(
            store,
            parents.first().ok_or(ModelError::EmptyTrainingSet)?,
            m.params.clone(),
        ),
        Model::Embedding(m) => embedding(
            store,
            parents.first().ok_or(ModelError::EmptyTrainingSet)?,
            m.params.clone(),
        ),
    }
}
