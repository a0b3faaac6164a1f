//! A store directory: the event log plus small append-only journals and counters.
//!
//! Layout of a store directory: `db/` (sled: the log), `records/` (sled: artifacts, journals
//! and ledgers; see [`crate::layout`]), `keys.bin` (see [`crate::vault`]), `lock` (see
//! [`crate::lock`]) and, while an erasure's rewrite of the records database is still to be
//! done, `compaction-owed` (see [`Store::owe_compaction`]).

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::artifacts::Artifacts;
use crate::bodies::{Bodies, FileBodies, KvBodies};
use crate::error::{io_err, Result, StorageError};
use crate::kv::{self, Kv, MemKv, SplitKv, TreeName};
use crate::layout::{self, Compacted, ARTIFACT_BODIES, LOG_DB, RECORDS_DB, VALUE_LOG};
use crate::ledger::Ledger;
use crate::lock::StoreLock;
use crate::log::EventLog;
use crate::vault::Vault;

pub struct Store {
    kv: Arc<dyn Kv>,
    bodies: Arc<dyn Bodies>,
    log: EventLog,
    dir: Option<PathBuf>,
    /// See [`Store::companion`].
    companions: Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
    /// Declared last: released after the database is closed.
    _lock: Option<StoreLock>,
}

impl Store {
    /// Opens (creating if needed) the store in `dir`. Fails with [`StorageError::Busy`] if
    /// another process holds it open.
    pub fn open(dir: &Path) -> Result<Self> {
        Store::open_as(dir, "")
    }

