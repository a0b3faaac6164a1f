//! Artifact bodies, kept apart from their records.
//!
//! On disk each body is a file of its own, `artifacts/<hex hash>`, written whole (a temporary
//! file, fsync, rename over, directory fsync), so a redaction replaces it in one step and
//! leaves no old copy in a file of the store. Why not sled: sled 0.34 keeps a large value as a
//! blob and, while it recovers its log on open, reads again every blob written since its last
//! snapshot of the page table, which a database of few writes (the records) almost never
//! takes: every command read every stored snapshot, twice. In memory the bodies are a tree of
//! the same `Kv`, so a simulated crash treats them as it treats the records that name them.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::artifacts::ArtifactHash;
use crate::error::{io_err, Result};
use crate::kv::{Kv, TreeName};

/// Where artifact bodies live; a body is durable when `put` returns.
pub trait Bodies: Send + Sync {
    /// Stores (or replaces, in one step) the body of artifact `hash`.
    fn put(&self, hash: &ArtifactHash, body: &[u8]) -> Result<()>;
    fn get(&self, hash: &ArtifactHash) -> Result<Option<Vec<u8>>>;
    fn size_on_disk(&self) -> Result<u64>;
}

/// One file per body in a directory.
pub struct FileBodies {
    dir: PathBuf,
}

/// The extension of a body being written.
const WRITING: &str = "writing";

impl FileBodies {
    /// Opens (creating) `dir`, removing any body a crash left half-written (never renamed into
    /// place, so no record names it yet).
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
            let path = entry.map_err(io_err(dir))?.path();
            if path.extension() == Some(std::ffi::OsStr::new(WRITING)) {
                tracing::warn!(file = %path.display(), "removing an artifact body a crash left half-written");
                std::fs::remove_file(&path).map_err(io_err(&path))?;
            }
        }
        Ok(FileBodies { dir: dir.to_path_buf() })
    }

    fn path(&self, hash: &ArtifactHash) -> PathBuf {
        self.dir.join(crate::hex(hash))
    }
}

impl Bodies for FileBodies {
    fn put(&self, hash: &ArtifactHash, body: &[u8]) -> Result<()> {
        let path = self.path(hash);
        let tmp = path.with_extension(WRITING);
        std::fs::File::create(&tmp)
            .and_then(|mut f| {
                f.write_all(body)?;
                f.sync_all()
            })
            .map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io_err(&tmp))?;
        crate::layout::sync_dir(&self.dir)
    }

    fn get(&self, hash: &ArtifactHash) -> Result<Option<Vec<u8>>> {
        let path = self.path(hash);
        match std::fs::read(&path) {
            Ok(body) => Ok(Some(body)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    fn size_on_disk(&self) -> Result<u64> {
        let mut total = 0;
        for entry in std::fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let entry = entry.map_err(io_err(&self.dir))?;
            total += entry.metadata().map_err(io_err(entry.path()))?.len();
        }
        Ok(total)
    }
}

/// Bodies in a tree of a `Kv`: the in-memory twin.
pub struct KvBodies {
    kv: std::sync::Arc<dyn Kv>,
}

impl KvBodies {
    pub fn new(kv: std::sync::Arc<dyn Kv>) -> Self {
        KvBodies { kv }
    }
}

impl Bodies for KvBodies {
    fn put(&self, hash: &ArtifactHash, body: &[u8]) -> Result<()> {
        self.kv.insert(TreeName::ArtifactBodies, hash, body)?;
        self.kv.flush()
    }

    fn get(&self, hash: &ArtifactHash) -> Result<Option<Vec<u8>>> {
        self.kv.get(TreeName::ArtifactBodies, hash)
    }

    fn size_on_disk(&self) -> Result<u64> {
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_is_replaced_whole_and_a_half_written_one_is_dropped_on_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bodies = FileBodies::open(dir.path()).expect("open");
        let hash = [3u8; 32];
        assert_eq!(bodies.get(&hash).expect("get"), None);
        bodies.put(&hash, b"first body").expect("put");
        bodies.put(&hash, b"second").expect("replace");
        assert_eq!(bodies.get(&hash).expect("get"), Some(b"second".to_vec()));
        assert_eq!(bodies.size_on_disk().expect("size"), 6);
        let half = dir.path().join(format!("{}.{WRITING}", crate::hex(&[4u8; 32])));
        std::fs::write(&half, b"torn").expect("write");
        let reopened = FileBodies::open(dir.path()).expect("reopen");
        assert!(!half.exists(), "the half-written body is removed");
        assert_eq!(reopened.get(&hash).expect("get"), Some(b"second".to_vec()));
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(
            names,
            [std::ffi::OsString::from(crate::hex(&hash))],
            "one file per body"
        );
    }
}
