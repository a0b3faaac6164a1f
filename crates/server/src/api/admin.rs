//! `/admin/...`: the store-changing commands, for admin tokens only ([`Scope::Admin`]).
//!
//! | route | what |
//! |---|---|
//! | `POST /admin/jobs/ingest?kind=K&name=FILE[&format=&recorded_at=&batch_rows=]` | body = the file's bytes; a job |
//! | `POST /admin/jobs/snapshot?as_of=T[&known_at=K]` | a job |
//! | `POST /admin/commands?arg=A&arg=B…` | any other `cis` command line; body = the file it reads, if any; a job (a read runs at once) |
//! | `GET /admin/ingested?kind=K&blake3=H` | the completed ingest run of that kind whose file had that content, if any |
//! | `GET /admin/jobs/{id}` | the job: state, progress, output, exit code |
//! | `GET /admin/jobs/{id}/output` | the file an ended job wrote (an export) |
//! | `POST /admin/tokens?name=N[&scope=read\|admin]`, `DELETE /admin/tokens/{name}` | at once |
//!
//! The server never opens a path the client names: an upload is written to a temporary file in
//! the store directory, ingested from there under the client's file name, and removed. Jobs run
//! one at a time ([`crate::jobs`]); the routes return at once (202 and the job), so readers never
//! wait for them. Every admin request is in the access log with the job it queued, and every
//! job's end is a record of its own (who, which job, outcome).

use std::io::Write;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use cis_core::{AsOf, Choice};
use cis_ingest::source::Format;
use cis_ingest::{IngestOptions, RecordedAt};
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;

use crate::access_log::{self, AccessRecord};
use crate::api::params::Params;
use crate::api::tokens::{token_hash, Scope, TokenError};
use crate::api::{bearer, blocking, grant, AppError, AppState, Caller};
use crate::jobs::{self, IngestProgress, JobError, JobView, Outcome, Work};

/// Largest upload `POST /admin/jobs/ingest` takes (bytes).
pub const UPLOAD_LIMIT: u64 = 64 * 1024 * 1024 * 1024;
/// The ingest route: exempt from [`crate::api::BODY_LIMIT`] (it has [`UPLOAD_LIMIT`]).
pub const INGEST_ROUTE: &str = "/admin/jobs/ingest";
/// The route of every other command line ([`command`]): like [`INGEST_ROUTE`], it takes its body
/// as a stream, up to [`COMMAND_UPLOAD_LIMIT`].
pub const COMMANDS_ROUTE: &str = "/admin/commands";
/// Largest file a command run through [`COMMANDS_ROUTE`] reads (a list of customers to erase).
pub const COMMAND_UPLOAD_LIMIT: u64 = 64 * 1024 * 1024;
/// How an upload's temporary file (or directory: a pipeline's unpacked bundle) in the store
/// directory is named.
pub const UPLOAD_PREFIX: &str = ".upload-";
/// How a command's output directory in the store directory is named (removed when the job is).
const OUTPUT_PREFIX: &str = ".output-";
/// The header of `GET /admin/jobs/{id}/output` saying what the body is: `file` (its bytes) or
/// `directory` (a tar of it).
pub const OUTPUT_SHAPE: &str = "x-cis-output";

