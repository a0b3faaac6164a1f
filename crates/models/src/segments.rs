//! Behavioural segments: KMeans (linfa-clustering) on standardised RFM and behaviour
//! features, k given or chosen by silhouette; each segment named from its centroid.
//!
//! Skewed counts and money are `ln(1 + x)`-transformed before standardising, so a few very
//! large customers do not own the distance. Seeded: the same snapshot and seed give the same
//! model (and hash).

use linfa::prelude::*;
use linfa::DatasetBase;
use linfa_clustering::KMeans;
use ndarray::{Array1, Array2};
use rand::seq::index::sample;
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256Plus;
use serde::{Deserialize, Serialize};

use crate::standardise::Standardiser;
use crate::{columns, FitError, ModelError, ParamError};
use cis_features::snapshot::Snapshot;

/// The features segments are built on, in this order; the first six are log-transformed.
pub const FEATURES: [&str; 8] = [
    "days_since_last_order",
    "lifetime_orders",
    "lifetime_revenue",
    "tenure_days",
    "sessions_90d",
    "orders_90d",
    "return_rate_90d",
    "order_trend_30d",
];
const LOGGED: usize = 6;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentParams {
    /// A fixed number of segments, or `None` to choose by silhouette over `k_range`.
    pub k: Option<usize>,
    pub k_range: (usize, usize),
    pub seed: u64,
    pub max_iterations: u64,
    /// Rows the silhouette is computed on (it is quadratic in rows).
    pub silhouette_sample: usize,
}

