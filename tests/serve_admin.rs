//! The server owns the store: with a real `cis serve` running, the daily batch (`cis ingest`,
//! `snapshot create`, `train`, `score`, `export scores`), `token create|revoke`, `erase` and the
//! reads (`runs`, `access-log`) run through it (admin token in CIS_TOKEN) while a client keeps
//! reading profiles; the same commands on a twin store with no server give the same output and
//! the same snapshot, model and score hashes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::util::{cis, cis_bin, fixture, write};

const NEW_ORDERS: &str = "order_id,customer_id,event_time,amount,currency\n\
n1,0001,1997-08-10,10.00,USD\n\
n2,0001,1997-08-11,20.00,USD\n\
n3,0002,1997-08-12,5.00,USD\n";

/// NEW_ORDERS and 30,000 more orders of 100 customers: an ingest long enough (7 batches) that
/// reads happen while it runs.
fn many_orders() -> String {
    let mut text = NEW_ORDERS.to_string();
    for i in 0..30_000 {
        text.push_str(&format!(
            "m{i},{:04},1997-08-{:02},{}.00,USD\n",
            1 + i % 100,
            1 + i % 28,
            1 + i % 50
        ));
    }
    text
}

/// `cis` on `store` with CIS_TOKEN set (or removed).
fn cis_with(store: &Path, token: Option<&str>, args: &[&str]) -> Output {
    let mut c = Command::new(cis_bin());
    c.arg("--store").arg(store).args(args);
    match token {
        Some(t) => c.env("CIS_TOKEN", t),
        None => c.env_remove("CIS_TOKEN"),
    };
    c.output().expect("run cis")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One GET on a fresh connection: status and JSON body (or the I/O error).
fn get(addr: SocketAddr, path: &str, token: &str) -> std::io::Result<(u16, Value)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)?;
    let status = reply
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line: {reply}")))?;
    let body = reply.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}

fn profile(addr: SocketAddr, customer: &str, token: &str) -> (u16, Value) {
    get(
        addr,
        &format!("/customer/profile?customer_id={customer}&as_of=1997-09-30"),
        token,
    )
    .expect("profile")
}

/// A store with CDNOW backfilled, and a read token.
fn seeded(dir: &Path) -> String {
    let cdnow = fixture("CDNOW_sample.txt");
    let cdnow = cdnow.to_str().expect("path");
    ok(&cis(
        dir,
        &[
            "ingest",
            "orders",
            cdnow,
            "--format",
            "cdnow",
            "--recorded-at",
            "event-time",
        ],
    ));
    ok(&cis(dir, &["token", "create", "--name", "reader"]))
        .trim()
        .to_string()
}

/// The command sequence both ways: ingest, snapshot; their outputs (the snapshot line without
/// its timing).
fn batch(store: &Path, token: Option<&str>, file: &str) -> (String, String) {
    let ingest = ok(&cis_with(
        store,
        token,
        &[
            "ingest",
            "orders",
            file,
            "--recorded-at",
            "event-time",
            "--batch-rows",
            "5000",
        ],
    ));
    let snap = ok(&cis_with(
        store,
        token,
        &["snapshot", "create", "--as-of", "1997-09-30"],
    ));
    let snap = snap.split(" in ").next().expect("line").to_string();
    (ingest, snap)
}

/// Every file under `dir`: its path relative to `dir` and its bytes, in path order.
fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(dir).expect("inside").display().to_string();
                files.push((rel, std::fs::read(&path).expect("read")));
            }
        }
    }
    files.sort();
    assert!(files.len() > 2, "an export holds its tables and _SUCCESS");
    files
}

/// A directory of two files: a copy of `ingested` (whose content the store has) and one new day.
/// The same path each call, so both stores see the same file names.
fn feed_dir(base: &Path, ingested: &str) -> std::path::PathBuf {
    let feed = base.join("feed");
    std::fs::create_dir_all(&feed).expect("feed dir");
    std::fs::copy(ingested, feed.join("a-copy.csv")).expect("copy");
    write(
        &feed,
        "b-new-day.csv",
        "order_id,customer_id,event_time,amount,currency\nd1,0004,1997-09-01,7.00,USD\n",
    );
    feed
}