/// Removes the uploads and command outputs a server that was killed left in the store directory:
/// raw input files, personal-data columns and all, and exported rows, which nothing else would
/// ever delete. For `cis serve` at start,
/// while it holds the store (no job of another process can be writing one). How many went.
pub fn remove_stale_uploads(store_dir: &std::path::Path) -> std::io::Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(store_dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let kind = entry.file_type()?;
        if name.starts_with(UPLOAD_PREFIX) && kind.is_file() {
            std::fs::remove_file(entry.path())?;
            removed += 1;
        } else if (name.starts_with(UPLOAD_PREFIX) || name.starts_with(OUTPUT_PREFIX)) && kind.is_dir() {
            std::fs::remove_dir_all(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// The admin token's name, for the handlers.
#[derive(Clone)]
pub struct Admin(pub String);

/// What the access log adds to an admin request's record: the job it queued, how it ended.
#[derive(Clone, Default)]
pub struct Audit {
    pub job: Option<u64>,
    pub outcome: Option<String>,
}

/// 401 without an active token, 403 with a read token.
pub async fn require_admin(State(state): State<AppState>, mut req: Request, next: Next) -> Result<Response, AppError> {
    let token = bearer(req.headers())?;
    let (name, scope) = grant(&state, token_hash(token)).await?;
    if scope != Scope::Admin {
        return Err(AppError::Forbidden(format!(
            "token '{name}' is a read token; this route needs an admin token \
             (`cis token create --name NAME --scope admin` with the server stopped, or `cis serve --print-admin-token`)"
        )));
    }
    req.extensions_mut().insert(Admin(name.clone()));
    let mut response = next.run(req).await;
    response.extensions_mut().insert(Caller(name));
    Ok(response)
}

/// The access log's record of a job's end (who, which job, outcome), for [`Jobs`]' `done`.
///
/// [`Jobs`]: crate::jobs::Jobs
fn job_record(state: &AppState, route: &'static str, who: String) -> impl FnOnce(JobView) + Send + 'static {
    let log = state.access.clone();
    let handle = tokio::runtime::Handle::current();
    move |view: JobView| {
        let Some(log) = log else { return };
        let outcome = match (&view.outcome.error, view.outcome.exit_code) {
            (Some(e), _) => format!("failed: {e}"),
            (None, code) => format!("done, exit {}", code.unwrap_or(0)),
        };
        let record = AccessRecord {
            at: cis_core::time::now(),
            token: Some(who),
            endpoint: route.to_string(),
            path: None,
            customer: None,
            as_of: None,
            known_at: None,
            status: StatusCode::ACCEPTED.as_u16(),
            count: None,
            job: Some(view.id),
            outcome: Some(outcome),
        };
        // Jobs end on the worker thread or the blocking pool, neither of them the runtime's
        // own threads, so this may wait for the log's queue.
        if let Err(e) = handle.block_on(log.record(record)) {
            tracing::error!(job = view.id, error = %e, "could not record the job's outcome in the access log");
        }
    }
}

/// The answer to a request that made a job: the job, where to poll it, and (for the access
/// log's record of the request) what was asked.
fn job_response(status: StatusCode, view: JobView, what: String) -> Response {
    let mut response = (
        status,
        [(header::LOCATION, format!("/admin/jobs/{}", view.id))],
        Json(&view),
    )
        .into_response();
    let verb = if status == StatusCode::ACCEPTED {
        "queued"
    } else {
        "ran"
    };
    response.extensions_mut().insert(Audit {
        job: Some(view.id),
        outcome: Some(format!("{verb}: {what}")),
    });
    response
}

/// Queues `work` and answers 202 with the job (and where to poll it). `what` says in the access
/// log what was asked for.
fn submit(
    state: &AppState,
    route: &'static str,
    kind: &str,
    by: String,
    what: String,
    work: Work,
) -> Result<Response, AppError> {
    let done = job_record(state, route, by.clone());
    let view = state
        .jobs
        .submit(&state.store, kind, &by, work, done)
        .map_err(AppError::internal)?;
    Ok(job_response(StatusCode::ACCEPTED, view, what))
}

/// `POST /admin/jobs/ingest`: the body to a temporary file in the store directory, then a job
/// ingesting it under the client's file name.
pub async fn ingest(
    State(state): State<AppState>,
    Extension(Admin(by)): Extension<Admin>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
    body: Body,
) -> Result<Response, AppError> {
    let params = Params::parse(q, &["kind", "name", "format", "recorded_at", "batch_rows"])?;
    let kind = params.required("kind")?;
    let kind = cis_core::event::Kind::from_choice(kind).map_err(|e| AppError::param("kind", e.to_string()))?;
    let name = params.required("name")?.to_string();
    if name.len() > 1024 || name.chars().any(char::is_control) {
        return Err(AppError::param("name", "at most 1024 bytes, no control characters"));
    }
    let format = match params.get("format") {
        Some(f) => Format::from_choice(f).map_err(|e| AppError::param("format", e.to_string()))?,
        None => Format::from_file_name(&name),
    };
    let recorded_at = RecordedAt::parse(params.get("recorded_at").unwrap_or("now"));
    let batch_rows = match params.get("batch_rows") {
        None => cis_ingest::DEFAULT_BATCH_ROWS,
        Some(n) => n
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=cis_ingest::MAX_BATCH_ROWS).contains(n))
            .ok_or_else(|| {
                AppError::param(
                    "batch_rows",
                    format!("a whole number from 1 to {}", cis_ingest::MAX_BATCH_ROWS),
                )
            })?,
    };

    let dir = state
        .store
        .dir()
        .map_or_else(std::env::temp_dir, std::path::Path::to_path_buf);
    let upload = blocking(&state, move |_| {
        tempfile::Builder::new()
            .prefix(UPLOAD_PREFIX)
            .tempfile_in(&dir)
            .map_err(AppError::internal)
    })
    .await?;
    let len = receive(body, upload.reopen().map_err(AppError::internal)?, UPLOAD_LIMIT).await?;

    let what = format!(
        "ingest {} from '{}' ({len} bytes, {})",
        kind.choice_name(),
        access_log::clip(&name, 256),
        format.choice_name()
    );
    let store = state.store.clone();
    let work: Work = Box::new(move |job, out, err| {
        let input = upload.reopen()?;
        let opts = IngestOptions {
            recorded_at,
            batch_rows,
            progress: Some(Arc::new(IngestProgress(job.clone()))),
            ..IngestOptions::new(kind, format)
        };
        // `upload` is removed when this closure (which owns it) is dropped, after the run.
        jobs::ingest_run(&store, input, &name, len, &opts, out, err).map(|(_, code)| code)
    });
    submit(&state, INGEST_ROUTE, "ingest", by, what, work)
}

/// Streams the request body into `file`; its length. Over `limit` bytes is a 413.
async fn receive(mut body: Body, file: std::fs::File, limit: u64) -> Result<u64, AppError> {
    let mut file = tokio::fs::File::from_std(file);
    let mut len = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| AppError::param("body", format!("the upload broke off: {e}")))?;
        let Ok(data) = frame.into_data() else { continue };
        len += data.len() as u64;
        if len > limit {
            return Err(AppError::PayloadTooLarge(limit));
        }
        file.write_all(&data).await.map_err(AppError::internal)?;
    }
    file.flush().await.map_err(AppError::internal)?;
    Ok(len)
}

