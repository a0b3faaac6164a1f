//! Parquet files as rows of named fields: each cell becomes the text a CSV file would hold for
//! it, so a Parquet row is validated by exactly the rules a CSV row is (`crate::validate`).
//!
//! How Arrow types read (anything else is refused for the whole file, naming the column):
//! - `Utf8`, `LargeUtf8`, `Utf8View`: the string itself.
//! - `Int8` … `Int64`, `UInt8` … `UInt64`: the decimal number (`12` is an amount of 12.00).
//! - `Decimal32/64/128(p, s)`: the exact decimal value, trailing zeros of the scale dropped
//!   (`1250` at scale 2 is `12.5`), so a scale-2 column holds JPY amounts too.
//! - `Float32`, `Float64`: the shortest decimal that reads back as the same float (`12.99`),
//!   as a JSON Lines number reads; a float with more decimals than its currency has, or NaN,
//!   is quarantined like the same text in a CSV file.
//! - `Timestamp(unit, tz)`, any unit, with or without a time zone: the instant in UTC (Arrow
//!   stores instants as UTC; a timestamp without a zone is read as UTC), nanoseconds truncated
//!   to microseconds as an RFC 3339 text with nanoseconds is.
//! - `Date32` (`YYYY-MM-DD`) and `Date64` (the instant of its milliseconds, midnight UTC).
//! - `Boolean`: `true` / `false` (a customer attribute).
//! - `Dictionary` of any of these: its values.
//!
//! Null is an absent value: a null in a required field quarantines the row ("missing"), in an
//! optional one leaves it unknown. Rows are numbered 1, 2, 3 … in file order (there is no
//! header line), and that number is the quarantine record's `line`. Personal-data columns are
//! not decoded at all.

use std::fs::File;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{
    DataType, Date32Type, Date64Type, Decimal128Type, Decimal32Type, Decimal64Type, Float32Type, Float64Type,
    Int16Type, Int32Type, Int64Type, Int8Type, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ProjectionMask;

use super::{is_personal, normalise_name, Item, LineCount, Row, Source};
use crate::{IngestError, Progress};
use cis_core::time::{self, Timestamp};

/// Rows per record batch: the most of the file held in memory at once (per column).
const BATCH_ROWS: usize = 8192;

/// What the error for an unsupported column lists as readable.
pub const SUPPORTED: &str = "Utf8, LargeUtf8, Utf8View, integers, Decimal32/64/128, Float32/64, Boolean, \
                             Timestamp (any unit, with or without a time zone), Date32, Date64, or a \
                             Dictionary of these";

pub struct ParquetSource<'p> {
    reader: ParquetRecordBatchReader,
    file: String,
    /// Every column of the file, normalised, in file order.
    header: Vec<String>,
    /// Per file column: its position in the decoded batch, `None` for personal data (not read).
    layout: Vec<Option<usize>>,
    /// The kept columns' names, in file order (what [`Source::columns`] reports).
    kept: Vec<String>,
    batch: Option<RecordBatch>,
    next: usize,
    count: LineCount,
    total_rows: u64,
    len: u64,
    reported: u64,
    progress: Option<&'p dyn Progress>,
}

fn supported(t: &DataType) -> bool {
    use DataType::*;
    match t {
        Utf8 | LargeUtf8 | Utf8View | Boolean | Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64
        | Float32 | Float64 | Decimal32(..) | Decimal64(..) | Decimal128(..) | Timestamp(..) | Date32 | Date64 => true,
        Dictionary(_, values) => !matches!(**values, Dictionary(..)) && supported(values),
        _ => false,
    }
}

/// Opens `file` (named `name` in errors); `len` is its size in bytes, for progress.
pub fn open<'p>(
    file: File,
    name: &str,
    len: u64,
    progress: Option<&'p dyn Progress>,
) -> Result<ParquetSource<'p>, IngestError> {
    let bad_header = |reason: String| IngestError::Header {
        file: name.into(),
        reason,
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| bad_header(format!("not a readable Parquet file: {e}")))?;
    let schema = builder.schema().clone();
    let header: Vec<String> = schema.fields().iter().map(|f| normalise_name(f.name())).collect();
    if let Some((_, twice)) = header
        .iter()
        .enumerate()
        .find(|(i, h)| !h.is_empty() && header[..*i].contains(h))
    {
        return Err(bad_header(format!("column '{twice}' appears twice")));
    }
    let mut layout = Vec::with_capacity(header.len());
    let mut roots = Vec::new();
    for (i, (field, name_n)) in schema.fields().iter().zip(&header).enumerate() {
        if is_personal(name_n) {
            layout.push(None);
            continue;
        }
        if !supported(field.data_type()) {
            return Err(IngestError::UnsupportedColumn {
                file: name.into(),
                column: field.name().clone(),
                data_type: field.data_type().to_string(),
            });
        }
        layout.push(Some(roots.len()));
        roots.push(i);
    }
    let kept = header
        .iter()
        .zip(&layout)
        .filter(|(_, l)| l.is_some())
        .map(|(h, _)| h.clone())
        .collect();
    let total_rows = u64::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0);
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|e| bad_header(format!("cannot read its columns: {e}")))?;
    Ok(ParquetSource {
        reader,
        file: name.into(),
        header,
        layout,
        kept,
        batch: None,
        next: 0,
        count: LineCount::default(),
        total_rows,
        len,
        reported: 0,
        progress,
    })
}

