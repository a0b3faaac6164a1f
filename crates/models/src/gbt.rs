//! Churn by gradient-boosted trees (`cis train churn --method gbt`): a histogram learner after
//! scikit-learn's `HistGradientBoostingClassifier` — binary log loss, second-order (Newton) leaf
//! values `−G / (H + λ)`, trees grown best-first to a number of leaves, each feature binned into at
//! most 255 bins at quantiles of the training rows.
//!
//! It is written here rather than taken from a crate: the pure-Rust candidates either keep the
//! fitted model in private fields without `PartialEq` (nanogbm), grow trees on rayon threads and
//! keep `HashMap`s in the model (forust-ml), or work in `f32` and are unmaintained (gbdt); a churn
//! model must compare, show its trees on its card and serialise to the same JSON every time.
//!
//! The fit is deterministic: no row or feature sampling, no early-stopping split, one thread, and
//! every sum in row order, so the same design gives the same bits (and an audit the same hash). The
//! model's seed enters through the customer-disjoint split only.

use serde::{Deserialize, Serialize};

use crate::logistic::sigmoid;
use crate::ParamError;

/// The learner's hyperparameters; the defaults are scikit-learn's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GbtParams {
    /// Boosting rounds: one tree each.
    pub iterations: u32,
    /// Shrinkage of each tree's leaf values.
    pub learning_rate: f64,
    /// Leaves per tree at most; a tree grows its best split first until it has these.
    pub max_leaf_nodes: u32,
    /// Depth limit of a tree (none: the leaf count alone bounds it).
    pub max_depth: Option<u32>,
    /// Training rows a leaf holds at least.
    pub min_samples_leaf: u32,
    /// L2 penalty λ on leaf values.
    pub l2_regularization: f64,
    /// Bins per feature at most (a feature with fewer distinct values gets one bin each).
    pub max_bins: u32,
}

impl Default for GbtParams {
    fn default() -> Self {
        GbtParams {
            iterations: 100,
            learning_rate: 0.1,
            max_leaf_nodes: 31,
            max_depth: None,
            min_samples_leaf: 20,
            l2_regularization: 0.0,
            max_bins: 255,
        }
    }
}

impl GbtParams {
    pub fn validate(&self) -> Result<(), ParamError> {
        let bad = |name: &'static str, value: f64, rule: &'static str| Err(ParamError::Gbt { name, value, rule });
        if self.iterations == 0 {
            return bad("iterations", 0.0, "at least 1");
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return bad("learning_rate", self.learning_rate, "finite and > 0");
        }
        if self.max_leaf_nodes < 2 {
            return bad("max_leaf_nodes", f64::from(self.max_leaf_nodes), "at least 2");
        }
        if self.max_depth == Some(0) {
            return bad("max_depth", 0.0, "at least 1 when given");
        }
        if self.min_samples_leaf == 0 {
            return bad("min_samples_leaf", 0.0, "at least 1");
        }
        if !(self.l2_regularization.is_finite() && self.l2_regularization >= 0.0) {
            return bad("l2_regularization", self.l2_regularization, "finite and ≥ 0");
        }
        if !(2..=255).contains(&self.max_bins) {
            return bad("max_bins", f64::from(self.max_bins), "within 2..=255");
        }
        Ok(())
    }
}

/// A split's children must each carry this much hessian (scikit-learn's `min_hessian_to_split`):
/// below it a leaf value `−G / H` is noise.
const MIN_CHILD_HESSIAN: f64 = 1e-3;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum GbtError {
    #[error("the design has {values} values, not a whole number of rows of {width} features and one label each ({labels} labels)")]
    Shape { values: usize, width: usize, labels: usize },
    #[error("a feature value is not finite (row {row}, column {column})")]
    NotFinite { row: usize, column: usize },
    #[error("boosting needs both classes among the training rows")]
    OneClass,
}

/// One node of a tree, in the tree's node list (the root first; children after their parent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Node {
    /// A row goes to `left` when its (standardised) `feature` is at most `threshold`.
    Split {
        feature: usize,
        threshold: f64,
        left: usize,
        right: usize,
    },
    /// What the tree adds to the log-odds (learning rate applied).
    Leaf(f64),
}

/// The fitted trees: `P(churn) = σ(baseline + Σ tree(x))` on standardised rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ensemble {
    /// The log-odds of churn among the training rows, where boosting starts.
    pub baseline: f64,
    pub trees: Vec<Vec<Node>>,
    /// Each feature's share of the total split gain over every tree, in feature order (sums to 1;
    /// all 0 when no tree split).
    pub importance: Vec<f64>,
}

