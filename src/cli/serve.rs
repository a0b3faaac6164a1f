//! `cis serve` (the HTTP API) and `cis token` (its bearer tokens).

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use cis_storage::Store;
use clap::{Args, Subcommand};

use cis_server::access_log::AccessLogConfig;
use cis_server::api::{self, tokens, AppState};

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on. Loopback by default; anything else exposes the API to the network.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Do not record reads in the access log (on by default; see `cis access-log`).
    #[arg(long)]
    pub no_access_log: bool,
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a token; it is printed once, only its blake3 hash is stored.
    Create {
        #[arg(long)]
        name: String,
    },
    /// Revoke a token by name (recorded; the name cannot be reused).
    Revoke { name: String },
    /// Every token: name, created, revoked, hash prefix (never the token).
    List,
}

pub fn serve(store_dir: &Path, a: ServeArgs) -> anyhow::Result<ExitCode> {
    let store = super::open_store(store_dir, super::SERVER)?;
    if !tokens::list(&store)?.iter().any(|t| t.active()) {
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
    run(Arc::new(store), a.addr, access, &mut out, &[])
}

/// For `cis demo`: serves the API and the dashboard on an already open store, with a fresh
/// token (named `demo-N`) printed once so that the demo can be explored right away.
pub fn serve_demo(store: Arc<Store>, addr: &str, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let addr: SocketAddr = addr
        .parse()
        .with_context(|| format!("'{addr}' is not an address such as 127.0.0.1:8080"))?;
    let name = format!("demo-{}", tokens::list(&store)?.len() + 1);
    let token = tokens::create(&store, &name)?;
    let lines = [
        format!("API token '{name}' (shown once): {token}"),
        format!("  curl -H 'Authorization: Bearer {token}' 'http://{addr}/customer/profile?customer_id=0001&as_of=1997-09-30'"),
        format!("  curl -H 'Authorization: Bearer {token}' 'http://{addr}/customer/profile?customer_id=c000001&as_of=2025-07-01'"),
        format!("  dashboard: http://{addr}/dashboard?token={token}"),
    ];
    run(store, addr, AccessLogConfig::default(), out, &lines)
}

/// Serves the API and the dashboard on `addr` until Ctrl-C, then finishes the requests in flight.
fn run(
    store: Arc<Store>,
    addr: SocketAddr,
    access: AccessLogConfig,
    out: &mut impl Write,
    notes: &[String],
) -> anyhow::Result<ExitCode> {
    let state = AppState::with_access_log(store, access);
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
        let router = api::app_with(state, cis_server::dashboard::routes());
        writeln!(
            out,
            "cis API listening on http://{local} (Ctrl-C to stop; -v logs every request)"
        )?;
        for line in notes {
            writeln!(out, "{line}")?;
        }
        out.flush()?;
        api::serve_router(listener, router, async {
            if let Err(e) = tokio::signal::ctrl_c().await {
                tracing::error!(error = %e, "cannot listen for Ctrl-C; stopping");
            }
            eprintln!("shutting down: finishing requests in flight");
        })
        .await
        .context("serving")?;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

pub fn token(store: &Store, cmd: TokenCommand, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    match cmd {
        TokenCommand::Create { name } => {
            let token = tokens::create(store, &name)?;
            eprintln!("token '{name}' created; it is shown only now (cis keeps its blake3 hash):");
            writeln!(out, "{token}")?;
        }
        TokenCommand::Revoke { name } => {
            tokens::revoke(store, &name)?;
            writeln!(out, "token '{name}' revoked")?;
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
