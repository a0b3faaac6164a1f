//! `cis demo`: the batch job leaves no personal data in or beside the store, and every README
//! API example answers on the store it leaves.

use std::process::Command;
use std::sync::Arc;

use axum::http::{Method, StatusCode};
use cis_server::api::tokens;
use cis_server::api::{app, AppState};
use cis_storage::Store;

use crate::erasure::files_containing;
use crate::http::send;
use crate::util::cis_bin;

#[test]
fn the_demo_leaves_no_generated_email_address_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store_dir = dir.path().join("store");
    let scratch = dir.path().join("tmp");
    std::fs::create_dir(&scratch).expect("scratch dir");
    let out = Command::new(cis_bin())
        .arg("--store")
        .arg(&store_dir)
        .args(["demo", "--no-serve", "--customers", "400"])
        // Where the demo writes its generated inputs, so the test can see them removed.
        .env("TMPDIR", &scratch)
        .output()
        .expect("run cis demo");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The generator writes `c000123@example.com` for every customer; ingest drops the column.
    let found = files_containing(dir.path(), b"@example.com");
    assert!(found.is_empty(), "email addresses left in {found:?}");
    let left: Vec<_> = std::fs::read_dir(&scratch).expect("scratch").collect();
    assert!(left.is_empty(), "the generated inputs are removed afterwards: {left:?}");
}

/// The README's API examples (section "The API") against a fresh demo store: each answers what
/// the README says. The CDNOW ones need the demo to have scored the 1997-09-30 snapshot.
#[test]
fn every_readme_api_example_answers_on_a_fresh_demo() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store_dir = dir.path().join("store");
    let out = Command::new(cis_bin())
        .arg("--store")
        .arg(&store_dir)
        .args(["demo", "--no-serve", "--customers", "400"])
        .output()
        .expect("run cis demo");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(summary.contains("267a5370"), "the README's CDNOW snapshot: {summary}");

    // Running it again is a no-op that says so.
    let again = Command::new(cis_bin())
        .arg("--store")
        .arg(&store_dir)
        .args(["demo", "--no-serve", "--customers", "400"])
        .output()
        .expect("run cis demo again");
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    let again = String::from_utf8_lossy(&again.stdout).into_owned();
    assert_eq!(again.matches("with this config; nothing to do").count(), 2, "{again}");

    let store = Store::open(&store_dir).expect("open the demo store");
    let token = tokens::create(&store, "readme").expect("token");
    let app = app(AppState::new(Arc::new(store)));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let get = |uri: &'static str| send(&app, Method::GET, uri, Some(&token));
        for (uri, customer) in [
            ("/customer/profile?customer_id=c000001&as_of=2025-07-01", "c000001"),
            (
                "/customer/profile?customer_id=0001&as_of=1997-09-30&known_at=1998-01-01",
                "0001",
            ),
        ] {
            let r = get(uri).await;
            assert_eq!(r.status, StatusCode::OK, "{uri}: {}", r.text());
            let p = r.json();
            assert_eq!(p["customer_id"], customer, "{p}");
            let scores = &p["scores"];
            assert!(scores.is_object(), "{uri} has scores: {p}");
            assert!(scores["churn_probability"].is_number(), "{uri}: {scores}");
            assert!(scores["clv_12m"].is_number(), "{uri}: {scores}");
            assert!(scores["segment"].is_string(), "{uri}: {scores}");
        }
        let r = get("/artifacts/267a5370").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert_eq!(r.json()["kind"], "snapshot");
        let r = get("/snapshots?as_of_before=2025-07-01").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let r = get("/export/customer_risk_scores?as_of=1997-09-30&format=parquet").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert!(r.body.starts_with(b"PAR1"), "a Parquet file");
        let r = get("/metrics").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let r = send(&app, Method::GET, "/healthz", None).await;
        assert_eq!(r.status, StatusCode::OK);
    });
}