/// `POST /admin/jobs/snapshot?as_of=T[&known_at=K]`.
pub async fn snapshot(
    State(state): State<AppState>,
    Extension(Admin(by)): Extension<Admin>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, AppError> {
    let params = Params::parse(q, &["as_of", "known_at"])?;
    params.required("as_of")?;
    let at = AsOf::new(params.time("as_of")?, params.time("known_at")?);
    let what = format!(
        "snapshot as of {} known at {}",
        cis_core::time::format(at.as_of),
        cis_core::time::format(at.known_at)
    );
    let store = state.store.clone();
    let work: Work = Box::new(move |_, out, _| jobs::snapshot(&store, at, out));
    submit(&state, "/admin/jobs/snapshot", "snapshot", by, what, work)
}

/// Where a job's temporary files go: the store directory (the system's when the store is in
/// memory).
fn temp_root(state: &AppState) -> std::path::PathBuf {
    state
        .store
        .dir()
        .map_or_else(std::env::temp_dir, std::path::Path::to_path_buf)
}

/// A temporary file in the store directory.
fn store_temp(state: &AppState, prefix: &str) -> Result<tempfile::NamedTempFile, AppError> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempfile_in(temp_root(state))
        .map_err(AppError::internal)
}

/// A temporary directory in the store directory.
fn store_temp_dir(state: &AppState, prefix: &str) -> Result<tempfile::TempDir, AppError> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(temp_root(state))
        .map_err(AppError::internal)
}