impl Ensemble {
    /// P(churn) of one standardised row.
    pub fn predict(&self, z: &[f64]) -> f64 {
        sigmoid(self.baseline + self.trees.iter().map(|t| leaf(t, z)).sum::<f64>())
    }

    /// The deepest tree's depth (a root-only tree has depth 0).
    pub fn depth(&self) -> usize {
        self.trees.iter().map(|t| depth(t, 0)).max().unwrap_or(0)
    }

    pub fn leaves(&self) -> usize {
        self.trees
            .iter()
            .flatten()
            .filter(|n| matches!(n, Node::Leaf(_)))
            .count()
    }
}

fn leaf(tree: &[Node], z: &[f64]) -> f64 {
    let mut i = 0;
    loop {
        match tree[i] {
            Node::Leaf(v) => return v,
            Node::Split {
                feature,
                threshold,
                left,
                right,
            } => {
                i = if z.get(feature).is_some_and(|&x| x <= threshold) {
                    left
                } else {
                    right
                }
            }
        }
    }
}

fn depth(tree: &[Node], at: usize) -> usize {
    match tree[at] {
        Node::Leaf(_) => 0,
        Node::Split { left, right, .. } => 1 + depth(tree, left).max(depth(tree, right)),
    }
}

/// Upper bin edges of one column: midpoints between its distinct values when it has at most
/// `max_bins` of them, else its `k / max_bins` quantiles (the midpoint of the two order statistics
/// around each, as scikit-learn takes them), without repeats.
fn edges(column: &mut [f64], max_bins: usize) -> Vec<f64> {
    column.sort_unstable_by(f64::total_cmp);
    let mut distinct: Vec<f64> = column.to_vec();
    distinct.dedup();
    let mut edges: Vec<f64> = if distinct.len() <= max_bins {
        distinct.windows(2).map(|w| w[0] + (w[1] - w[0]) / 2.0).collect()
    } else {
        let last = (column.len() - 1) as f64;
        (1..max_bins)
            .map(|k| {
                let at = k as f64 / max_bins as f64 * last;
                let (lo, hi) = (column[at.floor() as usize], column[at.ceil() as usize]);
                lo + (hi - lo) / 2.0
            })
            .collect()
    };
    edges.dedup();
    edges
}

/// The training rows binned: a row's bin of a feature is the number of that feature's edges below
/// its value, so "bin ≤ b" is "value ≤ edges[b]", the test [`Node::Split`] makes.
struct Binned {
    width: usize,
    rows: usize,
    /// Row-major, one byte per value (at most 255 bins).
    bins: Vec<u8>,
    edges: Vec<Vec<f64>>,
    /// Where each feature's bins start in a histogram.
    offsets: Vec<usize>,
    total_bins: usize,
}

impl Binned {
    fn new(x: &[f64], width: usize, max_bins: usize) -> Binned {
        let rows = x.len() / width;
        let edges: Vec<Vec<f64>> = (0..width)
            .map(|j| {
                edges(
                    &mut x.iter().skip(j).step_by(width).copied().collect::<Vec<_>>(),
                    max_bins,
                )
            })
            .collect();
        let bins = x
            .chunks_exact(width)
            .flat_map(|row| row.iter().zip(&edges).map(|(v, e)| e.partition_point(|t| t < v) as u8))
            .collect();
        let mut offsets = Vec::with_capacity(width);
        let mut total_bins = 0;
        for e in &edges {
            offsets.push(total_bins);
            total_bins += e.len() + 1;
        }
        Binned {
            width,
            rows,
            bins,
            edges,
            offsets,
            total_bins,
        }
    }
}

/// Sums of gradients, hessians and rows in one bin (or one node).
#[derive(Debug, Clone, Copy, Default)]
struct Sums {
    g: f64,
    h: f64,
    n: usize,
}

impl Sums {
    fn add(&mut self, g: f64, h: f64) {
        self.g += g;
        self.h += h;
        self.n += 1;
    }

    fn minus(self, o: Sums) -> Sums {
        Sums {
            g: self.g - o.g,
            h: self.h - o.h,
            n: self.n - o.n,
        }
    }

    /// The loss reduction term `G² / (H + λ)`.
    fn score(self, l2: f64) -> f64 {
        self.g * self.g / (self.h + l2)
    }
}

#[derive(Debug, Clone, Copy)]
struct Split {
    feature: usize,
    bin: usize,
    gain: f64,
}

