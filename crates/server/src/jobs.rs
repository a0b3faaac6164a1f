//! Admin jobs: the store-changing commands the CLI runs directly, or through a running server.
//!
//! The bodies ([`ingest`], [`snapshot`], [`token_create`], [`token_revoke`]) are the one copy of
//! what such a command does and prints: `cis` calls them on the store it opened, writing to its
//! stdout and stderr; the server calls them on its own store inside a job, writing into the job's
//! [`JobView`], so both ways give the same text and exit code.
//!
//! [`Jobs`] holds a server's jobs by id. Jobs run one at a time, in the order they came, on the
//! store's one worker thread ([`Queue`], kept beside the store), while the API's readers go on:
//! nothing here takes a lock a reader needs.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Instant;

use cis_core::time;
use cis_core::{AsOf, Choice};
use cis_features::snapshot::{self, SnapshotError};
use cis_ingest::records::IngestRun;
use cis_ingest::source::Format;
use cis_ingest::{IngestError, IngestOptions};
use cis_storage::{hex, Compaction, Store};
use serde::{Deserialize, Serialize};

use crate::api::tokens::{self, Scope, TokenError};

/// `cis ingest`'s exit code when the file had rows and none was stored (README: exit codes).
pub const EXIT_ALL_REJECTED: u8 = 3;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Token(#[from] TokenError),
    /// Writing the command's output failed (a closed pipe, in the CLI).
    #[error(transparent)]
    Output(#[from] io::Error),
    /// A command of the CLI's failed ([`Commands`]): its error as `cis` prints it.
    #[error("{0}")]
    Command(String),
    #[error("the job panicked (see the server's log)")]
    Panicked,
}

/// The first 16 characters of a hash, as the CLI prints heads.
fn short(h: &str) -> &str {
    h.get(..16).unwrap_or(h)
}

/// Ingests `input` (named `file_name` in the run record) and prints what `cis ingest` prints:
/// one line per batch once it is durable (the acknowledgement), then the run's summary. Returns
/// the run and the exit code.
pub fn ingest_run(
    store: &Store,
    input: File,
    file_name: &str,
    len: u64,
    opts: &IngestOptions,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(IngestRun, u8), JobError> {
    // A Parquet run counts rows; the line-based formats count lines.
    let unit = if opts.format == Format::Parquet {
        "rows"
    } else {
        "lines"
    };
    let mut ack_err = None;
    let run = cis_ingest::ingest_open_file(store, input, file_name, len, opts, &mut |c| {
        let r = writeln!(
            out,
            "committed batch {}: {} new events from {unit} {}-{}, head {}",
            c.batch.seq,
            c.batch.events,
            c.first_line,
            c.last_line,
            hex(&c.batch.head_after)
        )
        .and_then(|_| out.flush());
        if let Err(e) = r {
            ack_err.get_or_insert(e);
        }
    })?;
    if let Some(e) = ack_err {
        return Err(e.into());
    }
    // Every line after the header is one of these four: the sum is the line count.
    writeln!(
        out,
        "ingest run {}: {} {unit} from {} — {} accepted, {} duplicate, {} quarantined, {} blank\nfile blake3 {}\nlog head {} -> {}",
        run.run,
        run.lines,
        run.file,
        run.accepted,
        run.duplicates,
        run.quarantined,
        run.blank,
        run.file_hash,
        short(&run.head_before),
        run.head_after
    )?;
    if !run.dropped_columns.is_empty() {
        writeln!(out, "personal data columns dropped: {}", run.dropped_columns.join(", "))?;
    }
    if run.quarantined > 0 {
        writeln!(out, "see `cis quarantine list --run {}` for the rejected rows", run.run)?;
    }
    if run.rows > 0 && run.accepted == 0 && run.duplicates == 0 {
        writeln!(
            err,
            "error: every row was rejected — is --format right? (read as {})",
            opts.format.choice_name()
        )?;
        return Ok((run, EXIT_ALL_REJECTED));
    }
    Ok((run, 0))
}

/// Creates (or finds) the snapshot at `at` and prints `cis snapshot create`'s line.
pub fn snapshot(store: &Store, at: AsOf, out: &mut dyn Write) -> Result<u8, JobError> {
    let started = Instant::now();
    let (hash, new, snap) = snapshot::create(store, at)?;
    writeln!(
        out,
        "snapshot {} ({}) as of {} known at {}: {} customers x {} features from {} events in {:.2}s",
        hex(&hash),
        if new { "new" } else { "already stored" },
        time::format(snap.as_of),
        time::format(snap.known_at),
        snap.matrix.customers.len(),
        snap.features.len(),
        snap.matrix.visible_events,
        started.elapsed().as_secs_f64()
    )?;
    Ok(0)
}

/// Creates a token and prints it (stdout) after a note that it is shown only now (stderr).
pub fn token_create(
    store: &Store,
    name: &str,
    scope: Scope,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<u8, JobError> {
    let token = tokens::create_scoped(store, name, scope)?;
    writeln!(
        err,
        "{} token '{name}' created; it is shown only now (cis keeps its blake3 hash):",
        scope.choice_name()
    )?;
    writeln!(out, "{token}")?;
    Ok(0)
}

/// Revokes a token and says so.
pub fn token_revoke(store: &Store, name: &str, out: &mut dyn Write) -> Result<u8, JobError> {
    tokens::revoke(store, name)?;
    writeln!(out, "token '{name}' revoked")?;
    Ok(0)
}

/// What a command line asks for, as the [`Commands`] that parsed it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The command's name, as jobs show it (`train`, `models promote`, …).
    pub kind: String,
    /// It changes the store: it runs as a job, one at a time. A read runs at once.
    pub writes: bool,
    /// It reads a file of the client's (`--customers FILE`): the request's body is that file.
    pub reads_file: bool,
    /// It writes a file or a directory (`--out`): the server writes one of its own, and the
    /// client fetches it from the job.
    pub writes_file: bool,
}

/// The name, inside a job's output directory, of the file or directory a command writes.
pub const OUTPUT: &str = "out";

/// The files of a command run through the server, in place of the ones its line names: the
/// server opens no path a client names.
#[derive(Debug, Default, Clone, Copy)]
pub struct CommandFiles<'a> {
    pub input: Option<&'a std::path::Path>,
    pub output: Option<&'a std::path::Path>,
}

/// The command line's commands, for a server to run on its store. The binary implements it
/// (this crate knows no command line), so a command run through the server is the same code,
/// printing the same text, as the command run directly.
pub trait Commands: Send + Sync {
    /// Parses `args` (a `cis` command line without the program's name): what it asks for, or
    /// why it cannot run through a server (the text `cis` would print).
    fn plan(&self, args: &[String]) -> Result<Plan, String>;

    /// Runs `args` on `store`, its file arguments replaced by `files`; the exit code.
    fn run(
        &self,
        store: &Store,
        args: &[String],
        files: CommandFiles<'_>,
        out: &mut dyn Write,
        err: &mut dyn Write,
    ) -> Result<u8, String>;
}

/// An error and its causes on one line, as `cis` prints an error (`{:#}` of anyhow).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text = format!("{text}: {c}");
        cause = c.source();
    }
    text
}

