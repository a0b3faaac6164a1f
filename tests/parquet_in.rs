//! Parquet in: files written here with arrow/parquet read as the same events as the same rows in
//! CSV; nulls quarantined with row numbers; unsupported types refused by column; many files.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, DictionaryArray, Float64Array, Int32Array,
    Int64Array, LargeStringArray, ListArray, RecordBatch, StringArray, TimestampNanosecondArray, TimestampSecondArray,
};
use arrow::datatypes::{Int32Type, Int8Type};
use cis_core::event::Kind;
use cis_core::AsOf;
use cis_ingest::history::customer_events;
use cis_ingest::records::{quarantined, runs};
use cis_ingest::source::Format;
use cis_ingest::{ingest_file, IngestError, IngestOptions, RecordedAt};
use cis_storage::{Store, GENESIS};
use parquet::arrow::ArrowWriter;

use crate::util::{cis, ingest, write};

fn write_parquet(path: &Path, columns: Vec<(&str, ArrayRef)>) {
    let batch = RecordBatch::try_from_iter(columns).expect("batch");
    let file = std::fs::File::create(path).expect("create");
    let mut w = ArrowWriter::try_new(file, batch.schema(), None).expect("writer");
    // Two batches, so a file of more than one record batch (and row group) is read in order.
    let half = batch.num_rows() / 2;
    w.write(&batch.slice(0, half)).expect("write");
    w.flush().expect("row group");
    w.write(&batch.slice(half, batch.num_rows() - half)).expect("write");
    w.close().expect("close");
}

fn strings(v: &[Option<&str>]) -> ArrayRef {
    Arc::new(StringArray::from(v.to_vec()))
}

/// 2024-01-05T10:00:00Z and friends in nanoseconds, stored with a +02:00 zone (the instant
/// is UTC either way).
fn nanos(utc: &[&str]) -> ArrayRef {
    let v: Vec<i64> = utc.iter().map(|s| crate::util::t(s).micros() * 1000 + 999).collect();
    Arc::new(TimestampNanosecondArray::from(v).with_timezone("+02:00"))
}

const ORDERS_CSV: &str = "order_id,customer_id,event_time,amount,currency,quantity,email\n\
o1,c1,2024-01-05T12:00:00.000000999+02:00,12.50,USD,2,a@x.org\n\
o2,c2,2024-01-06T00:00:00Z,3,EUR,,b@x.org\n\
o3,,2024-01-07T00:00:00Z,1.00,USD,1,c@x.org\n\
o4,c1,2024-01-08T08:30:00Z,1000,JPY,5,d@x.org\n";

/// The same four orders as [`ORDERS_CSV`], typed: decimals, a zoned timestamp, an integer
/// quantity with a null, a null customer, a dictionary currency, and personal data as binary.
fn orders_parquet(path: &Path) {
    let currency: DictionaryArray<Int8Type> = vec!["USD", "EUR", "USD", "JPY"].into_iter().collect();
    write_parquet(
        path,
        vec![
            ("order_id", strings(&[Some("o1"), Some("o2"), Some("o3"), Some("o4")])),
            (
                "Customer_ID",
                Arc::new(LargeStringArray::from(vec![Some("c1"), Some("c2"), None, Some("c1")])),
            ),
            (
                "event_time",
                nanos(&[
                    "2024-01-05T10:00:00Z",
                    "2024-01-06T00:00:00Z",
                    "2024-01-07T00:00:00Z",
                    "2024-01-08T08:30:00Z",
                ]),
            ),
            (
                "amount",
                Arc::new(
                    Decimal128Array::from(vec![1250, 300, 100, 100_000])
                        .with_precision_and_scale(12, 2)
                        .expect("decimal"),
                ),
            ),
            ("currency", Arc::new(currency)),
            (
                "quantity",
                Arc::new(Int32Array::from(vec![Some(2), None, Some(1), Some(5)])),
            ),
            (
                "email",
                Arc::new(BinaryArray::from(vec![
                    &b"a@x.org"[..],
                    b"b@x.org",
                    b"c@x.org",
                    b"d@x.org",
                ])),
            ),
        ],
    );
}

