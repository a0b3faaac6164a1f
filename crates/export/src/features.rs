//! Feature tables: a stored snapshot as the table `feature_snapshot`, and snapshots with their
//! churn labels as the table `training_set`, for pandas, Polars, DuckDB and the like.
//!
//! One row per customer of each snapshot, in the snapshot's row order (customer id order), the
//! snapshots in the order given. The columns ([`columns`]): `customer_id`, `as_of` (T) and
//! `known_at` (K) of the row's snapshot, every feature of the snapshot in its column order, for a
//! training set `label_churn` (1 = churned: no order in `(T, T + horizon]` as known at the labels'
//! K, else 0), `horizon_days` and `labels_known_at`, then `snapshot_hash` and
//! `definition_set_hash`. A feature's type follows its definition's unit: money (`currency`) is
//! decimal(38, 2), counts (`count`) are int64, every other unit (ratios, days, minutes) is
//! float64. A value that is not finite is null; no stored feature is (each definition says what
//! it is when data is missing), so in practice no column has nulls. A Parquet file also carries
//! the table, schema version, hashes, times and horizon as key-value metadata (`cis.*`).
//!
//! Written one record batch at a time: beyond the snapshot being written (a training set loads
//! one snapshot at a time), an export holds at most `BATCH_ROWS` rows of Arrow columns, and a
//! Parquet row group is one batch.

use std::fs::File;
use std::io::BufWriter;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Decimal128Array, Float64Array, Int64Array, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Decimal128Type, DecimalType, Field, Float64Type, Int64Type, Schema, SchemaRef};
use arrow::datatypes::{TimeUnit, TimestampMicrosecondType};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use cis_storage::{hex, ArtifactHash, Store};
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::KeyValue;

use crate::{atomic_write, parquet_writer, ExportError, Format, BATCH_ROWS};
use cis_core::time::{self, Timestamp};
use cis_features::defs::definitions;
use cis_features::labels::for_each_labelled;
use cis_features::snapshot::{self, Snapshot};
use cis_models::embedding::{self, EmbeddingModel};
use cis_models::{Model, ModelError};

/// The table a snapshot exports as (`cis.table` in Parquet metadata).
pub const SNAPSHOT_TABLE: &str = "feature_snapshot";
/// The table a training set exports as.
pub const TRAINING_TABLE: &str = "training_set";
/// Bumped whenever a column is added, removed, renamed or retyped (the features excepted: they
/// are the snapshot's, named by `definition_set_hash`).
pub const SCHEMA_VERSION: u32 = 1;
/// Money columns: decimal(38, 2), cents.
pub const MONEY_PRECISION: u8 = 38;
pub const MONEY_SCALE: i8 = 2;

/// How a feature's values are typed, by its definition's unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// `currency`: decimal(38, 2).
    Money,
    /// `count`: int64.
    Count,
    /// Every other unit: float64.
    Real,
}

impl ColumnType {
    /// The type of feature `name` by today's definitions; a name they lack (a snapshot of an
    /// older set) is float64, as the snapshot stores it.
    pub fn of(name: &str) -> ColumnType {
        match definitions().iter().find(|d| d.name == name).map(|d| d.unit) {
            Some("currency") => ColumnType::Money,
            Some("count") => ColumnType::Count,
            _ => ColumnType::Real,
        }
    }

    fn data_type(self) -> DataType {
        match self {
            ColumnType::Money => DataType::Decimal128(MONEY_PRECISION, MONEY_SCALE),
            ColumnType::Count => DataType::Int64,
            ColumnType::Real => DataType::Float64,
        }
    }
}

/// What a feature-table export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSummary {
    pub table: &'static str,
    pub format: Format,
    pub path: PathBuf,
    pub rows: usize,
    /// Size of the written file.
    pub bytes: u64,
    /// The snapshots exported, in order.
    pub snapshots: Vec<String>,
    /// Rows labelled churned (training sets only).
    pub churned: Option<usize>,
}

/// The labels of a training set: the same for every row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Labels {
    horizon_days: u32,
    known_at: Timestamp,
}

