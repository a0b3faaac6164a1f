//! Immutable artifacts named by the hash of their content (snapshots, models, scores, …).
//!
//! The store knows an artifact's kind (a name), its schema version, its as-of time and its
//! parents (lineage); the body is opaque bytes the caller encoded canonically.
//!
//! Identity: `hash = blake3("cis-artifact-v1" ‖ u16 len ‖ kind ‖ u32 schema ‖ i64 as_of ‖
//! u32 n ‖ parents… ‖ u64 len ‖ body)`. `created_at` and `provenance` (free bytes, e.g. the
//! log prefix a snapshot was read from) are kept beside it, outside the hash: recreating
//! the same content later gives the same name and stores nothing new.
//!
//! Trees: `artifacts`: hash → versioned bincode [`StoredArtifact`] (see [`crate::format`]); `artifact_index`:
//! `u16 len ‖ kind ‖ sortable(as_of) ‖ hash` → nothing.

use std::ops::ControlFlow;

use serde::{Deserialize, Serialize};

use crate::envelope::sortable_i64;
use crate::error::{Result, StorageError};
use crate::format::{self, RecordKind};
use crate::kv::{Kv, TreeName};

pub type ArtifactHash = [u8; 32];

/// What a caller hands in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewArtifact {
    pub kind: String,
    pub schema: u32,
    pub as_of: i64,
    pub parents: Vec<ArtifactHash>,
    pub body: Vec<u8>,
    pub created_at: i64,
    pub provenance: Vec<u8>,
}

impl NewArtifact {
    pub fn hash(&self) -> ArtifactHash {
        content_hash(&self.kind, self.schema, self.as_of, &self.parents, &self.body)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredArtifact {
    pub hash: ArtifactHash,
    pub kind: String,
    pub schema: u32,
    pub as_of: i64,
    pub parents: Vec<ArtifactHash>,
    /// As bytes, not a sequence of u8: the same bincode encoding (a varint length, then the
    /// bytes), decoded by one copy instead of element by element (a snapshot's body is tens
    /// of MB).
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    pub created_at: i64,
    #[serde(with = "serde_bytes")]
    pub provenance: Vec<u8>,
}

impl StoredArtifact {
    /// The hash its content has now: differs from `hash` if the stored bytes were altered.
    pub fn recomputed_hash(&self) -> ArtifactHash {
        content_hash(&self.kind, self.schema, self.as_of, &self.parents, &self.body)
    }
}

pub fn content_hash(kind: &str, schema: u32, as_of: i64, parents: &[ArtifactHash], body: &[u8]) -> ArtifactHash {
    let mut h = blake3::Hasher::new();
    h.update(b"cis-artifact-v1");
    h.update(&(kind.len() as u16).to_be_bytes());
    h.update(kind.as_bytes());
    h.update(&schema.to_be_bytes());
    h.update(&as_of.to_be_bytes());
    h.update(&(parents.len() as u32).to_be_bytes());
    for p in parents {
        h.update(p);
    }
    h.update(&(body.len() as u64).to_be_bytes());
    h.update(body);
    *h.finalize().as_bytes()
}

/// What an erasure changed in a stored artifact (tree `journal/redactions`, key `hash ‖
/// be64(request)`, versioned bincode).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redaction {
    pub request: u64,
    /// The erased subjects whose rows were removed.
    pub subjects: Vec<String>,
    /// What the body hashes to (with the artifact's kind, schema, as-of and parents) after it.
    pub content_hash: ArtifactHash,
    /// When, µs since the epoch.
    pub at: i64,
}

pub(crate) const REDACTIONS: &str = "redactions";

/// Index entry without the body: what listings return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactRef {
    pub hash: ArtifactHash,
    pub kind: String,
    pub as_of: i64,
}

fn index_prefix(kind: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + kind.len() + 8 + 32);
    k.extend_from_slice(&(kind.len() as u16).to_be_bytes());
    k.extend_from_slice(kind.as_bytes());
    k
}

fn index_key(kind: &str, as_of: i64, hash: &ArtifactHash) -> Vec<u8> {
    let mut k = index_prefix(kind);
    k.extend_from_slice(&sortable_i64(as_of));
    k.extend_from_slice(hash);
    k
}

pub struct Artifacts<'a> {
    pub(crate) kv: &'a dyn Kv,
}