impl ParquetSource<'_> {
    /// Decodes the next record batch; `false` at the end of the file.
    fn next_batch(&mut self) -> Result<bool, IngestError> {
        let read_error = |e: &dyn std::fmt::Display, rows: u64, file: &str| IngestError::Read {
            file: file.into(),
            reason: format!("after row {rows}: {e}"),
        };
        let Some(batch) = self.reader.next() else {
            return Ok(false);
        };
        let batch = batch.map_err(|e| read_error(&e, self.count.read, &self.file))?;
        // Dictionaries are decoded to their values once per batch, not once per cell.
        let columns = batch
            .columns()
            .iter()
            .map(|c| match c.data_type() {
                DataType::Dictionary(_, values) => arrow::compute::cast(c, values),
                _ => Ok(c.clone()),
            })
            .collect::<Result<Vec<ArrayRef>, _>>()
            .map_err(|e| read_error(&e, self.count.read, &self.file))?;
        let fields = columns
            .iter()
            .zip(batch.schema().fields())
            .map(|(c, f)| f.as_ref().clone().with_data_type(c.data_type().clone()))
            .collect::<Vec<_>>();
        let schema = std::sync::Arc::new(arrow::datatypes::Schema::new(fields));
        self.batch =
            Some(RecordBatch::try_new(schema, columns).map_err(|e| read_error(&e, self.count.read, &self.file))?);
        self.next = 0;
        self.report();
        Ok(true)
    }

    /// Progress in bytes, in proportion to the rows decoded (a row group's bytes are not
    /// exposed per batch).
    fn report(&mut self) {
        let (Some(p), Some(b)) = (self.progress, &self.batch) else {
            return;
        };
        let rows = self.count.read + b.num_rows() as u64;
        let done = match self.total_rows {
            0 => self.len,
            t => (u128::from(self.len) * u128::from(rows.min(t)) / u128::from(t)) as u64,
        };
        p.advance(done.saturating_sub(self.reported));
        self.reported = done.max(self.reported);
    }
}

impl Source for ParquetSource<'_> {
    fn columns(&self) -> Option<&[String]> {
        Some(&self.kept)
    }

    fn dropped(&self) -> Vec<String> {
        self.header
            .iter()
            .zip(&self.layout)
            .filter(|(_, l)| l.is_none())
            .map(|(h, _)| h.clone())
            .collect()
    }

    fn lines(&self) -> LineCount {
        self.count
    }

    fn next_item(&mut self) -> Result<Option<Item>, IngestError> {
        loop {
            match &self.batch {
                Some(b) if self.next < b.num_rows() => break,
                _ => {
                    if !self.next_batch()? {
                        return Ok(None);
                    }
                }
            }
        }
        let Some(batch) = &self.batch else {
            return Ok(None);
        };
        let i = self.next;
        self.next += 1;
        self.count.read += 1;
        let mut fields = Vec::with_capacity(self.kept.len());
        let mut raw = Vec::with_capacity(self.header.len());
        for (name, at) in self.header.iter().zip(&self.layout) {
            match at {
                Some(c) => {
                    let v = cell(batch.column(*c).as_ref(), i);
                    raw.push(v.clone());
                    fields.push((name.clone(), v));
                }
                None => raw.push("<redacted>".into()),
            }
        }
        Ok(Some(Item::Row(Row::new(self.count.read, fields, raw.join(",")))))
    }
}

