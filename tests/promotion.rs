//! The promotion record: promote, retire and stages as of T over a sequence with explicit
//! times; the ledger's verification and a tampered record; refusals that append nothing;
//! default scoring by the production model; the stage in the profile API; and the CLI.

use std::ops::ControlFlow;
use std::process::Command;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use cis_core::artifact::ArtifactError;
use cis_core::AsOf;
use cis_features::snapshot::{self, SnapshotError};
use cis_models::lifetime::ClvParams;
use cis_models::promotion::{Change, PromotionError, Promotions, Record, Stage, LEDGER};
use cis_models::scores::{self, Rule};
use cis_models::{train, ModelError, ModelKind};
use cis_server::api::{app, tokens, AppState};
use cis_storage::{hex, ArtifactHash, StorageError, Store};
use http_body_util::BodyExt;
use tower::ServiceExt;

use crate::util::{cdnow_models, cdnow_store, cis_bin, ingest_cdnow, t, us};

/// A CLV model on the CDNOW snapshot as of 1997-06-01: older than `cdnow_models`' CLV model.
fn older_clv(store: &Store) -> ArtifactHash {
    let (snap, ..) = snapshot::create(store, AsOf::new(Some(t("1997-06-01")), None)).expect("snapshot");
    train::clv(store, &snap, ClvParams::default())
        .expect("clv")
        .store(store)
        .expect("store")
        .0
}

fn records(p: &Promotions) -> usize {
    p.record().expect("record").entries.len()
}

#[test]
fn promote_retire_and_stages_as_of_t() {
    let store = cdnow_store();
    let (_, clv, seg) = cdnow_models(&store);
    let old = older_clv(&store);
    let p = Promotions::open(&store).expect("open");
    let (h_clv, h_old, h_seg) = (hex(&clv), hex(&old), hex(&seg));

    let c = p
        .promote(&store, &old, Stage::Staging, "first fit", "ana", us(10))
        .expect("promote");
    assert!(
        matches!(
            c,
            Change::Promoted {
                replaced: None,
                left: None,
                ..
            }
        ),
        "{c:?}"
    );
    let c = p
        .promote(&store, &old, Stage::Production, "looks right", "ana", us(20))
        .expect("promote");
    assert_eq!(
        c,
        Change::Promoted {
            seq: 2,
            kind: ModelKind::Clv,
            stage: Stage::Production,
            replaced: None,
            left: Some(Stage::Staging)
        }
    );
    p.promote(&store, &seg, Stage::Production, "segments", "bo", us(25))
        .expect("promote");
    let c = p
        .promote(&store, &clv, Stage::Production, "newer data", "bo", us(30))
        .expect("promote");
    assert!(
        matches!(c, Change::Promoted { replaced: Some(ref r), .. } if *r == h_old),
        "{c:?}"
    );
    // The same stage again: a no-op that says so and appends nothing.
    let c = p
        .promote(&store, &clv, Stage::Production, "again", "bo", us(35))
        .expect("no-op");
    assert_eq!(
        c,
        Change::AlreadyHeld {
            kind: ModelKind::Clv,
            stage: Stage::Production,
            since: us(30)
        }
    );
    assert_eq!(records(&p), 4);
    let c = p.retire(&store, &clv, "bad calibration", "cy", us(40)).expect("retire");
    assert!(
        matches!(
            c,
            Change::Retired {
                seq: 5,
                stage: Stage::Production,
                ..
            }
        ),
        "{c:?}"
    );
    // Retiring again: it holds no stage; an error, nothing appended.
    let r = p.retire(&store, &clv, "again", "cy", us(50));
    assert!(matches!(r, Err(PromotionError::NoStage(ref m)) if *m == h_clv), "{r:?}");
    // A stamp before the last record would rewrite history.
    let r = p.promote(&store, &old, Stage::Production, "late", "cy", us(39));
    assert!(
        matches!(r, Err(PromotionError::BeforeLast { at, last }) if at == us(39) && last == us(40)),
        "{r:?}"
    );
    let r = p.promote(&store, &old, Stage::Production, "  ", "cy", us(60));
    assert!(matches!(r, Err(PromotionError::EmptyReason)), "{r:?}");
    assert_eq!(records(&p), 5);

    let record = Record::read(&store).expect("read");
    let at = |time, kind, stage| record.holder(kind, stage, time).map(|h| h.model);
    assert_eq!(at(us(9), ModelKind::Clv, Stage::Staging), None);
    assert_eq!(at(us(10), ModelKind::Clv, Stage::Staging), Some(h_old.clone()));
    assert_eq!(
        at(us(20), ModelKind::Clv, Stage::Staging),
        None,
        "promoted out of staging"
    );
    assert_eq!(at(us(29), ModelKind::Clv, Stage::Production), Some(h_old.clone()));
    assert_eq!(at(us(30), ModelKind::Clv, Stage::Production), Some(h_clv.clone()));
    assert_eq!(record.stage_of(&h_old, us(30)), None, "replaced");
    assert_eq!(at(us(40), ModelKind::Clv, Stage::Production), None, "retired");
    assert_eq!(
        at(us(40), ModelKind::Segments, Stage::Production),
        Some(h_seg),
        "other kinds untouched"
    );
    let last = &record.entries[4].1;
    assert_eq!(
        (last.who.as_str(), last.reason.as_str(), last.at),
        ("cy", "bad calibration", us(40))
    );
}

