//! `cis pipeline run`: the daily job a pipeline file (`cis.toml`) describes — ingest new files,
//! snapshot at the cutoff T, train what is due, score, export, drift and quality — recorded as
//! a `pipeline-run` artifact (`cis_ops::pipeline`). Every step is a library call; this module
//! reads the file and strings them together. The fields are documented in README, "A daily
//! pipeline", and in `fixtures/demo/cis.toml`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use cis_storage::{hex, ArtifactHash, Store};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};

use cis_core::event::Kind;
use cis_core::time::{self, Timestamp};
use cis_core::{AsOf, Choice};
use cis_export::{features::export_snapshot, write_table, Format as ExportFormat, ScoreTable};
use cis_features::labels::DEFAULT_HORIZON_DAYS;
use cis_features::snapshot;
use cis_ingest::source::Format;
use cis_models::churn::ChurnParams;
use cis_models::lifetime::ClvParams;
use cis_models::promotion::Record;
use cis_models::scores::{self, Rule};
use cis_models::segments::SegmentParams;
use cis_models::{train, ModelKind};
use cis_ops::monitor::drift::{self, Verdict};
use cis_ops::monitor::quality::{self, Rules};
use cis_ops::pipeline::{self as record, RunRecord};
use cis_synth::SynthConfig;

use super::models::ClvChoice;
use super::IngestArgs;

/// The exit code of a run that finished but breached a threshold of `[thresholds]` (1 is a
/// failure; 3 is ingest's "every row was rejected", which the pipeline reports as a failure).
pub const EXIT_BREACHED: u8 = 4;

#[derive(Subcommand, Debug)]
pub enum PipelineCommand {
    /// Ingest new files, snapshot at the cutoff T, train what is due, score, export, report
    /// drift and data quality, and record the run. Exit 0 ok, 1 failure, 4 a threshold breached.
    Run(RunArgs),
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The pipeline file.
    #[arg(long, default_value = "cis.toml")]
    pub config: PathBuf,
    /// The cutoff T (default: the latest cutoff of the file's `cutoff` rule not after now).
    #[arg(long, value_parser = super::parse_time)]
    pub as_of: Option<Timestamp>,
}

/// `cis pipeline run` on the store in `store_dir`: directly, or through the running server that
/// holds it, which is sent the pipeline file and the source files it has not ingested
/// ([`Bundle`]) and runs the same steps on its store.
pub fn run(
    store_dir: &Path,
    cmd: PipelineCommand,
    token_file: Option<&Path>,
    out: &mut impl Write,
) -> anyhow::Result<ExitCode> {
    let PipelineCommand::Run(a) = cmd;
    let pipeline = Pipeline::read(&a.config)?;
    match super::remote::open(store_dir, token_file)? {
        super::remote::Target::Direct(store) => {
            let outcome = execute(&store, store_dir, &pipeline, a.as_of, None, out)?;
            Ok(ExitCode::from(outcome.exit_code()))
        }
        super::remote::Target::Server(server) => server.pipeline(&a.config, &pipeline, out),
    }
}

/// `cis pipeline run` as a server runs it for a client: the pipeline file and the source files
/// come from the client's [`Bundle`] (a tar, the request's body), unpacked into a directory of the
/// server's own; exports go under the server's store directory, as they do directly.
pub fn run_served(
    store: &Store,
    cmd: PipelineCommand,
    bundle: Option<&Path>,
    out: &mut impl Write,
) -> anyhow::Result<ExitCode> {
    let PipelineCommand::Run(a) = cmd;
    let tar = bundle.context("a pipeline run through a server needs its bundle (the request's body)")?;
    let store_dir = store.dir().context("a served store has a directory")?.to_path_buf();
    // Beside the uploads (raw input files), where a server started after a kill removes them.
    let unpacked = tempfile::Builder::new()
        .prefix(cis_server::api::admin::UPLOAD_PREFIX)
        .tempdir_in(&store_dir)?;
    tar::Archive::new(std::fs::File::open(tar)?)
        .unpack(unpacked.path())
        .context("unpacking the pipeline bundle")?;
    let bundle: Bundle = serde_json::from_slice(&std::fs::read(unpacked.path().join(Bundle::NAME))?)
        .context("reading the pipeline bundle")?;
    let pipeline = Pipeline::parse(Path::new(&bundle.config_file), &bundle.config_text)?;
    let mut sent: Vec<Vec<super::InputFile>> = (0..pipeline.sources.len()).map(|_| Vec::new()).collect();
    for f in bundle.files {
        let list = sent
            .get_mut(f.source)
            .context("the bundle names a source the file does not have")?;
        // A member is a name inside the unpacked bundle, never a way out of it.
        let read = match f.member {
            None => None,
            Some(m)
                if Path::new(&m)
                    .components()
                    .all(|c| matches!(c, std::path::Component::Normal(_))) =>
            {
                Some(unpacked.path().join(m))
            }
            Some(m) => bail!("the bundle names a member outside itself: {m:?}"),
        };
        list.push(super::InputFile {
            shown: PathBuf::from(f.name),
            read,
            blake3: Some(f.blake3),
        });
    }
    let outcome = execute(store, &store_dir, &pipeline, a.as_of, Some(&sent), out)?;
    Ok(ExitCode::from(outcome.exit_code()))
}

