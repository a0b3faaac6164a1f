//! `cis demo`: the demo's pipeline file run at its two cutoffs, then the API and dashboard.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;

use crate::demo::{self, DemoOptions};

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// The pipeline file the demo runs (copy it to start your own).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/demo/cis.toml"))]
    pub config: PathBuf,
    /// Size of the synthetic population (default: the file's `[synthetic] customers`).
    #[arg(long)]
    pub customers: Option<usize>,
    /// The synthetic population's seed (default: the file's `[synthetic] seed`).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Stop after the batch job (do not serve).
    #[arg(long)]
    pub no_serve: bool,
    /// Where to serve the API and dashboard.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: String,
}

pub fn run(store_dir: &Path, a: DemoArgs, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    if !a.config.is_file() {
        anyhow::bail!(
            "the demo's pipeline file {} is not there: pass --config PATH",
            a.config.display()
        );
    }
    let store = Arc::new(super::open_store(store_dir, super::SERVER)?);
    let opts = DemoOptions {
        config: a.config.clone(),
        customers: a.customers,
        seed: a.seed,
    };
    let started = std::time::Instant::now();
    let report = demo::run(&store, store_dir, &opts, out)?;
    write!(out, "{}", report.summary(&store)?)?;
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
