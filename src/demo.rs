//! `cis demo`: the whole batch job, end to end, on one store.
//!
//! 1. ingest the CDNOW fixture (orders, backfilled) and a seeded synthetic population
//!    (customers, orders, sessions, returns; recorded_at from the files);
//! 2. CDNOW: snapshot at the end of the classic calibration period and fit CLV (the
//!    published BG/NBD / Gamma-Gamma estimates);
//! 3. synthetic: snapshots at two churn cutoffs and at the scoring date, churn trained on the
//!    cutoffs (labels matured by the scoring date), CLV and segments on the scoring snapshot;
//! 4. score the scoring snapshot, export `customer_risk_scores` as Parquet and CSV;
//! 5. monitor: feature drift from the first cutoff to the scoring date, and the data-quality
//!    report over every ingest run (both stored as artifacts).
//!
//! Every step is idempotent: running the demo again adds no events and recreates the same
//! artifacts (same hashes), except the data-quality report, which also counts the re-run's
//! (all-duplicate) ingest runs.

use std::path::{Path, PathBuf};

use cis_storage::{hex, ArtifactHash, Store};
use indicatif::{ProgressBar, ProgressStyle};

use cis_core::event::Kind;
use cis_core::time::{parse_timestamp, Timestamp};
use cis_core::AsOf;
use cis_export::{export_scores, ExportSummary, Format as ExportFormat};
use cis_features::snapshot;
use cis_ingest::records::IngestRun;
use cis_ingest::source::Format;
use cis_ingest::{ingest_file, IngestOptions, RecordedAt};
use cis_models::churn::ChurnParams;
use cis_models::lifetime::ClvParams;
use cis_models::segments::SegmentParams;
use cis_models::{scores, train, Model, Trained};
use cis_ops::monitor::drift::{self, DriftReport, Verdict};
use cis_ops::monitor::quality::{self, QualityReport};
use cis_synth::SynthConfig;

/// The synthetic population's dates (it spans 2024-01-01 .. 2025-12-31).
const CUTOFF_A: &str = "2024-12-01";
const CUTOFFS: [&str; 2] = [CUTOFF_A, "2025-03-01"];
const SCORE_AT: &str = "2025-06-30";
const CDNOW_CALIBRATION_END: &str = "1997-09-30";

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub customers: usize,
    pub seed: u64,
    /// The CDNOW transaction log to ingest.
    pub cdnow: PathBuf,
    /// Whether to draw progress bars (on a terminal).
    pub progress: bool,
}

/// What the demo made, hash by hash, for the summary.
#[derive(Debug, Clone)]
pub struct DemoReport {
    pub ingests: Vec<IngestRun>,
    pub cdnow_snapshot: ArtifactHash,
    pub cdnow_clv: (ArtifactHash, Trained),
    pub snapshots: Vec<(String, ArtifactHash)>,
    pub models: Vec<(ArtifactHash, Trained)>,
    pub scores: ArtifactHash,
    pub exports: Vec<ExportSummary>,
    pub drift: (ArtifactHash, DriftReport),
    pub quality: (ArtifactHash, QualityReport),
    pub log_head: String,
    pub events: u64,
}

fn t(s: &str) -> anyhow::Result<Timestamp> {
    Ok(parse_timestamp(s)?)
}

struct Steps {
    progress: bool,
}

