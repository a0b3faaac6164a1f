//! CSV vs Parquet ingest of the same events: the CSV input is converted to Parquet once (typed
//! columns: timestamps, decimal amounts, integers, strings; Snappy, as Spark writes it), then
//! each format is ingested into a new on-disk store, 3 times.
//!
//! Run: `cargo bench --bench parquet`. Input: a seeded synthetic population of
//! `CIS_BENCH_CUSTOMERS` (default 20,000) customers, or the CSVs (customers, orders, sessions,
//! returns) of the directory `CIS_BENCH_INPUT`. `CIS_BENCH_REPEATS` changes the 3.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Decimal128Builder, Int64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use cis_core::event::Kind;
use cis_ingest::source::Format;
use cis_ingest::{ingest_file, IngestOptions, RecordedAt};
use cis_storage::Store;
use common::BenchResult;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

const KINDS: [(Kind, &str); 4] = [
    (Kind::Customer, "customers"),
    (Kind::Order, "orders"),
    (Kind::Session, "sessions"),
    (Kind::Return, "returns"),
];

const ROWS_PER_BATCH: usize = 65_536;

/// The Arrow type a CSV column is converted to, by its name.
fn column_type(name: &str) -> DataType {
    match name {
        "event_time" | "recorded_at" | "signup_date" => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        // Three decimals: enough for every currency (validation refuses more than it has).
        "amount" => DataType::Decimal128(18, 3),
        "quantity" | "duration_s" | "page_views" => DataType::Int64,
        _ => DataType::Utf8,
    }
}

enum Col {
    Time(TimestampMicrosecondBuilder),
    Amount(Decimal128Builder),
    Int(Int64Builder),
    Text(StringBuilder),
}

impl Col {
    fn new(t: &DataType) -> Col {
        match t {
            DataType::Timestamp(..) => Col::Time(TimestampMicrosecondBuilder::new().with_timezone("UTC")),
            DataType::Decimal128(..) => Col::Amount(Decimal128Builder::new()),
            DataType::Int64 => Col::Int(Int64Builder::new()),
            _ => Col::Text(StringBuilder::new()),
        }
    }

    /// An empty or unparseable value is null (the bench's inputs are clean; counts are compared).
    fn push(&mut self, v: &str) {
        match self {
            Col::Time(b) => b.append_option(cis_core::time::parse_timestamp(v).ok().map(|t| t.micros())),
            // KWD has three decimals: its minor units are thousandths of the major unit.
            Col::Amount(b) => b.append_option(cis_core::money::parse_amount(v, "KWD").ok().map(i128::from)),
            Col::Int(b) => b.append_option(v.parse::<i64>().ok()),
            Col::Text(b) if v.is_empty() => b.append_null(),
            Col::Text(b) => b.append_value(v),
        }
    }

    fn finish(&mut self) -> BenchResult<ArrayRef> {
        Ok(match self {
            Col::Time(b) => Arc::new(b.finish()),
            Col::Amount(b) => Arc::new(b.finish().with_precision_and_scale(18, 3)?),
            Col::Int(b) => Arc::new(b.finish()),
            Col::Text(b) => Arc::new(b.finish()),
        })
    }
}

/// Writes `csv` as Parquet at `out`, in record batches of [`ROWS_PER_BATCH`] rows.
fn convert(csv: &Path, out: &Path) -> BenchResult {
    let mut reader = csv::Reader::from_path(csv)?;
    let names: Vec<String> = reader.headers()?.iter().map(str::to_string).collect();
    let schema = Arc::new(Schema::new(
        names
            .iter()
            .map(|n| Field::new(n, column_type(n), true))
            .collect::<Vec<_>>(),
    ));
    let props = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
    let mut writer = ArrowWriter::try_new(std::fs::File::create(out)?, schema.clone(), Some(props))?;
    let mut cols: Vec<Col> = schema.fields().iter().map(|f| Col::new(f.data_type())).collect();
    let mut rows = 0;
    let mut flush = |cols: &mut Vec<Col>| -> BenchResult {
        let arrays = cols.iter_mut().map(Col::finish).collect::<BenchResult<Vec<_>>>()?;
        writer.write(&RecordBatch::try_new(schema.clone(), arrays)?)?;
        Ok(())
    };
    for record in reader.records() {
        let record = record?;
        for (c, v) in cols.iter_mut().zip(record.iter()) {
            c.push(v);
        }
        rows += 1;
        if rows % ROWS_PER_BATCH == 0 {
            flush(&mut cols)?;
        }
    }
    if rows % ROWS_PER_BATCH != 0 {
        flush(&mut cols)?;
    }
    writer.close()?;
    Ok(())
}

