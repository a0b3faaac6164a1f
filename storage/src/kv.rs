//! The key-value layer under the log: sled on disk, a `BTreeMap` twin in memory.
//!
//! Everything above this module talks to [`Kv`] only, so most tests run without a disk.
//! On disk a store is two sled databases behind one [`Kv`] ([`SplitKv`]): the log's trees,
//! which hold event payloads only sealed under their customer's key, and the records' trees
//! (artifacts, journals, ledgers), which hold plaintext rows. An erasure then rewrites the
//! records database to drop superseded copies, and never the log's, whose old pages are
//! unreadable once the key is gone.

use std::collections::{BTreeMap, HashMap};
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use crate::error::{io_err, Result, StorageError};
use crate::vlog::{self, ValueLog};

mod reclaim;
pub use reclaim::{Reclaim, ReclaimReport};

/// Names of the trees the store uses; fixed, so a typo cannot open a new tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TreeName {
    Meta,
    Blocks,
    BlockIds,
    Chain,
    Batches,
    ByRecorded,
    Artifacts,
    ArtifactIndex,
    /// Artifact bodies of an in-memory store (on disk they are files: see `bodies`).
    ArtifactBodies,
    Journal(&'static str),
}

impl TreeName {
    fn as_str(self) -> String {
        match self {
            TreeName::Meta => "meta".into(),
            TreeName::Blocks => "blocks".into(),
            TreeName::BlockIds => "block_ids".into(),
            TreeName::Chain => "chain".into(),
            TreeName::Batches => "batches".into(),
            TreeName::ByRecorded => "by_recorded".into(),
            TreeName::Artifacts => "artifacts".into(),
            TreeName::ArtifactIndex => "artifact_index".into(),
            TreeName::ArtifactBodies => "artifact_bodies".into(),
            TreeName::Journal(name) => format!("journal/{name}"),
        }
    }

    /// Whether [`SplitKv`] keeps the tree's values in the value log, sled holding a pointer to
    /// each: the log's bulk, written once and read in ranges.
    fn out_of_line(self) -> bool {
        OUT_OF_LINE.contains(&self)
    }

    /// Whether the tree lives in the records database (see [`SplitKv`]).
    fn in_records(self) -> bool {
        matches!(
            self,
            TreeName::Artifacts | TreeName::ArtifactIndex | TreeName::ArtifactBodies | TreeName::Journal(_)
        )
    }
}

/// The trees whose values [`SplitKv`] keeps in the value log.
/// `block_ids` stays in sled: every ingest run and compaction reads the entries of the buckets
/// it touches, which sled's cache serves and a `pread` each made a daily run of the peer feed
/// about a third slower.
const OUT_OF_LINE: [TreeName; 2] = [TreeName::Blocks, TreeName::Chain];

/// [`TreeName::in_records`] by the name sled knows the tree by: what splits a database that
/// holds every tree (a store of format 3 or earlier) in two.
pub(crate) fn is_records_tree(name: &[u8]) -> bool {
    name == b"artifacts" || name == b"artifact_index" || name == b"artifact_bodies" || name.starts_with(b"journal/")
}

/// Visitor over a key range; return `ControlFlow::Break` to stop early.
pub type Visit<'a> = dyn FnMut(&[u8], &[u8]) -> Result<ControlFlow<()>> + 'a;

/// [`Kv::visit`] with a visitor that fails with the caller's own error type `E`: the visit is
/// `dyn` (storage errors only), so the caller's error is parked, the visit stopped, and the
/// error returned once it has.
pub(crate) fn visit_typed<E: From<StorageError>>(
    kv: &dyn Kv,
    tree: TreeName,
    start: &[u8],
    end: Option<&[u8]>,
    mut f: impl FnMut(&[u8], &[u8]) -> Result<ControlFlow<()>, E>,
) -> Result<(), E> {
    let mut parked = None;
    kv.visit(tree, start, end, &mut |k, v| match f(k, v) {
        Ok(flow) => Ok(flow),
        Err(e) => {
            parked = Some(e);
            Ok(ControlFlow::Break(()))
        }
    })?;
    parked.map_or(Ok(()), Err)
}

/// A stored value as [`Kv::visit_parts`] hands it over: read whole, or a part of it, for a
/// caller that needs a few bytes of a large value (one customer's run of a block).
pub struct Part<'a>(Held<'a>);

enum Held<'a> {
    Bytes(&'a [u8]),
    /// In the value log: the pointer sled holds.
    Logged(&'a ValueLog, &'a [u8]),
}

