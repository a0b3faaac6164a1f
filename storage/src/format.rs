//! The store format, the versioned bincode records, and the migration from format 1.
//!
//! Every bincode record the store keeps (a batch's commit record, an artifact, a redaction
//! note) is stored as `TAG ‖ version u8 ‖ bincode standard(body)`: each kind of record has its
//! own version, so a later change of its fields is read by the version it was written with
//! (migrated) instead of being misread as the new layout, and a record written by a newer
//! build is refused by name. Format 1 stored the bincode bodies bare (they are the bodies of
//! version 1 of each record); opening such a store rewrites them once (see [`ensure`]).
//! Format 3 adds the `block_ids` tree (the duplicate check's index, see `log`); opening a
//! format-1 or -2 store builds it from the blocks. Format 4 keeps the records' trees
//! (artifacts, journals, ledgers) in a database of their own; the split is made on the
//! directory before the store is opened (see `layout`), so at this level it changes nothing
//! but the number, which keeps builds that know one database out. Format 6 keeps the blocks
//! in the value log (`vlog`) and reads inline ones too, and format 7 writes blocks in the
//! compact block format (`block`, format 3) and the ids of `chain` to the value
//! log too, and format 8 writes block format 4 (a directory of the customers' runs); each
//! reads the older kinds as they are: again only the number changes.

use std::ops::ControlFlow;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Result, StorageError};
use crate::kv::{Kv, TreeName};

/// The store format this build writes.
pub(crate) const STORE_FORMAT: u32 = 9;
/// The format whose bincode records carry no version, migrated on open.
const UNVERSIONED: u32 = 1;
/// The format without `block_ids`, migrated on open.
const UNINDEXED: u32 = 2;
/// The last format with one `chain` value per batch: format 5 splits a batch's ids into chunks,
/// and a format-4 store's values read as one-chunk batches, so only the number changes. (Format
/// 3, one database, is split by `layout` before this runs, then renumbered the same way.) Only
/// the tests name it now: every format from 3 on is renumbered alike.
#[cfg(test)]
const UNCHUNKED: u32 = 4;
/// The last format whose `blocks` values are all inline: format 6 stores a pointer into the
/// value log instead (see `vlog`) and reads a format-5 store's inline blocks as they are (they
/// become pointers when next rewritten), so only the number changes; it keeps format-5 builds,
/// which would misread a pointer as a block, out.
#[cfg(test)]
const INLINE_BLOCKS: u32 = 5;
/// The last format whose blocks are all fixed-width (block formats 1 and 2) and whose
/// `chain` values are inline: format 7 writes the compact block format 3 and
/// those values to the value log, and reads the others as they are, so only the number
/// changes; it keeps format-6 builds, which would refuse a format-3 block as corrupt and
/// misread a pointer as ids, out.
#[cfg(test)]
const FIXED_WIDTH_BLOCKS: u32 = 6;
/// The last format without block directories: format 8 writes block format 4, whose
/// directory lets a reader of one customer read that customer's run alone, and reads blocks
/// of formats 1 to 3 as they are, so only the number changes; it keeps format-7 builds, which
/// would refuse a format-4 block as corrupt, out.
#[cfg(test)]
const UNDIRECTED_BLOCKS: u32 = 7;
/// The last format whose `chain` values are ids and whose blocks are of block format 4 at
/// most: format 9 stores each event's position in block order instead (see `log::chain`),
/// telling the two apart by length, writes block format 5 (payloads without what the record
/// says) and `block_ids` entries of 8-byte prefixes, and reads the older forms as they are, so
/// only the number changes; it keeps format-8 builds, which would refuse or misread them, out.
const CHAINED_IDS: u32 = 8;

/// First byte of a versioned record. A format-1 batch record or redaction note never starts
/// with it: both begin with a u64 in bincode's varint encoding, whose first byte is at most 253.
const TAG: u8 = 0xff;

