//! Erasure: the log still verifies, snapshots equal a log that never had the customer, nothing
//! of the customer's payloads is readable from the store's files, audits say "erasure".

use cis_core::event::Kind;
use cis_core::time::Timestamp;
use cis_core::AsOf;
use cis_features::snapshot::{self, Replay};
use cis_ingest::history::customer_events;
use cis_ingest::records;
use cis_ingest::source::Format;
use cis_ingest::RecordedAt;
use cis_ops::audit::{self, Verdict};
use cis_ops::erasure::{self, ErasureError, Outcome};
use cis_storage::{envelope, Entry, NewEvent, Store, Visibility};
use proptest::prelude::*;

use crate::features::{specs, to_event};
use crate::ingest::walk;
use crate::util::{cdnow_models, cdnow_store, ingest, t, us, write};

fn store_of(batches: &[&[NewEvent]]) -> Store {
    let store = Store::in_memory().expect("store");
    for (i, b) in batches.iter().enumerate().filter(|(_, b)| !b.is_empty()) {
        store.log().append(b.to_vec(), i as u64 + 1, 0).expect("append");
    }
    store
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// For any log and customer: erase, then the log verifies with its head unchanged, fresh
    /// snapshots equal those of a log that never had the customer, and a snapshot stored before
    /// the erasure is redacted to exactly that.
    #[test]
    fn erasing_a_customer_is_as_if_it_never_was(
        s in specs(80), split in 0usize..80, who in 0u8..5, t_day in 0i64..160, k_lag in 0i64..30,
    ) {
        let victim = format!("c{who}");
        let events: Vec<NewEvent> = s.iter().map(to_event).collect();
        let (a, b) = events.split_at(split.min(events.len()));
        let keep = |v: &[NewEvent]| v.iter().filter(|e| e.subject != victim).cloned().collect::<Vec<_>>();
        let with = store_of(&[a, b]);
        let without = store_of(&[&keep(a), &keep(b)]);
        let at = AsOf::new(Some(Timestamp::from_day(t_day)), Some(Timestamp::from_day(t_day + k_lag)));
        let (stored, ..) = snapshot::create(&with, at).expect("snapshot");
        let held = snapshot::load(&with, &stored).expect("load").1.matrix.customers.contains(&victim);
        let head = with.log().head().expect("head");

        let request = match erasure::erase(&with, &victim, "data-subject request", "test", us(0)) {
            Err(ErasureError::UnknownCustomer(_)) => {
                prop_assert!(events.iter().all(|e| e.subject != victim));
                return Ok(());
            }
            Ok(Outcome::Erased(r)) => r.request,
            other => panic!("unexpected outcome {other:?}"),
        };
        let report = with.log().verify().expect("the log verifies after erasure");
        prop_assert_eq!(report.head, head);
        let erased = with.log().subject_events(&victim, Visibility::ALL).expect("read");
        let all_tombstones = erased.iter().all(|e| matches!(e, Entry::Erased { request: r, .. } if *r == request));
        prop_assert!(all_tombstones);
        prop_assert_eq!(report.erased, erased.len() as u64);
        prop_assert_eq!(report.erasures.get(&request).copied(), Some(erased.len() as u64));

        for at in [at, AsOf::new(Some(Timestamp::from_micros(i64::MAX / 2)), None)] {
            prop_assert_eq!(
                snapshot::compute(&with, at).expect("with"),
                snapshot::compute(&without, at).expect("without")
            );
        }
        let (_, redacted) = snapshot::load(&with, &stored).expect("load");
        prop_assert_eq!(&redacted, &snapshot::compute(&without, at).expect("without"));
        let replay = snapshot::replay(&with, &stored).expect("replay");
        if held {
            prop_assert_eq!(replay, Replay::Erased { requests: vec![request], customers: vec![victim.clone()] });
        } else {
            prop_assert_eq!(replay, Replay::Identical);
        }
        // Erasing twice is a no-op that says so.
        let again = erasure::erase(&with, &victim, "again", "test", us(1)).expect("second erase");
        prop_assert_eq!(again, Outcome::AlreadyErased { customer: victim, requests: vec![request] });
    }
}

/// The 32-byte key `keys.bin` holds for `customer` (see storage/src/vault.rs for the layout).
fn key_of(store_dir: &std::path::Path, customer: &str) -> [u8; 32] {
    let bytes = std::fs::read(store_dir.join("keys.bin")).expect("keys.bin");
    let handle = envelope::subject_handle(customer).to_be_bytes();
    bytes[8..]
        .chunks_exact(48)
        .find(|r| r[..16] == handle)
        .map(|r| r[16..].try_into().expect("32 bytes"))
        .expect("the customer has a key")
}

pub fn files_containing(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    walk(dir)
        .into_iter()
        .filter(|p| {
            let bytes = std::fs::read(p).expect("read store file");
            bytes.windows(needle.len()).any(|w| w == needle)
        })
        .collect()
}

