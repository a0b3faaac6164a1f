//! The API access log: reads through the router (`oneshot`) on a CDNOW store on disk, then the
//! records, their chain, a tampered record named by `verify` (library and CLI), and the token
//! text nowhere in the store's files; forged customer ids printed escaped on one row; refused
//! requests counted per route, status and minute instead of recorded one by one.

use std::ops::ControlFlow;
use std::sync::Arc;

use axum::http::{Method, StatusCode};
use axum::Router;
use cis_core::time::Timestamp;
use cis_export::{self as export, Format};
use cis_models::scores;
use cis_server::access_log::{self, AccessLogConfig, AccessRecord, Filter, LEDGER};
use cis_server::api::{app_with, tokens, AppState, ExtraRoutes};
use cis_storage::{hex, StorageError, Store};

use crate::util::{cdnow_models, cis, ingest_cdnow, t};

async fn get(app: &Router, uri: &str, token: Option<&str>) -> (StatusCode, Vec<u8>) {
    let reply = crate::http::send(app, Method::GET, uri, token).await;
    (reply.status, reply.body)
}

/// Every record of the log, split into refused-request aggregates (no token) and single reads.
fn refused_and_reads(store: &Store) -> (Vec<AccessRecord>, Vec<AccessRecord>) {
    access_log::list(store, &Filter::default())
        .expect("list")
        .into_iter()
        .map(|(_, r)| r)
        .partition(|r| r.token.is_none())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_logged_chained_and_tampering_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store_dir = dir.path().join("store");
    let store = Store::open(&store_dir).expect("store");
    ingest_cdnow(&store);
    let (snap, clv, seg) = cdnow_models(&store);
    let (score_hash, ..) = scores::score(&store, &snap, &[clv, seg]).expect("score");
    let token = tokens::create(&store, "analyst").expect("token");
    let store = Arc::new(store);

    // Switched off: reads are served and nothing is logged.
    let off = AppState::with_access_log(
        store.clone(),
        AccessLogConfig {
            enabled: false,
            ..AccessLogConfig::default()
        },
    );
    let (status, _) = get(&app_with(off, ExtraRoutes::default()), "/snapshots", Some(&token)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(access_log::list(&store, &Filter::default()).expect("list").is_empty());

    let state = AppState::new(store.clone());
    let app = app_with(state.clone(), cis_server::dashboard::routes());
    let profile = "/customer/profile?customer_id=0001&as_of=1997-09-30&known_at=1997-10-01";
    let artifact = format!("/artifacts/{}", hex(&snap));
    let export_csv = "/export/customer_risk_scores?as_of=1997-09-30&format=csv";
    let dashboard = "/dashboard?as_of=1997-09-30";
    let reads: [(&str, Option<&str>, StatusCode); 9] = [
        (profile, Some(&token), StatusCode::OK),
        (
            "/customer/profile?customer_id=nobody&as_of=1997-09-30",
            Some(&token),
            StatusCode::NOT_FOUND,
        ),
        (profile, None, StatusCode::UNAUTHORIZED),
        (profile, Some("cis_not-a-token"), StatusCode::UNAUTHORIZED),
        (&artifact, Some(&token), StatusCode::OK),
        ("/snapshots", Some(&token), StatusCode::OK),
        (export_csv, Some(&token), StatusCode::OK),
        (
            "/export/customer_risk_scores?as_of=1990-01-01",
            Some(&token),
            StatusCode::NOT_FOUND,
        ),
        (dashboard, Some(&token), StatusCode::OK),
    ];
    let before = cis_core::time::now();
    let mut export_body = Vec::new();
    for (uri, tok, want) in reads {
        let (status, body) = get(&app, uri, tok).await;
        assert_eq!(status, want, "{uri}: {}", String::from_utf8_lossy(&body));
        if uri == export_csv {
            export_body = body;
        }
    }
    // Metrics are not a data read.
    assert_eq!(get(&app, "/metrics", Some(&token)).await.0, StatusCode::OK);

    // The export route serves the bytes `cis export scores` writes.
    let file = dir.path().join("scores.csv");
    let summary = export::export_scores(&store, Some(t("1997-09-30")), Format::Csv, &file).expect("export");
    assert_eq!(summary.score_hash, hex(&score_hash));
    assert_eq!(export_body, std::fs::read(&file).expect("read export"));

    // Shutdown: the last handle on the writer drains the queue and flushes.
    drop(app);
    drop(state);
    // The two 401s are one count (two, if a minute ended between them), written at shutdown.
    let (refused, records) = refused_and_reads(&store);
    assert_eq!(refused.iter().map(AccessRecord::requests).sum::<u64>(), 2);
    assert!(refused
        .iter()
        .all(|r| r.endpoint == "/customer/profile" && r.status == 401 && r.customer.is_none()));
    let seen: Vec<(&str, u16)> = records.iter().map(|r| (r.endpoint.as_str(), r.status)).collect();
    assert_eq!(
        seen,
        vec![
            ("/customer/profile", 200),
            ("/customer/profile", 404),
            ("/artifacts/{hash}", 200),
            ("/snapshots", 200),
            ("/export/customer_risk_scores", 200),
            ("/export/customer_risk_scores", 404),
            ("/dashboard", 200),
        ]
    );
    assert!(records
        .iter()
        .all(|r| r.token.as_deref() == Some("analyst") && r.count.is_none()));
    let first = &records[0];
    assert_eq!(first.customer.as_deref(), Some("0001"));
    assert_eq!(first.as_of.as_deref(), Some("1997-09-30"));
    assert_eq!(first.known_at.as_deref(), Some("1997-10-01"));
    assert!(first.at >= before && first.at <= cis_core::time::now(), "arrival time");
    assert_eq!(records[1].customer.as_deref(), Some("nobody"));
    assert_eq!(records[2].path.as_deref(), Some(artifact.as_str()), "which artifact");
    assert_eq!(records[0].path, None);
    assert_eq!(records[6].as_of.as_deref(), Some("1997-09-30"));
    let only = Filter {
        customer: Some("0001".into()),
        token: Some("analyst".into()),
        since: Some(before),
    };
    assert_eq!(access_log::list(&store, &only).expect("list").len(), 1);
    let report = access_log::verify(&store).expect("read").expect("intact");
    assert_eq!(report.records as usize, records.len() + refused.len());

    // Edit record 2 (the 404 becomes a 200) through a ledger-level write: verify names it.
    let key = 2u64.to_be_bytes();
    let mut raw = Vec::new();
    store
        .journal_visit(LEDGER, &key, |_, v| {
            raw = v.to_vec();
            Ok::<_, StorageError>(ControlFlow::Break(()))
        })
        .expect("read record 2");
    let status = b"\"status\":404";
    let at = raw
        .windows(status.len())
        .position(|w| w == status)
        .expect("record 2 is the first 404");
    raw[at + status.len() - 3..at + status.len()].copy_from_slice(b"200");
    store.journal_put(LEDGER, &key, &raw).expect("tamper");
    let broken = access_log::verify(&store).expect("read").expect_err("tampered");
    assert_eq!(broken.seq, 2, "{broken}");
    store.flush().expect("flush");
    drop(store);

    // The CLI (the store is free now): listing, and verify naming the record with exit 1.
    let out = cis(&store_dir, &["access-log", "--customer", "0001", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(
        lines.iter().map(|v| v["seq"].as_u64()).collect::<Vec<_>>(),
        vec![Some(1)],
        "a refused request keeps no customer id"
    );
    let out = cis(&store_dir, &["access-log", "verify"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("record 2"), "{err}");
    let out = cis(&store_dir, &["access-log", "--since", "2999-01-01"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).lines().count() == 1, "header only");

    // The token's text is in no file of the store (only its name and blake3 hash are).
    for file in crate::ingest::walk(&store_dir) {
        assert!(!contains(&std::fs::read(&file).expect("read file"), token.as_bytes()));
    }
}

/// An on-disk store with the token "analyst", its directory, and the token.
fn token_store(dir: &tempfile::TempDir) -> (std::path::PathBuf, Arc<Store>, String) {
    let store_dir = dir.path().join("store");
    let store = Store::open(&store_dir).expect("store");
    let token = tokens::create(&store, "analyst").expect("token");
    (store_dir, Arc::new(store), token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_customer_ids_stay_on_one_escaped_row() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store_dir, store, token) = token_store(&dir);
    let state = AppState::new(store.clone());
    let app = app_with(state.clone(), ExtraRoutes::default());
    // (as typed in the URL, as decoded, as the table prints it)
    let forged = [
        (
            "x%0A2026-01-01T00:00:00Z%09forged%09401",
            "x\n2026-01-01T00:00:00Z\tforged\t401",
            r"x\n2026-01-01T00:00:00Z\tforged\t401",
        ),
        ("%1B%5B2J%E2%80%AE", "\u{1b}[2J\u{202e}", r"\x1b[2J\u{202e}"),
    ];
    for (typed, ..) in &forged {
        let uri = format!("/customer/profile?customer_id={typed}&as_of=1997-09-30");
        assert_eq!(get(&app, &uri, Some(&token)).await.0, StatusCode::NOT_FOUND, "{uri}");
    }
    drop(app);
    drop(state);

    // An authenticated 404 is still one record with the customer id as decoded.
    let records = access_log::list(&store, &Filter::default()).expect("list");
    let seen: Vec<_> = records
        .iter()
        .map(|(seq, r)| (*seq, r.token.as_deref(), r.status, r.customer.as_deref(), r.count))
        .collect();
    assert_eq!(
        seen,
        vec![
            (1, Some("analyst"), 404, Some(forged[0].1), None),
            (2, Some("analyst"), 404, Some(forged[1].1), None),
        ]
    );
    drop(store);

    let out = cis(&store_dir, &["access-log"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.stdout
            .iter()
            .all(|&b| b == b'\n' || b == b'\t' || (b >= 0x20 && b != 0x7f)),
        "raw control bytes in {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    let table = String::from_utf8(out.stdout).expect("utf-8");
    assert!(!table.contains('\u{202e}'), "{table}");
    let rows: Vec<Vec<&str>> = table.lines().skip(1).map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows.len(), 2, "one row per record: {table}");
    for (row, (.., printed)) in rows.iter().zip(&forged) {
        assert_eq!(row.len(), 11, "{row:?}");
        assert_eq!((row[2], row[3], row[6]), ("analyst", "404", *printed));
    }

    // --json: one line per record, nothing raw, the customer id intact once parsed.
    let out = cis(&store_dir, &["access-log", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!contains(&out.stdout, b"\x1b") && !contains(&out.stdout, "\u{202e}".as_bytes()));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let customers: Vec<Option<&str>> = lines.iter().map(|v| v["customer"].as_str()).collect();
    assert_eq!(customers, vec![Some(forged[0].1), Some(forged[1].1)]);
}

/// The start of `t`'s minute.
fn minute(t: Timestamp) -> Timestamp {
    t - t.micros().rem_euclid(60_000_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_add_one_record_per_route_status_and_minute() {
    const REFUSED: usize = 20_000;
    let store = Arc::new(Store::in_memory().expect("store"));
    let token = tokens::create(&store, "analyst").expect("token");
    let state = AppState::new(store.clone());
    let app = app_with(state.clone(), ExtraRoutes::default());
    let before = cis_core::time::now();
    for i in 0..REFUSED {
        // No token or a wrong one, on three routes, every request with its own forged values.
        let uri = match i % 3 {
            0 => format!("/customer/profile?customer_id=x{i}%0Aforged&as_of=1997-09-3{}", i % 10),
            1 => format!("/artifacts/{i:064x}"),
            _ => format!("/snapshots?known_at=%1B{i}"),
        };
        let bad = format!("cis_forged-{i}");
        let tok = (i % 2 == 1).then_some(bad.as_str());
        assert_eq!(get(&app, &uri, tok).await.0, StatusCode::UNAUTHORIZED, "{uri}");
        if i == REFUSED / 2 {
            let read = "/customer/profile?customer_id=nobody&as_of=1997-09-30";
            assert_eq!(get(&app, read, Some(&token)).await.0, StatusCode::NOT_FOUND);
        }
    }
    let after = cis_core::time::now();
    drop(app);
    drop(state);

    let (refused, reads) = refused_and_reads(&store);
    assert_eq!(reads.len(), 1, "the authenticated read is its own record");
    assert_eq!(reads[0].customer.as_deref(), Some("nobody"));
    // One record per (route, status, minute): three routes, and the minutes the run spanned.
    let minutes = ((minute(after) - minute(before)) / 60_000_000 + 1) as usize;
    assert!(
        (3..=3 * minutes).contains(&refused.len()),
        "{} records for {minutes} minute(s)",
        refused.len()
    );
    let mut keys: Vec<(&str, u16, Timestamp)> = refused.iter().map(|r| (r.endpoint.as_str(), r.status, r.at)).collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), refused.len(), "each route, status and minute once");
    for r in &refused {
        assert_eq!(r.at, minute(r.at), "an aggregate is dated by its minute");
        assert!((minute(before)..=after).contains(&r.at));
        assert_eq!(r.status, 401);
        assert_eq!(
            (&r.path, &r.customer, &r.as_of, &r.known_at),
            (&None, &None, &None, &None)
        );
    }
    let counted = |route: &str| -> u64 {
        refused
            .iter()
            .filter(|r| r.endpoint == route)
            .map(AccessRecord::requests)
            .sum()
    };
    let third = (REFUSED / 3) as u64;
    assert_eq!(
        [
            counted("/customer/profile"),
            counted("/artifacts/{hash}"),
            counted("/snapshots")
        ],
        [third + 1, third + 1, third],
        "every refused request is counted"
    );
    let report = access_log::verify(&store).expect("read").expect("intact");
    assert_eq!(report.records as usize, refused.len() + reads.len());
}
