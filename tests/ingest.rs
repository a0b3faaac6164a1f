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

/// Ingests `bytes` as `name` through the library (CSV unless `format` says otherwise).
fn ingest_bytes(store: &Store, kind: Kind, format: Format, bytes: &[u8]) -> cis_ingest::records::IngestRun {
    let opts = IngestOptions {
        recorded_at: RecordedAt::EventTime,
        ..IngestOptions::new(kind, format)
    };
    cis_ingest::ingest_reader(store, bytes, "input", 0, &opts, &mut |_| {}).expect("ingest succeeds")
}

/// The run's lines are each accounted for, and its quarantine count is what is listed.
fn assert_accounted(store: &Store, run: &cis_ingest::records::IngestRun) {
    assert_eq!(
        run.lines,
        run.accepted + run.duplicates + run.quarantined + run.blank,
        "{run:?}"
    );
    let listed = cis_ingest::records::quarantined(store, Some(run.run)).expect("list");
    assert_eq!(listed.len() as u64, run.quarantined, "{listed:#?}");
}

#[test]
fn a_cdnow_date_that_is_not_ascii_is_quarantined_not_a_panic() {
    // \xff is not UTF-8; "199é101" is 8 bytes whose 4th is inside a character.
    let bytes = b"00001 00001 19\xff010 1 11.77\n00002 00002 199\xc3\xa9101 1 3.00\n00003 00003 19970112 1 12.00\n";
    let store = Store::in_memory().expect("store");
    let run = ingest_bytes(&store, Kind::Order, Format::Cdnow, bytes);
    assert_eq!((run.lines, run.accepted, run.quarantined), (3, 1, 2));
    assert_accounted(&store, &run);
    let q = cis_ingest::records::quarantined(&store, None).expect("list");
    assert_eq!((q[0].line, q[0].reason.as_str()), (1, "not valid UTF-8"));
    assert_eq!((q[1].line, q[1].field.as_str()), (2, "event_time"));
    let stored = customer_events(&store, "00003", AsOf::new(None, None)).expect("read");
    assert_eq!(stored.len(), 1);
}

/// Yields `data` a few bytes at a time, then fails.
struct FailsAfter<'a> {
    data: &'a [u8],
}

impl std::io::Read for FailsAfter<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.data.is_empty() {
            return Err(std::io::Error::other("disk went away"));
        }
        let n = buf.len().min(self.data.len()).min(7);
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

#[test]
fn a_run_that_fails_after_committing_batches_is_recorded_with_them() {
    let mut text = String::from("order_id,customer_id,event_time,amount,currency\n");
    for i in 1..=5 {
        text.push_str(&format!("o{i},c{i},2024-01-0{i},1.00,USD\n"));
    }
    text.push_str("o6,c1,bad,1.00,USD\no7,c7,2024-01-0"); // the failure cuts this row
    let store = Store::in_memory().expect("store");
    let opts = IngestOptions {
        recorded_at: RecordedAt::EventTime,
        batch_rows: 2,
        ..IngestOptions::new(Kind::Order, Format::Csv)
    };
    let mut acknowledged = Vec::new();
    let got = cis_ingest::ingest_reader(
        &store,
        FailsAfter { data: text.as_bytes() },
        "flaky.csv",
        0,
        &opts,
        &mut |c| acknowledged.push(c.batch.seq),
    );
    let Err(IngestError::Stopped { run, cause }) = got else {
        panic!("expected a stopped run, got {got:?}")
    };
    assert!(
        matches!(&*cause, IngestError::Read { file, reason } if file == "flaky.csv" && reason.contains("disk went away")),
        "{cause:?}"
    );
    // Every good row read before the failure is stored, in the batches the run records.
    assert_eq!((run.rows, run.accepted, run.quarantined), (6, 5, 1));
    assert_eq!(run.batches, acknowledged);
    assert_eq!(run.batches.len(), 3);
    assert_eq!(run.head_after, cis_storage::hex(&store.log().head().expect("head")));
    assert!(run.stopped.as_deref().is_some_and(|s| s.contains("disk went away")));
    assert_eq!(runs(&store).expect("runs"), [*run]);
}

