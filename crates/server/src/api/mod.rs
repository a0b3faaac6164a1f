//! The HTTP API (axum on tokio): as-of customer profiles, artifacts with their lineage,
//! snapshots, metrics and the OpenAPI description.
//!
//! [`app`] builds the router around an [`AppState`] (the shared [`Store`] and in-memory caches);
//! [`serve`] runs it on a listener until a shutdown future completes, with the header-read
//! timeout and connection bound of [`listen::Limits`]. Tests drive [`app`] without a socket
//! (`tower::ServiceExt::oneshot`).
//!
//! | route | auth |
//! |---|---|
//! | `GET /healthz`, `GET /openapi.json` | open |
//! | `GET /customer/profile`, `GET /artifacts/{hash}`, `GET /snapshots`, `GET /export/customer_risk_scores`, `GET /metrics` | `Authorization: Bearer <token>` |
//! | `GET /dashboard` (with [`crate::dashboard::routes`]) | bearer header, or the session cookie of a sign-in ([`sessions`]) |
//! | `/admin/...` ([`admin`]: jobs, tokens) | an admin token (a read token gets 403) |
//!
//! Every response carries the security headers of [`headers`].
//!
//! Every data read (all token-guarded routes but `/metrics`, and the dashboard) and every admin
//! action (not the polling of a job) is also appended to the hash-chained access log
//! ([`crate::access_log`]) by [`access`]; 401s are counted per route, status and minute.
//!
//! Every request is logged (one `tracing` event at INFO: method, path without query, status,
//! latency, token name) and counted in `/metrics` by route pattern and status. Query strings and
//! paths over [`MAX_URI_PART`] bytes are refused with 414, bodies over [`BODY_LIMIT`] with 413.
//! Store reads run on tokio's blocking pool ([`blocking`]). No route returns personal data:
//! the log holds none, and profiles carry only features and scores.

pub mod admin;
pub mod artifacts;
pub mod error;
pub mod export;
pub mod headers;
pub mod listen;
pub mod metrics;
pub mod openapi;
pub mod params;
pub mod profile;
pub mod scores;
pub mod sessions;
pub mod tokens;

use std::cell::RefCell;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, Uri};
use axum::middleware::{from_fn, from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use cis_storage::Store;
use serde_json::json;
use tokio::net::TcpListener;

use crate::access_log::{clip, AccessLog, AccessLogConfig, AccessRecord};
use crate::jobs::{Commands, Jobs};
pub use error::AppError;
use metrics::{Gauge, Metrics};
use scores::ScoreCache;
use sessions::Sessions;
use tokens::{Lookup, Scope, TokenCache};

/// Longest query string, and longest path, accepted (bytes).
pub const MAX_URI_PART: usize = 2048;
/// Largest request body accepted (but by [`admin::INGEST_ROUTE`], which streams an upload).
pub const BODY_LIMIT: usize = 16 * 1024;

/// What every handler shares. Cloning is cheap (reference counts).
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<Store>,
    /// Parsed score sets by artifact hash.
    pub scores: Arc<ScoreCache>,
    /// Active API token hashes.
    pub tokens: Arc<TokenCache>,
    pub metrics: Arc<Metrics>,
    /// The writer of the store's access log; `None` when it is switched off.
    pub access: Option<Arc<AccessLog>>,
    /// Dashboard sign-ins of this server (never shared with another state).
    pub sessions: Arc<Sessions>,
    /// Admin jobs submitted to this server (they run one at a time per store).
    pub jobs: Arc<Jobs>,
    /// The command line's commands, for `POST /admin/commands`; `None`: that route answers 501.
    pub commands: Option<Arc<dyn Commands>>,
}

impl AppState {
    /// With the access log on (the default configuration).
    pub fn new(store: Arc<Store>) -> AppState {
        AppState::with_access_log(store, AccessLogConfig::default())
    }

    /// With the access log as configured. All states on one store share one writer, started
    /// with the configuration of the first.
    pub fn with_access_log(store: Arc<Store>, config: AccessLogConfig) -> AppState {
        AppState {
            access: config.enabled.then(|| AccessLog::shared(&store, config)),
            store,
            scores: Arc::new(ScoreCache::default()),
            tokens: Arc::new(TokenCache::default()),
            metrics: Arc::new(Metrics::default()),
            sessions: Arc::new(Sessions::default()),
            jobs: Arc::new(Jobs::default()),
            commands: None,
        }
    }

