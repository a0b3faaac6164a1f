//! Garbage collection of the value log: a block that a merge or an erasure replaced stays in
//! its file until the file's live values are copied to the newest file and the file deleted.
//!
//! Why files, not holes: a file is only values back to back, and the pointers in sled (of
//! `blocks` and `chain`) are its only index, so the unit of reclaiming is a whole
//! file (WiscKey's, without its in-file header: liveness is asked of the pointers, which are
//! ~35 bytes an entry and cached).
//!
//! When. [`Reclaim::All`] (`cis store compact`) collects every file that holds garbage.
//! [`Reclaim::IfDue`] (after each ingest run's compaction) first compares the files' bytes with
//! the live bytes the last collection measured, persisted in `meta`: below twice that (plus
//! [`SLACK`]) nothing is read, so a daily run pays one `stat` per file. Past it, a pass over the
//! pointers measures each file, and files at least half garbage are collected, cheapest first,
//! within [`MOVE_BUDGET`] bytes copied (the rest wait for the next run). Whenever the files
//! pass twice the live bytes, some file is at least half garbage, so the store stays within
//! about twice its live bytes (plus one budget) however long a feed runs.
//!
//! Protocol, under the caller's writer lock: (1) if the newest file is a victim, start a new
//! one; (2) copy each live value of the victims to the newest file; (3) sync the value log;
//! (4) swap each pointer from the old copy to the new one (compare-and-swap: a value changed
//! meanwhile keeps its own); (5) flush sled; (6) wait for every read begun before (5) to end;
//! (7) delete the victims and sync the directory. Killed before (5), some pointers may name
//! the new copies, all synced, and the rest the old ones, still there. Killed after, the
//! victims are files no pointer names, deleted by the next collection (they are all garbage).
//! No read changes at any point: both copies are the same bytes under the same checksum.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;

use super::{Kv, SplitKv, TreeName, OUT_OF_LINE};
use crate::error::{Result, StorageError};
use crate::vlog;

/// What to collect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reclaim {
    /// Files at least half garbage, once the value log has grown past twice its live bytes,
    /// within a budget (see the module documentation).
    IfDue,
    /// Every file holding any garbage.
    All,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReclaimReport {
    /// The pointers were read to measure the files (else the sizes showed nothing due).
    pub measured: bool,
    pub files_deleted: u64,
    /// Live values copied out of the deleted files, and their bytes.
    pub values_moved: u64,
    pub bytes_moved: u64,
    /// Bytes the deleted files held.
    pub bytes_freed: u64,
    /// Garbage bytes left in the files kept (when measured).
    pub garbage_left: u64,
}

/// `meta` key: the live bytes of the value log when last measured (u64, big-endian).
const LIVE_KEY: &[u8] = b"value_log_live_bytes";
/// Garbage below this is never worth a pass over the pointers.
const SLACK: u64 = 64 << 20;
/// Bytes a [`Reclaim::IfDue`] collection copies at most: a few seconds of a daily run.
const MOVE_BUDGET: u64 = 256 << 20;

/// Garbage bytes of the files `sizes` names: each file's bytes less its live ones, saturating
/// (a pointer into a missing file, which `verify` names, must not make it underflow).
fn garbage_of(sizes: &BTreeMap<u32, u64>, live: &BTreeMap<u32, u64>) -> u64 {
    sizes
        .iter()
        .map(|(file, size)| size.saturating_sub(live.get(file).copied().unwrap_or(0)))
        .sum()
}

/// A file the collection may delete: its number, bytes and live bytes.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    file: u32,
    size: u64,
    live: u64,
}

