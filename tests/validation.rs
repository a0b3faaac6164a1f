//! Every validation rule, as the quarantine record it produces. Each file mixes bad rows
//! with good ones: the good rows must be stored, the bad ones quarantined with their line.

use cis_core::event::Kind;
use cis_core::AsOf;
use cis_features::snapshot;
use cis_ingest::records::quarantined;
use cis_ingest::source::Format;
use cis_ingest::RecordedAt;
use cis_storage::Store;

use crate::util::{ingest, t, write};

/// (row, expected field, substring of the reason); `None` field = the row is good.
type Case = (&'static str, Option<&'static str>, &'static str);

fn check(kind: Kind, header: &str, cases: &[Case]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut text = format!("{header}\n");
    for (row, ..) in cases {
        text.push_str(row);
        text.push('\n');
    }
    let path = write(dir.path(), "input.csv", &text);
    let store = Store::in_memory().expect("store");
    let run = ingest(&store, kind, Format::Csv, &path, RecordedAt::EventTime);
    let good = cases.iter().filter(|c| c.1.is_none()).count() as u64;
    assert_eq!(run.accepted, good, "accepted rows of {kind:?}");
    let q = quarantined(&store, Some(run.run)).expect("quarantine");
    assert_eq!(q.len(), cases.len() - good as usize, "quarantined: {q:#?}");
    for (i, (row, field, reason)) in cases.iter().enumerate() {
        let line = i as u64 + 2;
        let found = q.iter().find(|r| r.line == line);
        match (field, found) {
            (None, None) => {}
            (Some(field), Some(r)) => {
                assert_eq!(r.field, *field, "line {line} `{row}`");
                assert!(
                    r.reason.contains(reason),
                    "line {line} `{row}`: reason `{}` lacks `{reason}`",
                    r.reason
                );
                assert_eq!(r.file, path.display().to_string());
                assert_eq!(r.raw, *row);
            }
            (None, Some(r)) => panic!("good row on line {line} was quarantined: {r:?}"),
            (Some(_), None) => panic!("bad row on line {line} `{row}` was accepted"),
        }
    }
}

#[test]
fn order_rules() {
    check(
        Kind::Order,
        "order_id,customer_id,event_time,amount,currency,quantity,channel",
        &[
            ("o1,c1,2024-01-05T10:00:00Z,12.50,usd,2, Web ", None, ""),
            ("o2,c1,2024-01-05,0,EUR,,", None, ""),
            ("o3,c1,2024-01-05T11:00:00+02:00,1500,JPY,1,app", None, ""),
            (",c1,2024-01-05,1.00,USD,1,web", Some("order_id"), "missing"),
            ("o5,,2024-01-05,1.00,USD,1,web", Some("customer_id"), "missing"),
            ("o6,c1,,1.00,USD,1,web", Some("event_time"), "missing"),
            (
                "o7,c1,05/01/2024,1.00,USD,1,web",
                Some("event_time"),
                "neither RFC 3339",
            ),
            ("o8,c1,1850-01-01,1.00,USD,1,web", Some("event_time"), "outside"),
            ("o9,c1,2024-01-05,,USD,1,web", Some("amount"), "missing"),
            ("o10,c1,2024-01-05,12.5.0,USD,1,web", Some("amount"), "not a decimal"),
            (
                "o11,c1,2024-01-05,1.005,USD,1,web",
                Some("amount"),
                "more than 2 decimals",
            ),
            ("o12,c1,2024-01-05,-3.00,USD,1,web", Some("amount"), "negative"),
            ("o13,c1,2024-01-05,1.00,,1,web", Some("currency"), "missing"),
            ("o14,c1,2024-01-05,1.00,DOLLARS,1,web", Some("currency"), "ISO 4217"),
            ("o15,c1,2024-01-05,1.00,USD,0,web", Some("quantity"), "below 1"),
            (
                "o16,c1,2024-01-05,1.00,USD,two,web",
                Some("quantity"),
                "not a whole number",
            ),
            (
                "o17,c1,2024-01-05,1.00,USD,1",
                Some("(row)"),
                "6 fields, the header has 7",
            ),
            // The bounds, at and just past them, in currencies of each exponent.
            ("o18,c1,2024-01-05,1000000000000.00,USD,1000000,web", None, ""),
            ("o19,c1,2024-01-05,1000000000000,JPY,1,web", None, ""),
            ("o20,c1,2024-01-05,1000000000000.000,KWD,1,web", None, ""),
            (
                "o21,c1,2024-01-05,10000000000000.00,USD,1,web",
                Some("amount"),
                "above the bound for amount (1000000000000 USD)",
            ),
            (
                "o22,c1,2024-01-05,5000000000000.00,USD,1,web",
                Some("amount"),
                "above the bound for amount",
            ),
            (
                "o23,c1,2024-01-05,1000000000000.01,USD,1,web",
                Some("amount"),
                "above the bound for amount",
            ),
            (
                "o24,c1,2024-01-05,1000000000001,JPY,1,web",
                Some("amount"),
                "above the bound for amount (1000000000000 JPY)",
            ),
            (
                "o25,c1,2024-01-05,1000000000000.001,KWD,1,web",
                Some("amount"),
                "above the bound for amount (1000000000000 KWD)",
            ),
            (
                "o26,c1,2024-01-05,1.00,USD,1000001,web",
                Some("quantity"),
                "above the bound for quantity (1000000)",
            ),
            (
                "o27,c1,2024-01-05,1.00,USD,99999999999,web",
                Some("quantity"),
                "above the bound for quantity",
            ),
        ],
    );
}

#[test]
fn session_rules() {
    check(
        Kind::Session,
        "session_id,customer_id,event_time,duration_s,page_views,device",
        &[
            ("s1,c1,2024-01-05T10:00:00Z,60,3,Mobile", None, ""),
            ("s2,c1,2024-01-05T10:00:00Z,0,,", None, ""),
            ("s3,c1,2024-01-05T10:00:00Z,,3,mobile", Some("duration_s"), "missing"),
            (
                "s4,c1,2024-01-05T10:00:00Z,1.5,3,mobile",
                Some("duration_s"),
                "not a whole number",
            ),
            (
                "s5,c1,2024-01-05T10:00:00Z,-1,3,mobile",
                Some("duration_s"),
                "not a whole number",
            ),
            (
                "s6,c1,2024-01-05T10:00:00Z,10,many,mobile",
                Some("page_views"),
                "not a whole number",
            ),
            (
                "s7,c\u{7}1,2024-01-05T10:00:00Z,10,1,mobile",
                Some("customer_id"),
                "control characters",
            ),
            ("s8,c1,2024-01-05T10:00:00Z,604800,1000000,mobile", None, ""),
            (
                "s9,c1,2024-01-05T10:00:00Z,604801,1,mobile",
                Some("duration_s"),
                "above the bound for duration_s (604800)",
            ),
            (
                "s10,c1,2024-01-05T10:00:00Z,4294967296,1,mobile",
                Some("duration_s"),
                "above the bound for duration_s",
            ),
            (
                "s11,c1,2024-01-05T10:00:00Z,60,1000001,mobile",
                Some("page_views"),
                "above the bound for page_views (1000000)",
            ),
        ],
    );
}

#[test]
fn return_rules() {
    check(
        Kind::Return,
        "return_id,order_id,customer_id,event_time,amount,currency,reason",
        &[
            ("r1,o1,c1,2024-02-01,5.00,USD, damaged ", None, ""),
            ("r2,,c1,2024-02-01,5.00,USD,", Some("order_id"), "missing"),
            ("r3,o1,c1,2024-02-01,-5.00,USD,", Some("amount"), "negative"),
            ("r4,o1,c1,2024-02-01,1000000000000.00,USD,", None, ""),
            (
                "r5,o1,c1,2024-02-01,1000000000000.01,USD,",
                Some("amount"),
                "above the bound for amount (1000000000000 USD)",
            ),
        ],
    );
}

#[test]
fn customer_rules() {
    check(
        Kind::Customer,
        "customer_id,event_time,signup_date,country,plan",
        &[
            ("c1,2024-01-01,2024-01-01,de,pro", None, ""),
            ("c2,2024-01-01,,,", None, ""),
            (
                "c3,2024-01-01,yesterday,DE,pro",
                Some("signup_date"),
                "neither RFC 3339",
            ),
            ("c4,2024-01-01,2024-01-01,Germany,pro", Some("country"), "ISO 3166"),
        ],
    );
}

#[test]
fn recorded_at_column_must_not_precede_the_event() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(
        dir.path(),
        "o.csv",
        "order_id,customer_id,event_time,amount,currency,arrived\n\
         o1,c1,2024-01-05,1.00,USD,2024-01-06\n\
         o2,c1,2024-01-05,1.00,USD,2024-01-04\n\
         o3,c1,2024-01-05,1.00,USD,\n",
    );
    let store = Store::in_memory().expect("store");
    let run = ingest(
        &store,
        Kind::Order,
        Format::Csv,
        &path,
        RecordedAt::Column("arrived".into()),
    );
    assert_eq!((run.accepted, run.quarantined), (1, 2));
    let q = quarantined(&store, None).expect("quarantine");
    assert_eq!((q[0].line, q[0].field.as_str()), (3, "arrived"));
    assert!(
        q[0].reason.contains("after the time it was recorded"),
        "{}",
        q[0].reason
    );
    assert_eq!(
        (q[1].line, q[1].field.as_str(), q[1].reason.as_str()),
        (4, "arrived", "missing")
    );
}