impl Part<'_> {
    /// The whole value, checked as [`Kv::visit`] checks it.
    pub(crate) fn whole<'b>(&'b self, buf: &'b mut Vec<u8>) -> Result<&'b [u8]> {
        match self.0 {
            Held::Bytes(v) => Ok(v),
            Held::Logged(values, pointer) => {
                values.read_into(pointer, buf)?;
                Ok(buf)
            }
        }
    }

    /// Up to `len` bytes from byte `at` (fewer past the end). Not checked against the value's
    /// checksum, which covers the whole value: the caller checks the part against its own.
    pub(crate) fn part<'b>(&'b self, at: usize, len: usize, buf: &'b mut Vec<u8>) -> Result<&'b [u8]> {
        match self.0 {
            Held::Bytes(v) => {
                let at = at.min(v.len());
                Ok(&v[at..at + len.min(v.len() - at)])
            }
            Held::Logged(values, pointer) => {
                values.read_part(pointer, at, len, buf)?;
                Ok(buf)
            }
        }
    }
}

/// Visitor of [`Kv::visit_parts`].
pub type VisitParts<'a> = dyn FnMut(&[u8], &Part<'_>) -> Result<ControlFlow<()>> + 'a;

/// A small ordered key-value interface: what the log needs from sled and nothing more.
pub trait Kv: Send + Sync {
    fn get(&self, tree: TreeName, key: &[u8]) -> Result<Option<Vec<u8>>>;
    fn insert(&self, tree: TreeName, key: &[u8], value: &[u8]) -> Result<()>;
    /// [`Kv::insert`] of each entry, in order: one call, so a store that must make a replaced
    /// value's successor durable before swapping it in ([`SplitKv`]) syncs once for all.
    fn insert_all(&self, tree: TreeName, entries: &[(&[u8], &[u8])]) -> Result<()> {
        entries.iter().try_for_each(|(k, v)| self.insert(tree, k, v))
    }
    fn remove(&self, tree: TreeName, key: &[u8]) -> Result<()>;
    /// Visits `start <= key < end` (unbounded above when `end` is `None`) in key order.
    /// The visitor must not write to the store.
    fn visit(&self, tree: TreeName, start: &[u8], end: Option<&[u8]>, f: &mut Visit) -> Result<()>;
    /// [`Kv::visit`] that reads no value until the visitor asks, whole or in part.
    fn visit_parts(&self, tree: TreeName, start: &[u8], end: Option<&[u8]>, f: &mut VisitParts) -> Result<()> {
        self.visit(tree, start, end, &mut |k, v| f(k, &Part(Held::Bytes(v))))
    }
    fn last(&self, tree: TreeName) -> Result<Option<(Vec<u8>, Vec<u8>)>>;
    /// Makes every write so far durable.
    fn flush(&self) -> Result<()>;
    /// Bytes on disk (0 for the in-memory twin).
    fn size_on_disk(&self) -> Result<u64>;
    /// Frees the space of values that were replaced or removed, where they are kept out of
    /// line ([`SplitKv`]'s value log; nothing elsewhere). Changes no read. The caller keeps
    /// every other writer out; `quiesce` returns once no read begun before it is running, so
    /// no read still holds a location the collection retires. Durable on return.
    fn reclaim(&self, what: Reclaim, quiesce: &dyn Fn() -> Result<()>) -> Result<ReclaimReport> {
        let _ = (what, quiesce);
        Ok(ReclaimReport::default())
    }
}

/// sled 0.34: durable once `flush` returns.
pub struct SledKv {
    db: sled::Db,
    trees: RwLock<HashMap<TreeName, sled::Tree>>,
}

impl SledKv {
    pub fn open(dir: &Path) -> Result<Self> {
        Ok(SledKv {
            db: open_db(dir)?,
            trees: RwLock::new(HashMap::new()),
        })
    }

    /// Copies the trees of the database in `from` whose name `keep` accepts into a new database
    /// in `to`, which then holds only live values: none of the superseded pages `from` has not
    /// yet reclaimed. Checks each copied tree against the original's checksum; durable on
    /// return. Returns the keys copied.
    pub fn copy_live(from: &Path, to: &Path, keep: impl Fn(&[u8]) -> bool) -> Result<u64> {
        let old = open_db(from)?;
        let new = open_db(to)?;
        let mut keys = 0u64;
        for name in old.tree_names().into_iter().filter(|n| keep(n)) {
            let (src, dst) = (old.open_tree(&name)?, new.open_tree(&name)?);
            for item in src.iter() {
                let (k, v) = item?;
                dst.insert(k, v)?;
                keys += 1;
            }
            if dst.checksum()? != src.checksum()? {
                return Err(StorageError::Corrupt(format!(
                    "the copy of tree {} of {} into {} does not match it",
                    String::from_utf8_lossy(&name),
                    from.display(),
                    to.display()
                )));
            }
        }
        new.flush()?;
        Ok(keys)
    }

    /// Inserts `value` under `key` if the tree holds `expected` there (`None`: nothing);
    /// returns whether it did (`false`: the key held something else, and nothing was written).
    fn swap_if(&self, tree: TreeName, key: &[u8], expected: Option<&[u8]>, value: &[u8]) -> Result<bool> {
        Ok(self.tree(tree)?.compare_and_swap(key, expected, Some(value))?.is_ok())
    }

