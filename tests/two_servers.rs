//! Two API states on two stores in one process share nothing: tokens and the token cache's
//! generation, the access log's writer, and the memos behind `/metrics` and the dashboard are
//! per store. The two stores hold the same history, so their artifacts have the same names;
//! then one customer is erased from one of them, which rewrites its snapshots and score runs
//! under those names. A memo keyed by artifact hash and shared by the process would answer for
//! that store with the other's numbers.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::{Method, StatusCode};
use axum::Router;
use cis_core::AsOf;
use cis_features::snapshot;
use cis_models::scores;
use cis_ops::erasure::{self, Outcome};
use cis_ops::monitor::drift;
use cis_server::access_log::{self, Filter};
use cis_server::api::tokens::{self, Lookup, Scope};
use cis_server::api::{app_with, AppState};
use cis_server::dashboard;
use cis_storage::{ArtifactHash, Store};

use crate::http::send;
use crate::util::{cdnow_models, cdnow_store, t};

/// CDNOW with snapshots at 1997-09-30 and 1997-12-31, a CLV and a segment model, and a score
/// run on each snapshot.
fn scored_store() -> Arc<Store> {
    let store = cdnow_store();
    let (snap, clv, seg) = cdnow_models(&store);
    scores::score(&store, &snap, &[clv, seg]).expect("score");
    let (later, ..) = snapshot::create(&store, AsOf::new(Some(t("1997-12-31")), None)).expect("snapshot");
    scores::score(&store, &later, &[clv, seg]).expect("score");
    Arc::new(store)
}

/// The mean of the dashboard's risk (churn probability, else 1 − P(alive)) over a score run,
/// read from the store now.
fn mean_risk(store: &Store, run: &ArtifactHash) -> f64 {
    let (_, set) = scores::load_scores(store, run).expect("scores");
    let risks: Vec<f64> = set
        .rows
        .iter()
        .filter_map(|r| r.churn_probability.or(r.p_alive.map(|p| 1.0 - p)))
        .collect();
    risks.iter().sum::<f64>() / risks.len() as f64
}

async fn snapshots(app: &Router, token: &str) -> StatusCode {
    send(app, Method::GET, "/snapshots", Some(token)).await.status
}

/// The `cis_feature_psi` gauges of `/metrics`, by feature.
async fn psi_gauges(app: &Router, token: &str) -> BTreeMap<String, f64> {
    let page = send(app, Method::GET, "/metrics", Some(token)).await.text();
    page.lines()
        .filter_map(|l| l.strip_prefix("cis_feature_psi{feature=\""))
        .map(|rest| {
            let (feature, value) = rest.split_once("\"} ").expect("a gauge line");
            (feature.to_string(), value.parse().expect("a number"))
        })
        .collect()
}

/// The token names of the authenticated reads in a store's access log, with their routes.
fn reads(state: &AppState) -> Vec<(String, String)> {
    state.access.as_ref().expect("access log on").flush().expect("flush");
    access_log::list(&state.store, &Filter::default())
        .expect("list")
        .into_iter()
        .filter_map(|(_, r)| Some((r.token?, r.endpoint)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_in_one_process_share_nothing() {
    let (a, b) = (scored_store(), scored_store());
    let runs = |s: &Store| -> Vec<ArtifactHash> {
        let list = s.artifacts().list(scores::KIND, i64::MAX).expect("list");
        list.iter().map(|r| r.hash).collect()
    };
    let first_run = runs(&a)[0];
    assert_eq!(runs(&a), runs(&b), "the same history names the same score runs");
    let Outcome::Erased(erased) =
        erasure::erase(&a, "0001", "request", "dpo", cis_core::time::Timestamp::EPOCH).expect("erase")
    else {
        panic!("0001 bought CDs");
    };
    assert_eq!(
        erased.artifacts.len(),
        4,
        "both snapshots and both score runs held 0001"
    );

    let (state_a, state_b) = (AppState::new(a.clone()), AppState::new(b.clone()));
    let app_a = app_with(state_a.clone(), dashboard::routes());
    let app_b = app_with(state_b.clone(), dashboard::routes());
    let token_a = tokens::create(&a, "reader-a").expect("token");
    let token_b = tokens::create(&b, "reader-b").expect("token");

    // Tokens: each store knows only its own.
    assert_eq!(snapshots(&app_a, &token_a).await, StatusCode::OK);
    assert_eq!(snapshots(&app_b, &token_a).await, StatusCode::UNAUTHORIZED);
    assert_eq!(snapshots(&app_b, &token_b).await, StatusCode::OK);
    assert_eq!(snapshots(&app_a, &token_b).await, StatusCode::UNAUTHORIZED);

    // Memos: b's numbers first, so that a memo shared by the process would hold them when a asks.
    let now = cis_core::time::now();
    let (psi_b, trend_b) = (
        psi_gauges(&app_b, &token_b).await,
        dashboard::gather(&b, now).expect("gather").trend,
    );
    let (psi_a, trend_a) = (
        psi_gauges(&app_a, &token_a).await,
        dashboard::gather(&a, now).expect("gather").trend,
    );
    for (store, psi) in [(&a, &psi_a), (&b, &psi_b)] {
        let fresh = drift::latest_pair(store, cis_core::time::Timestamp::MAX)
            .expect("drift")
            .expect("two snapshots");
        let want: BTreeMap<String, f64> = fresh.features.iter().map(|f| (f.feature.clone(), f.psi)).collect();
        assert_eq!(psi, &want, "each store's PSI gauges are its own snapshots'");
    }
    assert_ne!(
        psi_a, psi_b,
        "the erasure moved a PSI: a shared memo would show the other store's"
    );
    assert_eq!(trend_a.len(), 2);
    assert_eq!(trend_a[0].1, mean_risk(&a, &first_run), "a's first run without 0001");
    assert_eq!(trend_b[0].1, mean_risk(&b, &first_run), "b's first run with 0001");
    assert_ne!(
        trend_a[0].1, trend_b[0].1,
        "a shared memo would show the other store's mean"
    );

    // Token cache generation: revoking on a makes only a's cache stale.
    let hash_b = tokens::token_hash(&token_b);
    assert_eq!(
        state_b.tokens.lookup(&b, &hash_b),
        Lookup::Valid("reader-b".into(), Scope::Read)
    );
    tokens::revoke(&a, "reader-a").expect("revoke");
    assert_eq!(
        state_b.tokens.lookup(&b, &hash_b),
        Lookup::Valid("reader-b".into(), Scope::Read),
        "a revocation on a leaves b's cache as it was"
    );
    assert_eq!(state_a.tokens.lookup(&a, &tokens::token_hash(&token_a)), Lookup::Stale);
    assert_eq!(snapshots(&app_a, &token_a).await, StatusCode::UNAUTHORIZED);
    assert_eq!(snapshots(&app_b, &token_b).await, StatusCode::OK);

    // Two writers: each store's access log holds its own reads only (the refused requests are
    // per-minute counts, written when their minute ends).
    let listed = |who: &str, n| vec![(who.to_string(), "/snapshots".to_string()); n];
    assert_eq!(reads(&state_a), listed("reader-a", 1));
    assert_eq!(reads(&state_b), listed("reader-b", 2));
}
