//! A Parquet file written by pandas through pyarrow (Python), as data teams export it, reads as
//! the same events as the same rows in CSV.

use cis_core::event::Kind;
use cis_core::AsOf;
use cis_ingest::history::customer_events;
use cis_ingest::source::Format;
use cis_ingest::RecordedAt;
use cis_storage::Store;

use crate::python::{python_json, python_skipped};
use crate::util::{ingest, write};

/// pandas' own types: strings, a categorical (a dictionary), `datetime64[…, tz]` in
/// Europe/Paris, `Decimal` objects (decimal128), a nullable `Int64` with a missing value, and a
/// missing customer id.
const PYTHON: &str = r#"
import json, sys, decimal
import pandas as pd, pyarrow as pa, pyarrow.parquet as pq
df = pd.DataFrame({
    "order_id": ["o1", "o2", "o3"],
    "customer_id": ["c1", "c2", None],
    "event_time": pd.to_datetime(["2024-03-01 10:00:00.123456", "2024-03-02 00:00:00.000000", "2024-03-03 00:00:00.000000"])
        .tz_localize("Europe/Paris"),
    "amount": [decimal.Decimal("19.90"), decimal.Decimal("5"), decimal.Decimal("1.00")],
    "currency": pd.Categorical(["EUR", "EUR", "USD"]),
    "quantity": pd.array([2, None, 1], dtype="Int64"),
})
table = pa.Table.from_pandas(df, preserve_index=False)
pq.write_table(table, sys.argv[1])
print(json.dumps({"types": {f.name: str(f.type) for f in table.schema}}))
"#;

const CSV: &str = "order_id,customer_id,event_time,amount,currency,quantity\n\
o1,c1,2024-03-01T10:00:00.123456+01:00,19.90,EUR,2\n\
o2,c2,2024-03-02T00:00:00+01:00,5,EUR,\n\
o3,,2024-03-03T00:00:00+01:00,1.00,USD,1\n";

#[test]
fn a_pandas_parquet_file_reads_as_the_same_events_as_its_csv() {
    if python_skipped("reading a pandas-written Parquet file") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let pq = dir.path().join("orders.parquet");
    let out = python_json(PYTHON, &[pq.as_os_str()], "pandas pyarrow");
    let types = &out["types"];
    // The unit and the string type depend on the pandas version (pandas 3: µs, large_string).
    let is = |col: &str, prefix: &str, has: &str| {
        types[col]
            .as_str()
            .is_some_and(|t| t.starts_with(prefix) && t.contains(has))
    };
    assert!(is("currency", "dictionary<", "string"), "{types}");
    assert!(is("event_time", "timestamp[", "tz=Europe/Paris"), "{types}");
    assert!(is("amount", "decimal128(", ""), "{types}");

    let csv = write(dir.path(), "orders.csv", CSV);
    let (a, b) = (Store::in_memory().expect("store"), Store::in_memory().expect("store"));
    let from_csv = ingest(&a, Kind::Order, Format::Csv, &csv, RecordedAt::EventTime);
    let from_pq = ingest(&b, Kind::Order, Format::Parquet, &pq, RecordedAt::EventTime);
    assert_eq!((from_pq.accepted, from_pq.quarantined), (2, 1));
    assert_eq!((from_csv.accepted, from_csv.quarantined), (2, 1));
    let events = |s: &Store| -> Vec<String> {
        ["c1", "c2"]
            .iter()
            .flat_map(|c| customer_events(s, c, AsOf::new(None, None)).expect("read"))
            .map(|e| serde_json::to_string(&e).expect("json"))
            .collect()
    };
    let got = events(&b);
    assert_eq!(got, events(&a));
    assert!(
        got[0].contains("\"event_time\":\"2024-03-01T09:00:00.123456Z\""),
        "{}",
        got[0]
    );
}
