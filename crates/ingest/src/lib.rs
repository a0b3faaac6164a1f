//! Ingestion: file → rows → validated events → batches appended to the log.
//!
//! Bad rows never stop a file: each is quarantined with file, line, field and reason,
//! and the good rows are stored. A file that cannot be opened or whose header lacks a
//! required column stops before anything is written. A failure after that (the input cannot be
//! read to its end, the store refuses a write) still records the run, with what it committed,
//! and is returned as [`IngestError::Stopped`].

pub mod history;
pub mod records;
pub mod source;
pub mod validate;

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use cis_storage::{hex, BatchRecord, Compaction, EventBatch, StorageError, Store};

use cis_core::event::{Event, Kind};
use cis_core::time::{self, Timestamp};
use records::{IngestRun, Profile, Quarantined};
use source::{Format, Item};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
    /// The whole file is refused: nothing of it is written.
    #[error(
        "{file}: column '{column}' has Arrow type {data_type}, which cis does not read (it reads {}); the file is refused",
        source::parquet::SUPPORTED
    )]
    UnsupportedColumn {
        file: String,
        column: String,
        data_type: String,
    },
    #[error("{file}: Parquet is read from a file (its footer is at the end), not from a stream")]
    ParquetStream { file: String },
    #[error("{pattern}: no input files (a directory is read recursively, skipping names that start with '.' or '_')")]
    NoFiles { pattern: String },
    #[error("{pattern}: not a usable glob pattern: {reason}")]
    Pattern { pattern: String, reason: String },
    #[error("journal record: {0}")]
    Record(String),
    /// The run failed part-way; `run` is its record as stored, with the batches it committed.
    #[error(
        "ingest run {} stopped after committing {} batch(es) ({} new events); the run is recorded: {cause}",
        run.run, run.batches.len(), run.accepted
    )]
    Stopped {
        run: Box<IngestRun>,
        cause: Box<IngestError>,
    },
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
    Fixed(Timestamp),
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

/// Told how far an ingest has read, so a caller can draw a progress bar: the library draws
/// nothing itself. Called from the reading thread, hence `Send + Sync`.
pub trait Progress: Send + Sync {
    /// Before the first byte: the input's size in bytes (0 if unknown).
    fn start(&self, total_bytes: u64);
    /// `bytes` more of the input were read.
    fn advance(&self, bytes: u64);
    /// The reading is over, whichever way the run ends (called once, also on an early error).
    fn finish(&self);
}

/// Calls [`Progress::finish`] when dropped, so no return path leaves a bar on the screen.
struct Finish<'a>(Option<&'a dyn Progress>);

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.0 {
            p.finish();
        }
    }
}

// So that `IngestOptions` stays `Debug`: a progress sink has nothing worth printing.
impl std::fmt::Debug for dyn Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Progress")
    }
}

/// Events per batch unless a run says otherwise. A batch writes one block (and one entry of the
/// duplicate check's index) per bucket it touches, so on a bulk load the batch size sets how many
/// blocks each customer's bucket holds until compaction: at 100,000 the peer set's 5.16 M events
/// left ~52 blocks a bucket and 430,000 sled entries, whose page table every later open loads. At
/// 500,000: ~13 blocks a bucket, a quarter of the wall time off the load, the store 20 % smaller,
/// a snapshot 0.72 × as long, for 60–100 MB more memory while a load runs (two batches in flight).
pub const DEFAULT_BATCH_ROWS: usize = 500_000;

/// The largest batch a run may ask for (memory: two batches are in flight).
pub const MAX_BATCH_ROWS: usize = 10_000_000;

#[derive(Debug, Clone)]
pub struct IngestOptions {
    pub kind: Kind,
    pub format: Format,
    pub recorded_at: RecordedAt,
    /// Events per batch: the unit of durability and acknowledgement.
    pub batch_rows: usize,
    /// Where to report how far the reading has got (none: nobody is watching).
    pub progress: Option<Arc<dyn Progress>>,
}