impl SplitKv {
    pub(super) fn reclaim_values(&self, what: Reclaim, quiesce: &dyn Fn() -> Result<()>) -> Result<ReclaimReport> {
        let sizes = self.values.file_sizes()?;
        let total: u64 = sizes.values().sum();
        if what == Reclaim::IfDue {
            if let Some(live) = self.measured_live()? {
                if total < live.saturating_mul(2).saturating_add(SLACK) {
                    return Ok(ReclaimReport::default());
                }
            }
        }
        let live = self.live_bytes()?;
        let live_total: u64 = live.values().sum();
        let mut candidates: Vec<Candidate> = sizes
            .iter()
            .map(|(&file, &size)| Candidate {
                file,
                size,
                live: live.get(&file).copied().unwrap_or(0),
            })
            .filter(|c| c.size > c.live && (what == Reclaim::All || c.size - c.live >= c.size / 2))
            .collect();
        candidates.sort_by_key(|c| (c.live, c.file));
        let mut budget = match what {
            Reclaim::IfDue => MOVE_BUDGET,
            Reclaim::All => u64::MAX,
        };
        let victims: Vec<Candidate> = candidates
            .into_iter()
            .take_while(|c| {
                let fits = c.live <= budget;
                budget = budget.saturating_sub(c.live);
                fits
            })
            .collect();
        let mut report = ReclaimReport {
            measured: true,
            garbage_left: garbage_of(&sizes, &live),
            ..ReclaimReport::default()
        };
        if !victims.is_empty() {
            self.collect(&victims, &mut report)?;
        }
        self.log.insert(TreeName::Meta, LIVE_KEY, &live_total.to_be_bytes())?;
        self.flush()?;
        if !victims.is_empty() {
            quiesce()?;
            let numbers: Vec<u32> = victims.iter().map(|c| c.file).collect();
            self.values.delete(&numbers)?;
            tracing::info!(
                files = report.files_deleted,
                freed = report.bytes_freed,
                moved = report.bytes_moved,
                "value log: deleted files of garbage"
            );
        }
        Ok(report)
    }

    /// Steps (1) to (4) of the protocol: the victims' live values copied and repointed.
    fn collect(&self, victims: &[Candidate], report: &mut ReclaimReport) -> Result<()> {
        let newest = self.values.newest()?;
        if victims.iter().any(|c| c.file == newest) {
            self.values.roll_now()?;
        }
        let doomed: BTreeSet<u32> = victims.iter().map(|c| c.file).collect();
        let mut moving: Vec<(TreeName, Vec<u8>, Vec<u8>)> = Vec::new();
        self.visit_pointers(|tree, k, v| {
            if doomed.contains(&vlog::extent(v)?.0) {
                moving.push((tree, k.to_vec(), v.to_vec()));
            }
            Ok(())
        })?;
        let mut buf = Vec::new();
        let mut moved = Vec::with_capacity(moving.len());
        for (tree, key, old) in moving {
            self.values.read_into(&old, &mut buf)?;
            let new = self.values.append(&buf)?;
            report.bytes_moved += buf.len() as u64;
            moved.push((tree, key, old, new));
        }
        self.values.sync()?;
        for (tree, key, old, new) in &moved {
            // Under the caller's writer lock nothing else replaces a value, so a swap that
            // fails is a bug elsewhere: the value keeps its pointer and the copy is garbage.
            if !self.log.swap_if(*tree, key, Some(old), new)? {
                return Err(StorageError::Corrupt(format!(
                    "a value of {tree:?} changed while the value log was collected"
                )));
            }
        }
        report.values_moved = moved.len() as u64;
        report.files_deleted = victims.len() as u64;
        report.bytes_freed = victims.iter().map(|c| c.size).sum();
        let freed_garbage: u64 = victims.iter().map(|c| c.size - c.live).sum();
        report.garbage_left = report.garbage_left.saturating_sub(freed_garbage);
        Ok(())
    }

    /// Live bytes per file: the lengths of the values the pointers name.
    fn live_bytes(&self) -> Result<BTreeMap<u32, u64>> {
        let mut live: BTreeMap<u32, u64> = BTreeMap::new();
        self.visit_pointers(|_, _, v| {
            let (file, len) = vlog::extent(v)?;
            *live.entry(file).or_default() += len;
            Ok(())
        })?;
        Ok(live)
    }

    /// Every pointer of every out-of-line tree, as (tree, key, pointer).
    fn visit_pointers(&self, mut f: impl FnMut(TreeName, &[u8], &[u8]) -> Result<()>) -> Result<()> {
        for tree in OUT_OF_LINE {
            self.log.visit(tree, &[], None, &mut |k, v| {
                if vlog::is_pointer(v) {
                    f(tree, k, v)?;
                }
                Ok(ControlFlow::Continue(()))
            })?;
        }
        Ok(())
    }

    fn measured_live(&self) -> Result<Option<u64>> {
        let Some(bytes) = self.log.get(TreeName::Meta, LIVE_KEY)? else {
            return Ok(None);
        };
        let bytes: [u8; 8] = bytes.as_slice().try_into().map_err(|_| {
            StorageError::Corrupt(format!(
                "meta {}: {} bytes",
                String::from_utf8_lossy(LIVE_KEY),
                bytes.len()
            ))
        })?;
        Ok(Some(u64::from_be_bytes(bytes)))
    }
}
