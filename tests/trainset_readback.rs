//! Snapshot and training-set exports read back by DuckDB, pandas and Polars (Python), Parquet and
//! CSV, and compared cell by cell with the stored snapshots and training's training set.

use std::path::Path;

use cis_export::features::{export_snapshot, export_training_set};
use cis_export::Format;
use cis_storage::{hex, ArtifactHash, Store};
use serde_json::Value;

use crate::python::{python_json, python_skipped};
use crate::tables::{self, check, Expected, Kind, CDNOW_LABELS_KNOWN, HORIZON, SYNTH_LABELS_KNOWN};
use crate::util::t;

/// Reads the file (argv[1], format argv[2]) with each library as a data scientist would and
/// prints, per library, the columns, their types and every column's values: times as integer
/// microseconds, decimals as their text, floats as `repr` text (shortest round trip), integers as
/// integers. CSV is read with `customer_id` as text (ids like 0001 are not numbers).
const PYTHON: &str = r#"
import datetime, decimal, json, math, sys
import duckdb, numpy as np, pandas as pd, polars as pl
path, fmt = sys.argv[1], sys.argv[2]
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
def norm(v):
    if isinstance(v, np.generic):
        v = v.item()
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, pd.Timestamp):
        return v.value // 1000
    if isinstance(v, datetime.datetime):
        return (v - EPOCH) // datetime.timedelta(microseconds=1)
    if isinstance(v, decimal.Decimal):
        return str(v)
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, float):
        return repr(v)
    return v
def table(columns, types, data):
    return {"columns": columns, "types": types, "data": [[norm(v) for v in col] for col in data]}
quoted = path.replace("'", "''")
con = duckdb.connect()
src = f"read_parquet('{quoted}')" if fmt == "parquet" else f"read_csv('{quoted}', types={{'customer_id': 'VARCHAR'}})"
desc = con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()
names, types = [d[0] for d in desc], [d[1] for d in desc]
# Times as epoch microseconds in SQL: the Python value of a TIMESTAMPTZ depends on the session zone.
select = ", ".join(f'epoch_us("{n}")' if t.startswith("TIMESTAMP") else f'"{n}"' for n, t in zip(names, types))
rows = con.execute(f"SELECT {select} FROM {src}").fetchall()
duck = table(names, types, list(zip(*rows)) if rows else [[] for _ in names])
if fmt == "parquet":
    df, pf = pd.read_parquet(path), pl.read_parquet(path)
else:
    # Before pandas 3 the default float parser may miss the nearest double by an ulp.
    exact = {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision": "round_trip"}
    df = pd.read_csv(path, dtype={"customer_id": str}, **exact)
    pf = pl.read_csv(path, schema_overrides={"customer_id": pl.String})
panda = table(list(df.columns), [str(df[c].dtype) for c in df.columns], [df[c].tolist() for c in df.columns])
polar = table(pf.columns, [str(t) for t in pf.dtypes], [pf[c].to_list() for c in pf.columns])
kv = {}
if fmt == "parquet":
    for k, v in con.execute(f"SELECT key, value FROM parquet_kv_metadata('{quoted}')").fetchall():
        if bytes(k).decode().startswith("cis."):
            kv[bytes(k).decode()] = bytes(v).decode()
print(json.dumps({"duckdb": duck, "pandas": panda, "polars": polar, "metadata": kv}))
"#;

/// The type each library gives a column of `kind` in Parquet.
fn parquet_type(reader: &str, kind: Kind) -> &'static [&'static str] {
    match (reader, kind) {
        ("duckdb", Kind::Text) => &["VARCHAR"],
        ("duckdb", Kind::Time) => &["TIMESTAMP WITH TIME ZONE"],
        ("duckdb", Kind::Money) => &["DECIMAL(38,2)"],
        ("duckdb", Kind::Count) => &["BIGINT"],
        ("duckdb", Kind::Real) => &["DOUBLE"],
        // pandas 3 reads text as its `str` dtype, earlier versions as `object`.
        ("pandas", Kind::Text) => &["object", "str", "string"],
        ("pandas", Kind::Time) => &["datetime64[us, UTC]"],
        ("pandas", Kind::Money) => &["object"],
        ("pandas", Kind::Count) => &["int64"],
        ("pandas", Kind::Real) => &["float64"],
        ("polars", Kind::Text) => &["String"],
        ("polars", Kind::Time) => &["Datetime(time_unit='us', time_zone='UTC')"],
        ("polars", Kind::Money) => &["Decimal(precision=38, scale=2)"],
        ("polars", Kind::Count) => &["Int64"],
        ("polars", Kind::Real) => &["Float64"],
        _ => panic!("no reader {reader}"),
    }
}

/// Writes `exp`'s source with `export` in both formats and has every library read both back.
fn read_back(exp: &Expected, export: impl Fn(Format, &Path), metadata: &[(&str, String)]) {
    let dir = tempfile::tempdir().expect("tempdir");
    for format in [Format::Parquet, Format::Csv] {
        let path = dir.path().join(format!("table.{format}"));
        export(format, &path);
        let v: Value = python_json(
            PYTHON,
            &[path.as_os_str(), format.to_string().as_ref()],
            "duckdb pandas polars",
        );
        let typed = format == Format::Parquet;
        for reader in ["duckdb", "pandas", "polars"] {
            let got = &v[reader];
            check(&format!("{reader} ({format})"), got, exp, typed);
            if typed {
                let types = got["types"].as_array().expect("types");
                for ((ty, kind), name) in types.iter().zip(&exp.kinds).zip(&exp.columns) {
                    let ty = ty.as_str().expect("type name");
                    assert!(parquet_type(reader, *kind).contains(&ty), "{reader}: {name} is {ty}");
                }
            }
        }
        if typed {
            for (k, want) in metadata {
                assert_eq!(v["metadata"][k], *want, "{k}");
            }
        }
    }
}

fn both(store: &Store, snaps: &[ArtifactHash], known: &str) {
    let snap = &snaps[0];
    let exp = tables::snapshot_table(store, snap);
    read_back(
        &exp,
        |f, p| {
            export_snapshot(store, snap, f, p).expect("export snapshot");
        },
        &[
            ("cis.table", "feature_snapshot".into()),
            ("cis.snapshot_hash", hex(snap)),
        ],
    );
    let exp = tables::training_table(store, snaps, HORIZON, t(known));
    let hashes: Vec<String> = snaps.iter().map(|h| hex(h)).collect();
    read_back(
        &exp,
        |f, p| {
            export_training_set(store, snaps, HORIZON, t(known), f, p).expect("export training set");
        },
        &[
            ("cis.table", "training_set".into()),
            ("cis.snapshot_hash", hashes.join(",")),
            ("cis.horizon_days", HORIZON.to_string()),
        ],
    );
}

#[test]
fn duckdb_pandas_and_polars_read_cdnow_snapshots_and_training_sets() {
    if python_skipped("reading feature tables with DuckDB, pandas and Polars") {
        return;
    }
    let (store, snaps) = tables::cdnow_cutoffs();
    both(&store, &snaps, CDNOW_LABELS_KNOWN);
}

#[test]
fn duckdb_pandas_and_polars_read_synthetic_snapshots_and_training_sets() {
    if python_skipped("reading feature tables with DuckDB, pandas and Polars") {
        return;
    }
    let (store, snaps) = tables::synth_cutoffs();
    both(&store, &snaps, SYNTH_LABELS_KNOWN);
}
