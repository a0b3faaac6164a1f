//! Analytical exports: the score run in force at a time T as the table `customer_risk_scores`, written
//! as Parquet (zstd) or CSV for warehouses, notebooks and BI tools; and snapshots and training sets
//! as feature tables ([`features`]).
//!
//! One row per customer of the latest score artifact whose as-of is not after T. Every row carries the
//! lineage of its scores (score hash, the hash of each model used, when the scores were generated), and
//! a Parquet file also names the table, the schema version, the score and snapshot hashes in its
//! key-value metadata. The same score artifact always exports to the same bytes.
//!
//! Files are written atomically: into a temporary file beside the target, synced, then renamed over it,
//! so a failed export leaves no partial file behind (and an existing file at the target untouched).

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use cis_storage::{hex, ArtifactHash, StorageError, Store};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

use cis_core::time::{self, Timestamp};
use cis_core::Choice;
use cis_features::labels::LabelError;
use cis_features::snapshot::SnapshotError;
use cis_models::scores::{self, ScoreRow, ScoreSet};
use cis_models::{ModelError, ModelKind};

pub mod events;
pub mod features;
pub mod sql;

/// The table's name, in Parquet metadata as `cis.table`.
pub const TABLE: &str = "customer_risk_scores";
/// Bumped whenever a column is added, removed, renamed or retyped.
pub const SCHEMA_VERSION: u32 = 1;
/// The columns, in order.
pub const COLUMNS: [&str; 13] = [
    "customer_id",
    "as_of",
    "churn_probability",
    "churn_band",
    "expected_purchases_90d",
    "p_alive",
    "clv_12m",
    "segment",
    "score_hash",
    "churn_model",
    "clv_model",
    "segment_model",
    "generated_at",
];
/// Rows per Parquet record batch (and so at most per row group).
const BATCH_ROWS: usize = 65_536;
const ZSTD_LEVEL: i32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Parquet,
}

impl Format {
    /// The format a file name implies: `.csv`, or `.parquet` / `.pq`.
    pub fn from_path(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "csv" => Some(Format::Csv),
            "parquet" | "pq" => Some(Format::Parquet),
            _ => None,
        }
    }
}

impl Choice for Format {
    const CHOICES: &'static [Format] = &[Format::Csv, Format::Parquet];

    fn choice_name(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Parquet => "parquet",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.choice_name())
    }
}

