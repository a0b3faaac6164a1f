//! `customer_risk_scores` exports of CDNOW scores: Parquet read back by the parquet crate, by DuckDB
//! and by pandas; CSV read back by the csv crate; the CLI; and the failures that must write nothing.

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Float64Type, TimeUnit, TimestampMicrosecondType};
use cis_core::AsOf;
use cis_export::{export_scores, ExportError, Format, COLUMNS, SCHEMA_VERSION, TABLE};
use cis_features::snapshot;
use cis_models::lifetime::ClvParams;
use cis_models::scores::{self, ScoreSet};
use cis_models::train;
use cis_storage::{hex, Store};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, LogicalType, TimeUnit as ParquetTimeUnit};
use parquet::file::metadata::ParquetMetaData;

use crate::scored::{row, scored, CUSTOMERS};
use crate::util::{cis_bin, ingest_cdnow, t};

fn model(set: &ScoreSet, kind: cis_models::ModelKind) -> String {
    set.models
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, h)| h.clone())
        .expect("model used")
}

fn read_parquet(path: &Path) -> (Arc<ParquetMetaData>, RecordBatch) {
    let file = fs::File::open(path).expect("open parquet");
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).expect("parquet reader");
    let meta = Arc::clone(builder.metadata());
    let schema = Arc::clone(builder.schema());
    let batches = builder
        .build()
        .expect("build reader")
        .collect::<Result<Vec<_>, _>>()
        .expect("read batches");
    (meta, concat_batches(&schema, &batches).expect("concat"))
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn parquet_round_trips_through_the_parquet_crate() {
    let s = scored();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("scores.parquet");
    let summary = export_scores(&s.store, None, Format::Parquet, &path).expect("export");
    assert_eq!(summary.rows, CUSTOMERS);
    assert_eq!(summary.score_hash, hex(&s.hash));
    assert_eq!(summary.snapshot_hash, s.set.snapshot);
    assert_eq!(summary.as_of, t("1997-09-30"));
    assert_eq!(summary.generated_at, s.generated_at);
    assert_eq!(summary.bytes, fs::metadata(&path).expect("stat").len());
    assert_eq!(
        files_in(dir.path()),
        ["scores.parquet"],
        "no temporary file left behind"
    );

    let (meta, batch) = read_parquet(&path);
    assert_eq!(batch.num_rows(), CUSTOMERS);

    // Columns: names, types, nullability.
    let schema = batch.schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, COLUMNS);
    let utc = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let want: [(&str, DataType, bool); 13] = [
        ("customer_id", DataType::Utf8, false),
        ("as_of", utc.clone(), false),
        ("churn_probability", DataType::Float64, true),
        ("churn_band", DataType::Utf8, true),
        ("expected_purchases_90d", DataType::Float64, true),
        ("p_alive", DataType::Float64, true),
        ("clv_12m", DataType::Float64, true),
        ("segment", DataType::Utf8, true),
        ("score_hash", DataType::Utf8, false),
        ("churn_model", DataType::Utf8, true),
        ("clv_model", DataType::Utf8, true),
        ("segment_model", DataType::Utf8, true),
        ("generated_at", utc, false),
    ];
    for (field, (name, ty, nullable)) in schema.fields().iter().zip(want) {
        assert_eq!(
            (field.name().as_str(), field.data_type(), field.is_nullable()),
            (name, &ty, nullable)
        );
    }
    // The Parquet types themselves: TIMESTAMP(MICROS, adjusted to UTC), zstd everywhere.
    let descr = meta.file_metadata().schema_descr();
    for i in [1, 12] {
        assert_eq!(
            descr.column(i).logical_type_ref(),
            Some(&LogicalType::timestamp(true, ParquetTimeUnit::MICROS)),
            "{}",
            descr.column(i).name()
        );
    }
    for rg in meta.row_groups() {
        for c in rg.columns() {
            assert!(matches!(c.compression(), Compression::ZSTD(_)), "{:?}", c.compression());
        }
    }

    // Key-value metadata.
    let kv: HashMap<&str, Option<&str>> = meta
        .file_metadata()
        .key_value_metadata()
        .expect("key-value metadata")
        .iter()
        .map(|k| (k.key.as_str(), k.value.as_deref()))
        .collect();
    let gen_text = cis_core::time::format(s.generated_at);
    let schema_version = SCHEMA_VERSION.to_string();
    for (key, value) in [
        ("cis.table", TABLE),
        ("cis.schema_version", schema_version.as_str()),
        ("cis.score_hash", summary.score_hash.as_str()),
        ("cis.snapshot_hash", s.set.snapshot.as_str()),
        ("cis.generated_at", gen_text.as_str()),
    ] {
        assert_eq!(kv.get(key), Some(&Some(value)), "{key}");
    }
    assert_eq!(kv.get("cis.table"), Some(&Some("customer_risk_scores")));

    // Values: every row equals the score set, bit for bit.
    let text = |i: usize| batch.column(i).as_string::<i32>();
    let float = |i: usize| batch.column(i).as_primitive::<Float64Type>();
    let stamp = |i: usize| batch.column(i).as_primitive::<TimestampMicrosecondType>();
    let opt_f = |i: usize, r: usize| float(i).is_valid(r).then(|| float(i).value(r));
    let opt_s = |i: usize, r: usize| text(i).is_valid(r).then(|| text(i).value(r).to_string());
    for (r, want) in s.set.rows.iter().enumerate() {
        assert_eq!(text(0).value(r), want.customer_id);
        assert_eq!(stamp(1).value(r), t("1997-09-30").micros());
        assert_eq!(opt_f(2, r), want.churn_probability);
        assert_eq!(opt_s(3, r), want.churn_band);
        assert_eq!(opt_f(4, r), want.expected_purchases_90d);
        assert_eq!(opt_f(5, r), want.p_alive);
        assert_eq!(opt_f(6, r), want.clv_12m);
        assert_eq!(opt_s(7, r), want.segment);
        assert_eq!(text(8).value(r), summary.score_hash);
        assert_eq!(stamp(12).value(r), s.generated_at.micros());
    }
    // No churn model was used: both churn columns are entirely null; the model columns name the models.
    assert_eq!(batch.column(2).null_count(), CUSTOMERS);
    assert_eq!(batch.column(3).null_count(), CUSTOMERS);
    assert_eq!(batch.column(9).null_count(), CUSTOMERS);
    assert_eq!(text(10).value(0), model(&s.set, cis_models::ModelKind::Clv));
    assert_eq!(text(11).value(0), model(&s.set, cis_models::ModelKind::Segments));
    assert_eq!(batch.column(6).null_count(), 0, "every CDNOW customer has a CLV");

    // Customer 0001, by hand: the values the score set holds, and sane ones.
    let idx = (0..CUSTOMERS)
        .find(|&r| text(0).value(r) == "0001")
        .expect("customer 0001");
    let c1 = row(&s.set, "0001");
    assert_eq!(opt_f(5, idx), c1.p_alive);
    assert_eq!(opt_f(6, idx), c1.clv_12m);
    let p_alive = c1.p_alive.expect("p_alive");
    assert!((0.0..=1.0).contains(&p_alive), "{p_alive}");
    assert!(c1.clv_12m.expect("clv") >= 0.0);
}