/// What a command printed and how it ended: a finished job's result, or the answer of a
/// synchronous admin request (tokens).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub stdout: String,
    pub stderr: String,
    /// The command's exit code; `None` while the job has not finished.
    pub exit_code: Option<u8>,
    /// Why it failed (the text `cis` prints after `error: `), when it did.
    pub error: Option<String>,
}

impl Outcome {
    /// Runs `f` with buffers for its stdout and stderr; the outcome, and `f`'s result.
    pub fn capture(
        f: impl FnOnce(&mut dyn Write, &mut dyn Write) -> Result<u8, JobError>,
    ) -> (Outcome, Result<u8, JobError>) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let result = f(&mut out, &mut err);
        let mut o = Outcome {
            stdout: String::from_utf8_lossy(&out).into_owned(),
            stderr: String::from_utf8_lossy(&err).into_owned(),
            ..Outcome::default()
        };
        o.finish(&result);
        (o, result)
    }

    fn finish(&mut self, result: &Result<u8, JobError>) {
        match result {
            Ok(code) => self.exit_code = Some(*code),
            Err(e) => {
                self.exit_code = Some(1);
                self.error = Some(error_chain(e));
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Done,
    Failed,
}

/// How far a job has got, when it can tell (an ingest: bytes of its input read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobProgress {
    pub done: u64,
    pub total: u64,
}

/// A job as `GET /admin/jobs/{id}` shows it. `stdout` grows while the job runs (an ingest's
/// batch lines appear as the batches become durable).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobView {
    pub id: u64,
    pub kind: String,
    /// The token name that submitted it.
    pub by: String,
    pub state: JobState,
    pub progress: Option<JobProgress>,
    /// Whether the job wrote a file (an export), which `GET /admin/jobs/{id}/output` gives
    /// once the job has ended.
    #[serde(default)]
    pub has_output: bool,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// A job's shared record: its view, updated by the job's thread, read by the API, and the
/// directory holding what it wrote, if anything (removed from the store directory when the job
/// is forgotten, or its output fetched).
pub struct Job {
    view: Mutex<JobView>,
    output: Mutex<Option<tempfile::TempDir>>,
}

impl Job {
    pub fn view(&self) -> JobView {
        self.view.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn update(&self, f: impl FnOnce(&mut JobView)) {
        f(&mut self.view.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Keeps `dir` (holding [`OUTPUT`]) as what the job wrote, for `GET /admin/jobs/{id}/output`.
    pub fn set_output(&self, dir: tempfile::TempDir) {
        *self.output.lock().unwrap_or_else(|p| p.into_inner()) = Some(dir);
    }

    /// The directory holding what the job wrote, once it has ended, handed over once: it is
    /// removed from the store directory when the caller drops it (exported rows are not left
    /// lying there).
    pub fn take_output(&self) -> Option<tempfile::TempDir> {
        if !matches!(self.view().state, JobState::Done | JobState::Failed) {
            return None;
        }
        self.output.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Appends what the job writes to its stdout or stderr, so a poll sees it at once.
struct JobOutput<'a> {
    job: &'a Job,
    stderr: bool,
}

impl Write for JobOutput<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        self.job.update(|v| {
            let s = if self.stderr {
                &mut v.outcome.stderr
            } else {
                &mut v.outcome.stdout
            };
            s.push_str(&text);
        });
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// An ingest's [`cis_ingest::Progress`] into its job.
pub struct IngestProgress(pub Arc<Job>);

impl cis_ingest::Progress for IngestProgress {
    fn start(&self, total_bytes: u64) {
        self.0.update(|v| {
            v.progress = Some(JobProgress {
                done: 0,
                total: total_bytes,
            })
        });
    }

    fn advance(&self, bytes: u64) {
        self.0.update(|v| {
            if let Some(p) = &mut v.progress {
                p.done = p.done.saturating_add(bytes);
            }
        });
    }

    fn finish(&self) {}
}

/// A store's one job queue, kept beside the store, so two API states on one store never run
/// two jobs at once. One worker thread runs the tasks in order; it is started on the first job
/// (again if it ever died) and ends when the store is dropped.
#[derive(Default)]
struct Queue {
    sender: Mutex<Option<mpsc::Sender<Task>>>,
    /// Tasks pushed and not yet started: upkeep gives way when one waits.
    waiting: Arc<AtomicUsize>,
}

type Task = Box<dyn FnOnce() + Send>;

impl Queue {
    fn push(&self, task: Task) -> io::Result<()> {
        let mut sender = self.sender.lock().unwrap_or_else(|p| p.into_inner());
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let pushed = self.send(&mut sender, task);
        if pushed.is_err() {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
        }
        pushed
    }

    fn send(&self, sender: &mut Option<mpsc::Sender<Task>>, task: Task) -> io::Result<()> {
        let task = match sender.as_ref() {
            Some(s) => match s.send(task) {
                Ok(()) => return Ok(()),
                // The worker died (it never should: a job's panic is caught): start another.
                Err(mpsc::SendError(task)) => task,
            },
            None => task,
        };
        let (tx, rx) = mpsc::channel::<Task>();
        let waiting = self.waiting.clone();
        std::thread::Builder::new().name("cis-jobs".into()).spawn(move || {
            lower_priority();
            rx.into_iter().for_each(|task| {
                waiting.fetch_sub(1, Ordering::SeqCst);
                task();
            })
        })?;
        tx.send(task)
            .map_err(|_| io::Error::other("the job worker ended at once"))?;
        *sender = Some(tx);
        Ok(())
    }
}

/// How far below the API's threads the job worker runs: the lowest nice value (at nice 10
/// the benchmark's p99 during a job was 3.6 x idle; see `cargo bench --bench serve`).
pub const JOB_NICE: i32 = 19;

/// Puts this thread (the job worker) below the API's readers: a job (an ingest, a snapshot)
/// takes every core it can get, and readers must not queue behind it. On Linux a thread's nice
/// value is its own and the threads it starts inherit it (an ingest's parser, a snapshot's
/// scanners), so the whole job runs at [`JOB_NICE`] while the server's threads keep theirs.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: setpriority(2) only changes a scheduling attribute; `who = 0` with
        // PRIO_PROCESS names the calling thread on Linux.
        let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, JOB_NICE) };
        if r != 0 {
            tracing::warn!(error = %io::Error::last_os_error(), "could not lower the job worker's priority");
        }
    }
}

/// Background upkeep after a job, while no other job waits: the merges that ingest runs left
/// for later (a bucket whose merge did not fit a run's budget), one bounded round at a time, so
/// a job queued meanwhile waits for one round at most.
fn catch_up(store: &Store, waiting: &AtomicUsize) {
    while waiting.load(Ordering::SeqCst) == 0 {
        match store.log().compact(Compaction::AfterAppends) {
            Ok(r) if r.merges > 0 => {
                tracing::info!(
                    merges = r.merges,
                    records = r.records_rewritten,
                    deferred = r.deferred,
                    value_log_freed = r.reclaimed.bytes_freed,
                    "background compaction"
                );
                if r.deferred == 0 {
                    return;
                }
            }
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(error = %e, "background compaction failed; the next ingest tries again");
                return;
            }
        }
    }
}