const CUSTOMERS_CSV: &str = "customer_id,event_time,signup_date,country,vip,score\n\
c1,2024-01-01,2023-12-24,de,true,7\n\
c2,2024-01-02,,FR,false,0.5\n";

fn customers_parquet(path: &Path) {
    let day = |s: &str| (crate::util::t(s).micros() / 86_400_000_000) as i32;
    write_parquet(
        path,
        vec![
            ("customer_id", strings(&[Some("c1"), Some("c2")])),
            (
                "event_time",
                Arc::new(Date32Array::from(vec![day("2024-01-01"), day("2024-01-02")])),
            ),
            (
                "signup_date",
                Arc::new(TimestampSecondArray::from(vec![
                    Some(crate::util::t("2023-12-24").micros() / 1_000_000),
                    None,
                ])),
            ),
            ("country", strings(&[Some("de"), Some("FR")])),
            ("vip", Arc::new(BooleanArray::from(vec![true, false]))),
            ("score", Arc::new(Float64Array::from(vec![7.0, 0.5]))),
        ],
    );
}

/// Every event of `customers`, as `cis events --json` shows them (ids included).
fn events_of(store: &Store, customers: &[&str]) -> Vec<String> {
    customers
        .iter()
        .flat_map(|c| customer_events(store, c, AsOf::new(None, None)).expect("read"))
        .map(|e| serde_json::to_string(&e).expect("json"))
        .collect()
}

#[test]
fn parquet_rows_are_the_same_events_as_the_same_csv_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (csv_store, pq_store) = (Store::in_memory().expect("store"), Store::in_memory().expect("store"));
    for (kind, csv_text, make, name) in [
        (Kind::Order, ORDERS_CSV, orders_parquet as fn(&Path), "orders"),
        (Kind::Customer, CUSTOMERS_CSV, customers_parquet, "customers"),
    ] {
        let csv = write(dir.path(), &format!("{name}.csv"), csv_text);
        let pq = dir.path().join(format!("{name}.parquet"));
        make(&pq);
        let a = ingest(&csv_store, kind, Format::Csv, &csv, RecordedAt::EventTime);
        let b = ingest(&pq_store, kind, Format::Parquet, &pq, RecordedAt::EventTime);
        assert_eq!(
            (b.lines, b.blank, b.rows, b.accepted, b.quarantined),
            (a.lines, 0, a.rows, a.accepted, a.quarantined),
            "{name}"
        );
        assert_eq!(b.format, Format::Parquet);
        assert_eq!(b.file_hash, cis_ingest::file_hash(&pq).expect("hash"));
        // Into the CSV's store, every Parquet event is a duplicate of one the CSV stored.
        let c = ingest(&csv_store, kind, Format::Parquet, &pq, RecordedAt::EventTime);
        assert_eq!((c.accepted, c.duplicates), (0, a.accepted), "{name}");
    }
    let customers = ["c1", "c2"];
    let got = events_of(&pq_store, &customers);
    assert_eq!(got, events_of(&csv_store, &customers));
    assert_eq!(got.len(), 3 + 2, "three orders and two customer records");
    let joined = got.join("\n");
    for want in [
        // Nanoseconds floor to microseconds, as in the CSV text; the zone is gone (UTC).
        "\"event_time\":\"2024-01-05T10:00:00Z\"",
        "{\"minor\":1000,\"currency\":\"JPY\"}",
        "\"signup_date\":1703376000000000", // 2023-12-24, µs
        "\"vip\":\"true\"",
        "\"score\":\"0.5\"",
    ] {
        assert!(joined.contains(want), "{want} not in {joined}");
    }
    assert!(!joined.contains("x.org"), "personal data was stored: {joined}");

    // The null customer id: quarantined with its row number (3; line 4 of the CSV) and field.
    let q = quarantined(&pq_store, Some(1)).expect("quarantine");
    assert_eq!(q.len(), 1);
    assert_eq!(
        (q[0].line, q[0].field.as_str(), q[0].reason.as_str()),
        (3, "customer_id", "missing")
    );
    assert!(q[0].file.ends_with("orders.parquet"), "{}", q[0].file);
    assert!(
        q[0].raw.starts_with("o3,,2024-01-07T00:00:00Z,1,USD,1,"),
        "{}",
        q[0].raw
    );
    assert!(
        q[0].raw.ends_with("<redacted>") && !q[0].raw.contains("x.org"),
        "{}",
        q[0].raw
    );
    let csv_q = quarantined(&csv_store, Some(1)).expect("quarantine");
    assert_eq!((csv_q[0].line, &csv_q[0].field), (4, &q[0].field));
}