/// Ingests every file of `inputs` into a new store at `store_dir`; the events it accepted.
fn ingest_all(store_dir: &Path, inputs: &[(Kind, PathBuf, bool)], format: Format) -> BenchResult<u64> {
    let store = Store::open(store_dir)?;
    let mut accepted = 0;
    for (kind, path, has_recorded_at) in inputs {
        let opts = IngestOptions {
            recorded_at: if *has_recorded_at {
                RecordedAt::Column("recorded_at".into())
            } else {
                RecordedAt::EventTime
            },
            ..IngestOptions::new(*kind, format)
        };
        accepted += ingest_file(&store, path, &opts, &mut |_| {})?.accepted;
    }
    Ok(accepted)
}

fn main() -> BenchResult {
    let dir = tempfile::tempdir()?;
    let (csv_dir, what) = match std::env::var_os("CIS_BENCH_INPUT") {
        Some(d) => (PathBuf::from(&d), format!("the CSVs of {}", PathBuf::from(d).display())),
        None => {
            let customers = std::env::var("CIS_BENCH_CUSTOMERS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(20_000);
            let csv = dir.path().join("csv");
            cis_synth::SynthConfig {
                customers,
                ..cis_synth::SynthConfig::default()
            }
            .validate()?
            .write_csv(&csv)?;
            (csv, format!("a synthetic population of {customers} customers"))
        }
    };
    let mut csv_inputs = Vec::new();
    let mut pq_inputs = Vec::new();
    let (mut csv_bytes, mut pq_bytes) = (0, 0);
    for (kind, name) in KINDS {
        let csv = csv_dir.join(format!("{name}.csv"));
        if !csv.exists() {
            continue;
        }
        let has_recorded_at = csv::Reader::from_path(&csv)?
            .headers()?
            .iter()
            .any(|h| h == "recorded_at");
        let pq = dir.path().join(format!("{name}.parquet"));
        convert(&csv, &pq)?;
        csv_bytes += std::fs::metadata(&csv)?.len();
        pq_bytes += std::fs::metadata(&pq)?.len();
        csv_inputs.push((kind, csv, has_recorded_at));
        pq_inputs.push((kind, pq, has_recorded_at));
    }
    if csv_inputs.is_empty() {
        return Err(format!("no customers/orders/sessions/returns.csv in {}", csv_dir.display()).into());
    }

    let runs = common::repeats(3);
    let mut attempt = 0;
    let mut time = |inputs: &[(Kind, PathBuf, bool)], format: Format| {
        common::repeat(runs, || {
            attempt += 1;
            let store_dir = dir.path().join(format!("store-{attempt}"));
            let accepted = ingest_all(&store_dir, inputs, format)?;
            // The disk is small: each store goes once measured.
            std::fs::remove_dir_all(&store_dir)?;
            Ok(accepted)
        })
    };
    let (csv_events, csv_secs) = time(&csv_inputs, Format::Csv)?;
    let (pq_events, pq_secs) = time(&pq_inputs, Format::Parquet)?;
    assert_eq!(
        pq_events, csv_events,
        "Parquet and CSV stored different numbers of events"
    );

    println!(
        "CSV vs Parquet ingest ({what}: {csv_events} events; CSV {:.0} MB, Parquet {:.0} MB; {runs} runs each, each into a new store)",
        csv_bytes as f64 / 1e6,
        pq_bytes as f64 / 1e6
    );
    println!("| input | s min / median / max | events/s (median) |");
    println!("|---|---:|---:|");
    for (name, s) in [("CSV", csv_secs), ("Parquet", pq_secs)] {
        println!("| {name} | {} | {:.0} |", s.cell(2), csv_events as f64 / s.median);
    }
    println!("Parquet / CSV time (medians): {:.2}", pq_secs.median / csv_secs.median);
    Ok(())
}
