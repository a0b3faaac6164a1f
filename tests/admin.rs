//! The admin API through the router (`oneshot`): token scopes, jobs (ingest of an upload,
//! snapshot), token management, and the access log's record of each admin action.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use cis_core::AsOf;
use cis_features::snapshot;
use cis_server::access_log::{self, Filter};
use cis_server::api::tokens::{self, Scope, TokenRecord};
use cis_server::api::{app, AppState};
use cis_storage::{hex, Store};
use serde_json::Value;

use crate::http::{send, send_request};
use crate::util::{cdnow_store, t};

const NEW_ORDERS: &str = "order_id,customer_id,event_time,amount,currency\n\
n1,0001,1997-08-10,10.00,USD\n\
n2,0001,1997-08-11,20.00,USD\n";

struct Admin {
    state: AppState,
    app: Router,
    admin: String,
    reader: String,
}

fn admin_world() -> Admin {
    let store = Arc::new(cdnow_store());
    let admin = tokens::create_scoped(&store, "ops", Scope::Admin).expect("admin token");
    let reader = tokens::create(&store, "reader").expect("read token");
    let state = AppState::new(store);
    Admin {
        app: app(state.clone()),
        state,
        admin,
        reader,
    }
}

async fn post(app: &Router, uri: &str, token: &str, body: &str) -> crate::http::Reply {
    let req = Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::from(body.to_string()))
        .expect("request");
    send_request(app, req).await
}