impl Default for SegmentParams {
    fn default() -> Self {
        SegmentParams {
            k: None,
            k_range: (3, 6),
            seed: 42,
            max_iterations: 200,
            silhouette_sample: 2000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    pub id: usize,
    pub name: String,
    pub description: String,
    pub size: usize,
    /// Centroid in raw feature units (mean of the members), in [`FEATURES`] order.
    pub centroid: Vec<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentModel {
    pub params: SegmentParams,
    pub features: Vec<String>,
    pub definition_set: String,
    pub standardiser: Standardiser,
    /// Centroids in standardised space, one row per segment.
    pub centroids: Vec<Vec<f64>>,
    pub k: usize,
    /// Silhouette of the chosen k on the sample, and of every k tried.
    pub silhouette: f64,
    pub silhouette_by_k: Vec<(usize, f64)>,
    pub segments: Vec<Segment>,
}

fn transform(raw: &[f64]) -> Vec<f64> {
    raw.iter()
        .enumerate()
        .map(|(j, v)| if j < LOGGED { v.max(0.0).ln_1p() } else { *v })
        .collect()
}

impl SegmentParams {
    pub fn validate(&self) -> Result<(), ModelError> {
        let (lo, hi) = self.k.map_or(self.k_range, |k| (k, k));
        if lo < 2 || hi < lo || hi > 20 {
            return Err(ParamError::SegmentCount { lo, hi }.into());
        }
        if self.max_iterations == 0 || self.silhouette_sample < 10 {
            return Err(ParamError::SegmentSearch.into());
        }
        Ok(())
    }

    pub fn fit(&self, snapshot: &Snapshot) -> Result<SegmentModel, ModelError> {
        self.validate()?;
        let names: Vec<String> = FEATURES.map(String::from).to_vec();
        let cols = columns(&snapshot.features, &names)?;
        let w = snapshot.features.len();
        let raw: Vec<Vec<f64>> = (0..snapshot.matrix.customers.len())
            .map(|i| cols.iter().map(|&j| snapshot.matrix.values[i * w + j]).collect())
            .collect();
        let (lo, hi) = self.k.map_or(self.k_range, |k| (k, k));
        if raw.len() < hi.max(2) * 2 {
            return Err(FitError::TooFewCustomers {
                customers: raw.len(),
                segments: hi,
            }
            .into());
        }
        let flat: Vec<f64> = raw.iter().flat_map(|r| transform(r)).collect();
        let standardiser = Standardiser::fit(&flat, FEATURES.len());
        let z: Vec<f64> = flat
            .chunks_exact(FEATURES.len())
            .flat_map(|r| standardiser.apply(r).collect::<Vec<_>>())
            .collect();
        let x = Array2::from_shape_vec((raw.len(), FEATURES.len()), z).map_err(FitError::from)?;
        let mut rng = Xoshiro256Plus::seed_from_u64(self.seed);
        let sample_rows = sample(&mut rng, raw.len(), self.silhouette_sample.min(raw.len())).into_vec();
        let x_sample = x.select(ndarray::Axis(0), &sample_rows);

        let mut best: Option<(f64, usize, Array2<f64>)> = None;
        let mut silhouette_by_k = Vec::new();
        for k in lo..=hi {
            let model = KMeans::params_with_rng(k, Xoshiro256Plus::seed_from_u64(self.seed))
                .max_n_iterations(self.max_iterations)
                .n_runs(3)
                .fit(&DatasetBase::from(x.clone()))
                .map_err(FitError::from)?;
            let labels: Array1<usize> = model.predict(&x_sample);
            let score = DatasetBase::new(x_sample.clone(), labels)
                .silhouette_score()
                .map_err(FitError::from)?;
            silhouette_by_k.push((k, score));
            if best.as_ref().is_none_or(|b| score > b.0) {
                best = Some((score, k, model.centroids().clone()));
            }
        }
        let (silhouette, k, centroids) = best.ok_or(FitError::NoSegmentCount)?;
        let centroid_rows: Vec<Vec<f64>> = centroids.outer_iter().map(|r| r.to_vec()).collect();
        let mut members: Vec<Vec<usize>> = vec![Vec::new(); k];
        for (i, row) in x.outer_iter().enumerate() {
            members[nearest(&centroid_rows, row.as_slice().unwrap_or(&[]))].push(i);
        }
        let segments = name_segments(&centroid_rows, &members, &raw);
        Ok(SegmentModel {
            params: self.clone(),
            features: names,
            definition_set: cis_storage::hex(&snapshot.definition_set),
            standardiser,
            centroids: centroid_rows,
            k,
            silhouette,
            silhouette_by_k,
            segments,
        })
    }
}

fn nearest(centroids: &[Vec<f64>], z: &[f64]) -> usize {
    let dist = |c: &Vec<f64>| c.iter().zip(z).map(|(a, b)| (a - b) * (a - b)).sum::<f64>();
    centroids
        .iter()
        .enumerate()
        .min_by(|a, b| dist(a.1).total_cmp(&dist(b.1)))
        .map_or(0, |(i, _)| i)
}

/// An archetype and how strongly a standardised centroid (in [`FEATURES`] order: recency,
/// orders, revenue, tenure, sessions, recent orders, return rate, order trend) matches it;
/// `None` when it does not qualify at all.
type Archetype = (&'static str, &'static str, fn(&[f64]) -> Option<f64>);

/// Picked in this order, each by the best-scoring segment still unnamed.
const ARCHETYPES: [Archetype; 5] = [
    ("loyal high value", "frequent, recent, high-spending customers", |c| {
        Some(c[2] + c[1] - c[0])
    }),
    ("lapsed", "long since the last order, few orders: likely gone", |c| {
        (c[0] > 0.0).then(|| c[0] - c[1])
    }),
    ("new", "recently acquired customers", |c| (c[3] < -0.5).then(|| -c[3])),
    (
        "at risk",
        "activity falling off: orders and sessions getting rarer",
        |c| Some(c[0] - c[7] - c[4]),
    ),
    ("occasional", "few, small orders now and then", |c| {
        (c[1] + c[2] < 0.0).then(|| -(c[1] + c[2]))
    }),
];

/// Names segments from their standardised centroids: archetypes are taken in order, each by
/// the best-matching segment not yet named, so names never repeat; what is left is "regular"
/// (then "segment N").
fn name_segments(centroids: &[Vec<f64>], members: &[Vec<usize>], raw: &[Vec<f64>]) -> Vec<Segment> {
    let mut names: Vec<Option<(String, &str)>> = vec![None; centroids.len()];
    for (name, why, score) in ARCHETYPES {
        let best = (0..centroids.len())
            .filter(|&s| names[s].is_none())
            .filter_map(|s| score(&centroids[s]).map(|v| (v, s)))
            .max_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1)));
        if let Some((_, s)) = best {
            names[s] = Some((name.to_string(), why));
        }
    }
    let mut regulars = 0;
    names
        .into_iter()
        .enumerate()
        .map(|(id, named)| {
            let (name, why) = named.unwrap_or_else(|| {
                regulars += 1;
                let name = if regulars == 1 {
                    "regular".to_string()
                } else {
                    format!("segment {}", id + 1)
                };
                (name, "steady customers near the middle of every dimension")
            });
            let size = members[id].len();
            let mut centroid = vec![0.0; FEATURES.len()];
            for &i in &members[id] {
                for (m, v) in centroid.iter_mut().zip(&raw[i]) {
                    *m += v / size.max(1) as f64;
                }
            }
            let description = format!(
                "{why}; {size} customers, on average {:.0} days since the last order, {:.1} orders, {:.2} revenue",
                centroid[0], centroid[1], centroid[2]
            );
            Segment {
                id,
                name,
                description,
                size,
                centroid,
            }
        })
        .collect()
}

impl SegmentModel {
    /// The segment of one snapshot row given in [`FEATURES`] order (raw units).
    pub fn assign(&self, raw: &[f64]) -> &Segment {
        let z: Vec<f64> = self.standardiser.apply(&transform(raw)).collect();
        &self.segments[nearest(&self.centroids, &z)]
    }
}
