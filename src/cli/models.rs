//! `cis train`, `cis score`, `cis models`, `cis scores` and `cis audit`.

use std::io::Write;
use std::process::ExitCode;

use anyhow::bail;
use cis_storage::{hex, ArtifactHash, Store};
use clap::{Args, Subcommand};

use cis_core::artifact;
use cis_core::time::{self, Timestamp};
use cis_core::AsOf;
use cis_features::labels::DEFAULT_HORIZON_DAYS;
use cis_features::snapshot;
use cis_models::churn::{ChurnMethod, ChurnParams, Learned};
use cis_models::clv::PurchaseModelKind;
use cis_models::embedding::{EmbeddingModel, EmbeddingParams, DEFAULT_DIMS};
use cis_models::gbt::GbtParams;
use cis_models::lifetime::{self, ClvParams};
use cis_models::promotion::{Change, Promotions, Record, Stage};
use cis_models::scores::Rule;
use cis_models::segments::{SegmentMethod, SegmentModel, SegmentParams};
use cis_models::survival::SurvivalParams;
use cis_models::{scores, train, Model, ModelKind, Trained};
use cis_ops::audit;

#[derive(Args, Debug)]
pub struct TrainArgs {
    #[arg(value_parser = super::choice::<ModelKind>())]
    pub kind: ModelKind,
    /// Snapshot(s) to train on (hash or 8+ hex digits); churn accepts several cutoffs.
    #[arg(long = "snapshot", required = true)]
    pub snapshots: Vec<String>,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Churn: label horizon in days.
    #[arg(long, default_value_t = DEFAULT_HORIZON_DAYS)]
    pub horizon: u32,
    /// Churn: labels as known at this time (default now). Every cutoff given, the validation one
    /// too, must have labels matured by then (cutoff + horizon ≤ K); training is refused otherwise.
    #[arg(long, value_parser = super::parse_time)]
    pub known_at: Option<Timestamp>,
    /// Churn: validate forward in time on this later snapshot too (its customers, labelled as known
    /// at --known-at, scored with the model), beside the customer-disjoint split. Default: with two
    /// or more --snapshot, the one with the latest cutoff is held out for this and the model learns
    /// from the others; with one, no forward validation. `none`: train on every --snapshot given.
    #[arg(long)]
    pub validate_on: Option<String>,
    /// Churn: add a CLV model's outputs as features (P(alive), P(no purchase within the horizon),
    /// expected purchases within it), from BG/NBD fitted on each cutoff's snapshot alone; those CLV
    /// models are stored as the churn model's parents, and scoring fits one on the scored snapshot.
    #[arg(long)]
    pub clv_features: bool,
    /// Segments: a fixed number of segments (default: chosen by silhouette over 3..=6).
    #[arg(long)]
    pub k: Option<usize>,
    /// How the model learns. Segments: kmeans (the default) or hdbscan (density clusters;
    /// customers in none are `unsegmented`; at most 20,000 customers). Churn: logistic (L2
    /// logistic regression), gbt (gradient-boosted trees, scikit-learn's
    /// HistGradientBoostingClassifier defaults: 100 trees of up to 31 leaves, learning rate 0.1),
    /// survival (a Cox model of the time to the next order; P(churn) = P(no order within the
    /// horizon)), or auto: each of logistic and logistic with CLV inputs (at L2 0.1, 1, 10 and 100),
    /// gbt and survival learns from every cutoff but the latest and is scored on the latest; the lowest log loss there is fitted
    /// on every cutoff and the choice recorded. Churn's default: auto with two or more --snapshot
    /// (and no --validate-on or --clv-features), else logistic.
    #[arg(long, value_parser = super::choice::<MethodChoice>())]
    pub method: Option<MethodChoice>,
    /// Churn with --method survival: lifelines' L2 `penalizer` (½·penalizer·‖β‖² on the mean
    /// partial log-likelihood).
    #[arg(long)]
    pub penalizer: Option<f64>,
    /// Segments with --method hdbscan: the fewest customers a cluster has.
    #[arg(long)]
    pub min_cluster_size: Option<usize>,
    /// Segments with --method hdbscan: the neighbours (the customer counted) whose distance is a
    /// customer's density (default: --min-cluster-size, as in scikit-learn).
    #[arg(long)]
    pub min_samples: Option<usize>,
    /// CLV: the purchase-count model. auto (the default) fits each --holdout-weeks before the
    /// snapshot and takes the one whose predictions came closest to the purchases made since
    /// (BG/NBD if none fits there); the check is kept in the model.
    #[arg(long = "model", value_parser = super::choice::<ClvChoice>())]
    pub purchase_model: Option<ClvChoice>,
    /// CLV with --model auto: the forward check's holdout in weeks.
    #[arg(long, default_value_t = 39)]
    pub holdout_weeks: u32,
    /// Embedding: the dimensions kept (principal components of the snapshot's features).
    #[arg(long)]
    pub dims: Option<usize>,
    /// Segments: cluster this embedding model's vectors of the customers (hash or 8+ hex digits;
    /// see `cis train embedding`) instead of the segment features; names still come from those.
    #[arg(long)]
    pub embedding: Option<String>,
}