/// What `cis pipeline run` beside a server sends: its pipeline file and every source file it
/// found, in order, with the bytes of each one the server has not ingested (as `GET
/// /admin/ingested` said), as `files/<n>` beside this in one tar.
#[derive(Debug, Serialize, Deserialize)]
pub struct Bundle {
    /// The pipeline file's path as the client named it (sources are relative to it).
    pub config_file: String,
    pub config_text: String,
    pub files: Vec<BundleFile>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct BundleFile {
    /// The index of its `[[source]]`.
    pub source: usize,
    /// Its path where the client found it (what the run records).
    pub name: String,
    pub blake3: String,
    /// Its member in the tar; none for a file the server has ingested already.
    pub member: Option<String>,
}

impl Bundle {
    /// The bundle's own member in the tar.
    pub const NAME: &'static str = "bundle.json";
}

/// Each source's files, as this side finds them: for the client's [`Bundle`].
pub fn source_files(p: &Pipeline) -> anyhow::Result<Vec<(Kind, Vec<PathBuf>)>> {
    p.sources
        .iter()
        .map(|s| {
            let files = match cis_ingest::inputs(&s.args.file)? {
                cis_ingest::Inputs::File(f) => vec![f],
                cis_ingest::Inputs::Many(files) => files,
            };
            Ok((s.args.kind, files))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The pipeline file, as written (the config hash is over this, re-encoded as JSON).

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `daily HH:MM UTC`.
    pub cutoff: String,
    #[serde(default = "default_horizon")]
    pub label_horizon_days: u32,
    #[serde(default, rename = "source")]
    pub sources: Vec<SourceConfig>,
    pub synthetic: Option<SyntheticConfig>,
    #[serde(default)]
    pub train: TrainConfig,
    #[serde(default)]
    pub export: ExportConfig,
    #[serde(default)]
    pub thresholds: Thresholds,
}

fn default_horizon() -> u32 {
    DEFAULT_HORIZON_DAYS
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    pub kind: String,
    /// A file, a directory or a glob, relative to the pipeline file's directory.
    pub path: String,
    pub format: Option<String>,
    #[serde(default = "default_recorded_at")]
    pub recorded_at: String,
    pub batch_rows: Option<u64>,
}

fn default_recorded_at() -> String {
    "event-time".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyntheticConfig {
    pub customers: usize,
    #[serde(default = "default_seed")]
    pub seed: u64,
    #[serde(default = "default_days")]
    pub days: u32,
}

fn default_seed() -> u64 {
    42
}

fn default_days() -> u32 {
    SynthConfig::default().days
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    #[serde(default = "default_retrain")]
    pub retrain_every_days: u32,
    pub churn: Option<ChurnConfig>,
    pub clv: Option<ClvConfig>,
    pub segments: Option<SegmentsConfig>,
}

fn default_retrain() -> u32 {
    7
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            retrain_every_days: default_retrain(),
            churn: None,
            clv: None,
            segments: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChurnConfig {
    /// `T-<days>d` each.
    pub cutoffs: Vec<String>,
    #[serde(default = "default_seed")]
    pub seed: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClvConfig {
    #[serde(default = "default_clv_model")]
    pub model: String,
    #[serde(default = "default_holdout")]
    pub holdout_weeks: u32,
}

fn default_clv_model() -> String {
    "auto".into()
}

fn default_holdout() -> u32 {
    39
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentsConfig {
    pub k: Option<usize>,
    #[serde(default = "default_seed")]
    pub seed: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportConfig {
    /// Relative to the store directory.
    #[serde(default = "default_export_dir")]
    pub dir: String,
    #[serde(default = "default_score_formats")]
    pub scores: Vec<String>,
    #[serde(default)]
    pub snapshot: Vec<String>,
}

fn default_export_dir() -> String {
    "exports".into()
}

fn default_score_formats() -> Vec<String> {
    vec!["parquet".into()]
}

impl Default for ExportConfig {
    fn default() -> Self {
        ExportConfig {
            dir: default_export_dir(),
            scores: default_score_formats(),
            snapshot: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    pub drift_significant_max: Option<u64>,
    pub quality_flags_max: Option<u64>,
    #[serde(default = "default_quarantine")]
    pub quarantine_rate_max: f64,
}

fn default_quarantine() -> f64 {
    Rules::default().quarantine_max
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            drift_significant_max: None,
            quality_flags_max: None,
            quarantine_rate_max: default_quarantine(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The validated pipeline.

#[derive(Debug, Clone)]
pub struct Pipeline {
    /// The file it was read from (named in every message).
    pub file: PathBuf,
    pub config: Config,
    /// blake3 of the config re-encoded as JSON: comments and layout do not change it.
    pub config_hash: String,
    /// Minutes after midnight UTC of the daily cutoff.
    cutoff_minute: i64,
    sources: Vec<Source>,
    churn_cutoffs_days: Vec<i64>,
    clv: Option<ClvParams>,
    score_formats: Vec<ExportFormat>,
    snapshot_formats: Vec<ExportFormat>,
}

#[derive(Debug, Clone)]
struct Source {
    args: IngestArgs,
}

/// Reads the pipeline file as written, unchecked ([`Pipeline::validate`] checks it).
pub fn read_config(file: &Path) -> anyhow::Result<Config> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading the pipeline file {}", file.display()))?;
    parse_config(file, &text)
}

fn parse_config(file: &Path, text: &str) -> anyhow::Result<Config> {
    toml::from_str(text).map_err(|e| anyhow::anyhow!("pipeline file {}: {e}", file.display()))
}

impl Pipeline {
    pub fn read(file: &Path) -> anyhow::Result<Pipeline> {
        Pipeline::validate(file, read_config(file)?)
    }

    pub fn parse(file: &Path, text: &str) -> anyhow::Result<Pipeline> {
        Pipeline::validate(file, parse_config(file, text)?)
    }

    /// Checks every field; an error names the file, the field and what is allowed.
    pub fn validate(file: &Path, config: Config) -> anyhow::Result<Pipeline> {
        let bad = |field: &str, value: &str, allowed: &str| {
            anyhow::anyhow!(
                "pipeline file {}: field `{field}`: {value:?} is not {allowed}",
                file.display()
            )
        };
        let cutoff_minute = parse_cutoff(&config.cutoff).ok_or_else(|| {
            bad(
                "cutoff",
                &config.cutoff,
                "a cutoff rule: `daily HH:MM UTC` (e.g. `daily 00:00 UTC`)",
            )
        })?;
        if config.label_horizon_days == 0 {
            return Err(bad("label_horizon_days", "0", "a number of days ≥ 1"));
        }
        let base = file.parent().unwrap_or(Path::new("."));
        let mut sources = Vec::new();
        for (i, s) in config.sources.iter().enumerate() {
            let field = |f: &str| format!("source[{i}].{f}");
            let kind = Kind::from_choice(&s.kind)
                .map_err(|_| bad(&field("kind"), &s.kind, &format!("one of {}", names::<Kind>())))?;
            let format = match &s.format {
                None => None,
                Some(f) => Some(
                    Format::from_choice(f)
                        .map_err(|_| bad(&field("format"), f, &format!("one of {}", names::<Format>())))?,
                ),
            };
            if s.recorded_at.trim().is_empty() {
                return Err(bad(
                    &field("recorded_at"),
                    &s.recorded_at,
                    "`now`, `event-time` or a column name",
                ));
            }
            let batch_rows = s.batch_rows.unwrap_or(cis_ingest::DEFAULT_BATCH_ROWS as u64);
            if !(1..=cis_ingest::MAX_BATCH_ROWS as u64).contains(&batch_rows) {
                let range = format!("in 1..={}", cis_ingest::MAX_BATCH_ROWS);
                return Err(bad(&field("batch_rows"), &batch_rows.to_string(), &range));
            }
            sources.push(Source {
                args: IngestArgs {
                    kind,
                    file: base.join(&s.path),
                    format,
                    recorded_at: s.recorded_at.clone(),
                    batch_rows,
                },
            });
        }
        if let Some(s) = &config.synthetic {
            if let Err(e) = (SynthConfig {
                customers: s.customers,
                seed: s.seed,
                days: s.days,
                ..SynthConfig::default()
            })
            .validate()
            {
                bail!("pipeline file {}: table `synthetic`: {e}", file.display());
            }
        }
        let mut churn_cutoffs_days = Vec::new();
        if let Some(c) = &config.train.churn {
            if c.cutoffs.is_empty() {
                return Err(bad("train.churn.cutoffs", "[]", "a list of at least one `T-<days>d`"));
            }
            for (i, text) in c.cutoffs.iter().enumerate() {
                let days = parse_offset(text).ok_or_else(|| {
                    bad(
                        &format!("train.churn.cutoffs[{i}]"),
                        text,
                        "`T-<days>d` with days ≥ 1 (e.g. `T-90d`)",
                    )
                })?;
                // A label at cutoff c matures at c + horizon, which must not be after T.
                if days < i64::from(config.label_horizon_days) {
                    return Err(bad(
                        &format!("train.churn.cutoffs[{i}]"),
                        text,
                        &format!(
                            "at least label_horizon_days ({}) before T: its labels would not have matured by T",
                            config.label_horizon_days
                        ),
                    ));
                }
                churn_cutoffs_days.push(days);
            }
        }
        let clv = match &config.train.clv {
            None => None,
            Some(c) => {
                let choice = ClvChoice::from_choice(&c.model)
                    .map_err(|_| bad("train.clv.model", &c.model, &format!("one of {}", names::<ClvChoice>())))?;
                Some(match choice {
                    ClvChoice::Fixed(purchase_model) => ClvParams {
                        purchase_model,
                        ..ClvParams::default()
                    },
                    ClvChoice::Auto if c.holdout_weeks == 0 => {
                        return Err(bad("train.clv.holdout_weeks", "0", "a number of weeks ≥ 1"))
                    }
                    ClvChoice::Auto => ClvParams {
                        select_by_holdout_weeks: Some(c.holdout_weeks),
                        ..ClvParams::default()
                    },
                })
            }
        };
        let formats = |field: &str, list: &[String]| -> anyhow::Result<Vec<ExportFormat>> {
            list.iter()
                .enumerate()
                .map(|(i, f)| {
                    ExportFormat::from_choice(f).map_err(|_| {
                        bad(
                            &format!("{field}[{i}]"),
                            f,
                            &format!("one of {}", names::<ExportFormat>()),
                        )
                    })
                })
                .collect()
        };
        // Exports go under the store directory (the server's own, when it runs the steps), never
        // to a path a file names outside it.
        let export_dir = Path::new(&config.export.dir);
        if export_dir.is_absolute()
            || export_dir
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_) | std::path::Component::CurDir))
        {
            return Err(bad(
                "export.dir",
                &config.export.dir,
                "a relative path inside the store directory (no `..`, not absolute)",
            ));
        }
        let score_formats = formats("export.scores", &config.export.scores)?;
        let snapshot_formats = formats("export.snapshot", &config.export.snapshot)?;
        let q = config.thresholds.quarantine_rate_max;
        if !(0.0..=1.0).contains(&q) {
            return Err(bad(
                "thresholds.quarantine_rate_max",
                &q.to_string(),
                "a fraction in 0..=1",
            ));
        }
        let config_hash = blake3::hash(&serde_json::to_vec(&config)?).to_hex().to_string();
        Ok(Pipeline {
            file: file.to_path_buf(),
            config,
            config_hash,
            cutoff_minute,
            sources,
            churn_cutoffs_days,
            clv,
            score_formats,
            snapshot_formats,
        })
    }

    /// The latest cutoff of the rule not after `now`.
    pub fn cutoff_at(&self, now: Timestamp) -> Timestamp {
        const MICROS_PER_MINUTE: i64 = 60_000_000;
        let offset = self.cutoff_minute * MICROS_PER_MINUTE;
        let day = Timestamp::from_micros(now.micros() - offset).day();
        Timestamp::from_day(day) + offset
    }
}

fn names<T: Choice>() -> String {
    T::CHOICES
        .iter()
        .map(|c| c.choice_name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `daily HH:MM UTC` → minutes after midnight.
fn parse_cutoff(s: &str) -> Option<i64> {
    let mut words = s.split_whitespace();
    let (Some("daily"), Some(hm), Some("UTC"), None) = (words.next(), words.next(), words.next(), words.next()) else {
        return None;
    };
    let (h, m) = hm.split_once(':')?;
    let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
    ((0..24).contains(&h) && (0..60).contains(&m) && hm.len() == 5).then_some(h * 60 + m)
}

/// `T-<days>d` → days.
fn parse_offset(s: &str) -> Option<i64> {
    let days: i64 = s.strip_prefix("T-")?.strip_suffix('d')?.parse().ok()?;
    (days >= 1).then_some(days)
}

// ---------------------------------------------------------------------------------------------
// The run.

/// What a run came to.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// A run of the same file at the same T is stored already: nothing was done.
    AlreadyRun {
        hash: ArtifactHash,
        record: RunRecord,
    },
    Ran {
        hash: ArtifactHash,
        record: RunRecord,
    },
}

impl Outcome {
    pub fn record(&self) -> (&ArtifactHash, &RunRecord) {
        match self {
            Outcome::AlreadyRun { hash, record } | Outcome::Ran { hash, record } => (hash, record),
        }
    }

    /// 0, or [`EXIT_BREACHED`] when a new run breached a threshold.
    pub fn exit_code(&self) -> u8 {
        match self {
            Outcome::Ran { record, .. } if !record.breaches.is_empty() => EXIT_BREACHED,
            _ => 0,
        }
    }
}

/// Runs the pipeline at `as_of` (default: the latest cutoff) on `store` (whose directory is
/// `store_dir`, where exports go), printing one progress line per step.
pub fn execute(
    store: &Store,
    store_dir: &Path,
    p: &Pipeline,
    as_of: Option<Timestamp>,
    sent: Option<&[Vec<super::InputFile>]>,
    out: &mut impl Write,
) -> anyhow::Result<Outcome> {
    let t = as_of.unwrap_or_else(|| p.cutoff_at(time::now()));
    let at = AsOf::new(Some(t), None);
    let short = &p.config_hash[..16];
    writeln!(
        out,
        "pipeline {} (config {short}) as of {}",
        p.file.display(),
        time::format(t)
    )?;
    if let Some((hash, record)) = record::find(store, t, &p.config_hash)? {
        writeln!(
            out,
            "already run: pipeline run {} as of {} with this config; nothing to do",
            hex(&hash),
            time::format(t)
        )?;
        return Ok(Outcome::AlreadyRun { hash, record });
    }

    writeln!(out, "[1/7] ingest")?;
    let (ingested, skipped) = ingest_sources(store, p, sent, out)?;
    writeln!(
        out,
        "      {} file(s) ingested, {} skipped as already ingested",
        ingested.len(),
        skipped.len()
    )?;

    writeln!(out, "[2/7] snapshot")?;
    let (snap, new, s) = snapshot::create(store, at)?;
    writeln!(
        out,
        "      snapshot {} ({}) as of {}: {} customers",
        hex(&snap),
        state(new),
        time::format(t),
        s.matrix.customers.len()
    )?;
    drop(s);

    writeln!(out, "[3/7] train")?;
    let (trained, not_due) = train_due(store, p, t, &snap, out)?;

    writeln!(out, "[4/7] score")?;
    let chosen = scores::choose_models(store, &Record::read(store)?, t)?;
    let model_hashes: Vec<ArtifactHash> = chosen.iter().map(|c| c.hash).collect();
    let (score_hash, new, set) = scores::score(store, &snap, &model_hashes)?;
    writeln!(
        out,
        "      scores {} ({}): {} customers",
        hex(&score_hash),
        state(new),
        set.rows.len()
    )?;
    let models: Vec<record::UsedModel> = chosen
        .iter()
        .map(|c| record::UsedModel {
            kind: c.kind,
            model: hex(&c.hash),
            rule: match c.rule {
                Rule::Production { .. } => "production".into(),
                Rule::LatestTrained { .. } => "latest-trained".into(),
            },
        })
        .collect();
    for m in &models {
        writeln!(out, "      {:?} model {} ({})", m.kind, m.model, m.rule)?;
    }

    writeln!(out, "[5/7] export")?;
    let exports = export(store, store_dir, p, t, &score_hash, &snap, out)?;

    writeln!(out, "[6/7] drift and quality")?;
    let mut breaches = Vec::new();
    let drift = match record::previous(store, t)? {
        None => {
            writeln!(out, "      drift: no earlier pipeline run to compare with")?;
            None
        }
        Some((prev_hash, prev)) => {
            let from = record::snapshot_hash(&prev_hash, &prev)?;
            let (h, _, r) = drift::create(store, &from, &snap)?;
            let significant = r.count(Verdict::Significant) as u64;
            writeln!(
                out,
                "      drift against run {} (as of {}): {} significant, {} moderate, {} stable (report {})",
                &hex(&prev_hash)[..16],
                time::format(prev.as_of),
                significant,
                r.count(Verdict::Moderate),
                r.count(Verdict::Stable),
                hex(&h)
            )?;
            if let Some(max) = p.config.thresholds.drift_significant_max {
                if significant > max {
                    breaches.push(format!(
                        "drift: {significant} features drifted significantly (drift_significant_max = {max})"
                    ));
                }
            }
            Some(record::Drift {
                report: hex(&h),
                previous_run: hex(&prev_hash),
                from_snapshot: prev.snapshot.clone(),
                significant,
                moderate: r.count(Verdict::Moderate) as u64,
            })
        }
    };
    let rules = Rules {
        quarantine_max: p.config.thresholds.quarantine_rate_max,
        ..Rules::default()
    };
    let q = quality::report(store, &quality::Filter::default(), &rules)?;
    let (qh, _) = quality::store_report(store, &q)?;
    let flags: Vec<(u64, String)> = q
        .runs
        .iter()
        .filter(|r| ingested.iter().any(|i| i.run == r.run))
        .flat_map(|r| r.flags.iter().map(|f| (r.run, f.name().to_string())))
        .collect();
    writeln!(
        out,
        "      quality: {} flag(s) on this run's ingest runs (report {})",
        flags.len(),
        hex(&qh)
    )?;
    if let Some(max) = p.config.thresholds.quality_flags_max {
        if flags.len() as u64 > max {
            let list: Vec<String> = flags.iter().map(|(r, f)| format!("run {r} {f}")).collect();
            breaches.push(format!(
                "quality: {} flag(s) ({}; quality_flags_max = {max})",
                flags.len(),
                list.join(", ")
            ));
        }
    }

    writeln!(out, "[7/7] record")?;
    let record = RunRecord {
        as_of: t,
        known_at: at.known_at,
        config_hash: p.config_hash.clone(),
        ingested,
        skipped,
        log_head: hex(&store.log().head()?),
        snapshot: hex(&snap),
        trained,
        not_due,
        models,
        scores: hex(&score_hash),
        exports,
        drift,
        quality: record::Quality {
            report: hex(&qh),
            flags,
        },
        breaches,
    };
    let (hash, _) = record::store(store, &record)?;
    writeln!(out, "pipeline run {} as of {}", hex(&hash), time::format(t))?;
    for b in &record.breaches {
        writeln!(out, "threshold breached: {b}")?;
    }
    Ok(Outcome::Ran { hash, record })
}

fn state(new: bool) -> &'static str {
    if new {
        "new"
    } else {
        "already stored"
    }
}

/// Every source's new files, then the synthetic population's (generated, ingested, removed).
/// `sent`: each source's files as a client sent them (a run through the server), in place of the
/// ones this side would find.
fn ingest_sources(
    store: &Store,
    p: &Pipeline,
    sent: Option<&[Vec<super::InputFile>]>,
    out: &mut impl Write,
) -> anyhow::Result<(Vec<record::Ingested>, Vec<record::Skipped>)> {
    let mut ingested = Vec::new();
    let mut skipped = Vec::new();
    let mut one = |args: &IngestArgs,
                   files: Vec<super::InputFile>,
                   out: &mut dyn FnMut(&str) -> std::io::Result<()>|
     -> anyhow::Result<()> {
        let mut text = Vec::new();
        let done = super::ingest_new(store, args, &files, &mut text)?;
        for line in String::from_utf8_lossy(&text).lines() {
            out(line)?;
        }
        if done.code != ExitCode::SUCCESS {
            bail!(
                "ingesting {} failed: every row of a file was rejected",
                args.file.display()
            );
        }
        ingested.extend(done.runs.iter().map(|r| record::Ingested {
            run: r.run,
            kind: r.kind,
            file: r.file.clone(),
            file_hash: r.file_hash.clone(),
            accepted: r.accepted,
            duplicates: r.duplicates,
            quarantined: r.quarantined,
        }));
        skipped.extend(done.skipped.into_iter().map(|(f, file_hash, run)| record::Skipped {
            kind: args.kind,
            file: f.display().to_string(),
            file_hash,
            run,
        }));
        Ok(())
    };
    let mut print = |line: &str| writeln!(out, "      {line}");
    for (i, s) in p.sources.iter().enumerate() {
        print(&format!("{} {}", s.args.kind.choice_name(), s.args.file.display()))?;
        let files = match sent {
            Some(sent) => sent
                .get(i)
                .map(|f| f.iter().map(super::InputFile::clone).collect())
                .unwrap_or_default(),
            None => local_files(&s.args.file)?,
        };
        one(&s.args, files, &mut print)?;
    }
    if let Some(syn) = &p.config.synthetic {
        // The generated files carry e-mail addresses (to show them dropped at ingest), so they
        // are written outside the store, whose guarantee is that personal data is never stored,
        // and removed once ingested.
        let scratch = tempfile::Builder::new().prefix("cis-synthetic-").tempdir()?;
        SynthConfig {
            customers: syn.customers,
            seed: syn.seed,
            days: syn.days,
            ..SynthConfig::default()
        }
        .validate()?
        .write_csv(scratch.path())?;
        for (kind, name) in [
            (Kind::Customer, "customers.csv"),
            (Kind::Order, "orders.csv"),
            (Kind::Session, "sessions.csv"),
            (Kind::Return, "returns.csv"),
        ] {
            let args = IngestArgs {
                kind,
                file: scratch.path().join(name),
                format: Some(Format::Csv),
                recorded_at: "recorded_at".into(),
                batch_rows: cis_ingest::DEFAULT_BATCH_ROWS as u64,
            };
            print(&format!(
                "synthetic {} ({} customers, seed {})",
                kind.choice_name(),
                syn.customers,
                syn.seed
            ))?;
            let files = local_files(&args.file)?;
            one(&args, files, &mut print)?;
        }
        scratch.close()?;
    }
    Ok((ingested, skipped))
}

/// The files `path` names here (a file, a directory's, a glob's), to ingest from where they are.
fn local_files(path: &Path) -> anyhow::Result<Vec<super::InputFile>> {
    let files = match cis_ingest::inputs(path)? {
        cis_ingest::Inputs::File(f) => vec![f],
        cis_ingest::Inputs::Many(files) => files,
    };
    Ok(files.into_iter().map(super::InputFile::local).collect())
}

/// Trains each configured kind that is due: no model of the kind with as-of ≤ T, or the latest
/// one is `retrain_every_days` or more older than T.
fn train_due(
    store: &Store,
    p: &Pipeline,
    t: Timestamp,
    snap: &ArtifactHash,
    out: &mut impl Write,
) -> anyhow::Result<(Vec<record::TrainedModel>, Vec<ModelKind>)> {
    let train = &p.config.train;
    let mut trained = Vec::new();
    let mut not_due = Vec::new();
    let configured = [
        (ModelKind::Churn, train.churn.is_some()),
        (ModelKind::Clv, train.clv.is_some()),
        (ModelKind::Segments, train.segments.is_some()),
    ];
    for (kind, _) in configured.into_iter().filter(|(_, on)| *on) {
        let every = i64::from(train.retrain_every_days);
        if let Some(latest) = store.artifacts().latest(kind.artifact_kind(), t.micros())? {
            let as_of = Timestamp::from_micros(latest.as_of);
            if as_of.plus_days(every) > t {
                writeln!(
                    out,
                    "      {kind:?}: not due (model {} as of {}; retrain_every_days = {every})",
                    &hex(&latest.hash)[..16],
                    time::format(as_of)
                )?;
                not_due.push(kind);
                continue;
            }
        }
        let m = match kind {
            ModelKind::Churn => {
                let mut cutoffs = Vec::new();
                for days in &p.churn_cutoffs_days {
                    let (h, ..) = snapshot::create(store, AsOf::new(Some(t.plus_days(-days)), None))?;
                    cutoffs.push(h);
                }
                let seed = train.churn.as_ref().map_or_else(default_seed, |c| c.seed);
                let params = ChurnParams {
                    seed,
                    ..ChurnParams::default()
                };
                train::churn(store, &cutoffs, params, p.config.label_horizon_days, t)?
            }
            ModelKind::Clv => {
                let params = p.clv.clone().unwrap_or_default();
                train::clv(store, snap, params)?
            }
            ModelKind::Segments => {
                let c = train.segments.as_ref();
                let params = SegmentParams {
                    k: c.and_then(|c| c.k),
                    seed: c.map_or_else(default_seed, |c| c.seed),
                    ..SegmentParams::default()
                };
                train::segments(store, snap, params)?
            }
            // Not in `configured`: a pipeline file has no `train.embedding` table.
            ModelKind::Embedding => bail!("a pipeline does not train embeddings"),
        };
        let (hash, new) = m.store(store)?;
        writeln!(
            out,
            "      {kind:?}: model {} ({}) as of {}",
            hex(&hash),
            state(new),
            time::format(m.as_of)
        )?;
        trained.push(record::TrainedModel {
            kind,
            model: hex(&hash),
            snapshots: m.parents.iter().map(|h| hex(h)).collect(),
            new,
        });
    }
    Ok((trained, not_due))
}

/// Writes this run's score run and snapshot under `<store>/<export.dir>/<T>/`.
fn export(
    store: &Store,
    store_dir: &Path,
    p: &Pipeline,
    t: Timestamp,
    scores_hash: &ArtifactHash,
    snap: &ArtifactHash,
    out: &mut impl Write,
) -> anyhow::Result<Vec<record::Exported>> {
    // The record names each file relative to the store directory, wherever the store is opened from.
    let rel = Path::new(&p.config.export.dir).join(time::format(t).replace(':', ""));
    let dir = store_dir.join(&rel);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let file = |table: &str, format: ExportFormat| {
        let name = format!("{table}.{}", format.choice_name());
        (dir.join(&name), rel.join(name))
    };
    let mut exports = Vec::new();
    let mut note =
        |table: &str, format: ExportFormat, (path, recorded): (PathBuf, PathBuf), rows: usize| -> anyhow::Result<()> {
            let file_hash = cis_ingest::file_hash(&path)?;
            writeln!(
                out,
                "      {table}: {} ({rows} rows, blake3 {})",
                path.display(),
                &file_hash[..16]
            )?;
            exports.push(record::Exported {
                table: table.into(),
                format: format.choice_name().into(),
                path: recorded.display().to_string(),
                rows: rows as u64,
                file_hash,
            });
            Ok(())
        };
    if !p.score_formats.is_empty() {
        let table = ScoreTable::of(store, scores_hash)?;
        for &format in &p.score_formats {
            let (path, recorded) = file(cis_export::TABLE, format);
            write_table(&table, format, &path)?;
            note(cis_export::TABLE, format, (path, recorded), table.set.rows.len())?;
        }
    }
    for &format in &p.snapshot_formats {
        let (path, recorded) = file(cis_export::features::SNAPSHOT_TABLE, format);
        let s = export_snapshot(store, snap, format, &path)?;
        note(s.table, format, (path, recorded), s.rows)?;
    }
    Ok(exports)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        time::parse_timestamp(s).expect("time")
    }

    /// A served run refuses a bundle whose member would point outside the unpacked bundle (a
    /// server-side path named by a client), before ingesting anything.
    #[test]
    fn a_bundle_member_outside_the_bundle_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("store")).expect("store");
        let bundle = serde_json::to_vec(&Bundle {
            config_file: "cis.toml".into(),
            config_text: "cutoff = \"daily 00:00 UTC\"\n[[source]]\nkind = \"orders\"\npath = \"feed\"\n".into(),
            files: vec![BundleFile {
                source: 0,
                name: "feed/day.csv".into(),
                blake3: "0".repeat(64),
                member: Some("../../keys.bin".into()),
            }],
        })
        .expect("json");
        let tar_path = dir.path().join("bundle.tar");
        let mut tar = tar::Builder::new(std::fs::File::create(&tar_path).expect("tar"));
        let mut header = tar::Header::new_gnu();
        header.set_size(bundle.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, Bundle::NAME, &bundle[..]).expect("append");
        tar.finish().expect("finish");
        let cmd = PipelineCommand::Run(RunArgs {
            config: "cis.toml".into(),
            as_of: Some(at("1997-09-30T00:00:00Z")),
        });
        let err = run_served(&store, cmd, Some(&tar_path), &mut Vec::new()).expect_err("refused");
        assert!(err.to_string().contains("outside itself"), "{err:#}");
        assert_eq!(store.log().event_count().expect("count"), 0);
    }

    #[test]
    fn the_cutoff_is_the_latest_instant_of_the_rule_not_after_now() {
        let p = Pipeline::parse(Path::new("cis.toml"), "cutoff = \"daily 06:30 UTC\"").expect("parse");
        assert_eq!(p.cutoff_at(at("2025-01-02T06:29:59Z")), at("2025-01-01T06:30:00Z"));
        assert_eq!(p.cutoff_at(at("2025-01-02T06:30:00Z")), at("2025-01-02T06:30:00Z"));
        assert_eq!(p.cutoff_at(at("1969-12-31T23:00:00Z")), at("1969-12-31T06:30:00Z"));
        for bad in [
            "daily 24:00 UTC",
            "daily 6:30 UTC",
            "daily 06:30",
            "hourly 06:30 UTC",
            "daily 06:30 UTC x",
        ] {
            assert_eq!(parse_cutoff(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_config_hash_is_of_the_settings_not_the_text() {
        let a = Pipeline::parse(Path::new("a.toml"), "cutoff = \"daily 00:00 UTC\"").expect("a");
        let b = Pipeline::parse(
            Path::new("b.toml"),
            "# a comment\ncutoff   =   \"daily 00:00 UTC\"\nlabel_horizon_days = 90\n",
        )
        .expect("b");
        let c = Pipeline::parse(
            Path::new("c.toml"),
            "cutoff = \"daily 00:00 UTC\"\nlabel_horizon_days = 60",
        )
        .expect("c");
        assert_eq!(
            a.config_hash, b.config_hash,
            "a default written out is the same setting"
        );
        assert_ne!(a.config_hash, c.config_hash);
    }
}