const FORMAT_KEY: &[u8] = b"format";
/// The version of every record kind in format 1, where the bodies were stored bare.
const FORMAT_1_VERSION: u8 = 1;
/// Meta key present while a migration is under way (the store is already marked with the
/// new format, so an older build refuses it rather than reading a half-migrated store). Its
/// value is the format migrated from (u32); empty when written by a format-3 build, which
/// migrated from format 1 or 2 and so redoes every step.
const UPGRADING_KEY: &[u8] = b"upgrading";

/// The kinds of bincode record, each versioned on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecordKind {
    Batch,
    Artifact,
    Redaction,
}

impl RecordKind {
    const ALL: [RecordKind; 3] = [RecordKind::Batch, RecordKind::Artifact, RecordKind::Redaction];

    pub(crate) fn name(self) -> &'static str {
        match self {
            RecordKind::Batch => "batch record",
            RecordKind::Artifact => "artifact record",
            RecordKind::Redaction => "redaction note",
        }
    }

    /// The version this build writes. Raising one means keeping the old body type and
    /// converting it in [`decode`], which then reads both versions.
    fn version(self) -> u8 {
        match self {
            RecordKind::Batch | RecordKind::Redaction => 1,
            // 2: the body is a file of its own (see `bodies`); version 1 holds it inline.
            RecordKind::Artifact => 2,
        }
    }

    fn tree(self) -> TreeName {
        match self {
            RecordKind::Batch => TreeName::Batches,
            RecordKind::Artifact => TreeName::Artifacts,
            RecordKind::Redaction => TreeName::Journal(crate::artifacts::REDACTIONS),
        }
    }

    /// Whether `value` (stored under `key`) is a bare format-1 record. An artifact's record
    /// began with its own hash, which is its key; a versioned one does not (its first 32 bytes
    /// would have to be a preimage of the hash they spell).
    fn is_unversioned(self, key: &[u8], value: &[u8]) -> bool {
        match self {
            RecordKind::Artifact => value.starts_with(key),
            RecordKind::Batch | RecordKind::Redaction => value.first() != Some(&TAG),
        }
    }
}

/// `TAG ‖ version ‖ bincode standard(value)`, at the version this build writes.
pub(crate) fn encode<T: Serialize>(kind: RecordKind, value: &T) -> Result<Vec<u8>> {
    let mut out = vec![TAG, kind.version()];
    bincode::serde::encode_into_std_write(value, &mut out, bincode::config::standard())?;
    Ok(out)
}

/// Decodes a versioned record of `kind` at the version this build writes: any other version
/// is [`StorageError::RecordVersion`], never a guess at its layout.
pub(crate) fn decode<T: DeserializeOwned>(kind: RecordKind, bytes: &[u8]) -> Result<T> {
    decode_version(kind, kind.version(), bytes)
}

/// Decodes a versioned record of `kind` written at `version` (a reader of several versions
/// asks [`version_of`] first).
pub(crate) fn decode_version<T: DeserializeOwned>(kind: RecordKind, version: u8, bytes: &[u8]) -> Result<T> {
    let found = version_of(kind, bytes)?;
    if found != version {
        return Err(StorageError::RecordVersion {
            record: kind.name(),
            found,
            supported: kind.version(),
        });
    }
    decode_body(kind, &bytes[2..])
}

/// The version a record of `kind` was written at; one newer than this build writes is
/// [`StorageError::RecordVersion`].
pub(crate) fn version_of(kind: RecordKind, bytes: &[u8]) -> Result<u8> {
    let [TAG, version, ..] = bytes else {
        return Err(StorageError::Corrupt(format!(
            "{}: not a versioned record",
            kind.name()
        )));
    };
    if *version == 0 || *version > kind.version() {
        return Err(StorageError::RecordVersion {
            record: kind.name(),
            found: *version,
            supported: kind.version(),
        });
    }
    Ok(*version)
}

