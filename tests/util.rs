//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};

use cis_core::event::Kind;
use cis_ingest::records::IngestRun;
use cis_ingest::source::Format;
use cis_ingest::{ingest_file, IngestOptions, RecordedAt};
use cis_storage::Store;

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name)
}

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write test file");
    p
}

pub fn ingest(store: &Store, kind: Kind, format: Format, path: &Path, recorded_at: RecordedAt) -> IngestRun {
    let opts = IngestOptions {
        recorded_at,
        ..IngestOptions::new(kind, format)
    };
    ingest_file(store, path, &opts, &mut |_| {}).expect("ingest succeeds")
}

pub fn cis_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cis"))
}

/// Runs the `cis` binary on the store in `store_dir`.
pub fn cis(store_dir: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(cis_bin())
        .arg("--store")
        .arg(store_dir)
        .args(args)
        .output()
        .expect("run cis")
}

/// Ingests the CDNOW fixture into `store`, backfilled (recorded_at = event_time).
pub fn ingest_cdnow(store: &Store) -> IngestRun {
    ingest(
        store,
        Kind::Order,
        Format::Cdnow,
        &fixture("CDNOW_sample.txt"),
        RecordedAt::EventTime,
    )
}

/// An in-memory store holding the CDNOW fixture, backfilled.
pub fn cdnow_store() -> Store {
    let store = Store::in_memory().expect("store");
    ingest_cdnow(&store);
    store
}

/// An instant `micros` after the epoch, for tests whose clock is a small counter.
pub fn us(micros: i64) -> cis_core::time::Timestamp {
    cis_core::time::Timestamp::from_micros(micros)
}

pub fn t(s: &str) -> cis_core::time::Timestamp {
    cis_core::time::parse_timestamp(s).expect("time")
}

/// The naive model of the log: the first recording of each event id wins, then the
/// bitemporal filter `event_time <= t && recorded_at <= k`.
pub fn visible(events: &[cis_storage::NewEvent], t: i64, k: i64) -> Vec<&cis_storage::NewEvent> {
    let mut seen = std::collections::HashSet::new();
    events
        .iter()
        .filter(|e| seen.insert(cis_storage::envelope::event_id(&e.envelope().expect("envelope"))))
        .filter(|e| e.event_time <= t && e.recorded_at <= k)
        .collect()
}

/// On `store`: the snapshot as of 1997-09-30 with a CLV and a segment model trained on it and
/// stored: (snapshot, clv, segments).
pub fn cdnow_models(
    store: &Store,
) -> (
    cis_storage::ArtifactHash,
    cis_storage::ArtifactHash,
    cis_storage::ArtifactHash,
) {
    use cis_models::{lifetime::ClvParams, segments::SegmentParams, train};
    let at = cis_core::AsOf::new(Some(t("1997-09-30")), None);
    let (snap, ..) = cis_features::snapshot::create(store, at).expect("snapshot");
    let (clv, _) = train::clv(store, &snap, ClvParams::default())
        .expect("clv")
        .store(store)
        .expect("store clv");
    let (seg, _) = train::segments(store, &snap, SegmentParams::default())
        .expect("segments")
        .store(store)
        .expect("store segments");
    (snap, clv, seg)
}

/// An in-memory store holding the synthetic population `cfg` generates (customers, orders,
/// sessions, returns; recorded_at from the files).
pub fn synth_store(cfg: cis_synth::SynthConfig) -> Store {
    let store = Store::in_memory().expect("store");
    ingest_synth(&store, cfg);
    store
}

/// Ingests the synthetic population `cfg` generates into `store`, as [`synth_store`] does.
pub fn ingest_synth(store: &Store, cfg: cis_synth::SynthConfig) {
    let dir = tempfile::tempdir().expect("tempdir");
    cfg.validate().expect("config").write_csv(dir.path()).expect("generate");
    for (kind, file) in [
        (Kind::Customer, "customers.csv"),
        (Kind::Order, "orders.csv"),
        (Kind::Session, "sessions.csv"),
        (Kind::Return, "returns.csv"),
    ] {
        ingest(
            store,
            kind,
            Format::Csv,
            &dir.path().join(file),
            RecordedAt::Column("recorded_at".into()),
        );
    }
}

/// Copies the directory tree `from` to `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let p = entry.expect("entry").path();
        let dest = to.join(p.file_name().expect("file name"));
        if p.is_dir() {
            copy_dir(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).expect("copy");
        }
    }
}

/// The churn test on CDNOW (README "Churn on CDNOW, forward in time"): snapshots at the
/// cutoffs 1997-03-31 and 1997-06-30 to train on (labels known at [`CHURN_TRAIN_KNOWN`]), and at
/// 1997-09-30 to score, with that cutoff's labels (no order in the next 90 days) as known at
/// 1997-12-29.
pub struct ChurnTest {
    pub store: Store,
    pub march: cis_storage::ArtifactHash,
    pub june: cis_storage::ArtifactHash,
    pub sept: cis_storage::ArtifactHash,
    pub truth: Vec<bool>,
}

/// Labels of the training cutoffs are known here (1997-06-30 + 90 days ≤ K).
pub const CHURN_TRAIN_KNOWN: &str = "1997-09-28";