/// Polls the job until it has ended; its final view.
async fn wait(app: &Router, token: &str, job: &Value) -> Value {
    let id = job["id"].as_u64().expect("job id");
    for _ in 0..600 {
        let r = send(app, Method::GET, &format!("/admin/jobs/{id}"), Some(token)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let v = r.json();
        match v["state"].as_str() {
            Some("done" | "failed") => return v,
            Some("queued" | "running") => tokio::time::sleep(Duration::from_millis(20)).await,
            other => panic!("state {other:?}: {v}"),
        }
    }
    panic!("job {id} did not end");
}

async fn profile(app: &Router, token: &str) -> Value {
    let r = send(
        app,
        Method::GET,
        "/customer/profile?customer_id=0001&as_of=1997-09-30",
        Some(token),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    r.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_token_is_refused_admin_routes_with_403_and_keeps_its_reads() {
    let w = admin_world();
    let r = post(&w.app, "/admin/jobs/snapshot?as_of=1997-09-30", &w.reader, "").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let error = r.json()["error"].as_str().expect("a JSON error").to_string();
    assert!(
        error.contains("'reader' is a read token") && error.contains("--scope admin"),
        "{error}"
    );
    // Its reads are what they were; an admin token reads too.
    profile(&w.app, &w.reader).await;
    profile(&w.app, &w.admin).await;
    // Scopes are stored with the token.
    let list = tokens::list(&w.state.store).expect("list");
    let scope = |n: &str| list.iter().find(|t| t.name == n).map(|t| t.scope);
    assert_eq!((scope("ops"), scope("reader")), (Some(Scope::Admin), Some(Scope::Read)));
}

#[test]
fn a_token_recorded_before_scopes_is_a_read_token() {
    let store = Store::in_memory().expect("store");
    // A creation record as written before scopes existed: no `scope` field.
    let old = r#"{"event":"created","name":"old","token_blake3":"00","created_at":"2026-01-01T00:00:00Z"}"#;
    let parsed: TokenRecord = serde_json::from_str(old).expect("old record");
    assert!(matches!(parsed, TokenRecord::Created { scope: Scope::Read, .. }));
    store
        .journal_put(tokens::JOURNAL, b"old\0\0", old.as_bytes())
        .expect("put");
    let list = tokens::list(&store).expect("list");
    assert_eq!(list[0].scope, Scope::Read);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_ingest_an_upload_and_snapshot_and_the_profile_sees_them_at_once() {
    let w = admin_world();
    let before = profile(&w.app, &w.reader).await;

    let r = post(
        &w.app,
        "/admin/jobs/ingest?kind=orders&name=feeds/new.csv&recorded_at=event-time",
        &w.admin,
        NEW_ORDERS,
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
    let location = r.headers[header::LOCATION].to_str().expect("location").to_string();
    let job = r.json();
    assert_eq!(location, format!("/admin/jobs/{}", job["id"]));
    assert_eq!(
        (job["kind"].as_str(), job["by"].as_str()),
        (Some("ingest"), Some("ops"))
    );
    let done = wait(&w.app, &w.admin, &job).await;
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["exit_code"], 0);
    let stdout = done["stdout"].as_str().expect("stdout");
    assert!(
        stdout.starts_with("committed batch 2: 2 new events from lines 2-3"),
        "{stdout}"
    );
    assert!(stdout.contains("2 lines from feeds/new.csv — 2 accepted"), "{stdout}");
    assert_eq!(done["progress"]["done"], done["progress"]["total"]);
    assert_eq!(done["progress"]["total"], NEW_ORDERS.len());
    // The run is recorded under the client's name; the profile reads the new batch at once.
    let runs = cis_ingest::records::runs(&w.state.store).expect("runs");
    assert_eq!(runs.last().map(|r| r.file.as_str()), Some("feeds/new.csv"));
    let after = profile(&w.app, &w.reader).await;
    assert_eq!(after["proof"]["log_batch"], 2);
    assert_ne!(before["features"], after["features"]);

    // An upload over the API's body limit streams through (the ingest route has its own).
    let mut big = String::from("order_id,customer_id,event_time,amount,currency\n");
    for i in 0..2000 {
        big.push_str(&format!("big{i},0003,1997-08-{:02},1.00,USD\n", 1 + i % 28));
    }
    assert!(big.len() > cis_server::api::BODY_LIMIT);
    let r = post(
        &w.app,
        "/admin/jobs/ingest?kind=orders&name=big.csv&recorded_at=event-time",
        &w.admin,
        &big,
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
    let done = wait(&w.app, &w.admin, &r.json()).await;
    assert!(
        done["stdout"].as_str().is_some_and(|o| o.contains("2000 accepted")),
        "{done}"
    );

    // A snapshot job prints the hash the library stores.
    let r = post(&w.app, "/admin/jobs/snapshot?as_of=1997-09-30", &w.admin, "").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
    let done = wait(&w.app, &w.admin, &r.json()).await;
    assert_eq!(done["state"], "done", "{done}");
    let (hash, new, _) = snapshot::create(&w.state.store, AsOf::new(Some(t("1997-09-30")), None)).expect("snapshot");
    assert!(!new, "the job stored it");
    let stdout = done["stdout"].as_str().expect("stdout");
    assert!(
        stdout.starts_with(&format!("snapshot {} (new)", hex(&hash))),
        "{stdout}"
    );

    // A job that fails says why, as the CLI would, with exit code 1.
    let r = post(
        &w.app,
        "/admin/jobs/ingest?kind=orders&name=bad.csv",
        &w.admin,
        "no,header\n",
    )
    .await;
    let failed = wait(&w.app, &w.admin, &r.json()).await;
    assert_eq!(
        (failed["state"].as_str(), failed["exit_code"].as_u64()),
        (Some("failed"), Some(1))
    );
    assert!(
        failed["error"].as_str().is_some_and(|e| e.contains("bad.csv")),
        "{failed}"
    );

    // Bad parameters are a 400 naming them; an unknown job a 404.
    let r = post(&w.app, "/admin/jobs/ingest?kind=things&name=x.csv", &w.admin, "").await;
    assert_eq!(
        (r.status, r.json()["parameter"].as_str()),
        (StatusCode::BAD_REQUEST, Some("kind"))
    );
    let r = post(&w.app, "/admin/jobs/snapshot", &w.admin, "").await;
    assert_eq!(
        (r.status, r.json()["parameter"].as_str()),
        (StatusCode::BAD_REQUEST, Some("as_of"))
    );
    let r = send(&w.app, Method::GET, "/admin/jobs/999", Some(&w.admin)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // The access log holds each admin action: who, what, the job, the outcome.
    let log = w.state.access.as_ref().expect("access log");
    // The outcome records are written when the jobs end, which they have.
    log.flush().expect("flush");
    let records = access_log::list(&w.state.store, &Filter::default()).expect("list");
    let admin: Vec<_> = records
        .iter()
        .map(|(_, r)| r)
        .filter(|r| r.endpoint.starts_with("/admin/jobs/") && r.job.is_some())
        .map(|r| (r.token.clone(), r.endpoint.clone(), r.job, r.outcome.clone()))
        .collect();
    let ok = |job: u64, endpoint: &str, outcome: &str| {
        (
            Some("ops".to_string()),
            endpoint.to_string(),
            Some(job),
            Some(outcome.to_string()),
        )
    };
    for want in [
        ok(
            1,
            "/admin/jobs/ingest",
            &format!(
                "queued: ingest orders from 'feeds/new.csv' ({} bytes, csv)",
                NEW_ORDERS.len()
            ),
        ),
        ok(1, "/admin/jobs/ingest", "done, exit 0"),
        ok(
            3,
            "/admin/jobs/snapshot",
            "queued: snapshot as of 1997-09-30T00:00:00Z known at 1997-09-30T00:00:00Z",
        ),
        ok(3, "/admin/jobs/snapshot", "done, exit 0"),
    ] {
        assert!(admin.contains(&want), "{want:?} in {admin:?}");
    }
    assert!(
        admin
            .iter()
            .any(|r| r.2 == Some(4) && r.3.as_deref().is_some_and(|o| o.starts_with("failed: "))),
        "{admin:?}"
    );
    // Polling is not an action.
    assert!(!records.iter().any(|(_, r)| r.endpoint == "/admin/jobs/{id}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_created_and_revoked_through_the_api() {
    let w = admin_world();
    let r = post(&w.app, "/admin/tokens?name=svc&scope=read", &w.admin, "").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let v = r.json();
    let token = v["stdout"].as_str().expect("stdout").trim().to_string();
    assert!(token.starts_with("cis_"), "{v}");
    assert!(
        v["stderr"]
            .as_str()
            .is_some_and(|e| e.contains("read token 'svc' created")),
        "{v}"
    );
    profile(&w.app, &token).await;
    let r = post(&w.app, "/admin/tokens?name=svc", &w.admin, "").await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.json()["error"].as_str().is_some_and(|e| e.contains("already exists")));

    let r = send(&w.app, Method::DELETE, "/admin/tokens/svc", Some(&w.admin)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["stdout"], "token 'svc' revoked\n");
    // Refused from the next request on.
    let r = send(
        &w.app,
        Method::GET,
        "/customer/profile?customer_id=0001&as_of=1997-09-30",
        Some(&token),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = send(&w.app, Method::DELETE, "/admin/tokens/nobody", Some(&w.admin)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    w.state.access.as_ref().expect("access log").flush().expect("flush");
    let outcomes: Vec<String> = access_log::list(&w.state.store, &Filter::default())
        .expect("list")
        .into_iter()
        .filter_map(|(_, r)| r.outcome)
        .collect();
    assert!(
        outcomes.contains(&"created read token 'svc'".to_string()),
        "{outcomes:?}"
    );
    assert!(outcomes.contains(&"revoked token 'svc'".to_string()), "{outcomes:?}");
    assert!(outcomes.iter().all(|o| !o.contains(&token)), "never the token text");
}
