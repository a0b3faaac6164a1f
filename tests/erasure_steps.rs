//! The erasure protocol, stopped at every write on the in-memory twin's crash mode: whatever
//! write a crash interrupts, reopening and erasing again finishes the one request, leaves none of
//! the customer's events or rows readable, and keeps the log's head. Deterministic, beside the
//! real SIGKILL runs of `tests/crash.rs` and the erasure tests of `tests/erasure.rs`.

use std::path::Path;
use std::sync::Arc;

use cis_core::event::Kind;
use cis_core::AsOf;
use cis_features::snapshot;
use cis_ingest::history::customer_events;
use cis_ingest::records;
use cis_ingest::source::Format;
use cis_ingest::RecordedAt;
use cis_ops::erasure::{self, Outcome};
use cis_storage::kv::MemKv;
use cis_storage::vault::Vault;
use cis_storage::{Entry, StorageError, Store, Visibility};

use crate::util::{ingest, t, write};

/// Orders of c1 and c2 (one bad row each, quarantined) and a snapshot holding both, flushed.
fn prepared(dir: &Path) -> (Arc<MemKv>, Store) {
    let orders = write(
        dir,
        "orders.csv",
        "order_id,customer_id,event_time,amount,currency\no1,c1,2024-02-01,10.00,EUR\no2,c2,2024-02-02,12.50,EUR\n\
         o3,c1,2024-02-03,not-money,EUR\no4,c1,2024-03-01,7.25,EUR\no5,c2,2024-03-02,bad,EUR\n",
    );
    let kv = Arc::new(MemKv::default());
    let store = open(&kv, dir);
    let run = ingest(&store, Kind::Order, Format::Csv, &orders, RecordedAt::EventTime);
    assert_eq!(run.quarantined, 2);
    snapshot::create(&store, AsOf::new(Some(t("2024-06-01")), None)).expect("snapshot");
    store.flush().expect("flush");
    (kv, store)
}

fn open(kv: &Arc<MemKv>, dir: &Path) -> Store {
    Store::from_kv(kv.clone(), Vault::open(&dir.join("keys.bin")).expect("vault")).expect("open")
}

fn erase(store: &Store) -> Result<Outcome, erasure::ErasureError> {
    erasure::erase(
        store,
        "c1",
        "data-subject request",
        "test",
        cis_core::time::Timestamp::from_micros(5),
    )
}

/// Nothing of c1 is readable, c2 is untouched, and exactly one request, completed, erased c1.
fn assert_erased(store: &Store, head: cis_storage::Head, at_write: u64) {
    let ctx = format!("crash at write {at_write}");
    let report = store.log().verify().unwrap_or_else(|e| panic!("{ctx}: {e}"));
    assert_eq!((report.head, report.erased), (head, 2), "{ctx}");
    let c1 = store.log().subject_events("c1", Visibility::ALL).expect("read");
    assert!(
        c1.len() == 2 && c1.iter().all(|e| matches!(e, Entry::Erased { request: 1, .. })),
        "{ctx}: {c1:?}"
    );
    store
        .log()
        .scan(Visibility::ALL, |e| {
            assert_ne!(e.subject, "c1", "{ctx}");
            Ok::<_, StorageError>(())
        })
        .expect("scan");
    assert!(customer_events(store, "c1", AsOf::new(None, None))
        .expect("history")
        .iter()
        .all(|v| v.payload.is_none()));
    assert_eq!(
        customer_events(store, "c2", AsOf::new(None, None)).expect("c2").len(),
        1
    );
    let rows = records::quarantined(store, None).expect("quarantine");
    assert_eq!(
        rows.iter().map(|q| q.customer.as_deref()).collect::<Vec<_>>(),
        [Some("c2")],
        "{ctx}"
    );
    let requests = erasure::requests(store).expect("requests");
    assert_eq!(requests.len(), 1, "{ctx}: {requests:?}");
    assert!(requests[0].completed_at.is_some(), "{ctx}");
    assert_eq!(
        (requests[0].artifacts.len(), requests[0].quarantined_rows),
        (1, 1),
        "{ctx}"
    );
    for a in store.artifacts().list(snapshot::KIND, i64::MAX).expect("list") {
        let (_, snap) = snapshot::load(store, &a.hash).expect("load");
        assert!(
            !snap.matrix.customers.iter().any(|c| c == "c1"),
            "{ctx}: c1 still in a snapshot"
        );
    }
}

#[test]
fn an_erasure_crashed_at_any_write_is_finished_by_the_next_erase() {
    for n in 0.. {
        let dir = tempfile::tempdir().expect("tempdir");
        let (kv, store) = prepared(dir.path());
        let head = store.log().head().expect("head");
        kv.fail_writes_after(n).expect("limit");
        if erase(&store).is_ok() {
            assert!(n >= 8, "the erasure took only {n} writes");
            assert_erased(&store, head, n + 1);
            break;
        }
        drop(store);
        kv.crash().expect("crash");

        let store = open(&kv, dir.path());
        match erase(&store).unwrap_or_else(|e| panic!("erasing after a crash at write {}: {e}", n + 1)) {
            Outcome::Erased(r) => assert_eq!(r.request, 1, "crash at write {}", n + 1),
            other => panic!("crash at write {}: {other:?}", n + 1),
        }
        assert_erased(&store, head, n + 1);
        // Once finished, erasing again is a no-op that says so.
        assert!(matches!(erase(&store), Ok(Outcome::AlreadyErased { .. })));
    }
}
