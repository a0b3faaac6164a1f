//! The `cis` command line: flags are parsed here, then handed to the library.

mod access_log;
mod decay;
mod demo;
mod drift;
mod erase;
mod export;
mod features;
mod models;
mod monitor;
pub mod pipeline;
mod quality;
mod remote;
mod serve;
mod served;
mod snapshot;
mod store;
mod trainset;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::bail;
use cis_core::Choice;
use cis_server::jobs::CommandFiles;
use cis_storage::{hex, StorageError, Store};
use clap::builder::TypedValueParser;
use clap::{Args, Parser, Subcommand};

use cis_core::event::Kind;
use cis_core::time::{self, Timestamp};
use cis_core::AsOf;
use cis_ingest::history;
use cis_ingest::records;
use cis_ingest::source::Format;
use cis_ingest::{self as ingest, IngestOptions, RecordedAt};
use cis_synth::SynthConfig;

#[derive(Parser, Debug)]
#[command(
    name = "cis",
    version,
    about = "Customer Intelligence System: bitemporal event log, features, churn, CLV, segments"
)]
pub struct Cli {
    /// Store directory (an embedded sled database; created if missing).
    #[arg(long, global = true, env = "CIS_STORE", default_value = "cis-store")]
    pub store: PathBuf,
    /// More log output on stderr (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// File whose first line is the admin token, for commands sent to a running `cis serve`
    /// (`ingest`, `snapshot create`, `token create|revoke`); default: the CIS_TOKEN variable.
    #[arg(long, global = true, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Validate a file of events and append the good rows to the log; bad rows are quarantined.
    Ingest(IngestArgs),
    /// One customer's events as known at a point in time.
    Events(EventsArgs),
    /// The hash-chained log: verify it, or print its head.
    #[command(subcommand)]
    Log(LogCommand),
    /// Rows rejected by ingestion, with file, line, field and reason.
    #[command(subcommand)]
    Quarantine(QuarantineCommand),
    /// Recorded ingest runs with their counts and log heads.
    Runs,
    /// Point-in-time feature snapshots: create, list, show, diff, replay, export.
    #[command(subcommand)]
    Snapshot(snapshot::SnapshotCommand),
    /// Training sets: a churn training set's rows and labels as CSV or Parquet.
    #[command(subcommand)]
    Trainset(trainset::TrainsetCommand),
    /// Train a churn, CLV or segmentation model on snapshots; prints the model's hash.
    Train(models::TrainArgs),
    /// Score every customer of a snapshot with a model of each kind; prints the scores' hash.
    Score(models::ScoreArgs),
    /// Stored models.
    #[command(subcommand)]
    Models(models::ModelsCommand),
    /// Stored score runs.
    #[command(subcommand)]
    Scores(models::ScoresCommand),
    /// Re-derive an artifact (snapshot, model, scores) from its parents and print its lineage.
    Audit { hash: String },
    /// The main job: the pipeline file fixtures/demo/cis.toml (CDNOW and a synthetic population)
    /// run as of 1997-09-30 and 2025-06-30, every hash printed, then the API and dashboard served
    /// (--no-serve stops after the batch).
    Demo(demo::DemoArgs),
    /// Serve the HTTP API (as-of profiles, artifacts, metrics) and the dashboard.
    Serve(serve::ServeArgs),
    /// Bearer tokens for the HTTP API: create (printed once, stored hashed) or revoke.
    #[command(subcommand)]
    Token(serve::TokenCommand),
    /// Feature definitions for other engines: `features sql` renders them as Spark SQL or DuckDB.
    #[command(subcommand)]
    Features(features::FeaturesCommand),
    /// Export analytical tables (customer_risk_scores, the event log) as CSV or Parquet.
    #[command(subcommand)]
    Export(export::ExportCommand),
    /// Monitoring: feature drift, data quality over time, model decay.
    #[command(subcommand)]
    Monitor(monitor::MonitorCommand),
    /// A daily pipeline from a pipeline file (cis.toml): ingest, snapshot, train what is due,
    /// score, export, drift and quality, recorded as a pipeline-run artifact.
    #[command(subcommand)]
    Pipeline(pipeline::PipelineCommand),
    /// Who read what through the API, and whether the access log is intact.
    AccessLog(access_log::AccessLogArgs),
    /// Erase one customer's data (a data-subject request), keeping the log verifiable.
    Erase(erase::EraseArgs),
    /// The store's upkeep: compact.
    #[command(subcommand)]
    Store(store::StoreCommand),
    /// Recorded erasure requests.
    Erasures,
    /// Write a seeded synthetic population (orders, sessions, returns, customers) as CSV.
    Generate(GenerateArgs),
}