#[test]
fn quarantine_records_of_one_line_number_do_not_overwrite_each_other() {
    // Bare CR line endings: four rows, three of them bad.
    let text = "order_id,customer_id,event_time,amount,currency\ro1,c1,bad,1.00,USD\ro2,c1,2024-01-01,-1,USD\ro3,c1,2024-01-01,1.00,US\ro4,c1,2024-01-01,1.00,USD\r";
    let store = Store::in_memory().expect("store");
    let run = ingest_bytes(&store, Kind::Order, Format::Csv, text.as_bytes());
    assert_eq!((run.lines, run.accepted, run.quarantined), (4, 1, 3));
    assert_accounted(&store, &run);
    let q = cis_ingest::records::quarantined(&store, Some(run.run)).expect("list");
    let at: Vec<(u64, &str)> = q.iter().map(|r| (r.line, r.field.as_str())).collect();
    assert_eq!(at, [(2, "event_time"), (3, "amount"), (4, "currency")]);
}

#[test]
fn quarantine_records_keyed_by_line_still_list_and_erase() {
    // A record as written before quarantine records had a sequence number: keyed (run, line).
    let store = Store::in_memory().expect("store");
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&9u64.to_be_bytes());
    key[8..].copy_from_slice(&7u64.to_be_bytes());
    let old = br#"{"run":9,"file":"old.csv","line":7,"field":"amount","reason":"missing","raw":"o1,c1,,USD","customer":"c1"}"#;
    store
        .journal_put(cis_ingest::records::QUARANTINE, &key, old)
        .expect("put");
    let listed = cis_ingest::records::quarantined(&store, Some(9)).expect("list");
    assert_eq!((listed.len(), listed[0].line, listed[0].seq), (1, 7, None));
    cis_ingest::records::remove_quarantined(&store, &listed[0]).expect("remove");
    assert!(cis_ingest::records::quarantined(&store, None).expect("list").is_empty());
}

#[test]
fn a_byte_order_mark_is_skipped_in_every_format() {
    let bom = "\u{feff}";
    let cases = [
        (Format::Jsonl, format!("{bom}{{\"order_id\":\"o1\",\"customer_id\":\"c1\",\"event_time\":\"2024-01-01\",\"amount\":\"1.00\",\"currency\":\"USD\"}}\n")),
        (Format::Csv, format!("{bom}order_id,customer_id,event_time,amount,currency\no1,c1,2024-01-01,1.00,USD\n")),
        (Format::Cdnow, format!("{bom}00001 c1 20240101 1 1.00\n")),
    ];
    for (format, text) in cases {
        let store = Store::in_memory().expect("store");
        let run = ingest_bytes(&store, Kind::Order, format, text.as_bytes());
        assert_eq!((run.lines, run.accepted), (1, 1), "{format:?}");
        assert_accounted(&store, &run);
    }
}

#[test]
fn a_stray_quote_spoils_only_its_own_line() {
    let text = "order_id,customer_id,event_time,amount,currency\n\
                o1,c1,2024-01-01,1.00,USD\n\
                o2,\"c2,2024-01-01,1.00,USD\n\
                \n\
                o3,c3,2024-01-01,1.00,USD\n\
                o4,\"c4, with a comma\",2024-01-01,1.00,USD\n";
    let store = Store::in_memory().expect("store");
    let run = ingest_bytes(&store, Kind::Order, Format::Csv, text.as_bytes());
    assert_eq!((run.lines, run.accepted, run.quarantined, run.blank), (5, 3, 1, 1));
    assert_accounted(&store, &run);
    let q = cis_ingest::records::quarantined(&store, None).expect("list");
    assert_eq!(q[0].line, 3);
    assert!(q[0].reason.contains("quoted field is not closed"), "{}", q[0].reason);
    let c4 = customer_events(&store, "c4, with a comma", AsOf::new(None, None)).expect("read");
    assert_eq!(c4.len(), 1, "a closed quote on one line still reads");
}

#[test]
fn a_duplicate_column_is_a_header_error() {
    let text = "order_id,customer_id,event_time,amount,currency,Amount\no1,c1,2024-01-01,1.00,USD,2.00\n";
    let store = Store::in_memory().expect("store");
    let opts = IngestOptions::new(Kind::Order, Format::Csv);
    let got = cis_ingest::ingest_reader(&store, text.as_bytes(), "dup.csv", 0, &opts, &mut |_| {});
    assert!(
        matches!(&got, Err(IngestError::Header { reason, .. }) if reason.contains("'amount' appears twice")),
        "{got:?}"
    );
    assert_eq!(store.log().head().expect("head"), GENESIS);
}