impl Artifacts<'_> {
    /// Stores the artifact unless identical content is already stored; returns its hash
    /// and whether it was new. Durable on return.
    pub fn put(&self, a: NewArtifact) -> Result<(ArtifactHash, bool)> {
        if a.kind.len() > u16::MAX as usize {
            return Err(StorageError::InvalidEvent("artifact kind name too long".into()));
        }
        let hash = a.hash();
        if self.kv.get(TreeName::Artifacts, &hash)?.is_some() {
            return Ok((hash, false));
        }
        let stored = StoredArtifact {
            hash,
            kind: a.kind,
            schema: a.schema,
            as_of: a.as_of,
            parents: a.parents,
            body: a.body,
            created_at: a.created_at,
            provenance: a.provenance,
        };
        let bytes = format::encode(RecordKind::Artifact, &stored)?;
        self.kv.insert(TreeName::Artifacts, &hash, &bytes)?;
        self.kv.insert(
            TreeName::ArtifactIndex,
            &index_key(&stored.kind, stored.as_of, &hash),
            &[],
        )?;
        self.kv.flush()?;
        Ok((hash, true))
    }

    pub fn get(&self, hash: &ArtifactHash) -> Result<Option<StoredArtifact>> {
        match self.kv.get(TreeName::Artifacts, hash)? {
            None => Ok(None),
            Some(bytes) => Ok(Some(format::decode(RecordKind::Artifact, &bytes)?)),
        }
    }

    /// Replaces a stored artifact's bytes (tests use it to simulate tampering; erasure uses it
    /// to remove a customer's rows). The index is unchanged.
    pub fn overwrite(&self, a: &StoredArtifact) -> Result<()> {
        let bytes = format::encode(RecordKind::Artifact, a)?;
        self.kv.insert(TreeName::Artifacts, &a.hash, &bytes)?;
        self.kv.flush()
    }

    /// Replaces the body of artifact `hash` because erasure requests removed subjects from it
    /// (`removed`: each request with the subjects it removed; several when a batch of requests
    /// is carried out together), and records that, one note per request: the artifact keeps
    /// its name, and [`Artifacts::redactions`] lets an audit tell this change (the content
    /// hashes to a recorded `content_hash`) from tampering (it does not). Durable on return.
    pub fn redact(&self, hash: &ArtifactHash, body: Vec<u8>, removed: &[(u64, Vec<String>)], at: i64) -> Result<()> {
        let mut a = self
            .get(hash)?
            .ok_or_else(|| StorageError::Corrupt(format!("redacting a missing artifact {}", crate::hex(hash))))?;
        a.body = body;
        let content_hash = a.recomputed_hash();
        for (request, subjects) in removed {
            let note = Redaction {
                request: *request,
                subjects: subjects.clone(),
                content_hash,
                at,
            };
            let mut key = hash.to_vec();
            key.extend_from_slice(&request.to_be_bytes());
            let note = format::encode(RecordKind::Redaction, &note)?;
            self.kv.insert(TreeName::Journal(REDACTIONS), &key, &note)?;
        }
        self.overwrite(&a)
    }

    /// The redactions of artifact `hash`, oldest request first.
    pub fn redactions(&self, hash: &ArtifactHash) -> Result<Vec<Redaction>> {
        let mut end = hash.to_vec();
        end.extend_from_slice(&[0xff; 9]);
        let mut out = Vec::new();
        self.kv
            .visit(TreeName::Journal(REDACTIONS), hash, Some(&end), &mut |_, v| {
                out.push(format::decode(RecordKind::Redaction, v)?);
                Ok(ControlFlow::Continue(()))
            })?;
        Ok(out)
    }

    /// Hashes starting with `prefix` (at most `limit`).
    pub fn find_prefix(&self, prefix: &[u8], limit: usize) -> Result<Vec<ArtifactHash>> {
        let mut out = Vec::new();
        self.kv.visit(TreeName::Artifacts, prefix, None, &mut |k, _| {
            if !k.starts_with(prefix) || out.len() == limit {
                return Ok(ControlFlow::Break(()));
            }
            let h: ArtifactHash = k.try_into().map_err(|_| StorageError::Corrupt("artifact key".into()))?;
            out.push(h);
            Ok(ControlFlow::Continue(()))
        })?;
        Ok(out)
    }

    /// Artifacts of `kind` with `as_of <= max_as_of`, oldest first.
    pub fn list(&self, kind: &str, max_as_of: i64) -> Result<Vec<ArtifactRef>> {
        let prefix = index_prefix(kind);
        let mut end = prefix.clone();
        end.extend_from_slice(&sortable_i64(max_as_of));
        end.extend_from_slice(&[0xff; 33]);
        let mut out = Vec::new();
        self.kv
            .visit(TreeName::ArtifactIndex, &prefix, Some(&end), &mut |k, _| {
                let rest = &k[prefix.len()..];
                let bad = || StorageError::Corrupt("artifact index key".into());
                let as_of =
                    crate::envelope::from_sortable_i64(rest.get(..8).and_then(|s| s.try_into().ok()).ok_or_else(bad)?);
                let hash: ArtifactHash = rest.get(8..40).and_then(|s| s.try_into().ok()).ok_or_else(bad)?;
                out.push(ArtifactRef {
                    hash,
                    kind: kind.to_string(),
                    as_of,
                });
                Ok(ControlFlow::Continue(()))
            })?;
        Ok(out)
    }

    /// The artifact of `kind` with the latest as-of not after `t` (ties: the last by hash).
    pub fn latest(&self, kind: &str, t: i64) -> Result<Option<ArtifactRef>> {
        Ok(self.list(kind, t)?.pop())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::MemKv;

    /// The record as stored before its bytes fields were marked `serde_bytes`.
    #[derive(Serialize)]
    struct AsSequences {
        hash: ArtifactHash,
        kind: String,
        schema: u32,
        as_of: i64,
        parents: Vec<ArtifactHash>,
        body: Vec<u8>,
        created_at: i64,
        provenance: Vec<u8>,
    }

    #[test]
    fn bytes_fields_encode_as_the_sequences_stored_before() {
        let body: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
        let a = StoredArtifact {
            hash: [7; 32],
            kind: "snapshot".into(),
            schema: 1,
            as_of: -5,
            parents: vec![[1; 32]],
            body: body.clone(),
            created_at: 9,
            provenance: b"cis 0.1".to_vec(),
        };
        let before = AsSequences {
            hash: a.hash,
            kind: a.kind.clone(),
            schema: a.schema,
            as_of: a.as_of,
            parents: a.parents.clone(),
            body,
            created_at: a.created_at,
            provenance: a.provenance.clone(),
        };
        let stored = format::encode(RecordKind::Artifact, &before).expect("encode");
        assert_eq!(format::encode(RecordKind::Artifact, &a).expect("encode"), stored);
        let read: StoredArtifact = format::decode(RecordKind::Artifact, &stored).expect("decode");
        assert_eq!(read, a);
    }

    fn art(kind: &str, as_of: i64, body: &[u8]) -> NewArtifact {
        NewArtifact {
            kind: kind.into(),
            schema: 1,
            as_of,
            parents: vec![],
            body: body.to_vec(),
            created_at: 0,
            provenance: vec![],
        }
    }

    #[test]
    fn put_is_idempotent_and_never_overwrites() {
        let kv = MemKv::default();
        let store = Artifacts { kv: &kv };
        let (h, new) = store.put(art("snapshot", 5, b"x")).expect("put");
        assert!(new);
        let mut again = art("snapshot", 5, b"x");
        again.created_at = 99;
        again.provenance = b"other".to_vec();
        assert_eq!(store.put(again).expect("put"), (h, false));
        let got = store.get(&h).expect("get").expect("stored");
        assert_eq!((got.created_at, got.recomputed_hash()), (0, h));
    }

    #[test]
    fn latest_of_kind_not_after_t() {
        let kv = MemKv::default();
        let store = Artifacts { kv: &kv };
        let (a, _) = store.put(art("snapshot", -10, b"a")).expect("put");
        let (b, _) = store.put(art("snapshot", 20, b"b")).expect("put");
        store.put(art("model", 15, b"m")).expect("put");
        assert_eq!(store.latest("snapshot", 19).expect("latest").map(|r| r.hash), Some(a));
        assert_eq!(store.latest("snapshot", 20).expect("latest").map(|r| r.hash), Some(b));
        assert_eq!(store.latest("snapshot", -11).expect("latest"), None);
        assert_eq!(store.list("snapshot", i64::MAX).expect("list").len(), 2);
        assert_eq!(store.find_prefix(&a[..3], 10).expect("prefix"), vec![a]);
    }

    #[test]
    fn every_identity_field_changes_the_hash() {
        let base = art("k", 1, b"body");
        let mut variants = vec![art("k2", 1, b"body"), art("k", 2, b"body"), art("k", 1, b"bodz")];
        let mut schema = base.clone();
        schema.schema = 2;
        variants.push(schema);
        let mut parent = base.clone();
        parent.parents.push([1; 32]);
        variants.push(parent);
        for v in variants {
            assert_ne!(v.hash(), base.hash(), "{v:?}");
        }
    }
}