    fn tree(&self, name: TreeName) -> Result<sled::Tree> {
        if let Some(t) = self.trees.read().map_err(poisoned)?.get(&name) {
            return Ok(t.clone());
        }
        let tree = self.db.open_tree(name.as_str())?;
        self.trees.write().map_err(poisoned)?.insert(name, tree.clone());
        Ok(tree)
    }
}

fn open_db(dir: &Path) -> Result<sled::Db> {
    let config = sled::Config::new()
        .path(dir)
        .cache_capacity(128 * 1024 * 1024)
        // We flush explicitly at every commit point; background flushes only add IO.
        .flush_every_ms(None);
    remove_unfinished_snapshots(dir)?;
    open_waiting(&config, SLED_LOCK_WAIT)
}

/// sled 0.34 writes a snapshot of its page table to `snap.<lsn>.generating` and commits it by
/// renaming it to `snap.<lsn>`, but on opening it reads the newest file of either name: a
/// process killed mid-write leaves an empty or torn `.generating` file that makes every later
/// open fail as corrupt (spacejam/sled#1387, #1527). Such a file was never committed, and the
/// previous snapshot is only removed after a commit, so removing it leaves sled to recover
/// from the last committed snapshot and its log, as if the kill had come a moment earlier.
fn remove_unfinished_snapshots(dir: &Path) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(dir)(e)),
    };
    for entry in entries {
        let path = entry.map_err(io_err(dir))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            tracing::warn!(file = %path.display(), "removing a snapshot file a crash left unfinished");
            std::fs::remove_file(&path).map_err(io_err(&path))?;
        }
    }
    Ok(())
}

/// How long [`open_db`] waits for sled's file lock; a closing handle lets go within
/// milliseconds, even on a loaded machine.
const SLED_LOCK_WAIT: Duration = Duration::from_secs(5);

/// Opens `config`, waiting up to `wait` while its file lock is held. sled 0.34 lets go of that
/// lock only when the last background job of a dropped `Db` ends, a moment after the drop
/// (spacejam/sled#1234), so reopening a database this process has just closed (the rewrite
/// after an erasure, a migration) can find it still held. Other processes are kept out by the
/// store lock before sled is opened, so a held sled lock is a handle of ours on its way out.
fn open_waiting(config: &sled::Config, wait: Duration) -> Result<sled::Db> {
    let deadline = Instant::now() + wait;
    loop {
        match config.open() {
            Err(sled::Error::Io(e)) if lock_held(&e) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            opened => return Ok(opened?),
        }
    }
}

/// sled reports a held lock as `ErrorKind::Other` with this message (config.rs), nothing finer.
fn lock_held(e: &std::io::Error) -> bool {
    e.to_string().starts_with("could not acquire lock")
}

fn poisoned<T>(_: T) -> StorageError {
    StorageError::Poisoned {
        what: "key-value store",
    }
}

impl Kv for SledKv {
    fn get(&self, tree: TreeName, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.tree(tree)?.get(key)?.map(|v| v.to_vec()))
    }
    fn insert(&self, tree: TreeName, key: &[u8], value: &[u8]) -> Result<()> {
        self.tree(tree)?.insert(key, value)?;
        Ok(())
    }
    fn remove(&self, tree: TreeName, key: &[u8]) -> Result<()> {
        self.tree(tree)?.remove(key)?;
        Ok(())
    }
    fn visit(&self, tree: TreeName, start: &[u8], end: Option<&[u8]>, f: &mut Visit) -> Result<()> {
        let tree = self.tree(tree)?;
        let iter = match end {
            Some(end) => tree.range(start..end),
            None => tree.range(start..),
        };
        for item in iter {
            let (k, v) = item?;
            if f(&k, &v)?.is_break() {
                break;
            }
        }
        Ok(())
    }
    fn last(&self, tree: TreeName) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        Ok(self.tree(tree)?.last()?.map(|(k, v)| (k.to_vec(), v.to_vec())))
    }
    fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }
    fn size_on_disk(&self) -> Result<u64> {
        Ok(self.db.size_on_disk()?)
    }
}

/// A store's two sled databases and its value log behind one [`Kv`]: each tree goes to the
/// database [`TreeName::in_records`] names, and a value of `blocks` or `chain`
/// ([`TreeName::out_of_line`]) goes to the value log ([`crate::vlog`]), sled's tree keeping a
/// pointer to it. A flush makes the value log
/// durable, then both databases (records first), but sled orders writes within a database only:
/// after a crash, what reached the disk is a prefix of each database's writes since the last
/// flush, not of their interleaving. No protocol relies on more: each stage that spans both
/// databases (an erasure's) flushes before the next, and an ingest run's quarantined rows and
/// run record are acknowledged with its batches' flush.
pub struct SplitKv {
    log: SledKv,
    records: SledKv,
    values: ValueLog,
}

impl SplitKv {
    /// Opens (creating if needed) the records database first: a store directory that has
    /// `log_dir` but not `records_dir` was written by a build that kept one database.
    pub fn open(log_dir: &Path, records_dir: &Path, values_dir: &Path) -> Result<Self> {
        SplitKv::open_rolling_at(log_dir, records_dir, values_dir, vlog::ROLL_AT)
    }