/// The export reads the stored artifact, whose floats went through JSON. serde_json (without its
/// `float_roundtrip` feature) may parse a float one unit in the last place away from the value that
/// was written, so the stored scores equal the computed ones to within that, not always bit for bit.
#[test]
fn stored_scores_are_the_computed_ones() {
    let s = scored();
    assert_eq!(s.set.rows.len(), s.computed.rows.len());
    assert_eq!(
        (s.set.as_of, &s.set.snapshot, &s.set.models),
        (s.computed.as_of, &s.computed.snapshot, &s.computed.models)
    );
    let close = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() <= 4.0 * f64::EPSILON * a.abs().max(b.abs()),
        (a, b) => a.is_none() && b.is_none(),
    };
    for (a, b) in s.set.rows.iter().zip(&s.computed.rows) {
        assert_eq!(
            (&a.customer_id, &a.churn_band, &a.segment),
            (&b.customer_id, &b.churn_band, &b.segment)
        );
        for (x, y) in [
            (a.churn_probability, b.churn_probability),
            (a.expected_purchases_90d, b.expected_purchases_90d),
            (a.p_alive, b.p_alive),
            (a.clv_12m, b.clv_12m),
        ] {
            assert!(close(x, y), "{}: stored {x:?}, computed {y:?}", a.customer_id);
        }
    }
}