    /// With `commands` run by `POST /admin/commands`.
    pub fn with_commands(self, commands: Arc<dyn Commands>) -> AppState {
        AppState {
            commands: Some(commands),
            ..self
        }
    }

    /// With dashboard sessions that last `ttl` (default [`sessions::DEFAULT_TTL`]).
    pub fn with_session_ttl(self, ttl: Duration) -> AppState {
        AppState {
            sessions: Arc::new(Sessions::new(ttl)),
            ..self
        }
    }
}

/// Parses the score set a profile asked now would use, so that the first request does not
/// pay for it (a few hundred ms for 100k customers). Blocking; returns its hash, if any.
pub fn warm(state: &AppState) -> Result<Option<cis_storage::ArtifactHash>, AppError> {
    let at = cis_core::AsOf::new(None, None);
    let Some(slot) = state.scores.select(&state.store, at)? else {
        return Ok(None);
    };
    state.scores.rows(&state.store, &slot)?;
    Ok(Some(slot.meta.hash))
}

/// Runs `f` on tokio's blocking pool: for store reads (sled) from async handlers.
pub async fn blocking<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&AppState) -> Result<T, AppError> + Send + 'static,
) -> Result<T, AppError> {
    let s = state.clone();
    tokio::task::spawn_blocking(move || f(&s)).await?
}

/// Routes another module adds to the app (the dashboard): `open` need no token, `protected`
/// need one. They get the same request log, metrics and limits.
pub struct ExtraRoutes {
    pub open: Router<AppState>,
    pub protected: Router<AppState>,
}

impl Default for ExtraRoutes {
    fn default() -> Self {
        ExtraRoutes {
            open: Router::new(),
            protected: Router::new(),
        }
    }
}

/// The API router.
pub fn app(state: AppState) -> Router {
    app_with(state, ExtraRoutes::default())
}

