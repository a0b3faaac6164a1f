//! Ingestion: file → rows → validated events → batches appended to the log.
//!
//! Bad rows never stop a file: each is quarantined with file, line, field and reason,
//! and the good rows are stored. A file that cannot be opened or whose header lacks a
//! required column stops before anything is written.

pub mod history;
pub mod records;
pub mod source;
pub mod validate;

use std::fs::File;
use std::io::Read;
use std::path::Path;

use cis_storage::{hex, BatchRecord, NewEvent, StorageError, Store};
use indicatif::{ProgressBar, ProgressStyle};

use cis_core::event::Kind;
use cis_core::time::{self, Micros};
use records::{IngestRun, Profile, Quarantined};
use source::{Format, Item};

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{file}: cannot open: {source}")]
    Open {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: bad header: {reason}")]
    Header { file: String, reason: String },
    #[error("{file}: missing required column(s): {}", missing.join(", "))]
    MissingColumns { file: String, missing: Vec<String> },
    #[error("{file}: read failed: {reason}")]
    Read { file: String, reason: String },
    #[error("--format cdnow holds orders only, not {0}")]
    CdnowKind(&'static str),
    #[error("journal record: {0}")]
    Record(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Where an event's `recorded_at` (when the system learned it) comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordedAt {
    /// The time of the ingest run: for live feeds.
    Now,
    /// The event's own time: for backfilling history known as it happened.
    EventTime,
    /// A column of the file.
    Column(String),
    /// A fixed time (tests and replays).
    Fixed(Micros),
}

impl RecordedAt {
    pub fn parse(s: &str) -> RecordedAt {
        match s {
            "now" => RecordedAt::Now,
            "event-time" => RecordedAt::EventTime,
            col => RecordedAt::Column(source::normalise_name(col)),
        }
    }

    fn describe(&self) -> String {
        match self {
            RecordedAt::Now => "now".into(),
            RecordedAt::EventTime => "event-time".into(),
            RecordedAt::Column(c) => format!("column {c}"),
            RecordedAt::Fixed(t) => time::format(*t),
        }
    }
}

#[derive(Debug, Clone)]
pub struct IngestOptions {
    pub kind: Kind,
    pub format: Format,
    pub recorded_at: RecordedAt,
    /// Events per batch: the unit of durability and acknowledgement.
    pub batch_rows: usize,
    pub progress: bool,
}

impl IngestOptions {
    pub fn new(kind: Kind, format: Format) -> Self {
        IngestOptions {
            kind,
            format,
            recorded_at: RecordedAt::EventTime,
            batch_rows: 100_000,
            progress: false,
        }
    }
}

/// A committed batch and the input lines it covered, reported as soon as it is durable.
pub struct Committed<'a> {
    pub batch: &'a BatchRecord,
    pub first_line: u64,
    pub last_line: u64,
}

/// Counts bytes and hashes them as the file is read, so the file is read once.
struct Tap<'a, R> {
    inner: R,
    hasher: &'a mut blake3::Hasher,
    bar: &'a ProgressBar,
}

impl<R: Read> Read for Tap<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bar.inc(n as u64);
        Ok(n)
    }
}