    /// [`Store::open`], telling a process refused meanwhile what holds the store (`holder`,
    /// e.g. "the cis API server"; empty: "another process").
    pub fn open_as(dir: &Path, holder: &str) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let lock = StoreLock::acquire(dir, holder)?;
        layout::prepare(dir)?;
        let kv: Arc<dyn Kv> = Arc::new(SplitKv::open(
            &dir.join(LOG_DB),
            &dir.join(RECORDS_DB),
            &dir.join(VALUE_LOG),
        )?);
        let bodies = Arc::new(FileBodies::open(&dir.join(ARTIFACT_BODIES))?);
        let vault = Vault::open(&dir.join("keys.bin"))?;
        let log = EventLog::open(kv.clone(), vault)?;
        Ok(Store {
            kv,
            bodies,
            log,
            dir: Some(dir.to_path_buf()),
            companions: Mutex::default(),
            _lock: Some(lock),
        })
    }

    /// A store that lives only in memory: for tests and dry runs.
    pub fn in_memory() -> Result<Self> {
        Store::from_kv(Arc::new(MemKv::default()), Vault::in_memory())
    }

    /// A store over `kv` and `vault` with no directory (no lock, no compaction): reopening a
    /// [`MemKv`] after [`MemKv::crash`] runs the same recovery a directory's store runs on open.
    pub fn from_kv(kv: Arc<dyn Kv>, vault: Vault) -> Result<Self> {
        let log = EventLog::open(kv.clone(), vault)?;
        Ok(Store {
            bodies: Arc::new(KvBodies::new(kv.clone())),
            kv,
            log,
            dir: None,
            companions: Mutex::default(),
            _lock: None,
        })
    }

    pub fn log(&self) -> &EventLog {
        &self.log
    }

    pub fn artifacts(&self) -> Artifacts<'_> {
        Artifacts {
            kv: self.kv.as_ref(),
            bodies: self.bodies.as_ref(),
        }
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    pub fn size_on_disk(&self) -> Result<u64> {
        Ok(self.kv.size_on_disk()? + self.bodies.size_on_disk()?)
    }

    /// Increments and returns a named counter (starting at 1), durably.
    pub fn next_id(&self, counter: &str) -> Result<u64> {
        let key = format!("counter/{counter}");
        let current = match self.kv.get(TreeName::Meta, key.as_bytes())? {
            Some(v) => u64::from_be_bytes(
                v.as_slice()
                    .try_into()
                    .map_err(|_| StorageError::Corrupt(key.clone()))?,
            ),
            None => 0,
        };
        let next = current + 1;
        self.kv.insert(TreeName::Meta, key.as_bytes(), &next.to_be_bytes())?;
        self.kv.flush()?;
        Ok(next)
    }

    /// Writes a record into a journal (an append-only tree the caller keys), durably.
    pub fn journal_put(&self, journal: &'static str, key: &[u8], value: &[u8]) -> Result<()> {
        self.kv.insert(TreeName::Journal(journal), key, value)
    }

    /// Removes a journal record (erasure removes a customer's quarantined rows).
    pub fn journal_remove(&self, journal: &'static str, key: &[u8]) -> Result<()> {
        self.kv.remove(TreeName::Journal(journal), key)
    }

    /// Visits a journal's records whose key starts with `prefix`, in key order. The visit stops
    /// at `f`'s first error, which is returned as it is (of the caller's type `E`).
    pub fn journal_visit<E: From<StorageError>>(
        &self,
        journal: &'static str,
        prefix: &[u8],
        f: impl FnMut(&[u8], &[u8]) -> Result<ControlFlow<()>, E>,
    ) -> Result<(), E> {
        let end = prefix_end(prefix);
        kv::visit_typed(self.kv.as_ref(), TreeName::Journal(journal), prefix, end.as_deref(), f)
    }

    /// A hash-chained ledger (see [`crate::ledger`]). Keep one handle per ledger per process:
    /// appends through one handle are serialised, two handles would fork the chain.
    pub fn ledger(&self, name: &'static str) -> Result<Ledger> {
        Ledger::open(self.kv.clone(), name)
    }

    pub fn flush(&self) -> Result<()> {
        self.kv.flush()
    }

    /// The in-memory state a layer above keeps about this store (one value per type, made on
    /// first use and kept as long as the store): what must be one per store and not one per
    /// process, such as the API's token-cache generation or the access log's one writer. Two
    /// stores in one process share none of it. Use a type private to its module as the key.
    pub fn companion<T: Any + Send + Sync + Default>(&self) -> Arc<T> {
        let mut map = self.companions.lock().unwrap_or_else(|p| p.into_inner());
        let id = TypeId::of::<T>();
        if let Some(t) = map.get(&id).cloned().and_then(|any| any.downcast::<T>().ok()) {
            return t;
        }
        let t = Arc::new(T::default());
        map.insert(id, t.clone());
        t
    }
}

impl Store {
    /// Rewrites the records database of the closed store in `dir` so its files hold only live
    /// values (see [`layout`]); the log's database is not touched: its superseded pages hold
    /// event payloads sealed under keys an erasure destroyed. Fails if the store is open.
    /// Clears the note of [`Store::owe_compaction`] once done.
    pub fn compact(dir: &Path) -> Result<Compacted> {
        let _lock = StoreLock::acquire(dir, "a store compaction")?;
        layout::prepare(dir)?;
        let compacted = layout::rewrite_records(dir)?;
        let owed = dir.join(COMPACTION_OWED);
        if owed.exists() {
            std::fs::remove_file(&owed).map_err(io_err(&owed))?;
            layout::sync_dir(dir)?;
        }
        Ok(compacted)
    }

    /// Notes durably that the records database must be rewritten by [`Store::compact`]: an
    /// erasure is about to remove rows that superseded pages will keep until then. The note outlives a
    /// crash (the rewrite runs while the store is closed, after the erasure), so whoever opens
    /// the store next can tell the rewrite is still owed. No-op in memory.
    pub fn owe_compaction(&self) -> Result<()> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let owed = dir.join(COMPACTION_OWED);
        if !owed.exists() {
            std::fs::File::create(&owed)
                .and_then(|f| f.sync_all())
                .map_err(io_err(&owed))?;
            layout::sync_dir(dir)?;
        }
        Ok(())
    }

    /// Whether the closed store in `dir` owes a [`Store::compact`] (see [`Store::owe_compaction`]).
    pub fn compaction_owed(dir: &Path) -> bool {
        dir.join(COMPACTION_OWED).exists()
    }
}

