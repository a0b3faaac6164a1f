//! Churn as survival (`--method survival`, a Cox model of the time to the next order) on CDNOW:
//! the measurement beside logistic regression's, the audit of its scores, forward
//! validation, the API summary and the CLI.

use cis_features::labels;
use cis_features::snapshot;
use cis_models::churn::{ChurnMethod, ChurnModel, ChurnParams, Learned};
use cis_models::metrics::evaluate;
use cis_models::survival::{concordance, SurvivalMetrics, SurvivalParams};
use cis_models::{train, Model};
use cis_ops::audit::audit;

use crate::util::{t, ChurnTest, CHURN_TRAIN_KNOWN as TRAIN_KNOWN};

fn survival() -> ChurnParams {
    ChurnParams {
        method: ChurnMethod::Survival(SurvivalParams::default()),
        ..ChurnParams::default()
    }
}

fn churn(trained: &cis_models::Trained) -> &ChurnModel {
    match &trained.model {
        Model::Churn(m) => m,
        other => panic!("a churn model: {other:?}"),
    }
}

/// The test: trained at 1997-06-30 with labels known 1997-09-28, scored on 1997-09-30
/// against its labels as known 1997-12-29; nothing is tuned on the scored cutoff.
#[test]
fn survival_churn_scores_the_later_cutoff_audits_and_re_derives() {
    let test = ChurnTest::new();
    let store = &test.store;
    let trained = train::churn(store, &[test.june], survival(), 90, t(TRAIN_KNOWN)).expect("train");
    let m = churn(&trained);
    let Some(Learned::Survival(cox)) = &m.learned else {
        panic!("a Cox fit: {m:?}")
    };
    assert!(m.coefficients.is_empty(), "the Cox coefficients are the model");
    assert_eq!(cox.coefficients.len(), m.features.len());
    assert!(cox.validation.concordance > 0.6, "{cox:?}");

    // Scores and their audit: the chain re-derives to the same hashes.
    let (scores_hash, p) = test.score(&trained, &test.sept);
    assert!(audit(store, &scores_hash).expect("audit").all_identical());
    let again = train::churn(store, &[test.june], survival(), 90, t(TRAIN_KNOWN)).expect("train");
    assert_eq!(
        again.artifact().expect("artifact").hash(),
        trained.artifact().expect("artifact").hash(),
        "deterministic"
    );

    // The measurement, beside today's logistic regression.
    let (_, sept) = snapshot::load(store, &test.sept).expect("load");
    let known = labels::labels(store, &sept.matrix.customers, sept.as_of, 90, t("1997-12-29")).expect("labels");
    assert_eq!(known.churned, test.truth);
    let rows = m.rows(&sept).expect("rows");
    let standardised: Vec<f64> = rows
        .chunks_exact(m.features.len())
        .flat_map(|r| m.standardiser.apply(r).collect::<Vec<_>>())
        .collect();
    let later: SurvivalMetrics = cox.metrics(&standardised, &known.durations, &known.observed);
    let ours = evaluate(&p, &test.truth).expect("metrics");
    let logistic = train::churn(store, &[test.june], ChurnParams::default(), 90, t(TRAIN_KNOWN)).expect("train");
    let (_, q) = test.score(&logistic, &test.sept);
    let theirs = evaluate(&q, &test.truth).expect("metrics");
    let c_logistic = concordance(
        &known.durations,
        &known.observed,
        &q.iter().map(|q| 1.0 - q).collect::<Vec<_>>(),
    );
    println!(
        "survival: ROC AUC {:.4}  log loss {:.4}  concordance {:.4}  IBS {:.4}",
        ours.roc_auc, ours.log_loss, later.concordance, later.integrated_brier
    );
    println!(
        "logistic: ROC AUC {:.4}  log loss {:.4}  concordance {c_logistic:.4}",
        theirs.roc_auc, theirs.log_loss
    );
    assert!(ours.roc_auc > 0.7, "{ours:?}");
    assert!(later.concordance > 0.6 && later.integrated_brier < 0.25, "{later:?}");
    // P(churn) falls as the hazard of the next order rises: the same ranking either way.
    let eta_rank = concordance(
        &known.durations,
        &known.observed,
        &p.iter().map(|p| 1.0 - p).collect::<Vec<_>>(),
    );
    assert!(
        (eta_rank - later.concordance).abs() < 1e-3,
        "{eta_rank} vs {}",
        later.concordance
    );
}

