//! Snapshots and training sets as tables (`cis snapshot export`, `cis trainset export`): read back
//! by the parquet and csv crates and compared cell by cell with the stored snapshots and the
//! training set churn training builds; the CLI; and the inputs that must fail and write nothing.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{
    DataType, Decimal128Type, DecimalType, Float64Type, Int64Type, TimeUnit, TimestampMicrosecondType,
};
use cis_export::features::{export_snapshot, export_training_set, SNAPSHOT_TABLE, TRAINING_TABLE};
use cis_export::{ExportError, Format};
use cis_models::churn::ChurnParams;
use cis_models::train;
use cis_storage::{hex, ArtifactHash, Store};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{json, Value};

use crate::tables::{self, check, training_table, Expected, CDNOW_LABELS_KNOWN, HORIZON, SYNTH_LABELS_KNOWN};
use crate::util::{cis, t};

/// A Parquet file as `tables::check` reads it, with its column types, `cis.*` metadata and the
/// number of rows in each row group.
fn read_parquet(path: &Path) -> (Value, Vec<DataType>, HashMap<String, String>, Vec<i64>) {
    let builder = ParquetRecordBatchReaderBuilder::try_new(fs::File::open(path).expect("open")).expect("reader");
    let kv: HashMap<String, String> = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .into_iter()
        .flatten()
        .filter(|kv| kv.key.starts_with("cis."))
        .map(|kv| (kv.key.clone(), kv.value.clone().unwrap_or_default()))
        .collect();
    let groups = builder.metadata().row_groups().iter().map(|g| g.num_rows()).collect();
    let schema = std::sync::Arc::clone(builder.schema());
    let mut data: Vec<Vec<Value>> = vec![Vec::new(); schema.fields().len()];
    for batch in builder.build().expect("build") {
        let batch = batch.expect("batch");
        for (col, a) in data.iter_mut().zip(batch.columns()) {
            for i in 0..a.len() {
                col.push(match a.data_type() {
                    _ if a.is_null(i) => Value::Null,
                    DataType::Utf8 => json!(a.as_string::<i32>().value(i)),
                    DataType::Timestamp(..) => json!(a.as_primitive::<TimestampMicrosecondType>().value(i)),
                    DataType::Decimal128(p, s) => json!(Decimal128Type::format_decimal(
                        a.as_primitive::<Decimal128Type>().value(i),
                        *p,
                        *s
                    )),
                    DataType::Int64 => json!(a.as_primitive::<Int64Type>().value(i)),
                    DataType::Float64 => json!(a.as_primitive::<Float64Type>().value(i).to_string()),
                    other => panic!("unexpected column type {other}"),
                });
            }
        }
    }
    let names: Vec<&String> = schema.fields().iter().map(|f| f.name()).collect();
    let types = schema.fields().iter().map(|f| f.data_type().clone()).collect();
    (json!({"columns": names, "data": data}), types, kv, groups)
}