#[test]
fn reingesting_a_parquet_file_adds_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pq = dir.path().join("o.parquet");
    orders_parquet(&pq);
    let store = Store::in_memory().expect("store");
    let first = ingest(&store, Kind::Order, Format::Parquet, &pq, RecordedAt::Now);
    let again = ingest(&store, Kind::Order, Format::Parquet, &pq, RecordedAt::Now);
    assert_eq!((first.accepted, first.quarantined), (3, 1));
    assert_eq!((again.accepted, again.duplicates, again.batches.len()), (0, 3, 0));
    assert_eq!(again.head_after, first.head_after);
    assert_eq!(store.log().verify().expect("verifies").events, 3);
}

#[test]
fn an_unsupported_column_type_refuses_the_file_naming_the_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pq = dir.path().join("o.parquet");
    let tags = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![Some(vec![Some(1)]), None]);
    write_parquet(
        &pq,
        vec![
            ("order_id", strings(&[Some("o1"), Some("o2")])),
            ("customer_id", strings(&[Some("c1"), Some("c2")])),
            ("event_time", nanos(&["2024-01-05T10:00:00Z", "2024-01-06T10:00:00Z"])),
            ("amount", Arc::new(Int64Array::from(vec![1, 2]))),
            ("currency", strings(&[Some("USD"), Some("USD")])),
            ("Tags", Arc::new(tags)),
        ],
    );
    let store = Store::in_memory().expect("store");
    let opts = IngestOptions::new(Kind::Order, Format::Parquet);
    match ingest_file(&store, &pq, &opts, &mut |_| {}) {
        Err(IngestError::UnsupportedColumn { column, data_type, .. }) => {
            assert_eq!(column, "Tags");
            assert!(data_type.starts_with("List("), "{data_type}");
        }
        other => panic!("expected an unsupported column, got {other:?}"),
    }
    assert_eq!(store.log().head().expect("head"), GENESIS);
    assert!(runs(&store).expect("runs").is_empty(), "a refused file is no run");

    let store_dir = dir.path().join("store");
    let out = cis(&store_dir, &["ingest", "orders", pq.to_str().expect("utf-8")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("column 'Tags' has Arrow type List("), "{err}");
    assert!(err.contains("the file is refused"), "{err}");

    // Parquet needs a file: a stream of its bytes is refused up front.
    let bytes = std::fs::read(&pq).expect("read");
    let streamed = cis_ingest::ingest_reader(&store, &bytes[..], "s", 0, &opts, &mut |_| {});
    assert!(
        matches!(streamed, Err(IngestError::ParquetStream { .. })),
        "{streamed:?}"
    );
}

fn day_file(dir: &Path, day: &str, order: &str) -> std::path::PathBuf {
    let sub = dir.join(format!("dt={day}"));
    std::fs::create_dir_all(&sub).expect("mkdir");
    let pq = sub.join("part-0.parquet");
    write_parquet(
        &pq,
        vec![
            ("order_id", strings(&[Some(order), Some(&format!("{order}b"))])),
            ("customer_id", strings(&[Some("c1"), Some("c2")])),
            (
                "event_time",
                nanos(&[&format!("{day}T10:00:00Z"), &format!("{day}T11:00:00Z")]),
            ),
            ("amount", Arc::new(Int64Array::from(vec![5, 6]))),
            ("currency", strings(&[Some("USD"), Some("USD")])),
        ],
    );
    // What Spark leaves beside its parts: never read.
    std::fs::write(sub.join("_SUCCESS"), "").expect("write");
    std::fs::write(sub.join(".part-0.parquet.crc"), "junk").expect("write");
    pq
}

