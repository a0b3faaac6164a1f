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
//! Trees: `artifacts`: hash → versioned bincode record (see [`crate::format`]): version 2 is
//! [`StoredArtifact`] without its body, which is kept apart (see [`crate::bodies`]); version 1
//! (written before) holds the body inline and is still read. `artifact_index`:
//! `u16 len ‖ kind ‖ sortable(as_of) ‖ hash` → nothing.

use std::ops::ControlFlow;

use serde::{Deserialize, Serialize};

use crate::bodies::Bodies;
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
    pub(crate) bodies: &'a dyn Bodies,
}

/// Version 2 of the artifact record: [`StoredArtifact`] but its body.
#[derive(Serialize, Deserialize)]
struct ArtifactRecord {
    hash: ArtifactHash,
    kind: String,
    schema: u32,
    as_of: i64,
    parents: Vec<ArtifactHash>,
    created_at: i64,
    #[serde(with = "serde_bytes")]
    provenance: Vec<u8>,
}

impl Artifacts<'_> {
    /// Stores the artifact unless identical content is already stored; returns its hash
    /// and whether it was new. Durable on return. The body is written first: a crash before
    /// the record leaves a body no record names, never a record without its body.
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
        self.write(&stored)?;
        self.kv.insert(
            TreeName::ArtifactIndex,
            &index_key(&stored.kind, stored.as_of, &hash),
            &[],
        )?;
        self.kv.flush()?;
        Ok((hash, true))
    }

    pub fn get(&self, hash: &ArtifactHash) -> Result<Option<StoredArtifact>> {
        let Some((mut a, inline)) = self.header(hash)? else {
            return Ok(None);
        };
        if !inline {
            a.body = self
                .bodies
                .get(hash)?
                .ok_or_else(|| StorageError::Corrupt(format!("artifact {}: its body is missing", crate::hex(hash))))?;
        }
        Ok(Some(a))
    }

    /// The stored record, and whether its body came with it (version 1); a version-2 record
    /// comes with an empty body, whose file is not read.
    fn header(&self, hash: &ArtifactHash) -> Result<Option<(StoredArtifact, bool)>> {
        let Some(bytes) = self.kv.get(TreeName::Artifacts, hash)? else {
            return Ok(None);
        };
        if format::version_of(RecordKind::Artifact, &bytes)? == 1 {
            return Ok(Some((format::decode_version(RecordKind::Artifact, 1, &bytes)?, true)));
        }
        let r: ArtifactRecord = format::decode(RecordKind::Artifact, &bytes)?;
        let a = StoredArtifact {
            hash: r.hash,
            kind: r.kind,
            schema: r.schema,
            as_of: r.as_of,
            parents: r.parents,
            body: Vec::new(),
            created_at: r.created_at,
            provenance: r.provenance,
        };
        Ok(Some((a, false)))
    }

    /// Replaces a stored artifact's bytes (tests use it to simulate tampering; erasure uses it
    /// to remove a customer's rows). The index is unchanged. A record of version 1 becomes one
    /// of version 2, so its inline body leaves the live tree.
    pub fn overwrite(&self, a: &StoredArtifact) -> Result<()> {
        self.write(a)?;
        self.kv.flush()
    }

    /// The body (durable), then the record (not flushed).
    fn write(&self, a: &StoredArtifact) -> Result<()> {
        self.bodies.put(&a.hash, &a.body)?;
        let record = ArtifactRecord {
            hash: a.hash,
            kind: a.kind.clone(),
            schema: a.schema,
            as_of: a.as_of,
            parents: a.parents.clone(),
            created_at: a.created_at,
            provenance: a.provenance.clone(),
        };
        self.kv.insert(
            TreeName::Artifacts,
            &a.hash,
            &format::encode(RecordKind::Artifact, &record)?,
        )
    }

    /// Replaces the body of artifact `hash` because erasure requests removed subjects from it
    /// (`removed`: each request with the subjects it removed; several when a batch of requests
    /// is carried out together), and records that, one note per request: the artifact keeps
    /// its name, and [`Artifacts::redactions`] lets an audit tell this change (the content
    /// hashes to a recorded `content_hash`) from tampering (it does not). Durable on return.
    pub fn redact(&self, hash: &ArtifactHash, body: Vec<u8>, removed: &[(u64, Vec<String>)], at: i64) -> Result<()> {
        // The record only: the old body is replaced whole, so its file need not be read.
        let (mut a, _) = self
            .header(hash)?
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
        // The notes are durable before the body changes (a body file is durable at once): a
        // redacted body without its note would read as tampering, and a resumed erasure would
        // find no row left to redact and never write it.
        self.kv.flush()?;
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

    /// bincode 2's standard encoding, what a record's body is.
    fn bincode<T: Serialize>(v: &T) -> Vec<u8> {
        bincode::serde::encode_to_vec(v, bincode::config::standard()).expect("encode")
    }

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
        assert_eq!(bincode(&a), bincode(&before));
        // A version-1 record (the body inline), as stores before version 2 hold them.
        let mut v1 = vec![0xff, 1];
        v1.extend(bincode(&before));
        let read: StoredArtifact = format::decode_version(RecordKind::Artifact, 1, &v1).expect("decode");
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
        let kv = std::sync::Arc::new(MemKv::default());
        let bodies = crate::bodies::KvBodies::new(kv.clone());
        let store = Artifacts {
            kv: kv.as_ref(),
            bodies: &bodies,
        };
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
        let kv = std::sync::Arc::new(MemKv::default());
        let bodies = crate::bodies::KvBodies::new(kv.clone());
        let store = Artifacts {
            kv: kv.as_ref(),
            bodies: &bodies,
        };
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
