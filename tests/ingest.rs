//! Ingestion end to end: the CDNOW fixture, idempotence, schema errors, personal data.

use std::collections::HashMap;

use cis_core::event::{Kind, Payload};
use cis_core::time::parse_timestamp;
use cis_core::AsOf;
use cis_ingest::history::{attributes, customer_events};
use cis_ingest::records::runs;
use cis_ingest::source::Format;
use cis_ingest::{ingest_file, IngestError, IngestOptions, RecordedAt};
use cis_storage::{Store, GENESIS};

use crate::util::{fixture, ingest, write};

#[test]
fn cdnow_stores_every_row_once() {
    let path = fixture("CDNOW_sample.txt");
    let text = std::fs::read_to_string(&path).expect("fixture");
    let rows: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut counts: HashMap<Vec<&str>, usize> = HashMap::new();
    for l in &rows {
        *counts.entry(l.split_whitespace().collect()).or_default() += 1;
    }
    assert_eq!(rows.len(), 6919);
    // 19 rows occur more than once, exactly alike (21 extra copies): distinct purchases.
    assert_eq!(counts.values().filter(|&&n| n > 1).count(), 19);
    assert_eq!(rows.len() - counts.len(), 21);

    let store = Store::in_memory().expect("store");
    let first = ingest(&store, Kind::Order, Format::Cdnow, &path, RecordedAt::EventTime);
    assert_eq!(
        (first.rows, first.accepted, first.duplicates, first.quarantined),
        (6919, 6919, 0, 0)
    );
    let again = ingest(&store, Kind::Order, Format::Cdnow, &path, RecordedAt::EventTime);
    assert_eq!((again.accepted, again.duplicates), (0, 6919));
    assert_eq!(again.head_after, first.head_after);
    let report = store.log().verify().expect("verifies");
    assert_eq!(report.events, 6919);

    // Customer 0001's rows, read back exactly (amounts in cents, dates at midnight UTC).
    let at = AsOf::new(Some(parse_timestamp("1998-07-01").expect("t")), None);
    let got: Vec<(String, i64, Option<u32>)> = customer_events(&store, "0001", at)
        .expect("read")
        .into_iter()
        .map(|e| match e.payload {
            Some(Payload::Order(o)) => (e.event_time, o.amount.minor, o.quantity),
            other => panic!("not an order: {other:?}"),
        })
        .collect();
    let expected: Vec<(String, i64, Option<u32>)> = rows
        .iter()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f[1] == "0001")
        .map(|f| {
            let d = f[2];
            let cents = f[4].replace('.', "").parse::<i64>().expect("cents");
            (
                format!("{}-{}-{}T00:00:00Z", &d[..4], &d[4..6], &d[6..]),
                cents,
                Some(f[3].parse().expect("qty")),
            )
        })
        .collect();
    assert_eq!(got, expected);
    assert_eq!(got.len(), 4);
}

#[test]
fn the_same_facts_in_jsonl_are_duplicates_of_the_csv() {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = write(
        dir.path(),
        "o.csv",
        "order_id,customer_id,event_time,amount,currency,quantity\no1,c1,2024-01-05T10:00:00Z,12.50,USD,2\no2,c2,2024-01-06,3,EUR,\n",
    );
    let jsonl = write(
        dir.path(),
        "o.jsonl",
        "{\"order_id\":\"o1\",\"customer_id\":\"c1\",\"event_time\":\"2024-01-05T11:00:00+01:00\",\"amount\":12.5,\"currency\":\"usd\",\"quantity\":2}\n\
         {\"order_id\":\"o2\",\"customer_id\":\"c2\",\"event_time\":\"2024-01-06\",\"amount\":\"3.00\",\"currency\":\"EUR\"}\n",
    );
    let store = Store::in_memory().expect("store");
    let a = ingest(&store, Kind::Order, Format::Csv, &csv, RecordedAt::Now);
    let b = ingest(&store, Kind::Order, Format::Jsonl, &jsonl, RecordedAt::Now);
    assert_eq!((a.accepted, b.accepted, b.duplicates), (2, 0, 2));
}

