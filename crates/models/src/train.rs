//! Training entry points shared by `cis train` and `cis audit` (which re-derives a model by
//! running exactly this code again on the model's parents and stored parameters).

use cis_storage::{hex, ArtifactHash, Store};

use crate::churn::ChurnParams;
use crate::lifetime::ClvParams;
use crate::segments::SegmentParams;
use crate::{Model, ModelError, ParamError, Trained};
use cis_core::time::Timestamp;
use cis_core::AsOf;
use cis_features::labels::training_set;
use cis_features::snapshot;

/// Churn on the snapshots at several cutoffs, labels as known at `known_at`.
/// The model's as-of is `known_at`: it contains information up to then.
pub fn churn(
    store: &Store,
    snapshots: &[ArtifactHash],
    params: ChurnParams,
    horizon_days: u32,
    known_at: Timestamp,
) -> Result<Trained, ModelError> {
    if snapshots.is_empty() {
        return Err(ModelError::EmptyTrainingSet);
    }
    let valid = params.validate()?;
    let set = training_set(store, snapshots, horizon_days, known_at)?;
    let (_, first) = snapshot::load(store, &snapshots[0])?;
    let model = valid.fit(&set, hex(&first.definition_set))?;
    Ok(Trained {
        model: Model::Churn(model),
        as_of: known_at,
        parents: snapshots.to_vec(),
    })
}

/// CLV on one snapshot. With `params.select_by_holdout_weeks` the purchase-count model is chosen by
/// a forward-in-time check ([`ClvParams::fit_selected`]) on the snapshot that many weeks earlier, at
/// the same knowledge time (created if not stored yet), which becomes the model's second parent.
pub fn clv(store: &Store, snapshot_hash: &ArtifactHash, params: ClvParams) -> Result<Trained, ModelError> {
    let Some(weeks) = params.select_by_holdout_weeks else {
        let (_, snap) = snapshot::load(store, snapshot_hash)?;
        let model = params.fit(&snap)?;
        return Ok(Trained {
            model: Model::Clv(model),
            as_of: snap.as_of,
            parents: vec![*snapshot_hash],
        });
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
    })
}

pub fn segments(store: &Store, snapshot_hash: &ArtifactHash, params: SegmentParams) -> Result<Trained, ModelError> {
    let (_, snap) = snapshot::load(store, snapshot_hash)?;
    let model = params.fit(&snap)?;
    Ok(Trained {
        model: Model::Segments(model),
        as_of: snap.as_of,
        parents: vec![*snapshot_hash],
    })
}

/// Trains again from a stored model's parents and parameters.
pub fn retrain(store: &Store, model: &Model, parents: &[ArtifactHash]) -> Result<Trained, ModelError> {
    match model {
        Model::Churn(m) => churn(store, parents, m.params.clone(), m.horizon_days, m.labels_known_at),
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
    }
}