/// The column names of a table over `features`, labelled (a training set) or not.
pub fn columns(features: &[String], labelled: bool) -> Vec<String> {
    let mut out: Vec<String> = ["customer_id", "as_of", "known_at"].map(String::from).into();
    out.extend(features.iter().cloned());
    if labelled {
        out.extend(["label_churn", "horizon_days", "labels_known_at"].map(String::from));
    }
    out.extend(["snapshot_hash", "definition_set_hash"].map(String::from));
    out
}

fn schema(features: &[String], labelled: bool) -> SchemaRef {
    let ts = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let names = columns(features, labelled);
    let fixed = |name: &str| match name {
        "customer_id" | "snapshot_hash" | "definition_set_hash" => Field::new(name, DataType::Utf8, false),
        "as_of" | "known_at" | "labels_known_at" => Field::new(name, ts(), false),
        _ => Field::new(name, DataType::Int64, false),
    };
    let n_lead = 3;
    let fields = names
        .iter()
        .enumerate()
        .map(|(i, name)| match i.checked_sub(n_lead) {
            Some(j) if j < features.len() => Field::new(name, ColumnType::of(name).data_type(), true),
            _ => fixed(name),
        })
        .collect::<Vec<_>>();
    Arc::new(Schema::new(fields))
}

/// Exports the stored snapshot `hash` as `feature_snapshot`.
pub fn export_snapshot(
    store: &Store,
    hash: &ArtifactHash,
    format: Format,
    path: &Path,
) -> Result<TableSummary, ExportError> {
    write_snapshot(store, hash, None, format, path)
}

/// [`export_snapshot`] with each customer's vector of the embedding model `embedding` as the
/// columns `embedding_1`, `embedding_2`, … after the features (float64), the model named in the
/// metadata (`cis.embedding_model`).
pub fn export_embedded_snapshot(
    store: &Store,
    hash: &ArtifactHash,
    embedding: &ArtifactHash,
    format: Format,
    path: &Path,
) -> Result<TableSummary, ExportError> {
    write_snapshot(store, hash, Some(embedding), format, path)
}

fn write_snapshot(
    store: &Store,
    hash: &ArtifactHash,
    embedding: Option<&ArtifactHash>,
    format: Format,
    path: &Path,
) -> Result<TableSummary, ExportError> {
    let (_, mut snap) = snapshot::load(store, hash)?;
    let mut extra = Vec::new();
    if let Some(e) = embedding {
        let model = match cis_models::load(store, e) {
            Ok((_, Model::Embedding(m))) => m,
            Ok(_) | Err(ModelError::NotAModel { .. }) => return Err(ExportError::NotAnEmbedding(hex(e))),
            Err(other) => return Err(other.into()),
        };
        with_embedding(&mut snap, &model)?;
        extra.push(("cis.embedding_model", hex(e)));
    }
    let mut rows = 0;
    let bytes = atomic_write(path, |file| {
        let mut w = TableWriter::new(file, format, &snap.features, None)?;
        w.extra = extra;
        rows = w.write(hash, &snap, None)?;
        w.finish(SNAPSHOT_TABLE)
    })?;
    Ok(TableSummary {
        table: SNAPSHOT_TABLE,
        format,
        path: path.to_path_buf(),
        rows,
        bytes,
        snapshots: vec![hex(hash)],
        churned: None,
    })
}

/// `snap` with `model`'s vector of each customer appended to their row, as more columns.
fn with_embedding(snap: &mut Snapshot, model: &EmbeddingModel) -> Result<(), ExportError> {
    let vectors = model.embed_snapshot(snap)?;
    let (w, dims) = (snap.features.len(), model.components.len());
    snap.matrix.values = snap
        .matrix
        .values
        .chunks_exact(w.max(1))
        .zip(vectors.chunks_exact(dims.max(1)))
        .flat_map(|(row, v)| row.iter().chain(v).copied().collect::<Vec<_>>())
        .collect();
    snap.features.extend((0..dims).map(embedding::column_name));
    Ok(())
}

