//! One process per store: a command refused because another process holds the store says
//! which store, which process, and what to do — once, without sled's raw error.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use cis_storage::Store;

use crate::util::{cis, cis_bin};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_command_beside_a_running_server_names_the_store_the_pid_and_the_way_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store_dir = dir.path().join("store");
    let mut server = Command::new(cis_bin())
        .arg("--store")
        .arg(&store_dir)
        .args(["serve", "--addr", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start cis serve");
    // The server prints its address once it holds the store and listens.
    let mut line = String::new();
    BufReader::new(server.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read the server's first line");
    assert!(line.contains("listening on"), "{line}");

    // Every command goes through the server (tests/serve_admin.rs), with an admin token: one
    // without a token is told which store, which server, and how to get one.
    let out = cis(&store_dir, &["runs"]);
    // A server that no longer answers (its address file removed, as a hung or foreign holder
    // would leave it) cannot take the command: the store is busy, and what to do is said.
    std::fs::remove_file(store_dir.join("server.json")).expect("remove the address file");
    let busy_out = cis(&store_dir, &["runs"]);
    // A pipeline run beside a holder that does not answer as a server: refused alike (beside a
    // server it runs through it: tests/pipeline.rs).
    let config = dir.path().join("cis.toml");
    std::fs::write(&config, "cutoff = \"daily 00:00 UTC\"\n").expect("pipeline file");
    let pipeline = cis(
        &store_dir,
        &["pipeline", "run", "--config", &config.display().to_string()],
    );
    server.kill().expect("stop the server");
    server.wait().expect("reap the server");

    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let held = format!("store {} is held by the cis API server at http://", store_dir.display());
    assert!(
        err.contains(&held) && err.contains(&format!("(pid {})", server.id())),
        "{err}"
    );
    assert!(
        err.contains("CIS_TOKEN") && err.contains("--print-admin-token"),
        "{err}"
    );

    assert_eq!(busy_out.status.code(), Some(1));
    let err = stderr(&busy_out);
    let busy = format!(
        "store {} is busy: the cis API server (pid {}) holds it open",
        store_dir.display(),
        server.id()
    );
    assert!(err.contains(&busy), "{err}");
    assert!(
        err.contains("Ctrl-C") && err.contains(&format!("kill {}", server.id())),
        "{err}"
    );
    assert_eq!(err.matches("busy").count(), 1, "said once: {err}");
    assert_eq!(pipeline.status.code(), Some(1));
    assert!(stderr(&pipeline).contains(&busy), "{}", stderr(&pipeline));
    assert!(
        !err.contains("Os {") && !err.contains("sled"),
        "no raw sled error: {err}"
    );

    // With the server gone the same command works.
    let again = cis(&store_dir, &["runs"]);
    assert!(again.status.success(), "{}", stderr(&again));
}

#[test]
fn a_command_beside_another_command_is_told_to_wait() {
    let dir = tempfile::tempdir().expect("tempdir");
    let held = Store::open(dir.path()).expect("this process holds the store");
    let out = cis(dir.path(), &["log", "verify"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("another process (pid {})", std::process::id())),
        "{err}"
    );
    assert!(err.contains("wait for it to finish"), "{err}");
    drop(held);
    assert!(cis(dir.path(), &["log", "verify"]).status.success());
}