/// How many jobs a server remembers for `GET /admin/jobs/{id}` (the oldest ended ones go first).
pub const KEPT_JOBS: usize = 1000;

/// The jobs of one server, by id (ids count from 1 in each server's life).
#[derive(Default)]
pub struct Jobs {
    next: AtomicU64,
    jobs: Mutex<BTreeMap<u64, Arc<Job>>>,
    /// Set when the server stops: a job that has not started is cancelled instead of run.
    closing: Arc<AtomicBool>,
}

/// The work of a job: gets the job (for progress) and its stdout and stderr.
pub type Work = Box<dyn FnOnce(&Arc<Job>, &mut dyn Write, &mut dyn Write) -> Result<u8, JobError> + Send>;

impl Jobs {
    pub fn get(&self, id: u64) -> Option<JobView> {
        self.job(id).map(|j| j.view())
    }

    /// The job `id`, while this server remembers it.
    pub fn job(&self, id: u64) -> Option<Arc<Job>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).get(&id).cloned()
    }

    /// Queues `work` on `store` and returns the job at once; it runs when every job queued
    /// before it on the store has ended. `done` is called with the final view (the access
    /// log's record of the outcome).
    pub fn submit(
        &self,
        store: &Arc<Store>,
        kind: &str,
        by: &str,
        work: Work,
        done: impl FnOnce(JobView) + Send + 'static,
    ) -> io::Result<JobView> {
        let job = self.register(kind, by);
        let view = job.view();
        let running = job.clone();
        let closing = self.closing.clone();
        let queue = store.companion::<Queue>();
        let (on, waiting) = (store.clone(), queue.waiting.clone());
        let task: Task = Box::new(move || {
            if closing.load(Ordering::SeqCst) {
                cancel(&running, done);
            } else {
                execute(&running, work, done);
                catch_up(&on, &waiting);
            }
        });
        if let Err(e) = queue.push(task) {
            self.forget(view.id);
            return Err(e);
        }
        Ok(view)
    }

    /// Runs `work` on this thread, now, outside the queue: for a command that only reads the
    /// store, which need not wait for the jobs that change it. Its final view.
    pub fn run_now(&self, kind: &str, by: &str, work: Work, done: impl FnOnce(JobView) + Send + 'static) -> JobView {
        let job = self.register(kind, by);
        execute(&job, work, done);
        job.view()
    }

    /// A new queued job, remembered under the next id.
    fn register(&self, kind: &str, by: &str) -> Arc<Job> {
        let id = self.next.fetch_add(1, Ordering::SeqCst) + 1;
        let job = Arc::new(Job {
            view: Mutex::new(JobView {
                id,
                kind: kind.to_string(),
                by: by.to_string(),
                state: JobState::Queued,
                progress: None,
                has_output: false,
                outcome: Outcome::default(),
            }),
            output: Mutex::new(None),
        });
        let mut all = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        all.insert(id, job.clone());
        // Only the latest are kept; a job still queued or running is never forgotten.
        while all.len() > KEPT_JOBS {
            let ended = all
                .iter()
                .find(|(_, j)| matches!(j.view().state, JobState::Done | JobState::Failed))
                .map(|(id, _)| *id);
            match ended {
                Some(old) => all.remove(&old),
                None => break,
            };
        }
        job
    }

    /// Stops starting jobs: those still queued are cancelled when their turn comes (the server
    /// is stopping). The running one, if any, goes on: [`Jobs::running`].
    pub fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
    }

    /// The job running now, if one is.
    pub fn running(&self) -> Option<JobView> {
        let all = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        all.values().map(|j| j.view()).find(|v| v.state == JobState::Running)
    }

    fn forget(&self, id: u64) {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    }
}

