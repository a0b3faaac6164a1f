//! Commands beside a running `cis serve`: the server owns the store, so every command that
//! needs the store is sent to it (its `/admin` routes) with an admin token: `ingest` uploads its
//! files, `snapshot create` and `token create|revoke` have routes of their own, and every other
//! command line goes to `POST /admin/commands`, which runs it with the same code as directly.
//!
//! `cis serve` writes [`SERVER_FILE`] (address and pid) into the store directory once it
//! listens and removes it when it stops. A command first tries to open the store; only when the
//! store is held by the API server whose pid the file names, and that server answers, does the
//! command go through it. So a stale file (its server killed) is never followed: the store's
//! lock is free and the command opens the store itself.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::thread::sleep;
use std::time::Duration;

use anyhow::{bail, Context};
use cis_server::api::tokens::Scope;
use cis_server::jobs::{JobState, JobView, Outcome};
use cis_storage::{StorageError, Store};
use serde::{Deserialize, Serialize};

/// The address file's name inside the store directory.
pub const SERVER_FILE: &str = "server.json";
/// Where a token for the server can be had (said whenever one is missing or refused).
const GET_A_TOKEN: &str = "an admin token comes from `cis serve --print-admin-token` (printed once when the \
server starts) or from `cis token create --name NAME --scope admin` while the server is stopped";
/// How often a job is polled.
const POLL: Duration = Duration::from_millis(100);

/// What `server.json` holds.
#[derive(Debug, Serialize, Deserialize)]
pub struct ServerFile {
    pub addr: SocketAddr,
    pub pid: u32,
}

/// Removes the address file when the server stops (dropped after the accept loop ends).
pub struct ServerFileGuard(PathBuf);

impl Drop for ServerFileGuard {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0) {
            tracing::warn!(file = %self.0.display(), error = %e, "could not remove the server's address file");
        }
    }
}

