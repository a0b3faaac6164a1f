//! `cis serve` (the HTTP API) and `cis token` (its bearer tokens).

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cis_storage::Store;
use clap::{Args, Subcommand};

use cis_server::access_log::AccessLogConfig;
use cis_server::api::tokens::Scope;
use cis_server::api::{self, tokens, AppState};
use cis_server::jobs;

use super::remote::{Remote, ServerFile};

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on. Loopback by default; anything else exposes the API to the network.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Do not record reads in the access log (on by default; see `cis access-log`).
    #[arg(long)]
    pub no_access_log: bool,
    /// Create an admin token (named admin-N) and print it once, for the commands that run
    /// through the server (`CIS_TOKEN=... cis ingest ...`).
    #[arg(long)]
    pub print_admin_token: bool,
    #[command(flatten)]
    pub http: HttpArgs,
}

/// How long and how many clients the server tolerates.
#[derive(Args, Debug, Clone, Copy)]
pub struct HttpArgs {
    /// Seconds a connection may take to send a complete request head, from when it is ready for
    /// one: a silent, slow or idle keep-alive connection is closed after it.
    #[arg(long, value_name = "SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub header_timeout: u64,
    /// Most connections open at once; one more is answered 503 and closed. Keep it below the
    /// descriptor limit (`ulimit -n`).
    #[arg(long, value_name = "N", default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub max_connections: u32,
    /// Hours a dashboard sign-in lasts (ended sooner by sign-out, revocation or a restart).
    #[arg(long, value_name = "HOURS", default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=720))]
    pub session_hours: u64,
}

impl Default for HttpArgs {
    fn default() -> Self {
        let limits = api::listen::Limits::default();
        HttpArgs {
            header_timeout: limits.header_timeout.as_secs(),
            max_connections: limits.max_connections as u32,
            session_hours: api::sessions::DEFAULT_TTL.as_secs() / 3600,
        }
    }
}

