//! `cis erase` and `cis erasures`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use cis_storage::Store;
use clap::Args;

use cis_core::time;
use cis_ops::erasure::{self, ErasureRequest, Outcome};

#[derive(Args, Debug)]
pub struct EraseArgs {
    /// The customer whose data is erased.
    #[arg(long, required_unless_present = "customers", conflicts_with = "customers")]
    pub customer: Option<String>,
    /// A file of customers to erase, one id per line (blank lines and `#` comments skipped):
    /// each is its own request with the same reason, carried out together in this one process
    /// (each stored artifact is rewritten once for all of them), and the records database is
    /// rewritten once at the end instead of once per customer.
    #[arg(long, value_name = "FILE")]
    pub customers: Option<PathBuf>,
    /// Why: the data-subject request this answers (recorded with the erasure).
    #[arg(long)]
    pub reason: String,
    /// Who asks (recorded; default: $USER).
    #[arg(long)]
    pub by: Option<String>,
    /// Skip rewriting the records database (artifacts, journals, ledgers) afterwards. Without
    /// the rewrite, removed rows (scores, features, quarantined text) stay in superseded pages
    /// until sled reclaims them or a later `cis erase` does the rewrite, which stays owed. The
    /// log's database is never rewritten: its old pages hold only payloads sealed under the
    /// destroyed key.
    #[arg(long)]
    pub no_compact: bool,
}

/// What a batch of erasures came to: each request's outcome, and how many ids were unknown.
struct Erased {
    outcomes: Vec<Outcome>,
    unknown: usize,
    asked: usize,
}

/// Carries out the requests of `a` on `store`; the ids are read from `read_from` in place of
/// `--customers`' file when given (a server's copy of its client's file).
fn erase(store: &Store, a: &EraseArgs, read_from: Option<&Path>, err: &mut dyn Write) -> anyhow::Result<Erased> {
    let by =
        a.by.clone()
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "unknown".into());
    let customers = match (&a.customer, &a.customers) {
        (Some(c), _) => vec![c.clone()],
        (None, Some(file)) => read_customers(read_from.unwrap_or(file), file)?,
        (None, None) => anyhow::bail!("name the customer (--customer) or a file of them (--customers)"),
    };
    let mut outcomes = Vec::with_capacity(customers.len());
    let mut unknown = 0usize;
    for result in erasure::erase_all(store, &customers, &a.reason, &by, time::now())? {
        match result {
            Ok(outcome) => outcomes.push(outcome),
            // One unknown id in a batch of requests must not hold up the others.
            Err(e @ erasure::ErasureError::UnknownCustomer(_)) if customers.len() > 1 => {
                writeln!(err, "error: {e}")?;
                unknown += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Erased {
        outcomes,
        unknown,
        asked: customers.len(),
    })
}

/// `cis erase` on a store this process opened: the erasures, then, the store closed, the
/// rewrite of its records they owe.
pub fn run(
    store: Store,
    store_dir: &Path,
    a: EraseArgs,
    out: &mut impl Write,
    err: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let done = erase(&store, &a, None, err)?;
    drop(store);
    // Owed by these erasures, or by one a crash stopped before or during its rewrite.
    let compacted = Store::compaction_owed(store_dir) && !a.no_compact;
    if compacted {
        // The store is closed: rewrite its records so no superseded page keeps what was removed.
        let c = Store::compact(store_dir).context("rewriting the store's records after the erasure")?;
        tracing::info!(
            keys = c.keys,
            before = c.bytes_before,
            after = c.bytes_after,
            "records database rewritten"
        );
    }
    finish(done, compacted, out)
}

/// `cis erase` run by a server on the store it holds open: the records cannot be rewritten
/// while it serves, so the rewrite stays owed until it stops (`cis serve` does it then).
pub fn run_served(
    store: &Store,
    a: EraseArgs,
    read_from: Option<&Path>,
    out: &mut impl Write,
    err: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let done = erase(store, &a, read_from, err)?;
    let erased_any = done.outcomes.iter().any(|o| matches!(o, Outcome::Erased(_)));
    let code = finish(done, false, out)?;
    if erased_any && !a.no_compact {
        writeln!(
            out,
            "the records database is rewritten without superseded pages when the server stops"
        )?;
    }
    Ok(code)
}

fn finish(done: Erased, compacted: bool, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    for outcome in done.outcomes {
        report(outcome, compacted, out)?;
    }
    if done.unknown > 0 {
        writeln!(
            out,
            "{} of {} customers not found: nothing erased for them",
            done.unknown, done.asked
        )?;
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// The ids in a `--customers` file, read from `path` (which is `file`, or a copy of it).
fn read_customers(path: &Path, file: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", file.display()))?;
    let ids: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    if ids.is_empty() {
        anyhow::bail!("{}: no customer ids in it", file.display());
    }
    Ok(ids)
}

fn report(outcome: Outcome, compacted: bool, out: &mut impl Write) -> anyhow::Result<()> {
    match outcome {
        Outcome::AlreadyErased { customer, requests } => {
            let list: Vec<String> = requests.iter().map(u64::to_string).collect();
            writeln!(
                out,
                "customer '{customer}' was already erased (request {}): {}",
                list.join(", "),
                if compacted {
                    "records database rewritten, which an interrupted erasure still owed"
                } else {
                    "nothing to do"
                }
            )?;
        }
        Outcome::Erased(r) => {
            writeln!(
                out,
                "erasure request {}: {} events of customer '{}' erased (payloads replaced by tombstones, key destroyed)",
                r.request, r.events, r.customer
            )?;
            writeln!(
                out,
                "{} stored artifacts redacted, {} quarantined rows removed{}; `cis log verify` checks the log",
                r.artifacts.len(),
                r.quarantined_rows,
                if compacted {
                    ", records database rewritten without superseded pages"
                } else {
                    ""
                }
            )?;
        }
    }
    Ok(())
}

pub fn list(store: &Store, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let all = erasure::requests(store)?;
    for r in &all {
        writeln!(out, "{}", describe(r))?;
    }
    writeln!(out, "{} erasure request(s)", all.len())?;
    Ok(ExitCode::SUCCESS)
}

pub fn describe(r: &ErasureRequest) -> String {
    format!(
        "request {}  customer '{}'  {} events  by {} at {}  reason: {}  {}",
        r.request,
        r.customer,
        r.events,
        r.by,
        r.requested_at,
        r.reason,
        match &r.completed_at {
            Some(at) => format!(
                "completed {at} ({} artifacts redacted, {} quarantined rows removed)",
                r.artifacts.len(),
                r.quarantined_rows
            ),
            None => "UNFINISHED: run `cis erase` again to complete it".into(),
        }
    )
}
