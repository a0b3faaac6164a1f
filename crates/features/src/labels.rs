//! Training labels that cannot leak: churn at cutoff T over horizon H, as known at K.

use std::collections::HashSet;

use cis_storage::{ArtifactHash, StorageError, Store, Visibility};

use crate::snapshot::{self, Snapshot, SnapshotError};
use cis_core::event::Kind;
use cis_core::time::{self, Timestamp};

pub const DEFAULT_HORIZON_DAYS: u32 = 90;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LabelError {
    #[error(
        "labels at cutoff {} with a {horizon_days}-day horizon mature at {}, after the knowledge time {}: they do not exist yet",
        time::format(*cutoff), time::format(*matures), time::format(*known_at)
    )]
    NotMatured {
        cutoff: Timestamp,
        horizon_days: u32,
        matures: Timestamp,
        known_at: Timestamp,
    },
    #[error("the horizon must be at least one day")]
    EmptyHorizon,
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

/// When labels at `cutoff` with `horizon_days` become known.
pub fn matures_at(cutoff: Timestamp, horizon_days: u32) -> Timestamp {
    cutoff.plus_days(i64::from(horizon_days))
}

/// churn = no order with `cutoff < event_time <= cutoff + H`, using only what was recorded
/// by `known_at`. Refuses when `cutoff + H > known_at`: an unmatured label does not exist.
pub fn churn_labels(
    store: &Store,
    customers: &[String],
    cutoff: Timestamp,
    horizon_days: u32,
    known_at: Timestamp,
) -> Result<Vec<bool>, LabelError> {
    if horizon_days == 0 {
        return Err(LabelError::EmptyHorizon);
    }
    let matures = matures_at(cutoff, horizon_days);
    if matures > known_at {
        return Err(LabelError::NotMatured {
            cutoff,
            horizon_days,
            matures,
            known_at,
        });
    }
    let mut ordered: HashSet<String> = HashSet::new();
    store.log().scan(
        Visibility {
            event_time_max: matures.micros(),
            recorded_max: known_at.micros(),
        },
        |e| {
            if e.kind == Kind::Order as u8 && e.event_time > cutoff.micros() && !ordered.contains(e.subject) {
                ordered.insert(e.subject.to_string());
            }
            Ok::<_, LabelError>(())
        },
    )?;
    Ok(customers.iter().map(|c| !ordered.contains(c)).collect())
}

/// Rows from several cutoffs: features from the snapshot at each cutoff (and nothing
/// else), labels from the log as known at `known_at`.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingSet {
    pub features: Vec<String>,
    /// Row-major, `features.len()` values per row.
    pub values: Vec<f64>,
    pub churned: Vec<bool>,
    pub customers: Vec<String>,
    pub cutoffs: Vec<Timestamp>,
    pub snapshots: Vec<ArtifactHash>,
    pub horizon_days: u32,
    pub known_at: Timestamp,
}

pub fn training_set(
    store: &Store,
    snapshots: &[ArtifactHash],
    horizon_days: u32,
    known_at: Timestamp,
) -> Result<TrainingSet, LabelError> {
    let mut set = TrainingSet {
        features: Vec::new(),
        values: Vec::new(),
        churned: Vec::new(),
        customers: Vec::new(),
        cutoffs: Vec::new(),
        snapshots: snapshots.to_vec(),
        horizon_days,
        known_at,
    };
    for_each_labelled(store, snapshots, horizon_days, known_at, |_, snap, labels| {
        if set.features.is_empty() {
            set.features = snap.features;
        }
        set.churned.extend(labels);
        set.cutoffs
            .extend(std::iter::repeat_n(snap.as_of, snap.matrix.customers.len()));
        set.customers.extend(snap.matrix.customers);
        set.values.extend(snap.matrix.values);
        Ok::<_, LabelError>(())
    })?;
    Ok(set)
}

/// The snapshots of a training set in order, each with its churn labels (one per customer, in
/// the snapshot's row order): what [`training_set`] concatenates, handed over one snapshot at a
/// time so that an export holds one snapshot in memory, not the whole set. Refuses a snapshot
/// whose feature list differs from the first's, and unmatured labels, as training does.
pub fn for_each_labelled<E: From<LabelError>>(
    store: &Store,
    snapshots: &[ArtifactHash],
    horizon_days: u32,
    known_at: Timestamp,
    mut visit: impl FnMut(&ArtifactHash, Snapshot, Vec<bool>) -> Result<(), E>,
) -> Result<(), E> {
    let mut features: Option<Vec<String>> = None;
    for hash in snapshots {
        let (_, snap) = snapshot::load(store, hash).map_err(LabelError::from)?;
        match &features {
            None => features = Some(snap.features.clone()),
            Some(f) if *f != snap.features => {
                return Err(LabelError::from(SnapshotError::OtherFeatureSet(cis_storage::hex(hash))).into())
            }
            Some(_) => {}
        }
        let labels = churn_labels(store, &snap.matrix.customers, snap.as_of, horizon_days, known_at)?;
        visit(hash, snap, labels)?;
    }
    Ok(())
}