/// `--method` of `cis train`: each kind takes its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MethodChoice {
    Kmeans,
    Hdbscan,
    Logistic,
    Gbt,
    Survival,
    /// Churn: chosen by forward validation among [`ChurnParams::candidates`].
    Auto,
}

impl cis_core::Choice for MethodChoice {
    const CHOICES: &'static [MethodChoice] = &[
        MethodChoice::Kmeans,
        MethodChoice::Hdbscan,
        MethodChoice::Logistic,
        MethodChoice::Gbt,
        MethodChoice::Survival,
        MethodChoice::Auto,
    ];

    fn choice_name(self) -> &'static str {
        match self {
            MethodChoice::Kmeans => "kmeans",
            MethodChoice::Hdbscan => "hdbscan",
            MethodChoice::Logistic => "logistic",
            MethodChoice::Gbt => "gbt",
            MethodChoice::Survival => "survival",
            MethodChoice::Auto => "auto",
        }
    }
}

impl MethodChoice {
    /// The kind of model the method trains.
    fn kind(self) -> ModelKind {
        match self {
            MethodChoice::Kmeans | MethodChoice::Hdbscan => ModelKind::Segments,
            MethodChoice::Logistic | MethodChoice::Gbt | MethodChoice::Survival | MethodChoice::Auto => {
                ModelKind::Churn
            }
        }
    }

    /// `method` when it is one of `kind`'s, else an error naming both kinds' methods.
    fn of(method: Option<MethodChoice>, kind: ModelKind) -> anyhow::Result<Option<MethodChoice>> {
        use cis_core::Choice;
        let Some(m) = method else { return Ok(None) };
        if m.kind() == kind {
            return Ok(Some(m));
        }
        let takes: Vec<&str> = Self::CHOICES
            .iter()
            .filter(|c| c.kind() == kind)
            .map(|c| c.choice_name())
            .collect();
        let (name, of) = (kind.choice_name(), m.kind().choice_name());
        if takes.is_empty() {
            bail!("--method {} is {of}'s; {name} has no --method", m.choice_name())
        }
        bail!(
            "--method {} is {of}'s; {name} takes {}",
            m.choice_name(),
            takes.join("|")
        )
    }
}

/// Whether `cis train churn` chooses its method by forward validation: when asked to, and by
/// default with two or more cutoffs and neither a method, a validation cutoff nor CLV inputs given.
fn chooses_method(method: Option<MethodChoice>, a: &TrainArgs, cutoffs: usize) -> bool {
    match method {
        Some(m) => m == MethodChoice::Auto,
        None => cutoffs >= 2 && a.validate_on.is_none() && !a.clv_features,
    }
}

/// `--min-cluster-size` when none is given: large enough that a segment is a group worth acting
/// on, not a handful of look-alikes.
const DEFAULT_MIN_CLUSTER_SIZE: usize = 50;

