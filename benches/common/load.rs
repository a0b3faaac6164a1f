//! The open-loop profile load generator, shared by `load` and `peer`: a server on loopback
//! over an [`AppState`], requests at a fixed rate over keep-alive connections.
//!
//! Open loop: each request has a scheduled send time and its latency is measured from
//! then, so a stalled server cannot hide queueing (no coordinated omission). Client and server
//! share the same cores, as wrk on the same machine would.
//!
//! Each connection is an OS thread that sleeps until its next request is due. Not a task on
//! tokio's timer: that wheel ticks once a millisecond, so a request due at t went out at the
//! next tick or later, and that wait (p50 1.0 ms, p99 2.8 ms, measured) counted as the
//! server's latency. How late the sends still are is reported beside the latencies ([`Run::lag`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use cis_server::api::{serve, AppState};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::io::{Read, Write};
use std::net::TcpStream;

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
fn get(conn: &mut TcpStream, path: &str, token: &str, buf: &mut Vec<u8>) -> std::io::Result<u16> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n\r\n");
    conn.write_all(req.as_bytes())?;
    buf.clear();
    let mut chunk = [0u8; 16 * 1024];
    let (head_end, length) = loop {
        let n = conn.read(&mut chunk)?;
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
        let n = conn.read(&mut chunk)?;
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
    /// How late each request was sent after it was due (ms, sorted): the client's share of
    /// [`Run::ms`], which the server cannot be blamed for and the generator should keep small.
    pub lag: Vec<f64>,
    pub statuses: Vec<u16>,
    pub rate: f64,
}

impl Run {
    pub fn pct(&self, p: f64) -> f64 {
        percentile(&self.ms, p)
    }

    /// The `p` quantile of the send lag.
    pub fn lag_pct(&self, p: f64) -> f64 {
        percentile(&self.lag, p)
    }

    /// Every request of `runs` as one run; its rate is the mean of theirs.
    pub fn merge(runs: &[Run]) -> Run {
        let sorted = |f: fn(&Run) -> &Vec<f64>| {
            let mut v: Vec<f64> = runs.iter().flat_map(|x| f(x).iter().copied()).collect();
            v.sort_by(f64::total_cmp);
            v
        };
        let statuses = runs.iter().flat_map(|x| x.statuses.iter().copied()).collect();
        let rate = runs.iter().map(|x| x.rate).sum::<f64>() / runs.len() as f64;
        Run {
            ms: sorted(|r| &r.ms),
            lag: sorted(|r| &r.lag),
            statuses,
            rate,
        }
    }

    /// How many responses had `status`.
    pub fn count(&self, status: u16) -> usize {
        self.statuses.iter().filter(|s| **s == status).count()
    }
}

/// The `p` quantile of sorted `v`.
fn percentile(v: &[f64], p: f64) -> f64 {
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
}

/// One connection's requests: latency from due time, send lag, status.
type Sent = Vec<(Duration, Duration, u16)>;

/// One open-loop run of `rps` requests per second for `seconds` against a fresh server on `state`.
pub fn load(state: AppState, token: &str, path: PathFn, rps: u64, seconds: u64) -> BenchResult<Run> {
    cis_server::api::warm(&state).map_err(|e| format!("warming the score cache: {e:?}"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = runtime.spawn(serve(listener, state, async {
        let _ = stopped.await;
    }));
    let start = Instant::now() + Duration::from_millis(200);
    let per_conn = rps as f64 / CONNECTIONS as f64;
    let total_per_conn = (per_conn * seconds as f64) as u64;
    let connection = |c: usize| -> std::io::Result<Sent> {
        let mut rng = ChaCha8Rng::seed_from_u64(c as u64);
        let mut conn = TcpStream::connect(addr)?;
        conn.set_nodelay(true)?;
        let (mut sent, mut buf) = (Vec::new(), Vec::new());
        for k in 0..total_per_conn {
            let due = start + Duration::from_secs_f64((k as f64 + c as f64 / CONNECTIONS as f64) / per_conn);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            let lag = due.elapsed();
            let status = get(&mut conn, &path(&mut rng), token, &mut buf)?;
            sent.push((due.elapsed(), lag, status));
        }
        Ok(sent)
    };
    let sent: Vec<Sent> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..CONNECTIONS).map(|c| scope.spawn(move || connection(c))).collect();
        threads
            .into_iter()
            .map(|t| {
                t.join()
                    .map_err(|_| std::io::Error::other("a client thread panicked"))?
            })
            .collect::<std::io::Result<_>>()
    })?;
    let elapsed = start.elapsed();
    let _ = stop.send(());
    runtime.block_on(server)??;
    let ms_of = |d: &Duration| d.as_secs_f64() * 1e3;
    let mut ms: Vec<f64> = sent.iter().flatten().map(|(l, ..)| ms_of(l)).collect();
    let mut lag: Vec<f64> = sent.iter().flatten().map(|(_, g, _)| ms_of(g)).collect();
    ms.sort_by(f64::total_cmp);
    lag.sort_by(f64::total_cmp);
    let statuses = sent.iter().flatten().map(|(.., s)| *s).collect();
    let rate = ms.len() as f64 / elapsed.as_secs_f64();
    Ok(Run {
        ms,
        lag,
        statuses,
        rate,
    })
}
