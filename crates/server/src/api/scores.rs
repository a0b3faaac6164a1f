//! Score sets in memory: a score artifact holds every customer (100k rows of JSON), so it is
//! parsed once per process into a map by customer id, never per request.
//!
//! Two levels: [`ScoreMeta`] (as-of, snapshot, models, what the set knows; a few hundred bytes,
//! kept for every score artifact seen) and the rows (tens of MB for 100k customers; at most
//! `max_loaded` sets are held, the least recently used is dropped).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use cis_storage::{unhex32, ArtifactHash, Store};
use serde::de::{IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::api::error::AppError;
use cis_core::artifact::{self, ArtifactError};
use cis_core::time::Timestamp;
use cis_core::AsOf;
use cis_features::snapshot::{self, Header, SnapshotError};
use cis_models::scores::{self, ScoreRow};
use cis_models::ModelKind;

/// What a score artifact is, without its rows.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreMeta {
    pub hash: ArtifactHash,
    pub as_of: Timestamp,
    pub created_at: Timestamp,
    /// The scored snapshot's hash (hex) and its known-at K.
    pub snapshot: String,
    pub snapshot_known_at: Timestamp,
    /// (kind, hash hex, as-of) of every model used.
    pub models: Vec<(ModelKind, String, Timestamp)>,
    pub rows: usize,
    /// The latest knowledge the set holds ([`scores::known_at`]).
    pub known_at: Timestamp,
}

pub type Rows = HashMap<String, ScoreRow>;
/// The score set a request uses and its rows, if any set is usable.
pub type Selected = Option<(Arc<Slot>, Arc<Rows>)>;

pub struct Slot {
    pub meta: ScoreMeta,
    rows: RwLock<Option<Arc<Rows>>>,
    load: Mutex<()>,
    used: AtomicU64,
}

pub struct ScoreCache {
    slots: RwLock<HashMap<ArtifactHash, Arc<Slot>>>,
    meta_load: Mutex<()>,
    tick: AtomicU64,
    max_loaded: usize,
}

impl Default for ScoreCache {
    fn default() -> Self {
        ScoreCache::new(4)
    }
}

/// Counts a JSON array's elements without building them.
struct Count(usize);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Count, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Count;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Count, A::Error> {
                let mut n = 0;
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    n += 1;
                }
                Ok(Count(n))
            }
        }
        d.deserialize_seq(V)
    }
}

/// A score set's body without its rows.
#[derive(Deserialize)]
struct Head {
    as_of: Timestamp,
    snapshot: String,
    models: Vec<(ModelKind, String)>,
    rows: Count,
}

fn load_meta(store: &Store, hash: &ArtifactHash) -> Result<ScoreMeta, AppError> {
    let a = artifact::fetch(store, hash, scores::KIND).map_err(AppError::internal)?;
    let head: Head = serde_json::from_slice(&a.body).map_err(AppError::internal)?;
    let snap_hash =
        unhex32(&head.snapshot).ok_or_else(|| AppError::internal("score set names a malformed snapshot hash"))?;
    let snap = artifact::fetch(store, &snap_hash, snapshot::KIND).map_err(|e| match e {
        ArtifactError::NotFound(_) => AppError::internal(format!("score set's snapshot {} is missing", head.snapshot)),
        other => AppError::internal(other),
    })?;
    let header = Header::decode(&snap.body)
        .map_err(|e| AppError::internal(SnapshotError::Malformed(head.snapshot.clone(), e)))?;
    let mut models = Vec::new();
    for (kind, h) in head.models {
        let bytes = unhex32(&h).ok_or_else(|| AppError::internal(format!("malformed model hash {h}")))?;
        let m = artifact::fetch(store, &bytes, kind.artifact_kind()).map_err(AppError::internal)?;
        models.push((kind, h, Timestamp::from_micros(m.as_of)));
    }
    let known_at = scores::known_at(header.known_at, models.iter().map(|m| m.2));
    Ok(ScoreMeta {
        hash: *hash,
        as_of: head.as_of,
        created_at: Timestamp::from_micros(a.created_at),
        snapshot: head.snapshot,
        snapshot_known_at: header.known_at,
        models,
        rows: head.rows.0,
        known_at,
    })
}

impl ScoreCache {
    /// A cache holding the rows of at most `max_loaded` (≥ 1) score sets at once.
    pub fn new(max_loaded: usize) -> ScoreCache {
        ScoreCache {
            slots: RwLock::new(HashMap::new()),
            meta_load: Mutex::new(()),
            tick: AtomicU64::new(0),
            max_loaded: max_loaded.max(1),
        }
    }