/// The text of row `i` of `array`, empty for null. The type was checked when the file was
/// opened (dictionaries are decoded per batch), so every downcast below matches.
fn cell(array: &dyn Array, i: usize) -> String {
    if array.is_null(i) {
        return String::new();
    }
    match array.data_type() {
        DataType::Utf8 => array.as_string::<i32>().value(i).to_string(),
        DataType::LargeUtf8 => array.as_string::<i64>().value(i).to_string(),
        DataType::Utf8View => array.as_string_view().value(i).to_string(),
        DataType::Boolean => array.as_boolean().value(i).to_string(),
        DataType::Int8 => array.as_primitive::<Int8Type>().value(i).to_string(),
        DataType::Int16 => array.as_primitive::<Int16Type>().value(i).to_string(),
        DataType::Int32 => array.as_primitive::<Int32Type>().value(i).to_string(),
        DataType::Int64 => array.as_primitive::<Int64Type>().value(i).to_string(),
        DataType::UInt8 => array.as_primitive::<UInt8Type>().value(i).to_string(),
        DataType::UInt16 => array.as_primitive::<UInt16Type>().value(i).to_string(),
        DataType::UInt32 => array.as_primitive::<UInt32Type>().value(i).to_string(),
        DataType::UInt64 => array.as_primitive::<UInt64Type>().value(i).to_string(),
        DataType::Float32 => array.as_primitive::<Float32Type>().value(i).to_string(),
        DataType::Float64 => array.as_primitive::<Float64Type>().value(i).to_string(),
        DataType::Decimal32(_, s) => decimal(i128::from(array.as_primitive::<Decimal32Type>().value(i)), *s),
        DataType::Decimal64(_, s) => decimal(i128::from(array.as_primitive::<Decimal64Type>().value(i)), *s),
        DataType::Decimal128(_, s) => decimal(array.as_primitive::<Decimal128Type>().value(i), *s),
        DataType::Timestamp(unit, _) => {
            let v = match unit {
                TimeUnit::Second => array.as_primitive::<TimestampSecondType>().value(i),
                TimeUnit::Millisecond => array.as_primitive::<TimestampMillisecondType>().value(i),
                TimeUnit::Microsecond => array.as_primitive::<TimestampMicrosecondType>().value(i),
                TimeUnit::Nanosecond => array.as_primitive::<TimestampNanosecondType>().value(i),
            };
            instant(v, *unit)
        }
        DataType::Date32 => {
            let day = i64::from(array.as_primitive::<Date32Type>().value(i));
            let t = time::format(Timestamp::from_day(day));
            match t.strip_suffix("T00:00:00Z") {
                Some(date) => date.to_string(),
                None => t,
            }
        }
        DataType::Date64 => instant(array.as_primitive::<Date64Type>().value(i), TimeUnit::Millisecond),
        // Unreachable: `open` refused every other type.
        other => format!("<{other}>"),
    }
}

/// `v` units since the epoch as RFC 3339 UTC text. An instant beyond what microseconds hold
/// is spelled out as a number, which validation then rejects as not a time.
fn instant(v: i64, unit: TimeUnit) -> String {
    let (micros, name) = match unit {
        TimeUnit::Second => (v.checked_mul(1_000_000), "seconds"),
        TimeUnit::Millisecond => (v.checked_mul(1_000), "milliseconds"),
        TimeUnit::Microsecond => (Some(v), "microseconds"),
        // Floor, as parsing an RFC 3339 text with nanoseconds does.
        TimeUnit::Nanosecond => (Some(v.div_euclid(1_000)), "nanoseconds"),
    };
    match micros {
        Some(m) => time::format(Timestamp::from_micros(m)),
        None => format!("{v} {name} since 1970-01-01"),
    }
}

/// The exact decimal text of `v · 10^-scale`, without trailing zeros after the point.
fn decimal(v: i128, scale: i8) -> String {
    let sign = if v < 0 { "-" } else { "" };
    let digits = v.unsigned_abs().to_string();
    if scale <= 0 {
        return if v == 0 {
            "0".into()
        } else {
            format!("{sign}{digits}{}", "0".repeat(usize::from(scale.unsigned_abs())))
        };
    }
    let scale = usize::from(scale.unsigned_abs());
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (whole, frac) = padded.split_at(padded.len() - scale);
    let frac = frac.trim_end_matches('0');
    match (frac.is_empty(), v == 0) {
        (_, true) => "0".into(),
        (true, false) => format!("{sign}{whole}"),
        (false, false) => format!("{sign}{whole}.{frac}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_exact_without_trailing_zeros() {
        for (v, s, want) in [
            (1250, 2, "12.5"),
            (1299, 2, "12.99"),
            (1200, 2, "12"),
            (-5, 3, "-0.005"),
            (0, 2, "0"),
            (7, 0, "7"),
            (12, -2, "1200"),
            (i128::MIN, 0, "-170141183460469231731687303715884105728"),
        ] {
            assert_eq!(decimal(v, s), want, "{v} at scale {s}");
        }
    }

    #[test]
    fn instants_of_every_unit_read_as_utc_text() {
        assert_eq!(instant(1_704_067_200, TimeUnit::Second), "2024-01-01T00:00:00Z");
        assert_eq!(
            instant(1_704_067_200_123, TimeUnit::Millisecond),
            "2024-01-01T00:00:00.123Z"
        );
        assert_eq!(instant(-1, TimeUnit::Nanosecond), "1969-12-31T23:59:59.999999Z");
        assert_eq!(
            instant(i64::MAX, TimeUnit::Second),
            format!("{} seconds since 1970-01-01", i64::MAX)
        );
    }
}