/// Case-insensitive, as a query parameter may come.
impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Format::from_choice(&s.to_ascii_lowercase()).map_err(|e| format!("unknown export format {e}"))
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    #[error("no scores as of {}: score a snapshot first (cis score), or export as of a later time", time::format(*.as_of))]
    NoScores { as_of: Timestamp },
    #[error("score artifact {0} is tampered: its content no longer hashes to its name (see cis audit)")]
    Tampered(String),
    #[error("cannot write {}: {reason}", .path.display())]
    Write { path: PathBuf, reason: io::Error },
    #[error("cannot write {}: it is a directory", .0.display())]
    IsDirectory(PathBuf),
    #[error("cannot write {}: directory {} does not exist", .path.display(), .dir.display())]
    NoDirectory { path: PathBuf, dir: PathBuf },
    #[error("model {0} is not an embedding (train one with `cis train embedding`)")]
    NotAnEmbedding(String),
    #[error("loading scores: {0}")]
    Scores(#[from] ModelError),
    #[error("a training set needs at least one snapshot")]
    NoSnapshots,
    /// Training's own error (an unmatured label, a snapshot of another feature set).
    #[error(transparent)]
    Labels(#[from] LabelError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("feature {feature} of customer '{customer}' is a count but holds {value}: the snapshot is malformed")]
    NotACount {
        feature: String,
        customer: String,
        value: f64,
    },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("cannot export to {}: it exists already (an events export goes to a new directory)", .0.display())]
    Exists(PathBuf),
    #[error("{} is not an events export of this cis: {reason}", .dir.display())]
    NotAnExport { dir: PathBuf, reason: String },
    #[error("stored event has unknown kind {0}")]
    UnknownKind(u8),
    #[error("an event of another kind reached the {0} table")]
    KindMismatch(&'static str),
    #[error(transparent)]
    Decode(#[from] cis_core::event::DecodeError),
    #[error("building the Arrow table: {0}")]
    Arrow(#[from] ArrowError),
    #[error("encoding Parquet: {0}")]
    Parquet(#[from] ParquetError),
    #[error("encoding CSV: {0}")]
    Csv(#[from] csv::Error),
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSummary {
    pub table: &'static str,
    pub format: Format,
    pub path: PathBuf,
    pub rows: usize,
    /// Size of the written file.
    pub bytes: u64,
    /// The time asked for (now if none was given).
    pub requested_as_of: Timestamp,
    /// The as-of of the score run exported (its snapshot's T), ≤ `requested_as_of`.
    pub as_of: Timestamp,
    pub score_hash: String,
    pub snapshot_hash: String,
    /// When the score run was generated (its artifact's creation time).
    pub generated_at: Timestamp,
}

/// The score run an export reads, with its lineage resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreTable {
    pub score_hash: String,
    pub generated_at: Timestamp,
    pub churn_model: Option<String>,
    pub clv_model: Option<String>,
    pub segment_model: Option<String>,
    pub set: ScoreSet,
}

impl ScoreTable {
    /// The latest score run whose as-of is not after `as_of`.
    pub fn latest(store: &Store, as_of: Timestamp) -> Result<ScoreTable, ExportError> {
        let r = store
            .artifacts()
            .latest(scores::KIND, as_of.micros())?
            .ok_or(ExportError::NoScores { as_of })?;
        ScoreTable::of(store, &r.hash)
    }

    /// The score run `hash`.
    pub fn of(store: &Store, hash: &ArtifactHash) -> Result<ScoreTable, ExportError> {
        let (artifact, set) = scores::load_scores(store, hash)?;
        let content = artifact.recomputed_hash();
        // An erasure's redaction changes the content on purpose: the last redaction note names
        // what it left. Any other difference is tampering.
        let redacted = || -> Result<bool, ExportError> {
            let notes = store.artifacts().redactions(&artifact.hash)?;
            Ok(notes.last().is_some_and(|n| n.content_hash == content))
        };
        if content != artifact.hash && !redacted()? {
            return Err(ExportError::Tampered(hex(hash)));
        }
        let model = |kind: ModelKind| set.models.iter().find(|(k, _)| *k == kind).map(|(_, h)| h.clone());
        Ok(ScoreTable {
            score_hash: hex(hash),
            generated_at: Timestamp::from_micros(artifact.created_at),
            churn_model: model(ModelKind::Churn),
            clv_model: model(ModelKind::Clv),
            segment_model: model(ModelKind::Segments),
            set,
        })
    }
}

/// Exports `customer_risk_scores` from the latest score run as of `as_of` (default: now) to `path`.
pub fn export_scores(
    store: &Store,
    as_of: Option<Timestamp>,
    format: Format,
    path: &Path,
) -> Result<ExportSummary, ExportError> {
    let requested_as_of = as_of.unwrap_or_else(time::now);
    let table = ScoreTable::latest(store, requested_as_of)?;
    let bytes = write_table(&table, format, path)?;
    Ok(ExportSummary {
        table: TABLE,
        format,
        path: path.to_path_buf(),
        rows: table.set.rows.len(),
        bytes,
        requested_as_of,
        as_of: table.set.as_of,
        score_hash: table.score_hash,
        snapshot_hash: table.set.snapshot,
        generated_at: table.generated_at,
    })
}

/// Writes a score table to `path` atomically; returns the file's size.
pub fn write_table(table: &ScoreTable, format: Format, path: &Path) -> Result<u64, ExportError> {
    atomic_write(path, |file| match format {
        Format::Csv => write_csv(table, file),
        Format::Parquet => write_parquet(table, file),
    })
}

/// The Arrow schema of `customer_risk_scores`.
pub fn arrow_schema() -> SchemaRef {
    let ts = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("customer_id", DataType::Utf8, false),
        Field::new("as_of", ts(), false),
        Field::new("churn_probability", DataType::Float64, true),
        Field::new("churn_band", DataType::Utf8, true),
        Field::new("expected_purchases_90d", DataType::Float64, true),
        Field::new("p_alive", DataType::Float64, true),
        Field::new("clv_12m", DataType::Float64, true),
        Field::new("segment", DataType::Utf8, true),
        Field::new("score_hash", DataType::Utf8, false),
        Field::new("churn_model", DataType::Utf8, true),
        Field::new("clv_model", DataType::Utf8, true),
        Field::new("segment_model", DataType::Utf8, true),
        Field::new("generated_at", ts(), false),
    ]))
}

/// The Parquet key-value metadata: table, schema version and lineage.
pub fn metadata(table: &ScoreTable) -> Vec<(&'static str, String)> {
    vec![
        ("cis.table", TABLE.to_string()),
        ("cis.schema_version", SCHEMA_VERSION.to_string()),
        ("cis.score_hash", table.score_hash.clone()),
        ("cis.snapshot_hash", table.set.snapshot.clone()),
        ("cis.generated_at", time::format(table.generated_at)),
        ("cis.as_of", time::format(table.set.as_of)),
    ]
}

fn batch(schema: &SchemaRef, table: &ScoreTable, rows: &[ScoreRow]) -> Result<RecordBatch, ArrowError> {
    let n = rows.len();
    let ts =
        |v: Timestamp| Arc::new(TimestampMicrosecondArray::from(vec![v.micros(); n]).with_timezone("UTC")) as ArrayRef;
    let text = |f: fn(&ScoreRow) -> Option<&str>| Arc::new(rows.iter().map(f).collect::<StringArray>()) as ArrayRef;
    let float = |f: fn(&ScoreRow) -> Option<f64>| Arc::new(rows.iter().map(f).collect::<Float64Array>()) as ArrayRef;
    let constant = |v: &Option<String>| Arc::new(StringArray::from(vec![v.as_deref(); n])) as ArrayRef;
    RecordBatch::try_new(
        Arc::clone(schema),
        vec![
            text(|r| Some(&r.customer_id)),
            ts(table.set.as_of),
            float(|r| r.churn_probability),
            text(|r| r.churn_band.as_deref()),
            float(|r| r.expected_purchases_90d),
            float(|r| r.p_alive),
            float(|r| r.clv_12m),
            text(|r| r.segment.as_deref()),
            constant(&Some(table.score_hash.clone())),
            constant(&table.churn_model),
            constant(&table.clv_model),
            constant(&table.segment_model),
            ts(table.generated_at),
        ],
    )
}

/// A zstd Parquet writer of `schema` with key-value metadata `kv`.
fn parquet_writer<W: Write + Send>(
    out: W,
    schema: &SchemaRef,
    kv: Vec<(&'static str, String)>,
) -> Result<ArrowWriter<W>, ExportError> {
    let kv = kv.into_iter().map(|(k, v)| KeyValue::new(k.to_string(), v)).collect();
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(ZSTD_LEVEL)?))
        .set_key_value_metadata(Some(kv))
        .build();
    Ok(ArrowWriter::try_new(out, Arc::clone(schema), Some(props))?)
}

fn write_parquet(table: &ScoreTable, file: &mut BufWriter<File>) -> Result<(), ExportError> {
    let schema = arrow_schema();
    let mut writer = parquet_writer(file, &schema, metadata(table))?;
    for rows in table.set.rows.chunks(BATCH_ROWS) {
        writer.write(&batch(&schema, table, rows)?)?;
    }
    writer.close()?;
    Ok(())
}

fn float_text(v: Option<f64>) -> String {
    // `Display` for f64 is the shortest text that parses back to the same value; a missing
    // value is an empty cell, as CSV has no null.
    v.map(|x| x.to_string()).unwrap_or_default()
}

fn write_csv(table: &ScoreTable, file: &mut BufWriter<File>) -> Result<(), ExportError> {
    let mut w = csv::Writer::from_writer(file);
    w.write_record(COLUMNS)?;
    let as_of = time::format(table.set.as_of);
    let generated_at = time::format(table.generated_at);
    // A missing value is an empty cell, as CSV has no null.
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    for r in &table.set.rows {
        w.write_record([
            r.customer_id.clone(),
            as_of.clone(),
            float_text(r.churn_probability),
            text(&r.churn_band),
            float_text(r.expected_purchases_90d),
            float_text(r.p_alive),
            float_text(r.clv_12m),
            text(&r.segment),
            table.score_hash.clone(),
            text(&table.churn_model),
            text(&table.clv_model),
            text(&table.segment_model),
            generated_at.clone(),
        ])?;
    }
    w.flush().map_err(csv::Error::from)?;
    Ok(())
}

/// Runs `fill` on a fresh temporary file beside `path`, syncs it and renames it to `path`. On any
/// failure the temporary file is removed and `path` is left as it was.
fn atomic_write(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<File>) -> Result<(), ExportError>,
) -> Result<u64, ExportError> {
    if path.is_dir() {
        return Err(ExportError::IsDirectory(path.to_path_buf()));
    }
    let write_err = |reason: io::Error| ExportError::Write {
        path: path.to_path_buf(),
        reason,
    };
    if path.file_name().is_none() {
        return Err(write_err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a file name",
        )));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(ExportError::NoDirectory {
            path: path.to_path_buf(),
            dir: dir.to_path_buf(),
        });
    }
    // Named independently of the target, so that any target name the OS accepts works; unique per
    // process and call, and created exclusively, so two exports never share one.
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".cis-export.{}.{}.{}.tmp",
        std::process::id(),
        time::now(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(write_err)?;
    let result = (|| {
        let mut buf = BufWriter::new(file);
        fill(&mut buf)?;
        let file = buf.into_inner().map_err(|e| write_err(e.into_error()))?;
        file.sync_all().map_err(write_err)?;
        let bytes = file.metadata().map_err(write_err)?.len();
        drop(file);
        fs::rename(&tmp, path).map_err(write_err)?;
        Ok(bytes)
    })();
    match result {
        Ok(bytes) => {
            // Make the rename itself durable; not every platform can open a directory for this.
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
            Ok(bytes)
        }
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_failure_mid_write_leaves_the_old_file_and_no_temporary_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.csv");
        fs::write(&path, "old").expect("write");
        let err = atomic_write(&path, |w| {
            io::Write::write_all(w, &[b'x'; 100_000]).expect("half a file");
            Err(ExportError::NoScores {
                as_of: Timestamp::EPOCH,
            })
        })
        .expect_err("fill failed");
        assert!(matches!(err, ExportError::NoScores { .. }));
        assert_eq!(fs::read_to_string(&path).expect("read"), "old");
        assert_eq!(files(dir.path()), ["t.csv"]);

        let bytes = atomic_write(&path, |w| {
            io::Write::write_all(w, b"new").expect("write");
            Ok(())
        })
        .expect("ok");
        assert_eq!(bytes, 3);
        assert_eq!(fs::read_to_string(&path).expect("read"), "new");
        assert_eq!(files(dir.path()), ["t.csv"]);
    }

    #[test]
    fn formats_parse_and_follow_extensions() {
        assert_eq!("CSV".parse::<Format>(), Ok(Format::Csv));
        assert_eq!("parquet".parse::<Format>(), Ok(Format::Parquet));
        assert!("xlsx".parse::<Format>().is_err());
        assert_eq!(Format::from_path(Path::new("a/b.Parquet")), Some(Format::Parquet));
        assert_eq!(Format::from_path(Path::new("b.pq")), Some(Format::Parquet));
        assert_eq!(Format::from_path(Path::new("b.csv")), Some(Format::Csv));
        assert_eq!(Format::from_path(Path::new("b")), None);
    }

    #[test]
    fn the_schema_has_the_documented_columns() {
        let schema = arrow_schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, COLUMNS);
    }
}
