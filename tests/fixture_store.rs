//! The store of format 1 frozen under `fixtures/store-v1` (made once by
//! `fixtures/make-store-v1.sh`, never regenerated) reads with today's code: the log verifies to
//! the head it was written with, the ledgers verify, and every artifact re-derives from its
//! parents to the very hash it is stored under. A change of the on-disk format must keep this
//! test green through a migration (format 2 gave the bincode records versions: opening the copy
//! migrates it, and it opens again as format 2). Appended to and compacted, its old blocks merge
//! with the blocks of today's format and read as they did.

use cis_models::promotion::Promotions;
use cis_ops::{audit, erasure};
use cis_storage::{hex, Compaction, EventLog, NewEvent, StorageError, Store, Visibility};

use crate::util::{copy_dir, fixture};

const HEAD: &str = "8df9ac8de18f11cc664e55965eb4824133fcc68a91b7fa3309d64a88c4a1d52f";

/// Every artifact the fixture holds, by kind, as `make-store-v1.sh` printed them.
const ARTIFACTS: &[(&str, &str)] = &[
    (
        "snapshot",
        "fcf0a61841f969669bfe098658515889954b33d0dee682cbaeaebd8924fd981a",
    ),
    (
        "snapshot",
        "9b510498ea623c65561499e5772e05de5f7e414b01beb58606b7724d9bf15dae",
    ),
    (
        "model/churn",
        "5dc4dc16b72e82536afc1555f4907300177e34040868c7213708f99c3b450e35",
    ),
    (
        "model/clv",
        "d9f371fda86d2462369326cc770fe1a04bcf7e031710182c8518598e4e623335",
    ),
    (
        "model/segments",
        "35042bce8e5bb5b876d1c501684808f0266ff5792dbfd6a923f3e9b3813265fb",
    ),
    (
        "scores",
        "f67a85be23408fdc7d6f97fae4ad534ab2829b9d5b1b476d19ad6dde09a31573",
    ),
];

#[test]
fn the_format_1_store_verifies_and_re_derives_every_artifact_hash() {
    // Opening a sled database writes to it: work on a copy, never on the committed files.
    let dir = tempfile::tempdir().expect("tempdir");
    copy_dir(&fixture("store-v1"), dir.path());
    let store = Store::open(dir.path()).expect("today's code opens the format-1 store");
    assert!(
        dir.path().join("records").is_dir() && dir.path().join("db").is_dir(),
        "its one database was split into the log's and the records'"
    );

    let log = store.log().verify().expect("the log verifies");
    assert_eq!(hex(&log.head), HEAD);
    assert_eq!((log.batches, log.events, log.erased), (1, 6919, 2));
    assert_eq!(log.erasures.into_iter().collect::<Vec<_>>(), vec![(1, 2)]);

    let requests = erasure::requests(&store).expect("erasure requests");
    assert_eq!(requests.len(), 1);
    assert_eq!((requests[0].request, requests[0].customer.as_str()), (1, "0007"));
    let promotions = Promotions::open(&store).expect("promotions");
    assert_eq!(promotions.verify().expect("read").expect("chain intact").records, 1);

    let mut stored = Vec::new();
    for kind in ["snapshot", "model/churn", "model/clv", "model/segments", "scores"] {
        for a in store.artifacts().list(kind, i64::MAX).expect("list") {
            let node = audit::audit(&store, &a.hash).expect("audit");
            let mut tree = String::new();
            node.render(0, &mut tree);
            assert!(node.all_identical(), "{kind} does not re-derive:\n{tree}");
            stored.push((kind, hex(&a.hash)));
        }
    }
    let mut expected: Vec<(&str, String)> = ARTIFACTS.iter().map(|(k, h)| (*k, h.to_string())).collect();
    stored.sort();
    expected.sort();
    assert_eq!(
        stored, expected,
        "the fixture's artifacts, under the names they were stored with"
    );

    drop(promotions);
    drop(store);
    let again = Store::open(dir.path()).expect("the migrated store opens again");
    assert_eq!(hex(&again.log().verify().expect("the log still verifies").head), HEAD);
    for (kind, h) in ARTIFACTS {
        let found = again.artifacts().list(kind, i64::MAX).expect("list");
        let a = found
            .iter()
            .find(|a| hex(&a.hash) == *h)
            .expect("still listed under its name");
        let stored = again.artifacts().get(&a.hash).expect("read").expect("stored");
        assert_eq!(hex(&stored.hash), *h);
    }
}

#[test]
fn the_format_1_stores_old_blocks_merge_with_todays_and_read_as_before() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_dir(&fixture("store-v1"), dir.path());
    let store = Store::open(dir.path()).expect("opens");
    let log = store.log();
    let events = |log: &EventLog| {
        let mut all = Vec::new();
        log.scan(Visibility::ALL, |e| {
            all.push((*e.id, e.subject.to_string(), e.event_time, e.body.to_vec()));
            Ok::<_, StorageError>(())
        })
        .expect("scan");
        all.sort();
        all
    };
    let before = events(log);
    let subject = before.first().expect("a live event").1.clone();

    // Today's blocks (tails of envelopes, chains of places) beside the format-1 ones (whole
    // envelopes, a chain of ids), then merged with them into segments.
    let new = NewEvent {
        kind: 1,
        subject: subject.clone(),
        event_time: 1_000_000,
        recorded_at: 2_000_000,
        body: b"appended today".to_vec(),
    };
    let out = log.append(vec![new.clone()], 2, 0).expect("append");
    assert_eq!(out.appended, 1);
    log.compact(Compaction::Full).expect("compact");
    let report = log.verify().expect("the log verifies after the merge");
    assert_eq!((report.batches, report.events, report.erased), (2, 6920, 2));
    assert_eq!(report.head, out.head);

    let mut expected = before.clone();
    let id = cis_storage::envelope::event_id(&new.envelope().expect("envelope"));
    expected.push((id, subject.clone(), new.event_time, new.body.clone()));
    expected.sort();
    assert_eq!(
        events(log),
        expected,
        "every old event reads as before, beside the new one"
    );
    let theirs = log.subject_events(&subject, Visibility::ALL).expect("read");
    assert_eq!(theirs.len(), before.iter().filter(|e| e.1 == subject).count() + 1);
}
