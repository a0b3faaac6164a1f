//! The HTTP API, driven through the router without a socket (`tower::ServiceExt::oneshot`), on
//! CDNOW scored as of 1997-09-30 by a churn, a CLV and a segment model; plus the real server on
//! a loopback socket: graceful shutdown, header-read timeout and connection bound.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::ops::ControlFlow;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use cis_core::AsOf;
use cis_features::snapshot;
use cis_models::churn::ChurnParams;
use cis_models::scores::{self, ScoreSet};
use cis_models::train;
use cis_server::api::listen::Limits;
use cis_server::api::openapi::{ADMIN_ROUTES, ROUTES};
use cis_server::api::tokens::{self, TokenError};
use cis_server::api::{app, AppState};
use cis_storage::{hex, ArtifactHash, StorageError, Store};
use serde_json::Value;
use tower::ServiceExt;

use crate::http::{assert_security_headers, send, Reply, Server};
use crate::util::{cdnow_models, cdnow_store, t};

struct World {
    store: Arc<Store>,
    snap: ArtifactHash,
    churn_snap: ArtifactHash,
    churn: ArtifactHash,
    clv: ArtifactHash,
    seg: ArtifactHash,
    scores: ArtifactHash,
    set: ScoreSet,
    token: String,
}

/// CDNOW; a snapshot as of 1997-09-30 scored by CLV, segments and a churn model trained on the
/// 1997-06-01 snapshot with labels known at 1997-09-30. Built once, shared by every test.
fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let store = cdnow_store();
        let at = AsOf::new(Some(t("1997-09-30")), None);
        let (snap, ..) = snapshot::create(&store, at).expect("snapshot");
        let (churn_snap, ..) = snapshot::create(&store, AsOf::new(Some(t("1997-06-01")), None)).expect("snapshot");
        let (churn, _) = train::churn(&store, &[churn_snap], ChurnParams::default(), 90, t("1997-09-30"))
            .expect("churn")
            .store(&store)
            .expect("store churn");
        let (snap_again, clv, seg) = cdnow_models(&store);
        assert_eq!(snap_again, snap);
        let (scores, _, set) = scores::score(&store, &snap, &[churn, clv, seg]).expect("score");
        let token = tokens::create(&store, "tests").expect("token");
        World {
            store: Arc::new(store),
            snap,
            churn_snap,
            churn,
            clv,
            seg,
            scores,
            set,
            token,
        }
    })
}

fn router() -> Router {
    app(AppState::new(world().store.clone()))
}

async fn get(app: &Router, uri: &str) -> Reply {
    send(app, Method::GET, uri, Some(&world().token)).await
}

/// Equal up to the last bit serde_json's default float parsing may lose.
fn same(got: &Value, want: f64, what: &str) {
    let g = got.as_f64().unwrap_or_else(|| panic!("{what}: {got} is not a number"));
    assert!(
        (g - want).abs() <= f64::EPSILON * want.abs().max(1.0),
        "{what}: got {g}, want {want}"
    );
}

fn same_opt(got: &Value, want: Option<f64>, what: &str) {
    match want {
        Some(w) => same(got, w, what),
        None => assert!(got.is_null(), "{what}: got {got}, want null"),
    }
}

fn assert_error(r: &Reply, status: StatusCode, parameter: Option<&str>) {
    assert_eq!(r.status, status, "{}", r.text());
    let v = r.json();
    let msg = v["error"].as_str().unwrap_or_else(|| panic!("no error message: {v}"));
    if let Some(p) = parameter {
        assert_eq!(v["parameter"], p, "{v}");
        assert!(msg.contains(p), "the message names the parameter: {msg}");
    }
}