#[test]
fn ragged_rows_keep_no_text_when_the_header_has_personal_columns_and_erase_removes_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(
        dir.path(),
        "pii.csv",
        "customer_id,event_time,signup_date,country,plan,email,recorded_at\n\
         c2,2024-01-01T00:00:00Z,2024-01-01,US,free,bob@example.com,2024-01-01T00:00:01Z\n\
         c2,2024-02-01T00:00:00Z,2024-01-01,US,free\rbob@example.com,2024-02-01T00:00:01Z\n",
    );
    let store_dir = dir.path().join("store");
    let p = path.to_str().expect("utf-8 path");
    let out = crate::util::cis(&store_dir, &["ingest", "customers", p, "--recorded-at", "recorded_at"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        summary.contains("3 lines from") && summary.contains("1 accepted, 0 duplicate, 2 quarantined, 0 blank"),
        "{summary}"
    );
    let no_email = |when: &str| {
        for f in walk(&store_dir) {
            let bytes = std::fs::read(&f).expect("read store file");
            assert!(!contains(&bytes, b"bob@example"), "{when}: email in {}", f.display());
        }
    };
    no_email("after ingest");
    let out = crate::util::cis(&store_dir, &["erase", "--customer", "c2", "--reason", "t"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    no_email("after erase");
    let list = crate::util::cis(&store_dir, &["quarantine", "list"]);
    assert!(
        String::from_utf8_lossy(&list.stdout).contains("0 quarantined row(s)"),
        "the unattributable fragments could be c2's: {}",
        String::from_utf8_lossy(&list.stdout)
    );
}

#[test]
fn a_file_whose_every_row_is_rejected_exits_non_zero_with_a_hint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = write(
        dir.path(),
        "o.csv",
        "order_id,customer_id,event_time,amount,currency\no1,c1,2024-01-01,1.00,USD\n",
    );
    let empty = write(dir.path(), "e.csv", "order_id,customer_id,event_time,amount,currency\n");
    let store_dir = dir.path().join("store");
    let run = |file: &std::path::Path, format: &str| {
        let f = file.to_str().expect("utf-8 path");
        crate::util::cis(&store_dir, &["ingest", "orders", f, "--format", format])
    };
    for format in ["cdnow", "jsonl"] {
        let out = run(&csv, format);
        assert_eq!(out.status.code(), Some(3), "--format {format}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("every row was rejected — is --format right?"), "{err}");
    }
    assert_eq!(run(&empty, "csv").status.code(), Some(0), "no rows is not a rejection");
    assert_eq!(run(&csv, "csv").status.code(), Some(0));
    assert_eq!(
        run(&csv, "csv").status.code(),
        Some(0),
        "all duplicates is not a rejection"
    );
}

#[test]
fn the_full_cdnow_layout_reads_as_the_same_events_as_the_sample() {
    let sample = std::fs::read_to_string(fixture("CDNOW_sample.txt")).expect("fixture");
    let mut full = String::from("customer_id date number_of_cds dollar_value\n");
    for l in sample.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        full.push_str(&f.get(1..).unwrap_or_default().join(" "));
        full.push('\n');
    }
    let store = Store::in_memory().expect("store");
    let a = ingest_bytes(&store, Kind::Order, Format::Cdnow, full.as_bytes());
    assert_eq!((a.lines, a.accepted, a.quarantined), (6919, 6919, 0));
    assert_accounted(&store, &a);
    // Same positional order ids, customers, dates and amounts: the sample adds nothing.
    let b = ingest(
        &store,
        Kind::Order,
        Format::Cdnow,
        &fixture("CDNOW_sample.txt"),
        RecordedAt::EventTime,
    );
    assert_eq!((b.accepted, b.duplicates), (0, 6919));
    let again = ingest_bytes(&store, Kind::Order, Format::Cdnow, full.as_bytes());
    assert_eq!((again.accepted, again.duplicates), (0, 6919));
}
