//! Feature drift between two snapshots: has the input changed under my model?
//!
//! For every feature both snapshots have, comparing A (the reference) with B:
//!
//! - **PSI**, `Σ (b − a) · ln(b / a)` over bin shares. Bins: A's present values cut at A's
//!   deciles (R-8 quantiles from `statrs`), bins right-closed (`(e_k, e_k+1]`, the first open
//!   below, the last open above); equal edges are merged, so a point mass (say 60 % zeros) is one
//!   bin and a constant feature has two. Missing values (see below) form one more bin when the
//!   share is known on both sides. **Empty bins**: every share is floored at [`SHARE_FLOOR`]
//!   (10⁻⁴) before the sum, not renormalised; a bin empty on both sides adds 0.
//! - **KS**: the two-sample Kolmogorov–Smirnov statistic `D = sup |F_A − F_B|` (`statrs`) over
//!   every value, fill values included (what a model reads).
//! - **Missing share**: from [`missing_rule`]; `None` when unknown (the report says why).
//! - **Verdict**: PSI < 0.1 stable, 0.1 ≤ PSI < 0.25 moderate, ≥ 0.25 significant; a
//!   PSI-stable feature with KS `D ≥ 0.1` is raised to moderate (a CDF gap of ten points the
//!   decile bins do not show, e.g. a move inside one bin). KS never makes a feature significant:
//!   at 100,000 customers its p-value calls every wobble real, so only PSI's size decides that.
//!
//! A report is stored as an artifact of kind [`KIND`]: body the JSON of [`DriftReport`] (fields
//! in declaration order, floats in serde_json's round-trip form), parents `[A, B]`, as-of the
//! later of the two as-ofs.

use std::sync::OnceLock;

use cis_storage::{hex, ArtifactHash, NewArtifact, StorageError, Store};
use serde::{Deserialize, Serialize};
use statrs::statistics::{Data, OrderStatistics};
use statrs::stats_tests::ks_test::{ks_twosample, KSTestError, KSTwoSampleAlternativeMethod};
use statrs::stats_tests::NaNPolicy;

use cis_core::artifact::ArtifactError;
use cis_core::time::{self, Timestamp};
use cis_features::defs::{definitions, Calc, FeatureDef, WINDOWS};
use cis_features::snapshot::{self, Snapshot, SnapshotError};
use cis_models::ModelKind;

