//! `cis monitor decay`.

use std::io::Write;
use std::process::ExitCode;

use cis_storage::Store;
use clap::Args;

use cis_core::artifact::resolve;
use cis_core::time::{self, Timestamp};
use cis_models::metrics::Metrics;
use cis_ops::monitor::decay::{measure, store_known_at, Outcome};

#[derive(Args, Debug)]
pub struct DecayArgs {
    /// Only score runs made with this churn model (hash or 8+ hex digits).
    #[arg(long)]
    pub model: Option<String>,
    /// Knowledge time K for the labels (default: the latest recorded_at in the log).
    #[arg(long, value_parser = super::parse_time)]
    pub known_at: Option<Timestamp>,
    /// The outcome as one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
}

pub fn run(store: &Store, a: DecayArgs, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let model = a.model.as_deref().map(|m| resolve(store, m)).transpose()?;
    let known_at = match a.known_at {
        Some(k) => k,
        None => store_known_at(store)?,
    };
    let outcome = measure(store, model.as_ref(), known_at, time::now())?;
    if a.json {
        writeln!(out, "{}", serde_json::to_string(&outcome)?)?;
    } else {
        print(&outcome, out)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print(o: &Outcome, out: &mut impl Write) -> anyhow::Result<()> {
    writeln!(out, "labels as known at {}", time::format(o.known_at))?;
    for s in &o.reports {
        let r = &s.report;
        writeln!(
            out,
            "\nscores {} as of {} by churn model {} (horizon {} days, matured {})",
            r.scores,
            time::format(r.scored_as_of),
            r.model,
            r.horizon_days,
            time::format(r.matured_at)
        )?;
        writeln!(
            out,
            "  {:<14} {:>10} {:>11} {:>10}",
            "", "realised", "validation", "training"
        )?;
        let row = |name: &str, f: fn(&Metrics) -> f64| {
            format!(
                "  {name:<14} {:>10.4} {:>11.4} {:>10.4}",
                f(&r.realised),
                f(&r.validation),
                f(&r.training)
            )
        };
        writeln!(out, "{}", row("ROC AUC", |m| m.roc_auc))?;
        writeln!(out, "{}", row("log loss", |m| m.log_loss))?;
        writeln!(out, "{}", row("Brier", |m| m.brier))?;
        writeln!(out, "{}", row("churn rate", |m| m.positive_rate))?;
        writeln!(out, "{}", row("rows", |m| m.rows as f64))?;
        writeln!(
            out,
            "  calibration (realised): predicted bin, customers, mean predicted, observed"
        )?;
        for b in r.realised.calibration.iter().filter(|b| b.count > 0) {
            writeln!(
                out,
                "    [{:.1}, {:.1})  {:>7}  {:.3}  {:.3}",
                b.lower, b.upper, b.count, b.mean_predicted, b.observed_rate
            )?;
        }
        writeln!(
            out,
            "  ROC AUC change vs validation {:+.4}; labels from log batch {} head {}",
            r.auc_change(),
            r.log_batch,
            r.log_head
        )?;
        writeln!(
            out,
            "  decay report {} ({})",
            s.hash,
            if s.new { "new" } else { "already stored" }
        )?;
    }
    for u in &o.unmeasurable {
        writeln!(out, "\nscores {}: matured but not measurable: {}", u.scores, u.reason)?;
    }
    for p in &o.pending {
        writeln!(
            out,
            "\npending: scores {} as of {} by {}: labels mature at {}",
            p.scores,
            time::format(p.scored_as_of),
            p.model,
            time::format(p.matures_at)
        )?;
    }
    Ok(())
}