/// Issue 12's reproducers: one order of 10^13 USD made every later snapshot fail ("amount
/// overflows"); two of 5·10^12 wrapped `lifetime_revenue` negative. Ingest now quarantines
/// them, naming the field and its bound, and the snapshot of what was accepted is right.
#[test]
fn amounts_that_poisoned_snapshots_are_quarantined() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(
        dir.path(),
        "o.csv",
        "order_id,customer_id,event_time,amount,currency\n\
         o1,c1,2024-01-05,10000000000000.00,USD\n\
         o2,c2,2024-01-05,5000000000000.00,USD\n\
         o3,c2,2024-01-06,5000000000000.00,USD\n\
         o4,c2,2024-01-07,12.50,USD\n",
    );
    let store = Store::in_memory().expect("store");
    let run = ingest(&store, Kind::Order, Format::Csv, &path, RecordedAt::EventTime);
    assert_eq!((run.accepted, run.quarantined), (1, 3));
    let q = quarantined(&store, Some(run.run)).expect("quarantine");
    assert_eq!(q.iter().map(|r| r.line).collect::<Vec<_>>(), [2, 3, 4]);
    for r in &q {
        assert_eq!(r.field, "amount");
        assert!(
            r.reason.contains("above the bound for amount (1000000000000 USD)"),
            "{}",
            r.reason
        );
    }
    let at = AsOf::new(Some(t("2024-02-01")), None);
    let (_, _, snap) = snapshot::create(&store, at).expect("snapshot");
    assert_eq!(snap.matrix.customers, ["c2"]);
    assert_eq!(snap.value("c2", "lifetime_revenue"), Some(12.5));
}