fn decode_body<T: DeserializeOwned>(kind: RecordKind, body: &[u8]) -> Result<T> {
    let (value, used) = bincode::serde::decode_from_slice(body, bincode::config::standard())?;
    if used != body.len() {
        return Err(StorageError::Corrupt(format!("{}: trailing bytes", kind.name())));
    }
    Ok(value)
}

/// Checks the store format on open: marks a new store, refuses an unknown format, and
/// migrates a format-1 store (or finishes a migration a crash interrupted).
pub(crate) fn ensure(kv: &dyn Kv) -> Result<()> {
    let found = match kv.get(TreeName::Meta, FORMAT_KEY)? {
        None => {
            kv.insert(TreeName::Meta, FORMAT_KEY, &STORE_FORMAT.to_be_bytes())?;
            return kv.flush();
        }
        Some(v) => u32::from_be_bytes(
            v.as_slice()
                .try_into()
                .map_err(|_| StorageError::Corrupt("format marker".into()))?,
        ),
    };
    let upgrading = kv
        .get(TreeName::Meta, UPGRADING_KEY)?
        .map(|from| match from.as_slice().try_into() {
            Ok(from) => u32::from_be_bytes(from),
            Err(_) => UNVERSIONED,
        });
    match (found, upgrading) {
        (STORE_FORMAT, None) => Ok(()),
        (UNVERSIONED..=CHAINED_IDS, None) => upgrade(kv, found),
        // An unfinished migration, this build's or a format-3 build's (to 3, from 1 or 2).
        (UNVERSIONED..=STORE_FORMAT, Some(from)) => upgrade(kv, from.min(found)),
        _ => Err(StorageError::Version {
            found,
            supported: STORE_FORMAT,
        }),
    }
}

/// Format 1 to 8 → 9: every bare record gets its version (from format 1), and every
/// block its `block_ids` entry (from format 1 or 2); from 3 to 8 only the number changes
/// (the split of a format-3 directory is `layout`'s, before this; format 4's one-value chains
/// read as one-chunk ones; inline, fixed-width and undirected blocks and chains of ids read as
/// they are). Steps,
/// each flushed: `upgrading` set to the format migrated from; `format = 9`; every record still bare rewritten in place (one insert
/// each, so a record is bare or versioned, never torn); every block without an ids entry
/// given one; `upgrading` removed. Run again after a crash at any point, it skips what is
/// done and ends where one uninterrupted run ends.
fn upgrade(kv: &dyn Kv, from: u32) -> Result<()> {
    tracing::info!(from, to = STORE_FORMAT, "migrating the store format");
    kv.insert(TreeName::Meta, UPGRADING_KEY, &from.to_be_bytes())?;
    kv.flush()?;
    kv.insert(TreeName::Meta, FORMAT_KEY, &STORE_FORMAT.to_be_bytes())?;
    kv.flush()?;
    if from <= UNVERSIONED {
        for kind in RecordKind::ALL {
            let rewritten = rewrite_unversioned(kv, kind)?;
            tracing::info!(record = kind.name(), rewritten, "records given their version");
        }
    }
    if from <= UNINDEXED {
        let indexed = crate::log::index_block_ids(kv)?;
        tracing::info!(blocks = indexed, "blocks given their ids entry");
    }
    kv.flush()?;
    kv.remove(TreeName::Meta, UPGRADING_KEY)?;
    kv.flush()
}

/// Rewrites the bare records of `kind` as version 1 (checked by reading them first), in
/// chunks, since a visitor may not write and artifacts can be large. Returns how many.
fn rewrite_unversioned(kv: &dyn Kv, kind: RecordKind) -> Result<u64> {
    /// Bytes of records held in memory between writes.
    const CHUNK: usize = 16 << 20;
    let mut rewritten = 0;
    let mut start = Vec::new();
    loop {
        let mut chunk: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut held = 0;
        let mut next = None;
        kv.visit(kind.tree(), &start, None, &mut |k, v| {
            if held >= CHUNK {
                next = Some(k.to_vec());
                return Ok(ControlFlow::Break(()));
            }
            if kind.is_unversioned(k, v) {
                let mut versioned = vec![TAG, FORMAT_1_VERSION];
                versioned.extend_from_slice(v);
                chunk.push((k.to_vec(), versioned));
                held += v.len();
            }
            Ok(ControlFlow::Continue(()))
        })?;
        for (k, v) in &chunk {
            check_readable(kind, v)?;
            kv.insert(kind.tree(), k, v)?;
        }
        rewritten += chunk.len() as u64;
        match next {
            Some(k) => start = k,
            None => return Ok(rewritten),
        }
    }
}

