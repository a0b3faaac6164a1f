//! Behavioural segments: KMeans (linfa-clustering) on standardised RFM and behaviour
//! features, k given or chosen by silhouette, or HDBSCAN (the `hdbscan` crate) on the same
//! matrix; each segment named from its centroid.
//!
//! HDBSCAN leaves customers in no dense region as noise: they are the segment
//! [`UNSEGMENTED`]. It has no native predict, so a customer is assigned (when scoring, the
//! training snapshot's customers too) to the nearest cluster centroid if no farther from it
//! than that cluster's farthest member was, and to [`UNSEGMENTED`] otherwise. Its exact form
//! is quadratic in rows, so fits above [`HDBSCAN_MAX_ROWS`] are refused rather than sampled.
//!
//! Skewed counts and money are `ln(1 + x)`-transformed before standardising, so a few very
//! large customers do not own the distance. Seeded: the same snapshot and seed give the same
//! model (and hash).

use hdbscan::{Hdbscan, HdbscanHyperParams};
use linfa::prelude::*;
use linfa::DatasetBase;
use linfa_clustering::KMeans;
use ndarray::{Array1, Array2};
use rand::seq::index::sample;
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256Plus;
use serde::{Deserialize, Serialize};

use crate::embedding::EmbeddingModel;
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

/// The segment of the customers HDBSCAN calls noise (and of new ones far from every cluster).
pub const UNSEGMENTED: &str = "unsegmented";

/// The most rows an HDBSCAN fit takes: the crate builds its minimum spanning tree by Prim's
/// algorithm over all pairs, so time is quadratic in rows (memory stays linear). Measured in a
/// release build on 8 columns: 0.35 s at 5,000 rows, 1.3 s at 10,000, 5.0 s (9 MB peak) at
/// 20,000; 40,000 would take some 20 s. Refused above rather than sampled, so every customer
/// of the snapshot is clustered.
pub const HDBSCAN_MAX_ROWS: usize = 20_000;

/// How segments are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SegmentMethod {
    /// KMeans, k given or chosen by silhouette (the models before HDBSCAN were all this).
    #[default]
    Kmeans,
    /// HDBSCAN with scikit-learn's meaning of both parameters (`min_samples` counts the point
    /// itself).
    Hdbscan {
        min_cluster_size: usize,
        min_samples: usize,
    },
}

