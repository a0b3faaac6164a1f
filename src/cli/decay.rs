//! `cis monitor decay`.

use std::io::Write;
use std::process::ExitCode;

use cis_storage::Store;
use clap::Args;

#[derive(Args, Debug)]
pub struct DecayArgs {}

pub fn run(_store: &Store, _a: DecayArgs, _out: &mut impl Write) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
