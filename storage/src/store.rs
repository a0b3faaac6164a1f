//! A store directory: the event log plus small append-only journals and counters.
//!
//! Layout of a store directory: `db/` (sled), `keys.bin` (see [`crate::vault`]), `lock` (see
//! [`crate::lock`]) and, while an erasure's rewrite of the database is still to be done,
//! `compaction-owed` (see [`Store::owe_compaction`]).

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::artifacts::Artifacts;
use crate::error::{io_err, Result, StorageError};
use crate::kv::{self, Kv, MemKv, SledKv, TreeName};
use crate::ledger::Ledger;
use crate::lock::StoreLock;
use crate::log::EventLog;
use crate::vault::Vault;

pub struct Store {
    kv: Arc<dyn Kv>,
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
        finish_compaction(dir)?;
        let kv: Arc<dyn Kv> = Arc::new(SledKv::open(&dir.join("db"))?);
        let vault = Vault::open(&dir.join("keys.bin"))?;
        let log = EventLog::open(kv.clone(), vault)?;
        Ok(Store {
            kv,
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
        Artifacts { kv: self.kv.as_ref() }
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    pub fn size_on_disk(&self) -> Result<u64> {
        self.kv.size_on_disk()
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

/// Bytes of a store's database before and after [`Store::compact`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compacted {
    pub keys: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

impl Store {
    /// Rewrites the closed store in `dir` so its database files hold only live values: sled
    /// keeps superseded pages (for instance rows an erasure removed) until it reclaims their
    /// segment, and this removes them now. Steps: copy live values into `db.compacting`
    /// (checked, flushed), rename `db` to `db.old`, `db.compacting` to `db`, delete `db.old`;
    /// [`Store::open`] finishes the renames after a crash. Fails if the store is open.
    /// Clears the note of [`Store::owe_compaction`] once done.
    pub fn compact(dir: &Path) -> Result<Compacted> {
        let _lock = StoreLock::acquire(dir, "a store compaction")?;
        finish_compaction(dir)?;
        let (db, tmp, old) = compaction_paths(dir);
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
        }
        let bytes_before = dir_size(&db)?;
        let keys = SledKv::copy_live(&db, &tmp)?;
        std::fs::rename(&db, &old).map_err(io_err(&db))?;
        std::fs::rename(&tmp, &db).map_err(io_err(&tmp))?;
        sync_dir(dir)?;
        std::fs::remove_dir_all(&old).map_err(io_err(&old))?;
        let owed = dir.join(COMPACTION_OWED);
        if owed.exists() {
            std::fs::remove_file(&owed).map_err(io_err(&owed))?;
            sync_dir(dir)?;
        }
        Ok(Compacted {
            keys,
            bytes_before,
            bytes_after: dir_size(&db)?,
        })
    }

    /// Notes durably that the database must be rewritten by [`Store::compact`]: an erasure is
    /// about to remove data that superseded pages will keep until then. The note outlives a
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
            sync_dir(dir)?;
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

fn compaction_paths(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    (dir.join("db"), dir.join("db.compacting"), dir.join("db.old"))
}

/// Completes or undoes a compaction a crash interrupted. A `db.compacting` beside `db` is an
/// unfinished copy (removed); `db.old` without `db` means the copy was complete and renamed
/// halfway (finished); `db.old` beside `db` is left over (removed); `db.old` alone is restored.
fn finish_compaction(dir: &Path) -> Result<()> {
    let (db, tmp, old) = compaction_paths(dir);
    if old.exists() && !db.exists() {
        // Never open an empty database over a store's only copy.
        let whole = if tmp.exists() { &tmp } else { &old };
        std::fs::rename(whole, &db).map_err(io_err(whole))?;
        sync_dir(dir)?;
    }
    for leftover in [tmp, old] {
        if leftover.exists() && db.exists() {
            std::fs::remove_dir_all(&leftover).map_err(io_err(&leftover))?;
        }
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))
}

fn dir_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let meta = entry.metadata().map_err(io_err(entry.path()))?;
        total += if meta.is_dir() {
            dir_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

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
        assert!(report.keys >= 2, "{report:?}");
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
        for f in walk(&dir.path().join("db")) {
            let bytes = std::fs::read(&f).expect("read");
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret),
                "{} still holds it",
                f.display()
            );
        }
        assert!(!dir.path().join("db.old").exists() && !dir.path().join("db.compacting").exists());
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

    #[test]
    fn an_interrupted_compaction_is_finished_or_undone_on_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(Store::open(dir.path()).expect("open"));
        let (db, tmp, old) = compaction_paths(dir.path());
        // Crashed between the two renames: the complete copy becomes the database.
        std::fs::rename(&db, &old).expect("rename");
        std::fs::create_dir(&tmp).expect("copy dir");
        finish_compaction(dir.path()).expect("finish");
        assert!(db.exists() && !old.exists() && !tmp.exists());
        // Only the old database is left: it is restored, never replaced by an empty one.
        std::fs::rename(&db, &old).expect("rename");
        finish_compaction(dir.path()).expect("finish");
        assert!(db.exists() && !old.exists());
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).expect("read dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
        out
    }
}