impl IngestOptions {
    pub fn new(kind: Kind, format: Format) -> Self {
        IngestOptions {
            kind,
            format,
            recorded_at: RecordedAt::EventTime,
            batch_rows: DEFAULT_BATCH_ROWS,
            progress: None,
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
    progress: Option<&'a dyn Progress>,
}

impl<R: Read> Read for Tap<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        if let Some(p) = self.progress {
            p.advance(n as u64);
        }
        Ok(n)
    }
}

pub fn ingest_file(
    store: &Store,
    path: &Path,
    opts: &IngestOptions,
    on_commit: &mut dyn FnMut(Committed<'_>),
) -> Result<IngestRun, IngestError> {
    let (file, len) = open_input(path)?;
    ingest_open_file(store, file, &path.display().to_string(), len, opts, on_commit)
}

/// Opens an input file for [`ingest_reader`]: the file and its length (0 if unknown). An
/// unopenable file is the error [`ingest_file`] gives, naming the path.
pub fn open_input(path: &Path) -> Result<(File, u64), IngestError> {
    let file = File::open(path).map_err(|source| IngestError::Open {
        file: path.display().to_string(),
        source,
    })?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    Ok((file, len))
}

/// [`ingest_file`] on an open file, named `file_name` in records and errors: Parquet is read
/// from the file by seeking; every other format as a stream ([`ingest_reader`]).
pub fn ingest_open_file(
    store: &Store,
    file: File,
    file_name: &str,
    len: u64,
    opts: &IngestOptions,
    on_commit: &mut dyn FnMut(Committed<'_>),
) -> Result<IngestRun, IngestError> {
    if opts.format == Format::Parquet {
        return ingest_parquet(store, file, file_name, len, opts, on_commit);
    }
    ingest_reader(store, file, file_name, len, opts, on_commit)
}

/// Parquet is read by seeking (footer first, then each column chunk), so its bytes cannot be
/// hashed on the way as a stream's are: the file is hashed in a pass of its own first.
fn ingest_parquet(
    store: &Store,
    file: File,
    file_name: &str,
    len: u64,
    opts: &IngestOptions,
    on_commit: &mut dyn FnMut(Committed<'_>),
) -> Result<IngestRun, IngestError> {
    let hash = hash_file(&file, file_name)?;
    let progress = opts.progress.as_deref();
    if let Some(p) = progress {
        p.start(len);
    }
    let finish = Finish(progress);
    let src = source::parquet::open(file, file_name, len, progress)?;
    let (run, result) = run_source(store, Box::new(src), file_name, opts, on_commit)?;
    drop(finish);
    finish_run(store, run, result, hash)
}

fn hash_file(mut file: &File, file_name: &str) -> Result<String, IngestError> {
    let read = |e: std::io::Error| IngestError::Read {
        file: file_name.into(),
        reason: e.to_string(),
    };
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(file).map_err(read)?;
    std::io::Seek::rewind(&mut file).map_err(read)?;
    Ok(hasher.finalize().to_hex().to_string())
}

/// blake3 of the file at `path`, as an ingest run records it (`IngestRun::file_hash`).
pub fn file_hash(path: &Path) -> Result<String, IngestError> {
    let file_name = path.display().to_string();
    let file = File::open(path).map_err(|source| IngestError::Open {
        file: file_name.clone(),
        source,
    })?;
    hash_file(&file, &file_name)
}

/// What an ingest's PATH names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inputs {
    /// One file (or a path that is neither a directory nor a pattern: opening it says why).
    File(std::path::PathBuf),
    /// A directory's files or a glob's matches, in name order.
    Many(Vec<std::path::PathBuf>),
}

/// Expands `path`: a directory is read recursively (the daily `dt=…/part-….parquet` layout),
/// skipping names that start with `.` or `_` (`_SUCCESS`, `.crc` files of Spark and Hadoop);
/// a path that does not exist but holds `*`, `?` or `[` is a glob pattern. Either way the files
/// come sorted by path, so daily folders are read in day order. Neither may be empty.
pub fn inputs(path: &Path) -> Result<Inputs, IngestError> {
    let pattern = path.display().to_string();
    let mut files = if path.is_dir() {
        let mut files = Vec::new();
        walk(path, &mut files).map_err(|source| IngestError::Open {
            file: pattern.clone(),
            source,
        })?;
        files
    } else if !path.exists() && pattern.contains(['*', '?', '[']) {
        let options = glob::MatchOptions {
            require_literal_leading_dot: true,
            ..glob::MatchOptions::new()
        };
        let bad = |reason: String| IngestError::Pattern {
            pattern: pattern.clone(),
            reason,
        };
        let mut files = Vec::new();
        for entry in glob::glob_with(&pattern, options).map_err(|e| bad(e.to_string()))? {
            let p = entry.map_err(|e| bad(e.to_string()))?;
            if p.is_file() {
                files.push(p);
            }
        }
        files
    } else {
        return Ok(Inputs::File(path.to_path_buf()));
    };
    if files.is_empty() {
        return Err(IngestError::NoFiles { pattern });
    }
    files.sort();
    Ok(Inputs::Many(files))
}

fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(['.', '_']) {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else if path.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

/// [`ingest_file`] on any byte stream, named `file_name` in records and errors; `len` (bytes,
/// 0 if unknown) only goes to [`Progress::start`].
pub fn ingest_reader(
    store: &Store,
    input: impl Read + Send,
    file_name: &str,
    len: u64,
    opts: &IngestOptions,
    on_commit: &mut dyn FnMut(Committed<'_>),
) -> Result<IngestRun, IngestError> {
    if opts.format == Format::Cdnow && opts.kind != Kind::Order {
        return Err(IngestError::CdnowKind(opts.kind.name()));
    }
    if opts.format == Format::Parquet {
        return Err(IngestError::ParquetStream { file: file_name.into() });
    }
    let progress = opts.progress.as_deref();
    if let Some(p) = progress {
        p.start(len);
    }
    let finish = Finish(progress);
    let mut hasher = blake3::Hasher::new();
    let reader = Tap {
        inner: std::io::BufReader::with_capacity(1 << 20, input),
        hasher: &mut hasher,
        progress,
    };
    let src = source::open(opts.format, Box::new(reader), file_name)?;
    let (run, result) = run_source(store, src, file_name, opts, on_commit)?;
    drop(finish);
    // Of the bytes read: the whole file unless the run stopped.
    finish_run(store, run, result, hasher.finalize().to_hex().to_string())
}

/// Checks the columns, then reads, validates and appends everything `src` yields. Returns the
/// run (counted, not yet recorded) and how the reading ended.
fn run_source(
    store: &Store,
    src: Box<dyn source::Source + Send + '_>,
    file_name: &str,
    opts: &IngestOptions,
    on_commit: &mut dyn FnMut(Committed<'_>),
) -> Result<(IngestRun, Result<(), IngestError>), IngestError> {
    let file_name = file_name.to_string();
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
        lines: 0,
        blank: 0,
        rows: 0,
        accepted: 0,
        duplicates: 0,
        quarantined: 0,
        stopped: None,
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
    // seals and writes (the log splits that over two threads again). A bounded channel keeps
    // at most two batches in memory; each committed batch's buffers go back to the reader,
    // which fills them again rather than allocating.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Chunk>(1);
    let (recycle, recycled) = std::sync::mpsc::sync_channel::<EventBatch>(2);
    let (parsed, result) = std::thread::scope(|scope| {
        let reading = Reading {
            store,
            file: &file_name,
            opts,
            reserved: &reserved,
            now: started,
            run_id,
        };
        let producer = scope.spawn(move || reading.read_chunks(src, tx, recycled));
        let mut appended = Ok(());
        for chunk in rx.iter() {
            appended = commit(store, chunk, &mut run, &mut profile, on_commit).map(|events| {
                // The reader may have stopped: then the buffers are simply dropped.
                let _ = recycle.try_send(events);
            });
            if appended.is_err() {
                break;
            }
        }
        // Dropping the receiver makes a still-running producer stop at its next send.
        drop(rx);
        let (parsed, read) = producer.join().unwrap_or_else(|_| {
            let reason = "reader thread panicked".into();
            let file = file_name.clone();
            (Parsed::default(), Err(IngestError::Read { file, reason }))
        });
        (parsed, appended.and(read))
    });
    run.lines = parsed.lines.read;
    run.blank = parsed.lines.blank;
    run.rows = parsed.rows;
    run.quarantined = parsed.quarantined;
    run.dropped_columns = parsed.dropped;
    if !known_columns {
        warn_dropped(&file_name, &run.dropped_columns);
    }
    profile.finish(&mut run);
    Ok((run, result))
}

/// Records the run with its file hash; a run whose reading failed is recorded as stopped and
/// returned as [`IngestError::Stopped`].
fn finish_run(
    store: &Store,
    mut run: IngestRun,
    result: Result<(), IngestError>,
    file_hash: String,
) -> Result<IngestRun, IngestError> {
    run.file_hash = file_hash;
    let head_after = store.log().head();
    run.finished_at = time::format(time::now());
    let cause = match (result, head_after) {
        (Ok(()), Ok(head)) => {
            run.head_after = hex(&head);
            records::record_run(store, &run)?;
            compact_after(store, &run);
            return Ok(run);
        }
        (Err(cause), head) => {
            // The run's record still matters more than its last head: note why it is blank.
            run.head_after = head.map(|h| hex(&h)).unwrap_or_else(|e| {
                tracing::warn!(run = run.run, error = %e, "the log head after a stopped run could not be read");
                String::new()
            });
            cause
        }
        (Ok(()), Err(e)) => e.into(),
    };
    // Whatever stopped the run, the batches it committed are in the log: record them.
    run.stopped = Some(cause.to_string());
    if let Err(e) = records::record_run(store, &run) {
        tracing::error!(run = run.run, error = %e, "the stopped run could not be recorded");
    }
    Err(IngestError::Stopped {
        run: Box::new(run),
        cause: Box::new(cause),
    })
}

/// Merges the blocks the run appended into segments, so reads stay as fast however many
/// runs came before (see `cis_storage::log`'s compaction). The run is committed and recorded
/// already, and a compaction changes no read: a failure is logged, not the run's.
fn compact_after(store: &Store, run: &IngestRun) {
    if run.batches.is_empty() {
        return;
    }
    match store.log().compact(Compaction::AfterAppends) {
        Ok(c) => tracing::info!(
            run = run.run,
            merges = c.merges,
            records = c.records_rewritten,
            deferred = c.deferred,
            most_blocks = c.most_blocks,
            value_log_freed = c.reclaimed.bytes_freed,
            "compacted the buckets the run appended to"
        ),
        Err(e) => {
            tracing::error!(run = run.run, error = %e, "compaction after the run failed (`cis store compact` retries it)")
        }
    }
}

/// A batch of validated events and the input lines it came from.
struct Chunk {
    events: EventBatch,
    profile: Profile,
    first_line: u64,
    last_line: u64,
}

/// What the reading stage counted.
#[derive(Default)]
struct Parsed {
    lines: source::LineCount,
    /// Items read: rows and row-level problems (the lines that are not blank).
    rows: u64,
    quarantined: u64,
    dropped: Vec<String>,
}

/// Appends `chunk` and returns its (spent) event buffers.
fn commit(
    store: &Store,
    chunk: Chunk,
    run: &mut IngestRun,
    profile: &mut Profile,
    on_commit: &mut dyn FnMut(Committed<'_>),
) -> Result<EventBatch, IngestError> {
    let out = store.log().append_batch(&chunk.events, run.run, time::now().micros())?;
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
    Ok(chunk.events)
}

/// The reading stage's view of a run.
struct Reading<'a> {
    store: &'a Store,
    file: &'a str,
    opts: &'a IngestOptions,
    /// Columns that are not customer attributes (the `--recorded-at` column).
    reserved: &'a [&'a str],
    now: Timestamp,
    run_id: u64,
}

impl Reading<'_> {
    /// Reads, validates and quarantines until the input ends or fails; returns what it counted
    /// either way, so a failed run is recorded with its counts.
    fn read_chunks(
        &self,
        mut src: Box<dyn source::Source + Send + '_>,
        tx: std::sync::mpsc::SyncSender<Chunk>,
        recycled: std::sync::mpsc::Receiver<EventBatch>,
    ) -> (Parsed, Result<(), IngestError>) {
        let mut parsed = Parsed::default();
        let result = self.read_into(src.as_mut(), &tx, &recycled, &mut parsed);
        parsed.lines = src.lines();
        parsed.dropped = src.dropped();
        (parsed, result)
    }

    fn read_into(
        &self,
        src: &mut (dyn source::Source + Send + '_),
        tx: &std::sync::mpsc::SyncSender<Chunk>,
        recycled: &std::sync::mpsc::Receiver<EventBatch>,
        parsed: &mut Parsed,
    ) -> Result<(), IngestError> {
        let batch_rows = self.opts.batch_rows;
        let empty = || Chunk {
            events: match recycled.try_recv() {
                Ok(mut events) => {
                    events.clear();
                    events
                }
                // Room for a batch of small events; it grows if they are larger.
                Err(_) => EventBatch::with_capacity(batch_rows, batch_rows.saturating_mul(96)),
            },
            profile: Profile::new(self.opts.kind),
            first_line: 0,
            last_line: 0,
        };
        let mut chunk = empty();
        let result = loop {
            let item = match src.next_item() {
                Ok(Some(item)) => item,
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            };
            match self.take(item, &mut chunk, parsed) {
                Ok(Some(row)) => src.recycle(row),
                Ok(None) => {}
                Err(e) => break Err(e),
            }
            if chunk.events.len() >= batch_rows && tx.send(std::mem::replace(&mut chunk, empty())).is_err() {
                // The writer stopped on an error; it reports it.
                return Ok(());
            }
        };
        if !chunk.events.is_empty() {
            // Good rows read before a failure are committed too. A send error means the writer
            // already failed and reports why.
            let _ = tx.send(chunk);
        }
        result
    }

    /// Validates one item into `chunk`, or quarantines it; gives back its row, if it was one.
    fn take(&self, item: Item, chunk: &mut Chunk, parsed: &mut Parsed) -> Result<Option<source::Row>, IngestError> {
        let (line, result, row) = match item {
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
                None,
            ),
            Item::Row(row) => {
                let event = self.to_event(&row);
                if let Ok((ev, recorded_at)) = &event {
                    chunk.profile.note(&row, ev.event_time, *recorded_at);
                }
                let customer = || row.get("customer_id").map(str::to_string);
                let result = event.map_err(|e| (e, row.raw.clone(), customer()));
                (row.line, result, Some(row))
            }
        };
        parsed.rows += 1;
        if chunk.events.is_empty() {
            chunk.first_line = line;
        }
        chunk.last_line = line;
        match result {
            Ok((ev, recorded_at)) => ev.push_to(recorded_at, &mut chunk.events)?,
            Err((e, raw, customer)) => {
                parsed.quarantined += 1;
                tracing::debug!(line, field = %e.field, reason = %e.reason, "quarantined");
                let q = Quarantined {
                    run: self.run_id,
                    seq: Some(parsed.quarantined),
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
        Ok(row)
    }

    /// The row's event and when it was recorded.
    fn to_event(&self, row: &source::Row) -> Result<(Event, Timestamp), validate::RowError> {
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
        Ok((ev, recorded_at))
    }
}

fn warn_dropped(file: &str, dropped: &[String]) {
    if !dropped.is_empty() {
        tracing::warn!(file, columns = %dropped.join(", "), "personal data columns dropped, not stored");
    }
}