    /// [`SplitKv::open`] starting a new value-log file past `roll_at` bytes (tests roll small
    /// files).
    fn open_rolling_at(log_dir: &Path, records_dir: &Path, values_dir: &Path, roll_at: u64) -> Result<Self> {
        let records = SledKv::open(records_dir)?;
        Ok(SplitKv {
            log: SledKv::open(log_dir)?,
            records,
            values: ValueLog::open_rolling_at(values_dir, roll_at)?,
        })
    }

    fn of(&self, tree: TreeName) -> &SledKv {
        if tree.in_records() {
            &self.records
        } else {
            &self.log
        }
    }

    /// A stored value of an out-of-line tree as the log wrote it: a pointer's value read into
    /// `buf`, or an inline one (an older store's, until rewritten) as it is.
    fn resolve<'a>(&self, stored: &'a [u8], buf: &'a mut Vec<u8>) -> Result<&'a [u8]> {
        if vlog::is_pointer(stored) {
            self.values.read_into(stored, buf)?;
            Ok(buf)
        } else {
            Ok(stored)
        }
    }

    fn resolve_owned(&self, stored: Vec<u8>) -> Result<Vec<u8>> {
        if vlog::is_pointer(&stored) {
            let mut buf = Vec::new();
            self.values.read_into(&stored, &mut buf)?;
            Ok(buf)
        } else {
            Ok(stored)
        }
    }
}

impl Kv for SplitKv {
    fn get(&self, tree: TreeName, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let value = self.of(tree).get(tree, key)?;
        match (tree, value) {
            (tree, Some(v)) if tree.out_of_line() => self.resolve_owned(v).map(Some),
            (_, value) => Ok(value),
        }
    }
    fn insert(&self, tree: TreeName, key: &[u8], value: &[u8]) -> Result<()> {
        self.insert_all(tree, &[(key, value)])
    }
    fn insert_all(&self, tree: TreeName, entries: &[(&[u8], &[u8])]) -> Result<()> {
        if !tree.out_of_line() {
            let db = self.of(tree);
            return entries.iter().try_for_each(|(k, v)| db.insert(tree, k, v));
        }
        // A new key (a batch's block) is written at once. A pointer replacing another (a
        // merge's segment, an erasure's rewrite) waits for its bytes to be durable: sled may
        // write it to disk before the next flush, and a power loss would then keep a pointer
        // to lost bytes in place of a value that was whole (see `vlog`).
        let mut replacing = Vec::new();
        for (key, value) in entries {
            let pointer = self.values.append(value)?;
            if !self.log.swap_if(tree, key, None, &pointer)? {
                replacing.push((*key, pointer));
            }
        }
        if !replacing.is_empty() {
            self.values.sync()?;
            for (key, pointer) in replacing {
                self.log.insert(tree, key, &pointer)?;
            }
        }
        Ok(())
    }
    fn remove(&self, tree: TreeName, key: &[u8]) -> Result<()> {
        self.of(tree).remove(tree, key)
    }
    fn visit(&self, tree: TreeName, start: &[u8], end: Option<&[u8]>, f: &mut Visit) -> Result<()> {
        if !tree.out_of_line() {
            return self.of(tree).visit(tree, start, end, f);
        }
        // One buffer per visit: visits run on several threads at once (`scan_buckets`).
        let mut buf = Vec::new();
        self.log
            .visit(tree, start, end, &mut |k, v| f(k, self.resolve(v, &mut buf)?))
    }
    fn visit_parts(&self, tree: TreeName, start: &[u8], end: Option<&[u8]>, f: &mut VisitParts) -> Result<()> {
        if !tree.out_of_line() {
            return self.of(tree).visit_parts(tree, start, end, f);
        }
        self.log.visit(tree, start, end, &mut |k, v| {
            let held = if vlog::is_pointer(v) {
                Held::Logged(&self.values, v)
            } else {
                Held::Bytes(v)
            };
            f(k, &Part(held))
        })
    }
    fn last(&self, tree: TreeName) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        match (tree, self.of(tree).last(tree)?) {
            (tree, Some((k, v))) if tree.out_of_line() => Ok(Some((k, self.resolve_owned(v)?))),
            (_, last) => Ok(last),
        }
    }
    fn flush(&self) -> Result<()> {
        // The values first: a pointer this flush makes durable points at durable bytes.
        self.values.sync()?;
        self.records.flush()?;
        self.log.flush()
    }
    fn size_on_disk(&self) -> Result<u64> {
        Ok(self.log.size_on_disk()? + self.records.size_on_disk()? + self.values.size_on_disk()?)
    }
    fn reclaim(&self, what: Reclaim, quiesce: &dyn Fn() -> Result<()>) -> Result<ReclaimReport> {
        self.reclaim_values(what, quiesce)
    }
}

/// The in-memory twin: same semantics, no disk. Durability is modelled: the state as of the
/// last `flush` is what survives [`MemKv::crash`], so a test can stop a protocol at any write
/// ([`MemKv::fail_writes_after`]), crash, and reopen what a real crash would have left.
type MemTree = BTreeMap<Vec<u8>, Vec<u8>>;

