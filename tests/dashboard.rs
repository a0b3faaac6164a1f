//! The Customer Health Overview: its sign-in and sessions through the router, and its sections.
//! The same page in a real browser is tests/browser.rs, in the `external` test binary.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use cis_core::event::Kind;
use cis_core::AsOf;
use cis_features::snapshot;
use cis_ingest::source::Format;
use cis_ingest::RecordedAt;
use cis_server::access_log::{self, Filter};
use cis_server::api::{tokens, AppState};
use cis_storage::Store;

use crate::http::{assert_security_headers, dashboard_app, section, send, send_request, sign_in, Reply};
use crate::util::{cdnow_store, ingest, t, write};

/// `GET /dashboard…` with a session cookie.
async fn with_cookie(app: &Router, method: Method, uri: &str, cookie: &str) -> Reply {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::COOKIE, format!("theme=dark; {cookie}"))
        .body(Body::empty())
        .expect("request");
    send_request(app, req).await
}

/// The `name=value` of the session cookie a reply sets, after checking its attributes.
fn session_cookie(r: &Reply) -> String {
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    assert_eq!(r.headers[header::LOCATION], "/dashboard");
    let set = r.headers[header::SET_COOKIE].to_str().expect("ASCII");
    let mut parts = set.split("; ");
    let pair = parts.next().expect("name=value").to_string();
    let attributes: Vec<&str> = parts.collect();
    assert_eq!(
        attributes,
        ["HttpOnly", "SameSite=Strict", "Path=/dashboard", "Max-Age=28800"],
        "{set}"
    );
    let id = pair.strip_prefix("cis_session=").expect("cis_session cookie");
    assert!(id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    pair
}

fn is_sign_in_page(r: &Reply) -> bool {
    r.status == StatusCode::UNAUTHORIZED
        && r.headers[header::CONTENT_TYPE]
            .to_str()
            .is_ok_and(|c| c.starts_with("text/html"))
        && r.text()
            .contains(r#"<form id="sign-in" method="post" action="/dashboard/session">"#)
        && r.text().contains(r#"type="password" name="token""#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_signs_in_by_form_or_bearer_header_and_never_by_url() {
    let store = Arc::new(cdnow_store());
    let token = tokens::create(&store, "analyst").expect("token");
    let state = AppState::new(store.clone());
    let app = dashboard_app(state.clone());

    // No credentials: the sign-in page, under the security headers.
    let r = send(&app, Method::GET, "/dashboard", None).await;
    assert!(is_sign_in_page(&r), "{}", r.text());
    assert_security_headers(&r.headers, "sign-in page");
    // A token in the URL is refused, whether it is valid or not.
    let r = send(&app, Method::GET, &format!("/dashboard?token={token}"), None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert!(r.text().contains("never goes in a URL"), "{}", r.text());
    // The bearer header every other route accepts.
    let r = send(&app, Method::GET, "/dashboard?as_of=1997-09-30", Some(&token)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.text().contains("Customer Health Overview"));
    assert_security_headers(&r.headers, "dashboard");
    let r = send(&app, Method::GET, "/dashboard", Some("cis_wrong")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // A wrong token, or a form posted from another site, gets no cookie.
    let r = sign_in(&app, "cis_wrong", "http://127.0.0.1:8080").await;
    assert!(
        is_sign_in_page(&r) && r.text().contains("invalid or revoked token"),
        "{}",
        r.text()
    );
    assert!(!r.headers.contains_key(header::SET_COOKIE));
    let r = sign_in(&app, &token, "http://evil.example").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(!r.headers.contains_key(header::SET_COOKIE));

    // Signed in: the cookie opens the page, whose forms carry no token.
    let cookie = session_cookie(&sign_in(&app, &token, "http://127.0.0.1:8080").await);
    let r = with_cookie(&app, Method::GET, "/dashboard?as_of=1997-09-30", &cookie).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.text().contains(r#"<form method="get" action="/dashboard">"#));
    assert!(!r.text().contains(&token) && !r.text().contains(&cookie[12..]));
    // Sessions belong to one server state.
    let other = dashboard_app(AppState::new(store.clone()));
    assert!(is_sign_in_page(
        &with_cookie(&other, Method::GET, "/dashboard", &cookie).await
    ));

    // Signing out ends the session and deletes the cookie.
    let r = with_cookie(&app, Method::POST, "/dashboard/sign-out", &cookie).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(r.headers[header::SET_COOKIE]
        .to_str()
        .expect("ASCII")
        .contains("Max-Age=0"));
    let r = with_cookie(&app, Method::GET, "/dashboard", &cookie).await;
    assert!(
        is_sign_in_page(&r) && r.text().contains("session has ended"),
        "{}",
        r.text()
    );

    // Revoking the token ends its sessions at the next request.
    let cookie = session_cookie(&sign_in(&app, &token, "http://127.0.0.1:8080").await);
    assert_eq!(
        with_cookie(&app, Method::GET, "/dashboard", &cookie).await.status,
        StatusCode::OK
    );
    tokens::revoke(&store, "analyst").expect("revoke");
    let r = with_cookie(&app, Method::GET, "/dashboard", &cookie).await;
    assert!(
        is_sign_in_page(&r) && r.text().contains("session has ended"),
        "{}",
        r.text()
    );
    assert!(r.headers[header::SET_COOKIE]
        .to_str()
        .expect("ASCII")
        .contains("Max-Age=0"));
    assert!(state.sessions.is_empty(), "the revoked token's session is gone");

    // Reads through a session are logged under the token's name; no URL carried the token.
    drop((app, other, state));
    let records = access_log::list(&store, &Filter::default()).expect("access log");
    let reads: Vec<(Option<&str>, &str, u16)> = records
        .iter()
        .map(|(_, r)| (r.token.as_deref(), r.endpoint.as_str(), r.status))
        .filter(|(_, endpoint, status)| *endpoint == "/dashboard" && *status == 200)
        .collect();
    assert_eq!(reads, vec![(Some("analyst"), "/dashboard", 200); 3], "{records:?}");
    assert!(records
        .iter()
        .all(|(_, r)| r.path.as_deref().is_none_or(|p| !p.contains(&token))));
}

#[tokio::test]
async fn a_session_expires() {
    let store = Arc::new(Store::in_memory().expect("store"));
    let token = tokens::create(&store, "brief").expect("token");
    let app = dashboard_app(AppState::new(store).with_session_ttl(Duration::from_millis(300)));
    let r = sign_in(&app, &token, "http://127.0.0.1:8080").await;
    let set = r.headers[header::SET_COOKIE].to_str().expect("ASCII");
    assert!(set.ends_with("Max-Age=1"), "rounded up, never 0 (which deletes): {set}");
    let cookie = set.split("; ").next().expect("name=value").to_string();
    assert_eq!(
        with_cookie(&app, Method::GET, "/dashboard", &cookie).await.status,
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = with_cookie(&app, Method::GET, "/dashboard", &cookie).await;
    assert!(
        is_sign_in_page(&r) && r.text().contains("session has ended"),
        "{}",
        r.text()
    );
}

/// The "Data quality and drift" section, rendered without a browser: the quarantine rate of a
/// run with one bad row of two, CDNOW's daily volume, and PSI per feature with both thresholds.
#[test]
fn dashboard_has_a_data_quality_and_drift_section() {
    let store = cdnow_store();
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = write(
        dir.path(),
        "late.csv",
        "order_id,customer_id,event_time,amount,currency\nx1,0001,1997-12-02,oops,USD\nx2,0001,1997-12-03,1.00,USD\n",
    );
    ingest(&store, Kind::Order, Format::Csv, &bad, RecordedAt::EventTime);
    for as_of in ["1997-09-30", "1997-12-31"] {
        snapshot::create(&store, AsOf::new(Some(t(as_of)), None)).expect("snapshot");
    }
    let data = cis_server::dashboard::gather(&store, t("1998-01-01")).expect("gather");
    let drift = data.drift.clone().expect("two snapshots make a pair");
    let html = cis_server::dashboard::render(&data);
    assert!(html.contains("<h2>Data quality and drift</h2>"));

    let rate = section(&html, "quarantine-rate", "</svg>");
    assert!(rate.contains(">50.0<"), "1 of 2 rows is 50 %: {rate}");
    assert!(rate.contains("class=\"mark\"") && rate.contains("flag above 1 %"));

    // CDNOW starts on 1997-01-01: the last 90 of its days up to T are drawn.
    let volume = section(&html, "volume-order", "</svg>");
    let line = volume
        .split("class=\"volume\" fill=\"none\" points=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("volume line");
    assert_eq!(line.split(' ').count(), 90);
    assert!(volume.contains(">1998-01-01<") && volume.contains(">1997-10-04<"));

    let psi = section(&html, "psi-per-feature", "</svg>");
    assert!(!drift.features.is_empty());
    assert_eq!(psi.matches("<rect class=\"bar psi-").count(), drift.features.len());
    let significant = drift.features.iter().filter(|f| f.psi >= 0.25).count();
    assert_eq!(psi.matches("class=\"bar psi-significant\"").count(), significant);
    assert!(psi.contains(">0.1 moderate<") && psi.contains(">0.25 significant<"));
}

/// The Models section: one row per model of the latest score run, from its card, with the stage
/// it held at the page's date.
#[test]
fn dashboard_shows_the_models_behind_the_scores() {
    use cis_models::lifetime::ClvParams;
    use cis_models::promotion::{Promotions, Stage};
    use cis_models::segments::SegmentParams;
    use cis_models::{scores, train};

    let store = cdnow_store();
    let (snap, ..) = snapshot::create(&store, AsOf::new(Some(t("1997-09-30")), None)).expect("snapshot");
    let (clv, _) = train::clv(&store, &snap, ClvParams::default())
        .expect("clv")
        .store(&store)
        .expect("store clv");
    let (seg, _) = train::segments(&store, &snap, SegmentParams::default())
        .expect("segments")
        .store(&store)
        .expect("store segments");
    scores::score(&store, &snap, &[clv, seg]).expect("score");
    Promotions::open(&store)
        .expect("promotions")
        .promote(&store, &clv, Stage::Production, "test", "ops", t("1997-10-01"))
        .expect("promote");

    let data = cis_server::dashboard::gather(&store, t("1998-01-01")).expect("gather");
    let kinds: Vec<(&str, String, &str)> = data.models.iter().map(|m| (m.kind, m.hash.clone(), m.stage)).collect();
    assert_eq!(
        kinds,
        vec![
            ("clv", cis_storage::hex(&clv), "production"),
            ("segments", cis_storage::hex(&seg), "none")
        ]
    );
    let html = cis_server::dashboard::render(&data);
    let models = section(&html, "models", "</section>");
    assert!(
        models.contains("repeat customers") && models.contains("silhouette"),
        "{models}"
    );
    assert!(models.contains(&cis_storage::hex(&clv)[..16]), "{models}");
}
