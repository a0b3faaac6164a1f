//! The directories of a store and the renames that replace one of them whole.
//!
//! `db/` holds the log's trees and `records/` the artifacts, journals and ledgers (see
//! [`crate::kv::SplitKv`]). Two operations replace a database directory by a copy, and both
//! finish or undo themselves on the next open after a crash:
//! - the rewrite of `records/` after an erasure ([`rewrite_records`]), through
//!   `records.compacting` and `records.old`;
//! - the split of a store written by a build that kept every tree in `db/` ([`prepare`]):
//!   the records' trees are copied to `records.splitting` and the log's to `db.splitting`,
//!   then `records.splitting` becomes `records` (the commit point: from then on the store
//!   has the new layout), `db` becomes `db.old`, `db.splitting` becomes `db`, and `db.old` is
//!   removed. The copy is also a rewrite: no superseded page of the old database survives it.

use std::path::Path;

use crate::error::{io_err, Result};
use crate::kv::{is_records_tree, SledKv};

/// The log's database.
pub(crate) const LOG_DB: &str = "db";
/// The records' database.
pub(crate) const RECORDS_DB: &str = "records";
/// The `blocks` tree's values (see [`crate::vlog`]).
pub(crate) const VALUE_LOG: &str = "blocks";
/// The artifact bodies, a file each (see [`crate::bodies`]).
pub(crate) const ARTIFACT_BODIES: &str = "artifacts";

/// Bytes of a database directory before and after it was rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compacted {
    pub keys: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// Brings the closed store directory `dir` to the current layout before it is opened:
/// finishes an interrupted rewrite or split, and splits a one-database store.
pub(crate) fn prepare(dir: &Path) -> Result<()> {
    // Interrupted rewrites first (of the one-database layout, by an older build, or of
    // `records`), so the split below starts from a whole `db` and only when `records` is
    // truly missing, not renamed away for a moment.
    finish_replace(dir, LOG_DB, "db.compacting")?;
    finish_replace(dir, RECORDS_DB, "records.compacting")?;
    let (records, log) = (dir.join(RECORDS_DB), dir.join(LOG_DB));
    let split_records = dir.join("records.splitting");
    let split_log = dir.join("db.splitting");
    if !records.exists() {
        for unfinished in [&split_records, &split_log] {
            remove_dir(unfinished)?;
        }
        if log.exists() {
            split(dir, &log, &split_records, &split_log)?;
        }
    } else if split_log.exists() {
        swap_in(dir, &split_log, LOG_DB)?;
    }
    Ok(())
}

/// Copies `log`'s trees into two new databases and makes them the store's.
fn split(dir: &Path, log: &Path, split_records: &Path, split_log: &Path) -> Result<()> {
    tracing::info!(store = %dir.display(), "splitting the database: records (artifacts, journals, ledgers) apart from the log");
    let records_keys = SledKv::copy_live(log, split_records, is_records_tree)?;
    let log_keys = SledKv::copy_live(log, split_log, |name| !is_records_tree(name))?;
    rename(split_records, &dir.join(RECORDS_DB))?;
    sync_dir(dir)?;
    tracing::info!(records_keys, log_keys, "database split");
    swap_in(dir, split_log, LOG_DB)
}

/// Replaces `dir/name` by the complete copy `new`: `name` → `name.old`, `new` → `name`,
/// `name.old` removed. Safe to run again from any point.
fn swap_in(dir: &Path, new: &Path, name: &str) -> Result<()> {
    let (current, old) = (dir.join(name), dir.join(format!("{name}.old")));
    if current.exists() {
        rename(&current, &old)?;
    }
    rename(new, &current)?;
    sync_dir(dir)?;
    remove_dir(&old)
}

/// Rewrites the closed store's records database so its files hold only live values: sled
/// keeps superseded pages (for instance rows an erasure removed) until it reclaims their
/// segment, and this removes them now. Copies into `records.compacting` (checked, flushed),
/// then swaps it in; [`prepare`] finishes the renames after a crash.
pub(crate) fn rewrite_records(dir: &Path) -> Result<Compacted> {
    let (records, tmp) = (dir.join(RECORDS_DB), dir.join("records.compacting"));
    remove_dir(&tmp)?;
    let bytes_before = dir_size(&records)?;
    let keys = SledKv::copy_live(&records, &tmp, |_| true)?;
    swap_in(dir, &tmp, RECORDS_DB)?;
    Ok(Compacted {
        keys,
        bytes_before,
        bytes_after: dir_size(&records)?,
    })
}

/// Completes or undoes a replacement of `dir/name` by the copy `dir/tmp` that a crash
/// interrupted. A copy beside `name` is unfinished (removed); `name.old` without `name`
/// means the copy was complete and renamed halfway (finished); `name.old` beside `name` is
/// left over (removed); `name.old` alone is restored.
fn finish_replace(dir: &Path, name: &str, tmp: &str) -> Result<()> {
    let (db, tmp, old) = (dir.join(name), dir.join(tmp), dir.join(format!("{name}.old")));
    if old.exists() && !db.exists() {
        // Never open an empty database over a store's only copy.
        let whole = if tmp.exists() { &tmp } else { &old };
        rename(whole, &db)?;
        sync_dir(dir)?;
    }
    if db.exists() {
        for leftover in [tmp, old] {
            remove_dir(&leftover)?;
        }
    }
    Ok(())
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(io_err(from))
}