#[derive(Default)]
pub struct MemKv {
    state: RwLock<MemState>,
}

#[derive(Default)]
struct MemState {
    trees: HashMap<TreeName, MemTree>,
    /// What each write since the last flush replaced (`None`: the key was absent), oldest
    /// first: a crash puts them back, newest first.
    unflushed: Vec<(TreeName, Vec<u8>, Option<Vec<u8>>)>,
    /// Writes so far (inserts and removes).
    writes: u64,
    /// Writes past this count fail, as if the process died at that write.
    write_limit: Option<u64>,
    /// A write was refused: flushes fail too until the crash, so nothing after it is durable.
    dead: bool,
}

impl MemKv {
    /// From now on, `n` more writes succeed and every later one fails with
    /// [`StorageError::SimulatedCrash`], as do flushes after that: the protocol under test
    /// stops at its write `n + 1`. Lifted by [`MemKv::crash`].
    pub fn fail_writes_after(&self, n: u64) -> Result<()> {
        let mut s = self.state.write().map_err(poisoned)?;
        s.write_limit = Some(s.writes + n);
        Ok(())
    }

    /// The process died: every write since the last flush is undone, and writes work again
    /// (the next opener's).
    pub fn crash(&self) -> Result<()> {
        self.crash_keeping(0)
    }

    /// The process died after the first `kept` writes since the last flush reached the disk
    /// (sled writes in the background too, in order): the later ones are undone.
    pub fn crash_keeping(&self, kept: usize) -> Result<()> {
        let mut s = self.state.write().map_err(poisoned)?;
        while s.unflushed.len() > kept {
            let Some((tree, key, old)) = s.unflushed.pop() else {
                break;
            };
            let t = s.trees.entry(tree).or_default();
            match old {
                Some(v) => t.insert(key, v),
                None => t.remove(&key),
            };
        }
        // What was kept is on disk now: a later crash does not undo it.
        s.unflushed.clear();
        s.write_limit = None;
        s.dead = false;
        Ok(())
    }

    /// Sets (`Some`) or removes (`None`) `key`, remembering what it replaced until a flush.
    fn write(&self, tree: TreeName, key: &[u8], value: Option<&[u8]>) -> Result<()> {
        let mut s = self.state.write().map_err(poisoned)?;
        if s.write_limit.is_some_and(|limit| s.writes >= limit) {
            s.dead = true;
            return Err(StorageError::SimulatedCrash { write: s.writes + 1 });
        }
        s.writes += 1;
        let t = s.trees.entry(tree).or_default();
        let old = match value {
            Some(v) => t.insert(key.to_vec(), v.to_vec()),
            None => t.remove(key),
        };
        s.unflushed.push((tree, key.to_vec(), old));
        Ok(())
    }
}

impl Kv for MemKv {
    fn get(&self, tree: TreeName, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .state
            .read()
            .map_err(poisoned)?
            .trees
            .get(&tree)
            .and_then(|t| t.get(key).cloned()))
    }
    fn insert(&self, tree: TreeName, key: &[u8], value: &[u8]) -> Result<()> {
        self.write(tree, key, Some(value))
    }
    fn remove(&self, tree: TreeName, key: &[u8]) -> Result<()> {
        self.write(tree, key, None)
    }
    fn visit(&self, tree: TreeName, start: &[u8], end: Option<&[u8]>, f: &mut Visit) -> Result<()> {
        let state = self.state.read().map_err(poisoned)?;
        let Some(t) = state.trees.get(&tree) else { return Ok(()) };
        let upper = match end {
            Some(end) => std::ops::Bound::Excluded(end.to_vec()),
            None => std::ops::Bound::Unbounded,
        };
        for (k, v) in t.range((std::ops::Bound::Included(start.to_vec()), upper)) {
            if f(k, v)?.is_break() {
                break;
            }
        }
        Ok(())
    }
    fn last(&self, tree: TreeName) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        let state = self.state.read().map_err(poisoned)?;
        Ok(state
            .trees
            .get(&tree)
            .and_then(|t| t.last_key_value())
            .map(|(k, v)| (k.clone(), v.clone())))
    }
    fn flush(&self) -> Result<()> {
        let mut s = self.state.write().map_err(poisoned)?;
        if s.dead {
            return Err(StorageError::SimulatedCrash { write: s.writes + 1 });
        }
        s.unflushed.clear();
        Ok(())
    }
    fn size_on_disk(&self) -> Result<u64> {
        Ok(0)
    }
}

