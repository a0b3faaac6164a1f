//! The API access log: who read what, when (a hash-chained ledger written off the request path).
//!
//! Every data read through the API (profile, artifact, snapshots, export, dashboard) becomes one
//! [`AccessRecord`] (JSON) in the `access` ledger of `cis_storage::ledger`: append-only, each
//! record chained to the previous one, so [`verify`] names the first record edited or removed.
//! A record holds the token's *name* (never the token), the route pattern, the customer id,
//! as-of and known-at as requested, the time the request arrived, and the response status.
//!
//! The request does not wait for a disk flush: the middleware hands the record to a bounded
//! queue ([`AccessLog::record`]); one writer thread owns the ledger, appends, and flushes when
//! [`AccessLogConfig::flush_records`] records are unflushed or the oldest unflushed one was
//! received [`AccessLogConfig::flush_interval`] ago, whichever comes first. So a crash loses at
//! most the last 256 records or 100 ms of records (the defaults), plus what is still queued; the
//! queue is only non-empty when the writer falls behind. A full queue is backpressure, never a
//! drop: the request waits (off the async workers) for room. If the writer stops (a storage
//! error), reads are refused with 500 rather than served unlogged. Dropping the last handle
//! drains the queue, flushes and joins the writer (graceful shutdown).
//!
//! One ledger handle per store per process: two would fork the chain. [`AccessLog::shared`]
//! hands every API state on the same store the same writer, and a new writer waits until the
//! previous one for that store has finished.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cis_storage::{Ledger, LedgerBroken, LedgerReport, StorageError, Store};
use serde::{Deserialize, Serialize};

use cis_core::time::Micros;

/// The ledger's name in the store.
pub const LEDGER: &str = "access";

#[derive(Debug, thiserror::Error)]
pub enum AccessLogError {
    #[error("the access log writer has stopped; reads are refused until the server is restarted")]
    Stopped,
    #[error("flushing the access log: {0}")]
    Flush(String),
    #[error("access log record {seq} is malformed: {reason}")]
    Record { seq: u64, reason: String },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// When the writer flushes, and how much it may queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessLogConfig {
    /// Off: reads are not logged (for the benchmark's baseline).
    pub enabled: bool,
    /// Flush once this many records are unflushed.
    pub flush_records: usize,
    /// Flush once the oldest unflushed record was received this long ago.
    pub flush_interval: Duration,
    /// Records queued between the requests and the writer before requests wait.
    pub queue: usize,
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        AccessLogConfig {
            enabled: true,
            flush_records: 256,
            flush_interval: Duration::from_millis(100),
            queue: 4096,
        }
    }
}

/// One read through the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessRecord {
    /// When the request arrived (RFC 3339 UTC in the ledger).
    #[serde(with = "rfc3339")]
    pub at: Micros,
    /// The name of the token that authorised it; null when there was no valid token (401).
    pub token: Option<String>,
    /// The route pattern, e.g. `/artifacts/{hash}`.
    pub endpoint: String,
    /// The request path, when the route has path parameters (which artifact was read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Query parameters as requested (not normalised; absent means not given).
    pub customer: Option<String>,
    pub as_of: Option<String>,
    pub known_at: Option<String>,
    pub status: u16,
}

mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&cis_core::time::format(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        let text = String::deserialize(d)?;
        cis_core::time::parse_timestamp(&text).map_err(serde::de::Error::custom)
    }
}

enum Msg {
    Record(AccessRecord),
    /// Append everything queued before this, flush, then answer.
    Flush(SyncSender<Result<(), String>>),
}

/// The writer of one store's access log; shared by every API state on that store.
pub struct AccessLog {
    /// `None` only while dropping.
    tx: Option<SyncSender<Msg>>,
    writer: Option<JoinHandle<()>>,
    /// Records flushed to disk by the writer.
    durable: Arc<AtomicU64>,
    /// Requests that found the queue full and waited.
    waits: AtomicU64,
}

