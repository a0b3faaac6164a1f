//! Crash safety: SIGKILL an ingest mid-way, reopen, and check that every acknowledged
//! batch survived, the log verifies, and re-running converges on the uninterrupted head.
//! SIGKILL an erasure at random points, re-run it, and check that the store ends as an
//! uninterrupted erasure leaves it. SIGKILL `cis store compact` (merges, then the value log's
//! garbage collection) likewise: no read changes, and a re-run leaves no garbage.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use cis::demo::DemoOptions;
use cis_core::event::Kind;
use cis_features::snapshot;
use cis_ingest::records::{self, Quarantined};
use cis_ingest::source::Format;
use cis_ingest::RecordedAt;
use cis_models::scores;
use cis_ops::erasure::{self, ErasureRequest};
use cis_storage::{hex, ArtifactHash, Compaction, NewEvent, Redaction, Store, VerifyReport, Visibility};
use rand::{Rng, SeedableRng};

use crate::erasure::files_containing;
use crate::util::{cis_bin, copy_dir, fixture, ingest, write};

const ROWS: usize = 400_000;

fn big_orders(path: &std::path::Path) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    writeln!(f, "order_id,customer_id,event_time,amount,currency").expect("write");
    for i in 0..ROWS {
        let day = 1 + i % 28;
        writeln!(
            f,
            "o{i},c{},2024-03-{day:02}T{:02}:00:00Z,{}.{:02},USD",
            i % 5000,
            i % 24,
            i % 300,
            i % 100
        )
        .expect("write");
    }
}

struct Ack {
    batch: u64,
    events: u64,
    head: String,
}

fn parse_ack(line: &str) -> Option<Ack> {
    // "committed batch N: E new events from lines a-b, head H"
    let rest = line.strip_prefix("committed batch ")?;
    let (batch, rest) = rest.split_once(": ")?;
    let (events, rest) = rest.split_once(" new events")?;
    let head = rest.rsplit_once("head ")?.1;
    Some(Ack {
        batch: batch.parse().ok()?,
        events: events.parse().ok()?,
        head: head.to_string(),
    })
}

#[test]
fn kill_9_mid_ingest_loses_no_acknowledged_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("orders.csv");
    big_orders(&file);
    let store_dir = dir.path().join("store");

    let mut child = Command::new(cis_bin())
        .args(["--store"])
        .arg(&store_dir)
        .args(["ingest", "orders"])
        .arg(&file)
        .args(["--recorded-at", "event-time", "--batch-rows", "10000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn cis");
    let stdout = child.stdout.take().expect("stdout");
    let mut acks = Vec::new();
    for line in BufReader::new(stdout).lines() {
        if let Some(ack) = parse_ack(&line.expect("line")) {
            acks.push(ack);
        }
        if acks.len() == 3 {
            child.kill().expect("SIGKILL");
            break;
        }
    }
    let status = child.wait().expect("wait");
    assert_eq!(
        status.signal(),
        Some(9),
        "the child must die mid-ingest, not finish ({status:?})"
    );
    assert_eq!(acks.len(), 3);

    let store = Store::open(&store_dir).expect("reopen after SIGKILL");
    let report = store.log().verify().expect("log verifies after the crash");
    let batches = store.log().batches().expect("batches");
    for ack in &acks {
        let b = &batches[ack.batch as usize - 1];
        assert_eq!(
            (b.events, hex(&b.head_after)),
            (ack.events, ack.head.clone()),
            "batch {}",
            ack.batch
        );
    }
    assert!(report.events >= acks.iter().map(|a| a.events).sum::<u64>());
    assert!(report.events < ROWS as u64);

    let rerun = ingest(&store, Kind::Order, Format::Csv, &file, RecordedAt::EventTime);
    assert_eq!(rerun.accepted + rerun.duplicates, ROWS as u64);
    assert_eq!(
        rerun.duplicates, report.events,
        "exactly the events that survived are skipped"
    );
    let after = store.log().verify().expect("verifies after the re-run");
    assert_eq!(after.events, ROWS as u64, "every row stored exactly once");

    let clean = Store::in_memory().expect("store");
    let uninterrupted = ingest(&clean, Kind::Order, Format::Csv, &file, RecordedAt::EventTime);
    assert_eq!(hex(&after.head), uninterrupted.head_after);
}