/// `POST /admin/commands?arg=A&arg=B…`: any `cis` command line the server's [`Commands`] take
/// (every one that works on a store, but `serve` and `demo`). One that changes the store is
/// queued as a job (202); one that only reads it runs at once (200, the job already ended). The
/// body is the file the command reads (`erase --customers FILE`), if it reads one; a file the
/// command writes (`--out FILE`) is written by the server and fetched from the job.
///
/// [`Commands`]: crate::jobs::Commands
pub async fn command(
    State(state): State<AppState>,
    Extension(Admin(by)): Extension<Admin>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
    body: Body,
) -> Result<Response, AppError> {
    let Some(commands) = state.commands.clone() else {
        return Err(AppError::NotImplemented(
            "this server runs no command lines (it was not started by `cis serve`)".into(),
        ));
    };
    let Query(pairs) = q.map_err(|e| AppError::param("query", e.body_text()))?;
    let mut args = Vec::with_capacity(pairs.len());
    for (name, value) in pairs {
        if name != "arg" {
            return Err(AppError::param(
                &name,
                "unknown parameter; known parameters: arg (repeated)",
            ));
        }
        args.push(value);
    }
    if args.is_empty() {
        return Err(AppError::param(
            "arg",
            "is required: the command line, one arg per word",
        ));
    }
    let plan = commands.plan(&args).map_err(|e| AppError::param("arg", e))?;

    let input = if plan.reads_file {
        let upload = blocking(&state, |s| store_temp(s, UPLOAD_PREFIX)).await?;
        receive(body, upload.reopen().map_err(AppError::internal)?, COMMAND_UPLOAD_LIMIT).await?;
        Some(upload.into_temp_path())
    } else {
        None
    };
    let output = if plan.writes_file {
        Some(blocking(&state, |s| store_temp_dir(s, OUTPUT_PREFIX)).await?)
    } else {
        None
    };
    let what = format!("cis {}", access_log::clip(&args.join(" "), 256));
    let store = state.store.clone();
    let work: Work = Box::new(move |job, out, err| {
        let written = output.as_ref().map(|d| d.path().join(jobs::OUTPUT));
        let files = jobs::CommandFiles {
            input: input.as_deref(),
            output: written.as_deref(),
        };
        let code = commands.run(&store, &args, files, out, err).map_err(JobError::Command);
        // The output of a command that succeeded stays with the job, for the client to fetch;
        // the input, and a failed command's output, go now.
        if let (Some(file), Ok(0)) = (output, &code) {
            job.set_output(file);
        }
        code
    });
    if plan.writes {
        return submit(&state, COMMANDS_ROUTE, &plan.kind, by, what, work);
    }
    let done = job_record(&state, COMMANDS_ROUTE, by.clone());
    let view = blocking(&state, move |s| Ok(s.jobs.run_now(&plan.kind, &by, work, done))).await?;
    Ok(job_response(StatusCode::OK, view, what))
}

/// `GET /admin/jobs/{id}/output`: the file an ended job wrote, once (it is removed after).
pub async fn job_output(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, AppError> {
    let id: u64 = id
        .parse()
        .map_err(|_| AppError::param("id", "a job id (a whole number)"))?;
    let job = state
        .jobs
        .job(id)
        .ok_or_else(|| AppError::NotFound(format!("no job {id} on this server")))?;
    let dir = job.take_output().ok_or_else(|| {
        AppError::NotFound(format!(
            "job {id} has no output to give: it wrote none, has not ended, or it was fetched already"
        ))
    })?;
    let written = dir.path().join(jobs::OUTPUT);
    let (shape, file) = if written.is_dir() {
        // A directory goes as one tar stream, made beside it first.
        let tar = dir.path().join("out.tar");
        let packed = tar.clone();
        blocking(&state, move |_| {
            let mut b = tar::Builder::new(std::fs::File::create(&packed).map_err(AppError::internal)?);
            b.follow_symlinks(false);
            b.append_dir_all(".", &written).map_err(AppError::internal)?;
            b.into_inner().and_then(|f| f.sync_all()).map_err(AppError::internal)
        })
        .await?;
        ("directory", tar)
    } else {
        ("file", written)
    };
    let file = tokio::fs::File::open(&file).await.map_err(AppError::internal)?;
    // Streamed in chunks; `dir` goes with the stream, removed once the body has been sent.
    let chunks = futures_util::stream::unfold((file, dir), |(mut file, dir)| async move {
        let mut buf = vec![0u8; 256 * 1024];
        match tokio::io::AsyncReadExt::read(&mut file, &mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(axum::body::Bytes::from(buf)), (file, dir)))
            }
            Err(e) => Some((Err(e), (file, dir))),
        }
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (header::HeaderName::from_static(OUTPUT_SHAPE), shape),
        ],
        Body::from_stream(chunks),
    )
        .into_response())
}