/// Exports the training set churn training builds from `snapshots` (labels over
/// `horizon_days`, as known at `known_at`) as `training_set`. Unmatured labels are refused with
/// training's error, and nothing is written.
pub fn export_training_set(
    store: &Store,
    snapshots: &[ArtifactHash],
    horizon_days: u32,
    known_at: Timestamp,
    format: Format,
    path: &Path,
) -> Result<TableSummary, ExportError> {
    if snapshots.is_empty() {
        return Err(ExportError::NoSnapshots);
    }
    let labels = Labels { horizon_days, known_at };
    let (mut rows, mut churned) = (0, 0);
    let bytes = atomic_write(path, |file| {
        // The schema is the first snapshot's feature list (training refuses a set whose
        // snapshots differ in it), so the writer opens once that snapshot is loaded.
        let mut file = Some(file);
        let mut writer: Option<TableWriter<'_>> = None;
        for_each_labelled(store, snapshots, horizon_days, known_at, |hash, snap, known| {
            let churn = known.churned;
            let w = match &mut writer {
                Some(w) => w,
                None => {
                    // Taken once: `writer` is None only until then.
                    let file = file.take().ok_or(ExportError::NoSnapshots)?;
                    writer.insert(TableWriter::new(file, format, &snap.features, Some(labels))?)
                }
            };
            rows += w.write(hash, &snap, Some(&churn))?;
            churned += churn.iter().filter(|&&c| c).count();
            Ok::<_, ExportError>(())
        })?;
        writer.ok_or(ExportError::NoSnapshots)?.finish(TRAINING_TABLE)
    })?;
    Ok(TableSummary {
        table: TRAINING_TABLE,
        format,
        path: path.to_path_buf(),
        rows,
        bytes,
        snapshots: snapshots.iter().map(|h| hex(h)).collect(),
        churned: Some(churned),
    })
}