/// The first 64-hex-digit word of `text` (a hash a command printed).
fn first_hash(text: &str) -> String {
    text.split(|c: char| !c.is_ascii_hexdigit())
        .find(|w| w.len() == 64)
        .unwrap_or_else(|| panic!("no hash in {text}"))
        .to_string()
}

/// The rest of the batch, after [`batch`]: a CLV model trained on `snapshot`, the snapshot
/// scored, the scores exported to `export`. The model's and the scores' hashes, and the
/// export's customer ids.
fn models_batch(store: &Path, token: Option<&str>, snapshot: &str, export: &Path) -> (String, String, Vec<String>) {
    let train = ok(&cis_with(store, token, &["train", "clv", "--snapshot", snapshot]));
    let score = ok(&cis_with(store, token, &["score", "--snapshot", snapshot]));
    let export_line = ok(&cis_with(
        store,
        token,
        &["export", "scores", "--out", export.to_str().expect("path")],
    ));
    assert!(
        export_line.contains(&format!("to {}", export.display())),
        "{export_line}"
    );
    (first_hash(&train), first_hash(&score), export_ids(export))
}

/// The customer ids of a `customer_risk_scores` CSV.
fn export_ids(export: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(export).expect("export");
    text.lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap_or("").to_string())
        .collect()
}

