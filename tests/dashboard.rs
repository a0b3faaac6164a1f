//! The Customer Health Overview in a real browser: a server on a free loopback port, Debian's
//! headless Chromium loads the page, every chart must have data and the console no errors.
//! The screenshot is saved to target/dashboard.png.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cis_core::event::Kind;
use cis_core::AsOf;
use cis_features::snapshot;
use cis_ingest::source::Format;
use cis_ingest::RecordedAt;
use cis_models::scores;
use cis_server::api::{app_with, serve_router, tokens, AppState};

use crate::util::{cdnow_models, cdnow_store, ingest, t, write};

/// Runs Chromium headless with `args` on `url`; (stdout, stderr). Fails after 90 s.
fn chromium(profile: &Path, args: &[&str], url: &str) -> (String, String) {
    let mut child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("Debian's chromium must be installed (.ci/run installs it)");
    let deadline = Instant::now() + Duration::from_secs(90);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish in 90 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().expect("output");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The markup of the element with `id` up to its closing tag `end`.
fn section<'a>(dom: &'a str, id: &str, end: &str) -> &'a str {
    let start = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no element #{id} in the page"));
    let rest = &dom[start..];
    &rest[..rest.find(end).unwrap_or(rest.len())]
}

#[test]
fn dashboard_renders_every_chart_in_headless_chromium() {
    let store = cdnow_store();
    let dir = tempfile::tempdir().expect("tempdir");
    // A file with one bad row, so the data-quality chart has a quarantined row to draw.
    let bad = write(
        dir.path(),
        "late.csv",
        "order_id,customer_id,event_time,amount,currency\nx1,0001,1998-01-02,oops,USD\nx2,0001,1998-01-03,1.00,USD\n",
    );
    ingest(&store, Kind::Order, Format::Csv, &bad, RecordedAt::EventTime);
    let (snap, clv, seg) = cdnow_models(&store);
    scores::score(&store, &snap, &[clv, seg]).expect("score");
    let (later, ..) = snapshot::create(&store, AsOf::new(Some(t("1997-12-31")), None)).expect("snapshot");
    scores::score(&store, &later, &[clv, seg]).expect("score");
    let token = tokens::create(&store, "browser-test").expect("token");

    let state = AppState::new(Arc::new(store));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind a free loopback port");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = runtime.spawn(serve_router(
        listener,
        app_with(state, cis_server::dashboard::routes()),
        async {
            let _ = stopped.await;
        },
    ));

    let url = format!("http://{addr}/dashboard?as_of=1998-01-01&token={token}");
    let profile = tempfile::tempdir().expect("profile dir");
    let (dom, log) = chromium(profile.path(), &["--dump-dom", "--virtual-time-budget=5000"], &url);
    assert!(
        dom.contains("Customer Health Overview"),
        "page did not render: {dom:.400}"
    );
    for id in [
        "risk-distribution",
        "segment-sizes",
        "segment-value",
        "clv-deciles",
        "quarantine-per-run",
    ] {
        let chart = section(&dom, id, "</svg>");
        assert!(chart.contains("<rect class=\"bar\""), "chart #{id} has no bars");
    }
    assert!(
        section(&dom, "risk-trend", "</svg>").matches("class=\"point\"").count() == 2,
        "trend of two score runs"
    );
    assert!(
        section(&dom, "at-risk", "</table>").contains("<td>"),
        "at-risk table is empty"
    );
    assert!(
        section(&dom, "quarantine-per-run", "</svg>").contains(">1<"),
        "the quarantined row is drawn"
    );
    let console: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("Failed to load resource"))
        .collect();
    assert!(console.is_empty(), "console messages: {console:#?}");

    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let profile = tempfile::tempdir().expect("profile dir");
    chromium(
        profile.path(),
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,1700",
            "--hide-scrollbars",
        ],
        &url,
    );
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "screenshot of {} bytes",
        png.len()
    );

    let denied = format!("http://{addr}/dashboard?token=wrong");
    let profile = tempfile::tempdir().expect("profile dir");
    let (dom, _) = chromium(profile.path(), &["--dump-dom"], &denied);
    assert!(
        dom.contains("invalid or revoked token"),
        "a wrong token must be refused: {dom:.300}"
    );

    let _ = stop.send(());
    runtime.block_on(server).expect("join").expect("server");
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
    let html = cis_server::dashboard::render(&data, "tok");
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