/// Per store (by address, held by a `Weak` so that it is not reused): the writer in use, and
/// the turn a writer holds while it owns the ledger.
type Registry = Vec<(Weak<Store>, Weak<AccessLog>, Arc<Mutex<()>>)>;
static REGISTRY: Mutex<Registry> = Mutex::new(Vec::new());

impl AccessLog {
    /// The running writer of `store`'s access log, started if there is none.
    pub fn shared(store: &Arc<Store>, config: AccessLogConfig) -> Arc<AccessLog> {
        let mut registry = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
        registry.retain(|(s, _, _)| s.strong_count() > 0);
        let me = Arc::as_ptr(store);
        if let Some((_, log, turn)) = registry.iter_mut().find(|(s, _, _)| s.as_ptr() == me) {
            if let Some(running) = log.upgrade() {
                return running;
            }
            let started = Arc::new(AccessLog::start(store.clone(), turn.clone(), config));
            *log = Arc::downgrade(&started);
            return started;
        }
        let turn = Arc::new(Mutex::new(()));
        let started = Arc::new(AccessLog::start(store.clone(), turn.clone(), config));
        registry.push((Arc::downgrade(store), Arc::downgrade(&started), turn));
        started
    }

    fn start(store: Arc<Store>, turn: Arc<Mutex<()>>, config: AccessLogConfig) -> AccessLog {
        let (tx, rx) = mpsc::sync_channel(config.queue.max(1));
        let durable = Arc::new(AtomicU64::new(0));
        let counter = durable.clone();
        let spawned = std::thread::Builder::new()
            .name("cis-access-log".into())
            .spawn(move || {
                // Wait for a previous writer of this store to drain: one ledger handle at a time.
                let _turn = turn.lock().unwrap_or_else(|p| p.into_inner());
                let result = store
                    .ledger(LEDGER)
                    .and_then(|ledger| write_loop(&ledger, &rx, config, &counter));
                if let Err(e) = result {
                    tracing::error!(error = %e, "access log writer stopped: data reads are refused");
                }
            });
        let writer = spawned
            .map_err(|e| tracing::error!(error = %e, "cannot start the access log writer: data reads are refused"))
            .ok();
        AccessLog {
            // Without a writer the receiver is gone: every send reports `Stopped`.
            tx: Some(tx),
            writer,
            durable,
            waits: AtomicU64::new(0),
        }
    }

    fn sender(&self) -> Result<&SyncSender<Msg>, AccessLogError> {
        self.tx.as_ref().ok_or(AccessLogError::Stopped)
    }

    /// Queues a record. Waits (on tokio's blocking pool) only when the queue is full.
    pub async fn record(&self, r: AccessRecord) -> Result<(), AccessLogError> {
        let tx = self.sender()?;
        match tx.try_send(Msg::Record(r)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Disconnected(_)) => Err(AccessLogError::Stopped),
            Err(TrySendError::Full(msg)) => {
                let n = self.waits.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::warn!(waits = n, "access log queue full: requests wait for the writer");
                }
                let tx = tx.clone();
                match tokio::task::spawn_blocking(move || tx.send(msg).is_ok()).await {
                    Ok(true) => Ok(()),
                    _ => Err(AccessLogError::Stopped),
                }
            }
        }
    }

    /// Blocks until every record queued before the call is appended and flushed.
    pub fn flush(&self) -> Result<(), AccessLogError> {
        let (ack, done) = mpsc::sync_channel(1);
        self.sender()?
            .send(Msg::Flush(ack))
            .map_err(|_| AccessLogError::Stopped)?;
        match done.recv() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(AccessLogError::Flush(e)),
            Err(_) => Err(AccessLogError::Stopped),
        }
    }

    /// Records flushed to disk by this writer.
    pub fn durable_records(&self) -> u64 {
        self.durable.load(Ordering::Relaxed)
    }

    /// Requests that found the queue full and waited for room.
    pub fn queue_waits(&self) -> u64 {
        self.waits.load(Ordering::Relaxed)
    }
}

impl Drop for AccessLog {
    /// Graceful shutdown: the writer drains the queue, flushes and exits.
    fn drop(&mut self) {
        self.tx = None;
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                tracing::error!("the access log writer panicked");
            }
        }
    }
}