#[derive(Args, Debug, Clone)]
#[command(after_long_help = PARQUET_HELP)]
pub struct IngestArgs {
    #[arg(value_parser = choice::<Kind>())]
    pub kind: Kind,
    /// A file, a directory (its files, recursively, in name order; names starting with `.` or
    /// `_` skipped) or a quoted glob pattern (`'exports/orders/dt=*/part-*.parquet'`). Each file
    /// of a directory or pattern is one ingest run; one whose content was ingested already
    /// (same blake3, same kind) is skipped.
    #[arg(value_name = "PATH")]
    pub file: PathBuf,
    /// Input format (default: from each file's extension; .jsonl/.ndjson/.json → jsonl,
    /// .parquet/.pq → parquet, else csv). Parquet's types: see `cis ingest --help`.
    #[arg(long, value_parser = choice::<Format>())]
    pub format: Option<Format>,
    /// Where recorded_at comes from: `now` (live feeds), `event-time` (backfilling history),
    /// or the name of a column holding it.
    #[arg(long, default_value = "now")]
    pub recorded_at: String,
    /// Events per batch, the unit of durability.
    #[arg(long, default_value_t = ingest::DEFAULT_BATCH_ROWS as u64,
          value_parser = clap::value_parser!(u64).range(1..=ingest::MAX_BATCH_ROWS as u64))]
    pub batch_rows: u64,
}

