use std::path::PathBuf;

/// Everything that can go wrong inside the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt store: {0}")]
    Corrupt(String),
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
    #[error("log verification failed at event sequence number {seq}: {reason}")]
    Verify { seq: u64, reason: String },
    #[error("invalid event: {0}")]
    InvalidEvent(String),
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> StorageError {
    let path = path.into();
    move |source| StorageError::Io { path, source }
}
