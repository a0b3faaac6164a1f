//! The open-loop profile load generator, shared by `load` and `peer`: a server on loopback
//! over an [`AppState`], requests at a fixed rate over keep-alive connections.
//!
//! Open loop: each request has a scheduled send time and its latency is measured from
//! then, so a stalled server cannot hide queueing (no coordinated omission). Client and server
//! share the same cores, as wrk on the same machine would.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cis_server::api::{serve, AppState};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::BenchResult;

pub const CONNECTIONS: usize = 32;

/// The path of the next request, drawn from the connection's own seeded generator.
pub type PathFn = Arc<dyn Fn(&mut ChaCha8Rng) -> String + Send + Sync>;

/// `name` parsed, or `default`.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Profiles of random synthetic customers (`c000001`…) at random as-of dates in the 180 days
/// from 2025-07-01: what `load` and `serve` ask the 100,000-customer store.
pub fn random_profiles(customers: usize) -> BenchResult<PathFn> {
    let first_day = cis_core::time::parse_timestamp("2025-07-01")?;
    Ok(Arc::new(move |rng| {
        let customer = rand::Rng::gen_range(rng, 1..=customers);
        let as_of = first_day + rand::Rng::gen_range(rng, 0..180) * cis_core::time::MICROS_PER_DAY;
        format!(
            "/customer/profile?customer_id=c{customer:06}&as_of={}",
            &cis_core::time::format(as_of)[..10]
        )
    }))
}

/// One HTTP/1.1 GET on a kept-alive connection; returns the status.
async fn get(conn: &mut TcpStream, path: &str, token: &str, buf: &mut Vec<u8>) -> std::io::Result<u16> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n\r\n");
    conn.write_all(req.as_bytes()).await?;
    buf.clear();
    let mut chunk = [0u8; 16 * 1024];
    let (head_end, length) = loop {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::other("connection closed"));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            break (end + 4, length);
        }
    };
    while buf.len() < head_end + length {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::other("connection closed mid-body"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let status = String::from_utf8_lossy(&buf[9..12.min(buf.len())]).parse().unwrap_or(0);
    Ok(status)
}

/// Latencies (ms, sorted), statuses and the achieved rate of one or more open-loop runs.
pub struct Run {
    pub ms: Vec<f64>,
    pub statuses: Vec<u16>,
    pub rate: f64,
}

impl Run {
    pub fn pct(&self, p: f64) -> f64 {
        self.ms[((self.ms.len() as f64 * p) as usize).min(self.ms.len() - 1)]
    }

    /// Every request of `runs` as one run; its rate is the mean of theirs.
    pub fn merge(runs: &[Run]) -> Run {
        let mut ms: Vec<f64> = runs.iter().flat_map(|x| x.ms.iter().copied()).collect();
        ms.sort_by(f64::total_cmp);
        let statuses = runs.iter().flat_map(|x| x.statuses.iter().copied()).collect();
        let rate = runs.iter().map(|x| x.rate).sum::<f64>() / runs.len() as f64;
        Run { ms, statuses, rate }
    }

    /// How many responses had `status`.
    pub fn count(&self, status: u16) -> usize {
        self.statuses.iter().filter(|s| **s == status).count()
    }
}

/// One open-loop run of `rps` requests per second for `seconds` against a fresh server on `state`.
pub fn load(state: AppState, token: &str, path: PathFn, rps: u64, seconds: u64) -> BenchResult<Run> {
    cis_server::api::warm(&state).map_err(|e| format!("warming the score cache: {e:?}"))?;
    let token = token.to_string();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let (latencies, statuses, elapsed) = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, state, async {
            let _ = stopped.await;
        }));
        let start = Instant::now() + Duration::from_millis(200);
        let per_conn = rps as f64 / CONNECTIONS as f64;
        let total_per_conn = (per_conn * seconds as f64) as u64;
        let mut tasks = Vec::new();
        for c in 0..CONNECTIONS {
            let (token, path) = (token.clone(), path.clone());
            tasks.push(tokio::spawn(async move {
                let mut rng = ChaCha8Rng::seed_from_u64(c as u64);
                let mut conn = TcpStream::connect(addr).await?;
                conn.set_nodelay(true)?;
                let (mut lat, mut st, mut buf) = (Vec::new(), Vec::new(), Vec::new());
                for k in 0..total_per_conn {
                    let due = start + Duration::from_secs_f64((k as f64 + c as f64 / CONNECTIONS as f64) / per_conn);
                    tokio::time::sleep_until(due.into()).await;
                    let status = get(&mut conn, &path(&mut rng), &token, &mut buf).await?;
                    lat.push(due.elapsed());
                    st.push(status);
                }
                Ok::<_, std::io::Error>((lat, st))
            }));
        }
        let (mut latencies, mut statuses) = (Vec::new(), Vec::new());
        for t in tasks {
            let (l, s) = t.await??;
            latencies.extend(l);
            statuses.extend(s);
        }
        let elapsed = start.elapsed();
        let _ = stop.send(());
        server.await??;
        Ok::<_, Box<dyn std::error::Error>>((latencies, statuses, elapsed))
    })?;
    let mut ms: Vec<f64> = latencies.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let rate = ms.len() as f64 / elapsed.as_secs_f64();
    Ok(Run { ms, statuses, rate })
}