/// How often a busy writer wakes to drain the queue. Polling instead of waking per record keeps
/// the writer from preempting request threads 2,000 times a second (the load benchmark's rate).
const TICK: Duration = Duration::from_millis(10);

/// The writer thread's state: records appended but not yet flushed.
struct Writer<'a> {
    ledger: &'a Ledger,
    config: AccessLogConfig,
    durable: &'a AtomicU64,
    unflushed: u64,
    oldest: Option<Instant>,
}

impl Writer<'_> {
    fn take(&mut self, msg: Msg) -> Result<(), StorageError> {
        match msg {
            Msg::Record(r) => {
                let body = serde_json::to_vec(&r).map_err(|e| StorageError::Corrupt(e.to_string()))?;
                self.ledger.append(&body)?;
                self.unflushed += 1;
                self.oldest.get_or_insert_with(Instant::now);
                if self.unflushed >= self.config.flush_records as u64 {
                    self.flush()?;
                }
                Ok(())
            }
            Msg::Flush(ack) => {
                let result = self.flush();
                let _ = ack.send(result.as_ref().map_err(|e| e.to_string()).copied());
                result
            }
        }
    }

    /// Would the oldest unflushed record be older than the interval after one more tick?
    fn due(&self, tick: Duration) -> bool {
        self.oldest
            .is_some_and(|t| t.elapsed() + tick >= self.config.flush_interval)
    }

    fn flush(&mut self) -> Result<(), StorageError> {
        if self.unflushed > 0 {
            self.ledger.flush()?;
            self.durable.fetch_add(self.unflushed, Ordering::Relaxed);
        }
        self.unflushed = 0;
        self.oldest = None;
        Ok(())
    }
}

/// The writer thread: blocks while idle, drains the queue every tick while busy, flushes by
/// count or age, and drains and flushes when the last sender is gone.
fn write_loop(
    ledger: &Ledger,
    rx: &Receiver<Msg>,
    config: AccessLogConfig,
    durable: &AtomicU64,
) -> Result<(), StorageError> {
    let tick = TICK.min(config.flush_interval);
    let mut w = Writer {
        ledger,
        config,
        durable,
        unflushed: 0,
        oldest: None,
    };
    loop {
        if w.unflushed == 0 {
            match rx.recv() {
                Ok(m) => w.take(m)?,
                Err(_) => return Ok(()),
            }
        } else {
            std::thread::sleep(tick);
        }
        loop {
            match rx.try_recv() {
                Ok(m) => w.take(m)?,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return w.flush(),
            }
        }
        if w.due(tick) {
            w.flush()?;
        }
    }
}

/// Which records [`list`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub customer: Option<String>,
    pub token: Option<String>,
    /// Only records of requests that arrived at or after this time.
    pub since: Option<Micros>,
}

impl Filter {
    fn keeps(&self, r: &AccessRecord) -> bool {
        self.customer.as_ref().is_none_or(|c| r.customer.as_ref() == Some(c))
            && self.token.as_ref().is_none_or(|t| r.token.as_ref() == Some(t))
            && self.since.is_none_or(|s| r.at >= s)
    }
}

