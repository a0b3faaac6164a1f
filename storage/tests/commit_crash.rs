//! The commit protocol, stopped at every write: an append of a batch killed after any number of
//! writes leaves, once reopened, the batch wholly visible or wholly absent, a log that verifies,
//! and a re-append that adds exactly what is missing. Deterministic, on the in-memory twin's
//! crash mode (the real SIGKILL runs are `tests/crash.rs`).

use std::path::Path;
use std::sync::Arc;

use cis_storage::kv::MemKv;
use cis_storage::vault::Vault;
use cis_storage::{NewEvent, StorageError, Store, Visibility};

fn events(batch: u8, customers: std::ops::Range<u8>) -> Vec<NewEvent> {
    customers
        .flat_map(|c| {
            (0..3).map(move |i| NewEvent {
                kind: 1,
                subject: format!("c{c}"),
                event_time: i64::from(i) * 10 + i64::from(batch),
                recorded_at: i64::from(batch),
                body: vec![batch, c, i],
            })
        })
        .collect()
}

fn open(kv: &Arc<MemKv>, keys: &Path) -> Store {
    Store::from_kv(kv.clone(), Vault::open(keys).expect("vault")).expect("open")
}

/// Ids (as hex) of every event a full scan reads, sorted.
fn visible(store: &Store) -> Vec<String> {
    let mut ids = Vec::new();
    store
        .log()
        .scan(Visibility::ALL, |e| {
            ids.push(cis_storage::hex(e.id));
            Ok::<_, StorageError>(())
        })
        .expect("scan");
    ids.sort();
    ids
}

#[test]
fn an_append_crashed_at_any_write_is_all_or_nothing_and_re_appends_once() {
    // Batch 2 holds customers already known (c2, c3) and new ones (c4, c5): new keys too.
    let (first, second) = (events(1, 0..4), events(2, 2..6));
    let reference = Store::in_memory().expect("store");
    reference.log().append(first.clone(), 1, 0).expect("append");
    let after_first = visible(&reference);
    reference.log().append(second.clone(), 2, 0).expect("append");
    let (after_both, head_both) = (visible(&reference), reference.log().head().expect("head"));

    for n in 0.. {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = dir.path().join("keys.bin");
        let kv = Arc::new(MemKv::default());
        let store = open(&kv, &keys);
        store.log().append(first.clone(), 1, 0).expect("append batch 1");
        kv.fail_writes_after(n).expect("limit");
        if store.log().append(second.clone(), 2, 0).is_ok() {
            assert!(n >= 5, "the append took only {n} writes");
            break;
        }
        drop(store);
        kv.crash().expect("crash");

        let store = open(&kv, &keys);
        let log = store.log();
        let report = log.verify().unwrap_or_else(|e| panic!("crash at write {}: {e}", n + 1));
        // The batch is acknowledged only by its final flush: a crash before it loses it whole.
        assert_eq!(report.batches, 1, "crash at write {}", n + 1);
        assert_eq!(visible(&store), after_first, "crash at write {}", n + 1);
        let again = log.append(second.clone(), 2, 0).expect("re-append");
        assert_eq!((again.appended, again.duplicates), (12, 0), "crash at write {}", n + 1);
        assert_eq!(log.verify().expect("verifies").head, head_both);
        assert_eq!(visible(&store), after_both);
        let twice = log.append(second.clone(), 2, 0).expect("append again");
        assert_eq!(
            (twice.appended, twice.batch),
            (0, None),
            "a second re-append adds nothing"
        );
    }

    // Crashed right after the acknowledgement, the batch is wholly there.
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = dir.path().join("keys.bin");
    let kv = Arc::new(MemKv::default());
    let store = open(&kv, &keys);
    store.log().append(first, 1, 0).expect("append");
    store.log().append(second.clone(), 2, 0).expect("append");
    drop(store);
    kv.crash().expect("crash");
    let store = open(&kv, &keys);
    assert_eq!(store.log().verify().expect("verifies").head, head_both);
    assert_eq!(visible(&store), after_both);
    let again = store.log().append(second, 2, 0).expect("re-append");
    assert_eq!((again.appended, again.batch), (0, None));
}