#[test]
fn the_record_verifies_and_a_tampered_record_is_named() {
    let store = cdnow_store();
    let (_, clv, seg) = cdnow_models(&store);
    let p = Promotions::open(&store).expect("open");
    p.promote(&store, &clv, Stage::Staging, "a", "x", us(1))
        .expect("promote");
    p.promote(&store, &seg, Stage::Staging, "b", "x", us(2))
        .expect("promote");
    p.promote(&store, &clv, Stage::Production, "c", "x", us(3))
        .expect("promote");
    let report = p.verify().expect("read").expect("intact");
    assert_eq!(report.records, 3);

    // Change record 2's reason in place (same length, so only its content moves).
    let mut raw = None;
    store
        .journal_visit(LEDGER, &2u64.to_be_bytes(), |_, v| {
            raw = Some(v.to_vec());
            Ok::<_, StorageError>(ControlFlow::Break(()))
        })
        .expect("visit");
    let raw = raw.expect("record 2");
    let text = String::from_utf8(raw[64..].to_vec()).expect("json");
    assert!(text.contains("\"reason\":\"b\""), "{text}");
    let mut forged = raw[..64].to_vec();
    forged.extend_from_slice(text.replace("\"reason\":\"b\"", "\"reason\":\"z\"").as_bytes());
    store.journal_put(LEDGER, &2u64.to_be_bytes(), &forged).expect("tamper");
    let broken = p.verify().expect("read").expect_err("tampered");
    assert_eq!(broken.seq, 2, "{broken}");
    assert!(broken.to_string().contains("record 2"), "{broken}");
}

#[test]
fn only_models_can_be_promoted_and_refusals_append_nothing() {
    let store = cdnow_store();
    let (snap, clv, seg) = cdnow_models(&store);
    let (scores_hash, ..) = scores::score(&store, &snap, &[clv, seg]).expect("score");
    let p = Promotions::open(&store).expect("open");
    for (what, h) in [("snapshot", snap), ("scores", scores_hash)] {
        let r = p.promote(&store, &h, Stage::Production, "why not", "x", us(1));
        assert!(
            matches!(r, Err(PromotionError::Model(ModelError::NotAModel { ref kind, .. })) if kind == what),
            "{r:?}"
        );
        let r = p.retire(&store, &h, "why not", "x", us(1));
        assert!(
            matches!(r, Err(PromotionError::Model(ModelError::NotAModel { .. }))),
            "{r:?}"
        );
    }
    let r = p.promote(&store, &[9u8; 32], Stage::Staging, "ghost", "x", us(1));
    assert!(
        matches!(
            r,
            Err(PromotionError::Model(ModelError::Snapshot(SnapshotError::Artifact(
                ArtifactError::NotFound(_)
            ))))
        ),
        "{r:?}"
    );
    assert_eq!(records(&p), 0);
    assert_eq!(p.verify().expect("read").expect("intact").records, 0);
}

