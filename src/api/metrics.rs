//! Request counters and latency histograms, rendered in the Prometheus text format (0.0.4).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Instant;

use axum::http::Method;

/// Upper bounds of the latency histogram's buckets, in seconds.
pub const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug, Clone, Default)]
struct Series {
    count: u64,
    sum_seconds: f64,
    /// Non-cumulative counts per bucket; the last slot is above every bound.
    buckets: [u64; BUCKETS.len() + 1],
}

/// Route (the matched pattern, e.g. `/artifacts/{hash}`) → (method, status) → series.
type Table = HashMap<String, HashMap<(Method, u16), Series>>;

pub struct Metrics {
    table: Mutex<Table>,
    started: Instant,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            table: Mutex::new(HashMap::new()),
            started: Instant::now(),
        }
    }
}

/// A gauge rendered after the request series.
pub struct Gauge {
    pub name: &'static str,
    pub help: &'static str,
    pub value: f64,
}

fn escape(label: &str) -> String {
    label.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Metrics {
    pub fn observe(&self, route: &str, method: &Method, status: u16, seconds: f64) {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let by_status = match table.get_mut(route) {
            Some(m) => m,
            None => table.entry(route.to_string()).or_default(),
        };
        let s = by_status.entry((method.clone(), status)).or_default();
        s.count += 1;
        s.sum_seconds += seconds;
        let i = BUCKETS.iter().position(|&b| seconds <= b).unwrap_or(BUCKETS.len());
        s.buckets[i] += 1;
    }

    /// How many requests were counted for a route, all methods and statuses.
    pub fn count(&self, route: &str) -> u64 {
        let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        table.get(route).map_or(0, |m| m.values().map(|s| s.count).sum())
    }

    pub fn uptime_seconds(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// The whole exposition: request counters, latency histograms, then `gauges`.
    pub fn render(&self, gauges: &[Gauge]) -> String {
        let mut rows: Vec<(String, String, u16, Series)> = {
            let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
            table
                .iter()
                .flat_map(|(route, m)| {
                    m.iter()
                        .map(|((method, status), s)| (route.clone(), method.to_string(), *status, s.clone()))
                })
                .collect()
        };
        rows.sort_by(|a, b| (&a.0, &a.1, a.2).cmp(&(&b.0, &b.1, b.2)));
        let mut out = String::with_capacity(4096 + rows.len() * 2048);
        out.push_str("# HELP cis_http_requests_total HTTP requests answered, by route pattern, method and status.\n");
        out.push_str("# TYPE cis_http_requests_total counter\n");
        for (route, method, status, s) in &rows {
            let _ = writeln!(
                out,
                "cis_http_requests_total{{route=\"{}\",method=\"{}\",status=\"{status}\"}} {}",
                escape(route),
                escape(method),
                s.count
            );
        }
        out.push_str("# HELP cis_http_request_duration_seconds Time from receiving a request to its response head.\n");
        out.push_str("# TYPE cis_http_request_duration_seconds histogram\n");
        for (route, method, status, s) in &rows {
            let labels = format!(
                "route=\"{}\",method=\"{}\",status=\"{status}\"",
                escape(route),
                escape(method)
            );
            let mut cumulative = 0;
            for (bound, n) in BUCKETS.iter().zip(&s.buckets) {
                cumulative += n;
                let _ = writeln!(
                    out,
                    "cis_http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "cis_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                s.count
            );
            let _ = writeln!(
                out,
                "cis_http_request_duration_seconds_sum{{{labels}}} {}",
                s.sum_seconds
            );
            let _ = writeln!(out, "cis_http_request_duration_seconds_count{{{labels}}} {}", s.count);
        }
        for g in gauges {
            let _ = writeln!(
                out,
                "# HELP {} {}\n# TYPE {} gauge\n{} {}",
                g.name, g.help, g.name, g.name, g.value
            );
        }
        out
    }
}
