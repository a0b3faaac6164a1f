//! `cis access-log`.

use std::io::Write;
use std::process::ExitCode;

use cis_storage::Store;
use clap::Args;

#[derive(Args, Debug)]
pub struct AccessLogArgs {}

pub fn run(_store: &Store, _a: AccessLogArgs, _out: &mut impl Write) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
