//! The accept loop: HTTP/1.1 connections with a header-read timeout and a bound on how many
//! are open at once.
//!
//! `axum::serve` has neither, so a client that sends one header byte every few seconds, or
//! nothing at all, held its connection (and a file descriptor) forever, and a few hundred of
//! them starved `/healthz`. Here every connection is served by hyper's HTTP/1 builder with
//! [`Limits::header_timeout`]: hyper starts that timer whenever the connection waits for a
//! request head (on accept and again after each response), so it also ends idle keep-alive
//! connections. At most [`Limits::max_connections`] are open; one more is answered `503` and
//! closed at once instead of waiting in the kernel's backlog (or holding a descriptor).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::connect_info::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// How long and how many connections the server tolerates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest wait for a complete request head, counted from when the connection is ready
    /// for one: a silent, slow-header or idle keep-alive connection is closed after it.
    pub header_timeout: Duration,
    /// Most connections open at once; keep it below the descriptor limit (`ulimit -n`) minus
    /// the store's own files.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: Duration::from_secs(10),
            max_connections: 128,
        }
    }
}

/// What a connection over the bound gets before it is closed. `Connection: close` and a
/// length, so that a client reads a complete answer.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
content-length: 32\r\nretry-after: 1\r\nconnection: close\r\n\r\n{\"error\":\"too many connections\"}";

/// Refused connections drained at once before closing, and for how long at most: a few
/// descriptors over the bound, for a short while, so that a flood cannot exhaust them.
const LINGERING: usize = 16;
const LINGER: Duration = Duration::from_secs(1);

/// At most one warning per this interval while connections are being refused.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` within `limits` until `shutdown` completes; then stops
/// accepting and waits for the open connections to finish their requests (an idle one is
/// closed at once, one mid-header within the header timeout).
///
/// Requests carry the peer's address as axum's `ConnectInfo<SocketAddr>` extension.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let lingering = Arc::new(Semaphore::new(LINGERING));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    let mut refused = Refused::default();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            refused.count(limits.max_connections);
            busy(stream, &lingering);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            router.clone().oneshot(req)
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                // Timeouts and clients that hang up land here: normal on an open port.
                tracing::debug!(target: "cis::api", %peer, error = %e, "connection ended");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Answers 503 without blocking (the reply fits any empty socket buffer) and closes. Closing
/// a socket whose request is unread sends a reset, which can destroy the reply before the
/// client reads it; so, while fewer than [`LINGERING`] refused connections are pending, the
/// write side is shut and the request drained for up to [`LINGER`] first.
fn busy(stream: TcpStream, lingering: &Arc<Semaphore>) {
    let _ = stream.try_write(BUSY);
    let Ok(permit) = lingering.clone().try_acquire_owned() else {
        return;
    };
    tokio::spawn(async move {
        let mut stream = stream;
        let _ = stream.shutdown().await;
        let mut sink = [0u8; 1024];
        let drain = async {
            while let Ok(n) = stream.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(LINGER, drain).await;
        drop(permit);
    });
}

/// Counts refused connections, and warns about them at most every [`WARN_EVERY`].
#[derive(Default)]
struct Refused {
    since_warning: u64,
    warned: Option<Instant>,
}

impl Refused {
    fn count(&mut self, bound: usize) {
        self.since_warning += 1;
        if self.warned.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
            tracing::warn!(
                target: "cis::api",
                bound,
                refused = self.since_warning,
                "connection bound reached: refusing new connections with 503 (see --max-connections)"
            );
            self.since_warning = 0;
            self.warned = Some(Instant::now());
        }
    }
}

/// A failed accept: a connection reset before it was accepted is skipped; anything else (out
/// of descriptors, mostly) is logged and retried after a pause, as `axum::serve` does, rather
/// than spinning or stopping the server.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(e.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset) {
        return;
    }
    tracing::error!(target: "cis::api", error = %e, "accepting a connection failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