impl Steps {
    fn run<T>(&self, what: &str, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
        let bar = if self.progress {
            let b = ProgressBar::new_spinner().with_message(what.to_string());
            b.set_style(
                ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            b.enable_steady_tick(std::time::Duration::from_millis(120));
            b
        } else {
            ProgressBar::hidden()
        };
        tracing::info!(step = what, "demo");
        let out = f();
        bar.finish_and_clear();
        out
    }
}

pub fn run(store: &Store, work_dir: &Path, opts: &DemoOptions) -> anyhow::Result<DemoReport> {
    let steps = Steps {
        progress: opts.progress,
    };
    let ingest = |path: &Path, kind: Kind, format: Format, recorded_at: RecordedAt| -> anyhow::Result<IngestRun> {
        let o = IngestOptions {
            recorded_at,
            progress: crate::progress::ingest_bar(opts.progress),
            ..IngestOptions::new(kind, format)
        };
        Ok(ingest_file(store, path, &o, &mut |_| {})?)
    };
    let mut ingests = vec![steps.run("ingesting CDNOW", || {
        ingest(&opts.cdnow, Kind::Order, Format::Cdnow, RecordedAt::EventTime)
    })?];

    // The generated inputs carry email addresses (to show them dropped at ingest), so they are
    // written outside the store, whose guarantee is that personal data is never stored, and
    // removed when the demo has ingested them.
    let scratch = tempfile::Builder::new().prefix("cis-demo-").tempdir()?;
    let data = scratch.path().to_path_buf();
    steps.run("generating the synthetic population", || {
        Ok(SynthConfig {
            customers: opts.customers,
            seed: opts.seed,
            ..SynthConfig::default()
        }
        .validate()?
        .write_csv(&data)?)
    })?;
    for (kind, file) in [
        (Kind::Customer, "customers.csv"),
        (Kind::Order, "orders.csv"),
        (Kind::Session, "sessions.csv"),
        (Kind::Return, "returns.csv"),
    ] {
        let path = data.join(file);
        ingests.push(steps.run(&format!("ingesting {file}"), || {
            ingest(&path, kind, Format::Csv, RecordedAt::Column("recorded_at".into()))
        })?);
    }
    scratch.close()?;

    let cdnow_snapshot = steps.run("CDNOW snapshot", || {
        Ok(snapshot::create(store, AsOf::new(Some(t(CDNOW_CALIBRATION_END)?), None))?.0)
    })?;
    let cdnow_clv = steps.run("CDNOW CLV (BG/NBD + Gamma-Gamma)", || {
        let m = train::clv(store, &cdnow_snapshot, ClvParams::default())?;
        Ok((m.store(store)?.0, m))
    })?;

    let mut snapshots = Vec::new();
    for when in CUTOFFS.iter().chain([&SCORE_AT]) {
        let h = steps.run(&format!("snapshot as of {when}"), || {
            Ok(snapshot::create(store, AsOf::new(Some(t(when)?), None))?.0)
        })?;
        snapshots.push((when.to_string(), h));
    }
    let scoring = snapshots[2].1;
    let cutoff_hashes: Vec<ArtifactHash> = snapshots[..2].iter().map(|s| s.1).collect();
    let mut models = Vec::new();
    let churn = steps.run("training churn", || {
        Ok(train::churn(
            store,
            &cutoff_hashes,
            ChurnParams {
                seed: opts.seed,
                ..ChurnParams::default()
            },
            90,
            t(SCORE_AT)?,
        )?)
    })?;
    let clv = steps.run("training CLV", || {
        Ok(train::clv(store, &scoring, ClvParams::default())?)
    })?;
    let seg = steps.run("training segments", || {
        Ok(train::segments(
            store,
            &scoring,
            SegmentParams {
                seed: opts.seed,
                ..SegmentParams::default()
            },
        )?)
    })?;
    for m in [churn, clv, seg] {
        models.push((m.store(store)?.0, m));
    }
    let model_hashes: Vec<ArtifactHash> = models.iter().map(|m| m.0).collect();
    let scores = steps.run("scoring", || Ok(scores::score(store, &scoring, &model_hashes)?.0))?;

    let exports_dir = work_dir.join("exports");
    std::fs::create_dir_all(&exports_dir)?;
    let mut exports = Vec::new();
    for (format, name) in [
        (ExportFormat::Parquet, "customer_risk_scores.parquet"),
        (ExportFormat::Csv, "customer_risk_scores.csv"),
    ] {
        let path = exports_dir.join(name);
        exports.push(steps.run(&format!("exporting {name}"), || {
            Ok(export_scores(store, Some(t(SCORE_AT)?), format, &path)?)
        })?);
    }
    let drift = steps.run("feature drift", || {
        let (h, _, r) = drift::create(store, &cutoff_hashes[0], &scoring)?;
        Ok((h, r))
    })?;
    let quality = steps.run("data quality", || {
        let r = quality::report(store, &quality::Filter::default(), &quality::Rules::default())?;
        Ok((quality::store_report(store, &r)?.0, r))
    })?;
    Ok(DemoReport {
        ingests,
        cdnow_snapshot,
        cdnow_clv,
        snapshots,
        models,
        scores,
        exports,
        drift,
        quality,
        log_head: hex(&store.log().head()?),
        events: store.log().event_count()?,
    })
}

impl DemoReport {
    /// The printed summary: every artifact hash, the headline figures.
    pub fn summary(&self) -> String {
        let mut s = String::from("cis demo — summary\n\ningest runs:\n");
        for r in &self.ingests {
            s.push_str(&format!(
                "  run {:>3}  {:<9} {:>9} rows  {:>9} accepted  {:>9} duplicate  {:>5} quarantined  {}\n",
                r.run,
                r.kind.name(),
                r.rows,
                r.accepted,
                r.duplicates,
                r.quarantined,
                r.file
            ));
        }
        s.push_str(&format!(
            "event log: {} events, head {}\n\n",
            self.events, self.log_head
        ));
        s.push_str(&format!(
            "CDNOW snapshot as of {CDNOW_CALIBRATION_END}: {}\n",
            hex(&self.cdnow_snapshot)
        ));
        if let Model::Clv(m) = &self.cdnow_clv.1.model {
            s.push_str(&format!(
                "CDNOW CLV model {}\n  {:.3} (published 0.243 4.414 0.793 2.426)\n  Gamma-Gamma p {:.2} q {:.2} gamma {:.2} (published 6.25 3.74 15.44)\n\n",
                hex(&self.cdnow_clv.0), m.purchases, m.gamma_gamma.p, m.gamma_gamma.q, m.gamma_gamma.gamma
            ));
        }
        s.push_str("synthetic population snapshots:\n");
        for (when, h) in &self.snapshots {
            s.push_str(&format!("  as of {when}: {}\n", hex(h)));
        }
        s.push_str("models:\n");
        for (h, m) in &self.models {
            let headline = match &m.model {
                Model::Churn(c) => format!(
                    "churn: validation ROC AUC {:.3}, Brier {:.3}",
                    c.validation.roc_auc, c.validation.brier
                ),
                Model::Clv(c) => format!("clv: {:.3}", c.purchases),
                Model::Segments(g) => format!(
                    "segments: {}",
                    g.segments
                        .iter()
                        .map(|s| format!("{} ({})", s.name, s.size))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            s.push_str(&format!("  {}  {headline}\n", hex(h)));
        }
        s.push_str(&format!("scores as of {SCORE_AT}: {}\n", hex(&self.scores)));
        for e in &self.exports {
            s.push_str(&format!(
                "customer_risk_scores: {} ({} rows)\n",
                e.path.display(),
                e.rows
            ));
        }
        let (dh, d) = &self.drift;
        s.push_str(&format!(
            "feature drift {CUTOFF_A} -> {SCORE_AT}: {} significant, {} moderate, {} stable (report {})
",
            d.count(Verdict::Significant),
            d.count(Verdict::Moderate),
            d.count(Verdict::Stable),
            hex(dh)
        ));
        let (qh, q) = &self.quality;
        let flags: Vec<String> = q
            .flag_counts()
            .iter()
            .map(|(f, n)| format!("{} {n}", f.name()))
            .collect();
        s.push_str(&format!(
            "data quality over {} ingest runs: flags {} (report {})
",
            q.runs.len(),
            flags.join(", "),
            hex(qh)
        ));
        s
    }
}
