//! HTTP helpers both test binaries use: one request through the router, the real server on a
//! loopback port, the security headers every reply carries, the dashboard's sign-in.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use cis_server::api::listen::Limits;
use cis_server::api::{app_with, AppState};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: axum::http::HeaderMap,
    pub(crate) body: Vec<u8>,
}

impl Reply {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub(crate) async fn send(app: &Router, method: Method, uri: &str, token: Option<&str>) -> Reply {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(tok) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {tok}"));
    }
    send_request(app, req.body(Body::empty()).expect("request")).await
}

/// Any request, through the router.
pub(crate) async fn send_request(app: &Router, req: Request<Body>) -> Reply {
    let response = app.clone().oneshot(req).await.expect("the router answers");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.expect("body").to_bytes().to_vec();
    Reply { status, headers, body }
}

/// The real server on a free loopback port, in a runtime of its own, until [`Server::stop`].
pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    runtime: tokio::runtime::Runtime,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    pub(crate) fn start(router: Router, limits: Limits) -> Server {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind a free loopback port");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = runtime.spawn(cis_server::api::listen::serve(listener, router, limits, async {
            let _ = stopped.await;
        }));
        Server {
            addr,
            runtime,
            stop,
            task,
        }
    }

    /// Signals shutdown and waits until every connection is done; how long that took.
    pub(crate) fn stop(self) -> Duration {
        let start = Instant::now();
        self.stop.send(()).expect("signal");
        self.runtime
            .block_on(self.task)
            .expect("server task")
            .expect("server stops cleanly");
        start.elapsed()
    }

    /// One request on a fresh connection (`Connection: close`); the whole reply.
    pub(crate) fn fetch(&self, path: &str, token: Option<&str>) -> String {
        self.try_fetch(path, token).expect("fetch")
    }

    pub(crate) fn try_fetch(&self, path: &str, token: Option<&str>) -> std::io::Result<String> {
        let mut s = TcpStream::connect(self.addr)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {}\r\n{auth}Connection: close\r\n\r\n",
            self.addr
        )?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    }
}

/// The headers every response carries, from [`cis_server::api::headers`].
pub(crate) fn assert_security_headers(h: &HeaderMap, what: &str) {
    let get = |name: header::HeaderName| {
        h.get(&name)
            .unwrap_or_else(|| panic!("{what}: no {name} header"))
            .to_str()
            .expect("ASCII")
            .to_string()
    };
    assert_eq!(get(header::X_CONTENT_TYPE_OPTIONS), "nosniff", "{what}");
    assert_eq!(get(header::CACHE_CONTROL), "no-store", "{what}");
    assert_eq!(get(header::REFERRER_POLICY), "no-referrer", "{what}");
    let csp = get(header::CONTENT_SECURITY_POLICY);
    let directives: Vec<&str> = csp.split(';').map(str::trim).collect();
    for want in ["default-src 'none'", "frame-ancestors 'none'", "form-action 'self'"] {
        assert!(directives.contains(&want), "{what}: {want} missing from {csp}");
    }
    assert!(!csp.contains("script-src") && !csp.contains("http"), "{what}: {csp}");
}

/// The markup of the element with `id` up to its closing tag `end`.
pub(crate) fn section<'a>(dom: &'a str, id: &str, end: &str) -> &'a str {
    let start = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no element #{id} in the page"));
    let rest = &dom[start..];
    &rest[..rest.find(end).unwrap_or(rest.len())]
}

pub(crate) fn dashboard_app(state: AppState) -> Router {
    app_with(state, cis_server::dashboard::routes())
}

/// Posts the sign-in form with `token`, as a browser on this server would.
pub(crate) async fn sign_in(app: &Router, token: &str, origin: &str) -> Reply {
    let req = Request::builder()
        .method(Method::POST)
        .uri("/dashboard/session")
        .header(header::HOST, "127.0.0.1:8080")
        .header(header::ORIGIN, origin)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(format!("token={token}")))
        .expect("request");
    send_request(app, req).await
}
