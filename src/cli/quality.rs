//! `cis monitor quality`.

use std::io::Write;
use std::process::ExitCode;

use cis_storage::Store;
use clap::Args;

#[derive(Args, Debug)]
pub struct QualityArgs {}

pub fn run(_store: &Store, _a: QualityArgs, _out: &mut impl Write) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