/// A CSV file as `tables::check` reads it: every cell text.
fn read_csv(path: &Path) -> Value {
    let mut r = csv::Reader::from_path(path).expect("open csv");
    let columns: Vec<String> = r.headers().expect("header").iter().map(String::from).collect();
    let mut data: Vec<Vec<Value>> = vec![Vec::new(); columns.len()];
    for rec in r.records() {
        for (col, cell) in data.iter_mut().zip(rec.expect("record").iter()) {
            col.push(json!(cell));
        }
    }
    json!({"columns": columns, "data": data})
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Exports `exp`'s source both ways with `export`, reads both back and compares every cell;
/// returns the Parquet file's `cis.*` metadata and row-group sizes.
fn round_trip(
    exp: &Expected,
    export: impl Fn(Format, &Path) -> Result<cis_export::features::TableSummary, ExportError>,
) -> (HashMap<String, String>, Vec<i64>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let pq = dir.path().join("t.parquet");
    let summary = export(Format::Parquet, &pq).expect("export parquet");
    assert_eq!(summary.rows, exp.rows());
    assert_eq!(summary.bytes, fs::metadata(&pq).expect("stat").len());
    let (got, types, kv, groups) = read_parquet(&pq);
    check("parquet crate", &got, exp, true);
    for (ty, kind) in types.iter().zip(&exp.kinds) {
        let want = match kind {
            tables::Kind::Text => DataType::Utf8,
            tables::Kind::Time => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            tables::Kind::Money => DataType::Decimal128(38, 2),
            tables::Kind::Count => DataType::Int64,
            tables::Kind::Real => DataType::Float64,
        };
        assert_eq!(*ty, want, "{kind:?}");
    }
    let csv = dir.path().join("t.csv");
    export(Format::Csv, &csv).expect("export csv");
    check("csv crate", &read_csv(&csv), exp, false);
    assert_eq!(files_in(dir.path()), ["t.csv", "t.parquet"], "no temporary file left");
    (kv, groups)
}

fn snapshot_round_trip(store: &Store, snap: &ArtifactHash) {
    let exp = tables::snapshot_table(store, snap);
    let (kv, groups) = round_trip(&exp, |f, p| export_snapshot(store, snap, f, p));
    assert_eq!(groups, [exp.rows() as i64]);
    assert_eq!(kv["cis.table"], SNAPSHOT_TABLE);
    assert_eq!(kv["cis.schema_version"], "1");
    assert_eq!(kv["cis.snapshot_hash"], hex(snap));
    let (_, s) = cis_features::snapshot::load(store, snap).expect("load");
    assert_eq!(kv["cis.definition_set_hash"], hex(&s.definition_set));
    assert_eq!(kv["cis.as_of"], cis_core::time::format(s.as_of));
    assert_eq!(kv["cis.known_at"], cis_core::time::format(s.known_at));
    assert!(!kv.contains_key("cis.horizon_days"));
}

fn training_round_trip(store: &Store, snaps: &[ArtifactHash], known: &str) {
    let exp = training_table(store, snaps, HORIZON, t(known));
    let churned = exp
        .column("label_churn")
        .iter()
        .filter(|c| **c == tables::Cell::Num(1.0))
        .count();
    assert!(
        churned > 0 && churned < exp.rows(),
        "both labels occur: {churned} of {}",
        exp.rows()
    );
    let (kv, groups) = round_trip(&exp, |f, p| {
        let s = export_training_set(store, snaps, HORIZON, t(known), f, p)?;
        assert_eq!(s.churned, Some(churned));
        Ok(s)
    });
    // A row group per batch, and a batch never spans two snapshots.
    let sizes: Vec<i64> = snaps
        .iter()
        .map(|h| tables::snapshot_table(store, h).rows() as i64)
        .collect();
    assert_eq!(groups, sizes);
    assert_eq!(kv["cis.table"], TRAINING_TABLE);
    let hashes: Vec<String> = snaps.iter().map(|h| hex(h)).collect();
    assert_eq!(kv["cis.snapshot_hash"], hashes.join(","));
    assert_eq!(kv["cis.horizon_days"], HORIZON.to_string());
    assert_eq!(kv["cis.labels_known_at"], cis_core::time::format(t(known)));
}

#[test]
fn cdnow_snapshots_and_training_sets_are_the_stored_ones_cell_by_cell() {
    let (store, snaps) = tables::cdnow_cutoffs();
    snapshot_round_trip(&store, &snaps[0]);
    training_round_trip(&store, &snaps, CDNOW_LABELS_KNOWN);
}

#[test]
fn synthetic_snapshots_and_training_sets_are_the_stored_ones_cell_by_cell() {
    let (store, snaps) = tables::synth_cutoffs();
    let exp = tables::snapshot_table(&store, &snaps[1]);
    // Sessions and returns too: the float and money columns are not all zero.
    for f in [
        "session_minutes_90d",
        "return_rate_90d",
        "rfm_monetary",
        "net_revenue_90d",
    ] {
        assert!(
            exp.column(f)
                .iter()
                .any(|c| matches!(c, tables::Cell::Num(x) if x.fract() != 0.0)),
            "{f} has fractional values"
        );
    }
    snapshot_round_trip(&store, &snaps[1]);
    training_round_trip(&store, &snaps, SYNTH_LABELS_KNOWN);
}

#[test]
fn immature_labels_are_refused_with_trainings_error_and_write_nothing() {
    let (store, snaps) = tables::cdnow_cutoffs();
    // 1997-12-31 + 90 days is 1998-03-31: not known on 1998-03-01.
    let k = t("1998-03-01");
    let trained = train::churn(&store, &snaps, ChurnParams::default(), HORIZON, k).expect_err("immature");
    let dir = tempfile::tempdir().expect("tempdir");
    for format in [Format::Parquet, Format::Csv] {
        let path = dir.path().join(format!("t.{format}"));
        let err = export_training_set(&store, &snaps, HORIZON, k, format, &path).expect_err("immature");
        assert!(matches!(err, ExportError::Labels(_)), "{err:?}");
        assert_eq!(err.to_string(), trained.to_string());
        assert!(err.to_string().contains("do not exist yet"), "{err}");
    }
    assert!(files_in(dir.path()).is_empty(), "{:?}", files_in(dir.path()));
    let err = export_training_set(&store, &[], HORIZON, k, Format::Csv, &dir.path().join("e.csv")).expect_err("empty");
    assert!(matches!(err, ExportError::NoSnapshots), "{err:?}");
    assert!(files_in(dir.path()).is_empty());
}

#[test]
fn the_cli_exports_snapshots_and_training_sets_and_refuses_bad_inputs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store_dir = dir.path().join("store");
    let snaps: Vec<String> = {
        let store = Store::open(&store_dir).expect("open store");
        crate::util::ingest_cdnow(&store);
        ["1997-09-30", "1997-12-31"]
            .iter()
            .map(|c| {
                let at = cis_core::AsOf::new(Some(t(c)), None);
                hex(&cis_features::snapshot::create(&store, at).expect("snapshot").0)
            })
            .collect()
    };
    let out_dir = dir.path().join("out");
    fs::create_dir(&out_dir).expect("mkdir");
    let path = |name: &str| out_dir.join(name).to_str().expect("utf-8").to_string();
    let run = |args: &[&str]| {
        let o = cis(&store_dir, args);
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };

    // A snapshot by a hash prefix, the format from the extension.
    let (ok, stdout, stderr) = run(&["snapshot", "export", &snaps[0][..12], "--out", &path("s.parquet")]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("exported 2357 rows of feature_snapshot (parquet"),
        "{stdout}"
    );
    assert!(stdout.contains(&snaps[0]), "{stdout}");
    // A training set, the format given.
    let (ok, stdout, stderr) = run(&[
        "trainset",
        "export",
        "--snapshot",
        &snaps[0],
        "--snapshot",
        &snaps[1],
        "--known-at",
        CDNOW_LABELS_KNOWN,
        "--format",
        "csv",
        "--out",
        &path("t.txt"),
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("exported 4714 rows of training_set (csv"), "{stdout}");
    assert!(stdout.contains("labels over 90 days"), "{stdout}");
    let header = fs::read_to_string(path("t.txt")).expect("csv");
    let header = header.lines().next().expect("header");
    assert!(header.starts_with("customer_id,as_of,known_at,orders_7d,"), "{header}");
    assert!(
        header.ends_with(",label_churn,horizon_days,labels_known_at,snapshot_hash,definition_set_hash"),
        "{header}"
    );
    let written = files_in(&out_dir);
    assert_eq!(written, ["s.parquet", "t.txt"]);

    // The columns are documented in --help.
    let (ok, help, _) = run(&["trainset", "export", "--help"]);
    assert!(ok);
    for c in ["label_churn", "horizon_days", "decimal(38, 2)", "definition_set_hash"] {
        assert!(help.contains(c), "{help}");
    }

    // Bad inputs: non-zero exit, a message that says what is wrong, no file.
    let immature = [
        "--snapshot",
        &snaps[0],
        "--snapshot",
        &snaps[1],
        "--known-at",
        "1998-03-01",
    ];
    let (a_csv, a_xlsx, b_pq, b_csv) = (path("a.csv"), path("a.xlsx"), path("b.parquet"), path("b.csv"));
    let (ok, _, train_err) = run(&[&["train", "churn"][..], &immature[..]].concat());
    assert!(!ok);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["snapshot", "export", "deadbeefdeadbeef", "--out", &a_csv],
            "no artifact deadbeefdeadbeef",
        ),
        (
            vec!["snapshot", "export", &snaps[0], "--out", &a_xlsx],
            "--format csv or --format parquet",
        ),
        (
            vec!["snapshot", "export", &snaps[0], "--format", "xlsx", "--out", &a_csv],
            "invalid value 'xlsx'",
        ),
        (
            [&["trainset", "export"][..], &immature[..], &["--out", &b_pq][..]].concat(),
            train_err.trim(),
        ),
        (
            vec!["trainset", "export", "--snapshot", "deadbeefdeadbeef", "--out", &b_csv],
            "no artifact deadbeefdeadbeef",
        ),
        (vec!["trainset", "export", "--out", &b_csv], "--snapshot"),
    ];
    for (args, message) in cases {
        let (ok, _, stderr) = run(&args);
        assert!(!ok, "{args:?}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert_eq!(files_in(&out_dir), written, "{args:?} wrote nothing");
    }
    assert!(train_err.contains("do not exist yet"), "{train_err}");
}

#[test]
fn a_snapshot_larger_than_a_batch_is_written_in_several_row_groups() {
    let started = std::time::Instant::now();
    let store = crate::util::synth_store(cis_synth::SynthConfig {
        customers: 70_000,
        days: 30,
        seed: 3,
        ..cis_synth::SynthConfig::default()
    });
    let at = cis_core::AsOf::new(Some(t("2024-01-30")), None);
    let (snap, _, stored) = cis_features::snapshot::create(&store, at).expect("snapshot");
    let n = stored.matrix.customers.len();
    assert!(n > 65_536, "{n} customers");
    println!("built in {:.1} s", started.elapsed().as_secs_f64());
    let exp = tables::snapshot_table(&store, &snap);
    let (_, groups) = round_trip(&exp, |f, p| export_snapshot(&store, &snap, f, p));
    assert_eq!(groups, [65_536, n as i64 - 65_536]);
    println!("exported and checked in {:.1} s", started.elapsed().as_secs_f64());
}
