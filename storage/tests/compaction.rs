//! Compaction merges a bucket's blocks into segments and changes no read: every per-customer
//! read and every scan as of (T, K) equals that of a log that was never compacted, the log
//! verifies, re-appends are still duplicates, erasure still tombstones. Killed at any write,
//! with any prefix of its unflushed writes on disk, a compaction changes no read either.

use std::path::Path;
use std::sync::Arc;

use cis_storage::block::bucket_of;
use cis_storage::envelope::subject_handle;
use cis_storage::kv::{Kv, MemKv, TreeName};
use cis_storage::log::MERGE_ABOVE;
use cis_storage::vault::Vault;
use cis_storage::{Compaction, NewEvent, StorageError, Store, Visibility};

/// Customers: several that share one bucket (so segments hold more than one customer's run),
/// and a few elsewhere.
fn customers() -> Vec<String> {
    let target = bucket_of(subject_handle("c0"));
    let mut same: Vec<String> = (1..)
        .map(|i| format!("c{i}"))
        .filter(|s| bucket_of(subject_handle(s)) == target)
        .take(4)
        .collect();
    same.insert(0, "c0".into());
    same.extend((0..6).map(|i| format!("other{i}")));
    same
}

/// Batch `b`'s events: each customer in two of three batches, recorded late now and then.
fn batch(b: i64, customers: &[String]) -> Vec<NewEvent> {
    customers
        .iter()
        .enumerate()
        .filter(|(c, _)| (b + *c as i64) % 3 != 0)
        .flat_map(|(c, subject)| {
            (0..2).map(move |i| NewEvent {
                kind: 1 + (i as u8 % 3),
                subject: subject.clone(),
                event_time: b * 100 + c as i64 * 3 + i,
                recorded_at: b * 100 + c as i64 * 3 + i + if b % 4 == 0 { 250 } else { 0 },
                body: vec![b as u8, c as u8, i as u8],
            })
        })
        .collect()
}

const BATCHES: i64 = 150;

fn visibilities() -> Vec<Visibility> {
    let mut out = vec![Visibility::ALL];
    for t in [150, 1_234, 2_600, 3_999] {
        for k in [t, t + 200, i64::MAX] {
            out.push(Visibility {
                event_time_max: t,
                recorded_max: k,
            });
        }
    }
    out
}

/// Everything a reader can ask: each customer's entries and a full scan, under every
/// visibility, and the verified head.
fn reads(store: &Store, customers: &[String]) -> Vec<String> {
    let log = store.log();
    let mut out = Vec::new();
    for vis in visibilities() {
        for c in customers {
            out.push(format!("{c} {vis:?} {:?}", log.subject_events(c, vis).expect("read")));
        }
        let mut scanned = Vec::new();
        log.scan(vis, |e| {
            scanned.push(format!(
                "{} {} {} {} {:?}",
                cis_storage::hex(e.id),
                e.subject,
                e.event_time,
                e.recorded_at,
                e.body
            ));
            Ok::<_, StorageError>(())
        })
        .expect("scan");
        scanned.sort();
        out.push(scanned.join("\n"));
    }
    let report = log.verify().expect("the log verifies");
    out.push(format!("{report:?}"));
    out
}

/// The most blocks any bucket holds.
fn most_blocks(kv: &MemKv) -> usize {
    let mut per_bucket = std::collections::BTreeMap::<Vec<u8>, usize>::new();
    kv.visit(TreeName::Blocks, &[], None, &mut |k, _| {
        *per_bucket.entry(k[..2].to_vec()).or_default() += 1;
        Ok(std::ops::ControlFlow::Continue(()))
    })
    .expect("visit");
    per_bucket.into_values().max().unwrap_or(0)
}

fn open(kv: &Arc<MemKv>, keys: &Path) -> Store {
    Store::from_kv(kv.clone(), Vault::open(keys).expect("vault")).expect("open")
}

