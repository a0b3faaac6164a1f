//! The API access log: reads through the router (`oneshot`) on a CDNOW store on disk, then the
//! records, their chain, a tampered record named by `verify` (library and CLI), and the token
//! text nowhere in the store's files.

use std::ops::ControlFlow;
use std::sync::Arc;

use axum::http::{Method, StatusCode};
use axum::Router;
use cis::access_log::{self, AccessLogConfig, AccessRecord, Filter, LEDGER};
use cis::api::{app_with, tokens, AppState, ExtraRoutes};
use cis::export::{self, Format};
use cis::models::scores;
use cis_storage::{hex, Store};

use crate::util::{cdnow_models, cis, ingest_cdnow, t};

async fn get(app: &Router, uri: &str, token: Option<&str>) -> (StatusCode, Vec<u8>) {
    let reply = crate::api::send(app, Method::GET, uri, token).await;
    (reply.status, reply.body)
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
    let app = app_with(state.clone(), cis::dashboard::routes());
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
    let before = cis::time::now();
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
    let records: Vec<AccessRecord> = access_log::list(&store, &Filter::default())
        .expect("list")
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    let seen: Vec<(Option<&str>, &str, u16)> = records
        .iter()
        .map(|r| (r.token.as_deref(), r.endpoint.as_str(), r.status))
        .collect();
    let analyst = Some("analyst");
    assert_eq!(
        seen,
        vec![
            (analyst, "/customer/profile", 200),
            (analyst, "/customer/profile", 404),
            (None, "/customer/profile", 401),
            (None, "/customer/profile", 401),
            (analyst, "/artifacts/{hash}", 200),
            (analyst, "/snapshots", 200),
            (analyst, "/export/customer_risk_scores", 200),
            (analyst, "/export/customer_risk_scores", 404),
            (analyst, "/dashboard", 200),
        ]
    );
    let first = &records[0];
    assert_eq!(first.customer.as_deref(), Some("0001"));
    assert_eq!(first.as_of.as_deref(), Some("1997-09-30"));
    assert_eq!(first.known_at.as_deref(), Some("1997-10-01"));
    assert!(first.at >= before && first.at <= cis::time::now(), "arrival time");
    assert_eq!(records[1].customer.as_deref(), Some("nobody"));
    assert_eq!(records[4].path.as_deref(), Some(artifact.as_str()), "which artifact");
    assert_eq!(records[0].path, None);
    assert_eq!(records[8].as_of.as_deref(), Some("1997-09-30"));
    let only = Filter {
        customer: Some("0001".into()),
        token: Some("analyst".into()),
        since: Some(before),
    };
    assert_eq!(access_log::list(&store, &only).expect("list").len(), 1);
    let report = access_log::verify(&store).expect("read").expect("intact");
    assert_eq!(report.records, 9);

    // Edit record 3 (a 401 becomes a 200) through a ledger-level write: verify names it.
    let key = 3u64.to_be_bytes();
    let mut raw = Vec::new();
    store
        .journal_visit(LEDGER, &key, |_, v| {
            raw = v.to_vec();
            Ok(ControlFlow::Break(()))
        })
        .expect("read record 3");
    let status = b"\"status\":401";
    let at = raw
        .windows(status.len())
        .position(|w| w == status)
        .expect("record 3 is the first 401");
    raw[at + status.len() - 3..at + status.len()].copy_from_slice(b"200");
    store.journal_put(LEDGER, &key, &raw).expect("tamper");
    let broken = access_log::verify(&store).expect("read").expect_err("tampered");
    assert_eq!(broken.seq, 3, "{broken}");
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
        vec![Some(1), Some(3), Some(4)]
    );
    let out = cis(&store_dir, &["access-log", "verify"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("record 3"), "{err}");
    let out = cis(&store_dir, &["access-log", "--since", "2999-01-01"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).lines().count() == 1, "header only");

    // The token's text is in no file of the store (only its name and blake3 hash are).
    for file in crate::ingest::walk(&store_dir) {
        assert!(!contains(&std::fs::read(&file).expect("read file"), token.as_bytes()));
    }
}
