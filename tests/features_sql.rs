//! One definition set, two executors: the events exported by `cis export events`, the SQL
//! `cis features sql` renders run in DuckDB and in Spark local mode (Python), and every
//! customer's every feature compared with the native snapshot at the same (T, K).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use cis_core::AsOf;
use cis_export::features::ColumnType;
use cis_features::defs::definitions;
use cis_features::snapshot::{self, Snapshot};
use cis_storage::Store;
use serde_json::Value;

use crate::python::{python_json, python_skipped};
use crate::util::{cis, ingest_cdnow, ingest_synth, t};

/// Runs each SQL script (argv[1:]) in DuckDB and prints, per script, the columns, their types and
/// the rows: decimals as text, floats as `repr` (shortest round trip), times as epoch µs. With
/// `CIS_ABSENT` set, also counts the rows of that customer in the export's tables (`CIS_EVENTS`).
const DUCKDB: &str = r#"
import datetime, decimal, json, os, sys
import duckdb
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
def norm(v):
    if isinstance(v, decimal.Decimal):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, datetime.datetime):
        return (v - EPOCH) // datetime.timedelta(microseconds=1)
    return v
out = {"results": []}
for path in sys.argv[1:]:
    con = duckdb.connect()
    *views, query = [s for s in open(path).read().split(";\n") if s.strip()]
    for v in views:
        con.execute(v)
    rel = con.execute(query)
    out["results"].append({
        "columns": [d[0] for d in rel.description],
        "types": [str(d[1]) for d in rel.description],
        "rows": [[norm(v) for v in r] for r in rel.fetchall()],
    })
absent, events = os.environ.get("CIS_ABSENT"), os.environ.get("CIS_EVENTS")
if absent:
    con = duckdb.connect()
    out["absent_rows"] = sum(
        con.execute(f"SELECT count(*) FROM read_parquet('{events}/{t}/*/*.parquet') WHERE customer_id = ?", [absent]).fetchone()[0]
        for t in ["orders", "sessions", "returns", "customers"])
print(json.dumps(out))
"#;

/// The same in Spark local mode: one session (local[2], four shuffle partitions, no UI), each
/// script's statements one by one, times turned into epoch µs by Spark itself.
const SPARK: &str = r#"
import decimal, json, sys, time
from pyspark.sql import SparkSession, functions as F
started = time.time()
spark = (SparkSession.builder.master("local[2]").appName("cis-features-sql")
    .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
    .config("spark.sql.shuffle.partitions", "4").config("spark.sql.session.timeZone", "UTC")
    # A few small queries: compiling them costs more than running them. The JIT's first tier
    # and no whole-stage code generation halve the time on two busy cores.
    .config("spark.driver.extraJavaOptions", "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC")
    .config("spark.sql.codegen.wholeStage", "false")
    .getOrCreate())
spark.sparkContext.setLogLevel("ERROR")
def norm(v):
    if isinstance(v, decimal.Decimal):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    return v
out = {"results": [], "seconds": {"session": time.time() - started, "queries": []}}
for path in sys.argv[1:]:
    began = time.time()
    *views, query = [s for s in open(path).read().split(";\n") if s.strip()]
    for v in views:
        spark.sql(v)
    df = spark.sql(query)
    types = [t for _, t in df.dtypes]
    df = df.withColumn("as_of", F.unix_micros("as_of")).withColumn("known_at", F.unix_micros("known_at"))
    out["results"].append({
        "columns": df.columns,
        "types": types,
        "rows": [[norm(v) for v in r] for r in df.collect()],
    })
    out["seconds"]["queries"].append(time.time() - began)
spark.stop()
print(json.dumps(out))
"#;

/// The type each engine gives a feature column of `ty`.
fn sql_type(engine: &str, ty: ColumnType) -> &'static str {
    match (engine, ty) {
        ("duckdb", ColumnType::Money) => "DECIMAL(38,2)",
        ("duckdb", ColumnType::Count) => "BIGINT",
        ("duckdb", ColumnType::Real) => "DOUBLE",
        ("spark", ColumnType::Money) => "decimal(38,2)",
        ("spark", ColumnType::Count) => "bigint",
        ("spark", ColumnType::Real) => "double",
        _ => panic!("no engine {engine}"),
    }
}

