//! Feature drift between two snapshots (PSI, KS, missing share) as a stored artifact.
//! `cis monitor drift`.

use std::io::Write;
use std::process::ExitCode;

use cis_storage::{hex, Store};
use clap::Args;

use cis_core::artifact;
use cis_core::time;
use cis_ops::monitor::drift::{self, DriftReport, Verdict};

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("reference").required(true).args(["from", "model"])))]
pub struct DriftArgs {
    /// Reference snapshot A (hash or ≥ 8-digit prefix).
    #[arg(long)]
    pub from: Option<String>,
    /// Compare against this model's training snapshot instead of --from.
    #[arg(long)]
    pub model: Option<String>,
    /// Snapshot B, compared against A.
    #[arg(long)]
    pub to: String,
    /// Print the report as JSON (with its hash) instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(store: &Store, a: DriftArgs, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let from = match (&a.from, &a.model) {
        (Some(f), _) => artifact::resolve(store, f)?,
        (None, Some(m)) => {
            let model = artifact::resolve(store, m)?;
            let training = drift::training_snapshot(store, &model)?;
            if !a.json {
                writeln!(
                    out,
                    "model {} was trained on snapshot {} (as of {}; the latest of its {} snapshot parents)",
                    hex(&model),
                    hex(&training.hash),
                    time::format(training.as_of),
                    training.of
                )?;
            }
            training.hash
        }
        (None, None) => anyhow::bail!("give --from SNAPSHOT or --model HASH"),
    };
    let to = artifact::resolve(store, &a.to)?;
    let (hash, new, report) = drift::create(store, &from, &to)?;
    if a.json {
        let doc = serde_json::json!({ "hash": hex(&hash), "new": new, "report": report });
        writeln!(out, "{doc}")?;
    } else {
        table(&report, out)?;
        let state = if new { "new" } else { "already stored" };
        writeln!(out, "drift report {} ({state})", hex(&hash))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn share(v: Option<f64>) -> String {
    v.map_or("?".into(), |s| format!("{:.1}%", s * 100.0))
}

fn table(r: &DriftReport, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "from {} as of {} ({} customers)\n  to {} as of {} ({} customers)",
        r.from,
        time::format(r.from_as_of),
        r.customers_a,
        r.to,
        time::format(r.to_as_of),
        r.customers_b
    )?;
    writeln!(
        out,
        "{:<28} {:<12} {:>8} {:>7} {:>5} {:>8} {:>8} {:>9}",
        "feature", "verdict", "PSI", "KS", "bins", "miss A", "miss B", "Δ miss"
    )?;
    // Most drifted first: by verdict, then PSI, both descending.
    let mut ranked: Vec<_> = r.features.iter().collect();
    ranked.sort_by(|x, y| y.verdict.cmp(&x.verdict).then(y.psi.total_cmp(&x.psi)));
    for f in ranked {
        let delta = match (f.missing_a, f.missing_b) {
            (Some(x), Some(y)) => format!("{:+.1}pp", (y - x) * 100.0),
            _ => "?".into(),
        };
        writeln!(
            out,
            "{:<28} {:<12} {:>8.4} {:>7.4} {:>5} {:>8} {:>8} {:>9}",
            f.feature,
            f.verdict.name(),
            f.psi,
            f.ks,
            f.bins,
            share(f.missing_a),
            share(f.missing_b),
            delta
        )?;
    }
    for f in r
        .features
        .iter()
        .filter(|f| f.missing_a.is_none() || f.missing_b.is_none())
    {
        writeln!(out, "missing share of {}: {}", f.feature, f.missing)?;
    }
    for l in &r.left_out {
        writeln!(out, "left out {}: {}", l.feature, l.reason.name())?;
    }
    writeln!(
        out,
        "{} significant, {} moderate, {} stable (PSI ≥ {} significant, ≥ {} moderate; KS ≥ {} moderate)",
        r.count(Verdict::Significant),
        r.count(Verdict::Moderate),
        r.count(Verdict::Stable),
        drift::PSI_SIGNIFICANT,
        drift::PSI_MODERATE,
        drift::KS_MODERATE
    )
}
