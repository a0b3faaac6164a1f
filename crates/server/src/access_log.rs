//! The API access log: who read what, when (a hash-chained ledger written off the request path).
//!
//! Every data read through the API (profile, artifact, snapshots, export, dashboard) becomes one
//! [`AccessRecord`] (JSON) in the `access` ledger of `cis_storage::ledger`: append-only, each
//! record chained to the previous one, so [`verify`] names the first record edited or removed.
//! A record holds the token's *name* (never the token), the route pattern, the customer id,
//! as-of and known-at as requested, the time the request arrived, and the response status.
//!
//! A request no token authenticated (a 401) is not a record of its own: anyone can send those,
//! so they would let a client choose what the log says and grow it without bound. The writer
//! counts them per (route pattern, status, minute) and appends one record per minute that had
//! any, with the `count`, no token and nothing else the client typed (no customer id, as-of,
//! known-at or path), when that minute ends on the writer's clock or at shutdown. 20,000 refused
//! requests in a minute on one route add one record. The counts of the minute still open are
//! what a crash loses of them.
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
//! hands every API state on the same store the same writer (kept beside the store, see
//! `Store::companion`), and a new writer waits until the previous one for that store has
//! finished. Two stores in one process have two writers.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cis_storage::{Ledger, LedgerBroken, LedgerReport, StorageError, Store};
use serde::{Deserialize, Serialize};

use cis_core::time::Timestamp;

