//! The exported Parquet file read back by DuckDB, pandas and pyarrow (Python).

use cis_export::{export_scores, Format, COLUMNS};

use crate::python::{python_json, python_skipped};
use crate::scored::{row, scored, CUSTOMERS};
use crate::util::t;

/// The Python script DuckDB and pandas read the Parquet file with; prints one JSON object.
/// Floats are printed with `repr` (shortest round-trip text) as strings, so they compare exactly.
const PYTHON: &str = r#"
import json, sys
import duckdb, pandas as pd, pyarrow.parquet as pq
path = sys.argv[1]
src = "read_parquet('" + path.replace("'", "''") + "')"
con = duckdb.connect()
n, churn, clv = con.execute(f"SELECT count(*), count(churn_probability), count(clv_12m) FROM {src}").fetchone()
cols = con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()
p_alive, clv_12m, as_of, gen = con.execute(
    f"SELECT p_alive, clv_12m, epoch_us(as_of), epoch_us(generated_at) FROM {src} WHERE customer_id = '0001'"
).fetchone()
kv = con.execute(f"SELECT key, value FROM parquet_kv_metadata('" + path.replace("'", "''") + "')").fetchall()
kv = {bytes(k).decode(): bytes(v).decode() for k, v in kv if bytes(k).decode().startswith("cis.")}
duck = {
    "rows": n, "churn_non_null": churn, "clv_non_null": clv,
    "columns": [c[0] for c in cols], "types": [c[1] for c in cols],
    "p_alive_0001": repr(p_alive), "clv_12m_0001": repr(clv_12m),
    "as_of_us": as_of, "generated_at_us": gen, "metadata": kv,
}
df = pd.read_parquet(path)
c1 = df[df["customer_id"] == "0001"].iloc[0]
panda = {
    "rows": len(df), "columns": list(df.columns),
    "dtypes": {c: str(df[c].dtype) for c in ["as_of", "generated_at", "p_alive", "churn_probability"]},
    "churn_null": int(df["churn_probability"].isna().sum()),
    "p_alive_0001": repr(float(c1["p_alive"])), "clv_12m_0001": repr(float(c1["clv_12m"])),
    "as_of_0001": c1["as_of"].isoformat(),
    "segments": int(df["segment"].nunique()),
}
meta = pq.read_metadata(path).metadata
arrow = {
    "schema": [f"{f.name}: {f.type}" for f in pq.read_schema(path)],
    "table": meta[b"cis.table"].decode(), "schema_version": meta[b"cis.schema_version"].decode(),
}
print(json.dumps({"duckdb": duck, "pandas": panda, "pyarrow": arrow}))
"#;

#[test]
fn duckdb_and_pandas_read_the_parquet_file() {
    if python_skipped("reading the export with DuckDB and pandas") {
        return;
    }
    let s = scored();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("customer_risk_scores.parquet");
    let summary = export_scores(&s.store, None, Format::Parquet, &path).expect("export");
    let v = python_json(PYTHON, &[path.as_os_str()], "duckdb pandas pyarrow");
    let c1 = row(&s.set, "0001");
    let repr = |x: Option<f64>| x.expect("a value").to_string();
    let as_f64 = |v: &serde_json::Value| v.as_str().expect("float text").parse::<f64>().expect("a float");
    let columns: Vec<&str> = COLUMNS.to_vec();

    let duck = &v["duckdb"];
    assert_eq!(duck["rows"], CUSTOMERS);
    assert_eq!(duck["churn_non_null"], 0);
    assert_eq!(duck["clv_non_null"], CUSTOMERS);
    assert_eq!(duck["columns"], serde_json::json!(columns));
    assert_eq!(duck["types"][1], "TIMESTAMP WITH TIME ZONE");
    assert_eq!(duck["types"][12], "TIMESTAMP WITH TIME ZONE");
    assert_eq!(duck["types"][5], "DOUBLE");
    assert_eq!(duck["types"][0], "VARCHAR");
    assert_eq!(
        as_f64(&duck["p_alive_0001"]),
        c1.p_alive.expect("p_alive"),
        "{}",
        repr(c1.p_alive)
    );
    assert_eq!(
        as_f64(&duck["clv_12m_0001"]),
        c1.clv_12m.expect("clv"),
        "{}",
        repr(c1.clv_12m)
    );
    assert_eq!(duck["as_of_us"], t("1997-09-30").micros());
    assert_eq!(duck["generated_at_us"], s.generated_at.micros());
    assert_eq!(duck["metadata"]["cis.table"], "customer_risk_scores");
    assert_eq!(duck["metadata"]["cis.schema_version"], "1");
    assert_eq!(duck["metadata"]["cis.score_hash"], summary.score_hash);
    assert_eq!(duck["metadata"]["cis.snapshot_hash"], s.set.snapshot);
    assert_eq!(
        duck["metadata"]["cis.generated_at"],
        cis_core::time::format(s.generated_at)
    );

    let pd = &v["pandas"];
    assert_eq!(pd["rows"], CUSTOMERS);
    assert_eq!(pd["columns"], serde_json::json!(columns));
    assert_eq!(pd["dtypes"]["as_of"], "datetime64[us, UTC]");
    assert_eq!(pd["dtypes"]["generated_at"], "datetime64[us, UTC]");
    assert_eq!(pd["dtypes"]["p_alive"], "float64");
    assert_eq!(pd["churn_null"], CUSTOMERS);
    assert_eq!(as_f64(&pd["p_alive_0001"]), c1.p_alive.expect("p_alive"));
    assert_eq!(as_f64(&pd["clv_12m_0001"]), c1.clv_12m.expect("clv"));
    assert_eq!(pd["as_of_0001"], "1997-09-30T00:00:00+00:00");
    assert!(pd["segments"].as_u64().expect("count") >= 2);

    let pa = &v["pyarrow"];
    assert_eq!(pa["schema"][1], "as_of: timestamp[us, tz=UTC]");
    assert_eq!(pa["schema"][5], "p_alive: double");
    assert_eq!(pa["table"], "customer_risk_scores");
    assert_eq!(pa["schema_version"], "1");
}