/// A bare body labelled version 1 must read back as its record before it is written so: a
/// damaged one stops the migration instead of being relabelled.
fn check_readable(kind: RecordKind, versioned: &[u8]) -> Result<()> {
    match kind {
        RecordKind::Batch => decode::<crate::log::BatchRecord>(kind, versioned).map(drop),
        RecordKind::Artifact => {
            decode_version::<crate::artifacts::StoredArtifact>(kind, FORMAT_1_VERSION, versioned).map(drop)
        }
        RecordKind::Redaction => decode::<crate::artifacts::Redaction>(kind, versioned).map(drop),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::artifacts::{Artifacts, NewArtifact, Redaction};
    use crate::kv::MemKv;
    use crate::log::EventLog;
    use crate::vault::Vault;
    use crate::NewEvent;

    fn meta_format(kv: &dyn Kv) -> Option<Vec<u8>> {
        kv.get(TreeName::Meta, FORMAT_KEY).expect("get")
    }

    /// Every record of the versioned kinds, tree by tree.
    fn records(kv: &dyn Kv) -> Vec<(RecordKind, Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        for kind in RecordKind::ALL {
            kv.visit(kind.tree(), &[], None, &mut |k, v| {
                out.push((kind, k.to_vec(), v.to_vec()));
                Ok(ControlFlow::Continue(()))
            })
            .expect("visit");
        }
        out
    }

    fn artifact(body: Vec<u8>) -> NewArtifact {
        NewArtifact {
            kind: "snapshot".into(),
            schema: 1,
            as_of: 5,
            parents: vec![],
            body,
            created_at: 7,
            provenance: b"p".to_vec(),
        }
    }

    fn events() -> Vec<NewEvent> {
        (0..20)
            .map(|i| NewEvent {
                kind: 1,
                subject: format!("c{}", i % 3),
                event_time: i,
                recorded_at: i,
                body: vec![i as u8],
            })
            .collect()
    }

    /// A store as format 1 left it: a committed batch, two artifacts (one whose hash starts with
    /// the versioned records' tag byte) and a redaction note, all stored bare.
    fn format_1_store() -> (Arc<MemKv>, crate::Head, Vec<crate::ArtifactHash>) {
        let kv = Arc::new(MemKv::default());
        let log = EventLog::open(kv.clone(), Vault::in_memory()).expect("open");
        let head = log.append(events(), 1, 0).expect("append").head;
        let bodies = crate::bodies::KvBodies::new(kv.clone());
        let store = Artifacts {
            kv: kv.as_ref(),
            bodies: &bodies,
        };
        let tagged = (0u32..)
            .map(|i| artifact(i.to_be_bytes().to_vec()))
            .find(|a| a.hash()[0] == TAG)
            .expect("some body hashes to a leading 0xff");
        let (a, _) = store.put(tagged).expect("put");
        let (b, _) = store.put(artifact(b"plain".to_vec())).expect("put");
        store
            .redact(&b, b"redacted".to_vec(), &[(3, vec!["c1".into()])], 9)
            .expect("redact");
        for (kind, k, v) in records(kv.as_ref()) {
            let bare = match kind {
                // Format 1's artifact record held its body.
                RecordKind::Artifact => {
                    let hash: crate::ArtifactHash = k.as_slice().try_into().expect("a hash");
                    let whole = store.get(&hash).expect("get").expect("stored");
                    bincode::serde::encode_to_vec(&whole, bincode::config::standard()).expect("encode")
                }
                RecordKind::Batch | RecordKind::Redaction => v[2..].to_vec(),
            };
            kv.insert(kind.tree(), &k, &bare).expect("strip the version");
        }
        // Nor had it the duplicate check's index.
        let mut indexed = Vec::new();
        kv.visit(TreeName::BlockIds, &[], None, &mut |k, _| {
            indexed.push(k.to_vec());
            Ok(ControlFlow::Continue(()))
        })
        .expect("visit");
        assert!(!indexed.is_empty());
        for k in indexed {
            kv.remove(TreeName::BlockIds, &k).expect("remove");
        }
        kv.insert(TreeName::Meta, FORMAT_KEY, &UNVERSIONED.to_be_bytes())
            .expect("format 1");
        kv.flush().expect("flush");
        (kv, head, vec![a, b])
    }

    fn assert_migrated(kv: &Arc<MemKv>, head: crate::Head, hashes: &[crate::ArtifactHash]) {
        assert_eq!(meta_format(kv.as_ref()), Some(STORE_FORMAT.to_be_bytes().to_vec()));
        assert_eq!(kv.get(TreeName::Meta, UPGRADING_KEY).expect("get"), None);
        let all = records(kv.as_ref());
        assert_eq!(all.len(), 4, "one batch, two artifacts, one redaction note");
        assert!(all
            .iter()
            .all(|(kind, k, v)| v[..2] == [TAG, 1] && !kind.is_unversioned(k, v)));
        let log = EventLog::open(kv.clone(), Vault::in_memory()).expect("reopen");
        assert_eq!(log.head().expect("head"), head);
        // Every event is in the rebuilt index, so re-appending adds nothing.
        let again = log.append(events(), 2, 0).expect("append again");
        assert_eq!((again.appended, again.duplicates), (0, 20));
        let bodies = crate::bodies::KvBodies::new(kv.clone());
        let store = Artifacts {
            kv: kv.as_ref(),
            bodies: &bodies,
        };
        for h in hashes {
            let a = store.get(h).expect("get").expect("stored");
            assert_eq!(a.hash, *h, "the artifact keeps its name");
        }
        assert_eq!(
            store.get(&hashes[0]).expect("get").map(|a| a.recomputed_hash()),
            Some(hashes[0])
        );
        let notes = store.redactions(&hashes[1]).expect("redactions");
        assert_eq!(notes.iter().map(|n| (n.request, n.at)).collect::<Vec<_>>(), [(3, 9)]);
    }

    #[test]
    fn records_round_trip_and_a_newer_version_is_refused_by_name() {
        let note = Redaction {
            request: 4,
            subjects: vec!["c".into()],
            content_hash: [5; 32],
            at: -1,
        };
        let mut bytes = encode(RecordKind::Redaction, &note).expect("encode");
        assert_eq!(bytes[..2], [TAG, 1]);
        assert_eq!(
            decode::<Redaction>(RecordKind::Redaction, &bytes).expect("decode"),
            note
        );
        bytes[1] = 2;
        let err = decode::<Redaction>(RecordKind::Redaction, &bytes).expect_err("version 2");
        assert!(
            matches!(
                err,
                StorageError::RecordVersion {
                    record: "redaction note",
                    found: 2,
                    supported: 1
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "redaction note version 2 is not supported (this build reads version 1)"
        );
        // A bare body, and trailing bytes, are corruption, not a record.
        assert!(matches!(
            decode::<Redaction>(RecordKind::Redaction, &bytes[2..]),
            Err(StorageError::Corrupt(_))
        ));
        bytes[1] = 1;
        bytes.push(0);
        assert!(matches!(
            decode::<Redaction>(RecordKind::Redaction, &bytes),
            Err(StorageError::Corrupt(_))
        ));
    }

    #[test]
    fn a_store_holding_a_newer_record_is_refused_on_open() {
        let (kv, ..) = format_1_store();
        ensure(kv.as_ref()).expect("migrate");
        let (k, mut v) = kv.last(TreeName::Batches).expect("last").expect("a batch");
        v[1] = 9;
        kv.insert(TreeName::Batches, &k, &v).expect("insert");
        match EventLog::open(kv, Vault::in_memory()) {
            Err(StorageError::RecordVersion { record, found, .. }) => assert_eq!((record, found), ("batch record", 9)),
            Err(other) => panic!("expected a record version error, got {other:?}"),
            Ok(_) => panic!("a newer batch record was read"),
        }
    }

    #[test]
    fn a_format_1_store_is_migrated_on_open_keeping_every_artifact_name() {
        let (kv, head, hashes) = format_1_store();
        assert!(records(kv.as_ref())
            .iter()
            .all(|(kind, k, v)| kind.is_unversioned(k, v)));
        EventLog::open(kv.clone(), Vault::in_memory()).expect("open migrates");
        assert_migrated(&kv, head, &hashes);
        // Once migrated, opening again rewrites nothing.
        let before = records(kv.as_ref());
        ensure(kv.as_ref()).expect("again");
        assert_eq!(records(kv.as_ref()), before);
    }

    #[test]
    fn a_migration_interrupted_midway_is_finished_on_open() {
        let (kv, head, hashes) = format_1_store();
        // A format-3 build's crash after the batch record and one artifact were rewritten: its
        // marker does not say where it migrated from.
        kv.insert(TreeName::Meta, UPGRADING_KEY, &[]).expect("marker");
        kv.insert(TreeName::Meta, FORMAT_KEY, &3u32.to_be_bytes())
            .expect("format 3");
        for (kind, k, v) in records(kv.as_ref()).into_iter().take(2) {
            let mut versioned = vec![TAG, 1];
            versioned.extend_from_slice(&v);
            kv.insert(kind.tree(), &k, &versioned).expect("rewrite");
        }
        EventLog::open(kv.clone(), Vault::in_memory()).expect("open finishes the migration");
        assert_migrated(&kv, head, &hashes);
    }

    #[test]
    fn a_migration_killed_at_any_write_is_finished_by_the_next_open() {
        for n in 0.. {
            let (kv, head, hashes) = format_1_store();
            kv.fail_writes_after(n).expect("limit");
            if ensure(kv.as_ref()).is_ok() {
                assert!(n >= 4, "the migration took only {n} writes");
                break;
            }
            kv.crash().expect("crash");
            EventLog::open(kv.clone(), Vault::in_memory()).expect("open after the crash");
            assert_migrated(&kv, head, &hashes);
        }
    }

    #[test]
    fn a_format_4_to_8_store_is_renumbered_and_nothing_else() {
        for from in [
            UNCHUNKED,
            INLINE_BLOCKS,
            FIXED_WIDTH_BLOCKS,
            UNDIRECTED_BLOCKS,
            CHAINED_IDS,
        ] {
            let kv = MemKv::default();
            kv.insert(TreeName::Meta, FORMAT_KEY, &from.to_be_bytes())
                .expect("format 4 to 8");
            kv.insert(TreeName::Chain, &1u64.to_be_bytes(), &[7u8; 64])
                .expect("a chain value");
            ensure(&kv).expect("migrates");
            assert_eq!(meta_format(&kv), Some(STORE_FORMAT.to_be_bytes().to_vec()));
            assert_eq!(kv.get(TreeName::Meta, UPGRADING_KEY).expect("get"), None);
            assert_eq!(
                kv.get(TreeName::Chain, &1u64.to_be_bytes()).expect("get"),
                Some(vec![7u8; 64])
            );
        }
    }

    #[test]
    fn an_unknown_store_format_is_refused() {
        let kv = MemKv::default();
        kv.insert(TreeName::Meta, FORMAT_KEY, &10u32.to_be_bytes())
            .expect("format 10");
        assert!(matches!(
            ensure(&kv),
            Err(StorageError::Version {
                found: 10,
                supported: 9
            })
        ));
    }
}
