//! The append-only, content-addressed, bitemporal event log.
//!
//! Trees (all keys big-endian):
//! - `blocks`: (bucket, batch) → block of sealed events (see [`crate::block`]).
//! - `block_ids`: the same keys as `blocks` → the id prefixes of that block's events (see
//!   [`crate::idset::encode_ids`]): the duplicate check of an append reads the buckets it
//!   touches, never the whole log. Every stored id's prefix is in it; it may name more (a merge
//!   interrupted before removing its inputs' entries), which costs nothing but a lookup.
//! - `chain`: batch → where each of the batch's events, in append order, is in block order
//!   (see `chain`): the hash chain's order, its ids being in the blocks.
//! - `batches`: batch → [`BatchRecord`] (versioned bincode, see [`crate::format`]): the commit record.
//! - `by_recorded`: (min recorded_at, batch) → max recorded_at: the recorded-time index.
//! - `meta`: `format`, and `pending` (the batch being written, for crash recovery).
//!
//! Commit protocol for batch `n`: write `pending = n` and flush; write blocks and chain;
//! flush; write the batch record and its `by_recorded` entry; flush. Only then is the
//! batch acknowledged. A batch without a record is invisible to readers and is removed
//! when the store is next opened.

use std::collections::{BTreeSet, HashMap};
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};

use crate::block::{self, Record, Span};
use crate::envelope::{self, EventBatch, EventId, Handle, NewEvent};
use crate::error::{Result, StorageError};
use crate::format::{self, RecordKind};
use crate::idset::{self, prefix, FullIds, IdSet, Known};
use crate::kv::{self, Kv, TreeName};
use crate::vault::{self, apply_cipher, open_all, Vault, LANES};

mod chain;
mod compaction;

use chain::Chain;
pub use compaction::{Compaction, CompactionReport, MERGE_ABOVE};

pub type Head = [u8; 32];
/// The head of the empty log.
pub const GENESIS: Head = [0; 32];

/// What one committed batch appended: the unit of acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRecord {
    pub seq: u64,
    /// The caller's run (ingest) this batch belongs to.
    pub run: u64,
    /// Sequence number of the batch's first event in the whole log (starting at 0).
    pub first_event: u64,
    pub events: u64,
    pub head_before: Head,
    pub head_after: Head,
    /// Wall-clock time of the commit, µs since the epoch.
    pub committed_at: i64,
    pub min_recorded_at: i64,
    pub max_recorded_at: i64,
    pub min_event_time: i64,
    pub max_event_time: i64,
}

/// Which events a read sees: `event_time <= event_time_max` and `recorded_at <= recorded_max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Visibility {
    pub event_time_max: i64,
    pub recorded_max: i64,
}

impl Visibility {
    pub const ALL: Visibility = Visibility {
        event_time_max: i64::MAX,
        recorded_max: i64::MAX,
    };

    fn admits(&self, r: &Record<'_>) -> bool {
        r.event_time <= self.event_time_max && r.recorded_at <= self.recorded_max
    }
}

/// A readable event, decrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub id: EventId,
    pub kind: u8,
    pub subject: String,
    pub event_time: i64,
    pub recorded_at: i64,
    pub body: Vec<u8>,
    pub batch: u64,
}

/// What a per-customer read returns: the event, or the mark an erasure left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Live(StoredEvent),
    Erased {
        id: EventId,
        kind: u8,
        event_time: i64,
        recorded_at: i64,
        batch: u64,
        /// The erasure request whose tombstone replaced the payload.
        request: u64,
    },
}

/// An event seen by a full scan; borrows a buffer reused between events.
#[derive(Debug, Clone, Copy)]
pub struct EventRef<'a> {
    pub id: &'a EventId,
    /// The subject's handle ([`envelope::subject_handle`]): the log keys a subject by it
    /// (its bucket, its key), so a reader can too without hashing `subject` per event.
    pub handle: envelope::Handle,
    pub kind: u8,
    pub subject: &'a str,
    pub event_time: i64,
    pub recorded_at: i64,
    pub body: &'a [u8],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendOutcome {
    /// The committed batch, or `None` when every event was already in the log.
    pub batch: Option<BatchRecord>,
    pub appended: u64,
    pub duplicates: u64,
    pub head: Head,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub batches: u64,
    pub events: u64,
    pub erased: u64,
    /// Erased events per erasure request, by request number.
    pub erasures: std::collections::BTreeMap<u64, u64>,
    pub head: Head,
}

pub struct EventLog {
    kv: Arc<dyn Kv>,
    vault: RwLock<Vault>,
    batches: RwLock<Vec<BatchRecord>>,
    /// Held by appends, erasures and compactions: one writer of blocks at a time.
    appender: Mutex<AppendState>,
    /// Readers of blocks hold it shared; a merge holds it while it swaps a bucket's blocks
    /// for their segment, so no read sees some of a bucket's blocks before the swap and the
    /// rest after it.
    layout: RwLock<()>,
}

/// What appends keep between calls.
#[derive(Default)]
struct AppendState {
    /// The run whose ids `known` holds.
    run: Option<u64>,
    /// Bucket → the ids stored there (from `block_ids`) and those this run appended, loaded
    /// when the run first touches the bucket: a run's memory grows with what it touches, not
    /// with the log.
    known: HashMap<u16, Known>,
    /// Buckets appended to since the last compaction, and how many events.
    touched: BTreeSet<u16>,
    appended: u64,
}

/// One bucket's share of an append: its events are `grouped[start..start + len]`, of which
/// the first `fresh` are new to the log once checked against `known`, its id set.
struct Group {
    bucket: u16,
    start: usize,
    len: usize,
    fresh: usize,
    known: Option<Known>,
}

/// Events from which an append splits its work over two threads: below it, starting a thread
/// costs more than it saves.
const PARALLEL_FROM: usize = 4096;