#[test]
fn default_scoring_uses_the_production_model_over_a_later_trained_one() {
    let store = cdnow_store();
    let (snap, newer, _) = cdnow_models(&store);
    let older = older_clv(&store);
    let at = t("1997-09-30");
    // No promotion yet: the latest trained CLV model as of T, and the rule says so.
    let chosen = scores::choose_models(&store, &Record::read(&store).expect("read"), at).expect("choose");
    let clv = chosen.iter().find(|c| c.kind == ModelKind::Clv).expect("a clv model");
    assert_eq!(clv.hash, newer);
    assert_eq!(
        clv.rule,
        Rule::LatestTrained {
            production_after_t: None
        }
    );

    let p = Promotions::open(&store).expect("open");
    let promoted_at = t("1997-08-01");
    p.promote(&store, &older, Stage::Production, "validated", "x", promoted_at)
        .expect("promote");
    let chosen = scores::choose_models(&store, &p.record().expect("record"), at).expect("choose");
    let clv = chosen.iter().find(|c| c.kind == ModelKind::Clv).expect("a clv model");
    assert_eq!((clv.hash, &clv.rule), (older, &Rule::Production { since: promoted_at }));
    assert!(
        chosen
            .iter()
            .any(|c| c.kind == ModelKind::Segments && matches!(c.rule, Rule::LatestTrained { .. })),
        "segments fall back: {chosen:?}"
    );
    let hashes: Vec<ArtifactHash> = chosen.iter().map(|c| c.hash).collect();
    assert_eq!(scores::default_models(&store, at).expect("defaults"), hashes);
    let (_, _, set) = scores::score(&store, &snap, &hashes).expect("score");
    assert!(set.models.contains(&(ModelKind::Clv, hex(&older))), "{:?}", set.models);

    // Before the promotion's stamp the record is silent: the latest-trained rule applies.
    let chosen = scores::choose_models(&store, &p.record().expect("record"), t("1997-07-31")).expect("choose");
    assert_eq!(
        chosen,
        vec![scores::Chosen {
            kind: ModelKind::Clv,
            hash: older,
            rule: Rule::LatestTrained {
                production_after_t: None
            }
        }]
    );
    // A production model that learned from data after T is never used for T.
    p.promote(&store, &newer, Stage::Production, "newer", "x", t("1997-09-01"))
        .expect("promote");
    let chosen = scores::choose_models(&store, &p.record().expect("record"), t("1997-09-15")).expect("choose");
    let clv = chosen.iter().find(|c| c.kind == ModelKind::Clv).expect("a clv model");
    assert_eq!(clv.hash, older);
    assert_eq!(
        clv.rule,
        Rule::LatestTrained {
            production_after_t: Some(hex(&newer))
        }
    );
}

#[tokio::test]
async fn the_profile_reports_the_stage_each_model_held_at_the_scores_as_of() {
    let store = cdnow_store();
    let (snap, clv, seg) = cdnow_models(&store);
    let (scores_hash, _, set) = scores::score(&store, &snap, &[clv, seg]).expect("score");
    let p = Promotions::open(&store).expect("open");
    // CLV in production before the scores' as-of (1997-09-30); segments only after it.
    p.promote(&store, &clv, Stage::Production, "go", "x", t("1997-09-01"))
        .expect("promote");
    p.promote(&store, &seg, Stage::Staging, "try", "x", t("1997-10-15"))
        .expect("promote");
    let token = tokens::create(&store, "tests").expect("token");
    let router = app(AppState::new(Arc::new(store)));
    let customer = &set.rows[0].customer_id;
    let request = Request::get(format!("/customer/profile?customer_id={customer}&as_of=1998-01-01"))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .expect("request");
    let response = router.oneshot(request).await.expect("answer");
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.expect("body").to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    let proof = &v["proof"];
    assert_eq!(proof["scores"], hex(&scores_hash));
    assert_eq!(proof["models"]["clv"], hex(&clv));
    assert_eq!(proof["model_stages"]["clv"], "production", "{proof}");
    assert_eq!(
        proof["model_stages"]["segments"], "none",
        "staged only after the scores' as-of"
    );
}

#[test]
fn the_cli_promotes_lists_and_refuses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (snap, clv) = {
        let store = Store::open(dir.path()).expect("store");
        ingest_cdnow(&store);
        let (snap, clv, _) = cdnow_models(&store);
        (snap, clv)
    };
    let cis = |args: &[&str]| {
        let out = Command::new(cis_bin())
            .arg("--store")
            .arg(dir.path())
            .args(args)
            .env("USER", "tester")
            .output()
            .expect("run cis");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let (clv_hex, snap_hex) = (hex(&clv), hex(&snap));
    let (ok, text) = cis(&[
        "models",
        "promote",
        &clv_hex[..12],
        "--stage",
        "staging",
        "--reason",
        "try",
    ]);
    assert!(ok, "{text}");
    assert!(text.contains("promoted to staging"), "{text}");
    let (ok, text) = cis(&["models", "promote", &clv_hex, "--stage", "production", "--reason", "go"]);
    assert!(ok && text.contains(&format!("{clv_hex} leaves staging")), "{text}");
    let (ok, text) = cis(&["models", "promote", &clv_hex, "--stage", "production", "--reason", "go"]);
    assert!(ok && text.contains("already holds production"), "{text}");
    let (ok, text) = cis(&[
        "models",
        "promote",
        &snap_hex,
        "--stage",
        "production",
        "--reason",
        "no",
    ]);
    assert!(!ok && text.contains("not a model"), "{text}");
    let (ok, text) = cis(&["models", "stage"]);
    assert!(ok && text.contains(&clv_hex), "{text}");
    let (ok, text) = cis(&["models", "history", "--verify"]);
    assert!(
        ok && text.contains("by tester: go") && text.contains("verified: 2 records"),
        "{text}"
    );
    // Promoted now, so at the 1997 snapshot's T nothing was in production: the fallback, said.
    let (ok, text) = cis(&["score", "--snapshot", &snap_hex]);
    assert!(
        ok && text.contains("latest trained as of the snapshot: no model of this kind was in production then"),
        "{text}"
    );
}