fn remove_dir(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(path)(e)),
        _ => Ok(()),
    }
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::kv::{Kv, TreeName};

    const SECRET: &[u8] = b"superseded-row-91c2";

    /// A store directory as a one-database build left it: a log tree and a journal in `db`,
    /// and a superseded journal value still in its pages.
    fn one_database_store() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let kv = SledKv::open(&dir.path().join(LOG_DB)).expect("open");
        kv.insert(TreeName::Meta, b"format", &3u32.to_be_bytes()).expect("meta");
        kv.insert(TreeName::Journal("runs"), b"1", b"run one").expect("journal");
        kv.insert(TreeName::Journal("runs"), b"2", SECRET).expect("journal");
        kv.flush().expect("flush");
        kv.remove(TreeName::Journal("runs"), b"2").expect("remove");
        kv.flush().expect("flush");
        dir
    }

    /// `prepare` left the new layout: each tree in its database only, no left-overs, and no
    /// file of the store holding the superseded value.
    fn assert_split(dir: &Path) {
        let log = SledKv::open(&dir.join(LOG_DB)).expect("log");
        assert_eq!(
            log.get(TreeName::Meta, b"format").expect("get"),
            Some(3u32.to_be_bytes().to_vec())
        );
        assert_eq!(log.get(TreeName::Journal("runs"), b"1").expect("get"), None);
        drop(log);
        let records = SledKv::open(&dir.join(RECORDS_DB)).expect("records");
        assert_eq!(
            records.get(TreeName::Journal("runs"), b"1").expect("get"),
            Some(b"run one".to_vec())
        );
        assert_eq!(records.get(TreeName::Meta, b"format").expect("get"), None);
        drop(records);
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, [LOG_DB, RECORDS_DB]);
        for file in walk(dir) {
            let bytes = std::fs::read(&file).expect("read");
            assert!(
                !bytes.windows(SECRET.len()).any(|w| w == SECRET),
                "{} holds it",
                file.display()
            );
        }
    }

    /// Every file below `dir`.
    pub(crate) fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
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

    #[test]
    fn a_one_database_store_is_split_and_rewritten() {
        let dir = one_database_store();
        prepare(dir.path()).expect("prepare");
        assert_split(dir.path());
        prepare(dir.path()).expect("again: nothing to do");
        assert_split(dir.path());
    }

    /// Every state a kill can leave between the split's steps ends where an uninterrupted split
    /// ends. `complete` copies stand for the copies made before the kill.
    #[test]
    fn a_split_a_kill_interrupted_is_finished_on_the_next_open() {
        let copies = |dir: &Path| {
            let log = dir.join(LOG_DB);
            SledKv::copy_live(&log, &dir.join("records.splitting"), is_records_tree).expect("copy");
            SledKv::copy_live(&log, &dir.join("db.splitting"), |n| !is_records_tree(n)).expect("copy");
        };
        type Leave<'a> = &'a dyn Fn(&Path);
        let states: [(&str, Leave); 5] = [
            ("during the copies", &|d| {
                std::fs::create_dir(d.join("records.splitting")).expect("mkdir");
                std::fs::create_dir(d.join("db.splitting")).expect("mkdir");
            }),
            ("after the copies", &copies),
            ("after the commit", &|d| {
                copies(d);
                rename(&d.join("records.splitting"), &d.join(RECORDS_DB)).expect("rename");
            }),
            ("between the swap's renames", &|d| {
                copies(d);
                rename(&d.join("records.splitting"), &d.join(RECORDS_DB)).expect("rename");
                rename(&d.join(LOG_DB), &d.join("db.old")).expect("rename");
            }),
            ("before the old database is removed", &|d| {
                copies(d);
                rename(&d.join("records.splitting"), &d.join(RECORDS_DB)).expect("rename");
                rename(&d.join(LOG_DB), &d.join("db.old")).expect("rename");
                rename(&d.join("db.splitting"), &d.join(LOG_DB)).expect("rename");
            }),
        ];
        for (when, leave) in states {
            let dir = one_database_store();
            leave(dir.path());
            prepare(dir.path()).unwrap_or_else(|e| panic!("{when}: {e}"));
            assert_split(dir.path());
        }
    }

    #[test]
    fn an_interrupted_rewrite_is_finished_or_undone_on_open() {
        let dir = one_database_store();
        prepare(dir.path()).expect("prepare");
        let (db, tmp, old) = (
            dir.path().join(RECORDS_DB),
            dir.path().join("records.compacting"),
            dir.path().join("records.old"),
        );
        // Crashed between the two renames: the complete copy becomes the database.
        SledKv::copy_live(&db, &tmp, |_| true).expect("copy");
        rename(&db, &old).expect("rename");
        prepare(dir.path()).expect("finish");
        assert_split(dir.path());
        // Only the old database is left: it is restored, never replaced by an empty one.
        rename(&db, &old).expect("rename");
        prepare(dir.path()).expect("finish");
        assert_split(dir.path());
        // An unfinished copy beside the database is dropped.
        std::fs::create_dir(&tmp).expect("mkdir");
        prepare(dir.path()).expect("finish");
        assert_split(dir.path());
    }
}