/// A store on disk (the binary exports from it), its events export and the snapshots to check.
struct Case {
    _dir: tempfile::TempDir,
    events: PathBuf,
    /// The cutoffs, each with its snapshot.
    cutoffs: Vec<(AsOf, Snapshot)>,
    /// A customer erased before the export, whose events must not be in it.
    erased: Option<String>,
}

/// Fills a store with `fill`, snapshots it at `cutoffs`, closes it and runs `cis export events`
/// at `export` (T and K at or after every cutoff's, so the script's own (T, K) filters are what
/// selects each cutoff's events).
fn case(fill: impl FnOnce(&Store) -> Option<String>, export: AsOf, cutoffs: &[AsOf]) -> Case {
    let dir = tempfile::tempdir().expect("tempdir");
    let store_dir = dir.path().join("store");
    let store = Store::open(&store_dir).expect("store");
    let erased = fill(&store);
    let cutoffs: Vec<(AsOf, Snapshot)> = cutoffs
        .iter()
        .map(|&at| (at, snapshot::create(&store, at).expect("snapshot").2))
        .collect();
    let visible = cis_features::compute::materialise(&store, export)
        .expect("materialise")
        .visible_events;
    drop(store);
    let events = dir.path().join("events");
    let out = cis(
        &store_dir,
        &[
            "export",
            "events",
            "--as-of",
            &cis_core::time::format(export.as_of),
            "--known-at",
            &cis_core::time::format(export.known_at),
            "--format",
            "parquet",
            "--out",
            events.to_str().expect("utf-8 path"),
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The export holds exactly the events a snapshot at its (T, K) sees.
    let marker = std::fs::read_to_string(events.join("_SUCCESS")).expect("marker");
    let rows: u64 = marker
        .lines()
        .filter_map(|l| l.strip_prefix("rows.")?.split_once('=')?.1.parse::<u64>().ok())
        .sum();
    assert_eq!(rows, visible, "{marker}");
    Case {
        _dir: dir,
        events,
        cutoffs,
        erased,
    }
}

fn cdnow() -> Case {
    let at = |s: &str| AsOf::new(Some(t(s)), None);
    case(
        |s| {
            ingest_cdnow(s);
            None
        },
        at("1998-06-30"),
        &[at("1997-09-30"), at("1997-12-31")],
    )
}

/// The synthetic population: orders, sessions, returns, customer metadata with signup dates,
/// late arrivals (recorded after their event time), and one customer erased.
fn synth() -> Case {
    let erased = "c000005".to_string();
    case(
        |s| {
            ingest_synth(
                s,
                cis_synth::SynthConfig {
                    customers: 400,
                    days: 640,
                    seed: 7,
                    ..cis_synth::SynthConfig::default()
                },
            );
            cis_ops::erasure::erase(s, &erased, "test", "test", t("2025-08-01")).expect("erase");
            Some(erased.clone())
        },
        AsOf::new(Some(t("2025-06-30")), Some(t("2025-07-31"))),
        &[
            AsOf::new(Some(t("2025-03-31")), Some(t("2025-04-10"))),
            AsOf::new(Some(t("2025-06-30")), None),
        ],
    )
}

/// Writes the script `cis features sql` prints for `at` into the case's directory.
fn script(case: &Case, dialect: &str, at: AsOf, n: usize) -> PathBuf {
    let out = cis(
        Path::new("unused-store"),
        &[
            "features",
            "sql",
            "--dialect",
            dialect,
            "--events",
            case.events.to_str().expect("utf-8 path"),
            "--as-of",
            &cis_core::time::format(at.as_of),
            "--known-at",
            &cis_core::time::format(at.known_at),
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let path = case.events.with_file_name(format!("{dialect}-{n}.sql"));
    std::fs::write(&path, &out.stdout).expect("write script");
    path
}

/// One engine's result equals the snapshot: the same customers in the same order, every count
/// exact, money to the cent (as `cis snapshot export` rounds it), every other double within 1e-9.
fn check(engine: &str, got: &Value, at: AsOf, snap: &Snapshot) {
    let columns: Vec<&str> = got["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| c.as_str().expect("name"))
        .collect();
    let names: Vec<&str> = definitions().iter().map(|d| d.name.as_str()).collect();
    assert_eq!(snap.features, names, "the snapshot has today's definitions");
    assert_eq!(columns[..3], ["customer_id", "as_of", "known_at"], "{engine}");
    assert_eq!(columns[3..3 + names.len()], names[..], "{engine}");
    assert_eq!(columns[3 + names.len()..], ["definition_set_hash"], "{engine}");
    let types = got["types"].as_array().expect("types");
    for (j, name) in names.iter().enumerate() {
        assert_eq!(
            types[3 + j].as_str(),
            Some(sql_type(engine, ColumnType::of(name))),
            "{engine}: type of {name}"
        );
    }
    let rows = got["rows"].as_array().expect("rows");
    let customers: Vec<&str> = rows.iter().map(|r| r[0].as_str().expect("customer id")).collect();
    assert_eq!(customers, snap.matrix.customers, "{engine}: the customer set at {at:?}");
    for (i, row) in rows.iter().enumerate() {
        let who = &snap.matrix.customers[i];
        assert_eq!(row[1].as_i64(), Some(at.as_of.micros()), "{engine}: as_of");
        assert_eq!(row[2].as_i64(), Some(at.known_at.micros()), "{engine}: known_at");
        for (j, name) in names.iter().enumerate() {
            let want = snap.matrix.row(i)[j];
            let cell = &row[3 + j];
            let what = format!("{engine}: {name} of {who} at {at:?}: got {cell}, want {want}");
            match ColumnType::of(name) {
                ColumnType::Count => assert_eq!(cell.as_i64().map(|v| v as f64), Some(want), "{what}"),
                ColumnType::Money => {
                    let text = cell.as_str().expect("decimal as text");
                    let cents: i128 = text.replace('.', "").parse().expect("decimal");
                    assert!(text.split_once('.').is_some_and(|(_, f)| f.len() == 2), "{what}");
                    assert_eq!(cents, (want * 100.0).round() as i128, "{what}");
                }
                ColumnType::Real => {
                    let v: f64 = cell.as_str().expect("float as repr").parse().expect("float");
                    assert!((v - want).abs() <= 1e-9, "{what}");
                }
            }
        }
    }
}

fn run(engine: &str, program: &str, packages: &str, cases: &[(&Case, &[usize])]) -> Value {
    let mut scripts = Vec::new();
    for (case, which) in cases {
        for &n in *which {
            scripts.push(script(case, engine, case.cutoffs[n].0, n));
        }
    }
    let args: Vec<&OsStr> = scripts.iter().map(|p| p.as_os_str()).collect();
    let v = python_json(program, &args, packages);
    let mut results = v["results"].as_array().expect("results").iter();
    for (case, which) in cases {
        for &n in *which {
            let (at, snap) = &case.cutoffs[n];
            check(engine, results.next().expect("a result per script"), *at, snap);
        }
    }
    v
}

#[test]
fn duckdb_computes_the_snapshots_features_from_exported_events() {
    if python_skipped("running the generated SQL in DuckDB") {
        return;
    }
    let (cdnow, synth) = (cdnow(), synth());
    run("duckdb", DUCKDB, "duckdb", &[(&cdnow, &[0, 1]), (&synth, &[0, 1])]);
    // The erased customer is in neither the snapshots nor the export.
    let erased = synth.erased.as_deref().expect("an erased customer");
    assert!(synth
        .cutoffs
        .iter()
        .all(|(_, s)| !s.matrix.customers.iter().any(|c| c == erased)));
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(DUCKDB)
        .env("CIS_ABSENT", erased)
        .env("CIS_EVENTS", &synth.events)
        .output()
        .expect("python3 runs");
    let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["absent_rows"], 0, "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn spark_computes_the_snapshots_features_from_exported_events() {
    if python_skipped("running the generated SQL in Spark") {
        return;
    }
    let (cdnow, synth) = (cdnow(), synth());
    let started = std::time::Instant::now();
    // One cutoff of each population (DuckDB checks them all) keeps the test well under a minute
    // on two busy cores (all four took 57 s); the synthetic one is the cutoff whose K lies after
    // T, so late arrivals are filtered by recorded_at in the script.
    let v = run("spark", SPARK, "pyspark (and Java)", &[(&cdnow, &[1]), (&synth, &[0])]);
    eprintln!(
        "spark: {:.1} s in all; session and queries: {}",
        started.elapsed().as_secs_f64(),
        v["seconds"]
    );
}