impl ChurnTest {
    pub fn new() -> ChurnTest {
        let store = cdnow_store();
        let snap = |at: &str| {
            cis_features::snapshot::create(&store, cis_core::AsOf::new(Some(t(at)), None))
                .expect("snapshot")
                .0
        };
        let (march, june, sept) = (snap("1997-03-31"), snap("1997-06-30"), snap("1997-09-30"));
        let (_, scored) = cis_features::snapshot::load(&store, &sept).expect("load");
        let truth =
            cis_features::labels::churn_labels(&store, &scored.matrix.customers, scored.as_of, 90, t("1997-12-29"))
                .expect("labels");
        ChurnTest {
            store,
            march,
            june,
            sept,
            truth,
        }
    }

    /// Stores `trained`, scores `scored` with it: the scores' hash and the churn probabilities.
    pub fn score(
        &self,
        trained: &cis_models::Trained,
        scored: &cis_storage::ArtifactHash,
    ) -> (cis_storage::ArtifactHash, Vec<f64>) {
        let (model, _) = trained.store(&self.store).expect("store");
        let (hash, _, set) = cis_models::scores::score(&self.store, scored, &[model]).expect("score");
        (
            hash,
            set.rows.iter().map(|r| r.churn_probability.expect("churn")).collect(),
        )
    }

    /// The default method (`cis train churn` with both training cutoffs and no method): chosen by
    /// forward validation on 1997-06-30 among [`cis_models::churn::ChurnParams::candidates`]
    /// trained on 1997-03-31, then fitted on both.
    pub fn default_method(&self) -> cis_models::Trained {
        let candidates = cis_models::churn::ChurnParams::candidates(42);
        cis_models::train::churn_selected(
            &self.store,
            &[self.june, self.march],
            &candidates,
            90,
            t(CHURN_TRAIN_KNOWN),
        )
        .expect("train")
    }

    /// The variants, trained with labels known at [`CHURN_TRAIN_KNOWN`]: today's churn
    /// (1997-06-30), with CLV features, and with CLV features on 1997-03-31 and 1997-06-30; and, not
    /// asked for, the two cutoffs without CLV features.
    pub fn variants(&self) -> Vec<(&'static str, cis_models::Trained)> {
        let train = |cutoffs: &[cis_storage::ArtifactHash], clv: bool| {
            let params = cis_models::churn::ChurnParams {
                clv_features: clv.then(Box::default),
                ..cis_models::churn::ChurnParams::default()
            };
            cis_models::train::churn(&self.store, cutoffs, params, 90, t(CHURN_TRAIN_KNOWN)).expect("train")
        };
        vec![
            ("(a) today: 42 features, 1997-06-30", train(&[self.june], false)),
            ("(b) + CLV features, 1997-06-30", train(&[self.june], true)),
            (
                "(c) + CLV features, 03-31 + 06-30",
                train(&[self.march, self.june], true),
            ),
            ("(d) 42 features, 03-31 + 06-30", train(&[self.march, self.june], false)),
        ]
    }
}

/// `cis` on the store in `dir`: whether it succeeded, and what it printed (stdout, then stderr).
pub fn cis_text(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = cis(dir, args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// The word after the first `after` in `text`: a hash `cis` printed, e.g. after "snapshot ".
pub fn word_after(text: &str, after: &str) -> String {
    let start = text.find(after).expect(after) + after.len();
    text[start..].split_whitespace().next().expect("a word").to_owned()
}

/// A store directory holding the CDNOW fixture ingested by `cis ingest` (backfilled).
pub fn cdnow_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let cdnow = fixture("CDNOW_sample.txt");
    let args = [
        "ingest",
        "orders",
        cdnow.to_str().expect("utf-8"),
        "--format",
        "cdnow",
        "--recorded-at",
        "event-time",
    ];
    let (ok, text) = cis_text(dir.path(), &args);
    assert!(ok, "{text}");
    dir
}

/// [`cis_text`] of a command that must succeed: what it printed.
pub fn cis_ok(dir: &Path, args: &[&str]) -> String {
    let (ok, text) = cis_text(dir, args);
    assert!(ok, "{args:?}: {text}");
    text
}

/// `cis serve` on the store in `store_dir`, on a free loopback port, printing its admin token: the
/// running server, its "listening on" line and the token.
pub fn serve_printing_admin_token(store_dir: &Path) -> (std::process::Child, String, String) {
    use std::io::{BufRead, BufReader};
    let mut server = std::process::Command::new(cis_bin())
        .arg("--store")
        .arg(store_dir)
        .args(["serve", "--addr", "127.0.0.1:0", "--print-admin-token"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start cis serve");
    let mut lines = BufReader::new(server.stdout.take().expect("stdout")).lines();
    let mut line = || lines.next().expect("a line").expect("read");
    let listening = line();
    assert!(listening.contains("listening on"), "{listening}");
    let admin_line = line();
    let admin = admin_line
        .strip_prefix("admin token 'admin-1' (shown once): ")
        .unwrap_or_else(|| panic!("{admin_line}"))
        .to_string();
    (server, listening, admin)
}