/// A leaf of the growing tree: its rows (a range of the row order), histogram and best split.
struct Open {
    node: usize,
    start: usize,
    end: usize,
    depth: u32,
    sums: Sums,
    histogram: Vec<Sums>,
    split: Option<Split>,
}

struct Grower<'a> {
    binned: &'a Binned,
    params: &'a GbtParams,
    g: Vec<f64>,
    h: Vec<f64>,
    /// Row indices, each open leaf owning a contiguous range.
    order: Vec<usize>,
    scratch: Vec<usize>,
    /// Split gain per feature, summed over every tree.
    gain: Vec<f64>,
}

impl Grower<'_> {
    fn histogram(&self, start: usize, end: usize) -> Vec<Sums> {
        let b = self.binned;
        let mut hist = vec![Sums::default(); b.total_bins];
        for &r in &self.order[start..end] {
            let (g, h) = (self.g[r], self.h[r]);
            for (bin, off) in b.bins[r * b.width..(r + 1) * b.width].iter().zip(&b.offsets) {
                hist[off + usize::from(*bin)].add(g, h);
            }
        }
        hist
    }

    /// The best split of a leaf with `sums` and `hist` (none when no split gains, or the leaf may
    /// not split).
    fn best_split(&self, sums: Sums, hist: &[Sums], depth: u32) -> Option<Split> {
        let p = self.params;
        let min_leaf = p.min_samples_leaf as usize;
        if sums.n < 2 * min_leaf || p.max_depth.is_some_and(|d| depth >= d) {
            return None;
        }
        let l2 = p.l2_regularization;
        let parent = sums.score(l2);
        let mut best: Option<Split> = None;
        for (feature, (edges, &off)) in self.binned.edges.iter().zip(&self.binned.offsets).enumerate() {
            let mut left = Sums::default();
            for (bin, b) in hist[off..off + edges.len()].iter().enumerate() {
                left.g += b.g;
                left.h += b.h;
                left.n += b.n;
                if left.n < min_leaf {
                    continue;
                }
                let right = sums.minus(left);
                if right.n < min_leaf {
                    break;
                }
                if left.h < MIN_CHILD_HESSIAN || right.h < MIN_CHILD_HESSIAN {
                    continue;
                }
                let gain = left.score(l2) + right.score(l2) - parent;
                if gain > best.map_or(0.0, |s| s.gain) {
                    best = Some(Split { feature, bin, gain });
                }
            }
        }
        best
    }

    fn open(&self, node: usize, start: usize, end: usize, depth: u32, histogram: Vec<Sums>) -> Open {
        // A node's totals are any one feature's histogram summed.
        let width = self.binned.edges.first().map_or(0, |e| e.len() + 1);
        let sums = histogram[..width].iter().fold(Sums::default(), |mut s, b| {
            s.g += b.g;
            s.h += b.h;
            s.n += b.n;
            s
        });
        Open {
            node,
            start,
            end,
            depth,
            sums,
            split: self.best_split(sums, &histogram, depth),
            histogram,
        }
    }

    /// One tree on the current gradients; adds its leaf values to `raw`.
    fn tree(&mut self, raw: &mut [f64]) -> Vec<Node> {
        let rows = self.binned.rows;
        self.order.clear();
        self.order.extend(0..rows);
        let mut nodes = vec![Node::Leaf(0.0)];
        let mut leaves = vec![self.open(0, 0, rows, 0, self.histogram(0, rows))];
        while leaves.len() < self.params.max_leaf_nodes as usize {
            // The open leaf with the largest gain; the first of equals, so ties break by growth order.
            let mut pick: Option<(usize, Split)> = None;
            for (i, l) in leaves.iter().enumerate() {
                if let Some(s) = l.split {
                    if pick.is_none_or(|(_, best)| s.gain > best.gain) {
                        pick = Some((i, s));
                    }
                }
            }
            let Some((i, split)) = pick else { break };
            let parent = leaves.swap_remove(i);
            let (left, right) = self.divide(&parent, split);
            nodes[parent.node] = Node::Split {
                feature: split.feature,
                threshold: self.binned.edges[split.feature][split.bin],
                left: nodes.len(),
                right: nodes.len() + 1,
            };
            self.gain[split.feature] += split.gain;
            let ids = (nodes.len(), nodes.len() + 1);
            nodes.extend([Node::Leaf(0.0), Node::Leaf(0.0)]);
            let depth = parent.depth + 1;
            // Histogram the smaller child; the larger one is the parent's less it.
            let (small, large, small_is_left) = if left.1 - left.0 <= right.1 - right.0 {
                (left, right, true)
            } else {
                (right, left, false)
            };
            let small_hist = self.histogram(small.0, small.1);
            let mut large_hist = parent.histogram;
            for (l, s) in large_hist.iter_mut().zip(&small_hist) {
                *l = l.minus(*s);
            }
            let (small_id, large_id) = if small_is_left { ids } else { (ids.1, ids.0) };
            leaves.push(self.open(small_id, small.0, small.1, depth, small_hist));
            leaves.push(self.open(large_id, large.0, large.1, depth, large_hist));
            // Keep the open leaves in growth order so that ties break the same way every time.
            leaves.sort_by_key(|l| l.node);
        }
        let (lr, l2) = (self.params.learning_rate, self.params.l2_regularization);
        for l in &leaves {
            let value = -lr * l.sums.g / (l.sums.h + l2);
            nodes[l.node] = Node::Leaf(value);
            for &r in &self.order[l.start..l.end] {
                raw[r] += value;
            }
        }
        nodes
    }

    /// Partitions `parent`'s rows by `split`, keeping row order on each side: the two ranges.
    fn divide(&mut self, parent: &Open, split: Split) -> ((usize, usize), (usize, usize)) {
        let b = self.binned;
        self.scratch.clear();
        let mut at = parent.start;
        for k in parent.start..parent.end {
            let r = self.order[k];
            if usize::from(b.bins[r * b.width + split.feature]) <= split.bin {
                self.order[at] = r;
                at += 1;
            } else {
                self.scratch.push(r);
            }
        }
        self.order[at..parent.end].copy_from_slice(&self.scratch);
        ((parent.start, at), (at, parent.end))
    }
}

