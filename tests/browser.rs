//! The Customer Health Overview in a real browser: a server on a free loopback port, Debian's
//! headless Chromium driven over WebDriver (chromedriver) signs in through the form, every chart
//! must have data and the console no errors. The screenshot is saved to target/dashboard.png.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use cis_core::event::Kind;
use cis_core::AsOf;
use cis_features::snapshot;
use cis_ingest::source::Format;
use cis_ingest::RecordedAt;
use cis_models::scores;
use cis_server::api::listen::Limits;
use cis_server::api::{tokens, AppState};
use serde_json::{json, Value};

use crate::http::{dashboard_app, section, Server};
use crate::util::{cdnow_models, cdnow_store, ingest, t, write};

/// A WebDriver session with Debian's chromedriver and headless Chromium, spoken to over
/// plain HTTP/1.1 on loopback (the protocol is a handful of JSON calls).
struct Browser {
    driver: Child,
    port: u16,
    session: String,
    profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let profile = tempfile::tempdir().expect("profile dir");
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .arg(format!(
                "--log-path={}",
                profile.path().join("chromedriver.log").display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("Debian's chromium-driver must be installed (.ci/run installs it)");
        let mut browser = Browser {
            driver,
            port,
            session: String::new(),
            profile,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !browser
            .call("GET", "/status", None)
            .is_some_and(|v| v["value"]["ready"] == true)
        {
            assert!(Instant::now() < deadline, "chromedriver did not start in 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,1700",
            "--hide-scrollbars",
            &format!("--user-data-dir={}", browser.profile.path().display()),
        ];
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "goog:chromeOptions": { "args": args },
            "goog:loggingPrefs": { "browser": "ALL" },
        } } });
        let created = browser.call("POST", "/session", Some(&caps)).expect("new session");
        browser.session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"))
            .to_string();
        browser
    }

    /// One WebDriver call; `None` when chromedriver is not answering yet.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Option<Value> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(90))).expect("timeout");
        let body = body.map(Value::to_string).unwrap_or_default();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.port,
            body.len()
        )
        .ok()?;
        // chromedriver keeps the connection open despite `Connection: close`: read by length.
        let (mut reply, mut chunk) = (Vec::new(), [0u8; 8192]);
        let body = loop {
            if let Some(end) = reply.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let n = s.read(&mut chunk).ok().filter(|n| *n > 0)?;
            reply.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&reply[..body]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())?;
        while reply.len() < body + length {
            let n = s.read(&mut chunk).ok().filter(|n| *n > 0)?;
            reply.extend_from_slice(&chunk[..n]);
        }
        serde_json::from_slice(&reply[body..body + length]).ok()
    }

    /// A command on the session; its `value`, or a panic naming the WebDriver error. A command
    /// that gets no answer at all (the connection dropped: seen once, on the first navigation
    /// of a Chromium installed minutes before, and never again on that machine) is sent once
    /// more; a second silence panics with the end of chromedriver's log.
    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        let reply = self
            .call(method, &path, body.as_ref())
            .or_else(|| {
                eprintln!("{method} {path}: no answer from chromedriver, sending it once more");
                self.call(method, &path, body.as_ref())
            })
            .unwrap_or_else(|| {
                panic!(
                    "{method} {path}: no answer; chromedriver's log ends:\n{}",
                    self.driver_log()
                )
            });
        assert!(reply["value"]["error"].is_null(), "{method} {path}: {reply}");
        reply["value"].clone()
    }

    /// The last lines of chromedriver's log.
    fn driver_log(&self) -> String {
        let log = std::fs::read_to_string(self.profile.path().join("chromedriver.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    fn go(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })));
    }

    fn url(&self) -> String {
        self.cmd("GET", "/url", None).as_str().expect("url").to_string()
    }

    fn source(&self) -> String {
        self.cmd("GET", "/source", None).as_str().expect("source").to_string()
    }

    fn element(&self, css: &str) -> String {
        let found = self.cmd(
            "POST",
            "/element",
            Some(json!({ "using": "css selector", "value": css })),
        );
        found
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .expect("element reference")
            .to_string()
    }

    /// Types `token` into the sign-in form and submits it.
    fn sign_in(&self, token: &str) {
        let field = self.element("#sign-in input[name=token]");
        self.cmd(
            "POST",
            &format!("/element/{field}/value"),
            Some(json!({ "text": token })),
        );
        let button = self.element("#sign-in button[type=submit]");
        self.cmd("POST", &format!("/element/{button}/click"), Some(json!({})));
    }

    fn click(&self, css: &str) {
        let button = self.element(css);
        self.cmd("POST", &format!("/element/{button}/click"), Some(json!({})));
    }

    /// The page source once it contains `marker` (a form submission navigates asynchronously).
    fn wait_for(&self, marker: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let source = self.source();
            if source.contains(marker) {
                return source;
            }
            assert!(Instant::now() < deadline, "no {marker:?} in 30 s: {source:.400}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The warnings and errors on the console since the last call (reading drains the log).
    fn console(&self) -> Vec<String> {
        let log = self.cmd("POST", "/se/log", Some(json!({ "type": "browser" })));
        log.as_array()
            .expect("log entries")
            .iter()
            .filter(|e| e["level"] == "SEVERE" || e["level"] == "WARNING")
            .map(|e| format!("{} {}", e["level"], e["message"]))
            .collect()
    }

    fn cookies(&self) -> Vec<Value> {
        self.cmd("GET", "/cookie", None).as_array().expect("cookies").clone()
    }

    fn screenshot(&self) -> Vec<u8> {
        let png = self.cmd("GET", "/screenshot", None);
        base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("base64"))
            .expect("a base64 PNG")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.call("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[test]
fn dashboard_signs_in_and_renders_every_chart_in_headless_chromium() {
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
    let store = Arc::new(store);
    let server = Server::start(dashboard_app(AppState::new(store.clone())), Limits::default());
    let base = format!("http://{}", server.addr);
    let browser = Browser::start();
    let mut urls = Vec::new();

    // A wrong token is refused on the sign-in page.
    browser.go(&format!("{base}/dashboard"));
    browser.wait_for("id=\"sign-in\"");
    browser.sign_in("cis_wrong");
    browser.wait_for("invalid or revoked token");
    urls.push(browser.url());
    // The refusals above are 401s, which the console reports; nothing else may appear.
    let console = browser.console();
    assert!(
        console.iter().all(|m| m.contains("status of 401")),
        "console messages: {console:#?}"
    );

    browser.sign_in(&token);
    browser.wait_for("class=\"chart\"");
    urls.push(browser.url());
    assert_eq!(
        urls.last().map(String::as_str),
        Some(format!("{base}/dashboard").as_str())
    );
    let cookies = browser.cookies();
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    let c = &cookies[0];
    assert_eq!(
        (&c["name"], &c["httpOnly"], &c["sameSite"], &c["path"]),
        (
            &json!("cis_session"),
            &json!(true),
            &json!("Strict"),
            &json!("/dashboard")
        ),
        "{c}"
    );

    browser.go(&format!("{base}/dashboard?as_of=1998-01-01"));
    let dom = browser.wait_for("id=\"risk-trend\"");
    urls.push(browser.url());
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
    // Under the Content-Security-Policy: no refused style, image or form, no error.
    let console = browser.console();
    assert!(console.is_empty(), "console messages: {console:#?}");

    let png = browser.screenshot();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "screenshot of {} bytes",
        png.len()
    );
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    std::fs::write(&shot, &png).expect("write the screenshot");

    // Signing out, and revoking the token, both end the browser's session.
    browser.click("form[action=\"/dashboard/sign-out\"] button");
    browser.wait_for("id=\"sign-in\"");
    assert!(browser.cookies().is_empty(), "the cookie is deleted");
    browser.sign_in(&token);
    browser.wait_for("class=\"chart\"");
    tokens::revoke(&store, "browser-test").expect("revoke");
    browser.go(&format!("{base}/dashboard"));
    browser.wait_for("session has ended");
    urls.push(browser.url());

    assert!(
        urls.iter().all(|u| !u.contains(&token) && !u.contains("token=")),
        "{urls:?}"
    );
    drop(browser);
    server.stop();
}