pub fn ingest_file(
    store: &Store,
    path: &Path,
    opts: &IngestOptions,
    on_commit: &mut dyn FnMut(Committed<'_>),
) -> Result<IngestRun, IngestError> {
    let file_name = path.display().to_string();
    if opts.format == Format::Cdnow && opts.kind != Kind::Order {
        return Err(IngestError::CdnowKind(opts.kind.name()));
    }
    let file = File::open(path).map_err(|source| IngestError::Open {
        file: file_name.clone(),
        source,
    })?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    // A bar only for files of more than a few thousand rows; indicatif hides it off a terminal.
    let bar = if opts.progress && len > 256 * 1024 {
        ProgressBar::new(len)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {bytes}/{total_bytes} {wide_bar} {eta} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut hasher = blake3::Hasher::new();
    let reader = Tap {
        inner: std::io::BufReader::with_capacity(1 << 20, file),
        hasher: &mut hasher,
        bar: &bar,
    };
    let src = source::open(opts.format, Box::new(reader), &file_name)?;

    let recorded_col = match &opts.recorded_at {
        RecordedAt::Column(c) => Some(c.as_str()),
        _ => None,
    };
    let known_columns = src.columns().is_some();
    if let Some(cols) = src.columns() {
        let missing: Vec<String> = validate::required_columns(opts.kind)
            .iter()
            .copied()
            .chain(recorded_col)
            .filter(|c| !cols.iter().any(|h| h == c))
            .map(String::from)
            .collect();
        if !missing.is_empty() {
            return Err(IngestError::MissingColumns {
                file: file_name,
                missing,
            });
        }
        warn_dropped(&file_name, &src.dropped());
    }

    let started = time::now();
    let run_id = store.next_id("ingest_run")?;
    let head_before = store.log().head()?;
    let reserved: Vec<&str> = recorded_col.into_iter().collect();
    let mut run = IngestRun {
        run: run_id,
        kind: opts.kind,
        format: opts.format,
        file: file_name.clone(),
        file_hash: String::new(),
        recorded_at: opts.recorded_at.describe(),
        started_at: time::format(started),
        finished_at: String::new(),
        rows: 0,
        accepted: 0,
        duplicates: 0,
        quarantined: 0,
        head_before: hex(&head_before),
        head_after: String::new(),
        batches: Vec::new(),
        dropped_columns: Vec::new(),
        profiled: 0,
        missing: Default::default(),
        arrival_lag: None,
        per_day: Default::default(),
    };
    let mut profile = Profile::new(opts.kind);
    // Two stages on two threads: this one reads and validates, the caller's thread hashes,
    // seals and writes. A bounded channel keeps at most two batches in memory.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Chunk>(1);
    let outcome = std::thread::scope(|scope| -> Result<Parsed, IngestError> {
        let reading = Reading {
            store,
            file: &file_name,
            opts,
            reserved: &reserved,
            now: started,
            run_id,
        };
        let producer = scope.spawn(move || reading.read_chunks(src, tx));
        let mut appended = Ok(());
        for chunk in rx.iter() {
            appended = commit(store, chunk, &mut run, &mut profile, on_commit);
            if appended.is_err() {
                break;
            }
        }
        // Dropping the receiver makes a still-running producer stop at its next send.
        drop(rx);
        let parsed = producer.join().map_err(|_| IngestError::Read {
            file: file_name.clone(),
            reason: "reader thread panicked".into(),
        })?;
        appended?;
        parsed
    })?;
    bar.finish_and_clear();
    run.rows = outcome.rows;
    run.quarantined = outcome.quarantined;
    run.dropped_columns = outcome.dropped;
    if !known_columns {
        warn_dropped(&file_name, &run.dropped_columns);
    }
    profile.finish(&mut run);
    run.file_hash = hasher.finalize().to_hex().to_string();
    run.head_after = hex(&store.log().head()?);
    run.finished_at = time::format(time::now());
    records::record_run(store, &run)?;
    Ok(run)
}

/// A batch of validated events and the input lines it came from.
struct Chunk {
    events: Vec<NewEvent>,
    profile: Profile,
    first_line: u64,
    last_line: u64,
}

/// What the reading stage counted.
struct Parsed {
    rows: u64,
    quarantined: u64,
    dropped: Vec<String>,
}

fn commit(
    store: &Store,
    chunk: Chunk,
    run: &mut IngestRun,
    profile: &mut Profile,
    on_commit: &mut dyn FnMut(Committed<'_>),
) -> Result<(), IngestError> {
    let out = store.log().append(chunk.events, run.run, time::now())?;
    run.accepted += out.appended;
    run.duplicates += out.duplicates;
    if let Some(b) = &out.batch {
        // Only batches that added events count, so a replayed file adds nothing.
        profile.merge(chunk.profile);
        run.batches.push(b.seq);
        on_commit(Committed {
            batch: b,
            first_line: chunk.first_line,
            last_line: chunk.last_line,
        });
    }
    Ok(())
}

/// The reading stage's view of a run.
struct Reading<'a> {
    store: &'a Store,
    file: &'a str,
    opts: &'a IngestOptions,
    /// Columns that are not customer attributes (the `--recorded-at` column).
    reserved: &'a [&'a str],
    now: Micros,
    run_id: u64,
}

impl Reading<'_> {
    fn read_chunks(
        &self,
        mut src: Box<dyn source::Source + Send + '_>,
        tx: std::sync::mpsc::SyncSender<Chunk>,
    ) -> Result<Parsed, IngestError> {
        let batch_rows = self.opts.batch_rows;
        let empty = || Chunk {
            events: Vec::with_capacity(batch_rows),
            profile: Profile::new(self.opts.kind),
            first_line: 0,
            last_line: 0,
        };
        let mut parsed = Parsed {
            rows: 0,
            quarantined: 0,
            dropped: Vec::new(),
        };
        let mut chunk = empty();
        while let Some(item) = src.next_item()? {
            let (line, result) = match item {
                Item::Bad { line, reason, raw } => (
                    line,
                    Err((
                        validate::RowError {
                            field: "(row)".into(),
                            reason,
                        },
                        raw,
                        None,
                    )),
                ),
                Item::Row(row) => {
                    let event = self.to_event(&row);
                    if let Ok(ev) = &event {
                        chunk.profile.note(&row, ev);
                    }
                    let customer = || row.get("customer_id").map(str::to_string);
                    (row.line, event.map_err(|e| (e, row.raw.clone(), customer())))
                }
            };
            parsed.rows += 1;
            if chunk.events.is_empty() {
                chunk.first_line = line;
            }
            chunk.last_line = line;
            match result {
                Ok(ev) => chunk.events.push(ev),
                Err((e, raw, customer)) => {
                    parsed.quarantined += 1;
                    tracing::debug!(line, field = %e.field, reason = %e.reason, "quarantined");
                    let q = Quarantined {
                        run: self.run_id,
                        file: self.file.to_string(),
                        line,
                        field: e.field,
                        reason: e.reason,
                        raw,
                        customer,
                    };
                    records::quarantine(self.store, &q)?;
                }
            }
            if chunk.events.len() >= batch_rows && tx.send(std::mem::replace(&mut chunk, empty())).is_err() {
                // The writer stopped on an error; it reports it.
                return Ok(parsed);
            }
        }
        if !chunk.events.is_empty() {
            // A send error means the writer already failed and reports why.
            let _ = tx.send(chunk);
        }
        parsed.dropped = src.dropped();
        Ok(parsed)
    }

    fn to_event(&self, row: &source::Row) -> Result<NewEvent, validate::RowError> {
        let ev = validate::validate(self.opts.kind, row, self.reserved)?;
        let recorded_at = match &self.opts.recorded_at {
            RecordedAt::Now => self.now,
            RecordedAt::EventTime => ev.event_time,
            RecordedAt::Column(c) => validate::timestamp(row, c)?,
            RecordedAt::Fixed(t) => *t,
        };
        if recorded_at < ev.event_time {
            let field = match &self.opts.recorded_at {
                RecordedAt::Column(c) => c.clone(),
                _ => "event_time".into(),
            };
            return Err(validate::RowError {
                field,
                reason: format!(
                    "event_time {} is after the time it was recorded ({})",
                    time::format(ev.event_time),
                    time::format(recorded_at)
                ),
            });
        }
        Ok(ev.into_new_event(recorded_at))
    }
}

fn warn_dropped(file: &str, dropped: &[String]) {
    if !dropped.is_empty() {
        tracing::warn!(file, columns = %dropped.join(", "), "personal data columns dropped, not stored");
    }
}
