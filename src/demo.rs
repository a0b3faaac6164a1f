//! `cis demo`: the pipeline file `fixtures/demo/cis.toml`, run at two cutoffs on one store.
//!
//! The file ingests the CDNOW fixture (orders, backfilled) and a seeded synthetic population
//! (customers, orders, sessions, returns; recorded_at from the files), and trains churn, CLV
//! and segments. The demo runs it as of [`RUNS`]:
//! 1. 1997-09-30, the end of the classic CDNOW calibration period: the snapshot the README's
//!    CDNOW examples read, CLV reproducing the published BG/NBD / Gamma-Gamma estimates, and
//!    scores for every CDNOW customer;
//! 2. 2025-06-30, inside the synthetic population's two years: churn on cutoffs 180 and 90 days
//!    earlier (labels matured by T), CLV and segments on the snapshot at T, scores, and drift
//!    against the first run's snapshot.
//!
//! Each run exports `customer_risk_scores` and the snapshot and is recorded as a
//! `pipeline-run` artifact, so running the demo again is a no-op that says so.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::bail;
use cis_storage::{hex, unhex32, ArtifactHash, Store};

use cis_core::time::{parse_timestamp, Timestamp};
use cis_models::{Model, ModelKind};
use cis_ops::pipeline::RunRecord;

use crate::cli::pipeline::{self, Outcome, Pipeline};

/// The cutoffs the demo runs its pipeline file at.
pub const RUNS: [&str; 2] = ["1997-09-30", "2025-06-30"];

#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// The pipeline file.
    pub config: PathBuf,
    /// Overrides of the file's `[synthetic]` table.
    pub customers: Option<usize>,
    pub seed: Option<u64>,
}

/// What the demo's runs made.
#[derive(Debug, Clone)]
pub struct DemoReport {
    pub runs: Vec<Outcome>,
    /// The scores of the last run.
    pub scores: ArtifactHash,
    pub log_head: String,
    pub events: u64,
}

/// The pipeline file with the demo's overrides.
pub fn pipeline(opts: &DemoOptions) -> anyhow::Result<Pipeline> {
    let mut config = pipeline::read_config(&opts.config)?;
    if opts.customers.is_some() || opts.seed.is_some() {
        let Some(s) = config.synthetic.as_mut() else {
            bail!(
                "--customers and --seed set the [synthetic] table of {}, which has none",
                opts.config.display()
            );
        };
        s.customers = opts.customers.unwrap_or(s.customers);
        s.seed = opts.seed.unwrap_or(s.seed);
    }
    Pipeline::validate(&opts.config, config)
}

/// Runs the demo's pipeline at each of [`RUNS`] on `store` (in `store_dir`), printing progress.
pub fn run(store: &Store, store_dir: &Path, opts: &DemoOptions, out: &mut impl Write) -> anyhow::Result<DemoReport> {
    let p = pipeline(opts)?;
    let mut runs = Vec::new();
    for when in RUNS {
        let t: Timestamp = parse_timestamp(when)?;
        runs.push(pipeline::execute(store, store_dir, &p, Some(t), None, out)?);
    }
    let last = runs.last().map(|o| o.record().1.scores.clone()).unwrap_or_default();
    let Some(scores) = unhex32(&last) else {
        bail!("the demo's last run recorded no scores");
    };
    Ok(DemoReport {
        runs,
        scores,
        log_head: hex(&store.log().head()?),
        events: store.log().event_count()?,
    })
}

impl DemoReport {
    /// The printed summary: each run's hashes, the CDNOW CLV estimates against the published ones.
    pub fn summary(&self, store: &Store) -> anyhow::Result<String> {
        let mut s = String::from("\ncis demo — summary\n");
        s.push_str(&format!("event log: {} events, head {}\n", self.events, self.log_head));
        for o in &self.runs {
            let (hash, r) = o.record();
            let again = match o {
                Outcome::AlreadyRun { .. } => " (already run: nothing done)",
                Outcome::Ran { .. } => "",
            };
            s.push_str(&format!("\nas of {}: pipeline run {}{again}\n", r.as_of, hex(hash)));
            s.push_str(&format!("  snapshot {}\n", r.snapshot));
            for m in &r.models {
                s.push_str(&format!("  {:<8} model {} ({})\n", kind(m.kind), m.model, m.rule));
            }
            s.push_str(&format!("  scores   {}\n", r.scores));
            for e in &r.exports {
                s.push_str(&format!("  {}: {} ({} rows)\n", e.table, e.path, e.rows));
            }
            if let Some(d) = &r.drift {
                s.push_str(&format!(
                    "  feature drift against the previous run: {} significant, {} moderate (report {})\n",
                    d.significant, d.moderate, d.report
                ));
            }
            s.push_str(&format!("  data quality report {}\n", r.quality.report));
            if let Some(line) = published(store, r)? {
                s.push_str(&line);
            }
        }
        Ok(s)
    }
}

fn kind(k: ModelKind) -> String {
    format!("{k:?}").to_lowercase()
}

/// For the CDNOW run: its CLV model's estimates beside Fader, Hardie & Lee's.
fn published(store: &Store, r: &RunRecord) -> anyhow::Result<Option<String>> {
    if r.as_of != parse_timestamp(RUNS[0])? {
        return Ok(None);
    }
    let Some(clv) = r.models.iter().find(|m| m.kind == ModelKind::Clv) else {
        return Ok(None);
    };
    let Some(hash) = unhex32(&clv.model) else {
        return Ok(None);
    };
    let (_, model) = cis_models::load(store, &hash)?;
    Ok(match model {
        Model::Clv(m) => Some(format!(
            "  CDNOW CLV {:.3} (published 0.243 4.414 0.793 2.426)\n  Gamma-Gamma p {:.2} q {:.2} gamma {:.2} (published 6.25 3.74 15.44)\n",
            m.purchases, m.gamma_gamma.p, m.gamma_gamma.q, m.gamma_gamma.gamma
        )),
        _ => None,
    })
}
