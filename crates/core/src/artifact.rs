//! Naming and fetching stored artifacts of any kind (snapshots, models, scores, reports): what
//! every layer that reads an artifact by its hash, or by a prefix a person typed, shares.

use cis_storage::{hex, unhex, ArtifactHash, StorageError, Store, StoredArtifact};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArtifactError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("no artifact {0}")]
    NotFound(String),
    #[error("'{0}' names more than one artifact; give more hex digits")]
    Ambiguous(String),
    #[error("'{0}' is not a hash (hex, at least 8 digits)")]
    BadHash(String),
    #[error("artifact {hash} is a {kind}, not a {expected}")]
    WrongKind {
        hash: String,
        kind: String,
        expected: &'static str,
    },
}

/// The one artifact whose hash starts with `text` (8 to 64 hex digits, any case).
pub fn resolve(store: &Store, text: &str) -> Result<ArtifactHash, ArtifactError> {
    let bad = || ArtifactError::BadHash(text.to_string());
    if text.len() < 8 || text.len() > 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let even = &text[..text.len() / 2 * 2];
    let prefix = unhex(even).ok_or_else(bad)?;
    let matches: Vec<ArtifactHash> = store
        .artifacts()
        .find_prefix(&prefix, 64)?
        .into_iter()
        .filter(|h| hex(h).starts_with(&text.to_ascii_lowercase()))
        .collect();
    match matches.as_slice() {
        [one] => Ok(*one),
        [] => Err(ArtifactError::NotFound(text.to_string())),
        _ => Err(ArtifactError::Ambiguous(text.to_string())),
    }
}

/// The stored artifact `hash`, which must be of `kind`.
pub fn fetch(store: &Store, hash: &ArtifactHash, kind: &'static str) -> Result<StoredArtifact, ArtifactError> {
    let a = store
        .artifacts()
        .get(hash)?
        .ok_or_else(|| ArtifactError::NotFound(hex(hash)))?;
    if a.kind != kind {
        return Err(ArtifactError::WrongKind {
            hash: hex(hash),
            kind: a.kind,
            expected: kind,
        });
    }
    Ok(a)
}