impl HttpArgs {
    fn limits(&self) -> api::listen::Limits {
        api::listen::Limits {
            header_timeout: Duration::from_secs(self.header_timeout),
            max_connections: self.max_connections as usize,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a token; it is printed once, only its blake3 hash is stored.
    Create {
        #[arg(long)]
        name: String,
        /// read: profiles, artifacts, snapshots, export, dashboard, metrics; admin: also jobs
        /// (ingest, snapshot) and tokens through a running server.
        #[arg(long, default_value = "read", value_parser = super::choice::<Scope>())]
        scope: Scope,
    },
    /// Revoke a token by name (recorded; the name cannot be reused).
    Revoke { name: String },
    /// Every token: name, created, revoked, hash prefix (never the token).
    List,
}

pub fn serve(store_dir: &Path, a: ServeArgs) -> anyhow::Result<ExitCode> {
    let store = super::open_store(store_dir, super::SERVER)?;
    let mut notes = Vec::new();
    if a.print_admin_token {
        let (name, token) = new_admin_token(&store)?;
        notes.push(format!("admin token '{name}' (shown once): {token}"));
    } else if !tokens::list(&store)?.iter().any(|t| t.active()) {
        eprintln!("no active API token: create one with `cis token create --name NAME` (with the server stopped)");
    }
    let mut out = std::io::stdout().lock();
    let access = AccessLogConfig {
        enabled: !a.no_access_log,
        ..AccessLogConfig::default()
    };
    if a.no_access_log {
        eprintln!("the access log is off: API reads are not recorded");
    }
    run(Arc::new(store), a.addr, access, a.http, &mut out, &notes)
}

/// A new admin token named `admin-N` (the first N not taken): its name and text.
fn new_admin_token(store: &Store) -> anyhow::Result<(String, String)> {
    let taken = tokens::list(store)?;
    let name = (1..)
        .map(|n| format!("admin-{n}"))
        .find(|n| !taken.iter().any(|t| &t.name == n))
        .context("no free admin token name")?;
    let token = tokens::create_scoped(store, &name, Scope::Admin)?;
    Ok((name, token))
}

/// For `cis demo`: serves the API and the dashboard on an already open store, with a fresh
/// read token (named `demo-N`) and an admin token (`admin-N`, for the commands that run through
/// the server), printed once so that the demo can be explored right away.
pub fn serve_demo(store: Arc<Store>, addr: &str, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let addr: SocketAddr = addr
        .parse()
        .with_context(|| format!("'{addr}' is not an address such as 127.0.0.1:8080"))?;
    let name = format!("demo-{}", tokens::list(&store)?.len() + 1);
    let token = tokens::create(&store, &name)?;
    let (admin, admin_token) = new_admin_token(&store)?;
    let lines = [
        format!("API token '{name}' (shown once): {token}"),
        format!("  curl -H 'Authorization: Bearer {token}' 'http://{addr}/customer/profile?customer_id=0001&as_of=1997-09-30'"),
        format!("  curl -H 'Authorization: Bearer {token}' 'http://{addr}/customer/profile?customer_id=c000001&as_of=2025-07-01'"),
        format!("  dashboard: http://{addr}/dashboard (sign in with the token)"),
        format!("admin token '{admin}' (shown once), for cis commands while this runs: CIS_TOKEN={admin_token} cis ingest …"),
    ];
    run(
        store,
        addr,
        AccessLogConfig::default(),
        HttpArgs::default(),
        out,
        &lines,
    )
}

/// Serves the API and the dashboard on `addr` until Ctrl-C or SIGTERM, then finishes the
/// requests in flight. The store's `server.json` says where, while it serves.
fn run(
    store: Arc<Store>,
    addr: SocketAddr,
    access: AccessLogConfig,
    http: HttpArgs,
    out: &mut impl Write,
    notes: &[String],
) -> anyhow::Result<ExitCode> {
    let dir = store.dir().map(Path::to_path_buf);
    let store_dir = dir.clone();
    if let Some(d) = &dir {
        let removed = api::admin::remove_stale_uploads(d).with_context(|| format!("cleaning {}", d.display()))?;
        if removed > 0 {
            tracing::warn!(removed, "removed uploads a stopped server had not ingested");
        }
    }
    let state = AppState::with_access_log(store, access)
        .with_session_ttl(Duration::from_secs(http.session_hours * 3600))
        .with_commands(Arc::new(super::served::Served));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let local = listener.local_addr()?;
        if !local.ip().is_loopback() {
            tracing::warn!(addr = %local, "listening beyond loopback: the API is reachable from the network");
        }
        let warming = state.clone();
        tokio::task::spawn_blocking(move || match api::warm(&warming) {
            Ok(Some(h)) => tracing::info!(scores = %cis_storage::hex(&h), "score set loaded"),
            Ok(None) => tracing::info!("no score set to load yet"),
            Err(e) => tracing::warn!(error = ?e, "could not load the latest score set"),
        });
        let access = state.access.clone();
        let jobs = state.jobs.clone();
        let router = api::app_with(state, cis_server::dashboard::routes());
        // Written before the first line, so whoever read that line finds the file.
        let _address_file = dir.as_deref().map(|d| ServerFile::write(d, local)).transpose()?;
        writeln!(
            out,
            "cis API listening on http://{local} (Ctrl-C to stop; -v logs every request)"
        )?;
        for line in notes {
            writeln!(out, "{line}")?;
        }
        out.flush()?;
        api::listen::serve(listener, router, http.limits(), async {
            stop_signal().await;
            eprintln!("shutting down: finishing requests in flight");
        })
        .await
        .context("serving")?;
        finish_jobs(&jobs).await;
        // A job abandoned at the stop holds the access log open (to record its end), so its
        // last records would not be drained by the log's drop: flush them now.
        if let Some(log) = access {
            log.flush().context("flushing the access log")?;
        }
        anyhow::Ok(())
    })?;
    // Every handle on the store is gone with the runtime (but an abandoned job's).
    drop(runtime);
    // Erasures carried out by the server owe the rewrite of the records database, which needs
    // the store closed: now is the first time it is.
    if let Some(d) = store_dir.as_deref().filter(|d| Store::compaction_owed(d)) {
        match Store::compact(d) {
            Ok(c) => eprintln!(
                "records database rewritten without superseded pages, as the erasures served owe ({} -> {} bytes)",
                c.bytes_before, c.bytes_after
            ),
            Err(e) => eprintln!(
                "warning: the records rewrite the erasures owe is still to do ({e}); the next `cis erase` does it"
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// At a stop: no job starts any more (queued ones are cancelled), and the running one is let
/// finish, unless a second Ctrl-C or SIGTERM comes first. An abandoned job is cut off when the
/// process exits: its unacknowledged batch is removed on the next open, as after a kill.
async fn finish_jobs(jobs: &cis_server::jobs::Jobs) {
    jobs.close();
    let Some(job) = jobs.running() else { return };
    eprintln!(
        "waiting for job {} ({}) to finish; Ctrl-C again abandons it (what it has not committed is rolled back on the next open)",
        job.id, job.kind
    );
    let idle = async {
        while jobs.running().is_some() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::select! {
        () = idle => eprintln!("job {} ended", job.id),
        () = stop_signal() => eprintln!("abandoning job {}", job.id),
    }
}

/// Ctrl-C, or SIGTERM (what a service manager sends).
async fn stop_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// `cis token create|revoke` through a running server.
/// `cis token create|revoke` through the server: at once, not queued behind a job, so a revoke
/// takes effect on the next request whatever the server is doing. `None`: `token list`, a plain
/// read, which goes the way every other command does.
pub fn token_remote(server: &Remote, cmd: &TokenCommand, out: &mut impl Write) -> Option<anyhow::Result<ExitCode>> {
    match cmd {
        TokenCommand::Create { name, scope } => Some(server.token_create(name, *scope, out)),
        TokenCommand::Revoke { name } => Some(server.token_revoke(name, out)),
        TokenCommand::List => None,
    }
}

pub fn token(store: &Store, cmd: TokenCommand, out: &mut impl Write, err: &mut dyn Write) -> anyhow::Result<ExitCode> {
    match cmd {
        TokenCommand::Create { name, scope } => {
            return Ok(ExitCode::from(jobs::token_create(store, &name, scope, out, err)?));
        }
        TokenCommand::Revoke { name } => {
            return Ok(ExitCode::from(jobs::token_revoke(store, &name, out)?));
        }
        TokenCommand::List => {
            for t in tokens::list(store)? {
                writeln!(
                    out,
                    "{}  created {}  {}  blake3 {}",
                    t.name,
                    t.created_at,
                    t.revoked_at
                        .as_deref()
                        .map_or_else(|| "active".to_string(), |r| format!("revoked {r}")),
                    t.token_blake3.get(..16).unwrap_or(&t.token_blake3)
                )?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