enum Sink<'f> {
    Parquet(ArrowWriter<&'f mut BufWriter<File>>),
    Csv(csv::Writer<&'f mut BufWriter<File>>),
}

/// Writes snapshots' rows as record batches, to Parquet or (cell by cell from the same
/// batches, so both formats hold the same values) to CSV.
struct TableWriter<'f> {
    schema: SchemaRef,
    types: Vec<ColumnType>,
    labels: Option<Labels>,
    sink: Sink<'f>,
    /// The snapshots written, in order.
    written: Vec<Written>,
    /// More `cis.*` metadata, after the standard keys.
    extra: Vec<(&'static str, String)>,
}

/// A snapshot written, as the metadata names it.
struct Written {
    hash: String,
    definition_set: String,
    as_of: Timestamp,
    known_at: Timestamp,
}

impl<'f> TableWriter<'f> {
    fn new(
        file: &'f mut BufWriter<File>,
        format: Format,
        features: &[String],
        labels: Option<Labels>,
    ) -> Result<TableWriter<'f>, ExportError> {
        let schema = schema(features, labels.is_some());
        let sink = match format {
            // The metadata names every snapshot written, so it is added when the file is finished.
            Format::Parquet => Sink::Parquet(parquet_writer(file, &schema, Vec::new())?),
            Format::Csv => {
                let mut w = csv::Writer::from_writer(file);
                w.write_record(schema.fields().iter().map(|f| f.name()))?;
                Sink::Csv(w)
            }
        };
        Ok(TableWriter {
            schema,
            types: features.iter().map(|f| ColumnType::of(f)).collect(),
            labels,
            sink,
            written: Vec::new(),
            extra: Vec::new(),
        })
    }

    /// Writes the rows of `snap` (stored as `hash`), with their labels for a training set;
    /// returns how many.
    fn write(&mut self, hash: &ArtifactHash, snap: &Snapshot, churn: Option<&[bool]>) -> Result<usize, ExportError> {
        let n = snap.matrix.customers.len();
        let (hash, set) = (hex(hash), hex(&snap.definition_set));
        for start in (0..n).step_by(BATCH_ROWS) {
            let rows = start..n.min(start + BATCH_ROWS);
            let batch = self.batch(&hash, &set, snap, churn, rows)?;
            match &mut self.sink {
                Sink::Parquet(w) => {
                    // One row group per batch: the writer would otherwise buffer the encoded
                    // columns of up to a million rows before writing any.
                    w.write(&batch)?;
                    w.flush()?;
                }
                Sink::Csv(w) => write_csv_batch(w, &batch)?,
            }
        }
        self.written.push(Written {
            hash,
            definition_set: set,
            as_of: snap.as_of,
            known_at: snap.known_at,
        });
        Ok(n)
    }

    fn batch(
        &self,
        hash: &str,
        set: &str,
        snap: &Snapshot,
        churn: Option<&[bool]>,
        rows: Range<usize>,
    ) -> Result<RecordBatch, ExportError> {
        let n = rows.len();
        let width = snap.features.len();
        let ts = |v: Timestamp| {
            Arc::new(TimestampMicrosecondArray::from(vec![v.micros(); n]).with_timezone("UTC")) as ArrayRef
        };
        let text = |v: &str| Arc::new(StringArray::from(vec![v; n])) as ArrayRef;
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(&snap.matrix.customers[rows.clone()])),
            ts(snap.as_of),
            ts(snap.known_at),
        ];
        for (j, ty) in self.types.iter().enumerate() {
            let values = rows.clone().map(|i| snap.matrix.values[i * width + j]);
            let col: ArrayRef = match ty {
                ColumnType::Money => Arc::new(
                    values
                        .map(cents)
                        .collect::<Decimal128Array>()
                        .with_precision_and_scale(MONEY_PRECISION, MONEY_SCALE)?,
                ),
                ColumnType::Count => Arc::new(
                    rows.clone()
                        .zip(values)
                        .map(|(i, v)| {
                            count(v).map_err(|_| ExportError::NotACount {
                                feature: snap.features[j].clone(),
                                customer: snap.matrix.customers[i].clone(),
                                value: v,
                            })
                        })
                        .collect::<Result<Int64Array, _>>()?,
                ),
                ColumnType::Real => Arc::new(values.map(|v| v.is_finite().then_some(v)).collect::<Float64Array>()),
            };
            cols.push(col);
        }
        if let (Some(labels), Some(churn)) = (self.labels, churn) {
            cols.push(Arc::new(
                churn[rows].iter().map(|&c| i64::from(c)).collect::<Int64Array>(),
            ));
            cols.push(Arc::new(Int64Array::from(vec![i64::from(labels.horizon_days); n])));
            cols.push(ts(labels.known_at));
        }
        cols.push(text(hash));
        cols.push(text(set));
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), cols)?)
    }

    /// Closes the file: for Parquet, with its key-value metadata.
    fn finish(self, table: &str) -> Result<(), ExportError> {
        match self.sink {
            Sink::Parquet(mut w) => {
                for (k, v) in metadata(table, &self.written, self.labels)
                    .into_iter()
                    .chain(self.extra)
                {
                    w.append_key_value_metadata(KeyValue::new(k.to_string(), v));
                }
                w.close()?;
            }
            Sink::Csv(mut w) => w.flush().map_err(csv::Error::from)?,
        }
        Ok(())
    }
}

/// `cis.*` metadata; lists (one entry per snapshot, in row order) are comma-separated.
fn metadata(table: &str, written: &[Written], labels: Option<Labels>) -> Vec<(&'static str, String)> {
    let list = |f: fn(&Written) -> String| written.iter().map(f).collect::<Vec<_>>().join(",");
    let mut sets: Vec<String> = written.iter().map(|w| w.definition_set.clone()).collect();
    sets.dedup();
    let mut kv = vec![
        ("cis.table", table.to_string()),
        ("cis.schema_version", SCHEMA_VERSION.to_string()),
        ("cis.snapshot_hash", list(|w| w.hash.clone())),
        ("cis.definition_set_hash", sets.join(",")),
        ("cis.as_of", list(|w| time::format(w.as_of))),
        ("cis.known_at", list(|w| time::format(w.known_at))),
    ];
    if let Some(l) = labels {
        kv.push(("cis.horizon_days", l.horizon_days.to_string()));
        kv.push(("cis.labels_known_at", time::format(l.known_at)));
    }
    kv
}

/// Money in cents. A snapshot keeps money as a float of major units; sums of amounts are whole
/// cents (within a float's precision, which holds cents exactly to 2^53), means (average order
/// value, `rfm_monetary`) are rounded to the nearest cent, half away from zero.
fn cents(v: f64) -> Option<i128> {
    // `as` saturates; any finite feature is far inside i128.
    v.is_finite().then(|| (v * 100.0).round() as i128)
}