#[test]
fn a_missing_required_column_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(
        dir.path(),
        "o.csv",
        "order_id,customer,event_time,amount\no1,c1,2024-01-05,1.00\n",
    );
    let store = Store::in_memory().expect("store");
    let opts = IngestOptions::new(Kind::Order, Format::Csv);
    match ingest_file(&store, &path, &opts, &mut |_| {}) {
        Err(IngestError::MissingColumns { file, missing }) => {
            assert_eq!(missing, ["customer_id", "currency"]);
            assert_eq!(file, path.display().to_string());
        }
        other => panic!("expected a schema error, got {other:?}"),
    }
    assert_eq!(store.log().head().expect("head"), GENESIS);
    assert!(runs(&store).expect("runs").is_empty());
    let missing = ingest_file(&store, &dir.path().join("nope.csv"), &opts, &mut |_| {});
    assert!(matches!(missing, Err(IngestError::Open { .. })), "{missing:?}");
}

#[test]
fn personal_data_never_reaches_the_store_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(
        dir.path(),
        "customers.csv",
        "customer_id,event_time,signup_date,country,plan,Email,phone\n\
         c1,2024-01-01,2024-01-01,DE,pro,alice.unique@example.com,+49-555-0199\n\
         c2,2024-01-01,not-a-date,FR,free,bob.unique@example.com,+33-555-0100\n",
    );
    let store_dir = dir.path().join("store");
    {
        let store = Store::open(&store_dir).expect("store");
        let run = ingest(&store, Kind::Customer, Format::Csv, &path, RecordedAt::EventTime);
        assert_eq!((run.accepted, run.quarantined), (1, 1));
        assert_eq!(run.dropped_columns, ["email", "phone"]);
        let events = customer_events(&store, "c1", AsOf::new(None, None)).expect("read");
        let Some(Payload::Customer(c)) = &events[0].payload else {
            panic!("customer row")
        };
        assert_eq!(c.attributes.keys().collect::<Vec<_>>(), ["plan"]);
    }
    for entry in walk(&store_dir) {
        let bytes = std::fs::read(&entry).expect("read store file");
        for needle in ["alice.unique", "bob.unique", "555-01"] {
            assert!(
                !contains(&bytes, needle.as_bytes()),
                "{needle} found in {}",
                entry.display()
            );
        }
    }
}

#[test]
fn customer_metadata_reads_as_it_held_at_the_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(
        dir.path(),
        "customers.csv",
        "customer_id,event_time,country,plan\nc1,2024-01-01,DE,free\nc1,2024-03-01,,pro\n",
    );
    let store = Store::in_memory().expect("store");
    ingest(&store, Kind::Customer, Format::Csv, &path, RecordedAt::EventTime);
    let plan_at = |t: &str| -> Vec<String> {
        customer_events(&store, "c1", AsOf::new(Some(parse_timestamp(t).expect("t")), None))
            .expect("read")
            .into_iter()
            .filter_map(|e| match e.payload {
                Some(Payload::Customer(c)) => c.attributes.get("plan").cloned(),
                _ => None,
            })
            .collect()
    };
    assert_eq!(plan_at("2024-02-01"), ["free"]);
    assert_eq!(plan_at("2024-03-01"), ["free", "pro"]);
    // The fold: the later row updates plan; country, absent from it, keeps its value.
    let at = AsOf::new(Some(parse_timestamp("2024-03-02").expect("t")), None);
    let folded = attributes(&customer_events(&store, "c1", at).expect("read")).expect("a customer");
    assert_eq!(
        (
            folded.country.as_deref(),
            folded.attributes.get("plan").map(String::as_str)
        ),
        (Some("DE"), Some("pro"))
    );
}

pub fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let p = entry.expect("entry").path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
