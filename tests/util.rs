//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};

use cis::event::Kind;
use cis::ingest::records::IngestRun;
use cis::ingest::source::Format;
use cis::ingest::{ingest_file, IngestOptions, RecordedAt};
use cis_storage::Store;

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name)
}

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write test file");
    p
}

pub fn ingest(store: &Store, kind: Kind, format: Format, path: &Path, recorded_at: RecordedAt) -> IngestRun {
    let opts = IngestOptions {
        recorded_at,
        ..IngestOptions::new(kind, format)
    };
    ingest_file(store, path, &opts, &mut |_| {}).expect("ingest succeeds")
}

pub fn cis_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cis"))
}