/// A count as an integer; a count that is not whole is a malformed snapshot, not a rounding.
fn count(v: f64) -> Result<Option<i64>, ()> {
    if !v.is_finite() {
        return Ok(None);
    }
    if v.fract() != 0.0 || v.abs() > 2f64.powi(53) {
        return Err(());
    }
    Ok(Some(v as i64))
}

/// One CSV record per row of `batch`, each cell as the column's type prints it: text as is,
/// times in RFC 3339 (`time::format`), decimals with their scale, integers, floats in their
/// shortest round-trip form with a decimal point; a null is an empty cell, as CSV has no null.
fn write_csv_batch(w: &mut csv::Writer<&mut BufWriter<File>>, batch: &RecordBatch) -> Result<(), ExportError> {
    let unsupported = |c: &ArrayRef| ArrowError::NotYetImplemented(format!("CSV cells of {}", c.data_type()));
    for i in 0..batch.num_rows() {
        for c in batch.columns() {
            let cell = if c.is_null(i) {
                String::new()
            } else {
                match c.data_type() {
                    DataType::Utf8 => c
                        .as_string_opt::<i32>()
                        .ok_or_else(|| unsupported(c))?
                        .value(i)
                        .to_string(),
                    DataType::Timestamp(..) => time::format(Timestamp::from_micros(
                        c.as_primitive_opt::<TimestampMicrosecondType>()
                            .ok_or_else(|| unsupported(c))?
                            .value(i),
                    )),
                    DataType::Decimal128(p, s) => Decimal128Type::format_decimal(
                        c.as_primitive_opt::<Decimal128Type>()
                            .ok_or_else(|| unsupported(c))?
                            .value(i),
                        *p,
                        *s,
                    ),
                    DataType::Int64 => c
                        .as_primitive_opt::<Int64Type>()
                        .ok_or_else(|| unsupported(c))?
                        .value(i)
                        .to_string(),
                    // `Debug` is the shortest round-trip text like `Display`, but always with a
                    // decimal point or an exponent (`0.0`, not `0`), so that a reader inferring
                    // types from the text (Polars, DuckDB) makes the column a float column.
                    DataType::Float64 => format!(
                        "{:?}",
                        c.as_primitive_opt::<Float64Type>()
                            .ok_or_else(|| unsupported(c))?
                            .value(i)
                    ),
                    _ => return Err(unsupported(c).into()),
                }
            };
            w.write_field(cell)?;
        }
        w.write_record(None::<&[u8]>)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_follow_the_units_of_the_definitions() {
        assert_eq!(ColumnType::of("gross_revenue_30d"), ColumnType::Money);
        assert_eq!(ColumnType::of("rfm_monetary"), ColumnType::Money);
        assert_eq!(ColumnType::of("orders_7d"), ColumnType::Count);
        assert_eq!(ColumnType::of("return_rate_90d"), ColumnType::Real);
        assert_eq!(ColumnType::of("tenure_days"), ColumnType::Real);
        assert_eq!(ColumnType::of("not_a_feature"), ColumnType::Real);
        let features: Vec<String> = definitions().iter().map(|d| d.name.clone()).collect();
        let s = schema(&features, true);
        let names: Vec<&String> = s.fields().iter().map(|f| f.name()).collect();
        assert_eq!(names.len(), features.len() + 8);
        assert_eq!(names, columns(&features, true).iter().collect::<Vec<_>>());
        assert_eq!(s.field(3 + features.len()).data_type(), &DataType::Int64);
        assert_eq!(
            s.field_with_name("lifetime_revenue").expect("field").data_type(),
            &DataType::Decimal128(38, 2)
        );
        assert_eq!(columns(&features, false).len(), features.len() + 5);
    }

    #[test]
    fn money_is_cents_and_counts_are_whole() {
        assert_eq!(cents(0.29), Some(29));
        assert_eq!(cents(-12.345), Some(-1235));
        assert_eq!(cents(10.0 / 3.0), Some(333));
        assert_eq!(cents(f64::NAN), None);
        assert_eq!(count(3.0), Ok(Some(3)));
        assert_eq!(count(f64::INFINITY), Ok(None));
        assert_eq!(count(2.5), Err(()));
    }
}