#[test]
fn an_erased_customers_marker_and_key_are_in_no_store_file() {
    const MARKER: &str = "MARKER-7f3a9c-ONLY-IN-C1";
    let dir = tempfile::tempdir().expect("tempdir");
    let customers = write(
        dir.path(),
        "customers.csv",
        &format!(
            "customer_id,event_time,signup_date,country,plan\nc1,2024-01-01,2024-01-01,DE,{MARKER}\n\
             c2,2024-01-01,2024-01-02,FR,free\nc1,2024-01-05,not-a-date,DE,{MARKER}\n"
        ),
    );
    let orders = write(
        dir.path(),
        "orders.csv",
        "order_id,customer_id,event_time,amount,currency\no1,c1,2024-02-01,10.00,EUR\no2,c2,2024-02-02,12.50,EUR\n\
         o3,c1,2024-02-03,not-money,EUR\no4,c1,2024-03-01,7.25,EUR\no5,c2,2024-03-02,c1,EUR\n",
    );
    let store_dir = dir.path().join("store");
    let key = {
        let store = Store::open(&store_dir).expect("store");
        let run = ingest(&store, Kind::Customer, Format::Csv, &customers, RecordedAt::EventTime);
        assert_eq!(run.quarantined, 1, "the second c1 row has a bad signup date");
        let run = ingest(&store, Kind::Order, Format::Csv, &orders, RecordedAt::EventTime);
        assert_eq!(run.quarantined, 2, "o3 and o5 have bad amounts");
        snapshot::create(&store, AsOf::new(Some(t("2024-06-01")), None)).expect("snapshot");
        let events = customer_events(&store, "c1", AsOf::new(None, None)).expect("read");
        assert!(
            serde_json::to_string(&events).expect("json").contains(MARKER),
            "the marker was stored"
        );
        let key = key_of(&store_dir, "c1");
        let Outcome::Erased(r) = erasure::erase(&store, "c1", "GDPR art. 17 request #42", "dpo", us(5)).expect("erase")
        else {
            panic!("c1 had events");
        };
        assert_eq!((r.events, r.artifacts.len(), r.quarantined_rows), (3, 1, 2));
        let left = records::quarantined(&store, None).expect("quarantine");
        assert_eq!(
            left.iter().map(|q| q.customer.as_deref()).collect::<Vec<_>>(),
            [Some("c2")],
            "c2's bad row stays although its amount reads 'c1'"
        );
        let views = customer_events(&store, "c1", AsOf::new(None, None)).expect("read");
        assert!(views
            .iter()
            .all(|v| v.payload.is_none() && v.erasure_request == Some(r.request)));
        assert_eq!(
            customer_events(&store, "c2", AsOf::new(None, None)).expect("c2").len(),
            2
        );
        key
    };
    // What `cis erase` does once the store is closed: superseded pages (the removed quarantine
    // rows, the redacted snapshot row) leave the database files.
    Store::compact(&store_dir).expect("compact");
    assert_eq!(
        files_containing(&store_dir, MARKER.as_bytes()),
        Vec::<std::path::PathBuf>::new()
    );
    assert_eq!(
        files_containing(&store_dir, &key),
        Vec::<std::path::PathBuf>::new(),
        "the key was destroyed"
    );
    let store = Store::open(&store_dir).expect("reopen");
    let report = store.log().verify().expect("verifies after reopening");
    assert_eq!((report.events, report.erased), (5, 3));
}

#[test]
fn audits_after_erasure_say_erasure_and_still_catch_tampering() {
    let store = cdnow_store();
    let (snap, clv, seg) = cdnow_models(&store);
    let (scores, ..) = cis_models::scores::score(&store, &snap, &[clv, seg]).expect("score");
    let (early, ..) = snapshot::create(&store, AsOf::new(Some(t("1997-06-30")), None)).expect("snapshot");
    let (drift, ..) = cis_ops::monitor::drift::create(&store, &early, &snap).expect("drift");
    assert!(audit::audit(&store, &drift).expect("audit").all_identical());
    let Outcome::Erased(r) = erasure::erase(&store, "0001", "request", "dpo", us(0)).expect("erase") else {
        panic!("0001 bought CDs");
    };
    assert_eq!(r.artifacts.len(), 3, "both snapshots and the score run held 0001");
    let tree = audit::audit(&store, &scores).expect("audit");
    let erased = |v: &Verdict| matches!(v, Verdict::Erased { requests, customers, .. } if requests == &[r.request] && customers == &["0001"]);
    assert!(erased(&tree.verdict), "{tree:#?}");
    assert!(tree.all_accounted_for() && !tree.all_identical());
    let mut text = String::new();
    tree.render(0, &mut text);
    assert!(
        text.contains("differs because of erasure request 1 (erased customers: 0001)"),
        "{text}"
    );
    assert!(!text.contains("TAMPERED"), "{text}");
    let tree = audit::audit(&store, &drift).expect("audit");
    assert!(
        erased(&tree.verdict),
        "a drift report over redacted snapshots: {tree:#?}"
    );
    let (_, set) = cis_models::scores::load_scores(&store, &scores).expect("scores");
    assert!(set.rows.iter().all(|row| row.customer_id != "0001"));

    // Tamper with the redacted snapshot: that is still tampering.
    let mut a = store.artifacts().get(&snap).expect("get").expect("snapshot");
    let last = a.body.len() - 1;
    a.body[last] ^= 1;
    store.artifacts().overwrite(&a).expect("tamper");
    let tree = audit::audit(&store, &snap).expect("audit");
    assert!(matches!(tree.verdict, Verdict::Tampered { .. }), "{tree:#?}");
}