fn append_all(store: &Store, customers: &[String], batches: std::ops::Range<i64>, compact: bool) {
    for b in batches {
        store
            .log()
            .append(batch(b, customers), b as u64, b * 1_000)
            .expect("append");
        if compact {
            store.log().compact(Compaction::AfterAppends).expect("compact");
        }
    }
}

#[test]
fn compaction_changes_no_read_and_keeps_the_blocks_per_bucket_few() {
    let customers = customers();
    let dir = tempfile::tempdir().expect("tempdir");
    let reference = open(&Arc::new(MemKv::default()), &dir.path().join("r"));
    append_all(&reference, &customers, 1..BATCHES + 1, false);
    let kv = Arc::new(MemKv::default());
    let store = open(&kv, &dir.path().join("keys"));
    append_all(&store, &customers, 1..BATCHES + 1, true);

    assert_eq!(reads(&store, &customers), reads(&reference, &customers));
    let tiered = most_blocks(&kv);
    assert!(
        tiered <= MERGE_ABOVE + 1,
        "{tiered} blocks in a bucket after {BATCHES} batches (merged once above {MERGE_ABOVE})"
    );
    assert!(
        most_blocks_of(&reference) > MERGE_ABOVE + 20,
        "the reference is not compacted"
    );

    let full = store.log().compact(Compaction::Full).expect("full");
    assert!(full.merges > 0, "{full:?}");
    assert_eq!(most_blocks(&kv), 1);
    assert_eq!(reads(&store, &customers), reads(&reference, &customers));

    // Re-appending is still idempotent, and erasure still tombstones, through segments.
    for b in 1..=BATCHES {
        let again = store.log().append(batch(b, &customers), 99, 0).expect("re-append");
        assert_eq!(again.appended, 0, "batch {b} again");
    }
    for s in [&reference, &store] {
        assert!(s.log().erase(&customers[1], 7).expect("erase") > 0);
    }
    assert_eq!(reads(&store, &customers), reads(&reference, &customers));
}

fn most_blocks_of(store: &Store) -> usize {
    // The reference's blocks: one per batch that touched the shared bucket.
    let c0 = store.log().subject_events("c0", Visibility::ALL).expect("read");
    let mut batches: Vec<u64> = c0
        .iter()
        .map(|e| match e {
            cis_storage::Entry::Live(ev) => ev.batch,
            cis_storage::Entry::Erased { batch, .. } => *batch,
        })
        .collect();
    batches.dedup();
    batches.len()
}

#[test]
fn a_compaction_killed_at_any_write_changes_no_read() {
    let customers = customers();
    let dir = tempfile::tempdir().expect("tempdir");
    let reference = open(&Arc::new(MemKv::default()), &dir.path().join("r"));
    append_all(&reference, &customers, 1..13, false);
    let expected = reads(&reference, &customers);
    for n in 0.. {
        let run = dir.path().join(format!("run-{n}"));
        std::fs::create_dir_all(&run).expect("dir");
        let kv = Arc::new(MemKv::default());
        let store = open(&kv, &run.join("keys"));
        append_all(&store, &customers, 1..13, false);
        kv.fail_writes_after(n).expect("limit");
        if store.log().compact(Compaction::Full).is_ok() {
            assert!(n > 4, "the compaction took only {n} writes");
            break;
        }
        drop(store);
        // None, half, or all of the compaction's writes so far reached the disk.
        let kept = [0, n as usize / 2, n as usize][(n % 3) as usize];
        kv.crash_keeping(kept).expect("crash");
        let store = open(&kv, &run.join("keys"));
        assert_eq!(
            reads(&store, &customers),
            expected,
            "killed at write {}, {kept} kept",
            n + 1
        );
        let again = store.log().append(batch(5, &customers), 99, 0).expect("re-append");
        assert_eq!(again.appended, 0, "killed at write {}: re-append", n + 1);
        store
            .log()
            .compact(Compaction::Full)
            .expect("compaction after the crash");
        assert_eq!(most_blocks(&kv), 1, "killed at write {}", n + 1);
        assert_eq!(
            reads(&store, &customers),
            expected,
            "killed at write {}, then compacted",
            n + 1
        );
    }
}