#[tokio::test]
async fn profile_is_the_snapshot_row_with_scores_and_proof() {
    let w = world();
    let app = router();
    let at = AsOf::new(Some(t("1997-09-30")), None);
    let snap = snapshot::compute(&w.store, at).expect("compute");
    let names = &snap.features;
    // A few customers: the first, one with repeat purchases (a CLV and P(alive) < 1), the last.
    let with_repeats = w
        .set
        .rows
        .iter()
        .find(|r| r.p_alive.is_some_and(|p| p < 1.0))
        .expect("a repeat customer")
        .customer_id
        .clone();
    let customers = [
        snap.matrix.customers[0].clone(),
        with_repeats,
        snap.matrix.customers[snap.matrix.customers.len() - 1].clone(),
    ];
    let (batch, head) = w.store.log().head_at(i64::MAX).expect("head");
    for c in &customers {
        let r = get(&app, &format!("/customer/profile?customer_id={c}&as_of=1997-09-30")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert_eq!(r.headers[header::CONTENT_TYPE], "application/json");
        let v = r.json();
        assert_eq!(v["customer_id"], c.as_str());
        assert_eq!(v["as_of"], "1997-09-30T00:00:00Z");
        assert_eq!(v["known_at"], "1997-09-30T00:00:00Z");
        let features = v["features"].as_object().expect("features");
        assert_eq!(features.len(), names.len());
        let row = snap.row(c).expect("in the snapshot");
        for (name, want) in names.iter().zip(row) {
            same(&features[name], *want, name);
        }
        let want = w.set.rows.iter().find(|r| &r.customer_id == c).expect("scored");
        let s = &v["scores"];
        assert_eq!(s["as_of"], "1997-09-30T00:00:00Z");
        same_opt(&s["churn_probability"], want.churn_probability, "churn_probability");
        assert!(
            want.churn_probability.is_some(),
            "the churn model scored every customer"
        );
        assert_eq!(s["churn_band"].as_str(), want.churn_band.as_deref());
        same_opt(&s["clv_12m"], want.clv_12m, "clv_12m");
        same_opt(&s["p_alive"], want.p_alive, "p_alive");
        same_opt(
            &s["expected_purchases_90d"],
            want.expected_purchases_90d,
            "expected_purchases_90d",
        );
        assert_eq!(s["segment"].as_str(), want.segment.as_deref());
        let proof = &v["proof"];
        assert_eq!(proof["scores"], hex(&w.scores));
        assert_eq!(proof["snapshot"], hex(&w.snap));
        assert_eq!(proof["models"]["churn"], hex(&w.churn));
        assert_eq!(proof["models"]["clv"], hex(&w.clv));
        assert_eq!(proof["models"]["segments"], hex(&w.seg));
        assert_eq!(proof["log_head"], hex(&head));
        assert_eq!(proof["log_batch"], batch);
        assert_eq!(proof["feature_definitions"], hex(&snap.definition_set));
    }
    let repeat = &customers[1];
    let r = get(
        &app,
        &format!("/customer/profile?customer_id={repeat}&as_of=1997-09-30"),
    )
    .await;
    assert!(r.json()["scores"]["clv_12m"].as_f64().is_some_and(|v| v > 0.0));
}

#[tokio::test]
async fn profile_scores_are_the_latest_known_at_t_and_k() {
    let w = world();
    let app = router();
    let c = &w.set.rows[0].customer_id;

    // Later T: features as of then, scores from the latest set not after T (1997-09-30).
    let r = get(
        &app,
        &format!("/customer/profile?customer_id={c}&as_of=1998-03-01T12:00:00Z"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert_eq!(v["as_of"], "1998-03-01T12:00:00Z");
    assert_eq!(v["scores"]["as_of"], "1997-09-30T00:00:00Z");
    assert_eq!(v["proof"]["scores"], hex(&w.scores));
    let later = snapshot::compute(&w.store, AsOf::new(Some(t("1998-03-01T12:00:00Z")), None)).expect("compute");
    let row = later.row(c).expect("row");
    for (name, want) in later.features.iter().zip(row) {
        same(&v["features"][name], *want, name);
    }

    // Earlier T than every score set: features only.
    let r = get(&app, &format!("/customer/profile?customer_id={c}&as_of=1997-07-01")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert!(v["scores"].is_null(), "{v}");
    assert!(v["proof"]["scores"].is_null());
    assert_eq!(v["proof"]["models"], serde_json::json!({}));

    // K before what the scores know (their snapshot was read at K = 1997-09-30): no scores, and
    // features from the events recorded by K only.
    let uri = format!("/customer/profile?customer_id={c}&as_of=1997-09-30&known_at=1997-08-01");
    let r = get(&app, &uri).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert_eq!(v["known_at"], "1997-08-01T00:00:00Z");
    assert!(v["scores"].is_null(), "{v}");
    let early = snapshot::compute(&w.store, AsOf::new(Some(t("1997-09-30")), Some(t("1997-08-01")))).expect("compute");
    let row = early.row(c).expect("row");
    for (name, want) in early.features.iter().zip(row) {
        same(&v["features"][name], *want, name);
    }

    // No T: now (K = now), which sees every event and the latest scores.
    let r = get(&app, &format!("/customer/profile?customer_id={c}")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["proof"]["scores"], hex(&w.scores));
}

#[tokio::test]
async fn profile_refuses_unknown_customers_and_bad_parameters() {
    let app = router();
    // CDNOW's first purchase is 1997-01-01: customer 0001 does not exist before.
    let r = get(&app, "/customer/profile?customer_id=0001&as_of=1996-12-31").await;
    assert_error(&r, StatusCode::NOT_FOUND, None);
    let r = get(&app, "/customer/profile?customer_id=no-such-customer").await;
    assert_error(&r, StatusCode::NOT_FOUND, None);
    assert!(r.json()["error"]
        .as_str()
        .is_some_and(|m| m.contains("no-such-customer")));

    let cases = [
        ("/customer/profile", "customer_id"),
        ("/customer/profile?as_of=1997-09-30", "customer_id"),
        ("/customer/profile?customer_id=", "customer_id"),
        ("/customer/profile?customer_id=0001&as_of=yesterday", "as_of"),
        ("/customer/profile?customer_id=0001&as_of=1997-02-30", "as_of"),
        ("/customer/profile?customer_id=0001&as_of=2999-01-01", "as_of"),
        ("/customer/profile?customer_id=0001&known_at=1997-13-01", "known_at"),
        ("/customer/profile?customer_id=0001&known_at=2999-01-01", "known_at"),
        ("/customer/profile?customer_id=0001&email=a@b.c", "email"),
        ("/customer/profile?customer_id=0001&customer_id=0002", "customer_id"),
    ];
    for (uri, param) in cases {
        let r = get(&app, uri).await;
        assert_error(&r, StatusCode::BAD_REQUEST, Some(param));
    }
    let long = "x".repeat(300);
    let r = get(&app, &format!("/customer/profile?customer_id={long}")).await;
    assert_error(&r, StatusCode::BAD_REQUEST, Some("customer_id"));
    // Times may be given with an offset; they are answered in UTC.
    let r = get(
        &app,
        "/customer/profile?customer_id=0001&as_of=1997-09-30T02:00:00%2B02:00",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["as_of"], "1997-09-30T00:00:00Z");
}

#[tokio::test]
async fn data_routes_need_an_active_token() {
    let w = world();
    let app = router();
    let protected = [
        "/customer/profile?customer_id=0001&as_of=1997-09-30".to_string(),
        format!("/artifacts/{}", hex(&w.snap)),
        "/snapshots".to_string(),
        "/metrics".to_string(),
    ];
    for uri in &protected {
        let r = send(&app, Method::GET, uri, None).await;
        assert_error(&r, StatusCode::UNAUTHORIZED, None);
        assert_eq!(r.headers[header::WWW_AUTHENTICATE], "Bearer");
        let r = send(&app, Method::GET, uri, Some("cis_0000")).await;
        assert_error(&r, StatusCode::UNAUTHORIZED, None);
        let r = send(&app, Method::GET, uri, Some(&w.token)).await;
        assert_eq!(r.status, StatusCode::OK, "{uri}: {}", r.text());
    }
    // Not a bearer scheme.
    let req = Request::builder()
        .uri("/snapshots")
        .header(header::AUTHORIZATION, format!("Basic {}", w.token))
        .body(Body::empty())
        .expect("request");
    let r = app.clone().oneshot(req).await.expect("answer");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Revoked: valid until revoked, refused right after (same process, cached hash dropped).
    let token = tokens::create(&w.store, "revoke-me").expect("create");
    assert_eq!(
        send(&app, Method::GET, "/snapshots", Some(&token)).await.status,
        StatusCode::OK
    );
    tokens::revoke(&w.store, "revoke-me").expect("revoke");
    let r = send(&app, Method::GET, "/snapshots", Some(&token)).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, None);
    // A fresh server state sees the revocation too (it is in the store, not only in memory).
    let r = send(&router(), Method::GET, "/snapshots", Some(&token)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // Open routes.
    for uri in ["/healthz", "/openapi.json"] {
        assert_eq!(send(&app, Method::GET, uri, None).await.status, StatusCode::OK, "{uri}");
    }
}

#[test]
fn tokens_are_stored_hashed_named_once_and_revoked_by_record() {
    let store = Store::in_memory().expect("store");
    let token = tokens::create(&store, "ci-reader").expect("create");
    assert!(token.starts_with("cis_") && token.len() == 68, "{token}");
    assert_ne!(
        tokens::create(&store, "other").expect("create"),
        token,
        "random, not derived from the name"
    );
    assert!(matches!(
        tokens::create(&store, "ci-reader"),
        Err(TokenError::Exists(_))
    ));
    for bad in ["", "has space", "a/b", &"x".repeat(65)] {
        assert!(
            matches!(tokens::create(&store, bad), Err(TokenError::BadName(_))),
            "{bad:?}"
        );
    }
    // Only the hash is stored.
    let mut records = Vec::new();
    store
        .journal_visit(tokens::JOURNAL, &[], |k, v| {
            records.push((k.to_vec(), String::from_utf8_lossy(v).into_owned()));
            Ok::<_, StorageError>(ControlFlow::Continue(()))
        })
        .expect("journal");
    assert_eq!(records.len(), 2);
    assert!(records.iter().all(|(_, v)| !v.contains(&token)));
    assert!(records
        .iter()
        .any(|(_, v)| v.contains(&hex(&tokens::token_hash(&token)))));

    let cache = tokens::TokenCache::default();
    assert_eq!(
        cache.check(&store, &token).expect("check"),
        Some(("ci-reader".to_string(), tokens::Scope::Read))
    );
    assert_eq!(cache.check(&store, "cis_guess").expect("check"), None);

    tokens::revoke(&store, "ci-reader").expect("revoke");
    assert!(matches!(
        tokens::revoke(&store, "ci-reader"),
        Err(TokenError::AlreadyRevoked(_))
    ));
    assert!(matches!(tokens::revoke(&store, "nobody"), Err(TokenError::Unknown(_))));
    assert!(matches!(
        tokens::create(&store, "ci-reader"),
        Err(TokenError::Exists(_))
    ));
    assert_eq!(cache.check(&store, &token).expect("check"), None);
    // Revocation appended a record; the creation record is still there.
    let mut n = 0;
    store
        .journal_visit(tokens::JOURNAL, b"ci-reader\0", |_, _| {
            n += 1;
            Ok::<_, StorageError>(ControlFlow::Continue(()))
        })
        .expect("journal");
    assert_eq!(n, 2);
    let list = tokens::list(&store).expect("list");
    let info = list.iter().find(|t| t.name == "ci-reader").expect("listed");
    assert!(!info.active() && info.revoked_at.is_some());
    assert!(list.iter().any(|t| t.name == "other" && t.active()));
}

#[tokio::test]
async fn artifacts_by_prefix_with_lineage_and_summaries() {
    let w = world();
    let app = router();

    let r = get(&app, &format!("/artifacts/{}", &hex(&w.scores)[..8])).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert_eq!(v["hash"], hex(&w.scores));
    assert_eq!(v["kind"], "scores");
    assert_eq!(v["as_of"], "1997-09-30T00:00:00Z");
    assert_eq!(v["content_matches_hash"], true);
    assert!(v.get("body").is_none(), "never the body");
    let parents: Vec<(String, String)> = v["parents"]
        .as_array()
        .expect("parents")
        .iter()
        .map(|p| {
            (
                p["hash"].as_str().expect("hash").to_string(),
                p["kind"].as_str().expect("kind").to_string(),
            )
        })
        .collect();
    assert_eq!(
        parents,
        [
            (hex(&w.snap), "snapshot".to_string()),
            (hex(&w.churn), "model/churn".to_string()),
            (hex(&w.clv), "model/clv".to_string()),
            (hex(&w.seg), "model/segments".to_string()),
        ]
    );
    assert_eq!(v["summary"]["rows"], w.set.rows.len());
    assert_eq!(v["summary"]["snapshot"], hex(&w.snap));
    assert_eq!(v["summary"]["models"].as_array().map(Vec::len), Some(3));

    // The snapshot, by its full hash (upper case is fine too).
    let r = get(&app, &format!("/artifacts/{}", hex(&w.snap).to_uppercase())).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert_eq!(v["kind"], "snapshot");
    assert_eq!(v["parents"], serde_json::json!([]));
    let s = &v["summary"];
    assert_eq!(s["customers"], w.set.rows.len());
    assert_eq!(s["features"], cis_features::defs::definitions().len());
    assert_eq!(s["known_at"], "1997-09-30T00:00:00Z");
    assert_eq!(
        s["read_from_log"]["log_head"],
        hex(&w.store.log().head().expect("head"))
    );

    // A model: its parents are the snapshots it learned from; its headline numbers.
    let r = get(&app, &format!("/artifacts/{}", &hex(&w.clv)[..12])).await;
    let v = r.json();
    assert_eq!(v["kind"], "model/clv");
    assert_eq!(v["parents"][0]["hash"], hex(&w.snap));
    assert_eq!(v["parents"][0]["as_of"], "1997-09-30T00:00:00Z");
    let r_param = v["summary"]["bgnbd"]["r"].as_f64().expect("r");
    assert!((r_param - 0.243).abs() < 0.01, "BG/NBD r = {r_param}");
    let r = get(&app, &format!("/artifacts/{}", hex(&w.churn))).await;
    let v = r.json();
    assert_eq!(v["summary"]["model"], "churn");
    assert_eq!(v["parents"][0]["hash"], hex(&w.churn_snap));
    assert!(v["summary"]["validation"]["roc_auc"].as_f64().is_some());
    // Its card, as `cis models show --json` prints it, less the log-derived table.
    assert_eq!(v["card"]["hash"], hex(&w.churn));
    assert_eq!(v["card"]["learned_from"]["snapshots"][0], hex(&w.churn_snap));
    assert_eq!(
        v["card"]["metrics"]["validation"]["roc_auc"],
        v["summary"]["validation"]["roc_auc"]
    );
    assert!(v["card"]["feature_importance"]
        .as_array()
        .is_some_and(|f| !f.is_empty()));
    let r = get(&app, &format!("/artifacts/{}", hex(&w.seg))).await;
    assert!(r.json()["summary"]["k"].as_u64().is_some_and(|k| (3..=6).contains(&k)));

    assert_error(
        &get(&app, "/artifacts/xyz").await,
        StatusCode::BAD_REQUEST,
        Some("hash"),
    );
    assert_error(
        &get(&app, "/artifacts/1234").await,
        StatusCode::BAD_REQUEST,
        Some("hash"),
    );
    let absent = if hex(&w.scores).starts_with("00000000") {
        "11111111"
    } else {
        "00000000"
    };
    assert_error(
        &get(&app, &format!("/artifacts/{absent}")).await,
        StatusCode::NOT_FOUND,
        None,
    );
}

#[tokio::test]
async fn snapshots_are_listed_by_as_of() {
    let w = world();
    let app = router();
    let r = get(&app, "/snapshots").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    let listed: Vec<(String, String)> = v["snapshots"]
        .as_array()
        .expect("list")
        .iter()
        .map(|s| {
            (
                s["hash"].as_str().expect("hash").into(),
                s["as_of"].as_str().expect("as_of").into(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            (hex(&w.churn_snap), "1997-06-01T00:00:00Z".to_string()),
            (hex(&w.snap), "1997-09-30T00:00:00Z".to_string()),
        ]
    );
    let r = get(&app, "/snapshots?as_of_before=1997-07-01").await;
    let v = r.json();
    assert_eq!(v["as_of_before"], "1997-07-01T00:00:00Z");
    assert_eq!(v["snapshots"].as_array().map(Vec::len), Some(1));
    assert_eq!(v["snapshots"][0]["hash"], hex(&w.churn_snap));
    assert_error(
        &get(&app, "/snapshots?as_of_before=soon").await,
        StatusCode::BAD_REQUEST,
        Some("as_of_before"),
    );
    assert_error(
        &get(&app, "/snapshots?limit=3").await,
        StatusCode::BAD_REQUEST,
        Some("limit"),
    );
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status() {
    let w = world();
    let state = AppState::new(w.store.clone());
    let app = app(state.clone());
    for _ in 0..3 {
        let r = get(&app, "/customer/profile?customer_id=0001&as_of=1997-09-30").await;
        assert_eq!(r.status, StatusCode::OK);
    }
    get(&app, "/customer/profile?customer_id=nobody").await;
    send(&app, Method::GET, "/snapshots", None).await;
    send(&app, Method::GET, "/nowhere", None).await;
    assert_eq!(state.metrics.count("/customer/profile"), 4);

    let r = get(&app, "/metrics").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.headers[header::CONTENT_TYPE]
        .to_str()
        .is_ok_and(|c| c.starts_with("text/plain; version=0.0.4")));
    let text = r.text();
    for line in [
        "# TYPE cis_http_requests_total counter",
        "cis_http_requests_total{route=\"/customer/profile\",method=\"GET\",status=\"200\"} 3",
        "cis_http_requests_total{route=\"/customer/profile\",method=\"GET\",status=\"404\"} 1",
        "cis_http_requests_total{route=\"/snapshots\",method=\"GET\",status=\"401\"} 1",
        "cis_http_requests_total{route=\"unmatched\",method=\"GET\",status=\"404\"} 1",
        "# TYPE cis_http_request_duration_seconds histogram",
        "cis_http_request_duration_seconds_bucket{route=\"/customer/profile\",method=\"GET\",status=\"200\",le=\"+Inf\"} 3",
        "cis_http_request_duration_seconds_count{route=\"/customer/profile\",method=\"GET\",status=\"200\"} 3",
        &format!("cis_log_events {}", w.store.log().event_count().expect("count")),
        &format!(
            "cis_latest_scores_as_of_timestamp_seconds {}",
            t("1997-09-30").micros() as f64 / 1e6
        ),
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
    for name in [
        "cis_store_size_bytes",
        "cis_last_ingest_timestamp_seconds",
        "cis_latest_scores_created_timestamp_seconds",
        "cis_uptime_seconds",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{name} "))),
            "missing {name}"
        );
    }
    // Buckets are cumulative and end at the count.
    let buckets: Vec<u64> = text
        .lines()
        .filter(|l| {
            l.starts_with(
                "cis_http_request_duration_seconds_bucket{route=\"/customer/profile\",method=\"GET\",status=\"200\"",
            )
        })
        .map(|l| l.rsplit(' ').next().and_then(|n| n.parse().ok()).expect("count"))
        .collect();
    assert!(buckets.windows(2).all(|p| p[0] <= p[1]), "{buckets:?}");
    assert_eq!(buckets.last(), Some(&3));
}

#[tokio::test]
async fn openapi_describes_every_route_and_every_route_answers() {
    let w = world();
    let app = router();
    let r = send(&app, Method::GET, "/openapi.json", None).await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    assert_eq!(v["openapi"], "3.1.0");
    let documented: BTreeSet<(String, String)> = v["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .expect("operations")
                .keys()
                .map(|m| (m.to_uppercase(), path.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    let routes: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p, _)| (m, p))
        .chain(ADMIN_ROUTES.iter().map(|(m, p)| (m, p)))
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, routes);
    // An admin route refuses a read token (403) and no token (401), and says so in the document.
    for (method, path) in ADMIN_ROUTES {
        let uri = path.replace("{id}", "1").replace("{name}", "nobody");
        let method: Method = method.parse().expect("method");
        let r = send(&app, method.clone(), &uri, Some(&w.token)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{uri}: {}", r.text());
        assert!(
            r.json()["error"].as_str().is_some_and(|e| e.contains("admin token")),
            "{}",
            r.text()
        );
        assert_eq!(
            send(&app, method.clone(), &uri, None).await.status,
            StatusCode::UNAUTHORIZED,
            "{uri}"
        );
        let op = &v["paths"][path][method.as_str().to_lowercase()];
        assert!(op["responses"]["403"].is_object(), "{path}");
        assert!(op["security"].as_array().is_some_and(|s| !s.is_empty()), "{path}");
    }
    for (method, path, needs_token) in ROUTES {
        let uri = match path {
            "/artifacts/{hash}" => format!("/artifacts/{}", hex(&w.snap)),
            "/customer/profile" => "/customer/profile?customer_id=0001&as_of=1997-09-30".into(),
            p => p.to_string(),
        };
        let method: Method = method.parse().expect("method");
        let r = send(&app, method.clone(), &uri, Some(&w.token)).await;
        assert_eq!(r.status, StatusCode::OK, "{uri}: {}", r.text());
        let r = send(&app, method, &uri, None).await;
        let want = if needs_token {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::OK
        };
        assert_eq!(r.status, want, "{uri}");
        let security = &v["paths"][path]["get"]["security"];
        assert_eq!(
            security.as_array().is_some_and(|s| !s.is_empty()),
            needs_token,
            "{path}"
        );
    }
}

#[tokio::test]
async fn healthz_limits_and_unknown_routes() {
    let app = router();
    let r = send(&app, Method::GET, "/healthz", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json(), serde_json::json!({ "status": "ok" }));

    let long = format!("/customer/profile?customer_id=0001&pad={}", "a".repeat(3000));
    let r = get(&app, &long).await;
    assert_error(&r, StatusCode::URI_TOO_LONG, None);
    let r = get(&app, "/nowhere").await;
    assert_error(&r, StatusCode::NOT_FOUND, None);
    let r = send(&app, Method::POST, "/snapshots", Some(&world().token)).await;
    assert_error(&r, StatusCode::METHOD_NOT_ALLOWED, None);
    let req = Request::builder()
        .method(Method::GET)
        .uri("/healthz")
        .header(header::CONTENT_LENGTH, "1000000")
        .body(Body::from(vec![b'x'; 1_000_000]))
        .expect("request");
    let r = app.clone().oneshot(req).await.expect("answer");
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_profiles_parse_the_score_set_once() {
    let w = world();
    let state = AppState::new(w.store.clone());
    let app = app(state.clone());
    let customers: Vec<String> = w.set.rows.iter().take(64).map(|r| r.customer_id.clone()).collect();
    let tasks: Vec<_> = customers
        .into_iter()
        .map(|c| {
            let app = app.clone();
            tokio::spawn(async move {
                let r = get(&app, &format!("/customer/profile?customer_id={c}&as_of=1997-10-15")).await;
                (c, r.status, r.json())
            })
        })
        .collect();
    for task in tasks {
        let (c, status, v) = task.await.expect("task");
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(v["customer_id"], c.as_str());
        assert_eq!(v["proof"]["scores"], hex(&w.scores));
    }
    assert_eq!(state.scores.loaded(), 1);
}

#[test]
fn serves_on_a_socket_and_shuts_down_gracefully() {
    let server = Server::start(router(), Limits::default());
    let health = server.fetch("/healthz", None);
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.ends_with("{\"status\":\"ok\"}"), "{health}");
    let profile = server.fetch(
        "/customer/profile?customer_id=0001&as_of=1997-09-30",
        Some(&world().token),
    );
    assert!(profile.starts_with("HTTP/1.1 200"), "{profile}");
    assert!(profile.contains("\"customer_id\":\"0001\""), "{profile}");
    let addr = server.addr;
    server.stop();
    assert!(TcpStream::connect(addr).is_err(), "no longer listening");
}

/// Writes `bytes` to `s` one per `every` (then only listens) until the server closes the
/// connection: how long it lived and what the server sent; `None` if it is open after `limit`.
fn trickle(s: &mut TcpStream, bytes: &[u8], every: Duration, limit: Duration) -> Option<(Duration, String)> {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut pending = bytes.iter();
    s.set_read_timeout(Some(every)).expect("timeout");
    while start.elapsed() < limit {
        if let Some(b) = pending.next() {
            if s.write_all(&[*b]).is_err() {
                break;
            }
        }
        let mut buf = [0u8; 1024];
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let lived = start.elapsed();
    (lived < limit).then(|| (lived, String::from_utf8_lossy(&got).into_owned()))
}

#[test]
fn slow_silent_and_idle_connections_are_cut_off() {
    let timeout = Duration::from_secs(1);
    // Generous: the test machine is shared; the point is "closed", not "closed fast".
    let slack = Duration::from_secs(3);
    let server = Server::start(
        router(),
        Limits {
            header_timeout: timeout,
            ..Limits::default()
        },
    );
    let every = Duration::from_millis(200);
    let limit = Duration::from_secs(15);
    let cut_off = |what: &str, lived: Duration| {
        assert!(
            lived >= timeout - every && lived <= timeout + slack,
            "{what}: closed after {lived:?}, header timeout {timeout:?}"
        );
    };

    // One header byte every 200 ms: without the timeout it would be served (or kept) forever.
    let mut slow = TcpStream::connect(server.addr).expect("connect");
    let (lived, sent) = trickle(&mut slow, b"GET /healthz HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", every, limit)
        .expect("the slow-header client is cut off");
    cut_off("slow header", lived);
    assert!(!sent.contains("200 OK"), "never served: {sent}");

    let mut silent = TcpStream::connect(server.addr).expect("connect");
    let (lived, _) = trickle(&mut silent, b"", every, limit).expect("the silent client is cut off");
    cut_off("silent", lived);

    // A keep-alive connection is served, then closed once idle for the timeout.
    let mut idle = TcpStream::connect(server.addr).expect("connect");
    write!(idle, "GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr).expect("write");
    let (lived, sent) = trickle(&mut idle, b"", every, limit).expect("the idle keep-alive connection is closed");
    assert!(sent.starts_with("HTTP/1.1 200"), "served first: {sent}");
    cut_off("idle keep-alive", lived);

    // Shutting down does not wait on a client that never finishes its head.
    let mut stuck = TcpStream::connect(server.addr).expect("connect");
    stuck.write_all(b"GET /healthz HTTP/1.1\r\nX-Slow").expect("write");
    let healthy = server.fetch("/healthz", None);
    assert!(healthy.starts_with("HTTP/1.1 200"), "{healthy}");
    let took = server.stop();
    assert!(took <= timeout + slack, "shutdown took {took:?}");
}

#[test]
fn connections_over_the_bound_get_503_until_others_close() {
    let bound = 4;
    let server = Server::start(
        router(),
        Limits {
            // Long, so that only the client closes the held connections.
            header_timeout: Duration::from_secs(60),
            max_connections: bound,
        },
    );
    let held: Vec<TcpStream> = (0..bound)
        .map(|_| TcpStream::connect(server.addr).expect("connect"))
        .collect();
    // Connections are accepted in order, so this one is over the bound: answered and closed,
    // not left waiting (its request unread, yet no reset loses the answer).
    let reply = server.fetch("/healthz", None);
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    let (head, body) = reply.split_once("\r\n\r\n").expect("head and body");
    assert!(head.contains(&format!("content-length: {}", body.len())), "{reply}");
    assert_eq!(
        serde_json::from_str::<Value>(body).expect("JSON")["error"],
        "too many connections"
    );

    drop(held);
    let mut answered = None;
    for _ in 0..50 {
        // The server may not have seen the closes yet: then this is a 503 too.
        if let Ok(reply) = server.try_fetch("/healthz", None) {
            if reply.starts_with("HTTP/1.1 200") {
                answered = Some(reply);
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        answered.is_some(),
        "/healthz answers once the held connections are closed"
    );
    server.stop();
}

#[tokio::test]
async fn every_response_has_the_security_headers() {
    let w = world();
    let app = router();
    let long = format!("/snapshots?pad={}", "a".repeat(3000));
    let routes = [
        ("/healthz", None, StatusCode::OK),
        ("/openapi.json", None, StatusCode::OK),
        (
            "/customer/profile?customer_id=0001&as_of=1997-09-30",
            Some(w.token.as_str()),
            StatusCode::OK,
        ),
        (&format!("/artifacts/{}", hex(&w.snap)), Some(&w.token), StatusCode::OK),
        ("/snapshots", Some(&w.token), StatusCode::OK),
        (
            "/export/customer_risk_scores?as_of=1997-09-30&format=csv",
            Some(&w.token),
            StatusCode::OK,
        ),
        ("/metrics", Some(&w.token), StatusCode::OK),
        ("/snapshots", None, StatusCode::UNAUTHORIZED),
        ("/nowhere", Some(&w.token), StatusCode::NOT_FOUND),
        (&long, Some(&w.token), StatusCode::URI_TOO_LONG),
    ];
    for (uri, token, status) in routes {
        let r = send(&app, Method::GET, uri, token).await;
        assert_eq!(r.status, status, "{uri}");
        assert_security_headers(&r.headers, &uri[..uri.len().min(40)]);
    }
}

#[test]
fn warm_parses_the_score_set_a_profile_now_would_use() {
    let w = world();
    let state = AppState::new(w.store.clone());
    assert_eq!(state.scores.loaded(), 0);
    let now = cis_core::AsOf::new(None, None);
    // Cold: the set is not in memory, so a profile would have to parse it (on the blocking pool).
    assert!(state.scores.select_held(&w.store, now).expect("held").is_none());
    assert_eq!(cis_server::api::warm(&state).expect("warm"), Some(w.scores));
    assert_eq!(state.scores.loaded(), 1);
    // Warm: the same set, from memory, as the loading path selects it.
    let held = state
        .scores
        .select_held(&w.store, now)
        .expect("held")
        .expect("in memory");
    assert_eq!(held.map(|(slot, _)| slot.meta.hash), Some(w.scores));
    let empty = AppState::new(Arc::new(Store::in_memory().expect("store")));
    assert_eq!(cis_server::api::warm(&empty).expect("warm"), None);
    // No score set at all: known from memory, nothing to parse.
    let none = empty.scores.select_held(&empty.store, now).expect("held");
    assert!(matches!(none, Some(None)));
}

#[test]
fn token_cli_prints_the_token_once_and_revokes_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cis = |args: &[&str]| {
        std::process::Command::new(crate::util::cis_bin())
            .arg("--store")
            .arg(dir.path())
            .args(args)
            .output()
            .expect("run cis")
    };
    let created = cis(&["token", "create", "--name", "ops"]);
    assert!(created.status.success(), "{created:?}");
    let token = String::from_utf8(created.stdout).expect("utf-8").trim().to_string();
    assert!(token.starts_with("cis_") && token.len() == 68, "{token}");
    let again = cis(&["token", "create", "--name", "ops"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    let listed = cis(&["token", "list"]);
    let text = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(text.starts_with("ops ") && text.contains("active"), "{text}");
    assert!(!text.contains(&token), "the list never shows a token");
    assert!(text.contains(&hex(&tokens::token_hash(&token))[..16]), "{text}");
    assert!(cis(&["token", "revoke", "ops"]).status.success());
    let text = String::from_utf8_lossy(&cis(&["token", "list"]).stdout).into_owned();
    assert!(text.contains("revoked"), "{text}");
    assert!(!cis(&["token", "revoke", "ops"]).status.success());
    let store = Store::open(dir.path()).expect("open");
    let cache = tokens::TokenCache::default();
    assert_eq!(cache.check(&store, &token).expect("check"), None);
}