/// Runs `a` and `b`, at once on two threads when `parallel` (else one after the other), and
/// returns both results; a panic in either is passed on.
fn both<A: Send, B: Send>(parallel: bool, a: impl FnOnce() -> A + Send, b: impl FnOnce() -> B + Send) -> (A, B) {
    if !parallel {
        return (a(), b());
    }
    std::thread::scope(|s| {
        let other = s.spawn(b);
        let first = a();
        match other.join() {
            Ok(second) => (first, second),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

fn be(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

fn lock_err<T>(_: T) -> StorageError {
    StorageError::Poisoned { what: "event log" }
}

impl EventLog {
    pub fn open(kv: Arc<dyn Kv>, vault: Vault) -> Result<Self> {
        format::ensure(kv.as_ref())?;
        let mut batches = Vec::new();
        kv.visit(TreeName::Batches, &[], None, &mut |_, v| {
            batches.push(format::decode::<BatchRecord>(RecordKind::Batch, v)?);
            Ok(ControlFlow::Continue(()))
        })?;
        for (i, b) in batches.iter().enumerate() {
            if b.seq != i as u64 + 1 {
                return Err(StorageError::Corrupt(format!(
                    "batch records are not contiguous at batch {}",
                    b.seq
                )));
            }
        }
        let log = EventLog {
            kv,
            vault: RwLock::new(vault),
            batches: RwLock::new(batches),
            appender: Mutex::new(AppendState::default()),
            layout: RwLock::new(()),
        };
        log.recover()?;
        log.recover_erasure()?;
        Ok(log)
    }

    /// Removes what an interrupted append left behind (see the commit protocol).
    fn recover(&self) -> Result<()> {
        let Some(p) = self.kv.get(TreeName::Meta, b"pending")? else {
            return Ok(());
        };
        let pending = u64::from_be_bytes(
            p.as_slice()
                .try_into()
                .map_err(|_| StorageError::Corrupt("pending".into()))?,
        );
        let committed = self.committed_seq()?;
        if pending > committed {
            tracing::warn!(
                batch = pending,
                "removing an uncommitted batch left by an interrupted append"
            );
            for bucket in 0..block::BUCKETS {
                let key = block::block_key(bucket, pending);
                self.kv.remove(TreeName::Blocks, &key)?;
                self.kv.remove(TreeName::BlockIds, &key)?;
            }
            for key in self.chain_keys(pending)? {
                self.kv.remove(TreeName::Chain, &key)?;
            }
        }
        let mut stale = Vec::new();
        self.kv.visit(TreeName::ByRecorded, &[], None, &mut |k, _| {
            if by_recorded_batch(k)? > committed {
                stale.push(k.to_vec());
            }
            Ok(ControlFlow::Continue(()))
        })?;
        for k in stale {
            self.kv.remove(TreeName::ByRecorded, &k)?;
        }
        self.kv.remove(TreeName::Meta, b"pending")?;
        self.kv.flush()
    }

    /// The `chain` keys of batch `seq`, in order: its first value's and its chunks'.
    fn chain_keys(&self, seq: u64) -> Result<Vec<Vec<u8>>> {
        let mut keys = Vec::new();
        let end = be(seq.saturating_add(1));
        self.kv.visit(TreeName::Chain, &be(seq), Some(&end), &mut |k, _| {
            keys.push(k.to_vec());
            Ok(ControlFlow::Continue(()))
        })?;
        Ok(keys)
    }

    /// Batch `seq`'s event ids in append order (its chain values joined), if it has any.
    fn chain(&self, seq: u64) -> Result<Option<Vec<u8>>> {
        let mut ids: Option<Vec<u8>> = None;
        let end = be(seq.saturating_add(1));
        self.kv.visit(TreeName::Chain, &be(seq), Some(&end), &mut |_, v| {
            ids.get_or_insert_with(Vec::new).extend_from_slice(v);
            Ok(ControlFlow::Continue(()))
        })?;
        Ok(ids)
    }

    fn committed_seq(&self) -> Result<u64> {
        Ok(self.batches.read().map_err(lock_err)?.len() as u64)
    }

    pub fn batches(&self) -> Result<Vec<BatchRecord>> {
        Ok(self.batches.read().map_err(lock_err)?.clone())
    }

    pub fn head(&self) -> Result<Head> {
        Ok(self
            .batches
            .read()
            .map_err(lock_err)?
            .last()
            .map_or(GENESIS, |b| b.head_after))
    }

    /// The head after the last batch committed at or before wall-clock time `t`.
    pub fn head_at(&self, t: i64) -> Result<(u64, Head)> {
        let batches = self.batches.read().map_err(lock_err)?;
        Ok(batches
            .iter()
            .rev()
            .find(|b| b.committed_at <= t)
            .map_or((0, GENESIS), |b| (b.seq, b.head_after)))
    }

    pub fn event_count(&self) -> Result<u64> {
        Ok(self
            .batches
            .read()
            .map_err(lock_err)?
            .last()
            .map_or(0, |b| b.first_event + b.events))
    }

    /// Visits the `block_ids` entries of `bucket` (of every bucket: `None`) in key order as
    /// (bucket, first batch, last batch, ids).
    fn visit_ids(
        &self,
        bucket: Option<u16>,
        mut f: impl FnMut(u16, u64, u64, &mut dyn Iterator<Item = u64>),
    ) -> Result<()> {
        let range = bucket.map(block::bucket_range);
        let (start, end) = match &range {
            Some((start, end)) => (&start[..], Some(&end[..])),
            None => (&[][..], None),
        };
        self.kv.visit(TreeName::BlockIds, start, end, &mut |k, v| {
            let (bucket, first) = block::split_block_key(k)?;
            let (last, mut ids) = idset::decode_ids(v)?;
            f(bucket, first, last, &mut ids);
            Ok(ControlFlow::Continue(()))
        })
    }

    /// The id prefixes stored in `bucket`, from its `block_ids` entries.
    fn stored_ids(&self, bucket: u16) -> Result<IdSet> {
        let mut ids = IdSet::default();
        self.visit_ids(Some(bucket), |_, _, _, entry| ids.extend(entry))?;
        Ok(ids)
    }

    /// The full ids stored in `bucket`, from its blocks: what settles a shared prefix.
    fn stored_full_ids(&self, bucket: u16) -> Result<FullIds> {
        let mut ids = FullIds::default();
        let (start, _) = block::bucket_range(bucket);
        let end = (bucket + 1 < block::BUCKETS).then(|| block::block_key(bucket + 1, 0));
        self.visit_blocks::<StorageError>(&start, end.as_ref().map(|e| &e[..]), |_, span, v| {
            block::for_each::<StorageError>(span.first, v, |r| {
                ids.insert(r.id);
                Ok(())
            })?;
            Ok(ControlFlow::Continue(()))
        })?;
        Ok(ids)
    }

    /// Every `block_ids` entry, by bucket: what [`EventLog::verify`] checks the blocks against.
    fn indexed_ids(&self) -> Result<HashMap<u16, IdSet>> {
        let mut out: HashMap<u16, IdSet> = HashMap::new();
        self.visit_ids(None, |bucket, _, _, entry| out.entry(bucket).or_default().extend(entry))?;
        Ok(out)
    }

    /// Appends the events that are not already in the log, as one batch, and returns
    /// only once that batch is durable. `committed_at` is the caller's wall clock; `run` is
    /// the caller's run, whose appends share what they learnt of the stored ids.
    pub fn append(&self, events: Vec<NewEvent>, run: u64, committed_at: i64) -> Result<AppendOutcome> {
        self.append_batch(&EventBatch::from_events(&events)?, run, committed_at)
    }

    /// [`EventLog::append`] of events packed in an [`EventBatch`], which the caller may clear
    /// and refill for its next batch.
    pub fn append_batch(&self, events: &EventBatch, run: u64, committed_at: i64) -> Result<AppendOutcome> {
        let mut state = self.appender.lock().map_err(lock_err)?;
        if state.run != Some(run) {
            state.run = Some(run);
            state.known.clear();
        }
        let result = self.append_locked(&mut state, events, run, committed_at);
        if result.is_err() {
            // The id sets may now name events that were never committed: reload next time.
            state.run = None;
            state.known.clear();
        }
        result
    }

    /// The work per event (hashing, the duplicate check, sealing, encoding and writing the
    /// blocks) is split over two threads: by event for the hashes, by bucket for the rest, so
    /// each thread owns its buckets' id sets and blocks. Every result is put together in a
    /// fixed order, so the batch is the same whichever thread finishes first.
    fn append_locked(
        &self,
        state: &mut AppendState,
        events: &EventBatch,
        run: u64,
        committed_at: i64,
    ) -> Result<AppendOutcome> {
        let head_before = self.head()?;
        let n = events.len();
        let parallel = n >= PARALLEL_FROM;

        // Each event's id, subject handle and event time (the block order's sort key, kept
        // beside the others rather than read from the envelope at every comparison).
        let mut keys: Vec<(EventId, Handle, i64)> = vec![([0; 32], 0, 0); n];
        {
            let fill = |first: usize, part: &mut [(EventId, Handle, i64)]| {
                for (i, slot) in part.iter_mut().enumerate() {
                    let ev = events.get(first + i);
                    *slot = (
                        envelope::event_id(ev.envelope),
                        envelope::handle_of(ev.subject),
                        ev.event_time,
                    );
                }
            };
            let (a, b) = keys.split_at_mut(n / 2);
            both(parallel, || fill(0, a), || fill(n / 2, b));
        }

        // Event indices grouped by bucket, each group in append order (a counting sort).
        let mut starts = vec![0usize; usize::from(block::BUCKETS) + 1];
        for (_, h, _) in &keys {
            starts[usize::from(block::bucket_of(*h)) + 1] += 1;
        }
        for b in 0..usize::from(block::BUCKETS) {
            starts[b + 1] += starts[b];
        }
        let mut grouped = vec![0usize; n];
        {
            let mut next = starts.clone();
            for (i, (_, h, _)) in keys.iter().enumerate() {
                let b = usize::from(block::bucket_of(*h));
                grouped[next[b]] = i;
                next[b] += 1;
            }
        }
        let mut groups: Vec<Group> = (0..block::BUCKETS)
            .filter(|&b| starts[usize::from(b) + 1] > starts[usize::from(b)])
            .map(|bucket| Group {
                bucket,
                start: starts[usize::from(bucket)],
                len: starts[usize::from(bucket) + 1] - starts[usize::from(bucket)],
                fresh: 0,
                known: state.known.remove(&bucket),
            })
            .collect();
        // The two threads' shares: whole buckets, about half of the events each.
        let split = groups.partition_point(|g| g.start < n / 2);
        let split_at = groups.get(split).map_or(n, |g| g.start);

        // The duplicate check, in append order within each bucket; a group's fresh events
        // end up first in its part of `grouped`, in block order.
        let duplicates = {
            let check = |groups: &mut [Group], mut part: &mut [usize]| -> Result<u64> {
                let mut duplicates = 0;
                for g in groups {
                    let (mine, rest) = std::mem::take(&mut part).split_at_mut(g.len);
                    part = rest;
                    let known = match &mut g.known {
                        Some(known) => known,
                        None => g.known.insert(Known::new(self.stored_ids(g.bucket)?)),
                    };
                    for j in 0..mine.len() {
                        let i = mine[j];
                        let taken = mine[..g.fresh].iter().map(|&t| &keys[t].0);
                        if known.insert(&keys[i].0, || self.stored_full_ids(g.bucket), taken)? {
                            mine[g.fresh] = i;
                            g.fresh += 1;
                        } else {
                            duplicates += 1;
                        }
                    }
                    // Block order: (handle, event_time, id), as a merge sorts them (see `chain`).
                    mine[..g.fresh].sort_unstable_by_key(|&i| (keys[i].1, keys[i].2, keys[i].0));
                }
                Ok(duplicates)
            };
            let (ga, gb) = groups.split_at_mut(split);
            let (pa, pb) = grouped.split_at_mut(split_at);
            let (a, b) = both(parallel, || check(ga, pa), || check(gb, pb));
            a? + b?
        };
        for g in &mut groups {
            if let Some(known) = g.known.take() {
                state.known.insert(g.bucket, known);
            }
        }
        let mut is_fresh = vec![false; n];
        for g in &groups {
            for &i in &grouped[g.start..g.start + g.fresh] {
                is_fresh[i] = true;
            }
        }
        let fresh = || (0..n).filter(|&i| is_fresh[i]);
        let appended = fresh().count();
        if appended == 0 {
            return Ok(AppendOutcome {
                batch: None,
                appended: 0,
                duplicates,
                head: head_before,
            });
        }
        let seq = self.committed_seq()? + 1;
        self.kv.insert(TreeName::Meta, b"pending", &be(seq))?;
        self.kv.flush()?;

        let mut vault = self.vault.write().map_err(lock_err)?;
        // In block order a customer's fresh events are consecutive: one key lookup each, not
        // one an event (over a map of every customer, each a likely cache miss).
        let mut last = None;
        let handles = groups
            .iter()
            .flat_map(|g| &grouped[g.start..g.start + g.fresh])
            .map(|&i| keys[i].1)
            .filter(|&h| last.replace(h) != Some(h));
        vault.ensure(handles)?;
        let vault: &Vault = &vault;

        // The hash chain over the fresh ids in append order, the chain value (each one's place
        // in block order, see `chain`) and the batch's time bounds: one hash after another, so it
        // runs on a thread of its own beside the two writing blocks.
        let chained = || -> Result<(Head, [i64; 4])> {
            let mut place = vec![0usize; n];
            let in_block_order = groups.iter().flat_map(|g| &grouped[g.start..g.start + g.fresh]);
            for (p, &i) in in_block_order.enumerate() {
                place[i] = p;
            }
            let mut head = head_before;
            let (mut min_r, mut max_r, mut min_t, mut max_t) = (i64::MAX, i64::MIN, i64::MAX, i64::MIN);
            for i in fresh() {
                head = extend_head(&head, &keys[i].0);
                let ev = events.get(i);
                min_r = min_r.min(ev.recorded_at);
                max_r = max_r.max(ev.recorded_at);
                min_t = min_t.min(ev.event_time);
                max_t = max_t.max(ev.event_time);
            }
            let places: Vec<usize> = fresh().map(|i| place[i]).collect();
            self.kv.insert(TreeName::Chain, &be(seq), &chain::encode(&places))?;
            Ok((head, [min_r, max_r, min_t, max_t]))
        };

        // Each bucket's block and its `block_ids` entry, the envelopes sealed in the block once
        // all are copied into it.
        let (head, [min_r, max_r, min_t, max_t]) = {
            let write = |groups: &[Group]| -> Result<()> {
                let mut records: Vec<Record<'_>> = Vec::new();
                let mut ids: Vec<u64> = Vec::new();
                let mut bytes = Vec::new();
                for g in groups.iter().filter(|g| g.fresh > 0) {
                    records.clear();
                    ids.clear();
                    for &i in &grouped[g.start..g.start + g.fresh] {
                        let (id, handle, _) = keys[i];
                        let ev = events.get(i);
                        records.push(Record {
                            handle,
                            event_time: ev.event_time,
                            recorded_at: ev.recorded_at,
                            kind: ev.kind,
                            flags: block::FLAG_TAIL,
                            id,
                            sealed: &ev.envelope[envelope::TAIL_AT..],
                            batch: seq,
                        });
                        ids.push(prefix(&id));
                    }
                    let key = block::block_key(g.bucket, seq);
                    self.kv
                        .insert(TreeName::BlockIds, &key, &idset::encode_ids(seq, &mut ids))?;
                    block::encode_into(Span::batch(seq), &records, &mut bytes, |block, payloads| {
                        let keyed = records.iter().zip(payloads).map(|(r, at)| {
                            let key = vault
                                .get(r.handle)
                                .ok_or_else(|| StorageError::MissingKey(format!("{:032x}", r.handle)))?;
                            Ok((key, &r.id, at.clone()))
                        });
                        vault::apply_all(block, keyed.collect::<Result<Vec<_>>>()?);
                        Ok(())
                    })?;
                    self.kv.insert(TreeName::Blocks, &key, &bytes)?;
                }
                Ok(())
            };
            let (ga, gb) = groups.split_at(split);
            let (a, (b, chained)) = both(parallel, || write(ga), || both(parallel, || write(gb), chained));
            a.and(b)?;
            chained?
        };
        state
            .touched
            .extend(groups.iter().filter(|g| g.fresh > 0).map(|g| g.bucket));
        self.kv.flush()?;

        let first_event = self.event_count()?;
        let record = BatchRecord {
            seq,
            run,
            first_event,
            events: appended as u64,
            head_before,
            head_after: head,
            committed_at,
            min_recorded_at: min_r,
            max_recorded_at: max_r,
            min_event_time: min_t,
            max_event_time: max_t,
        };
        let bytes = format::encode(RecordKind::Batch, &record)?;
        self.kv.insert(TreeName::Batches, &be(seq), &bytes)?;
        self.kv
            .insert(TreeName::ByRecorded, &by_recorded_key(min_r, seq), &max_r.to_be_bytes())?;
        self.kv.flush()?;
        self.batches.write().map_err(lock_err)?.push(record.clone());
        state.appended += record.events;
        Ok(AppendOutcome {
            appended: record.events,
            batch: Some(record),
            duplicates,
            head,
        })
    }

    /// Batches up to `through` that may hold events recorded by `recorded_max` (indexed by
    /// batch number): those whose least `recorded_at` is at most it. Answered from the batch
    /// records held in memory, which carry the same least `recorded_at` as `by_recorded`'s keys:
    /// a range scan of that tree cost every customer read one entry per batch ever committed
    /// (2,916 on a store fed daily for two years, most of a profile read's time).
    fn batches_recorded_by(&self, recorded_max: i64, through: u64) -> Result<Vec<bool>> {
        let batches = self.batches.read().map_err(lock_err)?;
        let committed = (batches.len() as u64).min(through);
        let mut admitted = vec![false; committed as usize + 1];
        for b in batches.iter().take_while(|b| b.seq <= committed) {
            if let Some(a) = admitted.get_mut(b.seq as usize) {
                *a = b.min_recorded_at <= recorded_max;
            }
        }
        Ok(admitted)
    }

    /// Visits the blocks from `start` to `end` in key order as (bucket, span, bytes), under
    /// the layout lock, skipping every block a segment before it covers: the inputs a merge
    /// was interrupted before removing, whose records the segment holds (see `compaction`).
    fn visit_blocks<E: From<StorageError>>(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        mut f: impl FnMut(u16, Span, &[u8]) -> Result<ControlFlow<()>, E>,
    ) -> Result<(), E> {
        let _layout = self.layout.read().map_err(lock_err)?;
        let mut covered = Covered::default();
        kv::visit_typed(self.kv.as_ref(), TreeName::Blocks, start, end, |k, v| {
            let (bucket, first) = block::split_block_key(k)?;
            if covered.skips(bucket, first) {
                return Ok(ControlFlow::Continue(()));
            }
            let span = block::span(first, v)?;
            covered.by(bucket, span);
            f(bucket, span, v)
        })
    }

    /// The records of the customer `handle` in each block of their bucket whose span `admit`
    /// accepts, as [`EventLog::visit_blocks`] visits them. Of a format-4 or -5 block, the front (up to
    /// [`block::FRONT`] bytes) is read, then the customer's run if the front does not hold it,
    /// and only the directory and that run are checked and decoded; an older block is read and
    /// checked whole, and hands `f` its other customers' records too.
    fn customer_records(
        &self,
        handle: Handle,
        admit: impl Fn(Span) -> bool,
        mut f: impl FnMut(Record<'_>) -> Result<()>,
    ) -> Result<()> {
        let _layout = self.layout.read().map_err(lock_err)?;
        let (start, end) = block::bucket_range(block::bucket_of(handle));
        let mut covered = Covered::default();
        let (mut front, mut body) = (Vec::new(), Vec::new());
        self.kv
            .visit_parts(TreeName::Blocks, &start, Some(&end), &mut |k, part| {
                let (bucket, first) = block::split_block_key(k)?;
                if covered.skips(bucket, first) {
                    return Ok(ControlFlow::Continue(()));
                }
                let mut read = part.part(0, block::FRONT, &mut front)?;
                let Some(n) = block::directory_len(first, read)? else {
                    let v = part.whole(&mut body)?;
                    let span = block::span(first, v)?;
                    covered.by(bucket, span);
                    if admit(span) {
                        block::for_each(first, v, &mut f)?;
                    }
                    return Ok(ControlFlow::Continue(()));
                };
                if n > read.len() {
                    read = part.part(0, n, &mut front)?;
                }
                let d = block::Directory::parse(first, read)?;
                covered.by(bucket, d.span);
                if let Some(run) = d.run(handle).filter(|_| admit(d.span)) {
                    let (at, len) = run.range();
                    let bytes = match read.get(at..at + len) {
                        Some(bytes) => bytes,
                        None => part.part(at, len, &mut body)?,
                    };
                    d.for_each_in(run, bytes, &mut f)?;
                }
                Ok(ControlFlow::Continue(()))
            })
    }

    /// One customer's events visible under `vis`, ordered by (event_time, id), erasure
    /// marks included. A prefix range scan over the customer's bucket.
    pub fn subject_events(&self, subject: &str, vis: Visibility) -> Result<Vec<Entry>> {
        self.subject_events_through(subject, vis, u64::MAX)
    }

    /// [`EventLog::subject_events`] of the log as it was after batch `through`: what a reader
    /// that read the head first (a response whose proof names that batch) may show, whatever
    /// batches commit meanwhile.
    pub fn subject_events_through(&self, subject: &str, vis: Visibility, through: u64) -> Result<Vec<Entry>> {
        let handle = envelope::subject_handle(subject);
        let admitted = self.batches_recorded_by(vis.recorded_max, through)?;
        let vault = self.vault.read().map_err(lock_err)?;
        let mut out = Vec::new();
        self.customer_records(
            handle,
            |span| admits_span(&admitted, span),
            |r| {
                if r.handle != handle || !admits(&admitted, vis, &r) {
                    return Ok(());
                }
                out.push(if let Some(request) = r.erasure_request()? {
                    Entry::Erased {
                        id: r.id,
                        kind: r.kind,
                        event_time: r.event_time,
                        recorded_at: r.recorded_at,
                        batch: r.batch,
                        request,
                    }
                } else {
                    let env = open_record(&vault, &r)?;
                    let e = envelope::decode(&env)?;
                    Entry::Live(StoredEvent {
                        id: r.id,
                        kind: r.kind,
                        subject: e.subject.to_string(),
                        event_time: r.event_time,
                        recorded_at: r.recorded_at,
                        body: e.body.to_vec(),
                        batch: r.batch,
                    })
                });
                Ok(())
            },
        )?;
        out.sort_by_key(|e| match e {
            Entry::Live(ev) => (ev.event_time, ev.id),
            Entry::Erased { event_time, id, .. } => (*event_time, *id),
        });
        Ok(out)
    }

    /// Calls `f` on every live event visible under `vis`, in storage order (by customer
    /// bucket, then batch). Reads blocks sequentially: the cost is the log size. The scan stops
    /// at `f`'s first error, which is returned as it is (of the caller's type `E`).
    pub fn scan<E: From<StorageError>>(
        &self,
        vis: Visibility,
        f: impl FnMut(EventRef<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        self.scan_buckets(vis, 0..block::BUCKETS, f)
    }

    /// [`EventLog::scan`] restricted to a range of customer buckets. A customer's events all
    /// live in one bucket, so disjoint ranges can be scanned in parallel and their
    /// per-customer results simply concatenated.
    pub fn scan_buckets<E: From<StorageError>>(
        &self,
        vis: Visibility,
        buckets: std::ops::Range<u16>,
        mut f: impl FnMut(EventRef<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let admitted = self.batches_recorded_by(vis.recorded_max, u64::MAX)?;
        let vault = self.vault.read().map_err(lock_err)?;
        // The plaintexts of a group of records opened together, and where each ends.
        let (mut plain, mut ends) = (Vec::new(), Vec::new());
        // Records are sorted by handle within a block: reuse the key across a customer's run.
        let mut key: Option<(u128, crate::vault::Key)> = None;
        let start = block::block_key(buckets.start, 0);
        let end = (buckets.end < block::BUCKETS).then(|| block::block_key(buckets.end, 0));
        self.visit_blocks(&start, end.as_ref().map(|e| &e[..]), |_, span, v| {
            if !admits_span(&admitted, span) {
                return Ok(ControlFlow::Continue(()));
            }
            // Opened `LANES` at a time (see `open_all`), and handed to `f` in storage order.
            let mut group: Vec<(Record<'_>, crate::vault::Key)> = Vec::with_capacity(LANES);
            block::for_each::<E>(span.first, v, |r| {
                if r.erased() || !admits(&admitted, vis, &r) {
                    return Ok(());
                }
                let k = match key {
                    Some((h, k)) if h == r.handle => k,
                    _ => {
                        let k = *vault
                            .get(r.handle)
                            .ok_or_else(|| StorageError::MissingKey(format!("{:032x}", r.handle)))?;
                        key = Some((r.handle, k));
                        k
                    }
                };
                group.push((r, k));
                if group.len() == LANES {
                    open_group(&mut group, &mut plain, &mut ends, &mut f)?;
                }
                Ok(())
            })?;
            open_group(&mut group, &mut plain, &mut ends, &mut f)?;
            Ok(ControlFlow::Continue(()))
        })
    }

    /// Walks the whole log: recomputes the hash chain over every event id, and the hash of
    /// every event whose payload is present; erased events are counted, not rehashed.
    pub fn verify(&self) -> Result<VerifyReport> {
        let batches = self.batches()?;
        // Global sequence number of every id, to name the first event that fails.
        let mut seq_of: HashMap<EventId, (u64, u64)> = HashMap::new();
        let chains = batches
            .iter()
            .map(|b| {
                let value = self.chain(b.seq)?.ok_or(StorageError::Verify {
                    seq: b.first_event,
                    reason: format!("batch {} has no chain entry", b.seq),
                })?;
                Chain::decode(value, b.events).map_err(|reason| StorageError::Verify {
                    seq: b.first_event,
                    reason: format!("batch {}: {reason}", b.seq),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let in_block_order = self.ids_in_block_order(&chains)?;
        let mut head = GENESIS;
        let mut next_event = 0u64;
        for ((b, chain), in_blocks) in batches.iter().zip(&chains).zip(&in_block_order) {
            if b.head_before != head || b.first_event != next_event {
                return Err(StorageError::Verify {
                    seq: b.first_event,
                    reason: format!("batch {} does not continue the batch before it", b.seq),
                });
            }
            let ids = chain.ids(in_blocks).map_err(|reason| StorageError::Verify {
                seq: b.first_event,
                reason: format!("batch {}: {reason}", b.seq),
            })?;
            for (i, id) in ids.into_iter().enumerate() {
                head = extend_head(&head, &id);
                seq_of.insert(id, (b.first_event + i as u64, b.seq));
            }
            if head != b.head_after {
                return Err(StorageError::Verify {
                    seq: b.first_event + b.events - 1,
                    reason: format!("hash chain of batch {} does not reach its recorded head", b.seq),
                });
            }
            next_event += b.events;
        }
        let mut seen = vec![false; next_event as usize];
        let mut erased = 0u64;
        let mut erasures = std::collections::BTreeMap::new();
        let vault = self.vault.read().map_err(lock_err)?;
        let committed = batches.len() as u64;
        let indexed = self.indexed_ids()?;
        self.visit_blocks::<StorageError>(&[], None, |bucket, span, v| {
            block::for_each(span.first, v, |r| {
                if r.batch > committed {
                    // Being appended now: not part of the log yet.
                    return Ok(());
                }
                let first_event = |batch: u64| {
                    let i = batch.checked_sub(1).and_then(|i| usize::try_from(i).ok());
                    i.and_then(|i| batches.get(i)).map_or(0, |b| b.first_event)
                };
                let (seq, batch) = *seq_of.get(&r.id).ok_or_else(|| StorageError::Verify {
                    seq: first_event(r.batch),
                    reason: format!(
                        "block ({bucket}, {}) holds event {} that is not in the chain",
                        span.first,
                        envelope::hex(&r.id)
                    ),
                })?;
                let fail = |reason: String| StorageError::Verify { seq, reason };
                if std::mem::replace(&mut seen[seq as usize], true) {
                    return Err(fail("event stored twice".into()));
                }
                if block::bucket_of(r.handle) != bucket {
                    return Err(fail("event stored under the wrong bucket".into()));
                }
                if r.batch != batch {
                    return Err(fail(format!(
                        "stored as of batch {} but chained in batch {batch}",
                        r.batch
                    )));
                }
                if !indexed.get(&bucket).is_some_and(|ids| ids.contains(&prefix(&r.id))) {
                    return Err(fail("event missing from the duplicate-check index (block_ids)".into()));
                }
                if let Some(request) = r.erasure_request().map_err(|e| fail(e.to_string()))? {
                    erased += 1;
                    *erasures.entry(request).or_insert(0u64) += 1;
                    return Ok(());
                }
                let env = open_record(&vault, &r).map_err(|e| fail(e.to_string()))?;
                if envelope::event_id(&env) != r.id {
                    return Err(fail("payload does not hash to its event id".into()));
                }
                let e = envelope::decode(&env).map_err(|e| fail(e.to_string()))?;
                if e.kind != r.kind || e.event_time != r.event_time || envelope::subject_handle(e.subject) != r.handle {
                    return Err(fail("record header disagrees with its payload".into()));
                }
                Ok(())
            })?;
            // After the records, which name a damaged event where they can: a profile reads a
            // run by its check alone.
            block::check_runs(span.first, v).map_err(|e| StorageError::Verify {
                seq: (span.first as usize)
                    .checked_sub(1)
                    .and_then(|i| batches.get(i))
                    .map_or(0, |b| b.first_event),
                reason: format!("block ({bucket}, {}): {e}", span.first),
            })?;
            Ok(ControlFlow::Continue(()))
        })?;
        if let Some(missing) = seen.iter().position(|s| !s) {
            return Err(StorageError::Verify {
                seq: missing as u64,
                reason: "event in the chain has no stored record".into(),
            });
        }
        Ok(VerifyReport {
            batches: committed,
            events: next_event,
            erased,
            erasures,
            head,
        })
    }

    /// For each batch whose chain is positions (see `chain`), its ids as the blocks hold them,
    /// in block order: a walk of the blocks meets every bucket in order, and a batch's records
    /// of one bucket in one block (a merge takes blocks whole), sorted.
    fn ids_in_block_order(&self, chains: &[Chain]) -> Result<Vec<Vec<EventId>>> {
        let mut ids = vec![Vec::new(); chains.len()];
        if !chains.iter().any(Chain::needs_blocks) {
            return Ok(ids);
        }
        self.visit_blocks::<StorageError>(&[], None, |_, span, v| {
            block::for_each::<StorageError>(span.first, v, |r| {
                let i = usize::try_from(r.batch.wrapping_sub(1)).unwrap_or(usize::MAX);
                if chains.get(i).is_some_and(Chain::needs_blocks) {
                    ids[i].push(r.id);
                }
                Ok(())
            })?;
            Ok(ControlFlow::Continue(()))
        })?;
        Ok(ids)
    }

    /// Erases every event of `subject` (a data-subject request): each record keeps its id,
    /// times and kind, so the hash chain still verifies, but its sealed payload is replaced by
    /// a tombstone naming `request`; then the subject's key is destroyed, which makes any copy
    /// of the payloads sled still keeps in old pages unreadable. Returns how many events were
    /// erased now (0 when they all were already). Durable on return; an erasure interrupted
    /// by a crash is finished when the store is next opened.
    pub fn erase(&self, subject: &str, request: u64) -> Result<u64> {
        Ok(self.erase_all(&[(subject, request)])?.iter().sum())
    }

    /// [`EventLog::erase`] of several subjects, each for its own request, with one marker, one
    /// flush of the rewritten blocks and one rewrite of `keys.bin` for all of them. Returns how
    /// many events each erasure erased now, in order.
    pub fn erase_all(&self, erasures: &[(&str, u64)]) -> Result<Vec<u64>> {
        // Appends are excluded meanwhile: none may seal under a key about to be destroyed.
        let _appender = self.appender.lock().map_err(lock_err)?;
        let mut marker = Vec::with_capacity(erasures.len() * MARKER_ENTRY);
        let mut entries = Vec::with_capacity(erasures.len());
        for &(subject, request) in erasures {
            let handle = envelope::subject_handle(subject);
            marker.extend_from_slice(&handle.to_be_bytes());
            marker.extend_from_slice(&request.to_be_bytes());
            entries.push((handle, request));
        }
        self.kv.insert(TreeName::Meta, ERASING, &marker)?;
        self.kv.flush()?;
        self.finish_erasure(&entries)
    }

    fn finish_erasure(&self, entries: &[(envelope::Handle, u64)]) -> Result<Vec<u64>> {
        let mut counts = Vec::with_capacity(entries.len());
        for &(handle, request) in entries {
            counts.push(self.tombstone(handle, request)?);
        }
        self.kv.flush()?;
        let handles: Vec<envelope::Handle> = entries.iter().map(|(h, _)| *h).collect();
        self.vault.write().map_err(lock_err)?.destroy(&handles)?;
        self.kv.remove(TreeName::Meta, ERASING)?;
        self.kv.flush()?;
        Ok(counts)
    }

    /// Replaces the live records of `handle` by tombstones of `request`, in every block of its
    /// bucket (covered ones too: what a merge left behind is erased like the rest). Written,
    /// not flushed; the next subject's visit of the same bucket reads these writes.
    fn tombstone(&self, handle: envelope::Handle, request: u64) -> Result<u64> {
        let bucket = block::bucket_of(handle);
        let tombstone = request.to_be_bytes();
        let mut rewrites = Vec::new();
        let mut erased = 0u64;
        let (start, end) = block::bucket_range(bucket);
        self.kv.visit(TreeName::Blocks, &start, Some(&end), &mut |k, v| {
            let (_, first) = block::split_block_key(k)?;
            let (span, mut records) = block::decode(first, v)?;
            let mut changed = false;
            for r in records.iter_mut().filter(|r| r.handle == handle && !r.erased()) {
                // A tombstone is no envelope's tail.
                r.flags = block::FLAG_ERASED;
                r.sealed = &tombstone;
                changed = true;
                erased += 1;
            }
            if changed {
                rewrites.push((k.to_vec(), block::encode(span, &records)?));
            }
            Ok(ControlFlow::Continue(()))
        })?;
        let rewrites: Vec<(&[u8], &[u8])> = rewrites.iter().map(|(k, v)| (&k[..], &v[..])).collect();
        self.kv.insert_all(TreeName::Blocks, &rewrites)?;
        Ok(erased)
    }

    /// Finishes an erasure a crash interrupted (see [`EventLog::erase_all`]).
    fn recover_erasure(&self) -> Result<()> {
        let Some(m) = self.kv.get(TreeName::Meta, ERASING)? else {
            return Ok(());
        };
        if m.is_empty() || m.len() % MARKER_ENTRY != 0 {
            return Err(StorageError::Corrupt("erasure marker".into()));
        }
        let entries: Vec<(envelope::Handle, u64)> = m
            .chunks_exact(MARKER_ENTRY)
            .map(|e| {
                let (handle, request) = e.split_at(16);
                let mut h = [0u8; 16];
                h.copy_from_slice(handle);
                let mut r = [0u8; 8];
                r.copy_from_slice(request);
                (u128::from_be_bytes(h), u64::from_be_bytes(r))
            })
            .collect();
        tracing::warn!(erasures = entries.len(), "finishing an erasure interrupted by a crash");
        self.finish_erasure(&entries).map(|_| ())
    }
}

/// Gives every block without a `block_ids` entry its entry (the migration to store format 3),
/// in chunks, since a visitor may not write. Returns how many were given one.
pub(crate) fn index_block_ids(kv: &dyn Kv) -> Result<u64> {
    const CHUNK: usize = 4096;
    let mut indexed = 0;
    let mut start = Vec::new();
    loop {
        let mut chunk: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut next = None;
        kv.visit(TreeName::Blocks, &start, None, &mut |k, v| {
            if chunk.len() >= CHUNK {
                next = Some(k.to_vec());
                return Ok(ControlFlow::Break(()));
            }
            let (_, first) = block::split_block_key(k)?;
            let mut ids = Vec::new();
            let span = block::for_each::<StorageError>(first, v, |r| {
                ids.push(prefix(&r.id));
                Ok(())
            })?;
            chunk.push((k.to_vec(), idset::encode_ids(span.last, &mut ids)));
            Ok(ControlFlow::Continue(()))
        })?;
        for (k, v) in &chunk {
            if kv.get(TreeName::BlockIds, k)?.is_none() {
                kv.insert(TreeName::BlockIds, k, v)?;
                indexed += 1;
            }
        }
        match next {
            Some(k) => start = k,
            None => return Ok(indexed),
        }
    }
}

/// Opens `group`'s payloads together, hands each event to `f` in order and empties `group`.
fn open_group<E: From<StorageError>>(
    group: &mut Vec<(Record<'_>, crate::vault::Key)>,
    plain: &mut Vec<u8>,
    ends: &mut Vec<usize>,
    f: &mut impl FnMut(EventRef<'_>) -> Result<(), E>,
) -> Result<(), E> {
    open_all(group.iter().map(|(r, k)| (k, &r.id, r.sealed)), plain, ends);
    let mut from = 0;
    for ((r, _), &to) in group.iter().zip(ends.iter()) {
        let e = if r.flags & block::FLAG_TAIL != 0 {
            envelope::decode_tail(r.kind, r.event_time, &plain[from..to])?
        } else {
            envelope::decode(&plain[from..to])?
        };
        from = to;
        f(EventRef {
            id: &r.id,
            handle: r.handle,
            kind: r.kind,
            subject: e.subject,
            event_time: r.event_time,
            recorded_at: r.recorded_at,
            body: e.body,
        })?;
    }
    group.clear();
    Ok(())
}

/// The block a visit met last, and the batches it holds: a later block of the same bucket
/// within them is an input a merge was interrupted before removing, whose records the segment
/// holds (see `compaction`), and is skipped.
#[derive(Default)]
struct Covered(Option<(u16, u64)>);

impl Covered {
    fn skips(&self, bucket: u16, first: u64) -> bool {
        matches!(self.0, Some((b, last)) if b == bucket && first <= last)
    }

    fn by(&mut self, bucket: u16, span: Span) {
        self.0 = Some((bucket, span.last));
    }
}

/// Whether any batch of `span` may hold a visible event (see [`EventLog::batches_recorded_by`]).
fn admits_span(admitted: &[bool], span: Span) -> bool {
    let last = span.last.min(admitted.len().saturating_sub(1) as u64);
    (span.first..=last).any(|b| admitted[b as usize])
}

/// Whether a read under `vis` sees `r`: committed, and within both times.
fn admits(admitted: &[bool], vis: Visibility, r: &Record<'_>) -> bool {
    admitted.get(r.batch as usize).copied().unwrap_or(false) && vis.admits(r)
}

/// Meta key of an erasure in progress: (handle (16) ‖ request (8)) for each subject.
const ERASING: &[u8] = b"erasing";
const MARKER_ENTRY: usize = 24;

/// The whole envelope of a live record, opened.
fn open_record(vault: &Vault, r: &Record<'_>) -> Result<Vec<u8>> {
    let key = vault
        .get(r.handle)
        .ok_or_else(|| StorageError::MissingKey(format!("{:032x}", r.handle)))?;
    let mut env = if r.flags & block::FLAG_TAIL != 0 {
        envelope::head_before_tail(r.kind, r.event_time, r.sealed.len())
    } else {
        Vec::with_capacity(r.sealed.len())
    };
    let at = env.len();
    env.extend_from_slice(r.sealed);
    apply_cipher(key, &r.id, &mut env[at..]);
    Ok(env)
}

/// `head' = blake3(head || event_id)`.
pub fn extend_head(head: &Head, id: &EventId) -> Head {
    let mut h = blake3::Hasher::new();
    h.update(head);
    h.update(id);
    *h.finalize().as_bytes()
}

fn by_recorded_key(min_recorded: i64, batch: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&envelope::sortable_i64(min_recorded));
    k[8..].copy_from_slice(&be(batch));
    k
}

fn by_recorded_batch(key: &[u8]) -> Result<u64> {
    let b: [u8; 8] = key
        .get(8..16)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| StorageError::Corrupt("by_recorded key".into()))?;
    Ok(u64::from_be_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::MemKv;

    fn ev(subject: &str, t: i64, rec: i64, body: &[u8]) -> NewEvent {
        NewEvent {
            kind: 1,
            subject: subject.into(),
            event_time: t,
            recorded_at: rec,
            body: body.to_vec(),
        }
    }

    fn mem_log() -> (Arc<MemKv>, EventLog) {
        let kv = Arc::new(MemKv::default());
        let log = EventLog::open(kv.clone(), Vault::in_memory()).expect("opens");
        (kv, log)
    }

    fn sample() -> Vec<NewEvent> {
        (0..50)
            .map(|i| ev(&format!("c{}", i % 7), i, i + 10, format!("b{i}").as_bytes()))
            .collect()
    }

    #[test]
    fn appending_twice_is_appending_once() {
        let (_, log) = mem_log();
        let first = log.append(sample(), 1, 0).expect("append");
        assert_eq!((first.appended, first.duplicates), (50, 0));
        let second = log.append(sample(), 2, 0).expect("append");
        assert_eq!((second.appended, second.duplicates, second.batch), (0, 50, None));
        assert_eq!(second.head, first.head);
        // Duplicates inside one batch count once too.
        let mut twice = vec![ev("x", 1, 1, b"same")];
        twice.push(twice[0].clone());
        let third = log.append(twice, 3, 0).expect("append");
        assert_eq!((third.appended, third.duplicates), (1, 1));
        assert_eq!(log.verify().expect("verifies").events, 51);
    }

    #[test]
    fn a_batch_split_over_two_threads_is_the_same_events_appended_in_small_batches() {
        // Many events per customer bucket and a few buckets of one event, some subjects sharing
        // a bucket; duplicates within the big batch and of events stored before it.
        let base: Vec<NewEvent> = (0..6000)
            .map(|i| ev(&format!("c{}", i % 1999), i / 3, i + 7, format!("e{i}").as_bytes()))
            .collect();
        let mut big = base.clone();
        big.extend_from_slice(&base[..2000]);
        assert!(
            big.len() >= PARALLEL_FROM && 1000 < PARALLEL_FROM,
            "one split batch, small ones not split"
        );
        let (_, split) = mem_log();
        split.append(base[..1000].to_vec(), 1, 0).expect("append");
        let out = split.append(big.clone(), 1, 0).expect("append");
        assert_eq!((out.appended, out.duplicates), (5000, 3000));

        let (_, small) = mem_log();
        small.append(base[..1000].to_vec(), 1, 0).expect("append");
        let (mut appended, mut duplicates) = (0, 0);
        for part in big.chunks(1000) {
            let o = small.append(part.to_vec(), 1, 0).expect("append");
            appended += o.appended;
            duplicates += o.duplicates;
        }
        assert_eq!((appended, duplicates), (5000, 3000));
        assert_eq!(out.head, small.head().expect("head"), "the chain is in append order");
        let (a, b) = (split.verify().expect("verifies"), small.verify().expect("verifies"));
        assert_eq!((a.events, a.head), (b.events, b.head));
        let seen = |log: &EventLog, subject: &str| -> Vec<(EventId, i64, i64, Vec<u8>)> {
            log.subject_events(subject, Visibility::ALL)
                .expect("read")
                .into_iter()
                .map(|e| match e {
                    Entry::Live(e) => (e.id, e.event_time, e.recorded_at, e.body),
                    Entry::Erased { .. } => panic!("nothing is erased"),
                })
                .collect()
        };
        for c in (0..1999).step_by(97) {
            let subject = format!("c{c}");
            let got = seen(&split, &subject);
            assert!(got.len() >= 3, "{subject}");
            assert_eq!(got, seen(&small, &subject), "{subject}");
        }
    }

    #[test]
    fn head_chains_over_event_ids_in_append_order() {
        let (_, log) = mem_log();
        let events = sample();
        let out = log.append(events.clone(), 1, 0).expect("append");
        let mut head = GENESIS;
        for e in &events {
            head = extend_head(&head, &envelope::event_id(&e.envelope().expect("envelope")));
        }
        assert_eq!(out.head, head);
        assert_eq!(log.head_at(-1).expect("head"), (0, GENESIS));
        assert_eq!(log.head_at(0).expect("head"), (1, head));
    }

    #[test]
    fn reads_filter_by_event_time_and_recorded_at() {
        let (_, log) = mem_log();
        log.append(sample(), 1, 0).expect("append");
        let vis = Visibility {
            event_time_max: 30,
            recorded_max: 35,
        };
        let got = log.subject_events("c3", vis).expect("read");
        let times: Vec<i64> = got
            .iter()
            .map(|e| match e {
                Entry::Live(e) => e.event_time,
                Entry::Erased { .. } => -1,
            })
            .collect();
        // c3 has events at 3, 10, 17, 24, 31, ...; recorded 10 later; K = 35 admits up to t = 25.
        assert_eq!(times, [3, 10, 17, 24]);
        let mut scanned = 0;
        log.scan(vis, |e| {
            assert!(e.event_time <= 30 && e.recorded_at <= 35);
            scanned += 1;
            Ok::<_, StorageError>(())
        })
        .expect("scan");
        assert_eq!(scanned, 26);
    }

    /// A caller's own error, not a storage one: what a scan's visitor may fail with.
    #[derive(Debug, PartialEq)]
    enum Caller {
        Stop(u64),
        Storage(String),
    }

    impl From<StorageError> for Caller {
        fn from(e: StorageError) -> Self {
            Caller::Storage(e.to_string())
        }
    }

    #[test]
    fn a_visitors_own_error_stops_the_scan_and_comes_back_unchanged() {
        let (_, log) = mem_log();
        log.append(sample(), 1, 0).expect("append");
        let mut seen = 0u64;
        let got = log.scan(Visibility::ALL, |_| {
            seen += 1;
            if seen == 3 {
                return Err(Caller::Stop(seen));
            }
            Ok(())
        });
        assert_eq!(got, Err(Caller::Stop(3)));
        assert_eq!(seen, 3, "the scan went on after the visitor failed");
    }

    fn tamper_block(kv: &MemKv, f: impl Fn(&mut Vec<u8>)) {
        let mut first = None;
        kv.visit(TreeName::Blocks, &[], None, &mut |k, v| {
            first = Some((k.to_vec(), v.to_vec()));
            Ok(ControlFlow::Break(()))
        })
        .expect("visit");
        let (k, mut v) = first.expect("a block");
        f(&mut v);
        kv.insert(TreeName::Blocks, &k, &v).expect("insert");
    }

    #[test]
    fn verify_names_the_tampered_event() {
        let (kv, log) = mem_log();
        log.append(sample(), 1, 0).expect("append");
        // Flip the last byte of the block: the sealed payload of its last record.
        tamper_block(&kv, |v| {
            if let Some(b) = v.last_mut() {
                *b ^= 1;
            }
        });
        match log.verify() {
            Err(StorageError::Verify { seq, reason }) => {
                assert!(seq < 50);
                assert!(reason.contains("hash") || reason.contains("envelope"), "{reason}");
            }
            other => panic!("expected a verification failure, got {other:?}"),
        }
    }

    #[test]
    fn verify_catches_a_segment_record_moved_to_another_batch_or_out_of_the_index() {
        for tamper in ["batch", "index"] {
            let (kv, log) = mem_log();
            log.append(sample(), 1, 0).expect("append");
            // Every customer again, so every bucket's two blocks merge into a segment.
            let later = (0..7).map(|i| ev(&format!("c{i}"), 99, 99, b"later")).collect();
            log.append(later, 1, 0).expect("append");
            log.compact(Compaction::Full).expect("compact");
            assert!(log.verify().is_ok());
            match tamper {
                // A segment's first record moved to the segment's last batch.
                "batch" => tamper_block(&kv, |v| {
                    let first = block::span(1, v).expect("a segment").first;
                    let (span, mut records) = block::decode(first, v).expect("decodes");
                    assert_ne!(records[0].batch, span.last, "the first record is of another batch");
                    records[0].batch = span.last;
                    let moved = block::encode(span, &records).expect("encodes");
                    *v = moved;
                }),
                _ => {
                    let (k, v) = kv.last(TreeName::BlockIds).expect("last").expect("an entry");
                    kv.insert(TreeName::BlockIds, &k, &v[..v.len() - 16]).expect("insert");
                }
            }
            let Err(StorageError::Verify { reason, .. }) = log.verify() else {
                panic!("{tamper}: the tampering verifies");
            };
            // A record moved out of its batch leaves the batch's chain a place short.
            let expected = if tamper == "batch" {
                "batch 1: its blocks hold 49 of its 50 events"
            } else {
                "duplicate-check index"
            };
            assert!(reason.contains(expected), "{tamper}: {reason}");
        }
    }

    #[test]
    fn a_read_through_a_batch_sees_the_log_as_it_was_after_it() {
        let (_, log) = mem_log();
        log.append(vec![ev("c", 1, 1, b"first")], 1, 0).expect("append");
        log.append(vec![ev("c", 2, 2, b"second")], 2, 0).expect("append");
        let count = |through| {
            log.subject_events_through("c", Visibility::ALL, through)
                .expect("read")
                .len()
        };
        assert_eq!((count(0), count(1), count(2), count(u64::MAX)), (0, 1, 2, 2));
        assert_eq!(log.subject_events("c", Visibility::ALL).expect("read").len(), 2);
    }

    #[test]
    fn a_batch_chains_its_ids_by_their_places_in_block_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = dir.path().join("keys.bin");
        let kv = Arc::new(MemKv::default());
        let log = EventLog::open(kv.clone(), Vault::open(&keys).expect("vault")).expect("opens");
        let many: Vec<NewEvent> = (0..300i64)
            .map(|i| ev(&format!("c{}", i % 97), 1000 - i, i, format!("e{i}").as_bytes()))
            .collect();
        let first = log.append(many.clone(), 1, 0).expect("append");
        let value = kv.get(TreeName::Chain, &be(1)).expect("get").expect("one chain value");
        assert_eq!(value.len(), 1 + 2 * many.len(), "two bytes a place for 300 events");
        let report = log.verify().expect("verifies");
        assert_eq!((report.events, report.head), (many.len() as u64, first.head));

        // A store written before format 9 holds the ids themselves, read as they are.
        let ids: Vec<u8> = many
            .iter()
            .flat_map(|e| envelope::event_id(&e.envelope().expect("envelope")))
            .collect();
        kv.insert(TreeName::Chain, &be(1), &ids).expect("a chain of ids");
        assert_eq!(log.verify().expect("verifies").head, first.head);

        // A batch left uncommitted by a crash goes whole on reopen, its chain value too.
        log.append(vec![ev("late", 1, 1, b"l")], 2, 0).expect("append");
        kv.remove(TreeName::Batches, &be(2)).expect("drop the commit record");
        kv.insert(TreeName::Meta, b"pending", &be(2)).expect("pending");
        drop(log);
        let log = EventLog::open(kv.clone(), Vault::open(&keys).expect("vault")).expect("reopens");
        assert!(log.chain_keys(2).expect("keys").is_empty());
        assert_eq!(log.verify().expect("verifies").head, first.head);
    }

    #[test]
    fn an_event_whose_id_prefix_is_already_stored_is_still_appended() {
        let (kv, log) = mem_log();
        log.append(sample(), 1, 0).expect("append");
        let late = ev("c3", 500, 500, b"shares a prefix");
        let id = envelope::event_id(&late.envelope().expect("envelope"));
        // As if a stored event's id began with the same 8 bytes.
        let key = block::block_key(block::bucket_of(envelope::subject_handle("c3")), 1);
        let entry = kv.get(TreeName::BlockIds, &key).expect("get").expect("c3's entry");
        let (last, ids) = idset::decode_ids(&entry).expect("decodes");
        let mut ids: Vec<u64> = ids.chain([prefix(&id)]).collect();
        kv.insert(TreeName::BlockIds, &key, &idset::encode_ids(last, &mut ids))
            .expect("insert");

        let out = log.append(vec![late.clone()], 2, 0).expect("append");
        assert_eq!(
            (out.appended, out.duplicates),
            (1, 0),
            "a shared prefix is no duplicate"
        );
        let again = log.append(vec![late.clone()], 2, 0).expect("append");
        assert_eq!((again.appended, again.duplicates), (0, 1), "the same run knows it now");
        let rerun = log.append(vec![late], 3, 0).expect("append");
        assert_eq!(
            (rerun.appended, rerun.duplicates),
            (0, 1),
            "a new run reads it from the blocks"
        );
        assert_eq!(log.verify().expect("verifies").events, 51);
    }

    #[test]
    fn verify_detects_a_broken_chain() {
        let (kv, log) = mem_log();
        log.append(sample(), 1, 0).expect("append");
        let mut chain = kv.get(TreeName::Chain, &be(1)).expect("get").expect("chain");
        chain.swap(1, 2);
        kv.insert(TreeName::Chain, &be(1), &chain).expect("insert");
        assert!(matches!(log.verify(), Err(StorageError::Verify { .. })));
        chain.swap(1, 2);
        chain[2] = chain[1];
        kv.insert(TreeName::Chain, &be(1), &chain).expect("insert");
        let err = log.verify().expect_err("a place named twice");
        assert!(err.to_string().contains("twice"), "{err}");
    }

    #[test]
    fn an_uncommitted_batch_is_removed_on_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = dir.path().join("keys.bin");
        let kv = Arc::new(MemKv::default());
        let log = EventLog::open(kv.clone(), Vault::open(&keys).expect("vault")).expect("opens");
        let committed = log.append(sample(), 1, 0).expect("append");
        // Simulate a crash after batch 2's blocks were written but before its record.
        kv.insert(TreeName::Meta, b"pending", &be(2)).expect("pending");
        kv.insert(TreeName::Blocks, &block::block_key(17, 2), b"garbage")
            .expect("orphan");
        kv.insert(TreeName::Chain, &be(2), &[0u8; 32]).expect("orphan chain");
        drop(log);
        let log = EventLog::open(kv.clone(), Vault::open(&keys).expect("vault")).expect("reopens");
        assert_eq!(kv.get(TreeName::Blocks, &block::block_key(17, 2)).expect("get"), None);
        assert_eq!(log.verify().expect("verifies").head, committed.head);
        let next = log.append(vec![ev("z", 1, 1, b"new")], 2, 0).expect("append");
        assert_eq!(next.batch.map(|b| b.seq), Some(2));
        assert_eq!(log.verify().expect("verifies").events, 51);
    }

    #[test]
    fn erase_leaves_tombstones_that_verify_and_drops_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = dir.path().join("keys.bin");
        let kv = Arc::new(MemKv::default());
        let log = EventLog::open(kv.clone(), Vault::open(&keys).expect("vault")).expect("opens");
        let before = log.append(sample(), 1, 0).expect("append");
        let key = *log
            .vault
            .read()
            .expect("vault")
            .get(envelope::subject_handle("c3"))
            .expect("key");
        assert_eq!(log.erase("c3", 7).expect("erase"), 7);
        assert_eq!(
            log.erase("c3", 8).expect("again"),
            0,
            "erasing twice erases nothing more"
        );
        let report = log.verify().expect("verifies after erasure");
        assert_eq!((report.events, report.erased, report.head), (50, 7, before.head));
        assert_eq!(report.erasures.into_iter().collect::<Vec<_>>(), [(7, 7)]);
        let entries = log.subject_events("c3", Visibility::ALL).expect("read");
        assert_eq!(entries.len(), 7);
        assert!(entries.iter().all(|e| matches!(e, Entry::Erased { request: 7, .. })));
        let mut others = 0;
        log.scan(Visibility::ALL, |e| {
            assert_ne!(e.subject, "c3");
            others += 1;
            Ok::<_, StorageError>(())
        })
        .expect("scan");
        assert_eq!(others, 43);
        let file = std::fs::read(&keys).expect("keys.bin");
        assert!(
            !file.windows(32).any(|w| w == key),
            "the destroyed key is still in keys.bin"
        );
    }

    /// Two subjects whose events share a bucket (so their erasures rewrite the same blocks).
    fn same_bucket_pair() -> (String, String) {
        let mut names = same_bucket(2).into_iter();
        (names.next().unwrap_or_default(), names.next().unwrap_or_default())
    }

    /// `n` subjects of one bucket.
    fn same_bucket(n: usize) -> Vec<String> {
        let mut seen: std::collections::BTreeMap<u16, Vec<String>> = std::collections::BTreeMap::new();
        for i in 0.. {
            let name = format!("s{i}");
            let names = seen
                .entry(block::bucket_of(envelope::subject_handle(&name)))
                .or_default();
            names.push(name);
            if names.len() == n {
                return names.clone();
            }
        }
        unreachable!("the loop returns")
    }

    #[test]
    fn a_customer_of_a_large_block_is_read_from_its_run_alone() {
        let names = same_bucket(6);
        let events = |batch: i64| -> Vec<NewEvent> {
            let per = if batch == 1 { 40 } else { 3 };
            names
                .iter()
                .flat_map(|n| (0..per).map(move |i| ev(n, batch * 100 + i, batch * 100 + i, &[b'x'; 64])))
                .collect()
        };
        let (kv, log) = mem_log();
        log.append(events(1), 1, 0).expect("append");
        log.append(events(2), 2, 0).expect("append");
        let big = crate::kv::entries(kv.as_ref(), TreeName::Blocks)
            .into_iter()
            .find(|(_, v)| v.len() > block::FRONT)
            .expect("a block past the front a reader reads first");
        let whole_read = |name: &str| -> Vec<(EventId, i64)> {
            let mut got = Vec::new();
            log.scan(Visibility::ALL, |e| {
                if e.subject == name {
                    got.push((*e.id, e.event_time));
                }
                Ok::<_, StorageError>(())
            })
            .expect("scan");
            got.sort_by_key(|&(id, t)| (t, id));
            got
        };
        let customer_read = |name: &str| -> Result<Vec<(EventId, i64)>> {
            Ok(log
                .subject_events(name, Visibility::ALL)?
                .into_iter()
                .map(|e| match e {
                    Entry::Live(ev) => (ev.id, ev.event_time),
                    Entry::Erased { id, event_time, .. } => (id, event_time),
                })
                .collect())
        };
        for name in &names {
            assert_eq!(customer_read(name).expect("read"), whole_read(name), "{name}");
            assert_eq!(whole_read(name).len(), 43);
        }
        // Damage the last payload byte of one customer's run: that customer's read fails its
        // check, the others' runs read on, and verify names the block.
        let first = names[2].as_str();
        let (k, mut v) = big;
        let (_, key_batch) = block::split_block_key(&k).expect("key");
        let n = block::directory_len(key_batch, &v).expect("head").expect("a directory");
        let directory = block::Directory::parse(key_batch, &v[..n]).expect("directory");
        let (at, len) = directory
            .run(envelope::subject_handle(first))
            .expect("the customer's run")
            .range();
        v[at + len - 1] ^= 1;
        kv.insert(TreeName::Blocks, &k, &v).expect("insert");
        let err = customer_read(first).expect_err("a damaged run");
        assert!(err.to_string().contains("does not match its check"), "{err}");
        for name in names.iter().filter(|n| n.as_str() != first) {
            assert_eq!(customer_read(name).expect("read").len(), 43, "{name}");
        }
        assert!(matches!(log.verify(), Err(StorageError::Verify { .. })));
    }

    #[test]
    fn erasing_several_at_once_equals_erasing_them_one_by_one() {
        let (a, b) = same_bucket_pair();
        let events = || {
            let mut v = sample();
            v.extend((0..5).flat_map(|i| [ev(&a, i, i, b"a-payload"), ev(&b, i, i, b"b-payload")]));
            v
        };
        let (_, one_by_one) = mem_log();
        one_by_one.append(events(), 1, 0).expect("append");
        let singles = [
            one_by_one.erase(&a, 1).expect("a"),
            one_by_one.erase("c3", 2).expect("c3"),
            one_by_one.erase(&b, 3).expect("b"),
        ];
        let (_, together) = mem_log();
        together.append(events(), 1, 0).expect("append");
        let counts = together.erase_all(&[(&a, 1), ("c3", 2), (&b, 3)]).expect("erase all");
        assert_eq!(counts, singles);
        assert_eq!(counts, [5, 7, 5]);
        assert_eq!(together.verify().expect("verify"), one_by_one.verify().expect("verify"));
        for subject in [a.as_str(), b.as_str(), "c3", "c4"] {
            assert_eq!(
                together.subject_events(subject, Visibility::ALL).expect("read"),
                one_by_one.subject_events(subject, Visibility::ALL).expect("read"),
                "{subject}"
            );
        }
    }

    #[test]
    fn a_marker_for_several_erasures_is_finished_on_reopen() {
        let (a, b) = same_bucket_pair();
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = dir.path().join("keys.bin");
        let kv = Arc::new(MemKv::default());
        let log = EventLog::open(kv.clone(), Vault::open(&keys).expect("vault")).expect("opens");
        log.append(vec![ev(&a, 1, 1, b"a"), ev(&b, 2, 2, b"b"), ev("c", 3, 3, b"c")], 1, 0)
            .expect("append");
        let mut marker = Vec::new();
        for (subject, request) in [(&a, 4u64), (&b, 5)] {
            marker.extend_from_slice(&envelope::subject_handle(subject).to_be_bytes());
            marker.extend_from_slice(&request.to_be_bytes());
        }
        kv.insert(TreeName::Meta, ERASING, &marker).expect("marker");
        drop(log);
        let log = EventLog::open(kv.clone(), Vault::open(&keys).expect("vault")).expect("reopens");
        assert_eq!(kv.get(TreeName::Meta, ERASING).expect("get"), None);
        let report = log.verify().expect("verifies");
        assert_eq!((report.erasures.get(&4), report.erasures.get(&5)), (Some(&1), Some(&1)));
        assert_eq!(report.erased, 2, "c is untouched");
    }

    #[test]
    fn an_interrupted_erasure_is_finished_on_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = dir.path().join("keys.bin");
        let kv = Arc::new(MemKv::default());
        let log = EventLog::open(kv.clone(), Vault::open(&keys).expect("vault")).expect("opens");
        log.append(sample(), 1, 0).expect("append");
        // A crash right after the erasure marker was made durable.
        let mut marker = envelope::subject_handle("c5").to_be_bytes().to_vec();
        marker.extend_from_slice(&3u64.to_be_bytes());
        kv.insert(TreeName::Meta, ERASING, &marker).expect("marker");
        drop(log);
        let log = EventLog::open(kv.clone(), Vault::open(&keys).expect("vault")).expect("reopens");
        assert_eq!(kv.get(TreeName::Meta, ERASING).expect("get"), None);
        let report = log.verify().expect("verifies");
        assert_eq!(report.erasures.get(&3), Some(&7));
        assert!(log
            .vault
            .read()
            .expect("vault")
            .get(envelope::subject_handle("c5"))
            .is_none());
    }
}
