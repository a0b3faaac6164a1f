//! `cis access-log`: who read what through the API; `cis access-log verify`.

use std::io::Write;
use std::process::ExitCode;

use cis_storage::{hex, Store};
use clap::{Args, Subcommand};

use cis_core::time::Timestamp;
use cis_server::access_log::{self, Filter};

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AccessLogArgs {
    #[command(subcommand)]
    pub command: Option<AccessLogCommand>,
    /// Only reads of this customer id.
    #[arg(long)]
    pub customer: Option<String>,
    /// Only reads authorised by the token of this name.
    #[arg(long)]
    pub token: Option<String>,
    /// Only requests that arrived at or after this time (RFC 3339 or YYYY-MM-DD).
    #[arg(long, value_parser = super::parse_time)]
    pub since: Option<Timestamp>,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum AccessLogCommand {
    /// Recompute the hash chain; exit 1 naming the first altered or missing record.
    Verify,
}

pub fn run(store: &Store, a: AccessLogArgs, out: &mut impl Write, err: &mut dyn Write) -> anyhow::Result<ExitCode> {
    if let Some(AccessLogCommand::Verify) = a.command {
        return match access_log::verify(store)? {
            Ok(r) => {
                writeln!(out, "access log verified: {} records, head {}", r.records, hex(&r.head))?;
                Ok(ExitCode::SUCCESS)
            }
            Err(broken) => {
                writeln!(err, "error: access log is broken: {broken}")?;
                Ok(ExitCode::FAILURE)
            }
        };
    }
    let filter = Filter {
        customer: a.customer,
        token: a.token,
        since: a.since,
    };
    let records = access_log::list(store, &filter)?;
    if a.json {
        access_log::write_json(out, &records)?;
    } else {
        access_log::write_table(out, &records)?;
        writeln!(err, "{} records", records.len())?;
    }
    Ok(ExitCode::SUCCESS)
}