#[derive(Args, Debug)]
pub struct EventsArgs {
    #[arg(long)]
    pub customer: String,
    /// Event time cut-off T (RFC 3339 or YYYY-MM-DD; default now).
    #[arg(long, value_parser = parse_time)]
    pub as_of: Option<Timestamp>,
    /// Knowledge time K: only events recorded by then (default T).
    #[arg(long, value_parser = parse_time)]
    pub known_at: Option<Timestamp>,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum LogCommand {
    /// Recompute every event hash and the hash chain; report the head.
    Verify,
    /// The head hash after the last batch committed by a time (default now).
    Head {
        #[arg(long, value_parser = parse_time)]
        at: Option<Timestamp>,
    },
}

#[derive(Subcommand, Debug)]
pub enum QuarantineCommand {
    List {
        /// Only this ingest run.
        #[arg(long)]
        run: Option<u64>,
    },
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[arg(long, default_value_t = 10_000)]
    pub customers: usize,
    #[arg(long, default_value_t = 730)]
    pub days: u32,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Output directory for orders.csv, sessions.csv, returns.csv, customers.csv, truth.csv.
    #[arg(long)]
    pub out: PathBuf,
}

/// How a process holding a store describes itself to one refused meanwhile.
const COMMAND: &str = "a cis command";
const SERVER: &str = "the cis API server";

/// Opens the store in `dir` as `holder` (one of the two above). A store another process holds
/// is refused with what to do about it; any other failure names the store.
fn open_store(dir: &Path, holder: &str) -> anyhow::Result<Store> {
    Store::open_as(dir, holder).map_err(|e| explain(dir, e))
}

/// The error of a store that would not open: for a held one, what to do about it.
fn explain(dir: &Path, e: StorageError) -> anyhow::Error {
    match &e {
        StorageError::Busy { pid, holder, .. } => {
            let stop = pid.map_or("stop it".to_string(), |p| format!("stop it (`kill {p}`)"));
            let hint = if holder.as_deref() == Some(SERVER) {
                format!("{stop} or press Ctrl-C in its terminal, run this command, then start the server again")
            } else {
                format!("wait for it to finish (or {stop}), then run this command again")
            };
            anyhow::anyhow!("{e}\none process at a time can open a store: {hint}")
        }
        _ => anyhow::Error::new(e).context(format!("opening store {}", dir.display())),
    }
}

/// The parser of a [`Choice`] argument: its names in `--help` and in the error for a wrong one.
fn choice<T: Choice + Clone>() -> impl TypedValueParser<Value = T> {
    clap::builder::PossibleValuesParser::new(T::CHOICES.iter().map(|c| c.choice_name()))
        .try_map(|name| T::from_choice(&name))
}

fn parse_time(s: &str) -> Result<Timestamp, time::TimeError> {
    time::parse_timestamp(s)
}

/// An error and its causes as `cis` prints them after `error: `. Like anyhow's `{:#}`, but a cause
/// whose text the message before it already ends with is not repeated: a library error that wraps
/// another (`invalid hyperparameter: {0}`) also names it as its source.
pub fn message(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.is_empty() {
            out = text;
        } else if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let store_dir = cli.store;
    let mut out = std::io::stdout().lock();
    let command = match cli.command {
        Command::Demo(a) => return demo::run(&store_dir, a, &mut out),
        Command::Serve(a) => return serve::serve(&store_dir, a),
        Command::Generate(a) => return generate(a, &mut out),
        // Reads an events export, not the store.
        Command::Features(cmd) => return features::run(cmd, &mut out),
        // Reads its pipeline file and sources here, whichever side runs its steps.
        Command::Pipeline(cmd) => return pipeline::run(&store_dir, cmd, cli.token_file.as_deref(), &mut out),
        command => command,
    };
    // Direct, or through the running server that holds the store (src/cli/remote.rs).
    match remote::open(&store_dir, cli.token_file.as_deref())? {
        remote::Target::Direct(store) => match command {
            Command::Erase(a) => erase::run(*store, &store_dir, a, &mut out, &mut std::io::stderr()),
            command => on_store(
                &store,
                command,
                CommandFiles::default(),
                &mut out,
                &mut std::io::stderr(),
            ),
        },
        remote::Target::Server(server) => server.run(command, &mut out),
    }
}

/// Runs `command` on an open store: this process's, or, run by `cis serve` for a client
/// (src/cli/served.rs), the server's, with `files` in place of the files its arguments name.
/// One copy of every command, so both ways print the same and store the same. `erase` here is
/// the server's (a direct one rewrites the closed store afterwards: [`run`]).
pub(crate) fn on_store(
    store: &Store,
    command: Command,
    files: CommandFiles<'_>,
    out: &mut impl Write,
    err: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    match command {
        Command::Ingest(a) => ingest(store, a, out),
        Command::Snapshot(snapshot::SnapshotCommand::Create { as_of, known_at }) => {
            snapshot::create(store, AsOf::new(Some(as_of), known_at), out)
        }
        Command::Events(a) => events(store, a, out),
        Command::Snapshot(cmd) => snapshot::run(store, cmd, files.output, out),
        Command::Trainset(cmd) => trainset::run(store, cmd, files.output, out),
        Command::Train(a) => models::train(store, a, out),
        Command::Score(a) => models::score(store, a, out),
        Command::Models(cmd) => models::models(store, cmd, out),
        Command::Scores(cmd) => models::scores_cmd(store, cmd, out),
        Command::Audit { hash } => models::audit_cmd(store, &hash, out),
        Command::Token(cmd) => serve::token(store, cmd, out, err),
        Command::Export(cmd) => export::run(store, cmd, files.output, out),
        Command::Monitor(cmd) => monitor::run(store, cmd, out),
        Command::AccessLog(a) => access_log::run(store, a, out, err),
        Command::Erase(a) => erase::run_served(store, a, files.input, out, err),
        Command::Erasures => erase::list(store, out),
        Command::Store(cmd) => store::run(store, cmd, out),
        // The server's side of `cis pipeline run` (the client's bundle is the input).
        Command::Pipeline(cmd) => pipeline::run_served(store, cmd, files.input, out),
        Command::Demo(_) | Command::Serve(_) | Command::Generate(_) | Command::Features(_) => {
            bail!("`cis demo`, `cis serve`, `cis generate` and `cis features` do not run on an open store")
        }
        Command::Log(LogCommand::Verify) => {
            match store.log().verify() {
                Ok(r) => {
                    // Erased events are not rehashed: they are reported with the request that erased them.
                    let requests: Vec<String> = r.erasures.keys().map(u64::to_string).collect();
                    let erased = match requests.len() {
                        0 => "0 erased".to_string(),
                        1 => format!("{} erased by request {}", r.erased, requests[0]),
                        _ => format!("{} erased by requests {}", r.erased, requests.join(", ")),
                    };
                    writeln!(
                        out,
                        "log verified: {} events in {} batches ({erased}), head {}",
                        r.events,
                        r.batches,
                        hex(&r.head)
                    )?;
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    writeln!(err, "error: {e}")?;
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Log(LogCommand::Head { at }) => {
            let (batch, head) = store.log().head_at(at.unwrap_or_else(time::now).micros())?;
            writeln!(out, "{} (after batch {batch})", hex(&head))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Quarantine(QuarantineCommand::List { run }) => {
            let rows = records::quarantined(store, run)?;
            for q in &rows {
                writeln!(
                    out,
                    "run {}  {}:{}  {}: {}  | {}",
                    q.run, q.file, q.line, q.field, q.reason, q.raw
                )?;
            }
            writeln!(out, "{} quarantined row(s)", rows.len())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Runs => {
            for r in records::runs(store)? {
                writeln!(
                    out,
                    "run {}  {} {}  rows {}  accepted {}  duplicate {}  quarantined {}  head {}",
                    r.run,
                    r.kind.name(),
                    r.file,
                    r.rows,
                    r.accepted,
                    r.duplicates,
                    r.quarantined,
                    short(&r.head_after)
                )?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `cis generate`: no store involved.
fn generate(a: GenerateArgs, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let cfg = SynthConfig {
        customers: a.customers,
        days: a.days,
        seed: a.seed,
        ..SynthConfig::default()
    };
    let counts = cfg.validate()?.write_csv(&a.out)?;
    writeln!(
        out,
        "wrote {} customers, {} orders, {} sessions, {} returns to {}",
        counts.customers,
        counts.orders,
        counts.sessions,
        counts.returns,
        a.out.display()
    )?;
    Ok(ExitCode::SUCCESS)
}

fn short(h: &str) -> &str {
    h.get(..16).unwrap_or(h)
}

/// `cis ingest --help`: how Parquet columns read (README, Inputs, says the same).
const PARQUET_HELP: &str = "\
Parquet columns are read as the text a CSV file would hold, then validated by the same rules:
  Utf8, LargeUtf8, Utf8View   the string
  Int8..Int64, UInt8..UInt64  the number (an amount of 12 is 12.00)
  Decimal32/64/128(p, s)      the exact value, trailing zeros dropped (1250 at scale 2 is 12.5)
  Float32, Float64            the shortest decimal of the float (12.99); more decimals than
                              the currency has, or NaN, is quarantined as in CSV
  Timestamp(unit, tz)         the instant in UTC, any unit, with or without a zone (none = UTC)
  Date32, Date64              the date (midnight UTC)
  Boolean                     true / false
  Dictionary of these         its values
A column of any other type (lists, structs, binary, time of day, ...) refuses the whole file,
naming the column; personal-data columns are never read, whatever their type. A null is a
missing value: in a required field the row is quarantined with its row number (1 = the first
row) and the field.";

fn ingest(store: &Store, a: IngestArgs, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let files = match ingest::inputs(&a.file)? {
        ingest::Inputs::File(f) => return ingest_one(store, &a, &f, &f, out).map(|(_, code)| code),
        ingest::Inputs::Many(files) => files,
    };
    let files: Vec<InputFile> = files.into_iter().map(InputFile::local).collect();
    let done = ingest_new(store, &a, &files, out)?;
    writeln!(
        out,
        "{} file(s): {} ingested, {} skipped as already ingested",
        files.len(),
        done.runs.len(),
        done.skipped.len()
    )?;
    Ok(done.code)
}

/// A file to ingest: the name it goes by (its path where it was found), where its bytes are
/// read from (the same path, or a server's copy), and its blake3 when known. A file whose content
/// the store has already may come without bytes (`read: None`): it is only ever skipped.
#[derive(Clone)]
pub struct InputFile {
    pub shown: PathBuf,
    pub read: Option<PathBuf>,
    pub blake3: Option<String>,
}

impl InputFile {
    pub fn local(path: PathBuf) -> InputFile {
        InputFile {
            read: Some(path.clone()),
            shown: path,
            blake3: None,
        }
    }
}

/// What [`ingest_new`] did.
pub(crate) struct IngestedFiles {
    pub runs: Vec<records::IngestRun>,
    /// (file, its blake3, the earlier run that ingested it).
    pub skipped: Vec<(PathBuf, String, u64)>,
    /// The exit code of the last run that did not succeed, else success.
    pub code: ExitCode,
}

/// Ingests each of `files` whose content no completed run of the kind has ingested, in order.
pub(crate) fn ingest_new(
    store: &Store,
    a: &IngestArgs,
    files: &[InputFile],
    out: &mut impl Write,
) -> anyhow::Result<IngestedFiles> {
    let mut done = records::completed_by_hash(store, a.kind)?;
    let mut result = IngestedFiles {
        runs: Vec::new(),
        skipped: Vec::new(),
        code: ExitCode::SUCCESS,
    };
    for (i, f) in files.iter().enumerate() {
        let hash = match (&f.blake3, &f.read) {
            (Some(h), _) => h.clone(),
            (None, Some(read)) => ingest::file_hash(read)?,
            (None, None) => bail!("{}: neither its content nor its hash", f.shown.display()),
        };
        if let Some(run) = done.get(&hash) {
            writeln!(out, "skipped {}: already ingested as run {run}", f.shown.display())?;
            result.skipped.push((f.shown.clone(), hash, *run));
            continue;
        }
        let Some(read) = &f.read else {
            bail!(
                "{}: its content was not sent, as if it had been ingested, but no run of the store has it",
                f.shown.display()
            )
        };
        // A failed file stops the rest: later days must not be known before an earlier one.
        let (run, run_code) = ingest_one(store, a, &f.shown, read, out).map_err(|e| {
            e.context(format!(
                "{} of {} file(s) not ingested, from {} on",
                files.len() - i,
                files.len(),
                f.shown.display()
            ))
        })?;
        if run_code != ExitCode::SUCCESS {
            result.code = run_code;
        }
        // The run read the whole file (it returned): a copy of it later in the list is skipped.
        done.insert(hash, run.run);
        result.runs.push(run);
    }
    Ok(result)
}

/// One file, one ingest run, under the name `shown`, its bytes from `read`: the run and the
/// command's exit code for it.
fn ingest_one(
    store: &Store,
    a: &IngestArgs,
    shown: &Path,
    read: &Path,
    out: &mut impl Write,
) -> anyhow::Result<(records::IngestRun, ExitCode)> {
    let name = shown.display().to_string();
    let format = a.format.unwrap_or_else(|| Format::from_file_name(&name));
    let opts = IngestOptions {
        recorded_at: RecordedAt::parse(&a.recorded_at),
        batch_rows: usize::try_from(a.batch_rows)?,
        progress: crate::progress::ingest_bar(std::io::stderr().is_terminal()),
        ..IngestOptions::new(a.kind, format)
    };
    let (input, len) = ingest::open_input(read)?;
    let (run, code) = cis_server::jobs::ingest_run(store, input, &name, len, &opts, out, &mut std::io::stderr())?;
    Ok((run, ExitCode::from(code)))
}

fn events(store: &Store, a: EventsArgs, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    if let (Some(t), Some(k)) = (a.as_of, a.known_at) {
        if k < t {
            tracing::info!("known-at is before as-of: events recorded after K are hidden even if they happened by T");
        }
    }
    let at = AsOf::new(a.as_of, a.known_at);
    let events = history::customer_events(store, &a.customer, at)?;
    if events.is_empty() {
        bail!(
            "no events for customer '{}' as of {} known at {}",
            a.customer,
            time::format(at.as_of),
            time::format(at.known_at)
        );
    }
    // An erased customer shows its erasure record(s), not a line per tombstone.
    let mut requests: Vec<u64> = events.iter().filter_map(|e| e.erasure_request).collect();
    requests.sort_unstable();
    requests.dedup();
    for e in events.iter().filter(|e| !e.erased) {
        if a.json {
            writeln!(out, "{}", serde_json::to_string(e)?)?;
        } else if let Some(p) = &e.payload {
            writeln!(
                out,
                "{}  recorded {}  {}  {}",
                e.event_time,
                e.recorded_at,
                describe(p),
                short(&e.event_id)
            )?;
        }
    }
    for r in cis_ops::erasure::requests(store)?
        .into_iter()
        .filter(|r| requests.contains(&r.request))
    {
        if a.json {
            writeln!(out, "{}", serde_json::json!({ "erasure": r }))?;
        } else {
            writeln!(out, "erased: {}", erase::describe(&r))?;
        }
    }
    if let (Some(c), false) = (history::attributes(&events), a.json) {
        writeln!(
            out,
            "attributes as of {}: {}",
            time::format(at.as_of),
            describe(&cis_core::event::Payload::Customer(c))
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

fn describe(p: &cis_core::event::Payload) -> String {
    use cis_core::event::Payload;
    // An optional field that is absent adds nothing to the line (the `unwrap_or_default`s).
    match p {
        Payload::Order(o) => format!(
            "order {} {}{}{}",
            o.order_id,
            o.amount.display(),
            o.quantity.map(|q| format!(" ×{q}")).unwrap_or_default(),
            o.channel.as_ref().map(|c| format!(" via {c}")).unwrap_or_default()
        ),
        Payload::Session(s) => format!(
            "session {} {}s{}",
            s.session_id,
            s.duration_s,
            s.page_views.map(|v| format!(" {v} pages")).unwrap_or_default()
        ),
        Payload::Return(r) => format!("return {} of order {} {}", r.return_id, r.order_id, r.amount.display()),
        Payload::Customer(c) => format!(
            "customer signup {} country {} {:?}",
            c.signup_date.map(time::format).unwrap_or_else(|| "-".into()),
            c.country.as_deref().unwrap_or("-"),
            c.attributes
        ),
    }
}