/// The ledger's name in the store.
pub const LEDGER: &str = "access";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccessLogError {
    #[error("the access log writer has stopped; reads are refused until the server is restarted")]
    Stopped,
    #[error("flushing the access log: {0}")]
    Flush(String),
    #[error("access log record {seq} is malformed: {reason}")]
    Record { seq: u64, reason: String },
    #[error("encoding an access log record: {0}")]
    Encode(#[from] serde_json::Error),
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

/// One read through the API, or the refused requests of one route, status and minute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessRecord {
    /// When the request arrived (RFC 3339 UTC in the ledger).
    #[serde(with = "cis_core::time::rfc3339")]
    pub at: Timestamp,
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
    /// On an aggregate of refused requests only: how many were answered `status` on `endpoint`
    /// in the minute starting at `at`. Absent on a single read (and on records written before
    /// aggregates existed, which still load and verify unchanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// On an admin action: the job it queued (or whose end this record is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<u64>,
    /// On an admin action: what came of it (`queued`, `done, exit 0`, `failed: …`, `created
    /// admin token 'ops'`). Absent on reads, so their records are what they always were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}

impl AccessRecord {
    /// How many requests the record stands for.
    pub fn requests(&self) -> u64 {
        self.count.unwrap_or(1)
    }
}

enum Msg {
    Record(AccessRecord),
    /// A request no token authenticated, answered `status` on the route pattern `endpoint`.
    Refused {
        endpoint: String,
        status: u16,
    },
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

/// One store's writers, as a store companion: the one in use (weak, so that dropping its
/// last handle still shuts it down) and the turn a writer holds while it owns the ledger.
#[derive(Default)]
struct Writers {
    running: Mutex<Weak<AccessLog>>,
    turn: Mutex<()>,
}

impl AccessLog {
    /// The running writer of `store`'s access log, started if there is none.
    pub fn shared(store: &Arc<Store>, config: AccessLogConfig) -> Arc<AccessLog> {
        let writers = store.companion::<Writers>();
        let mut running = writers.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(log) = running.upgrade() {
            return log;
        }
        let started = Arc::new(AccessLog::start(store.clone(), writers.clone(), config));
        *running = Arc::downgrade(&started);
        started
    }

    fn start(store: Arc<Store>, writers: Arc<Writers>, config: AccessLogConfig) -> AccessLog {
        let (tx, rx) = mpsc::sync_channel(config.queue.max(1));
        let durable = Arc::new(AtomicU64::new(0));
        let counter = durable.clone();
        let spawned = std::thread::Builder::new()
            .name("cis-access-log".into())
            .spawn(move || {
                // Wait for a previous writer of this store to drain: one ledger handle at a time.
                let _turn = writers.turn.lock().unwrap_or_else(|p| p.into_inner());
                let result = store
                    .ledger(LEDGER)
                    .map_err(AccessLogError::from)
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

    /// Queues the record of an authenticated read. Waits (on tokio's blocking pool) only when
    /// the queue is full.
    pub async fn record(&self, r: AccessRecord) -> Result<(), AccessLogError> {
        self.queue(Msg::Record(r)).await
    }

    /// Queues a request no token authenticated, to be counted in its minute's aggregate; it
    /// takes no field the client chose but the route it matched. Waits like [`Self::record`].
    pub async fn refused(&self, endpoint: String, status: u16) -> Result<(), AccessLogError> {
        self.queue(Msg::Refused { endpoint, status }).await
    }

    async fn queue(&self, msg: Msg) -> Result<(), AccessLogError> {
        let tx = self.sender()?;
        match tx.try_send(msg) {
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

    /// Blocks until every record queued before the call is appended and flushed. Refused
    /// requests of a minute still open stay counted in memory: they become a record when their
    /// minute ends.
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

/// A minute in microseconds: refused requests are counted per route, status and minute.
const MINUTE: i64 = 60_000_000;

/// Refused requests counted by (minute start, route pattern, status), for the minutes whose
/// aggregate is not written yet. Minute first, so closed minutes come out in time order.
#[derive(Debug, Default)]
struct Refused(BTreeMap<(Timestamp, String, u16), u64>);

impl Refused {
    /// Counts one refused request received at `now`. The writer's clock, not the request's
    /// arrival, picks the minute: a minute it has closed never gets another request, so each
    /// (route, status, minute) is one record.
    fn add(&mut self, now: Timestamp, endpoint: String, status: u16) {
        *self
            .0
            .entry((
                Timestamp::from_micros(now.micros().div_euclid(MINUTE) * MINUTE),
                endpoint,
                status,
            ))
            .or_insert(0) += 1;
    }

    /// When the earliest open minute ends.
    fn next_close(&self) -> Option<Timestamp> {
        self.0.keys().next().map(|(minute, ..)| *minute + MINUTE)
    }

    /// Removes the minutes that have ended by `now` and returns their aggregate records.
    fn close(&mut self, now: Timestamp) -> Vec<AccessRecord> {
        let open = self.0.split_off(&(now - MINUTE + 1, String::new(), 0));
        std::mem::replace(&mut self.0, open)
            .into_iter()
            .map(|((at, endpoint, status), count)| AccessRecord {
                at,
                token: None,
                endpoint,
                path: None,
                customer: None,
                as_of: None,
                known_at: None,
                status,
                count: Some(count),
                job: None,
                outcome: None,
            })
            .collect()
    }
}

/// The writer thread's state: records appended but not yet flushed, refused requests counted.
struct Writer<'a> {
    ledger: &'a Ledger,
    config: AccessLogConfig,
    durable: &'a AtomicU64,
    unflushed: u64,
    oldest: Option<Instant>,
    refused: Refused,
}

impl Writer<'_> {
    fn take(&mut self, msg: Msg) -> Result<(), AccessLogError> {
        match msg {
            Msg::Record(r) => self.append(&r),
            Msg::Refused { endpoint, status } => {
                self.refused.add(cis_core::time::now(), endpoint, status);
                Ok(())
            }
            Msg::Flush(ack) => {
                let result = self.flush();
                let _ = ack.send(result.as_ref().map_err(|e| e.to_string()).copied());
                Ok(result?)
            }
        }
    }

    fn append(&mut self, r: &AccessRecord) -> Result<(), AccessLogError> {
        let body = serde_json::to_vec(r)?;
        self.ledger.append(&body)?;
        self.unflushed += 1;
        self.oldest.get_or_insert_with(Instant::now);
        if self.unflushed >= self.config.flush_records as u64 {
            self.flush()?;
        }
        Ok(())
    }

    /// Appends the aggregates of the minutes that have ended by `now`.
    fn close_minutes(&mut self, now: Timestamp) -> Result<(), AccessLogError> {
        for r in self.refused.close(now) {
            self.append(&r)?;
        }
        Ok(())
    }

    /// Shutdown: every open minute's aggregate, then a flush.
    fn finish(&mut self) -> Result<(), AccessLogError> {
        self.close_minutes(Timestamp::MAX)?;
        Ok(self.flush()?)
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

/// The writer thread: blocks while idle (until the next open minute ends, if any), drains the
/// queue every tick while busy, writes the aggregates of ended minutes, flushes by count or age,
/// and drains, writes every open aggregate and flushes when the last sender is gone.
fn write_loop(
    ledger: &Ledger,
    rx: &Receiver<Msg>,
    config: AccessLogConfig,
    durable: &AtomicU64,
) -> Result<(), AccessLogError> {
    let tick = TICK.min(config.flush_interval);
    let mut w = Writer {
        ledger,
        config,
        durable,
        unflushed: 0,
        oldest: None,
        refused: Refused::default(),
    };
    loop {
        if w.unflushed == 0 {
            let next = match w.refused.next_close() {
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(close) => {
                    let wait = (close - cis_core::time::now()).max(0);
                    rx.recv_timeout(Duration::from_micros(wait as u64))
                }
            };
            match next {
                Ok(m) => w.take(m)?,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return w.finish(),
            }
        } else {
            std::thread::sleep(tick);
        }
        loop {
            match rx.try_recv() {
                Ok(m) => w.take(m)?,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return w.finish(),
            }
        }
        w.close_minutes(cis_core::time::now())?;
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
    pub since: Option<Timestamp>,
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
    store.ledger(LEDGER)?.visit(1, |rec| {
        let r = serde_json::from_slice::<AccessRecord>(&rec.body).map_err(|e| AccessLogError::Record {
            seq: rec.seq,
            reason: e.to_string(),
        })?;
        if filter.keeps(&r) {
            out.push((rec.seq, r));
        }
        Ok::<_, AccessLogError>(ControlFlow::Continue(()))
    })?;
    Ok(out)
}

/// Recomputes the chain; `Ok(Err(_))` names the first broken record.
pub fn verify(store: &Store) -> Result<Result<LedgerReport, LedgerBroken>, AccessLogError> {
    Ok(store.ledger(LEDGER)?.verify()?)
}

/// Prints the records as the tab-separated table of `cis access-log`, one line each under a
/// header. Every field goes through [`escape`], so a value a client chose cannot start a line,
/// shift a column or reach the terminal as a control sequence.
pub fn write_table(out: &mut impl Write, records: &[(u64, AccessRecord)]) -> io::Result<()> {
    writeln!(
        out,
        "seq\tat\ttoken\tstatus\tcount\tendpoint\tcustomer\tas_of\tknown_at\tjob\toutcome"
    )?;
    let dash = |v: &Option<String>| v.as_deref().unwrap_or("-").to_string();
    for (seq, r) in records {
        let fields = [
            seq.to_string(),
            cis_core::time::format(r.at),
            dash(&r.token),
            r.status.to_string(),
            r.requests().to_string(),
            r.path.clone().unwrap_or_else(|| r.endpoint.clone()),
            dash(&r.customer),
            dash(&r.as_of),
            dash(&r.known_at),
            r.job.map_or_else(|| "-".to_string(), |j| j.to_string()),
            dash(&r.outcome),
        ];
        let row: Vec<Cow<str>> = fields.iter().map(|f| escape(f)).collect();
        writeln!(out, "{}", row.join("\t"))?;
    }
    Ok(())
}

/// Prints the records as JSON, one object (with its `seq`) per line. serde_json escapes quotes,
/// backslashes and C0 controls; [`TerminalSafe`] escapes the rest of what [`escape`] does.
pub fn write_json(out: &mut impl Write, records: &[(u64, AccessRecord)]) -> io::Result<()> {
    for (seq, r) in records {
        let mut v = serde_json::to_value(r)?;
        if let Some(m) = v.as_object_mut() {
            m.insert("seq".into(), (*seq).into());
        }
        v.serialize(&mut serde_json::Serializer::with_formatter(&mut *out, TerminalSafe))?;
        writeln!(out)?;
    }
    Ok(())
}

/// serde_json's compact output with DEL, C1 controls, line separators and bidi controls written
/// as `\uXXXX` escapes (still the same JSON string), so `--json` on a terminal is as safe as the
/// table.
struct TerminalSafe;

impl serde_json::ser::Formatter for TerminalSafe {
    /// `fragment` holds no quote, backslash or C0 control: serde_json escapes those itself.
    fn write_string_fragment<W: ?Sized + Write>(&mut self, out: &mut W, fragment: &str) -> io::Result<()> {
        let mut rest = fragment;
        while let Some(at) = rest.find(needs_escape) {
            let (clean, tail) = rest.split_at(at);
            out.write_all(clean.as_bytes())?;
            let mut chars = tail.chars();
            let Some(c) = chars.next() else { break };
            for unit in c.encode_utf16(&mut [0; 2]) {
                write!(out, "\\u{unit:04x}")?;
            }
            rest = chars.as_str();
        }
        out.write_all(rest.as_bytes())
    }
}

/// `text` with every character that could forge a line, a column or a terminal control made
/// visible: `\n`, `\r`, `\t` and `\\` as such, other ASCII controls (ESC, DEL) as `\x1b`,
/// C1 controls, line separators and bidi controls as `\u{202e}`.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.contains(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' | '\r' | '\t' | '\\' => out.extend(c.escape_default()),
            c if c.is_ascii_control() => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c if needs_escape(c) => out.extend(c.escape_unicode()),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Control characters (C0, DEL, C1), the backslash (so an escape cannot be faked), the Unicode
/// line and paragraph separators, and the bidi controls that reorder what a terminal shows (the
/// set rustc lints against in source: UAX #9 embeddings, overrides, isolates and marks).
fn needs_escape(c: char) -> bool {
    c == '\\'
        || c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
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
            at: Timestamp::from_micros(1_000_000 * i),
            token: Some(token.into()),
            endpoint: "/customer/profile".into(),
            path: None,
            customer: customer.map(str::to_string),
            as_of: Some("1997-09-30".into()),
            known_at: None,
            status: 200,
            count: None,
            job: None,
            outcome: None,
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
            since: Some(Timestamp::from_micros(5_000_000)),
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
    fn refused_requests_are_one_count_per_route_status_and_minute() {
        let mut refused = Refused::default();
        let minute = Timestamp::from_micros(29_000 * MINUTE);
        for i in 0..1000 {
            refused.add(minute + i * 59_000, "/customer/profile".into(), 401);
        }
        refused.add(minute + 1, "/snapshots".into(), 401);
        refused.add(minute + MINUTE, "/customer/profile".into(), 401);
        assert_eq!(refused.next_close(), Some(minute + MINUTE));
        assert!(
            refused.close(minute + MINUTE - 1).is_empty(),
            "the minute is still open"
        );
        let closed = refused.close(minute + MINUTE);
        let seen: Vec<(Timestamp, &str, u16, Option<u64>)> = closed
            .iter()
            .map(|r| (r.at, r.endpoint.as_str(), r.status, r.count))
            .collect();
        assert_eq!(
            seen,
            vec![
                (minute, "/customer/profile", 401, Some(1000)),
                (minute, "/snapshots", 401, Some(1)),
            ]
        );
        assert!(closed
            .iter()
            .all(|r| r.token.is_none() && r.customer.is_none() && r.path.is_none()));
        assert_eq!(
            refused.next_close(),
            Some(minute + 2 * MINUTE),
            "the next minute stays open"
        );
        assert_eq!(refused.close(Timestamp::MAX).len(), 1, "shutdown closes every minute");
        assert_eq!(refused.next_close(), None);
    }

    #[test]
    fn records_without_a_count_keep_their_format() {
        // A record as written before aggregates existed loads, and a read is written the same.
        let old = r#"{"at":"1997-09-30T00:00:00Z","token":"a","endpoint":"/snapshots","customer":null,"as_of":null,"known_at":null,"status":200}"#;
        let r: AccessRecord = serde_json::from_str(old).expect("old record");
        assert_eq!((r.count, r.requests()), (None, 1));
        assert_eq!(serde_json::to_string(&r).expect("json"), old);
    }

    #[test]
    fn escape_makes_controls_and_bidi_visible() {
        assert_eq!(escape("0001"), "0001");
        assert!(matches!(escape("é ü"), Cow::Borrowed(_)));
        assert_eq!(
            escape("a\nb\rc\td\\e\u{1b}[2J\u{7f}\u{9b}\u{202e}\u{2066}\u{2028}"),
            r"a\nb\rc\td\\e\x1b[2J\x7f\u{9b}\u{202e}\u{2066}\u{2028}"
        );
    }

    /// The CLI's output for one read whose customer id a client forged.
    fn forged(customer: &str) -> Vec<(u64, AccessRecord)> {
        vec![(7, record(1, "a", Some(customer)))]
    }

    #[test]
    fn the_table_escapes_every_field() {
        let mut out = Vec::new();
        let tricks = "x\n1997-01-01T00:00:00Z\tforged\u{1b}[2J\u{202e}";
        write_table(&mut out, &forged(tricks)).expect("table");
        let text = String::from_utf8(out).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "header and one row: {text}");
        let row: Vec<&str> = lines[1].split('\t').collect();
        assert_eq!(row.len(), 11, "eleven columns: {row:?}");
        assert_eq!(row[6], r"x\n1997-01-01T00:00:00Z\tforged\x1b[2J\u{202e}");
        assert!(!text.contains(['\u{1b}', '\r', '\u{202e}']));
    }

    #[test]
    fn json_lines_escape_what_a_terminal_would_act_on() {
        let tricks = "x\nforged\t\u{1b}[2J\u{7f}\u{9b}\u{202e}";
        let mut out = Vec::new();
        write_json(&mut out, &forged(tricks)).expect("json");
        let text = String::from_utf8(out).expect("utf-8");
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            text.chars().all(|c| c == '\n' || !needs_escape(c) || c == '\\'),
            "{text:?}"
        );
        assert!(text.contains(r"\u001b[2J\u007f\u009b\u202e"), "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!((v["customer"].as_str(), v["seq"].as_u64()), (Some(tricks), Some(7)));
    }

    #[test]
    fn clip_keeps_whole_characters() {
        assert_eq!(clip("abcdef", 3), "abc");
        assert_eq!(clip("é", 1), "");
        assert_eq!(clip("ab", 10), "ab");
    }
}