#[test]
fn csv_round_trips_through_the_csv_crate() {
    let s = scored();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("scores.csv");
    let summary = export_scores(&s.store, Some(t("1998-01-01")), Format::Csv, &path).expect("export");
    assert_eq!(summary.rows, CUSTOMERS);
    assert_eq!(summary.requested_as_of, t("1998-01-01"));
    assert_eq!(summary.as_of, t("1997-09-30"));

    let mut reader = csv::Reader::from_path(&path).expect("csv reader");
    let headers: Vec<String> = reader.headers().expect("headers").iter().map(String::from).collect();
    assert_eq!(headers, COLUMNS);
    let records: Vec<csv::StringRecord> = reader.records().collect::<Result<_, _>>().expect("records");
    assert_eq!(records.len(), CUSTOMERS);

    let f = |v: &str| (!v.is_empty()).then(|| v.parse::<f64>().expect("a float"));
    let s_ = |v: &str| (!v.is_empty()).then(|| v.to_string());
    let clv_model = model(&s.set, cis_models::ModelKind::Clv);
    let seg_model = model(&s.set, cis_models::ModelKind::Segments);
    for (rec, want) in records.iter().zip(&s.set.rows) {
        assert_eq!(rec.len(), COLUMNS.len());
        assert_eq!(&rec[0], want.customer_id);
        assert_eq!(&rec[1], "1997-09-30T00:00:00Z");
        assert_eq!(cis_core::time::parse_timestamp(&rec[1]), Ok(t("1997-09-30")));
        assert_eq!(f(&rec[2]), want.churn_probability);
        assert_eq!(s_(&rec[3]), want.churn_band);
        assert_eq!(f(&rec[4]), want.expected_purchases_90d, "exact float text");
        assert_eq!(f(&rec[5]), want.p_alive);
        assert_eq!(f(&rec[6]), want.clv_12m);
        assert_eq!(s_(&rec[7]), want.segment);
        assert_eq!(&rec[8], summary.score_hash);
        assert_eq!(&rec[9], "", "no churn model");
        assert_eq!(&rec[10], clv_model);
        assert_eq!(&rec[11], seg_model);
        assert_eq!(cis_core::time::parse_timestamp(&rec[12]), Ok(s.generated_at));
    }
    let c1 = records.iter().find(|r| &r[0] == "0001").expect("customer 0001");
    assert_eq!(f(&c1[5]), row(&s.set, "0001").p_alive);
    assert_eq!(f(&c1[6]), row(&s.set, "0001").clv_12m);
}

#[test]
fn the_same_scores_export_to_the_same_bytes() {
    let s = scored();
    let dir = tempfile::tempdir().expect("tempdir");
    for (format, name) in [(Format::Parquet, "a.parquet"), (Format::Csv, "a.csv")] {
        let path = dir.path().join(name);
        export_scores(&s.store, None, format, &path).expect("first");
        let first = fs::read(&path).expect("read");
        // Exporting over an existing file replaces it atomically.
        export_scores(&s.store, None, format, &path).expect("second");
        assert_eq!(fs::read(&path).expect("read"), first, "{format}");
    }
    assert_eq!(files_in(dir.path()), ["a.csv", "a.parquet"]);
}

#[test]
fn exporting_before_any_score_run_is_a_clear_error_and_writes_nothing() {
    let s = scored();
    let dir = tempfile::tempdir().expect("tempdir");
    for format in [Format::Parquet, Format::Csv] {
        let path = dir.path().join(format!("early.{format}"));
        let err = export_scores(&s.store, Some(t("1997-06-30")), format, &path).expect_err("no scores yet");
        assert!(
            matches!(err, ExportError::NoScores { as_of } if as_of == t("1997-06-30")),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.starts_with("no scores as of 1997-06-30T00:00:00Z"), "{msg}");
        assert!(msg.contains("cis score"), "{msg}");
        assert!(!path.exists());
    }
    // An empty store has no scores at all.
    let empty = Store::in_memory().expect("store");
    let err = export_scores(&empty, None, Format::Csv, &dir.path().join("none.csv")).expect_err("no scores");
    assert!(matches!(err, ExportError::NoScores { .. }), "{err:?}");
    assert!(files_in(dir.path()).is_empty(), "{:?}", files_in(dir.path()));
}

