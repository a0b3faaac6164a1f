use std::path::PathBuf;

/// Everything that can go wrong inside the storage layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// No `#[source]`: sled's message already holds its cause's text, and a chain printer would
    /// print it twice.
    #[error("sled: {0}")]
    Sled(sled::Error),
    /// Another process has the store open (one process per store: see `lock`).
    #[error("store {} is busy: {} holds it open", dir.display(), holder_text(pid, holder))]
    Busy {
        dir: PathBuf,
        pid: Option<u32>,
        holder: Option<String>,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// A thread panicked while holding one of the store's locks (`what` names it): the state it
    /// guarded may be half-updated, so this process stops using it. The files are not damaged.
    #[error("{what}: a lock was poisoned by a panicking thread")]
    Poisoned { what: &'static str },
    #[error("encoding: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    #[error("decoding: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    #[error("no encryption key for a customer whose events are not erased (handle {0})")]
    MissingKey(String),
    #[error("os random source: {0}")]
    Random(String),
    #[error("store format version {found} is not supported (this build reads {supported})")]
    Version { found: u32, supported: u32 },
    /// A stored record of kind `record` carries a version this build cannot read (written by a
    /// newer build, or damaged): refused rather than decoded with the wrong layout.
    #[error("{record} version {found} is not supported (this build reads version {supported})")]
    RecordVersion {
        record: &'static str,
        found: u8,
        supported: u8,
    },
    #[error("log verification failed at event sequence number {seq}: {reason}")]
    Verify { seq: u64, reason: String },
    #[error("invalid event: {0}")]
    InvalidEvent(String),
    /// The in-memory twin was told to fail from this write on (`MemKv::fail_writes_after`).
    #[error("simulated crash at write {write} of the in-memory store")]
    SimulatedCrash { write: u64 },
}

impl From<sled::Error> for StorageError {
    fn from(e: sled::Error) -> Self {
        StorageError::Sled(e)
    }
}

fn holder_text(pid: &Option<u32>, holder: &Option<String>) -> String {
    let who = holder.as_deref().filter(|h| !h.is_empty()).unwrap_or("another process");
    match pid {
        Some(pid) => format!("{who} (pid {pid})"),
        None => who.to_string(),
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> StorageError {
    let path = path.into();
    move |source| StorageError::Io { path, source }
}
