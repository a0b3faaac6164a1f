//! Training labels that cannot leak: churn at cutoff T over horizon H, as known at K.

use std::collections::HashMap;

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

/// When labels at `cutoff` over `horizon_days` mature, refusing them when that is after `known_at`:
/// an unmatured label does not exist.
fn matured(cutoff: Timestamp, horizon_days: u32, known_at: Timestamp) -> Result<Timestamp, LabelError> {
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
    Ok(matures)
}

/// Each customer's first order with `cutoff < event_time <= until`, using only what was recorded
/// by `known_at` (none: no such order is known).
fn first_orders(
    store: &Store,
    customers: &[String],
    cutoff: Timestamp,
    until: Timestamp,
    known_at: Timestamp,
) -> Result<Vec<Option<Timestamp>>, LabelError> {
    let mut first: HashMap<String, i64> = HashMap::new();
    store.log().scan(
        Visibility {
            event_time_max: until.micros(),
            recorded_max: known_at.micros(),
        },
        |e| {
            if e.kind == Kind::Order as u8 && e.event_time > cutoff.micros() {
                // The scan runs in storage order, not time order: keep the earliest.
                match first.get_mut(e.subject) {
                    Some(t) => *t = (*t).min(e.event_time),
                    None => {
                        first.insert(e.subject.to_string(), e.event_time);
                    }
                }
            }
            Ok::<_, LabelError>(())
        },
    )?;
    Ok(customers
        .iter()
        .map(|c| first.get(c).map(|&t| Timestamp::from_micros(t)))
        .collect())
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
    let matures = matured(cutoff, horizon_days, known_at)?;
    Ok(first_orders(store, customers, cutoff, matures, known_at)?
        .iter()
        .map(Option::is_none)
        .collect())
}

/// What the log knows at `known_at` of each customer's next order after a cutoff: the churn label
/// and, for survival models, the time to that order, censored at `known_at`.
#[derive(Debug, Clone, PartialEq)]
pub struct Labels {
    /// As [`churn_labels`]: no order within the horizon.
    pub churned: Vec<bool>,
    /// Days (fractional) from the cutoff to the first order after it, or to `known_at` when none
    /// is known by then.
    pub durations: Vec<f64>,
    /// Whether that order was seen (false: the duration is censored at `known_at`).
    pub observed: Vec<bool>,
}

/// [`churn_labels`] with the time to the next order ([`Labels`]), from one scan of the log up to
/// `known_at` (an order made or recorded after it is not known), refusing unmatured labels alike.
pub fn labels(
    store: &Store,
    customers: &[String],
    cutoff: Timestamp,
    horizon_days: u32,
    known_at: Timestamp,
) -> Result<Labels, LabelError> {
    let matures = matured(cutoff, horizon_days, known_at)?;
    let first = first_orders(store, customers, cutoff, known_at, known_at)?;
    let days = |t: Timestamp| (t.micros() - cutoff.micros()) as f64 / time::MICROS_PER_DAY as f64;
    Ok(Labels {
        churned: first.iter().map(|t| t.is_none_or(|t| t > matures)).collect(),
        durations: first.iter().map(|t| days(t.unwrap_or(known_at))).collect(),
        observed: first.iter().map(Option::is_some).collect(),
    })
}

/// Rows from several cutoffs: features from the snapshot at each cutoff (and nothing
/// else), labels from the log as known at `known_at`.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingSet {
    pub features: Vec<String>,
    /// Row-major, `features.len()` values per row.
    pub values: Vec<f64>,
    pub churned: Vec<bool>,
    /// Per row, as [`Labels::durations`] and [`Labels::observed`]: what survival models learn from.
    pub durations: Vec<f64>,
    pub observed: Vec<bool>,
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
        durations: Vec::new(),
        observed: Vec::new(),
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
        set.churned.extend(labels.churned);
        set.durations.extend(labels.durations);
        set.observed.extend(labels.observed);
        set.cutoffs
            .extend(std::iter::repeat_n(snap.as_of, snap.matrix.customers.len()));
        set.customers.extend(snap.matrix.customers);
        set.values.extend(snap.matrix.values);
        Ok::<_, LabelError>(())
    })?;
    Ok(set)
}

/// The snapshots of a training set in order, each with its [`Labels`] (one per customer, in
/// the snapshot's row order): what [`training_set`] concatenates, handed over one snapshot at a
/// time so that an export holds one snapshot in memory, not the whole set. Refuses a snapshot
/// whose feature list differs from the first's, and unmatured labels, as training does.
pub fn for_each_labelled<E: From<LabelError>>(
    store: &Store,
    snapshots: &[ArtifactHash],
    horizon_days: u32,
    known_at: Timestamp,
    mut visit: impl FnMut(&ArtifactHash, Snapshot, Labels) -> Result<(), E>,
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
        let known = labels(store, &snap.matrix.customers, snap.as_of, horizon_days, known_at)?;
        visit(hash, snap, known)?;
    }
    Ok(())
}