#[test]
fn unwritable_paths_are_clear_errors_and_leave_nothing_behind() {
    let s = scored();
    let dir = tempfile::tempdir().expect("tempdir");
    // The directory does not exist.
    let missing = dir.path().join("no-such-dir").join("scores.parquet");
    let err = export_scores(&s.store, None, Format::Parquet, &missing).expect_err("missing dir");
    assert!(matches!(err, ExportError::NoDirectory { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "cannot write {}: directory {} does not exist",
            missing.display(),
            dir.path().join("no-such-dir").display()
        )
    );
    // A file name the OS refuses (too long): found only at the rename, after the whole file was
    // written; the temporary file is removed.
    let long = dir.path().join(format!("{}.csv", "x".repeat(300)));
    let err = export_scores(&s.store, None, Format::Csv, &long).expect_err("name too long");
    assert!(matches!(err, ExportError::Write { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with(&format!("cannot write {}: ", long.display())),
        "{err}"
    );
    // The target is a directory.
    let err = export_scores(&s.store, None, Format::Csv, dir.path()).expect_err("a directory");
    assert!(matches!(err, ExportError::IsDirectory(_)), "{err:?}");
    assert!(err.to_string().contains("is a directory"), "{err}");
    assert!(files_in(dir.path()).is_empty(), "{:?}", files_in(dir.path()));
}

#[cfg(unix)]
#[test]
fn a_read_only_directory_is_a_clear_error() {
    use std::os::unix::fs::PermissionsExt;
    let s = scored();
    let dir = tempfile::tempdir().expect("tempdir");
    let ro = dir.path().join("ro");
    fs::create_dir(&ro).expect("mkdir");
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o555)).expect("chmod");
    if fs::write(ro.join("probe"), b"").is_ok() {
        eprintln!("running with the power to write into read-only directories (root?): not checked");
        return;
    }
    let path = ro.join("scores.parquet");
    let err = export_scores(&s.store, None, Format::Parquet, &path).expect_err("read-only");
    assert!(matches!(err, ExportError::Write { .. }), "{err:?}");
    assert!(err.to_string().contains("ermission denied"), "{err}");
    assert!(files_in(&ro).is_empty());
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o755)).expect("chmod back");
}