impl SegmentMethod {
    fn is_kmeans(&self) -> bool {
        *self == SegmentMethod::Kmeans
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentParams {
    /// A fixed number of segments, or `None` to choose by silhouette over `k_range`.
    pub k: Option<usize>,
    pub k_range: (usize, usize),
    pub seed: u64,
    pub max_iterations: u64,
    /// Rows the silhouette is computed on (it is quadratic in rows).
    pub silhouette_sample: usize,
    /// Not written for KMeans, so the models before HDBSCAN keep their bytes (and hashes).
    #[serde(default, skip_serializing_if = "SegmentMethod::is_kmeans")]
    pub method: SegmentMethod,
    /// The embedding model (hash) whose vectors are clustered instead of [`FEATURES`]; segments
    /// are still named and described by [`FEATURES`]. Not written when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding: Option<String>,
}

impl Default for SegmentParams {
    fn default() -> Self {
        SegmentParams {
            k: None,
            k_range: (3, 6),
            seed: 42,
            max_iterations: 200,
            silhouette_sample: 2000,
            method: SegmentMethod::Kmeans,
            embedding: None,
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
    /// HDBSCAN only (not written for KMeans, whose models keep their bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub density: Option<DensityFit>,
    /// With [`SegmentParams::embedding`]: that model, which scoring embeds customers with (the
    /// centroids are then in its space).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding: Option<Box<EmbeddingModel>>,
}

/// What scoring needs of an HDBSCAN fit beyond the centroids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DensityFit {
    /// Per cluster, the largest distance (standardised space) of a member from its centroid.
    pub radii: Vec<f64>,
    /// The noise customers of the fit, as a segment (size 0 when there were none).
    pub unsegmented: Segment,
}

/// The standardised matrix segments are fitted on.
pub struct SegmentMatrix {
    /// Rows in [`FEATURES`] order, raw units.
    pub raw: Vec<Vec<f64>>,
    pub standardiser: Standardiser,
    /// `ln(1 + x)` of the skewed columns, then standardised: rows × [`FEATURES`].
    pub x: Array2<f64>,
    /// With an embedding: each row's vector, clustered instead of `x` (which still names them).
    pub vectors: Option<Array2<f64>>,
}

impl SegmentMatrix {
    pub fn of(snapshot: &Snapshot) -> Result<SegmentMatrix, ModelError> {
        let names: Vec<String> = FEATURES.map(String::from).to_vec();
        let cols = columns(&snapshot.features, &names)?;
        let w = snapshot.features.len();
        let raw: Vec<Vec<f64>> = (0..snapshot.matrix.customers.len())
            .map(|i| cols.iter().map(|&j| snapshot.matrix.values[i * w + j]).collect())
            .collect();
        let flat: Vec<f64> = raw.iter().flat_map(|r| transform(r)).collect();
        let standardiser = Standardiser::fit(&flat, FEATURES.len());
        let z: Vec<f64> = flat
            .chunks_exact(FEATURES.len())
            .flat_map(|r| standardiser.apply(r).collect::<Vec<_>>())
            .collect();
        let x = Array2::from_shape_vec((raw.len(), FEATURES.len()), z).map_err(FitError::from)?;
        Ok(SegmentMatrix {
            raw,
            standardiser,
            x,
            vectors: None,
        })
    }

    /// [`SegmentMatrix::of`], with the rows' vectors of `embedding` to cluster.
    pub fn embedded(snapshot: &Snapshot, embedding: &EmbeddingModel) -> Result<SegmentMatrix, ModelError> {
        let mut m = SegmentMatrix::of(snapshot)?;
        let dims = embedding.components.len();
        let v = embedding.embed_snapshot(snapshot)?;
        m.vectors = Some(Array2::from_shape_vec((m.raw.len(), dims), v).map_err(FitError::from)?);
        Ok(m)
    }

    /// The rows segments are found in: the vectors with an embedding, else `x`.
    pub fn clustered(&self) -> &Array2<f64> {
        self.vectors.as_ref().unwrap_or(&self.x)
    }

    /// The standardised centroids segments are named by: `centroids` themselves when they are in
    /// [`FEATURES`] space, else the mean of each segment's members there.
    fn naming(&self, centroids: &[Vec<f64>], members: &[Vec<usize>]) -> Vec<Vec<f64>> {
        if self.vectors.is_none() {
            return centroids.to_vec();
        }
        let rows: Vec<&[f64]> = self.x.outer_iter().map(|r| r.to_slice().unwrap_or(&[])).collect();
        members
            .iter()
            .map(|m| mean(m.iter().map(|&i| rows[i]), FEATURES.len()))
            .collect()
    }

    /// Each row's HDBSCAN cluster (`None`: noise), clusters numbered 0.. by their first row, so
    /// the labels do not depend on how the crate numbers them.
    pub fn hdbscan(&self, min_cluster_size: usize, min_samples: usize) -> Result<Vec<Option<usize>>, ModelError> {
        let n = self.raw.len();
        if n > HDBSCAN_MAX_ROWS {
            return Err(FitError::TooManyForHdbscan {
                customers: n,
                limit: HDBSCAN_MAX_ROWS,
            }
            .into());
        }
        if n < min_cluster_size.max(min_samples) {
            return Err(FitError::TooFewCustomers {
                customers: n,
                segments: 1,
            }
            .into());
        }
        let rows: Vec<Vec<f64>> = self.clustered().outer_iter().map(|r| r.to_vec()).collect();
        let hyper = HdbscanHyperParams::builder()
            .min_cluster_size(min_cluster_size)
            .min_samples(min_samples)
            .build();
        let found = Hdbscan::new(&rows, hyper).cluster().map_err(FitError::from)?;
        Ok(renumber(&found))
    }
}

fn transform(raw: &[f64]) -> Vec<f64> {
    raw.iter()
        .enumerate()
        .map(|(j, v)| if j < LOGGED { v.max(0.0).ln_1p() } else { *v })
        .collect()
}

impl SegmentParams {
    pub fn validate(&self) -> Result<(), ModelError> {
        if let SegmentMethod::Hdbscan {
            min_cluster_size,
            min_samples,
        } = self.method
        {
            if min_cluster_size < 2 || min_samples < 1 || self.k.is_some() {
                return Err(ParamError::Hdbscan {
                    min_cluster_size,
                    min_samples,
                }
                .into());
            }
        }
        let (lo, hi) = self.k.map_or(self.k_range, |k| (k, k));
        if lo < 2 || hi < lo || hi > 20 {
            return Err(ParamError::SegmentCount { lo, hi }.into());
        }
        if self.max_iterations == 0 || self.silhouette_sample < 10 {
            return Err(ParamError::SegmentSearch.into());
        }
        Ok(())
    }

    /// Fits on `snapshot`, clustering the vectors of `embedding` when the parameters name one
    /// (it must be the model they name).
    pub fn fit(&self, snapshot: &Snapshot, embedding: Option<&EmbeddingModel>) -> Result<SegmentModel, ModelError> {
        self.validate()?;
        let m = match (&self.embedding, embedding) {
            (None, None) => SegmentMatrix::of(snapshot)?,
            (Some(_), Some(e)) => SegmentMatrix::embedded(snapshot, e)?,
            _ => return Err(ParamError::SegmentEmbedding.into()),
        };
        let mut rng = Xoshiro256Plus::seed_from_u64(self.seed);
        let sample_rows = sample(&mut rng, m.raw.len(), self.silhouette_sample.min(m.raw.len())).into_vec();
        let mut model = match self.method {
            SegmentMethod::Kmeans => self.fit_kmeans(snapshot, m, &sample_rows),
            SegmentMethod::Hdbscan {
                min_cluster_size,
                min_samples,
            } => self.fit_hdbscan(snapshot, m, &sample_rows, min_cluster_size, min_samples),
        }?;
        model.embedding = embedding.cloned().map(Box::new);
        Ok(model)
    }

    fn fit_kmeans(
        &self,
        snapshot: &Snapshot,
        m: SegmentMatrix,
        sample_rows: &[usize],
    ) -> Result<SegmentModel, ModelError> {
        let x = m.clustered();
        let (lo, hi) = self.k.map_or(self.k_range, |k| (k, k));
        let raw = &m.raw;
        if raw.len() < hi.max(2) * 2 {
            return Err(FitError::TooFewCustomers {
                customers: raw.len(),
                segments: hi,
            }
            .into());
        }
        let x_sample = x.select(ndarray::Axis(0), sample_rows);

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
        let segments = name_segments(&m.naming(&centroid_rows, &members), &members, raw);
        Ok(SegmentModel {
            params: self.clone(),
            features: FEATURES.map(String::from).to_vec(),
            definition_set: cis_storage::hex(&snapshot.definition_set),
            standardiser: m.standardiser.clone(),
            centroids: centroid_rows,
            k,
            silhouette,
            silhouette_by_k,
            segments,
            density: None,
            embedding: None,
        })
    }

    /// HDBSCAN on the whole matrix ([`SegmentMatrix::hdbscan`]): its clusters become segments
    /// named from their centroids, its noise the [`UNSEGMENTED`] segment.
    fn fit_hdbscan(
        &self,
        snapshot: &Snapshot,
        m: SegmentMatrix,
        sample_rows: &[usize],
        min_cluster_size: usize,
        min_samples: usize,
    ) -> Result<SegmentModel, ModelError> {
        let labels = m.hdbscan(min_cluster_size, min_samples)?;
        let (raw, x) = (&m.raw, m.clustered());
        let rows: Vec<Vec<f64>> = x.outer_iter().map(|r| r.to_vec()).collect();
        let mut members: Vec<Vec<usize>> = Vec::new();
        let mut noise = Vec::new();
        for (row, label) in labels.iter().enumerate() {
            match *label {
                Some(id) if id < members.len() => members[id].push(row),
                Some(_) => members.push(vec![row]),
                None => noise.push(row),
            }
        }
        let k = members.len();
        if k == 0 {
            return Err(FitError::AllNoise { customers: raw.len() }.into());
        }
        let centroids: Vec<Vec<f64>> = members
            .iter()
            .map(|m| mean(m.iter().map(|&i| rows[i].as_slice()), x.ncols()))
            .collect();
        let radii = members
            .iter()
            .zip(&centroids)
            .map(|(m, c)| {
                m.iter()
                    .map(|&i| squared_distance(c, &rows[i]).sqrt())
                    .fold(0.0, f64::max)
            })
            .collect();
        // The silhouette of the clustered customers of the sample (noise has no cluster to be
        // near); undefined with one cluster, reported as 0.
        let clustered: Vec<usize> = sample_rows.iter().copied().filter(|&i| labels[i].is_some()).collect();
        let silhouette = if k >= 2 && clustered.len() >= 2 {
            let sample_labels: Array1<usize> = clustered.iter().filter_map(|&i| labels[i]).collect();
            DatasetBase::new(x.select(ndarray::Axis(0), &clustered), sample_labels)
                .silhouette_score()
                .map_err(FitError::from)?
        } else {
            0.0
        };
        let segments = name_segments(&m.naming(&centroids, &members), &members, raw);
        let unsegmented = segment(
            k,
            UNSEGMENTED.to_string(),
            "in no dense cluster: HDBSCAN's noise",
            &noise,
            raw,
        );
        tracing::info!(clusters = k, noise = noise.len(), "HDBSCAN segments");
        Ok(SegmentModel {
            params: self.clone(),
            features: FEATURES.map(String::from).to_vec(),
            definition_set: cis_storage::hex(&snapshot.definition_set),
            standardiser: m.standardiser.clone(),
            centroids,
            k,
            silhouette,
            silhouette_by_k: Vec::new(),
            segments,
            density: Some(DensityFit { radii, unsegmented }),
            embedding: None,
        })
    }
}

/// Cluster labels (`-1` noise) renumbered 0.. in the order of each cluster's first row.
fn renumber(found: &[i32]) -> Vec<Option<usize>> {
    let mut ids: Vec<i32> = Vec::new();
    found
        .iter()
        .map(|&label| {
            (label >= 0).then(|| {
                ids.iter().position(|&l| l == label).unwrap_or_else(|| {
                    ids.push(label);
                    ids.len() - 1
                })
            })
        })
        .collect()
}

/// The mean of rows `width` wide (zeros for none).
fn mean<'a>(rows: impl ExactSizeIterator<Item = &'a [f64]>, width: usize) -> Vec<f64> {
    let n = rows.len().max(1) as f64;
    let mut m = vec![0.0; width];
    for r in rows {
        for (m, v) in m.iter_mut().zip(r) {
            *m += v / n;
        }
    }
    m
}

fn squared_distance(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

fn nearest(centroids: &[Vec<f64>], z: &[f64]) -> usize {
    let dist = |c: &Vec<f64>| squared_distance(c, z);
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
            segment(id, name, why, &members[id], raw)
        })
        .collect()
}

/// A segment of these member rows, described by their mean in raw units.
fn segment(id: usize, name: String, why: &str, members: &[usize], raw: &[Vec<f64>]) -> Segment {
    let size = members.len();
    let centroid = mean(members.iter().map(|&i| raw[i].as_slice()), FEATURES.len());
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
}

impl SegmentModel {
    /// The segment of one snapshot row given in [`FEATURES`] order (raw units), for a model
    /// fitted on [`FEATURES`] (see [`SegmentModel::assign_all`]).
    pub fn assign(&self, raw: &[f64]) -> &Segment {
        let z: Vec<f64> = self.standardiser.apply(&transform(raw)).collect();
        self.nearest_segment(&z)
    }