/// The customer the erase kill loop erases (a synthetic one: in every snapshot and the scores)
/// and a value only its rows hold, one of them quarantined.
const VICTIM: &str = "c000007";
const MARKER: &str = "MARKER-erase-kill-5e1d";

/// A closed store like the demo's (CDNOW, a synthetic population, snapshots, models, scores)
/// plus the victim's marked rows: enough work for an erasure to be killed at varied points.
fn erase_template(dir: &Path) -> PathBuf {
    let store_dir = dir.join("template");
    let store = Store::open(&store_dir).expect("store");
    let rows = write(
        dir,
        "victim.csv",
        &format!(
            "customer_id,event_time,signup_date,country,plan\n{VICTIM},2024-01-01,2024-01-01,DE,{MARKER}\n\
             {VICTIM},2024-01-05,not-a-date,DE,{MARKER}\n"
        ),
    );
    let run = ingest(&store, Kind::Customer, Format::Csv, &rows, RecordedAt::EventTime);
    assert_eq!((run.accepted, run.quarantined), (1, 1));
    let opts = DemoOptions {
        config: fixture("demo/cis.toml"),
        customers: Some(1_000),
        seed: Some(42),
    };
    let demo = cis::demo::run(&store, &store_dir, &opts, &mut std::io::sink()).expect("demo");
    let (_, set) = scores::load_scores(&store, &demo.scores).expect("scores");
    assert!(
        set.rows.iter().any(|r| r.customer_id == VICTIM),
        "the scores hold the victim"
    );
    store_dir
}