#[test]
fn the_cli_exports_and_reports() {
    // The binary needs a store on disk: score CDNOW into one, then close it.
    let dir = tempfile::tempdir().expect("tempdir");
    let store_dir = dir.path().join("store");
    let score_hash = {
        let store = Store::open(&store_dir).expect("open store");
        ingest_cdnow(&store);
        let (snap, ..) = snapshot::create(&store, AsOf::new(Some(t("1997-09-30")), None)).expect("snapshot");
        let (clv, _) = train::clv(&store, &snap, ClvParams::default())
            .expect("clv")
            .store(&store)
            .expect("store clv");
        let (hash, ..) = scores::score(&store, &snap, &[clv]).expect("score");
        hex(&hash)
    };
    let cis = |args: &[&str]| {
        Command::new(cis_bin())
            .arg("--store")
            .arg(&store_dir)
            .args(["export", "scores"])
            .args(args)
            .output()
            .expect("run cis")
    };

    let out_path = dir.path().join("risk.parquet");
    let out_text = out_path.to_str().expect("utf-8 path");
    // Format from the extension; summary on stdout.
    let out = cis(&["--out", out_text]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains(&format!("exported {CUSTOMERS} rows of customer_risk_scores (parquet")),
        "{stdout}"
    );
    assert!(stdout.contains(out_text), "{stdout}");
    assert!(stdout.contains(&score_hash), "{stdout}");
    let (_, batch) = read_parquet(&out_path);
    assert_eq!(batch.num_rows(), CUSTOMERS);
    assert_eq!(batch.column(7).null_count(), CUSTOMERS, "no segment model was used");

    // An explicit format wins over the extension.
    let odd = dir.path().join("risk.txt");
    let out = cis(&[
        "--format",
        "csv",
        "--as-of",
        "1997-10-01",
        "--out",
        odd.to_str().expect("utf-8"),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = fs::read_to_string(&odd).expect("csv written");
    assert!(text.starts_with(&COLUMNS.join(",")), "{}", &text[..80.min(text.len())]);

    // No format and no telling extension; no scores as of T: failures with a message, no file.
    let out = cis(&["--out", dir.path().join("risk.dat").to_str().expect("utf-8")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--format"));
    let early = dir.path().join("early.csv");
    let out = cis(&["--as-of", "1997-01-01", "--out", early.to_str().expect("utf-8")]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no scores as of 1997-01-01T00:00:00Z"), "{stderr}");
    assert!(!early.exists());
    assert!(!dir.path().join("risk.dat").exists());
}

/// `cis export events` and `cis features sql` refuse what they cannot do, with a non-zero exit and
/// a message naming the problem: an unknown dialect, a directory that is not a finished export,
/// a cutoff the export cannot answer, an export over an existing directory.
#[test]
fn events_export_and_feature_sql_refuse_bad_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store_dir = dir.path().join("store");
    ingest_cdnow(&Store::open(&store_dir).expect("store"));
    let cis = |args: &[&str]| crate::util::cis(&store_dir, args);
    let failed = |out: &std::process::Output, needle: &str| {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "expected a failure: {stderr}");
        assert!(stderr.contains(needle), "{needle:?} not in: {stderr}");
    };
    let events = dir.path().join("events");
    let ev = events.to_str().expect("utf-8 path");
    let out = cis(&["export", "events", "--as-of", "1997-12-31", "--out", ev]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(events.join("_SUCCESS").is_file());
    assert!(events.join("orders/bucket=00/part-0.parquet").is_file());
    assert!(events.join("sessions/bucket=31/part-0.parquet").is_file());
    // No temporary directory is left beside the export.
    let names: Vec<String> = fs::read_dir(dir.path())
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains("tmp")), "{names:?}");

    failed(
        &cis(&["export", "events", "--as-of", "1997-12-31", "--out", ev]),
        "exists already",
    );
    failed(
        &cis(&[
            "export",
            "events",
            "--as-of",
            "1997-12-31",
            "--format",
            "csv",
            "--out",
            "x",
        ]),
        "parquet only",
    );
    failed(
        &cis(&["features", "sql", "--dialect", "oracle", "--events", ev]),
        "invalid value 'oracle'",
    );
    let absent = dir.path().join("absent");
    failed(
        &cis(&[
            "features",
            "sql",
            "--dialect",
            "duckdb",
            "--events",
            absent.to_str().expect("utf-8"),
        ]),
        "is not an events export of this cis: no such directory",
    );
    // A directory without the marker (an export cut short, or anything else) is not an export.
    fs::remove_file(events.join("_SUCCESS")).expect("remove marker");
    failed(
        &cis(&["features", "sql", "--dialect", "spark", "--events", ev]),
        "_SUCCESS",
    );
    let again = dir.path().join("again");
    let again = again.to_str().expect("utf-8 path");
    let out = cis(&["export", "events", "--as-of", "1997-12-31", "--out", again]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    failed(
        &cis(&[
            "features",
            "sql",
            "--dialect",
            "duckdb",
            "--events",
            again,
            "--as-of",
            "1998-01-31",
        ]),
        "cannot answer as of 1998-01-31",
    );
    // The export's T by default; the path made absolute.
    let out = cis(&["features", "sql", "--dialect", "duckdb", "--events", again]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let sql = String::from_utf8_lossy(&out.stdout);
    assert!(sql.contains("as of T = 1997-12-31T00:00:00Z"), "{sql}");
    let abs = fs::canonicalize(again).expect("canonical");
    assert!(
        sql.contains(&format!("read_parquet('{}/orders/*/*.parquet'", abs.display())),
        "{sql}"
    );
    // An object-store URL is passed through, but cis cannot read its T.
    failed(
        &cis(&[
            "features",
            "sql",
            "--dialect",
            "spark",
            "--events",
            "s3://bucket/events",
        ]),
        "pass --as-of",
    );
    let out = cis(&[
        "features",
        "sql",
        "--dialect",
        "spark",
        "--events",
        "s3://bucket/events",
        "--as-of",
        "1997-12-31",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("USING parquet OPTIONS (path 's3://bucket/events/orders')"));
}