    /// The segment of every customer of `snapshot`, in row order: of their [`FEATURES`], or of
    /// their vector when the model clusters an embedding's.
    pub fn assign_all(&self, snapshot: &Snapshot) -> Result<Vec<&Segment>, ModelError> {
        if let Some(e) = &self.embedding {
            let dims = e.components.len().max(1);
            let v = e.embed_snapshot(snapshot)?;
            return Ok(v.chunks_exact(dims).map(|z| self.nearest_segment(z)).collect());
        }
        let w = snapshot.features.len();
        let cols = columns(&snapshot.features, &self.features)?;
        Ok((0..snapshot.matrix.customers.len())
            .map(|i| {
                let raw: Vec<f64> = cols.iter().map(|&j| snapshot.matrix.values[i * w + j]).collect();
                self.assign(&raw)
            })
            .collect())
    }

    /// The segment of the centroid nearest `z` (a point in the centroids' space), or
    /// [`UNSEGMENTED`] when HDBSCAN's cluster there does not reach it.
    fn nearest_segment(&self, z: &[f64]) -> &Segment {
        let s = nearest(&self.centroids, z);
        match &self.density {
            Some(d) if squared_distance(&self.centroids[s], z).sqrt() > d.radii[s] => &d.unsegmented,
            _ => &self.segments[s],
        }
    }