/// `cis erase` of the victim, always the same request.
fn erase_victim(store_dir: &Path) -> Command {
    let mut c = Command::new(cis_bin());
    c.arg("--store")
        .arg(store_dir)
        .args(["erase", "--customer", VICTIM, "--reason", "request 7", "--by", "dpo"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// What an erasure leaves, without its timestamps.
#[derive(Debug, PartialEq)]
struct Erased {
    verify: VerifyReport,
    /// Times blanked ("completed" once it is).
    requests: Vec<ErasureRequest>,
    /// Per snapshot and score run: its name, what its body hashes to, its redactions (times
    /// zeroed).
    artifacts: Vec<(String, ArtifactHash, Vec<Redaction>)>,
    quarantine: Vec<Quarantined>,
    /// Files holding the marker, and left-overs of the protocol (a half-done rewrite, a
    /// rewrite still owed).
    leftovers: Vec<PathBuf>,
}

fn erased_state(store_dir: &Path) -> Erased {
    let mut leftovers = files_containing(store_dir, MARKER.as_bytes());
    leftovers.extend(
        ["records.old", "records.compacting", "compaction-owed"]
            .map(|f| store_dir.join(f))
            .into_iter()
            .filter(|p| p.exists()),
    );
    let store = Store::open(store_dir).expect("open");
    let requests = erasure::requests(&store)
        .expect("requests")
        .into_iter()
        .map(|r| ErasureRequest {
            requested_at: String::new(),
            completed_at: r.completed_at.as_ref().map(|_| "completed".into()),
            ..r
        })
        .collect();
    let mut artifacts = Vec::new();
    for kind in [snapshot::KIND, scores::KIND] {
        for r in store.artifacts().list(kind, i64::MAX).expect("list") {
            let a = store.artifacts().get(&r.hash).expect("get").expect("stored");
            let notes = store.artifacts().redactions(&r.hash).expect("redactions");
            let notes = notes.into_iter().map(|n| Redaction { at: 0, ..n }).collect();
            artifacts.push((hex(&r.hash), a.recomputed_hash(), notes));
        }
    }
    Erased {
        verify: store.log().verify().expect("the log verifies"),
        requests,
        artifacts,
        quarantine: records::quarantined(&store, None).expect("quarantine"),
        leftovers,
    }
}

/// Erasures to kill (`CIS_ERASE_KILLS` for more) and their seed (`CIS_ERASE_KILL_SEED`).
fn kill_plan() -> (usize, u64) {
    let var = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .map(|v| v.parse().expect("a number"))
            .unwrap_or(default)
    };
    (var("CIS_ERASE_KILLS", 20) as usize, var("CIS_ERASE_KILL_SEED", 8))
}

/// SIGKILLs `kills` runs of `command` (the plan: kills and seed), each on a fresh copy of
/// `template` in `dir` and after a seeded random delay within `took` (what an uninterrupted
/// run takes), then hands the store and the delay to `check`. A run may finish before its
/// kill lands (it is checked all the same): a few more runs make up for those, on a loaded
/// machine too, and later kills aim within the delay it finished in. Returns (killed, runs).
fn kill_loop(
    template: &Path,
    dir: &Path,
    (kills, seed): (usize, u64),
    mut took: std::time::Duration,
    command: impl Fn(&Path) -> Command,
    mut check: impl FnMut(&Path, std::time::Duration),
) -> (usize, usize) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let (mut killed, mut runs) = (0, 0);
    while killed < kills {
        runs += 1;
        assert!(runs <= 3 * kills, "only {killed} of {runs} runs were killed mid-way");
        let store = dir.join(format!("killed-{runs}"));
        copy_dir(template, &store);
        // Anywhere from process start to when an uninterrupted run is done.
        let delay = took.mul_f64(rng.gen_range(0.0..1.0));
        let mut child = command(&store).spawn().expect("spawn cis");
        std::thread::sleep(delay);
        let _ = child.kill();
        let status = child.wait().expect("wait");
        if status.signal() == Some(9) {
            killed += 1;
        } else {
            assert!(status.success(), "a run not killed failed: {status:?}");
            took = delay;
        }
        check(&store, delay);
        std::fs::remove_dir_all(&store).expect("remove");
    }
    (killed, runs)
}

#[test]
fn kill_9_mid_erase_is_finished_by_running_it_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let template = erase_template(dir.path());

    let reference = dir.path().join("reference");
    copy_dir(&template, &reference);
    let started = Instant::now();
    assert!(erase_victim(&reference).status().expect("erase").success());
    let reference_took = started.elapsed();
    let expected = erased_state(&reference);
    assert_eq!(expected.requests.len(), 1);
    let r = &expected.requests[0];
    assert!(
        r.completed_at.is_some() && r.events > 1 && r.quarantined_rows == 1,
        "{r:?}"
    );
    assert!(
        r.artifacts.len() >= 4,
        "the snapshots and the scores held the victim: {r:?}"
    );
    assert_eq!(expected.leftovers, Vec::<PathBuf>::new());

    let (killed, runs) = kill_loop(
        &template,
        dir.path(),
        kill_plan(),
        reference_took,
        erase_victim,
        |store, delay| {
            let rerun = erase_victim(store).stderr(Stdio::piped()).output().expect("re-run");
            assert!(
                rerun.status.success(),
                "re-run after a kill at {delay:?}: {}",
                String::from_utf8_lossy(&rerun.stderr)
            );
            assert_eq!(erased_state(store), expected, "killed at {delay:?}");
        },
    );
    eprintln!(
        "erase kill loop: one erase of {} events takes {reference_took:?}; {killed} of {runs} runs killed mid-erase, each finished by a re-run",
        expected.verify.events
    );
}

