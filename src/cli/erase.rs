//! `cis erase` and `cis erasures`.

use std::io::Write;
use std::process::ExitCode;

use cis_storage::Store;
use clap::Args;

#[derive(Args, Debug)]
pub struct EraseArgs {}

pub fn run(_store: &Store, _a: EraseArgs, _out: &mut impl Write) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}

pub fn list(_store: &Store, _out: &mut impl Write) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
