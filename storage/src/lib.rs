//! cis-storage: the append-only, content-addressed, bitemporal event log of cis.
//!
//! It stores opaque event bodies under a canonical envelope and knows nothing of
//! orders, features or models. See `ARCHITECTURE.md` and `storage/FORMAT.md`.

pub mod artifacts;
pub mod block;
mod bodies;
pub mod envelope;
mod error;
mod format;
mod idset;
pub mod kv;
mod layout;
pub mod ledger;
mod lock;
pub mod log;
mod store;
pub mod vault;
mod vlog;

pub use artifacts::{ArtifactHash, ArtifactRef, Artifacts, NewArtifact, Redaction, StoredArtifact};
pub use envelope::{hex, unhex, unhex32, EventBatch, EventId, NewEvent};
pub use error::{Result, StorageError};
pub use idset::PrefixMap;
pub use layout::Compacted;
pub use ledger::{Ledger, LedgerBroken, LedgerRecord, LedgerReport};
pub use log::{
    AppendOutcome, BatchRecord, Compaction, CompactionReport, Entry, EventLog, EventRef, Head, StoredEvent,
    VerifyReport, Visibility, GENESIS,
};
pub use store::Store;