/// The API router with routes added by other modules.
pub fn app_with(state: AppState, extra: ExtraRoutes) -> Router {
    let data = Router::new()
        .route("/customer/profile", get(profile::handler))
        .route("/artifacts/{hash}", get(artifacts::artifact))
        .route("/snapshots", get(artifacts::snapshots))
        .route("/export/customer_risk_scores", get(export::handler))
        .merge(extra.protected)
        .route_layer(from_fn_with_state(state.clone(), require_token))
        // Open extra routes are pages that check their own token (the dashboard): data reads too.
        .merge(extra.open)
        .route_layer(from_fn_with_state(state.clone(), access));
    let protected = Router::new()
        .route("/metrics", get(metrics_handler))
        .route_layer(from_fn_with_state(state.clone(), require_token));
    let admin = Router::new()
        .route(admin::INGEST_ROUTE, post(admin::ingest))
        .route("/admin/jobs/snapshot", post(admin::snapshot))
        .route(admin::COMMANDS_ROUTE, post(admin::command))
        .route("/admin/tokens", post(admin::token_create))
        .route("/admin/tokens/{name}", delete(admin::token_revoke))
        .route_layer(from_fn_with_state(state.clone(), admin::require_admin))
        .route_layer(from_fn_with_state(state.clone(), access));
    // Polling a job is no action (the CLI polls ten times a second): not in the access log.
    let jobs = Router::new()
        .route("/admin/jobs/{id}", get(admin::job))
        .route("/admin/jobs/{id}/output", get(admin::job_output))
        .route("/admin/ingested", get(admin::ingested))
        .route_layer(from_fn_with_state(state.clone(), admin::require_admin));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/openapi.json", get(openapi_handler))
        .merge(data)
        .merge(protected)
        .merge(admin)
        .merge(jobs)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(from_fn_with_state(state.clone(), observe))
        .layer(from_fn(headers::security_headers))
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` completes, then finishes the requests in
/// flight (graceful shutdown). Default [`listen::Limits`].
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_router(listener, app(state), shutdown).await
}

/// [`serve`] for a router built with [`app_with`]; [`listen::serve`] sets the limits.
pub async fn serve_router(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    listen::serve(listener, router, listen::Limits::default(), shutdown).await
}

/// The token's name, attached to the response by [`require_token`] for the request log.
#[derive(Clone)]
pub(crate) struct Caller(pub(crate) String);

fn limits(uri: &Uri, headers: &HeaderMap) -> Option<AppError> {
    if uri.query().is_some_and(|q| q.len() > MAX_URI_PART) {
        return Some(AppError::UriTooLong(format!("query string over {MAX_URI_PART} bytes")));
    }
    if uri.path().len() > MAX_URI_PART {
        return Some(AppError::UriTooLong(format!("path over {MAX_URI_PART} bytes")));
    }
    if uri.path() == admin::INGEST_ROUTE || uri.path() == admin::COMMANDS_ROUTE {
        // An upload: its handler streams it to disk and stops at its own limit.
        return None;
    }
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if length.is_some_and(|n| n > BODY_LIMIT as u64) {
        return Some(AppError::PayloadTooLarge(BODY_LIMIT as u64));
    }
    None
}

/// Limits, then the request log line and the metrics, around every request.
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let route = req.extensions().get::<MatchedPath>().cloned();
    let path: String = req.uri().path().chars().take(256).collect();
    let response = match limits(req.uri(), req.headers()) {
        Some(e) => e.into_response(),
        None => next.run(req).await,
    };
    let elapsed = start.elapsed();
    let status = response.status().as_u16();
    let route = route.as_ref().map_or("unmatched", |r| r.as_str());
    state.metrics.observe(route, &method, status, elapsed.as_secs_f64());
    let caller = response.extensions().get::<Caller>().map(|c| c.0.as_str());
    tracing::info!(
        target: "cis::api",
        method = %method,
        path = %path,
        route,
        status,
        latency_us = elapsed.as_micros() as u64,
        caller,
        "request"
    );
    response
}

tokio::task_local! {
    /// The token name [`authorize`] accepted for the request [`access`] is logging. Per
    /// request (scoped by [`access`] to its future), so never shared between stores.
    static CALLER: RefCell<Option<String>>;
}

/// Appends the request to the access log once it is answered (a refused one only to its
/// minute's count); a request that cannot be logged is refused (500) rather than served unlogged.
async fn access(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(log) = state.access.clone() else {
        return next.run(req).await;
    };
    let at = cis_core::time::now();
    let endpoint = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
        .to_string();
    let path = (req.uri().path() != endpoint).then(|| clip(req.uri().path(), 256));
    // Only these three are read from the query: it may carry other secrets (the dashboard's token).
    let query = Query::<Vec<(String, String)>>::try_from_uri(req.uri()).map_or_else(|_| Vec::new(), |q| q.0);
    let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| clip(v, 256));
    let (customer, as_of, known_at) = (param("customer_id"), param("as_of"), param("known_at"));
    let (token, response) = CALLER
        .scope(RefCell::new(None), async {
            let response = next.run(req).await;
            (CALLER.with(|c| c.take()), response)
        })
        .await;
    let status = response.status().as_u16();
    let audit = response.extensions().get::<admin::Audit>().cloned().unwrap_or_default();
    let logged = match token {
        Some(token) => {
            let record = AccessRecord {
                at,
                token: Some(token),
                endpoint,
                path,
                customer,
                as_of,
                known_at,
                status,
                count: None,
                job: audit.job,
                outcome: audit.outcome,
            };
            log.record(record).await
        }
        // No token authenticated it: keep nothing the client typed, only a count per route,
        // status and minute (anyone can send these; see `access_log`).
        None => log.refused(endpoint, status).await,
    };
    match logged {
        Ok(()) => response,
        Err(e) => AppError::internal(e).into_response(),
    }
}

/// The bearer token of a request, if it has a well-formed one.
pub(crate) fn bearer(headers: &HeaderMap) -> Result<&str, AppError> {
    let value = headers.get(header::AUTHORIZATION).ok_or(AppError::Unauthorized(
        "missing bearer token (Authorization: Bearer <token>)",
    ))?;
    let value = value
        .to_str()
        .map_err(|_| AppError::Unauthorized("malformed Authorization header"))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or(AppError::Unauthorized("malformed Authorization header"))?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.len() > tokens::MAX_TOKEN_LEN {
        return Err(AppError::Unauthorized(
            "missing bearer token (Authorization: Bearer <token>)",
        ));
    }
    Ok(token)
}

/// 401 unless the request carries an active token: a hash and a map lookup, the store is read
/// only when the cache is stale.
async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Result<Response, AppError> {
    let token = bearer(req.headers())?;
    let name = authorize(&state, token).await?;
    let mut response = next.run(req).await;
    response.extensions_mut().insert(Caller(name));
    Ok(response)
}

/// The name of the active token `token`, or 401. Also for the dashboard, which checks its
/// own credentials (a bearer header, a sign-in form).
pub async fn authorize(state: &AppState, token: &str) -> Result<String, AppError> {
    authorize_hash(state, tokens::token_hash(token)).await
}

/// [`authorize`] by the token's hash: what a dashboard session holds.
pub async fn authorize_hash(state: &AppState, hash: [u8; 32]) -> Result<String, AppError> {
    Ok(grant(state, hash).await?.0)
}

/// The name and scope of the active token with hash `hash`, or 401; the name becomes the
/// request's caller in the access log.
pub(crate) async fn grant(state: &AppState, hash: [u8; 32]) -> Result<(String, Scope), AppError> {
    let found = match state.tokens.lookup(&state.store, &hash) {
        Lookup::Valid(name, scope) => Some((name, scope)),
        Lookup::Invalid => None,
        Lookup::Stale => blocking(state, move |s| Ok(s.tokens.check_hash(&s.store, &hash)?)).await?,
    };
    let (name, scope) = found.ok_or(AppError::Unauthorized("invalid or revoked token"))?;
    // Outside a logged route there is no slot to fill, which is fine.
    let _ = CALLER.try_with(|c| c.replace(Some(name.clone())));
    Ok((name, scope))
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn openapi_handler() -> Response {
    match openapi::json_bytes() {
        Ok(bytes) => (
            [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            bytes,
        )
            .into_response(),
        Err(e) => AppError::internal(e).into_response(),
    }
}

async fn not_found(method: Method, uri: Uri) -> AppError {
    AppError::NotFound(format!("no route {method} {}", uri.path()))
}

async fn method_not_allowed() -> AppError {
    AppError::MethodNotAllowed
}

/// Store-level gauges for `/metrics`. Blocking.
fn gauges(state: &AppState) -> Result<Vec<Gauge>, AppError> {
    let store = &state.store;
    let (batches, _) = store.log().head_at(i64::MAX)?;
    let mut g = vec![
        Gauge {
            name: "cis_store_size_bytes",
            help: "Size of the store on disk.",
            labels: Vec::new(),
            value: store.size_on_disk()? as f64,
        },
        Gauge {
            name: "cis_log_events",
            help: "Events in the log.",
            labels: Vec::new(),
            value: store.log().event_count()? as f64,
        },
        Gauge {
            name: "cis_log_batches",
            help: "Committed batches in the log.",
            labels: Vec::new(),
            value: batches as f64,
        },
    ];
    let runs = cis_ingest::records::runs(store).map_err(AppError::internal)?;
    if let Some(t) = runs
        .iter()
        .filter_map(|r| cis_core::time::parse_timestamp(&r.finished_at).ok())
        .max()
    {
        g.push(Gauge {
            name: "cis_last_ingest_timestamp_seconds",
            help: "When the last ingest run finished (Unix seconds).",
            labels: Vec::new(),
            value: t.micros() as f64 / 1e6,
        });
    }
    if let Some(r) = store.artifacts().latest(cis_models::scores::KIND, i64::MAX)? {
        let slot = state.scores.slot(store, &r.hash)?;
        g.push(Gauge {
            name: "cis_latest_scores_as_of_timestamp_seconds",
            help: "As-of T of the latest score set (Unix seconds).",
            labels: Vec::new(),
            value: slot.meta.as_of.micros() as f64 / 1e6,
        });
        g.push(Gauge {
            name: "cis_latest_scores_created_timestamp_seconds",
            help: "When the latest score set was computed (Unix seconds).",
            labels: Vec::new(),
            value: slot.meta.created_at.micros() as f64 / 1e6,
        });
    }
    g.extend(metrics::monitor_gauges(store)?);
    g.push(Gauge {
        name: "cis_score_sets_in_memory",
        help: "Score sets whose rows are parsed and cached.",
        labels: Vec::new(),
        value: state.scores.loaded() as f64,
    });
    if let Some(log) = &state.access {
        g.push(Gauge {
            name: "cis_access_log_records_durable",
            help: "Access log records flushed to disk by this server.",
            labels: Vec::new(),
            value: log.durable_records() as f64,
        });
        g.push(Gauge {
            name: "cis_access_log_queue_waits",
            help: "Requests that found the access log queue full and waited (never dropped).",
            labels: Vec::new(),
            value: log.queue_waits() as f64,
        });
    }
    g.push(Gauge {
        name: "cis_uptime_seconds",
        help: "Seconds since the server state was created.",
        labels: Vec::new(),
        value: state.metrics.uptime_seconds(),
    });
    Ok(g)
}

async fn metrics_handler(State(state): State<AppState>) -> Result<Response, AppError> {
    let gauges = blocking(&state, gauges).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        state.metrics.render(&gauges),
    )
        .into_response())
}