/// Every entry of `tree`, in key order: what tests compare stores by.
#[cfg(test)]
pub(crate) fn entries(kv: &dyn Kv, tree: TreeName) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut seen = Vec::new();
    kv.visit(tree, &[], None, &mut |k, v| {
        seen.push((k.to_vec(), v.to_vec()));
        Ok(ControlFlow::Continue(()))
    })
    .expect("visit");
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: TreeName = TreeName::Journal("t");

    #[test]
    fn a_snapshot_a_kill_left_unfinished_does_not_stop_the_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kv = SledKv::open(dir.path()).expect("open");
        kv.insert(T, b"k", b"v").expect("insert");
        kv.flush().expect("flush");
        drop(kv);
        // What a kill during sled's snapshot write leaves: the file, created, still empty.
        std::fs::write(dir.path().join("snap.00000000FFFFFFFF.generating"), b"").expect("write");
        let kv = SledKv::open(dir.path()).expect("opens all the same");
        assert_eq!(kv.get(T, b"k").expect("get"), Some(b"v".to_vec()));
    }

    #[test]
    fn reopening_waits_for_a_closing_handle_and_gives_up_on_a_held_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = sled::Config::new().path(dir.path()).flush_every_ms(None);
        let held = config.open().expect("first open");
        let refused = open_waiting(&config, Duration::from_millis(50));
        let Err(StorageError::Sled(sled::Error::Io(e))) = refused else {
            panic!("a held lock is refused after the wait: {refused:?}");
        };
        assert!(lock_held(&e), "{e}");
        let closing = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            drop(held);
        });
        let reopened = open_waiting(&config, Duration::from_secs(10)).expect("waits for the drop");
        closing.join().expect("join");
        drop(reopened);
    }

    #[test]
    fn a_crash_keeps_what_was_flushed_and_drops_the_rest() {
        let kv = MemKv::default();
        kv.insert(T, b"a", b"1").expect("insert");
        kv.insert(T, b"b", b"1").expect("insert");
        kv.flush().expect("flush");
        kv.insert(T, b"a", b"2").expect("overwrite");
        kv.remove(T, b"b").expect("remove");
        kv.insert(T, b"c", b"2").expect("insert");
        kv.crash().expect("crash");
        let mut seen = Vec::new();
        kv.visit(T, &[], None, &mut |k, v| {
            seen.push((k.to_vec(), v.to_vec()));
            Ok(ControlFlow::Continue(()))
        })
        .expect("visit");
        assert_eq!(seen, [(b"a".to_vec(), b"1".to_vec()), (b"b".to_vec(), b"1".to_vec())]);
    }

    #[test]
    fn writes_past_the_limit_fail_and_nothing_after_is_durable() {
        let kv = MemKv::default();
        kv.fail_writes_after(2).expect("limit");
        kv.insert(T, b"a", b"1").expect("write 1");
        kv.flush().expect("flush");
        kv.insert(T, b"b", b"1").expect("write 2");
        assert!(matches!(
            kv.insert(T, b"c", b"1"),
            Err(StorageError::SimulatedCrash { write: 3 })
        ));
        assert!(
            kv.flush().is_err(),
            "a flush after the failed write made write 2 durable"
        );
        kv.crash().expect("crash");
        assert_eq!(kv.get(T, b"a").expect("get"), Some(b"1".to_vec()));
        assert_eq!(kv.get(T, b"b").expect("get"), None);
        kv.insert(T, b"c", b"1").expect("writes work again after the crash");
    }

    /// Every tree name the store uses, one of each kind.
    const ALL: [TreeName; 10] = [
        TreeName::Meta,
        TreeName::Blocks,
        TreeName::BlockIds,
        TreeName::Chain,
        TreeName::Batches,
        TreeName::ByRecorded,
        TreeName::Artifacts,
        TreeName::ArtifactIndex,
        TreeName::ArtifactBodies,
        TreeName::Journal("quarantine"),
    ];

    #[test]
    fn the_split_by_name_agrees_with_the_split_by_tree() {
        for tree in ALL {
            assert_eq!(is_records_tree(tree.as_str().as_bytes()), tree.in_records(), "{tree:?}");
        }
        assert!(
            !is_records_tree(b"__sled__default"),
            "sled's default tree stays with the log"
        );
    }

    #[test]
    fn a_split_store_keeps_each_tree_in_its_own_database() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, records) = (dir.path().join("log"), dir.path().join("records"));
        let kv = SplitKv::open(&log, &records, &dir.path().join("values")).expect("open");
        for tree in ALL {
            kv.insert(tree, b"key", tree.as_str().as_bytes()).expect("insert");
        }
        kv.flush().expect("flush");
        drop(kv);
        for (path, want_records) in [(&log, false), (&records, true)] {
            let db = SledKv::open(path).expect("reopen one");
            for tree in ALL {
                let held = db.get(tree, b"key").expect("get");
                if tree.out_of_line() && !want_records {
                    assert!(held.as_deref().is_some_and(vlog::is_pointer), "sled holds a pointer");
                    continue;
                }
                let want = want_records.eq(&tree.in_records()).then(|| tree.as_str().into_bytes());
                assert_eq!(held, want, "{tree:?} in {}", path.display());
            }
        }
    }

    /// A store directory's key-value layer (`db`, `records`, `blocks`).
    fn split_kv(dir: &Path) -> SplitKv {
        split_kv_rolling(dir, vlog::ROLL_AT)
    }

    fn blocks(kv: &dyn Kv) -> Vec<(Vec<u8>, Vec<u8>)> {
        entries(kv, TreeName::Blocks)
    }

    fn block(i: u8) -> Vec<u8> {
        let mut v = vec![1u8];
        v.extend(std::iter::repeat_n(i, 1000 + usize::from(i)));
        v
    }

    /// The only value-log file of a store written by these tests.
    fn vlog_file(dir: &Path) -> std::path::PathBuf {
        dir.join("blocks").join("000001.vlog")
    }

    #[test]
    fn blocks_go_to_the_value_log_and_read_back_through_every_call() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kv = split_kv(dir.path());
        for i in 0..5u8 {
            kv.insert(TreeName::Blocks, &[i], &block(i)).expect("insert");
        }
        // Replaced and removed values read as the latest write.
        kv.insert(TreeName::Blocks, &[1], &block(9)).expect("replace");
        kv.remove(TreeName::Blocks, &[2]).expect("remove");
        let want: Vec<(Vec<u8>, Vec<u8>)> = [(0, 0), (1, 9), (3, 3), (4, 4)]
            .iter()
            .map(|&(k, v)| (vec![k], block(v)))
            .collect();
        assert_eq!(blocks(&kv), want);
        kv.flush().expect("flush");
        let file_bytes = std::fs::metadata(vlog_file(dir.path())).expect("stat").len();
        assert_eq!(
            file_bytes,
            (0..5).chain([9]).map(|i| block(i).len() as u64).sum::<u64>()
        );
        assert!(kv.size_on_disk().expect("size") >= file_bytes);
        drop(kv);
        let kv = split_kv(dir.path());
        assert_eq!(blocks(&kv), want);
        assert_eq!(kv.get(TreeName::Blocks, &[1]).expect("get"), Some(block(9)));
        assert_eq!(kv.get(TreeName::Blocks, &[2]).expect("get"), None);
        assert_eq!(kv.last(TreeName::Blocks).expect("last"), Some((vec![4], block(4))));
        // In parts: each value whole, a slice of it, and a slice cut at its end.
        for inline in [false, true] {
            let mem = MemKv::default();
            let kv: &dyn Kv = if inline { &mem } else { &kv };
            if inline {
                want.iter()
                    .for_each(|(k, v)| mem.insert(TreeName::Blocks, k, v).expect("insert"));
            }
            let mut seen = Vec::new();
            kv.visit_parts(TreeName::Blocks, &[], None, &mut |k, part| {
                let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
                let whole = part.whole(&mut a)?.to_vec();
                let len = whole.len();
                let (middle, end) = (
                    part.part(10, 20, &mut b)?.to_vec(),
                    part.part(len - 5, 64, &mut c)?.to_vec(),
                );
                assert_eq!((&middle[..], &end[..]), (&whole[10..30], &whole[len - 5..]));
                assert!(part.part(len + 1, 8, &mut c)?.is_empty(), "past the end");
                seen.push((k.to_vec(), whole));
                Ok(ControlFlow::Continue(()))
            })
            .expect("visit in parts");
            assert_eq!(seen, want, "inline: {inline}");
        }
    }

    #[test]
    fn a_damaged_or_torn_value_is_corruption_naming_its_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kv = split_kv(dir.path());
        kv.insert(TreeName::Blocks, b"a", &block(1)).expect("insert");
        kv.insert(TreeName::Blocks, b"b", &block(2)).expect("insert");
        kv.flush().expect("flush");
        drop(kv);
        let path = vlog_file(dir.path());
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[10] ^= 1;
        std::fs::write(&path, &bytes).expect("damage the first value");
        let kv = split_kv(dir.path());
        for err in [
            kv.get(TreeName::Blocks, b"a").expect_err("damaged"),
            kv.visit(TreeName::Blocks, &[], None, &mut |_, _| Ok(ControlFlow::Continue(())))
                .expect_err("damaged"),
        ] {
            assert!(matches!(err, StorageError::Corrupt(_)), "{err:?}");
            assert!(err.to_string().contains("000001.vlog"), "{err}");
            assert!(err.to_string().contains("checksum"), "{err}");
        }
        assert_eq!(kv.get(TreeName::Blocks, b"b").expect("intact"), Some(block(2)));
        drop(kv);
        bytes.truncate(bytes.len() - 1);
        std::fs::write(&path, &bytes).expect("tear the last value");
        let kv = split_kv(dir.path());
        let err = kv.get(TreeName::Blocks, b"b").expect_err("torn");
        assert!(
            matches!(&err, StorageError::Corrupt(m) if m.contains("000001.vlog") && m.contains("torn")),
            "{err:?}"
        );
    }

    /// [`split_kv`] with value-log files of `roll_at` bytes.
    fn split_kv_rolling(dir: &Path, roll_at: u64) -> SplitKv {
        SplitKv::open_rolling_at(&dir.join("db"), &dir.join("records"), &dir.join("blocks"), roll_at).expect("open")
    }

    fn vlog_sizes(kv: &SplitKv) -> Vec<u64> {
        kv.values.file_sizes().expect("sizes").into_values().collect()
    }

    #[test]
    fn collecting_the_value_log_deletes_its_garbage_and_changes_no_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kv = split_kv_rolling(dir.path(), 4_500);
        for i in 0..24u8 {
            kv.insert(TreeName::Blocks, &[i], &block(i)).expect("insert");
        }
        // The first files become mostly garbage: what merges and erasures leave.
        for i in 0..14u8 {
            kv.insert(TreeName::Blocks, &[i], &block(i + 100)).expect("replace");
        }
        kv.remove(TreeName::Blocks, &[14]).expect("remove");
        // And one file a quarter garbage (four blocks a file).
        kv.remove(TreeName::Blocks, &[17]).expect("remove");
        kv.flush().expect("flush");
        let want = blocks(&kv);
        let live: u64 = want.iter().map(|(_, v)| v.len() as u64).sum();
        let before = vlog_sizes(&kv);
        let quiesced = std::sync::atomic::AtomicUsize::new(0);
        let quiesce = || {
            quiesced.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        };

        // Never measured: measured now, and the files at least half garbage collected.
        let due = kv.reclaim(Reclaim::IfDue, &quiesce).expect("reclaim");
        assert!(due.measured && due.files_deleted > 0, "{due:?} of {before:?}");
        assert_eq!(quiesced.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(blocks(&kv), want);
        let after: u64 = vlog_sizes(&kv).iter().sum();
        assert_eq!(after, before.iter().sum::<u64>() - due.bytes_freed + due.bytes_moved);
        assert!(due.garbage_left > 0, "a file under half garbage is kept: {due:?}");

        // Measured since, and far below twice the live bytes: nothing is read.
        let idle = kv.reclaim(Reclaim::IfDue, &quiesce).expect("reclaim");
        assert_eq!(idle, ReclaimReport::default());

        let all = kv.reclaim(Reclaim::All, &quiesce).expect("reclaim");
        assert!(all.files_deleted > 0 && all.garbage_left == 0, "{all:?}");
        assert_eq!(vlog_sizes(&kv).iter().sum::<u64>(), live, "only live bytes are left");
        assert_eq!(blocks(&kv), want);
        drop(kv);

        // A file no pointer names (a collection killed before its deletes) goes next time.
        std::fs::write(dir.path().join("blocks").join("000000.vlog"), block(7)).expect("write");
        let kv = split_kv_rolling(dir.path(), 4_500);
        assert_eq!(blocks(&kv), want);
        let orphan = kv.reclaim(Reclaim::All, &quiesce).expect("reclaim");
        assert_eq!((orphan.files_deleted, orphan.values_moved), (1, 0), "{orphan:?}");
        assert!(!dir.path().join("blocks").join("000000.vlog").exists());
        kv.insert(TreeName::Blocks, &[99], &block(99)).expect("insert after");
        kv.flush().expect("flush");
        drop(kv);
        let kv = split_kv_rolling(dir.path(), 4_500);
        assert_eq!(kv.get(TreeName::Blocks, &[99]).expect("get"), Some(block(99)));
        assert_eq!(blocks(&kv).len(), want.len() + 1);
        drop(kv);

        // A file lost from under the store (reads then fail, naming it) does not upset the count.
        let first = kv_files(dir.path())[0].clone();
        std::fs::remove_file(&first).expect("lose a file");
        let kv = split_kv_rolling(dir.path(), 4_500);
        let lost = kv.reclaim(Reclaim::All, &quiesce).expect("reclaim");
        assert!(lost.measured, "{lost:?}");
    }

    fn kv_files(dir: &Path) -> Vec<std::path::PathBuf> {
        let mut files: Vec<_> = std::fs::read_dir(dir.join("blocks"))
            .expect("blocks/")
            .map(|e| e.expect("entry").path())
            .collect();
        files.sort();
        files
    }

    #[test]
    fn bytes_a_crash_left_past_the_last_flush_change_no_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kv = split_kv(dir.path());
        kv.insert(TreeName::Blocks, b"a", &block(1)).expect("insert");
        kv.flush().expect("flush");
        drop(kv);
        // What a process killed in the middle of an append leaves: part of a value no durable
        // pointer names.
        let path = vlog_file(dir.path());
        let mut file = std::fs::OpenOptions::new().append(true).open(&path).expect("open");
        std::io::Write::write_all(&mut file, &block(7)[..300]).expect("a torn tail");
        drop(file);
        let kv = split_kv(dir.path());
        assert_eq!(blocks(&kv), [(b"a".to_vec(), block(1))]);
        // New values go after the garbage and read back whole.
        kv.insert(TreeName::Blocks, b"b", &block(2)).expect("insert");
        kv.flush().expect("flush");
        drop(kv);
        let kv = split_kv(dir.path());
        assert_eq!(blocks(&kv), [(b"a".to_vec(), block(1)), (b"b".to_vec(), block(2))]);
    }
}
