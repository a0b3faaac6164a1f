//! Model fitting on 100,000 synthetic customers: BG/NBD + Gamma-Gamma, churn logistic
//! regression on every feature, KMeans. Uses the store `benches/snapshot.rs` builds.
//!
//! Run: `cargo bench --bench models` (env `CIS_BENCH_CUSTOMERS` to change the size).

mod common;

use cis_core::time::parse_timestamp;
use cis_core::AsOf;
use cis_features::snapshot;
use cis_models::churn::ChurnParams;
use cis_models::lifetime::ClvParams;
use cis_models::segments::SegmentParams;
use cis_models::{train, Model};
use cis_storage::Store;
use common::BenchResult;

fn main() -> BenchResult {
    let store = Store::open(&common::synthetic_store(common::customers())?)?;
    let t = parse_timestamp("2025-06-30T00:00:00Z")?;
    let (snap, ..) = snapshot::create(&store, AsOf::new(Some(t), None))?;

    let runs = common::repeats(3);
    let (clv, clv_secs) = common::repeat(runs, || Ok(train::clv(&store, &snap, ClvParams::default())?))?;
    let Model::Clv(clv) = clv.model else {
        return Err("not a CLV model".into());
    };
    let labels_known = parse_timestamp("2026-01-01T00:00:00Z")?;
    let (churn, churn_secs) = common::repeat(runs, || {
        Ok(train::churn(&store, &[snap], ChurnParams::default(), 90, labels_known)?)
    })?;
    let Model::Churn(churn) = churn.model else {
        return Err("not a churn model".into());
    };
    let fixed = SegmentParams {
        k: Some(4),
        ..SegmentParams::default()
    };
    let (seg, seg_secs) = common::repeat(runs, || Ok(train::segments(&store, &snap, fixed.clone())?))?;
    let Model::Segments(seg) = seg.model else {
        return Err("not a segment model".into());
    };
    let (auto, auto_secs) = common::repeat(runs, || Ok(train::segments(&store, &snap, SegmentParams::default())?))?;
    let Model::Segments(auto) = auto.model else {
        return Err("not a segment model".into());
    };

    println!(
        "model benchmark: snapshot as of 2025-06-30 of {} customers, {runs} runs each",
        churn.train.rows + churn.validation.rows
    );
    println!("| fit | rows | s min / median / max | note |");
    println!("|---|---:|---:|---|");
    println!(
        "| BG/NBD + Gamma-Gamma | {} ({} repeat) | {} | r {:.3} alpha {:.3} a {:.3} b {:.3} |",
        clv.customers_fitted,
        clv.repeat_customers_fitted,
        clv_secs.cell(2),
        clv.bgnbd.r,
        clv.bgnbd.alpha,
        clv.bgnbd.a,
        clv.bgnbd.b
    );
    println!("| churn logistic regression, {} features | {} train + {} validation | {} | validation AUC {:.3} (labels, split and metrics included) |", churn.features.len(), churn.train.rows, churn.validation.rows, churn_secs.cell(2), churn.validation.roc_auc);
    println!(
        "| KMeans k = 4 (3 runs) | {} | {} | silhouette {:.3} on a 2,000-row sample |",
        seg.segments.iter().map(|s| s.size).sum::<usize>(),
        seg_secs.cell(2),
        seg.silhouette
    );
    println!(
        "| KMeans k chosen in 3..=6 by silhouette | {} | {} | k = {} |",
        auto.segments.iter().map(|s| s.size).sum::<usize>(),
        auto_secs.cell(2),
        auto.k
    );
    Ok(())
}
