//! `cis access-log`: who read what through the API; `cis access-log verify`.

use std::io::Write;
use std::process::ExitCode;

use cis_storage::{hex, Store};
use clap::{Args, Subcommand};

use cis_core::time::{self, Micros};
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
    pub since: Option<Micros>,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum AccessLogCommand {
    /// Recompute the hash chain; exit 1 naming the first altered or missing record.
    Verify,
}

pub fn run(store: &Store, a: AccessLogArgs, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    if let Some(AccessLogCommand::Verify) = a.command {
        return match access_log::verify(store)? {
            Ok(r) => {
                writeln!(out, "access log verified: {} records, head {}", r.records, hex(&r.head))?;
                Ok(ExitCode::SUCCESS)
            }
            Err(broken) => {
                eprintln!("error: access log is broken: {broken}");
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
        for (seq, r) in &records {
            let mut v = serde_json::to_value(r)?;
            if let Some(m) = v.as_object_mut() {
                m.insert("seq".into(), (*seq).into());
            }
            writeln!(out, "{v}")?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    writeln!(out, "seq\tat\ttoken\tstatus\tendpoint\tcustomer\tas_of\tknown_at")?;
    for (seq, r) in &records {
        let endpoint = r.path.as_deref().unwrap_or(&r.endpoint);
        writeln!(
            out,
            "{seq}\t{}\t{}\t{}\t{endpoint}\t{}\t{}\t{}",
            time::format(r.at),
            dash(&r.token),
            r.status,
            dash(&r.customer),
            dash(&r.as_of),
            dash(&r.known_at)
        )?;
    }
    eprintln!("{} records", records.len());
    Ok(ExitCode::SUCCESS)
}