#[test]
fn a_directory_of_daily_files_is_one_run_per_file_in_name_order_and_skipped_when_known() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exports = dir.path().join("exports/orders");
    // Written out of order: the runs still follow the names.
    let files: Vec<_> = [("2024-01-03", "o3"), ("2024-01-01", "o1"), ("2024-01-02", "o2")]
        .iter()
        .map(|(d, o)| day_file(&exports, d, o))
        .collect();
    let store_dir = dir.path().join("store");
    let path = exports.to_str().expect("utf-8");
    let out = cis(&store_dir, &["ingest", "orders", path]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("3 file(s): 3 ingested, 0 skipped"), "{stdout}");

    let again = cis(&store_dir, &["ingest", "orders", path]);
    let again_out = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success(), "{again_out}");
    let pattern = format!("{path}/dt=*/part-*.parquet");
    let globbed = cis(&store_dir, &["ingest", "orders", &pattern]);
    let globbed_out = String::from_utf8_lossy(&globbed.stdout);
    assert!(globbed.status.success(), "{globbed_out}");
    for (out, what) in [(&again_out, "directory"), (&globbed_out, "glob")] {
        assert!(out.contains("3 file(s): 0 ingested, 3 skipped"), "{what}: {out}");
        for (run, f) in [(1, &files[1]), (2, &files[2]), (3, &files[0])] {
            let line = format!("skipped {}: already ingested as run {run}", f.display());
            assert!(out.contains(&line), "{what}: {line} not in {out}");
        }
        assert!(!out.contains("ingest run"), "{what}: nothing is read again: {out}");
    }

    let store = Store::open(&store_dir).expect("open");
    let runs = runs(&store).expect("runs");
    let got: Vec<_> = runs.iter().map(|r| (r.run, r.file.clone(), r.accepted)).collect();
    let want: Vec<_> = [(1, &files[1]), (2, &files[2]), (3, &files[0])]
        .into_iter()
        .map(|(n, f)| (n, f.display().to_string(), 2))
        .collect();
    assert_eq!(got, want);
    assert_eq!(store.log().verify().expect("verifies").events, 6);
}

#[test]
fn csv_files_of_a_directory_are_runs_too_and_a_copy_is_skipped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = "order_id,customer_id,event_time,amount,currency\no1,c1,2024-01-01,1.00,USD\n";
    write(dir.path(), "a.csv", text);
    write(dir.path(), "b.csv", text);
    let store_dir = dir.path().join("store");
    let out = cis(
        &store_dir,
        &["ingest", "orders", dir.path().join("*.csv").to_str().expect("utf-8")],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("ingest run 1: 1 lines from"), "{stdout}");
    let skipped = format!(
        "skipped {}: already ingested as run 1",
        dir.path().join("b.csv").display()
    );
    assert!(stdout.contains(&skipped), "{stdout}");
    let none = cis(
        &store_dir,
        &["ingest", "orders", dir.path().join("*.jsonl").to_str().expect("utf-8")],
    );
    assert!(!none.status.success());
    assert!(String::from_utf8_lossy(&none.stderr).contains("no input files"));
}

#[test]
fn a_damaged_parquet_file_is_an_error_never_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pq = dir.path().join("o.parquet");
    orders_parquet(&pq);
    let good = std::fs::read(&pq).expect("read");
    let bad = dir.path().join("bad.parquet");
    let store = Store::in_memory().expect("store");
    let opts = IngestOptions::new(Kind::Order, Format::Parquet);
    let mut refused = 0;
    // Truncated anywhere, and single bytes flipped all over the file (footer included).
    let cuts = (0..good.len()).step_by(97).map(|n| good[..n].to_vec());
    let flips = (0..good.len()).step_by(13).map(|i| {
        let mut b = good.clone();
        b[i] ^= 0x5a;
        b
    });
    for bytes in cuts.chain(flips) {
        std::fs::write(&bad, &bytes).expect("write");
        match ingest_file(&store, &bad, &opts, &mut |_| {}) {
            Ok(run) => assert_eq!(run.rows, run.accepted + run.duplicates + run.quarantined),
            Err(IngestError::Header { .. } | IngestError::UnsupportedColumn { .. }) => refused += 1,
            Err(IngestError::Stopped { run, .. }) => assert!(run.stopped.is_some()),
            Err(other) => panic!("unexpected error: {other:?}"),
        }
    }
    assert!(refused > 0, "no damaged file was refused");
}