#[test]
fn survival_churn_validates_forward_and_is_summarised() {
    let test = ChurnTest::new();
    let store = &test.store;
    let trained =
        train::churn_validated(store, &[test.march], Some(&test.june), survival(), 90, t(TRAIN_KNOWN)).expect("train");
    let m = churn(&trained);
    let forward = m.forward.as_ref().expect("forward validation");
    assert!(forward.metrics.roc_auc > 0.6, "{forward:?}");
    let summary = cis_server::api::artifacts::model_summary(&trained.model);
    assert_eq!(summary["survival"]["method"], "cox");
    assert!(summary["survival"]["validation"]["concordance"]
        .as_f64()
        .is_some_and(|c| c > 0.5));
    assert!(summary["forward_validation"]["metrics"]["roc_auc"].is_number());
    let (hash, _) = trained.store(store).expect("store");
    assert!(audit(store, &hash).expect("audit").all_identical());
    // A logistic model's summary has no survival part.
    let logistic = train::churn(store, &[test.march], ChurnParams::default(), 90, t(TRAIN_KNOWN)).expect("train");
    assert!(cis_server::api::artifacts::model_summary(&logistic.model)["survival"].is_null());
}

#[test]
fn the_cli_trains_shows_and_refuses_methods_of_another_kind() {
    let dir = crate::util::cdnow_dir();
    let run = |args: &[&str]| crate::util::cis_text(dir.path(), args);
    let (ok, text) = run(&["snapshot", "create", "--as-of", "1997-06-30"]);
    assert!(ok, "{text}");
    let after = crate::util::word_after;
    let june = after(&text, "snapshot ");
    // `cis train churn` on the 1997-06-30 snapshot with `extra` flags.
    let train = |extra: &[&str]| {
        let mut args = vec!["train", "churn", "--snapshot", &june, "--known-at", TRAIN_KNOWN];
        args.extend(extra);
        run(&args)
    };
    let (ok, text) = train(&["--method", "survival"]);
    assert!(
        ok && text.contains("Cox model (") && text.contains("validation concordance"),
        "{text}"
    );
    let model = after(&text, "model ");
    let (ok, shown) = run(&["models", "show", &model]);
    assert!(ok && shown.contains("log hazard ratios of the next order"), "{shown}");
    let (ok, json) = run(&["models", "show", &model, "--json"]);
    assert!(ok, "{json}");
    let card: serde_json::Value = serde_json::from_str(&json).expect("a card");
    assert!(
        card["method"]
            .as_str()
            .is_some_and(|m| m.starts_with("Cox proportional hazards")),
        "{card}"
    );
    assert!(card["metrics"]["survival"]["validation"]["integrated_brier"].is_number());
    assert!(card["metrics"]["survival"]["validation"]["concordance"].is_number());
    assert!(card["feature_importance"][0]["coefficient"]
        .as_f64()
        .is_some_and(|c| c != 0.0));
    let (ok, text) = run(&["audit", &model]);
    assert!(ok, "{text}");
    let (ok, text) = run(&["score", "--snapshot", &june, "--models", &model]);
    assert!(ok, "{text}");

    // Logistic is churn's default, and named it trains the same model as unnamed.
    let (ok, named) = train(&["--method", "logistic"]);
    let (_, unnamed) = train(&[]);
    assert!(ok, "{named}");
    assert_eq!(after(&named, "model "), after(&unnamed, "model "));
    let (ok, text) = train(&["--method", "kmeans"]);
    assert!(
        !ok && text.contains("--method kmeans is segments's; churn takes logistic|gbt|survival|auto"),
        "{text}"
    );
    let (ok, text) = run(&["train", "segments", "--snapshot", &june, "--method", "survival"]);
    assert!(
        !ok && text.contains("--method survival is churn's; segments takes kmeans|hdbscan"),
        "{text}"
    );
    let (ok, text) = train(&["--penalizer", "0.1"]);
    assert!(
        !ok && text.contains("--penalizer is for churn's --method survival"),
        "{text}"
    );
}