impl ServerFile {
    /// Writes the file for this process listening on `addr` (a new file renamed over any
    /// stale one, so a reader never sees half of it).
    pub fn write(store_dir: &Path, addr: SocketAddr) -> anyhow::Result<ServerFileGuard> {
        let path = store_dir.join(SERVER_FILE);
        let body = serde_json::to_vec_pretty(&ServerFile {
            addr,
            pid: std::process::id(),
        })?;
        let mut tmp = tempfile::NamedTempFile::new_in(store_dir)?;
        tmp.write_all(&body)?;
        tmp.persist(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(ServerFileGuard(path))
    }

    fn read(store_dir: &Path) -> Option<ServerFile> {
        let bytes = std::fs::read(store_dir.join(SERVER_FILE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// Where a store-changing command runs.
pub enum Target {
    /// No server holds the store: this process opened it (boxed: a store is large).
    Direct(Box<Store>),
    Server(Remote),
}

/// Opens the store, or finds the running server that holds it. A store held by anything else
/// is refused as [`super::open_store`] refuses it.
pub fn open(store_dir: &Path, token_file: Option<&Path>) -> anyhow::Result<Target> {
    let busy = match Store::open_as(store_dir, super::COMMAND) {
        Ok(store) => return Ok(Target::Direct(Box::new(store))),
        Err(e) => e,
    };
    let StorageError::Busy {
        pid: Some(pid), holder, ..
    } = &busy
    else {
        return Err(super::explain(store_dir, busy));
    };
    let server = ServerFile::read(store_dir).filter(|f| f.pid == *pid && holder.as_deref() == Some(super::SERVER));
    let Some(server) = server else {
        return Err(super::explain(store_dir, busy));
    };
    let remote = Remote::new(server.addr);
    if !remote.healthy() {
        return Err(super::explain(store_dir, busy));
    }
    let Some(token) = admin_token(token_file)? else {
        bail!(
            "store {} is held by the cis API server at http://{} (pid {pid}); this command runs through it \
             and needs an admin token: set CIS_TOKEN or pass --token-file FILE ({GET_A_TOKEN})",
            store_dir.display(),
            server.addr
        );
    };
    Ok(Target::Server(Remote { token, ..remote }))
}

/// The admin token: the first line of `--token-file`, else `CIS_TOKEN`.
fn admin_token(token_file: Option<&Path>) -> anyhow::Result<Option<String>> {
    let text = match token_file {
        Some(f) => std::fs::read_to_string(f).with_context(|| format!("reading the token file {}", f.display()))?,
        None => std::env::var("CIS_TOKEN").unwrap_or_default(),
    };
    let token = text.lines().next().unwrap_or("").trim().to_string();
    Ok((!token.is_empty()).then_some(token))
}

/// A running server, and the token to use with it.
pub struct Remote {
    addr: SocketAddr,
    token: String,
    agent: ureq::Agent,
}

type Reply = ureq::http::Response<ureq::Body>;

impl Remote {
    fn new(addr: SocketAddr) -> Remote {
        let config = ureq::Agent::config_builder()
            // A 4xx is an answer to read (its JSON error), not a transport failure.
            .http_status_as_error(false)
            .build();
        Remote {
            addr,
            token: String::new(),
            agent: ureq::Agent::new_with_config(config),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn healthy(&self) -> bool {
        let reply = self
            .agent
            .get(self.url("/healthz"))
            .config()
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .call();
        reply.is_ok_and(|r| r.status().is_success())
    }

    fn auth(&self) -> String {
        format!("Bearer {}", self.token)
    }

    fn wrap(&self, r: Result<Reply, ureq::Error>) -> anyhow::Result<Reply> {
        r.with_context(|| format!("talking to the cis API server at http://{}", self.addr))
    }

    /// The JSON of a 2xx reply as `T`; anything else is an error saying what the server said.
    fn answer<T: serde::de::DeserializeOwned>(&self, mut reply: Reply) -> anyhow::Result<T> {
        let status = reply.status();
        let text = reply
            .body_mut()
            .read_to_string()
            .context("reading the server's answer")?;
        if status.is_success() {
            return serde_json::from_str(&text)
                .with_context(|| format!("the server's answer is not what cis expects: {text}"));
        }
        // A refused token command still says what `cis` would say: its outcome carries the error.
        if let Ok(Outcome { error: Some(e), .. }) = serde_json::from_str::<Outcome>(&text) {
            bail!("{e}");
        }
        let error = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or(text);
        // A 403 says itself which token is needed.
        let hint = match status.as_u16() {
            401 => format!(" ({GET_A_TOKEN})"),
            _ => String::new(),
        };
        bail!(
            "the cis API server at http://{} refused the request ({status}): {error}{hint}",
            self.addr
        )
    }

    /// `cis ingest` through the server: a file is uploaded as one ingest job; a directory's or a
    /// glob's files are each asked about first (`GET /admin/ingested`) and uploaded only when no
    /// completed run of the kind has that content, in name order, stopping at the first failure,
    /// with the lines and the summary `cis ingest` prints directly.
    pub fn ingest(&self, a: &super::IngestArgs, out: &mut impl Write) -> anyhow::Result<ExitCode> {
        let files = match cis_ingest::inputs(&a.file)? {
            cis_ingest::Inputs::File(f) => return self.ingest_file(a, &f, out),
            cis_ingest::Inputs::Many(files) => files,
        };
        // Content ingested by this command's own earlier files, as the server would count it.
        let mut done: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
        let (mut ingested, mut skipped, mut code) = (0, 0, ExitCode::SUCCESS);
        for (i, f) in files.iter().enumerate() {
            let hash = cis_ingest::file_hash(f)?;
            let earlier = match done.get(&hash) {
                Some(run) => Some(*run),
                None => self.ingested_as(a.kind, &hash)?,
            };
            if let Some(run) = earlier {
                writeln!(out, "skipped {}: already ingested as run {run}", f.display())?;
                skipped += 1;
                continue;
            }
            // Printed as it comes, and kept: its summary names the run, for a later copy.
            let mut tee = Tee {
                out: &mut *out,
                copy: Vec::new(),
            };
            let run_code = self.ingest_file(a, f, &mut tee).map_err(|e| {
                e.context(format!(
                    "{} of {} file(s) not ingested, from {} on",
                    files.len() - i,
                    files.len(),
                    f.display()
                ))
            })?;
            if run_code != ExitCode::SUCCESS {
                code = run_code;
            }
            if let Some(run) = ran(&tee.copy) {
                done.insert(hash, run);
            }
            ingested += 1;
        }
        writeln!(
            out,
            "{} file(s): {ingested} ingested, {skipped} skipped as already ingested",
            files.len()
        )?;
        Ok(code)
    }

    /// The completed ingest run of `kind` whose file had content `hash`, if the server has one.
    fn ingested_as(&self, kind: cis_core::event::Kind, hash: &str) -> anyhow::Result<Option<u64>> {
        let reply = self
            .agent
            .get(self.url("/admin/ingested"))
            .header("Authorization", self.auth())
            .query("kind", cis_core::Choice::choice_name(kind))
            .query("blake3", hash)
            .call();
        let answer: serde_json::Value = self.answer(self.wrap(reply)?)?;
        Ok(answer["run"].as_u64())
    }

    /// Uploads `file` as an ingest job and follows it, drawing the ingest bar from its progress.
    fn ingest_file(&self, a: &super::IngestArgs, file: &Path, out: &mut impl Write) -> anyhow::Result<ExitCode> {
        let (input, _) = cis_ingest::open_input(file)?;
        let mut req = self
            .agent
            .post(self.url(cis_server::api::admin::INGEST_ROUTE))
            .header("Authorization", self.auth())
            .query("kind", cis_core::Choice::choice_name(a.kind))
            .query("name", file.display().to_string())
            .query("recorded_at", &a.recorded_at)
            .query("batch_rows", a.batch_rows.to_string());
        if let Some(f) = a.format {
            req = req.query("format", cis_core::Choice::choice_name(f));
        }
        let job: JobView = self.answer(self.wrap(req.send(input))?)?;
        let bar = crate::progress::ingest_bar(std::io::stderr().is_terminal());
        // The bar takes increments: how far it was last drawn to.
        let mut drawn: Option<u64> = None;
        let code = self.follow(job, out, |view| {
            if let (Some(bar), Some(p)) = (&bar, view.progress) {
                let last = *drawn.get_or_insert_with(|| {
                    bar.start(p.total);
                    0
                });
                bar.advance(p.done.saturating_sub(last));
                drawn = Some(p.done);
            }
        });
        if let Some(bar) = bar {
            bar.finish();
        }
        code
    }

    /// Runs `command` through the server: what it prints, its exit code, and the file it
    /// writes (fetched from the job and written here, as directly: replaced atomically, nothing
    /// on an error).
    pub fn run(&self, command: super::Command, out: &mut impl Write) -> anyhow::Result<ExitCode> {
        use super::{snapshot::SnapshotCommand, Command};
        match &command {
            Command::Ingest(a) => return self.ingest(a, out),
            Command::Snapshot(SnapshotCommand::Create { as_of, known_at }) => {
                return self.snapshot(cis_core::AsOf::new(Some(*as_of), *known_at), out)
            }
            Command::Token(cmd) => {
                if let Some(done) = super::serve::token_remote(self, cmd, out) {
                    return done;
                }
            }
            _ => {}
        }
        let mut args = command_line();
        let (input, output) = client_files(&command);
        if let super::Command::Erase(super::erase::EraseArgs { by: None, .. }) = &command {
            // The request records who asked: this user, not the server's.
            if let Ok(user) = std::env::var("USER") {
                args.extend(["--by".to_string(), user]);
            }
        }
        if let Some((path, shape)) = output {
            // Checked here, where the output will be, before the server does the work.
            let dir = parent_dir(path);
            match shape {
                Shape::File if path.is_dir() || !dir.is_dir() => {
                    bail!("cannot write {}: not a file in an existing directory", path.display())
                }
                Shape::Directory if path.exists() => bail!(
                    "cannot export to {}: it exists already (an events export goes to a new directory)",
                    path.display()
                ),
                Shape::Directory if !dir.is_dir() => {
                    bail!("cannot write {}: {} is not a directory", path.display(), dir.display())
                }
                _ => {}
            }
        }
        let body = match input {
            Some(f) => std::fs::read(f).with_context(|| format!("reading {}", f.display()))?,
            None => Vec::new(),
        };
        let mut req = self
            .agent
            .post(self.url(cis_server::api::admin::COMMANDS_ROUTE))
            .header("Authorization", self.auth());
        for a in &args {
            req = req.query("arg", a);
        }
        let job: JobView = self.answer(self.wrap(req.send(&body[..]))?)?;
        let id = job.id;
        let code = self.follow(job, out, |_| ())?;
        if let (Some((path, _)), true) = (output, code == ExitCode::SUCCESS) {
            let reply = self
                .agent
                .get(self.url(&format!("/admin/jobs/{id}/output")))
                .header("Authorization", self.auth())
                .call();
            let mut reply = self.wrap(reply)?;
            if !reply.status().is_success() {
                return self.answer::<serde_json::Value>(reply).map(|_| ExitCode::FAILURE);
            }
            let shape = reply
                .headers()
                .get(cis_server::api::admin::OUTPUT_SHAPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("file")
                .to_string();
            let body = &mut reply.body_mut().as_reader();
            match shape.as_str() {
                "directory" => unpack(path, body)?,
                _ => save(path, body)?,
            }
        }
        Ok(code)
    }

    /// `cis pipeline run` through the server: the pipeline file and each source file the server
    /// has not ingested go up as one tar ([`super::pipeline::Bundle`]); the server runs the steps
    /// on its store, and what it prints is printed here.
    pub fn pipeline(
        &self,
        config: &Path,
        p: &super::pipeline::Pipeline,
        out: &mut impl Write,
    ) -> anyhow::Result<ExitCode> {
        use super::pipeline::{Bundle, BundleFile};
        let config_text = std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
        let packed = tempfile::tempfile().context("a temporary file for the pipeline bundle")?;
        let mut tar = tar::Builder::new(packed);
        let mut files = Vec::new();
        for (source, (kind, paths)) in super::pipeline::source_files(p)?.into_iter().enumerate() {
            for path in paths {
                let blake3 = cis_ingest::file_hash(&path)?;
                let member = match self.ingested_as(kind, &blake3)? {
                    Some(_) => None,
                    None => {
                        let member = format!("files/{}", files.len());
                        tar.append_path_with_name(&path, &member)
                            .with_context(|| format!("reading {}", path.display()))?;
                        Some(member)
                    }
                };
                files.push(BundleFile {
                    source,
                    name: path.display().to_string(),
                    blake3,
                    member,
                });
            }
        }
        let bundle = serde_json::to_vec(&Bundle {
            config_file: config.display().to_string(),
            config_text,
            files,
        })?;
        let mut header = tar::Header::new_gnu();
        header.set_size(bundle.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, Bundle::NAME, &bundle[..])?;
        let mut body = tar.into_inner()?;
        std::io::Seek::rewind(&mut body)?;
        let mut req = self
            .agent
            .post(self.url(cis_server::api::admin::COMMANDS_ROUTE))
            .header("Authorization", self.auth());
        for a in command_line() {
            req = req.query("arg", a);
        }
        let job: JobView = self.answer(self.wrap(req.send(body))?)?;
        self.follow(job, out, |_| ())
    }

    /// Queues a snapshot job and follows it.
    pub fn snapshot(&self, at: cis_core::AsOf, out: &mut impl Write) -> anyhow::Result<ExitCode> {
        let bar = super::snapshot::spinner("materialising features (on the server)");
        let req = self
            .agent
            .post(self.url("/admin/jobs/snapshot"))
            .header("Authorization", self.auth())
            .query("as_of", cis_core::time::format(at.as_of))
            .query("known_at", cis_core::time::format(at.known_at));
        let job: JobView = self.answer(self.wrap(req.send_empty())?)?;
        let code = self.follow(job, out, |_| ());
        bar.finish_and_clear();
        code
    }

    /// Polls the job until it ends, printing its output as it grows; its exit code, or its
    /// error as this command's error (as direct mode would fail).
    fn follow(
        &self,
        mut job: JobView,
        out: &mut impl Write,
        mut progress: impl FnMut(&JobView),
    ) -> anyhow::Result<ExitCode> {
        let (mut printed_out, mut printed_err) = (0, 0);
        loop {
            progress(&job);
            print_new(out, &job.outcome.stdout, &mut printed_out)?;
            print_new(&mut std::io::stderr(), &job.outcome.stderr, &mut printed_err)?;
            if matches!(job.state, JobState::Done | JobState::Failed) {
                break;
            }
            sleep(POLL);
            let reply = self
                .agent
                .get(self.url(&format!("/admin/jobs/{}", job.id)))
                .header("Authorization", self.auth())
                .call();
            job = self.answer(self.wrap(reply)?)?;
        }
        if let Some(e) = job.outcome.error {
            bail!("{e}");
        }
        Ok(ExitCode::from(job.outcome.exit_code.unwrap_or(0)))
    }

    /// `cis token create` through the server.
    pub fn token_create(&self, name: &str, scope: Scope, out: &mut impl Write) -> anyhow::Result<ExitCode> {
        let req = self
            .agent
            .post(self.url("/admin/tokens"))
            .header("Authorization", self.auth())
            .query("name", name)
            .query("scope", cis_core::Choice::choice_name(scope));
        let outcome: Outcome = self.answer(self.wrap(req.send_empty())?)?;
        print_outcome(outcome, out)
    }

    /// `cis token revoke` through the server.
    pub fn token_revoke(&self, name: &str, out: &mut impl Write) -> anyhow::Result<ExitCode> {
        let path = format!("/admin/tokens/{}", percent_encode(name));
        let req = self.agent.delete(self.url(&path)).header("Authorization", self.auth());
        let outcome: Outcome = self.answer(self.wrap(req.call())?)?;
        print_outcome(outcome, out)
    }
}

/// This process's command line without the program's name and without the flags that name
/// this side's store and token file, which the server has no use for.
fn command_line() -> Vec<String> {
    let mut args = std::env::args().skip(1);
    let mut kept = Vec::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--store" | "--token-file" => {
                args.next();
            }
            _ if a.starts_with("--store=") || a.starts_with("--token-file=") => {}
            _ => kept.push(a),
        }
    }
    kept
}

/// Writes to `out` and keeps a copy.
struct Tee<'a, W: Write> {
    out: &'a mut W,
    copy: Vec<u8>,
}

impl<W: Write> Write for Tee<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        self.copy.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// The run an ingest's output names (`ingest run N: …`).
fn ran(text: &[u8]) -> Option<u64> {
    let text = String::from_utf8_lossy(text);
    let line = text.lines().find(|l| l.starts_with("ingest run "))?;
    line["ingest run ".len()..].split(':').next()?.parse().ok()
}

/// The directory a file named `path` is in.
fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Writes what `from` gives to `path` as a direct export does: a new file beside it (created
/// with the user's umask), synced, then renamed over `path`; on an error `path` is untouched.
fn save(path: &Path, from: &mut impl std::io::Read) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = parent_dir(path).join(format!(".{name}.cis-fetch.{}", std::process::id()));
    let written = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        std::io::copy(from, &mut file)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        // Nothing half-written stays behind.
        let _ = std::fs::remove_file(&tmp);
        return Err(anyhow::Error::new(e).context(format!("writing {} from the server's job", path.display())));
    }
    Ok(())
}

/// What a command writes: a file, or a directory (an events export).
#[derive(Clone, Copy)]
enum Shape {
    File,
    Directory,
}

/// The file `command` reads (sent as the request's body) and what it writes (fetched from the
/// job), as its arguments name them here.
fn client_files(command: &super::Command) -> (Option<&Path>, Option<(&Path, Shape)>) {
    use super::{export::ExportCommand, snapshot::SnapshotCommand, trainset::TrainsetCommand, Command};
    match command {
        Command::Erase(a) => (a.customers.as_deref(), None),
        Command::Snapshot(SnapshotCommand::Export { out, .. })
        | Command::Trainset(TrainsetCommand::Export { out, .. })
        | Command::Export(ExportCommand::Scores { out, .. }) => (None, Some((out, Shape::File))),
        Command::Export(ExportCommand::Events { out, .. }) => (None, Some((out, Shape::Directory))),
        _ => (None, None),
    }
}

/// Unpacks the tar `from` gives into a new directory `path`, as an events export makes one: a
/// directory beside it, renamed to `path` once whole (tar refuses entries that would land
/// outside it); on an error nothing is left.
fn unpack(path: &Path, from: &mut impl std::io::Read) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = parent_dir(path).join(format!(".{name}.cis-fetch.{}", std::process::id()));
    let unpacked = tar::Archive::new(from)
        .unpack(&tmp)
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = unpacked {
        // Nothing half-written stays behind.
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(anyhow::Error::new(e).context(format!("writing {} from the server's job", path.display())));
    }
    Ok(())
}

/// Prints what `text` holds past `printed` bytes.
fn print_new(w: &mut impl Write, text: &str, printed: &mut usize) -> std::io::Result<()> {
    if let Some(new) = text.get(*printed..).filter(|s| !s.is_empty()) {
        w.write_all(new.as_bytes())?;
        w.flush()?;
        *printed = text.len();
    }
    Ok(())
}

fn print_outcome(o: Outcome, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    eprint!("{}", o.stderr);
    out.write_all(o.stdout.as_bytes())?;
    if let Some(e) = o.error {
        bail!("{e}");
    }
    Ok(ExitCode::from(o.exit_code.unwrap_or(0)))
}

/// A path segment: anything but unreserved characters as %XX (token names are plain, but a
/// name the server would refuse must reach it intact to be refused by name).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