/// Ends `job` without running it: the server stopped before its turn.
fn cancel(job: &Arc<Job>, done: impl FnOnce(JobView)) {
    let mut view = job.view();
    view.state = JobState::Failed;
    view.outcome.exit_code = Some(1);
    view.outcome.error = Some("cancelled: the server stopped before the job's turn came".into());
    tracing::info!(job = view.id, "job cancelled");
    done(view.clone());
    job.update(|v| *v = view);
}

/// Runs `work` as `job`: its state, output and outcome into the job's view as it goes.
fn execute(job: &Arc<Job>, work: Work, done: impl FnOnce(JobView)) {
    let id = job.view().id;
    job.update(|v| v.state = JobState::Running);
    tracing::info!(job = id, "job started");
    let mut out = JobOutput { job, stderr: false };
    let mut err = JobOutput { job, stderr: true };
    // A panicking job fails alone: the worker and the jobs queued after it go on.
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| work(job, &mut out, &mut err)))
        .unwrap_or_else(|_| Err(JobError::Panicked));
    let mut view = job.view();
    view.state = if result.is_ok() {
        JobState::Done
    } else {
        JobState::Failed
    };
    view.has_output = job.output.lock().unwrap_or_else(|p| p.into_inner()).is_some();
    view.outcome.finish(&result);
    tracing::info!(job = id, state = ?view.state, exit_code = view.outcome.exit_code, "job ended");
    // Recorded before a poll can see the job ended, so whoever saw it finds the record.
    done(view.clone());
    job.update(|v| *v = view);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Polls `id` until it has ended.
    fn ended(jobs: &Jobs, id: u64) -> JobView {
        loop {
            let view = jobs.get(id).expect("job");
            if matches!(view.state, JobState::Done | JobState::Failed) {
                return view;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn jobs_run_below_the_readers() {
        let store = Arc::new(Store::in_memory().expect("store"));
        let jobs = Jobs::default();
        let work: Work = Box::new(|_, out, _| {
            // SAFETY: getpriority(2) reads a scheduling attribute of the calling thread.
            let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
            let child = std::thread::spawn(|| unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) })
                .join()
                .expect("thread");
            writeln!(out, "{nice} {child}")?;
            Ok(0)
        });
        let id = jobs.submit(&store, "probe", "test", work, |_| ()).expect("submit").id;
        let view = ended(&jobs, id);
        let niceness: Vec<i32> = view
            .outcome
            .stdout
            .split_whitespace()
            .map(|n| n.parse().expect("a number"))
            .collect();
        assert!(niceness.iter().all(|n| *n >= JOB_NICE), "{niceness:?}");
        // SAFETY: as above, on the test's own thread.
        assert!(
            unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) } < JOB_NICE,
            "the caller keeps its priority"
        );
    }

    #[test]
    fn a_stopping_server_cancels_the_jobs_not_yet_started() {
        let store = Arc::new(Store::in_memory().expect("store"));
        let jobs = Jobs::default();
        let (release, wait) = mpsc::channel::<()>();
        let first: Work = Box::new(move |_, _, _| {
            wait.recv().map_err(|_| io::Error::other("released"))?;
            Ok(0)
        });
        let first = jobs.submit(&store, "first", "test", first, |_| ()).expect("submit").id;
        let second: Work = Box::new(|_, out, _| {
            writeln!(out, "ran")?;
            Ok(0)
        });
        let second = jobs
            .submit(&store, "second", "test", second, |_| ())
            .expect("submit")
            .id;
        while jobs.running().is_none() {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        jobs.close();
        release.send(()).expect("release");
        assert_eq!(ended(&jobs, first).state, JobState::Done);
        let cancelled = ended(&jobs, second);
        assert_eq!(cancelled.state, JobState::Failed);
        assert!(cancelled.outcome.stdout.is_empty());
        assert!(cancelled
            .outcome
            .error
            .as_deref()
            .is_some_and(|e| e.contains("cancelled")));
    }
}
