//! Training entry points shared by `cis train` and `cis audit` (which re-derives a model by
//! running exactly this code again on the model's parents and stored parameters).

use cis_storage::{hex, ArtifactHash, Store};

use crate::churn::ChurnParams;
use crate::lifetime::ClvParams;
use crate::segments::SegmentParams;
use crate::{Model, ModelError, Trained};
use cis_core::time::Timestamp;
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

pub fn clv(store: &Store, snapshot_hash: &ArtifactHash, params: ClvParams) -> Result<Trained, ModelError> {
    let (_, snap) = snapshot::load(store, snapshot_hash)?;
    let model = params.fit(&snap)?;
    Ok(Trained {
        model: Model::Clv(model),
        as_of: snap.as_of,
        parents: vec![*snapshot_hash],
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
        Model::Clv(m) => clv(
            store,
            parents.first().ok_or(ModelError::EmptyTrainingSet)?,
            m.params.clone(),
        ),
        Model::Segments(m) => segments(
            store,
            parents.first().ok_or(ModelError::EmptyTrainingSet)?,
            m.params.clone(),
        ),
    }
}
