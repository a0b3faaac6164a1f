use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

// glibc's allocator was a third of an ingest's profile (its arena locks contended between the
// parser thread and the appender); mimalloc keeps per-thread heaps. Without transparent huge
// pages (`no_thp`): a snapshot's scan frees and reallocates sled's page buffers all along,
// and mimalloc's purged 2 MB pages, faulted back in, had the kernel zero gigabytes: page
// clearing was 19 % of its profile (8 % without), and the peak RSS 40 MB higher.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cis::cli::Cli::parse();
    let default = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    match cis::cli::run(cli) {
        Ok(code) => code,
        // A closed pipe (`cis … | head`) is the reader's choice, not a failure.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}", cis::cli::message(&e));
            ExitCode::FAILURE
        }
    }
}