/// Runs `cis` on the store: whether it succeeded, and its stdout then stderr.
fn cis_text(store: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = crate::util::cis(store, args);
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn the_cli_erases_lists_and_refuses_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let orders = write(
        dir.path(),
        "orders.csv",
        "order_id,customer_id,event_time,amount,currency\no1,c1,2024-02-01,10.00,EUR\no2,c2,2024-02-02,12.50,EUR\n",
    );
    let store = dir.path().join("store");
    let cis = |args: &[&str]| cis_text(&store, args);
    let file = orders.to_str().expect("utf-8 path");
    assert!(cis(&["ingest", "orders", file, "--recorded-at", "event-time"]).0);
    let (ok, text) = cis(&["erase", "--customer", "nobody", "--reason", "x"]);
    assert!(!ok && text.contains("no customer 'nobody'"), "{text}");
    let (ok, text) = cis(&["erase", "--customer", "c1", "--reason", "request 42", "--by", "dpo"]);
    assert!(
        ok && text.contains("erasure request 1: 1 events of customer 'c1' erased"),
        "{text}"
    );
    let (ok, text) = cis(&["erase", "--customer", "c1", "--reason", "again"]);
    assert!(ok && text.contains("already erased (request 1)"), "{text}");
    let (ok, text) = cis(&["events", "--customer", "c1"]);
    assert!(ok, "{text}");
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.starts_with("erased: request 1  customer 'c1'  1 events  by dpo"),
        "{text}"
    );
    let (ok, text) = cis(&["erase", "--customer", "c2", "--reason", "request 43", "--no-compact"]);
    assert!(
        ok && text.contains("erasure request 2: 1 events of customer 'c2'"),
        "requests are numbered in order: {text}"
    );
    assert!(
        store.join("compaction-owed").exists(),
        "--no-compact leaves the rewrite owed"
    );
    let (ok, text) = cis(&["erase", "--customer", "c2", "--reason", "request 43"]);
    assert!(
        ok && text.contains(
            "already erased (request 2): records database rewritten, which an interrupted erasure still owed"
        ),
        "the next erase does the rewrite still owed (as after a kill before it): {text}"
    );
    assert!(!store.join("compaction-owed").exists());
    let (ok, text) = cis(&["erasures"]);
    assert!(
        ok && text.contains("reason: request 42") && text.contains("2 erasure request(s)"),
        "{text}"
    );
    let (ok, text) = cis(&["log", "verify"]);
    assert!(
        ok && text.contains("2 events in 1 batches (2 erased by requests 1, 2)"),
        "{text}"
    );
}

#[test]
fn a_file_of_customers_is_one_request_each_and_one_rewrite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let orders = write(
        dir.path(),
        "orders.csv",
        "order_id,customer_id,event_time,amount,currency\n\
         o1,c1,2024-02-01,10.00,EUR\no2,c2,2024-02-02,12.50,EUR\no3,c2,2024-02-03,1.00,EUR\no4,c3,2024-02-04,2.00,EUR\n",
    );
    let list = write(dir.path(), "requests.txt", "# ticket 99\nc1\n\nnobody\n  c2  \n");
    let store = dir.path().join("store");
    let cis = |args: &[&str]| cis_text(&store, args);
    assert!(
        cis(&[
            "ingest",
            "orders",
            orders.to_str().expect("utf-8"),
            "--recorded-at",
            "event-time"
        ])
        .0
    );
    let (ok, text) = cis(&[
        "erase",
        "--customers",
        list.to_str().expect("utf-8"),
        "--reason",
        "ticket 99",
    ]);
    assert!(!ok, "an unknown id in the file fails the command: {text}");
    assert!(
        text.contains("no customer 'nobody'") && text.contains("1 of 3 customers not found"),
        "{text}"
    );
    assert!(
        text.contains("erasure request 1: 1 events of customer 'c1'")
            && text.contains("erasure request 2: 2 events of customer 'c2'"),
        "the others are erased all the same, each its own request: {text}"
    );
    assert!(text.contains("database rewritten"), "{text}");
    assert!(!store.join("compaction-owed").exists(), "the one rewrite is done");
    let (ok, text) = cis(&["log", "verify"]);
    assert!(
        ok && text.contains("4 events in 1 batches (3 erased by requests 1, 2)"),
        "{text}"
    );
    let (ok, text) = cis(&["events", "--customer", "c3"]);
    assert!(ok && text.contains("o4"), "c3 was not in the file: {text}");
    let empty = write(dir.path(), "empty.txt", "# none\n");
    let (ok, text) = cis(&["erase", "--customers", empty.to_str().expect("utf-8"), "--reason", "x"]);
    assert!(!ok && text.contains("no customer ids in it"), "{text}");
}
