//! `cis demo`: the batch job end to end, then the API and dashboard.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;

use crate::demo::{self, DemoOptions};

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Size of the synthetic population.
    #[arg(long, default_value_t = 20_000)]
    pub customers: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// The CDNOW transaction log.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/CDNOW_sample.txt"))]
    pub cdnow: PathBuf,
    /// Stop after the batch job (do not serve).
    #[arg(long)]
    pub no_serve: bool,
    /// Where to serve the API and dashboard.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: String,
}

pub fn run(store_dir: &Path, a: DemoArgs, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    if !a.cdnow.is_file() {
        anyhow::bail!(
            "the CDNOW fixture {} is not there: pass --cdnow PATH",
            a.cdnow.display()
        );
    }
    let store = Arc::new(super::open_store(store_dir, super::SERVER)?);
    let opts = DemoOptions {
        customers: a.customers,
        seed: a.seed,
        cdnow: a.cdnow.clone(),
        progress: std::io::stderr().is_terminal(),
    };
    let started = std::time::Instant::now();
    let report = demo::run(&store, &store_dir.join("demo"), &opts)?;
    write!(out, "{}", report.summary())?;
    writeln!(
        out,
        "batch job done in {:.1}s on store {}",
        started.elapsed().as_secs_f64(),
        store_dir.display()
    )?;
    out.flush()?;
    if a.no_serve {
        return Ok(ExitCode::SUCCESS);
    }
    super::serve::serve_demo(store, &a.addr, out)
}