#[test]
fn commands_run_through_a_live_server_while_reads_go_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (served, twin) = (dir.path().join("served"), dir.path().join("twin"));
    let reader = seeded(&served);
    seeded(&twin);
    let file = write(dir.path(), "new-orders.csv", &many_orders());
    let file = file.to_str().expect("path");

    // An upload a killed server left behind goes when the next one starts.
    let left = write(&served, ".upload-left", "order_id,email\n1,someone@example.com\n");

    let (mut server, listening, admin) = crate::util::serve_printing_admin_token(&served);
    let addr: SocketAddr = listening
        .split("http://")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("{listening}"));
    let address_file: Value =
        serde_json::from_slice(&std::fs::read(served.join("server.json")).expect("server.json")).expect("JSON");
    assert_eq!(address_file["pid"], server.id());
    assert_eq!(address_file["addr"], addr.to_string());
    assert!(!left.exists());

    // Reads at a fixed rate for the whole sequence.
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU32::new(0));
    let reads = {
        let (stop, reader, answered) = (stop.clone(), reader.clone(), answered.clone());
        std::thread::spawn(move || {
            let (mut done, mut failed) = (0u32, Vec::new());
            // Not 0003, which the sequence erases.
            let customers = ["0001", "0002", "0004", "0005", "0006"];
            while !stop.load(Ordering::SeqCst) {
                let c = customers[done as usize % customers.len()];
                match get(
                    addr,
                    &format!("/customer/profile?customer_id={c}&as_of=1997-09-30"),
                    &reader,
                ) {
                    Ok((200, _)) => {
                        answered.fetch_add(1, Ordering::SeqCst);
                    }
                    other => failed.push(format!("{c}: {other:?}")),
                }
                done += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            (done, failed)
        })
    };

    // Without a token: told how to get one.
    let out = cis_with(&served, None, &["ingest", "orders", file]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "held by the cis API server at http://{addr} (pid {})",
            server.id()
        )) && err.contains("CIS_TOKEN")
            && err.contains("--print-admin-token"),
        "{err}"
    );
    // A read token is not enough.
    let out = cis_with(&served, Some(&reader), &["snapshot", "create", "--as-of", "1997-09-30"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("403"));

    let before = profile(addr, "0001", &reader).1;
    let answered_before = answered.load(Ordering::SeqCst);
    let (ingest_served, snap_served) = batch(&served, Some(&admin), file);
    // Reads were answered while the batch ran, not only before and after it.
    assert!(answered.load(Ordering::SeqCst) > answered_before + 1);
    // The new events are in the next profile: the log's batch 1 is CDNOW, then 7 of the ingest.
    assert!(ingest_served.contains("committed batch 8: "), "{ingest_served}");
    let (status, after) = profile(addr, "0001", &reader);
    assert_eq!(status, 200);
    assert_eq!(after["proof"]["log_batch"], 8, "{after}");
    assert_ne!(before["features"], after["features"]);

    // A token created through the server works at once, and is refused once revoked.
    let tmp = ok(&cis_with(&served, Some(&admin), &["token", "create", "--name", "tmp"]));
    let tmp = tmp.trim();
    assert_eq!(profile(addr, "0001", tmp).0, 200);
    let revoked = ok(&cis_with(&served, Some(&admin), &["token", "revoke", "tmp"]));
    assert_eq!(revoked, "token 'tmp' revoked\n");
    assert_eq!(profile(addr, "0001", tmp).0, 401);
    // Failing token commands fail as they do directly.
    let again = cis_with(&served, Some(&admin), &["token", "revoke", "tmp"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("error: token 'tmp' is already revoked"));

    // Train, score and export through the server: the profile's scores switch to the new run
    // on the next request, and the export is written here, where the client is.
    let snapshot = first_hash(&snap_served);
    assert!(profile(addr, "0001", &reader).1["proof"]["scores"].is_null());
    let served_export = dir.path().join("served-scores.csv");
    let (model_served, scores_served, ids_served) = models_batch(&served, Some(&admin), &snapshot, &served_export);
    let (status, scored) = profile(addr, "0001", &reader);
    assert_eq!(status, 200);
    assert_eq!(scored["proof"]["scores"], scores_served.as_str(), "{scored}");
    assert!(ids_served.iter().any(|c| c == "0003"));
    // No file of the job's is left in the store directory once fetched.
    assert!(std::fs::read_dir(&served).expect("store dir").all(|e| !e
        .expect("entry")
        .file_name()
        .to_string_lossy()
        .starts_with(".output-")));

    // A read through the server, and an erasure: the erased customer is gone from the API and
    // from the next export.
    let runs = ok(&cis_with(&served, Some(&admin), &["runs"]));
    assert_eq!(runs.lines().count(), 2, "{runs}");
    // The token from a file instead of CIS_TOKEN: the first line of it.
    let token_file = write(dir.path(), "admin.token", &format!("{admin}\n# ops\n"));
    let from_file = ok(&cis_with(
        &served,
        None,
        &["--token-file", token_file.to_str().expect("path"), "runs"],
    ));
    assert_eq!(from_file, runs);
    // An events export (a directory) through the server: the server's tar, unpacked here.
    let events_served = dir.path().join("events-served");
    let export_events = [
        "export",
        "events",
        "--as-of",
        "1998-06-30",
        "--out",
        events_served.to_str().expect("path"),
    ];
    let line = ok(&cis_with(&served, Some(&admin), &export_events));
    assert!(line.contains(&events_served.display().to_string()), "{line}");
    assert!(events_served.join("_SUCCESS").is_file());
    let again = cis_with(&served, Some(&admin), &export_events);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));

    let ids = write(dir.path(), "erase.txt", "0003\n");
    let erased = ok(&cis_with(
        &served,
        Some(&admin),
        &[
            "erase",
            "--customers",
            ids.to_str().expect("path"),
            "--reason",
            "dsr-1",
            "--by",
            "ops",
        ],
    ));
    assert!(
        erased.contains("erasure request 1: ") && erased.contains("customer '0003'"),
        "{erased}"
    );
    assert!(
        erased.contains("rewritten without superseded pages when the server stops"),
        "{erased}"
    );
    assert_eq!(profile(addr, "0003", &reader).0, 404);
    let after_erasure = dir.path().join("after-erasure.csv");
    ok(&cis_with(
        &served,
        Some(&admin),
        &["export", "scores", "--out", after_erasure.to_str().expect("path")],
    ));
    let ids_after = export_ids(&after_erasure);
    assert!(!ids_after.iter().any(|c| c == "0003"));
    assert_eq!(ids_after.len() + 1, ids_served.len());

    // A directory through the server: a file whose content was ingested already is skipped
    // (asked before uploading), the new one is ingested, as directly (compared on the twin below).
    let feed = feed_dir(dir.path(), file);
    let fed_served = ok(&cis_with(
        &served,
        Some(&admin),
        &[
            "ingest",
            "orders",
            feed.to_str().expect("path"),
            "--recorded-at",
            "event-time",
        ],
    ));
    assert!(
        fed_served.contains("a-copy.csv: already ingested as run 2"),
        "{fed_served}"
    );
    assert!(
        fed_served.ends_with("2 file(s): 1 ingested, 1 skipped as already ingested\n"),
        "{fed_served}"
    );

    stop.store(true, Ordering::SeqCst);
    let (done, failed) = reads.join().expect("reader");
    assert!(done > 10, "only {done} reads");
    assert!(failed.is_empty(), "{} of {done} reads failed: {failed:?}", failed.len());

    // SIGTERM: a clean stop, which removes the address file.
    // SAFETY: kill(2) on the child this test started and has not reaped.
    assert_eq!(unsafe { libc::kill(server.id() as i32, libc::SIGTERM) }, 0);
    assert!(server.wait().expect("wait").success());
    assert!(!served.join("server.json").exists());
    // The erasure's rewrite of the records was done at the stop.
    assert!(!served.join("compaction-owed").exists());

    // The same sequence on the twin, directly: the same output and the same snapshot.
    let (ingest_twin, snap_twin) = batch(&twin, None, file);
    assert_eq!(ingest_served, ingest_twin);
    assert_eq!(snap_served, snap_twin);
    assert!(
        snap_served.starts_with("snapshot ") && snap_served.contains("(new)"),
        "{snap_served}"
    );
    let events_twin = dir.path().join("events-twin");
    ok(&cis_with(
        &twin,
        None,
        &[
            "export",
            "events",
            "--as-of",
            "1998-06-30",
            "--out",
            events_twin.to_str().expect("path"),
        ],
    ));
    assert_eq!(tree(&events_served), tree(&events_twin));
    let fed_twin = ok(&cis_with(
        &twin,
        None,
        &[
            "ingest",
            "orders",
            feed_dir(dir.path(), file).to_str().expect("path"),
            "--recorded-at",
            "event-time",
        ],
    ));
    assert_eq!(fed_served, fed_twin);
    let twin_export = dir.path().join("twin-scores.csv");
    let (model_twin, scores_twin, ids_twin) = models_batch(&twin, None, &snapshot, &twin_export);
    assert_eq!((model_served, scores_served), (model_twin, scores_twin));
    assert_eq!(ids_served, ids_twin);
    // The server's actions are in its access log, by the admin token's name.
    let log = ok(&cis(&served, &["access-log", "--json"]));
    for (endpoint, outcome) in [
        ("/admin/jobs/ingest", "done, exit 0"),
        ("/admin/jobs/snapshot", "done, exit 0"),
        ("/admin/tokens", "created read token 'tmp'"),
        ("/admin/tokens/{name}", "revoked token 'tmp'"),
        ("/admin/commands", "ran: cis runs"),
        ("/admin/commands", "done, exit 0"),
    ] {
        assert!(
            log.lines().any(|l| {
                let r: Value = serde_json::from_str(l).expect("JSON");
                r["token"] == "admin-1" && r["endpoint"] == endpoint && r["outcome"] == outcome
            }),
            "{endpoint} {outcome} in\n{log}"
        );
    }
}

#[test]
fn a_stale_address_file_is_ignored() {
    let dir = tempfile::tempdir().expect("tempdir");
    seeded(dir.path());
    // As a server killed with -9 leaves it: a pid that holds nothing.
    let stale = r#"{"addr": "127.0.0.1:9", "pid": 999999999}"#;
    std::fs::write(dir.path().join("server.json"), stale).expect("write");
    let file = write(dir.path(), "new-orders.csv", NEW_ORDERS);
    let out = cis_with(dir.path(), None, &["ingest", "orders", file.to_str().expect("path")]);
    assert!(ok(&out).contains("3 accepted"));
}