/// Fits on `x` (standardised, row-major, `width` columns, one row per label).
pub fn fit(x: &[f64], width: usize, y: &[bool], params: &GbtParams) -> Result<Ensemble, GbtError> {
    if width == 0 || x.len() != width * y.len() {
        return Err(GbtError::Shape {
            values: x.len(),
            width,
            labels: y.len(),
        });
    }
    if let Some(k) = x.iter().position(|v| !v.is_finite()) {
        return Err(GbtError::NotFinite {
            row: k / width,
            column: k % width,
        });
    }
    let positives = y.iter().filter(|&&c| c).count();
    if positives == 0 || positives == y.len() {
        return Err(GbtError::OneClass);
    }
    let rate = positives as f64 / y.len() as f64;
    let baseline = (rate / (1.0 - rate)).ln();
    let binned = Binned::new(x, width, params.max_bins as usize);
    let mut raw = vec![baseline; y.len()];
    let mut grower = Grower {
        binned: &binned,
        params,
        g: vec![0.0; y.len()],
        h: vec![0.0; y.len()],
        order: Vec::with_capacity(y.len()),
        scratch: Vec::with_capacity(y.len()),
        gain: vec![0.0; width],
    };
    let mut trees = Vec::with_capacity(params.iterations as usize);
    for iteration in 0..params.iterations {
        for ((g, h), (z, &label)) in grower.g.iter_mut().zip(&mut grower.h).zip(raw.iter().zip(y)) {
            let p = sigmoid(*z);
            *g = p - if label { 1.0 } else { 0.0 };
            *h = p * (1.0 - p);
        }
        let tree = grower.tree(&mut raw);
        tracing::trace!(iteration, nodes = tree.len(), "gbt tree grown");
        trees.push(tree);
    }
    let total: f64 = grower.gain.iter().sum();
    let importance = grower
        .gain
        .iter()
        .map(|g| if total > 0.0 { g / total } else { 0.0 })
        .collect();
    Ok(Ensemble {
        baseline,
        trees,
        importance,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Churn by a non-linear rule of two features, a third pure noise: churners are the rows with
    /// `a` far from 0 (either side) or `b` high, plus a deterministic sprinkle of label noise.
    fn data(n: usize) -> (Vec<f64>, Vec<bool>) {
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for i in 0..n {
            let a = ((i * 37) % 101) as f64 / 50.0 - 1.0;
            let b = ((i * 53) % 89) as f64 / 44.0 - 1.0;
            let noise = ((i * 7919) % 113) as f64 / 56.0 - 1.0;
            x.extend([a, b, noise]);
            y.push((a.abs() > 0.6 || b > 0.5) != (i % 23 == 0));
        }
        (x, y)
    }

    fn auc(p: &[f64], y: &[bool]) -> f64 {
        crate::metrics::evaluate(p, y).expect("metrics").roc_auc
    }

    #[test]
    fn boosting_learns_a_rule_no_line_draws_and_ranks_features_by_gain() {
        let (x, y) = data(2000);
        let params = GbtParams::default();
        let e = fit(&x, 3, &y, &params).expect("fit");
        assert_eq!(e.trees.len(), 100);
        assert!(
            e.trees
                .iter()
                .all(|t| t.iter().filter(|n| matches!(n, Node::Leaf(_))).count() <= 31),
            "at most 31 leaves a tree"
        );
        let p: Vec<f64> = x.chunks(3).map(|r| e.predict(r)).collect();
        assert!(auc(&p, &y) > 0.95, "training AUC {}", auc(&p, &y));
        // `a`'s effect is U-shaped: a row at a = ±0.9 churns more than one at a = 0.
        assert!(e.predict(&[0.9, -0.5, 0.0]) > 0.8 && e.predict(&[-0.9, -0.5, 0.0]) > 0.8);
        assert!(e.predict(&[0.0, -0.5, 0.0]) < 0.2);
        assert!((e.importance.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(
            e.importance[2] < e.importance[0].min(e.importance[1]),
            "{:?}",
            e.importance
        );
        // Same rows, same bits; and the model survives JSON unchanged.
        assert_eq!(fit(&x, 3, &y, &params), Ok(e.clone()));
        let json = serde_json::to_string(&e).expect("json");
        assert_eq!(serde_json::from_str::<Ensemble>(&json).expect("back"), e);
    }

    #[test]
    fn limits_bound_every_tree() {
        let (x, y) = data(1000);
        let params = GbtParams {
            iterations: 5,
            max_depth: Some(2),
            min_samples_leaf: 100,
            ..GbtParams::default()
        };
        let e = fit(&x, 3, &y, &params).expect("fit");
        assert_eq!(e.depth(), 2);
        // Every leaf holds at least 100 training rows: count them by routing the rows.
        for tree in &e.trees {
            let mut counts = vec![0usize; tree.len()];
            for row in x.chunks(3) {
                let mut i = 0;
                while let Node::Split {
                    feature,
                    threshold,
                    left,
                    right,
                } = tree[i]
                {
                    i = if row[feature] <= threshold { left } else { right };
                }
                counts[i] += 1;
            }
            for (i, n) in tree.iter().enumerate() {
                if matches!(n, Node::Leaf(_)) {
                    assert!(counts[i] >= 100, "leaf {i} holds {}", counts[i]);
                }
            }
        }
    }

    #[test]
    fn bins_are_distinct_values_or_quantiles() {
        let mut few = [3.0, 1.0, 2.0, 2.0, 1.0];
        assert_eq!(edges(&mut few, 255), [1.5, 2.5]);
        let mut many: Vec<f64> = (0..1000).map(f64::from).collect();
        let e = edges(&mut many, 4);
        assert_eq!(e, [249.5, 499.5, 749.5]);
        let binned = Binned::new(&[0.0, 1.0, 2.0, 2.0], 1, 255);
        assert_eq!(binned.bins, [0, 1, 2, 2]);
        assert_eq!(binned.total_bins, 3);
    }

    #[test]
    fn bad_parameters_and_inputs_are_errors() {
        for (bad, name) in [
            (
                GbtParams {
                    iterations: 0,
                    ..GbtParams::default()
                },
                "iterations",
            ),
            (
                GbtParams {
                    learning_rate: f64::NAN,
                    ..GbtParams::default()
                },
                "learning_rate",
            ),
            (
                GbtParams {
                    max_leaf_nodes: 1,
                    ..GbtParams::default()
                },
                "max_leaf_nodes",
            ),
            (
                GbtParams {
                    max_depth: Some(0),
                    ..GbtParams::default()
                },
                "max_depth",
            ),
            (
                GbtParams {
                    max_bins: 256,
                    ..GbtParams::default()
                },
                "max_bins",
            ),
        ] {
            assert!(
                matches!(bad.validate(), Err(ParamError::Gbt { name: n, .. }) if n == name),
                "{name}"
            );
        }
        assert_eq!(GbtParams::default().validate(), Ok(()));
        let (mut x, y) = data(100);
        assert!(matches!(
            fit(&x, 2, &y, &GbtParams::default()),
            Err(GbtError::Shape { .. })
        ));
        assert_eq!(fit(&x, 3, &[true; 100], &GbtParams::default()), Err(GbtError::OneClass));
        x[7] = f64::NAN;
        assert_eq!(
            fit(&x, 3, &y, &GbtParams::default()),
            Err(GbtError::NotFinite { row: 2, column: 1 })
        );
    }
}