/// `--model` of `cis train clv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClvChoice {
    Fixed(PurchaseModelKind),
    Auto,
}

impl cis_core::Choice for ClvChoice {
    const CHOICES: &'static [ClvChoice] = &[
        ClvChoice::Fixed(PurchaseModelKind::BgNbd),
        ClvChoice::Fixed(PurchaseModelKind::ParetoNbd),
        ClvChoice::Fixed(PurchaseModelKind::MbgNbd),
        ClvChoice::Auto,
    ];

    fn choice_name(self) -> &'static str {
        match self {
            ClvChoice::Fixed(kind) => kind.choice_name(),
            ClvChoice::Auto => "auto",
        }
    }
}

#[derive(Args, Debug)]
pub struct ScoreArgs {
    #[arg(long)]
    pub snapshot: String,
    /// Models to score with, comma-separated (default, per kind: the production model at the
    /// snapshot's as-of, else the latest trained with as-of not after it).
    #[arg(long, value_delimiter = ',')]
    pub models: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum ModelsCommand {
    /// A model's parameters; for CLV also the conditional-expectation check (mean holdout repeat
    /// purchases by calibration frequency, predicted vs actual), computed from the log on demand.
    Show {
        hash: String,
        /// CLV: the holdout after the model's as-of, in weeks (purchases it holds must be in the log).
        #[arg(long, default_value_t = 39)]
        holdout_weeks: u32,
        /// Print the model card as JSON: kind, method, what it learned from, lineage to the log,
        /// metrics, feature importances, the model itself (fields documented in the README).
        #[arg(long)]
        json: bool,
    },
    /// Stored models, oldest first.
    List {
        #[arg(long, value_parser = super::choice::<ModelKind>())]
        kind: Option<ModelKind>,
        #[arg(long, value_parser = super::parse_time)]
        as_of_before: Option<Timestamp>,
    },
    /// Put a model in a stage (its previous holder of the same kind leaves it); recorded.
    Promote {
        hash: String,
        #[arg(long, value_parser = super::choice::<Stage>())]
        stage: Stage,
        #[arg(long)]
        reason: String,
    },
    /// Take a model out of the stage it holds; recorded.
    Retire {
        hash: String,
        #[arg(long)]
        reason: String,
    },
    /// Which model of each kind held each stage at a time (default now).
    Stage {
        #[arg(long, value_parser = super::parse_time)]
        as_of: Option<Timestamp>,
    },
    /// The promotion record, oldest first; --verify checks its hash chain.
    History {
        #[arg(long)]
        verify: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum ScoresCommand {
    /// The latest score run whose as-of is not after T, summarised.
    Latest {
        #[arg(long, value_parser = super::parse_time)]
        as_of: Option<Timestamp>,
    },
}

fn hashes(store: &Store, texts: &[String]) -> anyhow::Result<Vec<ArtifactHash>> {
    texts.iter().map(|t| Ok(artifact::resolve(store, t)?)).collect()
}

pub fn train(store: &Store, a: TrainArgs, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let snaps = hashes(store, &a.snapshots)?;
    if a.kind != ModelKind::Churn && snaps.len() != 1 {
        bail!("{:?} trains on exactly one snapshot ({} given)", a.kind, snaps.len());
    }
    if a.kind != ModelKind::Clv && a.purchase_model.is_some() {
        bail!("--model chooses the purchase-count model of CLV; {:?} has none", a.kind);
    }
    if a.kind != ModelKind::Churn && (a.validate_on.is_some() || a.clv_features) {
        bail!("--validate-on and --clv-features are churn's; {:?} has neither", a.kind);
    }
    if a.kind != ModelKind::Embedding && a.dims.is_some() {
        bail!("--dims is the embedding's; {:?} has none", a.kind);
    }
    if a.kind != ModelKind::Segments && a.embedding.is_some() {
        bail!("--embedding is an input of segments; {:?} takes none", a.kind);
    }
    let method = MethodChoice::of(a.method, a.kind)?;
    if method != Some(MethodChoice::Survival) && a.penalizer.is_some() {
        bail!("--penalizer is for churn's --method survival");
    }
    let trained: Trained = match a.kind {
        ModelKind::Churn if chooses_method(method, &a, snaps.len()) => {
            if a.validate_on.is_some() || a.clv_features {
                bail!("--method auto holds out the latest cutoff itself and tries CLV inputs as a candidate: drop --validate-on and --clv-features");
            }
            train::churn_selected(
                store,
                &snaps,
                &ChurnParams::candidates(a.seed),
                a.horizon,
                a.known_at.unwrap_or_else(time::now),
            )?
        }
        ModelKind::Churn => {
            let method = match method.unwrap_or(MethodChoice::Logistic) {
                MethodChoice::Survival => ChurnMethod::Survival(SurvivalParams {
                    penalizer: a.penalizer.unwrap_or(SurvivalParams::default().penalizer),
                    ..SurvivalParams::default()
                }),
                MethodChoice::Gbt => ChurnMethod::Gbt(GbtParams::default()),
                _ => ChurnMethod::Logistic,
            };
            let params = ChurnParams {
                seed: a.seed,
                clv_features: a.clv_features.then(Box::default),
                method,
                ..ChurnParams::default()
            };
            let (training, validate_on) = forward_split(store, snaps, a.validate_on.as_deref())?;
            train::churn_validated(
                store,
                &training,
                validate_on.as_ref(),
                params,
                a.horizon,
                a.known_at.unwrap_or_else(time::now),
            )?
        }
        ModelKind::Clv => {
            let params = match a.purchase_model.unwrap_or(ClvChoice::Auto) {
                ClvChoice::Fixed(purchase_model) => ClvParams {
                    purchase_model,
                    ..ClvParams::default()
                },
                ClvChoice::Auto => ClvParams {
                    select_by_holdout_weeks: Some(a.holdout_weeks),
                    ..ClvParams::default()
                },
            };
            train::clv(store, &snaps[0], params)?
        }
        ModelKind::Segments => {
            let method = match method {
                Some(MethodChoice::Hdbscan) => {
                    let min_cluster_size = a.min_cluster_size.unwrap_or(DEFAULT_MIN_CLUSTER_SIZE);
                    SegmentMethod::Hdbscan {
                        min_cluster_size,
                        min_samples: a.min_samples.unwrap_or(min_cluster_size),
                    }
                }
                _ => {
                    if a.min_cluster_size.is_some() || a.min_samples.is_some() {
                        bail!("--min-cluster-size and --min-samples are for --method hdbscan");
                    }
                    SegmentMethod::Kmeans
                }
            };
            train::segments(
                store,
                &snaps[0],
                SegmentParams {
                    k: a.k,
                    seed: a.seed,
                    method,
                    embedding: a
                        .embedding
                        .map(|e| artifact::resolve(store, &e).map(|h| hex(&h)))
                        .transpose()?,
                    ..SegmentParams::default()
                },
            )?
        }
        ModelKind::Embedding => train::embedding(
            store,
            &snaps[0],
            EmbeddingParams {
                dims: a.dims.unwrap_or(DEFAULT_DIMS),
            },
        )?,
    };
    let (hash, new) = trained.store(store)?;
    writeln!(
        out,
        "model {} ({}) {:?} as of {}",
        hex(&hash),
        if new { "new" } else { "already stored" },
        a.kind,
        time::format(trained.as_of)
    )?;
    match &trained.model {
        Model::Churn(m) => {
            writeln!(
                out,
                "validation: ROC AUC {:.3}, log loss {:.3}, Brier {:.3} on {} rows (train AUC {:.3}, {} rows)",
                m.validation.roc_auc,
                m.validation.log_loss,
                m.validation.brier,
                m.validation.rows,
                m.train.roc_auc,
                m.train.rows
            )?;
            survival_summary(m, out)?;
            forward_summary(m, out)?;
        }
        Model::Clv(m) => clv_summary(m, out)?,
        Model::Segments(m) => {
            segments_summary(m, out)?;
            for s in m.segments.iter().chain(m.density.as_ref().map(|d| &d.unsegmented)) {
                writeln!(out, "  {}: {}", s.name, s.description)?;
            }
        }
        Model::Embedding(m) => embedding_summary(m, out)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn embedding_summary(m: &EmbeddingModel, out: &mut impl Write) -> std::io::Result<()> {
    let shares: Vec<String> = m
        .explained_variance_ratio
        .iter()
        .map(|r| format!("{:.1}%", 100.0 * r))
        .collect();
    writeln!(
        out,
        "{} dimensions of {} features over {} customers explain {:.1}% of the variance ({})",
        m.params.dims,
        m.features.len(),
        m.customers,
        100.0 * m.explained(),
        shares.join(", ")
    )
}

/// KMeans models keep their one line; HDBSCAN's adds its parameters and noise share first.
fn segments_summary(m: &SegmentModel, out: &mut impl Write) -> std::io::Result<()> {
    if m.density.is_some() || m.embedding.is_some() {
        writeln!(out, "method: {}", m.method_summary())?;
    }
    writeln!(out, "k = {} (silhouette {:.3})", m.k, m.silhouette)
}

pub fn score(store: &Store, a: ScoreArgs, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let snap = artifact::resolve(store, &a.snapshot)?;
    let (models, chosen) = if a.models.is_empty() {
        let as_of = artifact::fetch(store, &snap, snapshot::KIND)?.as_of;
        let chosen = scores::choose_models(store, &Record::read(store)?, Timestamp::from_micros(as_of))?;
        (chosen.iter().map(|c| c.hash).collect(), chosen)
    } else {
        (hashes(store, &a.models)?, Vec::new())
    };
    let (hash, new, set) = scores::score(store, &snap, &models)?;
    writeln!(
        out,
        "scores {} ({}) as of {}: {} customers",
        hex(&hash),
        if new { "new" } else { "already stored" },
        time::format(set.as_of),
        set.rows.len()
    )?;
    for (kind, h) in &set.models {
        let why = match chosen.iter().find(|c| c.kind == *kind).map(|c| &c.rule) {
            None => "given".to_string(),
            Some(Rule::Production { since }) => format!("in production since {}", time::format(*since)),
            Some(Rule::LatestTrained { production_after_t }) => format!(
                "latest trained as of the snapshot: {}",
                production_after_t.as_ref().map_or_else(
                    || "no model of this kind was in production then".to_string(),
                    |p| format!("production model {p} learned from later data")
                )
            ),
        };
        writeln!(out, "  {} model {h} ({why})", kind_label(*kind))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The training snapshots and the forward validation one, per `--validate-on` (see its help).
fn forward_split(
    store: &Store,
    mut snaps: Vec<ArtifactHash>,
    validate_on: Option<&str>,
) -> anyhow::Result<(Vec<ArtifactHash>, Option<ArtifactHash>)> {
    match validate_on {
        Some("none") => Ok((snaps, None)),
        Some(text) => {
            let v = artifact::resolve(store, text)?;
            snaps.retain(|s| *s != v);
            Ok((snaps, Some(v)))
        }
        None if snaps.len() < 2 => Ok((snaps, None)),
        None => {
            let latest = train::latest_cutoff(store, &snaps)?.unwrap_or(0);
            let v = snaps.remove(latest);
            Ok((snaps, Some(v)))
        }
    }
}

/// A survival model's Cox fit: its metrics, then its coefficients, largest magnitude first
/// (nothing for a logistic model, whose lines stay as they were).
fn survival_summary(m: &cis_models::churn::ChurnModel, out: &mut impl Write) -> std::io::Result<()> {
    let Some(Learned::Survival(cox)) = &m.learned else {
        return Ok(());
    };
    writeln!(
        out,
        "Cox model ({} Newton steps): validation concordance {:.3}, integrated Brier {:.3} over {} days (train {:.3}, {:.3}); H0(horizon) {:.4}",
        cox.iterations,
        cox.validation.concordance,
        cox.validation.integrated_brier,
        m.horizon_days,
        cox.train.concordance,
        cox.train.integrated_brier,
        cox.baseline_at_horizon()
    )?;
    let mut coefficients: Vec<(&String, f64)> = m.features.iter().zip(cox.coefficients.iter().copied()).collect();
    coefficients.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
    writeln!(out, "log hazard ratios of the next order (per standard deviation):")?;
    for (feature, c) in coefficients {
        writeln!(out, "  {feature:<32} {c:+.4}")?;
    }
    Ok(())
}

fn forward_summary(m: &cis_models::churn::ChurnModel, out: &mut impl Write) -> std::io::Result<()> {
    if let Some(s) = &m.selection {
        writeln!(
            out,
            "method chosen by forward validation on the {} cutoff (trained on the earlier ones), then fitted on every cutoff:",
            time::format(s.cutoff)
        )?;
        for (i, c) in s.candidates.iter().enumerate() {
            writeln!(
                out,
                "  {} {:<26} ROC AUC {:.4}, log loss {:.4} on {} rows",
                if i == s.chosen { "*" } else { " " },
                c.params.summary(),
                c.forward.roc_auc,
                c.forward.log_loss,
                c.forward.rows
            )?;
        }
        return Ok(());
    }
    match &m.forward {
        Some(f) => writeln!(
            out,
            "forward validation on the {} cutoff: ROC AUC {:.3}, log loss {:.3}, Brier {:.3} on {} rows",
            time::format(f.cutoff),
            f.metrics.roc_auc,
            f.metrics.log_loss,
            f.metrics.brier,
            f.metrics.rows
        ),
        None => writeln!(
            out,
            "no forward validation (trained on one cutoff, or --validate-on none)"
        ),
    }
}

fn kind_label(k: ModelKind) -> String {
    format!("{k:?}").to_lowercase()
}

pub fn models(store: &Store, cmd: ModelsCommand, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let who = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    match cmd {
        ModelsCommand::List { kind, as_of_before } => list(store, kind, as_of_before, out),
        ModelsCommand::Show {
            hash,
            holdout_weeks,
            json,
        } => show(store, &hash, holdout_weeks, json, out),
        ModelsCommand::Promote { hash, stage, reason } => {
            let model = artifact::resolve(store, &hash)?;
            let change = Promotions::open(store)?.promote(store, &model, stage, &reason, &who, time::now())?;
            report_change(&hex(&model), &change, out)
        }
        ModelsCommand::Retire { hash, reason } => {
            let model = artifact::resolve(store, &hash)?;
            let change = Promotions::open(store)?.retire(store, &model, &reason, &who, time::now())?;
            report_change(&hex(&model), &change, out)
        }
        ModelsCommand::Stage { as_of } => {
            let t = as_of.unwrap_or_else(time::now);
            let record = Record::read(store)?;
            writeln!(out, "stages as of {}:", time::format(t))?;
            for kind in ModelKind::SCORED {
                for stage in Stage::ALL {
                    let who = record.holder(kind, stage, t).map_or_else(
                        || "none".to_string(),
                        |h| format!("{} since {}", h.model, time::format(h.since)),
                    );
                    writeln!(out, "  {:<8} {:<10} {who}", kind_label(kind), stage.name())?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ModelsCommand::History { verify } => history(store, verify, out),
    }
}

fn report_change(model: &str, change: &Change, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    match change {
        Change::Promoted {
            seq,
            kind,
            stage,
            replaced,
            left,
        } => {
            writeln!(
                out,
                "{} model {model} promoted to {} (record {seq})",
                kind_label(*kind),
                stage.name()
            )?;
            if let Some(r) = replaced {
                writeln!(out, "  {r} leaves {}", stage.name())?;
            }
            if let Some(l) = left {
                writeln!(out, "  {model} leaves {}", l.name())?;
            }
        }
        Change::AlreadyHeld { kind, stage, since } => writeln!(
            out,
            "{} model {model} already holds {} (since {}); nothing recorded",
            kind_label(*kind),
            stage.name(),
            time::format(*since)
        )?,
        Change::Retired { seq, kind, stage } => writeln!(
            out,
            "{} model {model} retired from {} (record {seq}); {} now has no {} model",
            kind_label(*kind),
            stage.name(),
            stage.name(),
            kind_label(*kind)
        )?,
    }
    Ok(ExitCode::SUCCESS)
}

fn history(store: &Store, verify: bool, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let promotions = Promotions::open(store)?;
    for (seq, p) in promotions.record()?.entries {
        writeln!(
            out,
            "{seq:>4}  {}  {:?} {} {} {}  by {}: {}",
            time::format(p.at),
            p.action,
            kind_label(p.kind),
            p.model,
            p.stage.name(),
            p.who,
            p.reason
        )?;
    }
    if !verify {
        return Ok(ExitCode::SUCCESS);
    }
    match promotions.verify()? {
        Ok(r) => {
            writeln!(
                out,
                "promotion record verified: {} records, head {}",
                r.records,
                hex(&r.head)
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Err(broken) => {
            writeln!(out, "promotion record BROKEN: {broken}")?;
            Ok(ExitCode::FAILURE)
        }
    }
}

fn clv_summary(m: &lifetime::ClvModel, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{:.4} ({} customers); Gamma-Gamma p {:.4} q {:.4} gamma {:.4} ({} repeat customers)",
        m.purchases,
        m.customers_fitted,
        m.gamma_gamma.p,
        m.gamma_gamma.q,
        m.gamma_gamma.gamma,
        m.repeat_customers_fitted
    )?;
    if let Some(s) = &m.selection {
        writeln!(
            out,
            "chosen by a forward check: fitted {} weeks earlier, {} customers made {:.4} repeat purchases each since; predicted (error by frequency):",
            s.holdout_weeks, s.customers, s.actual
        )?;
        for c in &s.candidates {
            let name = c.model.name();
            match (c.predicted, c.error) {
                (Some(p), Some(e)) => writeln!(out, "  {name:<10} {p:.4} ({e:.4})")?,
                _ => writeln!(out, "  {name:<10} did not fit")?,
            }
        }
    }
    Ok(())
}

fn show(store: &Store, hash: &str, holdout_weeks: u32, json: bool, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let hash = artifact::resolve(store, hash)?;
    let (stored, model) = cis_models::load(store, &hash)?;
    let expectations = match &model {
        Model::Clv(m) => conditional_expectations(store, &stored, m, holdout_weeks)?,
        Model::Churn(_) | Model::Segments(_) | Model::Embedding(_) => None,
    };
    if json {
        let card = cis_models::card::card(store, &stored, model, expectations)?;
        serde_json::to_writer_pretty(&mut *out, &card)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    let as_of = Timestamp::from_micros(stored.as_of);
    writeln!(
        out,
        "model {} ({}) as of {}",
        hex(&hash),
        kind_label(model.kind()),
        time::format(as_of)
    )?;
    match &model {
        Model::Churn(m) => {
            writeln!(
                out,
                "{} features; validation ROC AUC {:.3}, log loss {:.3}, Brier {:.3} on {} rows",
                m.features.len(),
                m.validation.roc_auc,
                m.validation.log_loss,
                m.validation.brier,
                m.validation.rows
            )?;
            survival_summary(m, out)?;
            forward_summary(m, out)?;
        }
        Model::Segments(m) => segments_summary(m, out)?,
        Model::Embedding(m) => embedding_summary(m, out)?,
        Model::Clv(m) => {
            clv_summary(m, out)?;
            let Some(table) = expectations else {
                writeln!(
                    out,
                    "conditional expectations: the log holds nothing after the model's snapshot to check against"
                )?;
                return Ok(ExitCode::SUCCESS);
            };
            let end = Timestamp::from_micros(stored.as_of).plus_days(i64::from(holdout_weeks) * 7);
            writeln!(
                out,
                "conditional expectations: mean repeat purchases in the {} weeks to {}, by calibration frequency",
                table.holdout_weeks,
                time::format(end)
            )?;
            writeln!(
                out,
                "  {:>5} {:>9} {:>9} {:>9}",
                "x", "customers", "predicted", "actual"
            )?;
            let top = cis_models::clv::CONDITIONAL_EXPECTATION_TOP;
            for r in &table.rows {
                let x = if r.frequency == top {
                    format!("{top}+")
                } else {
                    r.frequency.to_string()
                };
                writeln!(
                    out,
                    "  {x:>5} {:>9} {:>9.4} {:>9.4}",
                    r.customers, r.predicted, r.actual
                )?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The conditional-expectation check of a CLV model over the `holdout_weeks` after its
/// snapshot, from the log; `None` when the log holds nothing after the snapshot.
fn conditional_expectations(
    store: &Store,
    stored: &cis_storage::StoredArtifact,
    m: &lifetime::ClvModel,
    holdout_weeks: u32,
) -> anyhow::Result<Option<lifetime::ConditionalExpectations>> {
    let parent = stored.parents.first().ok_or(cis_models::ModelError::EmptyTrainingSet)?;
    let (_, calibration) = snapshot::load(store, parent)?;
    let end = calibration.as_of.plus_days(i64::from(holdout_weeks) * 7);
    let later = snapshot::compute(store, AsOf::new(Some(end), None))?;
    if later.matrix.visible_events == calibration.matrix.visible_events {
        return Ok(None);
    }
    Ok(Some(lifetime::conditional_expectations(m, &calibration, &later)?))
}

fn list(
    store: &Store,
    kind: Option<ModelKind>,
    as_of_before: Option<Timestamp>,
    out: &mut impl Write,
) -> anyhow::Result<ExitCode> {
    for k in ModelKind::ALL
        .into_iter()
        .filter(|k| kind.is_none_or(|want| want == *k))
    {
        for r in store
            .artifacts()
            .list(k.artifact_kind(), as_of_before.unwrap_or(Timestamp::MAX).micros())?
        {
            writeln!(
                out,
                "{}  {:<8} as of {}",
                hex(&r.hash),
                kind_label(k),
                time::format(Timestamp::from_micros(r.as_of))
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn scores_cmd(store: &Store, cmd: ScoresCommand, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let ScoresCommand::Latest { as_of } = cmd;
    let t = as_of.unwrap_or_else(time::now);
    let Some(r) = store.artifacts().latest(scores::KIND, t.micros())? else {
        bail!("no scores as of {}", time::format(t))
    };
    let (_, set) = scores::load_scores(store, &r.hash)?;
    writeln!(
        out,
        "scores {} as of {} from snapshot {}",
        hex(&r.hash),
        time::format(set.as_of),
        set.snapshot
    )?;
    let probs: Vec<f64> = set.rows.iter().filter_map(|r| r.churn_probability).collect();
    if !probs.is_empty() {
        let high = set
            .rows
            .iter()
            .filter(|r| r.churn_band.as_deref() == Some("high"))
            .count();
        writeln!(
            out,
            "  mean churn probability {:.3}; {high} of {} customers high risk",
            probs.iter().sum::<f64>() / probs.len() as f64,
            set.rows.len()
        )?;
    }
    let clv: f64 = set.rows.iter().filter_map(|r| r.clv_12m).sum();
    writeln!(out, "  total 12-month CLV {clv:.2}")?;
    Ok(ExitCode::SUCCESS)
}

pub fn audit_cmd(store: &Store, hash: &str, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let h = artifact::resolve(store, hash)?;
    let tree = audit::audit(store, &h)?;
    let mut text = String::new();
    tree.render(0, &mut text);
    write!(out, "{text}")?;
    Ok(if tree.all_accounted_for() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