    /// Forgets everything (e.g. after an erasure rewrote a score artifact).
    pub fn clear(&self) {
        self.slots.write().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// The slot of a score artifact, reading its metadata on first use. Blocking.
    pub fn slot(&self, store: &Store, hash: &ArtifactHash) -> Result<Arc<Slot>, AppError> {
        if let Some(s) = self.held_slot(hash) {
            return Ok(s);
        }
        // One loader at a time: a burst of requests on a cold cache reads the artifact once.
        let _guard = self.meta_load.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = self.held_slot(hash) {
            return Ok(s);
        }
        let slot = Arc::new(Slot {
            meta: load_meta(store, hash)?,
            rows: RwLock::new(None),
            load: Mutex::new(()),
            used: AtomicU64::new(0),
        });
        self.slots
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(*hash, slot.clone());
        Ok(slot)
    }

    /// The latest score set usable at (T, K) ([`scores::usable_at`]). A small index scan of the
    /// sets as of T or before.
    pub fn select(&self, store: &Store, at: AsOf) -> Result<Option<Arc<Slot>>, AppError> {
        let found = self.select_with(store, at, |hash| self.slot(store, hash).map(Some))?;
        Ok(found.flatten())
    }

    /// [`select`](Self::select) with `slot` finding each candidate's slot: `None` from it
    /// (a slot it will not read) ends the search with `None`.
    fn select_with(
        &self,
        store: &Store,
        at: AsOf,
        slot: impl Fn(&ArtifactHash) -> Result<Option<Arc<Slot>>, AppError>,
    ) -> Result<Option<Option<Arc<Slot>>>, AppError> {
        for r in store.artifacts().list(scores::KIND, at.as_of.micros())?.iter().rev() {
            let Some(slot) = slot(&r.hash)? else {
                return Ok(None);
            };
            if scores::usable_at(slot.meta.as_of, slot.meta.known_at, at) {
                return Ok(Some(Some(slot)));
            }
        }
        Ok(Some(None))
    }

    /// What [`select`](Self::select) and [`rows`](Self::rows) would give, from memory only:
    /// `None` when finding it would read a score artifact (a set's metadata or rows not yet
    /// parsed). Still scans the small index of sets as of T (sled, held in its cache).
    pub fn select_held(&self, store: &Store, at: AsOf) -> Result<Option<Selected>, AppError> {
        let Some(found) = self.select_with(store, at, |hash| Ok(self.held_slot(hash)))? else {
            return Ok(None);
        };
        Ok(match found {
            None => Some(None),
            Some(slot) => self.held_rows(&slot).map(|rows| Some((slot, rows))),
        })
    }

    /// The slot of a score artifact if its metadata is in memory.
    fn held_slot(&self, hash: &ArtifactHash) -> Option<Arc<Slot>> {
        self.slots.read().unwrap_or_else(|p| p.into_inner()).get(hash).cloned()
    }

    /// A score set's rows if they are in memory, marking the set used.
    fn held_rows(&self, slot: &Slot) -> Option<Arc<Rows>> {
        slot.used
            .store(self.tick.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
        slot.rows.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The rows of a score set, parsed once. Blocking.
    pub fn rows(&self, store: &Store, slot: &Slot) -> Result<Arc<Rows>, AppError> {
        if let Some(rows) = self.held_rows(slot) {
            return Ok(rows);
        }
        let _guard = slot.load.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rows) = slot.rows.read().unwrap_or_else(|p| p.into_inner()).as_ref() {
            return Ok(rows.clone());
        }
        let (_, set) = scores::load_scores(store, &slot.meta.hash)?;
        let rows: Arc<Rows> = Arc::new(set.rows.into_iter().map(|r| (r.customer_id.clone(), r)).collect());
        *slot.rows.write().unwrap_or_else(|p| p.into_inner()) = Some(rows.clone());
        self.evict();
        Ok(rows)
    }

    /// Drops the rows of the least recently used sets beyond `max_loaded`.
    fn evict(&self) {
        let slots = self.slots.read().unwrap_or_else(|p| p.into_inner());
        let mut loaded: Vec<&Arc<Slot>> = slots
            .values()
            .filter(|s| s.rows.read().unwrap_or_else(|p| p.into_inner()).is_some())
            .collect();
        if loaded.len() <= self.max_loaded {
            return;
        }
        loaded.sort_by_key(|s| s.used.load(Ordering::Relaxed));
        let excess = loaded.len() - self.max_loaded;
        for s in loaded.into_iter().take(excess) {
            *s.rows.write().unwrap_or_else(|p| p.into_inner()) = None;
        }
    }

    /// How many score sets have their rows in memory.
    pub fn loaded(&self) -> usize {
        self.slots
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|s| s.rows.read().unwrap_or_else(|p| p.into_inner()).is_some())
            .count()
    }
}