/// `GET /admin/ingested?kind=K&blake3=H`: `{"run": N}` for the completed ingest run of kind K
/// whose file's content had blake3 H, else `{"run": null}`. A client ingesting a directory or a
/// glob through the server asks before uploading each file, and skips what was ingested already,
/// as `cis ingest` does directly.
pub async fn ingested(
    State(state): State<AppState>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<serde_json::Value>, AppError> {
    let params = Params::parse(q, &["kind", "blake3"])?;
    let kind = cis_core::event::Kind::from_choice(params.required("kind")?)
        .map_err(|e| AppError::param("kind", e.to_string()))?;
    let hash = params.required("blake3")?.to_string();
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(AppError::param("blake3", "64 hexadecimal digits"));
    }
    let run = blocking(&state, move |s| {
        let done = cis_ingest::records::completed_by_hash(&s.store, kind).map_err(AppError::internal)?;
        Ok(done.get(&hash.to_ascii_lowercase()).copied())
    })
    .await?;
    Ok(Json(serde_json::json!({ "run": run })))
}

/// `GET /admin/jobs/{id}`.
pub async fn job(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<JobView>, AppError> {
    let id: u64 = id
        .parse()
        .map_err(|_| AppError::param("id", "a job id (a whole number)"))?;
    state
        .jobs
        .get(id)
        .map(Json)
        .ok_or_else(|| AppError::NotFound(format!("no job {id} on this server")))
}

/// A token command's answer: its [`Outcome`], with a status saying how it went.
fn token_answer(outcome: Outcome, result_of: Option<&JobError>, ok: StatusCode, what: String) -> Response {
    let status = match result_of {
        None => ok,
        Some(JobError::Token(TokenError::BadName(_))) => StatusCode::BAD_REQUEST,
        Some(JobError::Token(TokenError::Unknown(_))) => StatusCode::NOT_FOUND,
        Some(JobError::Token(TokenError::Exists(_) | TokenError::AlreadyRevoked(_))) => StatusCode::CONFLICT,
        Some(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let outcome_text = match &outcome.error {
        Some(e) => format!("failed: {e}"),
        None => what,
    };
    let mut response = (status, Json(outcome)).into_response();
    response.extensions_mut().insert(Audit {
        job: None,
        outcome: Some(outcome_text),
    });
    response
}

/// Runs a token command on the blocking pool, keeping its error for the status.
async fn token_command(
    state: &AppState,
    f: impl FnOnce(&AppState, &mut dyn Write, &mut dyn Write) -> Result<u8, JobError> + Send + 'static,
) -> Result<(Outcome, Option<JobError>), AppError> {
    blocking(state, move |s| {
        let (outcome, result) = Outcome::capture(|out, err| f(s, out, err));
        Ok((outcome, result.err()))
    })
    .await
}

/// `POST /admin/tokens?name=N[&scope=read|admin]`: 201 with the token in `stdout` (shown once).
pub async fn token_create(
    State(state): State<AppState>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, AppError> {
    let params = Params::parse(q, &["name", "scope"])?;
    let name = params.required("name")?.to_string();
    let scope = match params.get("scope") {
        None => Scope::Read,
        Some(s) => Scope::from_choice(s).map_err(|e| AppError::param("scope", e.to_string()))?,
    };
    let what = format!("created {} token '{name}'", scope.choice_name());
    let (outcome, failure) = token_command(&state, move |s, out, err| {
        jobs::token_create(&s.store, &name, scope, out, err)
    })
    .await?;
    Ok(token_answer(outcome, failure.as_ref(), StatusCode::CREATED, what))
}

/// `DELETE /admin/tokens/{name}`.
pub async fn token_revoke(State(state): State<AppState>, Path(name): Path<String>) -> Result<Response, AppError> {
    let what = format!("revoked token '{name}'");
    let (outcome, failure) = token_command(&state, move |s, out, _| jobs::token_revoke(&s.store, &name, out)).await?;
    Ok(token_answer(outcome, failure.as_ref(), StatusCode::OK, what))
}