pub const KIND: &str = "drift-report";
pub const SCHEMA: u32 = 1;
/// Quantile bins cut from A (before merging equal edges).
pub const BINS: usize = 10;
/// Smallest share a bin counts with, so an empty bin has a finite log.
pub const SHARE_FLOOR: f64 = 1e-4;
pub const PSI_MODERATE: f64 = 0.1;
pub const PSI_SIGNIFICANT: f64 = 0.25;
/// KS statistic that raises a PSI-stable feature to moderate.
pub const KS_MODERATE: f64 = 0.1;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriftError {
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("snapshots {from} and {to} share no feature: nothing to compare")]
    NoSharedFeatures { from: String, to: String },
    #[error("snapshot {0} has no customers: there is no distribution to compare")]
    Empty(String),
    #[error("feature {feature} of snapshot {snapshot} holds a value that is not finite")]
    NotFinite { snapshot: String, feature: String },
    #[error("artifact {hash} is a {kind}, not a model")]
    NotAModel { hash: String, kind: String },
    #[error("model {0} has no snapshot among its parents")]
    NoTrainingSnapshot(String),
    #[error("KS statistic: {0}")]
    Ks(#[from] KSTestError),
    #[error("report encoding: {0}")]
    Json(#[from] serde_json::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Stable,
    Moderate,
    Significant,
}

impl Verdict {
    /// The rule in the module doc.
    pub fn of(psi: f64, ks: f64) -> Verdict {
        if psi >= PSI_SIGNIFICANT {
            Verdict::Significant
        } else if psi >= PSI_MODERATE || ks >= KS_MODERATE {
            Verdict::Moderate
        } else {
            Verdict::Stable
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Verdict::Stable => "stable",
            Verdict::Moderate => "moderate",
            Verdict::Significant => "significant",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureDrift {
    pub feature: String,
    pub psi: f64,
    pub ks: f64,
    /// Share of A's customers for whom the feature is missing; `None`: unknown.
    pub missing_a: Option<f64>,
    pub missing_b: Option<f64>,
    pub verdict: Verdict,
    /// Value bins after merging equal edges (the missing bin not counted).
    pub bins: usize,
    /// The missing rule, or why the share is unknown.
    pub missing: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LeftOutReason {
    OnlyInA,
    OnlyInB,
}

impl LeftOutReason {
    pub fn name(self) -> &'static str {
        match self {
            LeftOutReason::OnlyInA => "only in A",
            LeftOutReason::OnlyInB => "only in B",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeftOut {
    pub feature: String,
    pub reason: LeftOutReason,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftReport {
    /// Hex hash of snapshot A (the reference).
    pub from: String,
    pub to: String,
    pub from_as_of: Timestamp,
    pub to_as_of: Timestamp,
    pub customers_a: usize,
    pub customers_b: usize,
    /// Shared features, in A's column order.
    pub features: Vec<FeatureDrift>,
    pub left_out: Vec<LeftOut>,
}

impl DriftReport {
    /// How many features got `v`.
    pub fn count(&self, v: Verdict) -> usize {
        self.features.iter().filter(|f| f.verdict == v).count()
    }
}

/// When a feature's value stands for "no data" rather than a measurement. Kept here, keyed
/// by [`Calc`], rather than as a field of [`FeatureDef`]: the definition-set hash covers every
/// field, and a test below holds these rules to each definition's `when_missing` text.
#[derive(Debug, Clone, PartialEq)]
pub enum MissingRule {
    /// A count, sum or age: 0 (or any value) is a measurement.
    Never,
    /// Missing when this column is 0 (e.g. an average order value without orders).
    WhenZero(String),
    /// Missing when this column is 0 and the value is the fill value (trend ratios are 1 when
    /// both windows are empty).
    WhenZeroAndValue(String, f64),
    /// No column tells.
    Unknown(&'static str),
}

impl MissingRule {
    fn describe(&self) -> String {
        match self {
            MissingRule::Never => "never missing".into(),
            MissingRule::WhenZero(c) => format!("missing when {c} = 0"),
            MissingRule::WhenZeroAndValue(c, v) => format!("missing when {c} = 0 and the value is {v}"),
            MissingRule::Unknown(why) => format!("unknown: {why}"),
        }
    }
}

/// The name of the feature computed by `calc` in the current definition set.
fn name_of(calc: Calc) -> String {
    definitions()
        .iter()
        .find(|d| d.calc == calc)
        .map_or_else(String::new, |d| d.name.clone())
}

// Called with the windows of `defs` only (30 days is one); index 0 for another is never taken.
fn window_index(days: u32) -> usize {
    WINDOWS.iter().position(|&w| w == days).unwrap_or_default()
}

/// The machine-readable form of `def.when_missing`.
pub fn missing_rule(def: &FeatureDef) -> MissingRule {
    let w30 = window_index(30);
    match def.calc {
        Calc::AvgOrderValue(w) | Calc::ReturnRate(w) => MissingRule::WhenZero(name_of(Calc::Orders(w))),
        Calc::DaysSinceLastOrder | Calc::RfmFrequency | Calc::RfmRecencyDays | Calc::RfmAgeDays => {
            MissingRule::WhenZero(name_of(Calc::LifetimeOrders))
        }
        Calc::RfmMonetary => MissingRule::WhenZero(name_of(Calc::RfmFrequency)),
        Calc::OrderTrend30 => MissingRule::WhenZeroAndValue(name_of(Calc::Orders(w30)), 1.0),
        Calc::RevenueTrend30 => MissingRule::WhenZeroAndValue(name_of(Calc::GrossRevenue(w30)), 1.0),
        Calc::SessionTrend30 => MissingRule::WhenZeroAndValue(name_of(Calc::Sessions(w30)), 1.0),
        Calc::DaysSinceLastSession => MissingRule::Unknown("no column counts sessions over the whole history"),
        Calc::Orders(_)
        | Calc::GrossRevenue(_)
        | Calc::NetRevenue(_)
        | Calc::Returns(_)
        | Calc::Sessions(_)
        | Calc::SessionMinutes(_)
        | Calc::PageViews(_)
        | Calc::ActiveDays(_)
        | Calc::TenureDays
        | Calc::LifetimeOrders
        | Calc::LifetimeRevenue => MissingRule::Never,
    }
}

/// Rules by feature name, for the current definition set (snapshots carry names, not calcs).
fn rule_for(feature: &str) -> MissingRule {
    static RULES: OnceLock<Vec<(String, MissingRule)>> = OnceLock::new();
    RULES
        .get_or_init(|| {
            definitions()
                .iter()
                .map(|d| (d.name.clone(), missing_rule(d)))
                .collect()
        })
        .iter()
        .find(|(n, _)| n == feature)
        .map_or(MissingRule::Unknown("not in the current definition set"), |(_, r)| {
            r.clone()
        })
}

fn column(s: &Snapshot, j: usize) -> Vec<f64> {
    let w = s.features.len();
    s.matrix.values.iter().skip(j).step_by(w).copied().collect()
}

/// Which rows of `s` miss `feature`, or why that is unknown.
fn missing_mask(s: &Snapshot, side: &str, values: &[f64], rule: &MissingRule) -> Result<Vec<bool>, String> {
    let indicator = |c: &str| {
        s.features
            .iter()
            .position(|f| f == c)
            .map(|j| column(s, j))
            .ok_or_else(|| format!("unknown: snapshot {side} lacks {c}"))
    };
    match rule {
        MissingRule::Never => Ok(vec![false; values.len()]),
        MissingRule::WhenZero(c) => Ok(indicator(c)?.iter().map(|&x| x == 0.0).collect()),
        MissingRule::WhenZeroAndValue(c, fill) => Ok(indicator(c)?
            .iter()
            .zip(values)
            .map(|(&x, &v)| x == 0.0 && v == *fill)
            .collect()),
        MissingRule::Unknown(_) => Err(rule.describe()),
    }
}

/// A's deciles (R-8, `statrs`), equal ones merged. Empty when A has no value.
fn edges(present_a: Vec<f64>) -> Vec<f64> {
    if present_a.is_empty() {
        return Vec::new();
    }
    let mut data = Data::new(present_a);
    // Quantiles grow with τ, so equal edges are adjacent.
    let mut e: Vec<f64> = (1..BINS).map(|i| data.quantile(i as f64 / BINS as f64)).collect();
    e.dedup();
    e
}

/// Counts per bin: bin k holds `(edges[k-1], edges[k]]`, bin 0 everything ≤ the first edge.
fn bin_counts<'v>(values: impl Iterator<Item = &'v f64>, edges: &[f64]) -> Vec<usize> {
    let mut counts = vec![0; edges.len() + 1];
    for &x in values {
        counts[edges.partition_point(|&e| e < x)] += 1;
    }
    counts
}

/// PSI over bin counts of A and B (same bins), shares floored at [`SHARE_FLOOR`].
fn psi(a: &[usize], b: &[usize]) -> f64 {
    let (na, nb) = (
        a.iter().sum::<usize>().max(1) as f64,
        b.iter().sum::<usize>().max(1) as f64,
    );
    a.iter()
        .zip(b)
        .map(|(&ca, &cb)| {
            let (pa, pb) = ((ca as f64 / na).max(SHARE_FLOOR), (cb as f64 / nb).max(SHARE_FLOOR));
            (pb - pa) * (pb / pa).ln()
        })
        .sum()
}

fn present(values: &[f64], missing: Option<&[bool]>) -> Vec<f64> {
    match missing {
        Some(m) => values
            .iter()
            .zip(m)
            .filter(|(_, &miss)| !miss)
            .map(|(&x, _)| x)
            .collect(),
        None => values.to_vec(),
    }
}

fn share(mask: &[bool]) -> f64 {
    mask.iter().filter(|&&m| m).count() as f64 / mask.len().max(1) as f64
}

/// One shared feature: its name and its column in A and in B.
struct Shared<'s> {
    name: &'s str,
    ja: usize,
    jb: usize,
}

fn feature_drift(a: &Snapshot, b: &Snapshot, f: &Shared) -> Result<FeatureDrift, DriftError> {
    let (va, vb) = (column(a, f.ja), column(b, f.jb));
    let rule = rule_for(f.name);
    let (ma, mb) = (missing_mask(a, "A", &va, &rule), missing_mask(b, "B", &vb, &rule));
    let missing = match (&ma, &mb) {
        (Err(why), _) | (_, Err(why)) => why.clone(),
        _ => rule.describe(),
    };
    let (missing_a, missing_b) = (ma.as_deref().ok().map(share), mb.as_deref().ok().map(share));
    // Without both masks there is no missing bin: every value counts as present.
    let (ma, mb) = match (ma, mb) {
        (Ok(x), Ok(y)) => (Some(x), Some(y)),
        _ => (None, None),
    };
    let (pa, pb) = (present(&va, ma.as_deref()), present(&vb, mb.as_deref()));
    let e = edges(pa.clone());
    let mut ca = bin_counts(pa.iter(), &e);
    let mut cb = bin_counts(pb.iter(), &e);
    if let (Some(ma), Some(mb)) = (&ma, &mb) {
        ca.push(ma.len() - pa.len());
        cb.push(mb.len() - pb.len());
    }
    let psi = psi(&ca, &cb);
    let ks = ks_statistic(va, vb)?;
    Ok(FeatureDrift {
        feature: f.name.to_string(),
        psi,
        ks,
        missing_a,
        missing_b,
        verdict: Verdict::of(psi, ks),
        bins: e.len() + 1,
        missing,
    })
}

/// `D = max(D+, D−)` from `statrs`' one-sided tests. Not `TwoSidedAsymptotic`: in statrs
/// 0.19.1 its p-value series never ends when `D = 0` (identical distributions hang forever).
/// Sorting first makes statrs' own sorts (stable, run-detecting) linear.
fn ks_statistic(mut a: Vec<f64>, mut b: Vec<f64>) -> Result<f64, DriftError> {
    a.sort_unstable_by(f64::total_cmp);
    b.sort_unstable_by(f64::total_cmp);
    let (minus, _) = ks_twosample(
        a.clone(),
        b.clone(),
        KSTwoSampleAlternativeMethod::LessAsymptotic,
        NaNPolicy::Error,
    )?;
    let (plus, _) = ks_twosample(a, b, KSTwoSampleAlternativeMethod::GreaterAsymptotic, NaNPolicy::Error)?;
    Ok(minus.max(plus))
}

fn check(s: &Snapshot, name: &str) -> Result<(), DriftError> {
    if s.matrix.customers.is_empty() {
        return Err(DriftError::Empty(name.to_string()));
    }
    if let Some(j) = s.matrix.values.iter().position(|v| !v.is_finite()) {
        return Err(DriftError::NotFinite {
            snapshot: name.to_string(),
            // A value exists, so a feature does: the empty name is never taken.
            feature: s.features.get(j % s.features.len().max(1)).cloned().unwrap_or_default(),
        });
    }
    Ok(())
}

/// Features of `x` that `y` lacks.
fn only_in(x: &Snapshot, y: &Snapshot, reason: LeftOutReason) -> Vec<LeftOut> {
    x.features
        .iter()
        .filter(|f| !y.features.contains(f))
        .map(|f| LeftOut {
            feature: f.clone(),
            reason,
        })
        .collect()
}

/// The report of A against B, naming them `from` and `to`. Features are computed in parallel
/// (each is independent; the result does not depend on the thread count).
fn report(a: &Snapshot, b: &Snapshot, from: String, to: String) -> Result<DriftReport, DriftError> {
    check(a, &from)?;
    check(b, &to)?;
    let shared: Vec<Shared> = a
        .features
        .iter()
        .enumerate()
        .filter_map(|(ja, name)| {
            let jb = b.features.iter().position(|g| g == name)?;
            Some(Shared { name, ja, jb })
        })
        .collect();
    if shared.is_empty() {
        return Err(DriftError::NoSharedFeatures { from, to });
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = shared.len().div_ceil(threads);
    let features = std::thread::scope(|scope| {
        let handles: Vec<_> = shared
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(|f| feature_drift(a, b, f)).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect::<Result<Vec<_>, _>>()
    })?;
    let mut left_out = only_in(a, b, LeftOutReason::OnlyInA);
    left_out.extend(only_in(b, a, LeftOutReason::OnlyInB));
    Ok(DriftReport {
        from,
        to,
        from_as_of: a.as_of,
        to_as_of: b.as_of,
        customers_a: a.matrix.customers.len(),
        customers_b: b.matrix.customers.len(),
        features,
        left_out,
    })
}

/// The artifact name a snapshot would be stored under.
fn snapshot_hash(s: &Snapshot) -> String {
    hex(&cis_storage::artifacts::content_hash(
        snapshot::KIND,
        snapshot::SCHEMA,
        s.as_of.micros(),
        &[],
        &s.encode(),
    ))
}

/// Drift of B against A (the reference), without storing anything. `from`/`to` are the names
/// the snapshots would be stored under.
pub fn compare(a: &Snapshot, b: &Snapshot) -> Result<DriftReport, DriftError> {
    report(a, b, snapshot_hash(a), snapshot_hash(b))
}

fn artifact(a: &ArtifactHash, b: &ArtifactHash, r: &DriftReport) -> Result<NewArtifact, DriftError> {
    Ok(NewArtifact {
        kind: KIND.into(),
        schema: SCHEMA,
        as_of: r.from_as_of.max(r.to_as_of).micros(),
        parents: vec![*a, *b],
        body: serde_json::to_vec(r)?,
        created_at: time::now().micros(),
        provenance: Vec::new(),
    })
}

/// Compares stored snapshots A and B and stores the report; returns its hash and whether it
/// was new. Nothing is stored when the comparison fails.
pub fn create(
    store: &Store,
    a: &ArtifactHash,
    b: &ArtifactHash,
) -> Result<(ArtifactHash, bool, DriftReport), DriftError> {
    let (artifact, r) = build(store, a, b)?;
    let (hash, new) = store.artifacts().put(artifact)?;
    tracing::info!(report = %hex(&hash), new, significant = r.count(Verdict::Significant), "drift report");
    Ok((hash, new, r))
}

/// The report of stored snapshots A and B and the artifact it would be stored as (an audit
/// re-derives a stored report with it).
pub fn build(store: &Store, a: &ArtifactHash, b: &ArtifactHash) -> Result<(NewArtifact, DriftReport), DriftError> {
    let (_, sa) = snapshot::load(store, a)?;
    let (_, sb) = snapshot::load(store, b)?;
    let r = report(&sa, &sb, hex(a), hex(b))?;
    Ok((artifact(a, b, &r)?, r))
}

/// The snapshot a model was trained on: among its parents, the snapshot with the latest as-of.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingSnapshot {
    pub hash: ArtifactHash,
    pub as_of: Timestamp,
    /// How many of the model's parents are snapshots.
    pub of: usize,
}

pub fn training_snapshot(store: &Store, model: &ArtifactHash) -> Result<TrainingSnapshot, DriftError> {
    let m = store
        .artifacts()
        .get(model)?
        .ok_or_else(|| SnapshotError::Artifact(ArtifactError::NotFound(hex(model))))?;
    if ModelKind::of_artifact(&m.kind).is_none() {
        return Err(DriftError::NotAModel {
            hash: hex(model),
            kind: m.kind,
        });
    }
    let mut snapshots = Vec::new();
    for p in &m.parents {
        if let Some(a) = store.artifacts().get(p)?.filter(|a| a.kind == snapshot::KIND) {
            snapshots.push((Timestamp::from_micros(a.as_of), a.hash));
        }
    }
    let of = snapshots.len();
    // Latest as-of; among equal as-ofs the last by hash, so the choice is deterministic.
    let (as_of, hash) = snapshots
        .into_iter()
        .max()
        .ok_or_else(|| DriftError::NoTrainingSnapshot(hex(model)))?;
    Ok(TrainingSnapshot { hash, as_of, of })
}

/// The stored report comparing exactly `a` then `b`, if any.
fn stored_report(
    store: &Store,
    a: &ArtifactHash,
    b: &ArtifactHash,
    as_of: Timestamp,
) -> Result<Option<DriftReport>, DriftError> {
    for r in store.artifacts().list(KIND, as_of.micros())?.iter().rev() {
        if r.as_of != as_of.micros() {
            break;
        }
        let Some(art) = store.artifacts().get(&r.hash)? else {
            continue;
        };
        if art.schema == SCHEMA && art.parents == [*a, *b] {
            return Ok(Some(serde_json::from_slice(&art.body)?));
        }
    }
    Ok(None)
}

/// The two most recent snapshots with as-of <= `as_of` (older = A), compared; a stored drift report for
/// that pair is reused if present, otherwise computed without storing. None if fewer than two snapshots.
pub fn latest_pair(store: &Store, as_of: Timestamp) -> Result<Option<DriftReport>, DriftError> {
    let list = snapshot::list(store, as_of)?;
    let [.., (a, a_as_of), (b, b_as_of)] = list.as_slice() else {
        return Ok(None);
    };
    if let Some(r) = stored_report(store, a, b, (*a_as_of).max(*b_as_of))? {
        return Ok(Some(r));
    }
    let (_, sa) = snapshot::load(store, a)?;
    let (_, sb) = snapshot::load(store, b)?;
    Ok(Some(report(&sa, &sb, hex(a), hex(b))?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_rules_follow_the_when_missing_texts() {
        let names: Vec<&str> = definitions().iter().map(|d| d.name.as_str()).collect();
        for d in definitions() {
            let rule = missing_rule(d);
            let text = d.when_missing;
            let agrees = match &rule {
                MissingRule::Never => text == "0" || text.starts_with("never missing"),
                MissingRule::WhenZero(c) if c.starts_with("orders_") || c == "lifetime_orders" => {
                    text == "0 when there is no order" || text == "tenure_days when there is no order"
                }
                MissingRule::WhenZero(c) => text == format!("0 when {c} is 0"),
                MissingRule::WhenZeroAndValue(_, v) => *v == 1.0 && text == "1 when both are 0",
                MissingRule::Unknown(_) => text == "tenure_days when there is no session",
            };
            assert!(agrees, "{}: rule {rule:?} vs '{text}'", d.name);
            if let MissingRule::WhenZero(c) | MissingRule::WhenZeroAndValue(c, _) = &rule {
                assert!(
                    names.contains(&c.as_str()),
                    "{}: indicator {c} is not a feature",
                    d.name
                );
            }
        }
        assert_eq!(
            missing_rule(&definitions()[3]),
            MissingRule::WhenZero("orders_7d".into()),
            "avg_order_value_7d"
        );
    }

    #[test]
    fn point_masses_merge_edges() {
        // Six zeros then 1..4. R-8: h = (10 + 1/3)τ + 1/3, so τ = 0.1..0.5 fall among the zeros
        // (edge 0, merged), τ = 0.6 gives h = 6.5333 → 0 + 0.5333·(1 − 0) = 0.5333, τ = 0.7
        // 1.5667, τ = 0.8 2.6, τ = 0.9 3.6333.
        let e = edges(vec![0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 2.0, 3.0, 4.0]);
        let want = [0.0, 0.5 + 1.0 / 30.0, 1.5 + 2.0 / 30.0, 2.6, 3.6 + 1.0 / 30.0];
        assert_eq!(e.len(), want.len(), "{e:?}");
        for (x, y) in e.iter().zip(want) {
            assert!((x - y).abs() < 1e-12, "{e:?}");
        }
        // Right-closed: the zeros are all in bin 0, 4 is in the last bin.
        assert_eq!(bin_counts([0.0, 0.0, 1.0, 4.0, 9.0].iter(), &e), vec![2, 0, 1, 0, 0, 2]);
        // A constant feature: one edge, two bins.
        assert_eq!(edges(vec![7.0; 5]), vec![7.0]);
        assert!(edges(Vec::new()).is_empty());
    }

    #[test]
    fn empty_bins_are_floored() {
        // Bin 2 is empty in A, bin 1 in both: only bin 0 and 2 contribute.
        // (0.5 − 1)·ln(0.5/1) + (0.5 − 1e-4)·ln(0.5/1e-4) = 0.346574 + 4.257744 = 4.604318.
        let want = (0.5 - 1.0) * (0.5f64).ln() + (0.5 - 1e-4) * (0.5f64 / 1e-4).ln();
        let got = psi(&[4, 0, 0], &[2, 0, 2]);
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        assert!((got - 4.604318).abs() < 1e-6, "{got}");
        assert_eq!(psi(&[3, 0, 5], &[3, 0, 5]), 0.0);
    }

    #[test]
    fn ks_of_identical_samples_is_zero_and_returns() {
        // D = 0 hangs statrs' two-sided asymptotic p-value; the one-sided pair does not.
        let x = vec![3.0, 1.0, 2.0, 2.0];
        assert_eq!(ks_statistic(x.clone(), x).expect("ks"), 0.0);
        // F_A − F_B peaks at 2 (3/4 − 1/4) and F_B − F_A never exceeds 0: D = 0.5.
        let d = ks_statistic(vec![1.0, 2.0, 2.0, 3.0], vec![2.0, 3.0, 3.0, 3.0]).expect("ks");
        assert!((d - 0.5).abs() < 1e-12, "{d}");
    }

    #[test]
    fn verdict_thresholds() {
        assert_eq!(Verdict::of(0.0999, 0.0), Verdict::Stable);
        assert_eq!(Verdict::of(0.1, 0.0), Verdict::Moderate);
        assert_eq!(Verdict::of(0.2499, 0.9), Verdict::Moderate);
        assert_eq!(Verdict::of(0.25, 0.0), Verdict::Significant);
        assert_eq!(
            Verdict::of(0.01, 0.1),
            Verdict::Moderate,
            "KS raises a PSI-stable feature"
        );
        assert_eq!(Verdict::of(0.01, 0.0999), Verdict::Stable);
    }
}