/// A store a feed has appended to in small runs, each compacted as ingest does, then erased
/// from: buckets of many blocks, and value-log garbage.
fn fed_template(dir: &Path) -> PathBuf {
    let store_dir = dir.join("fed");
    let store = Store::open(&store_dir).expect("store");
    for b in 0..24i64 {
        let events = (0..600)
            .flat_map(|c| {
                (0..2).map(move |i| NewEvent {
                    kind: 1 + (c % 3) as u8,
                    subject: format!("c{c}"),
                    event_time: b * 86_400 + c * 60 + i,
                    // Every fourth run brings late rows: recorded a day after they happened.
                    recorded_at: b * 86_400 + c * 60 + i + if b % 4 == 0 { 86_400 } else { 0 },
                    body: format!("run {b} customer {c} event {i}").into_bytes(),
                })
            })
            .collect();
        store.log().append(events, b as u64 + 1, b * 86_400).expect("append");
        store.log().compact(Compaction::AfterAppends).expect("compact");
    }
    // Erasures rewrite the blocks of their customers' buckets: the old copies are garbage.
    for c in (0..600).step_by(3) {
        store.log().erase(&format!("c{c}"), c as u64 + 1).expect("erase");
    }
    store_dir
}

/// Every read of the log, as text: a full scan under a few visibilities, and the verified head.
fn log_reads(store_dir: &Path) -> (Vec<String>, VerifyReport) {
    let store = Store::open(store_dir).expect("open");
    let mut reads = Vec::new();
    for (t, k) in [
        (i64::MAX, i64::MAX),
        (12 * 86_400, 12 * 86_400),
        (12 * 86_400, i64::MAX),
    ] {
        let vis = Visibility {
            event_time_max: t,
            recorded_max: k,
        };
        let mut seen = Vec::new();
        store
            .log()
            .scan(vis, |e| {
                seen.push(format!(
                    "{} {} {} {} {:?}",
                    hex(e.id),
                    e.subject,
                    e.event_time,
                    e.recorded_at,
                    e.body
                ));
                Ok::<_, cis_storage::StorageError>(())
            })
            .expect("scan");
        seen.sort();
        reads.extend(seen);
    }
    (reads, store.log().verify().expect("the log verifies"))
}

/// Bytes of the store's value-log files.
fn value_log_bytes(store_dir: &Path) -> u64 {
    std::fs::read_dir(store_dir.join("blocks"))
        .expect("blocks/")
        .map(|e| e.expect("entry").metadata().expect("stat").len())
        .sum()
}

fn compact_store(store_dir: &Path) -> Command {
    let mut c = Command::new(cis_bin());
    c.arg("--store")
        .arg(store_dir)
        .args(["store", "compact"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

#[test]
fn kill_9_mid_compaction_changes_no_read_and_a_rerun_leaves_no_garbage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let template = fed_template(dir.path());
    let expected = log_reads(&template);
    let garbage = value_log_bytes(&template);

    let reference = dir.path().join("reference");
    copy_dir(&template, &reference);
    let started = Instant::now();
    let done = compact_store(&reference)
        .stdout(Stdio::piped())
        .output()
        .expect("compact");
    let took = started.elapsed();
    assert!(done.status.success());
    let said = String::from_utf8_lossy(&done.stdout);
    assert!(said.contains("value log: 1 file(s) of garbage deleted"), "{said}");
    let live = value_log_bytes(&reference);
    assert!(
        live < garbage,
        "compaction left {live} of the fed store's {garbage} bytes"
    );
    assert_eq!(log_reads(&reference), expected);

    let (killed, runs) = kill_loop(&template, dir.path(), (6, 14), took, compact_store, |store, delay| {
        assert_eq!(log_reads(store), expected, "killed at {delay:?}");
        assert!(compact_store(store).status().expect("re-run").success());
        assert_eq!(log_reads(store), expected, "killed at {delay:?}, then compacted");
        assert_eq!(
            value_log_bytes(store),
            live,
            "killed at {delay:?}: garbage left after the re-run"
        );
    });
    eprintln!(
        "compaction kill loop: one `cis store compact` takes {took:?} and leaves {live} of {garbage} value-log bytes; {killed} of {runs} runs killed"
    );
}