    /// The method in one line: `KMeans, k = 4`, or HDBSCAN's parameters, clusters and noise;
    /// then what was clustered when it was an embedding.
    pub fn method_summary(&self) -> String {
        let on = self.params.embedding.as_ref().map_or_else(String::new, |h| {
            let dims = self.embedding.as_ref().map_or(0, |e| e.components.len());
            format!(", on the {dims}-dimension embedding {}", &h[..h.len().min(16)])
        });
        let method = match self.params.method {
            SegmentMethod::Kmeans => format!("KMeans, k = {}", self.k),
            SegmentMethod::Hdbscan {
                min_cluster_size,
                min_samples,
            } => format!(
                "HDBSCAN, min_cluster_size = {min_cluster_size}, min_samples = {min_samples}: {} clusters, {:.1} % unsegmented",
                self.k,
                100.0 * self.noise_share()
            ),
        };
        method + &on
    }

    /// The share of the fitted customers HDBSCAN left unsegmented (0 for KMeans).
    pub fn noise_share(&self) -> f64 {
        let clustered: usize = self.segments.iter().map(|s| s.size).sum();
        self.density.as_ref().map_or(0.0, |d| {
            d.unsegmented.size as f64 / (clustered + d.unsegmented.size).max(1) as f64
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kmeans_params_keep_the_bytes_of_the_models_before_hdbscan() {
        let old = r#"{"k":null,"k_range":[3,6],"seed":42,"max_iterations":200,"silhouette_sample":2000}"#;
        let p: SegmentParams = serde_json::from_str(old).expect("old params");
        assert_eq!(p, SegmentParams::default());
        assert_eq!(serde_json::to_string(&p).expect("json"), old);
        let h = SegmentParams {
            method: SegmentMethod::Hdbscan {
                min_cluster_size: 50,
                min_samples: 10,
            },
            ..SegmentParams::default()
        };
        let text = serde_json::to_string(&h).expect("json");
        assert!(
            text.ends_with(r#""method":{"hdbscan":{"min_cluster_size":50,"min_samples":10}}}"#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<SegmentParams>(&text).expect("decode"), h);
    }

    #[test]
    fn clusters_are_numbered_by_their_first_row() {
        assert_eq!(
            renumber(&[3, -1, 0, 3, 7, 0, -1]),
            vec![Some(0), None, Some(1), Some(0), Some(2), Some(1), None]
        );
    }

    #[test]
    fn hdbscan_refuses_more_rows_than_its_limit_before_clustering() {
        let n = HDBSCAN_MAX_ROWS + 1;
        let m = SegmentMatrix {
            raw: vec![vec![0.0; FEATURES.len()]; n],
            standardiser: Standardiser::fit(&[0.0; FEATURES.len()], FEATURES.len()),
            x: Array2::zeros((n, FEATURES.len())),
            vectors: None,
        };
        let e = m.hdbscan(50, 50).expect_err("too many rows");
        assert!(e.to_string().contains("20000"), "{e}");
    }
}