/// The records that pass `filter`, with their sequence numbers, in ledger order. Reads the
/// store directly: run it while no server holds the store (sled allows one process).
pub fn list(store: &Store, filter: &Filter) -> Result<Vec<(u64, AccessRecord)>, AccessLogError> {
    let mut out = Vec::new();
    let mut bad = None;
    store.ledger(LEDGER)?.visit(1, |rec| {
        match serde_json::from_slice::<AccessRecord>(&rec.body) {
            Ok(r) if filter.keeps(&r) => out.push((rec.seq, r)),
            Ok(_) => {}
            Err(e) => {
                bad = Some(AccessLogError::Record {
                    seq: rec.seq,
                    reason: e.to_string(),
                });
                return Ok(ControlFlow::Break(()));
            }
        }
        Ok(ControlFlow::Continue(()))
    })?;
    match bad {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// Recomputes the chain; `Ok(Err(_))` names the first broken record.
pub fn verify(store: &Store) -> Result<Result<LedgerReport, LedgerBroken>, AccessLogError> {
    Ok(store.ledger(LEDGER)?.verify()?)
}

/// `text` cut to at most `max` bytes on a character boundary (requested values are bounded).
pub fn clip(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: i64, token: &str, customer: Option<&str>) -> AccessRecord {
        AccessRecord {
            at: 1_000_000 * i,
            token: Some(token.into()),
            endpoint: "/customer/profile".into(),
            path: None,
            customer: customer.map(str::to_string),
            as_of: Some("1997-09-30".into()),
            known_at: None,
            status: 200,
        }
    }

    #[tokio::test]
    async fn records_are_chained_filtered_and_flushed_on_drop() {
        let store = Arc::new(Store::in_memory().expect("store"));
        let config = AccessLogConfig {
            queue: 2,
            ..AccessLogConfig::default()
        };
        let log = AccessLog::shared(&store, config);
        assert!(
            Arc::ptr_eq(&log, &AccessLog::shared(&store, config)),
            "one writer per store"
        );
        // More records than the queue holds: the surplus waits, none is dropped.
        for i in 0..20 {
            let who = if i % 2 == 0 { "alice" } else { "bob" };
            log.record(record(i, who, Some(&format!("c{}", i % 3))))
                .await
                .expect("queued");
        }
        drop(log);
        let all = list(&store, &Filter::default()).expect("list");
        assert_eq!(all.len(), 20);
        assert_eq!(
            all.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            (1..=20).collect::<Vec<_>>()
        );
        assert_eq!(all[3].1, record(3, "bob", Some("c0")));
        let filter = Filter {
            customer: Some("c0".into()),
            token: Some("bob".into()),
            since: Some(5_000_000),
        };
        let picked: Vec<u64> = list(&store, &filter).expect("list").iter().map(|(s, _)| *s).collect();
        // i = 9 and 15: odd (bob), i % 3 == 0, i ≥ 5; sequence numbers are i + 1.
        assert_eq!(picked, vec![10, 16]);
        assert_eq!(verify(&store).expect("read").expect("intact").records, 20);
        // A new writer continues the same chain.
        let log = AccessLog::shared(&store, config);
        log.record(record(21, "alice", None)).await.expect("queued");
        log.flush().expect("flush");
        assert_eq!(log.durable_records(), 1);
        assert_eq!(verify(&store).expect("read").expect("intact").records, 21);
    }

    fn wait_durable(log: &AccessLog, n: u64) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(5);
        while log.durable_records() < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        log.durable_records()
    }

    #[test]
    fn flushes_by_count_and_by_age() {
        let by_count = Arc::new(Store::in_memory().expect("store"));
        let log = AccessLog::shared(
            &by_count,
            AccessLogConfig {
                flush_records: 3,
                flush_interval: Duration::from_secs(3600),
                ..AccessLogConfig::default()
            },
        );
        let tx = log.sender().expect("sender");
        for i in 0..4 {
            tx.send(Msg::Record(record(i, "a", None))).expect("send");
        }
        assert_eq!(wait_durable(&log, 3), 3, "the first three: flushed by count");
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(
            log.durable_records(),
            3,
            "the fourth waits for its age or a fourth record"
        );

        let by_age = Arc::new(Store::in_memory().expect("store"));
        let log = AccessLog::shared(
            &by_age,
            AccessLogConfig {
                flush_records: 1000,
                flush_interval: Duration::from_millis(30),
                ..AccessLogConfig::default()
            },
        );
        log.sender()
            .expect("sender")
            .send(Msg::Record(record(0, "a", None)))
            .expect("send");
        assert_eq!(wait_durable(&log, 1), 1, "one record: flushed by age");
    }

    #[test]
    fn clip_keeps_whole_characters() {
        assert_eq!(clip("abcdef", 3), "abc");
        assert_eq!(clip("é", 1), "");
        assert_eq!(clip("ab", 10), "ab");
    }
}