/// The file whose presence says a compaction is owed (empty).
const COMPACTION_OWED: &str = "compaction-owed";

/// The smallest key greater than every key starting with `prefix` (`None`: unbounded).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn companions_are_one_per_type_per_store() {
        #[derive(Default)]
        struct Count(std::sync::atomic::AtomicU64);
        #[derive(Default)]
        struct Other(std::sync::atomic::AtomicU64);
        let bump = |c: &Count| c.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let (a, b) = (Store::in_memory().expect("a"), Store::in_memory().expect("b"));
        assert_eq!(bump(&a.companion::<Count>()), 1);
        assert_eq!(bump(&a.companion::<Count>()), 2, "the same value on the same store");
        assert_eq!(bump(&b.companion::<Count>()), 1, "another store has its own");
        assert_eq!(a.companion::<Other>().0.load(std::sync::atomic::Ordering::SeqCst), 0);
        assert!(Arc::ptr_eq(&a.companion::<Count>(), &a.companion::<Count>()));
    }

    #[test]
    fn prefix_end_bounds_the_prefix() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 255]), Some(vec![2]));
        assert_eq!(prefix_end(&[255, 255]), None);
        assert_eq!(prefix_end(&[]), None);
    }

    #[test]
    fn compaction_keeps_every_value_and_drops_superseded_pages() {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = b"superseded-value-7f3a";
        {
            let store = Store::open(dir.path()).expect("open");
            store.journal_put("test", b"k", secret).expect("put");
            store.journal_put("test", b"keep", b"live").expect("put");
            store.flush().expect("flush");
            store.journal_remove("test", b"k").expect("remove");
            store.flush().expect("flush");
        }
        let report = Store::compact(dir.path()).expect("compact");
        assert_eq!(
            report.keys, 1,
            "only the live journal value is in the records database: {report:?}"
        );
        let store = Store::open(dir.path()).expect("reopen");
        let mut kept = Vec::new();
        store
            .journal_visit("test", &[], |k, v| {
                kept.push((k.to_vec(), v.to_vec()));
                Ok::<_, StorageError>(ControlFlow::Continue(()))
            })
            .expect("visit");
        assert_eq!(kept, vec![(b"keep".to_vec(), b"live".to_vec())]);
        drop(store);
        for f in crate::layout::tests::walk(dir.path()) {
            let bytes = std::fs::read(&f).expect("read");
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret),
                "{} still holds it",
                f.display()
            );
        }
        assert!(!dir.path().join("records.old").exists() && !dir.path().join("records.compacting").exists());
    }

    #[test]
    fn an_owed_compaction_is_noted_until_one_is_done() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        assert!(!Store::compaction_owed(dir.path()));
        store.owe_compaction().expect("owe");
        drop(store);
        // A crash here (or inside the rewrite) keeps the note for the next erasure.
        drop(Store::open(dir.path()).expect("reopen"));
        assert!(Store::compaction_owed(dir.path()));
        Store::compact(dir.path()).expect("compact");
        assert!(!Store::compaction_owed(dir.path()));
    }

    fn events(batch: u8) -> Vec<crate::NewEvent> {
        (0..40u8)
            .map(|i| crate::NewEvent {
                kind: 1,
                subject: format!("c{}", i % 7),
                event_time: i64::from(i),
                recorded_at: i64::from(batch),
                body: vec![batch, i],
            })
            .collect()
    }

    /// Every subject's entries, erasure marks included.
    fn history(store: &Store) -> Vec<Vec<crate::Entry>> {
        (0..7)
            .map(|c| {
                store
                    .log()
                    .subject_events(&format!("c{c}"), crate::Visibility::ALL)
                    .expect("read")
            })
            .collect()
    }

    /// The raw `blocks` values of the closed store in `dir`, as sled holds them.
    fn stored_blocks(dir: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
        kv::entries(&kv::SledKv::open(&dir.join(LOG_DB)).expect("open db"), TreeName::Blocks)
    }

    /// Turns the closed store in `dir` into what a format-5 build wrote: every block inline in
    /// sled and fixed-width, the chain inline too, no value log, the number 5.
    fn make_format_5(dir: &Path) {
        let split = SplitKv::open(&dir.join(LOG_DB), &dir.join(RECORDS_DB), &dir.join(VALUE_LOG)).expect("open");
        let trees = [TreeName::Blocks, TreeName::Chain];
        let inline = trees.map(|tree| kv::entries(&split, tree));
        drop(split);
        let db = kv::SledKv::open(&dir.join(LOG_DB)).expect("open db");
        for (k, v) in &inline[0] {
            let (_, key_batch) = crate::block::split_block_key(k).expect("a block key");
            let (span, records) = crate::block::decode(key_batch, v).expect("a block");
            let fixed = crate::block::encode_fixed(span, &records);
            db.insert(TreeName::Blocks, k, &fixed).expect("inline");
        }
        for (tree, entries) in trees.iter().zip(&inline).skip(1) {
            for (k, v) in entries {
                db.insert(*tree, k, v).expect("inline");
            }
        }
        db.insert(TreeName::Meta, b"format", &5u32.to_be_bytes())
            .expect("format 5");
        db.flush().expect("flush");
        drop(db);
        std::fs::remove_dir_all(dir.join(VALUE_LOG)).expect("no value log");
    }

    #[test]
    fn a_format_5_store_reads_its_inline_fixed_width_blocks_and_is_renumbered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        for batch in 1..=3 {
            store.log().append(events(batch), 1, 0).expect("append");
        }
        let (head, before) = (store.log().head().expect("head"), history(&store));
        drop(store);
        assert!(stored_blocks(dir.path())
            .iter()
            .all(|(_, v)| crate::vlog::is_pointer(v)));
        make_format_5(dir.path());
        assert!(stored_blocks(dir.path())
            .iter()
            .all(|(_, v)| !crate::vlog::is_pointer(v)));

        let store = Store::open(dir.path()).expect("a format-5 store opens");
        assert_eq!(
            (store.log().head().expect("head"), history(&store)),
            (head, before.clone())
        );
        assert_eq!(
            store.kv.get(TreeName::Meta, b"format").expect("get"),
            Some(crate::format::STORE_FORMAT.to_be_bytes().to_vec())
        );
        assert_eq!(store.kv.get(TreeName::Meta, b"upgrading").expect("get"), None);
        assert_eq!(store.log().verify().expect("verify").events, 120);
        // A new batch goes to the value log beside the inline blocks; a merge rewrites the
        // inline ones as pointers.
        store.log().append(events(4), 1, 0).expect("append");
        let mixed = history(&store);
        store.log().compact(crate::Compaction::Full).expect("compact");
        assert_eq!(history(&store), mixed);
        drop(store);
        assert!(stored_blocks(dir.path())
            .iter()
            .all(|(_, v)| crate::vlog::is_pointer(v)));
        let store = Store::open(dir.path()).expect("reopen");
        assert_eq!(history(&store), mixed);
    }

    #[test]
    fn an_erasure_rewrites_blocks_into_the_value_log_and_survives_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        store.log().append(events(1), 1, 0).expect("append");
        store.log().append(events(2), 1, 0).expect("append");
        let erased = store.log().erase("c3", 1).expect("erase");
        assert!(erased > 0);
        let after = history(&store);
        assert!(after[3].iter().all(|e| matches!(e, crate::Entry::Erased { .. })));
        drop(store);
        let store = Store::open(dir.path()).expect("reopen");
        assert_eq!(history(&store), after);
    }
}
