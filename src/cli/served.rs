//! What `cis serve` runs for `POST /admin/commands`: a client's command line, parsed by the same
//! [`Cli`] and run by the same [`super::on_store`] as directly, on the server's store.

use std::io::Write;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

use cis_server::jobs::{CommandFiles, Commands, Plan};
use cis_storage::Store;

use super::{erase, export, models, serve, snapshot, trainset, Cli, Command};

/// The command line's commands, for the server.
pub struct Served;

impl Commands for Served {
    fn plan(&self, args: &[String]) -> Result<Plan, String> {
        let (kind, cli) = parse(args)?;
        plan_of(kind, &cli.command)
    }

    fn run(
        &self,
        store: &Store,
        args: &[String],
        files: CommandFiles<'_>,
        mut out: &mut dyn Write,
        err: &mut dyn Write,
    ) -> Result<u8, String> {
        let (_, cli) = parse(args)?;
        // The error and its causes, as `cis` prints them after `error: `.
        let code = super::on_store(store, cli.command, files, &mut out, err).map_err(|e| super::message(&e))?;
        Ok(exit_code(code))
    }
}

/// The command line `args` (no program name) as `cis` parses it, and its command's name
/// (`snapshot create`, `erase`): a refusal is clap's own message, without colour.
fn parse(args: &[String]) -> Result<(String, Cli), String> {
    let argv = std::iter::once("cis").chain(args.iter().map(String::as_str));
    let matches = Cli::command()
        .color(clap::ColorChoice::Never)
        .try_get_matches_from(argv)
        .map_err(|e| e.render().to_string())?;
    let mut kind = Vec::new();
    let mut sub = matches.subcommand();
    while let Some((name, m)) = sub {
        kind.push(name.to_string());
        sub = m.subcommand();
    }
    let cli = Cli::from_arg_matches(&matches).map_err(|e| e.to_string())?;
    Ok((kind.join(" "), cli))
}

/// Which commands change the store (they are queued as jobs), and which files they read or
/// write. A command that needs no store, or has a route of its own, is refused.
fn plan_of(kind: String, command: &Command) -> Result<Plan, String> {
    let (mut writes, mut reads_file, mut writes_file) = (false, false, false);
    match command {
        Command::Ingest(_) => {
            return Err(format!(
                "`cis ingest` uploads its file to {}",
                cis_server::api::admin::INGEST_ROUTE
            ))
        }
        Command::Demo(_) | Command::Serve(_) | Command::Generate(_) | Command::Features(_) => {
            return Err(format!("`cis {kind}` does not run through a server"))
        }
        Command::Snapshot(snapshot::SnapshotCommand::Create { .. })
        | Command::Train(_)
        | Command::Score(_)
        | Command::Models(models::ModelsCommand::Promote { .. } | models::ModelsCommand::Retire { .. })
        | Command::Token(serve::TokenCommand::Create { .. } | serve::TokenCommand::Revoke { .. })
        // Drift and quality reports are stored; decay reads the score runs it is asked about.
        | Command::Monitor(_)
        | Command::Store(_) => writes = true,
        // Its body is the client's bundle: the pipeline file and the sources not yet ingested.
        Command::Pipeline(_) => {
            writes = true;
            reads_file = true;
        }
        Command::Erase(erase::EraseArgs { customers, .. }) => {
            writes = true;
            reads_file = customers.is_some();
        }
        Command::Snapshot(snapshot::SnapshotCommand::Export { .. })
        | Command::Trainset(trainset::TrainsetCommand::Export { .. })
        | Command::Export(export::ExportCommand::Scores { .. } | export::ExportCommand::Events { .. }) => {
            writes_file = true
        }
        Command::Events(_)
        | Command::Log(_)
        | Command::Quarantine(_)
        | Command::Runs
        | Command::Snapshot(_)
        | Command::Models(_)
        | Command::Scores(_)
        | Command::Audit { .. }
        | Command::Token(serve::TokenCommand::List)
        | Command::AccessLog(_)
        | Command::Erasures => {}
    }
    Ok(Plan {
        kind,
        writes,
        reads_file,
        writes_file,
    })
}

/// The number behind an [`ExitCode`] (it has no getter; cis's codes are small).
fn exit_code(code: ExitCode) -> u8 {
    (0..=u8::MAX).find(|n| ExitCode::from(*n) == code).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(line: &str) -> Result<Plan, String> {
        let args: Vec<String> = line.split_whitespace().map(String::from).collect();
        Served.plan(&args)
    }

    #[test]
    fn commands_are_sorted_into_jobs_and_reads_with_their_files() {
        let p = plan("erase --customers ids.txt --reason r").expect("erase");
        assert_eq!(
            (p.kind.as_str(), p.writes, p.reads_file, p.writes_file),
            ("erase", true, true, false)
        );
        let p = plan("snapshot export abc --out t.parquet").expect("export");
        assert_eq!(
            (p.kind.as_str(), p.writes, p.reads_file, p.writes_file),
            ("snapshot export", false, false, true)
        );
        let p = plan("models promote abc --stage production --reason r").expect("promote");
        assert!(p.writes && !p.writes_file);
        assert!(!plan("runs").expect("runs").writes);
        assert!(!plan("token list").expect("list").writes);
    }

    #[test]
    fn refusals_say_why() {
        assert!(plan("ingest orders x.csv")
            .expect_err("ingest")
            .contains("/admin/jobs/ingest"));
        assert!(plan("serve")
            .expect_err("serve")
            .contains("does not run through a server"));
        let e = plan("snapshot frobnicate").expect_err("unknown");
        assert!(e.contains("frobnicate"), "{e}");
    }

    #[test]
    fn exit_codes_round_trip() {
        for n in [0u8, 1, 3, 4, 255] {
            assert_eq!(exit_code(ExitCode::from(n)), n);
        }
    }
}
