//! Auditing any artifact by re-deriving it from its parents, down to the log.
//!
//! Two checks per artifact: *integrity* (do the stored bytes still hash to the artifact's
//! name?) and *derivation* (does running the same code on the parents give the same hash?).
//! Snapshots re-derive from the log; models retrain from their snapshots and stored
//! parameters; scores re-score their snapshot with their models.

use std::collections::HashSet;

use cis_storage::{hex, ArtifactHash, Store, StoredArtifact};
use serde::Serialize;

use crate::erasure;
use crate::monitor::drift;
use cis_core::artifact::ArtifactError;
use cis_core::time::{self, Timestamp};
use cis_features::snapshot::{self, Erasures, Provenance, Replay, SnapshotError};
use cis_models::{self as models, scores, train, ModelError, ModelKind};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Drift(#[from] drift::DriftError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Storage(#[from] cis_storage::StorageError),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "verdict", rename_all = "lowercase")]
pub enum Verdict {
    Identical,
    /// The stored bytes no longer hash to the artifact's name.
    Tampered {
        detail: String,
    },
    /// Re-deriving from the parents gives something else.
    Different {
        detail: String,
    },
    /// The stored content matches its name; cis does not re-derive this kind.
    Intact {
        detail: String,
    },
    /// The artifact (or what it was derived from) differs only because erasure requests
    /// removed customers' data; not tampering.
    Erased {
        detail: String,
        requests: Vec<u64>,
        customers: Vec<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditNode {
    pub hash: String,
    pub kind: String,
    pub as_of: String,
    pub verdict: Verdict,
    /// Where a snapshot was read from.
    pub log: Option<String>,
    pub parents: Vec<AuditNode>,
}

impl AuditNode {
    /// Every node of the tree is identical.
    pub fn all_identical(&self) -> bool {
        self.verdict == Verdict::Identical && self.parents.iter().all(AuditNode::all_identical)
    }

    /// No node is tampered or different: each is identical or explained by an erasure.
    pub fn all_accounted_for(&self) -> bool {
        matches!(
            self.verdict,
            Verdict::Identical | Verdict::Intact { .. } | Verdict::Erased { .. }
        ) && self.parents.iter().all(AuditNode::all_accounted_for)
    }

    pub fn render(&self, depth: usize, out: &mut String) {
        let verdict = match &self.verdict {
            Verdict::Identical => "identical".to_string(),
            Verdict::Tampered { detail } => format!("TAMPERED: {detail}"),
            Verdict::Different { detail } => format!("DIFFERENT: {detail}"),
            Verdict::Intact { detail } => format!("intact: {detail}"),
            Verdict::Erased {
                detail,
                requests,
                customers,
            } => format!("{} ({detail})", erasure::explain(requests, customers)),
        };
        out.push_str(&format!(
            "{}{} {} (as of {}): {verdict}\n",
            "  ".repeat(depth),
            self.kind,
            self.hash,
            self.as_of
        ));
        if let Some(log) = &self.log {
            out.push_str(&format!("{}  log {log}\n", "  ".repeat(depth)));
        }
        for p in &self.parents {
            p.render(depth + 1, out);
        }
    }
}

pub fn audit(store: &Store, hash: &ArtifactHash) -> Result<AuditNode, AuditError> {
    audit_node(store, hash, &mut HashSet::new())
}

fn audit_node(store: &Store, hash: &ArtifactHash, seen: &mut HashSet<ArtifactHash>) -> Result<AuditNode, AuditError> {
    let a = store
        .artifacts()
        .get(hash)?
        .ok_or_else(|| SnapshotError::Artifact(ArtifactError::NotFound(hex(hash))))?;
    let mut node = AuditNode {
        hash: hex(hash),
        kind: a.kind.clone(),
        as_of: time::format(Timestamp::from_micros(a.as_of)),
        verdict: Verdict::Identical,
        log: None,
        parents: Vec::new(),
    };
    if a.recomputed_hash() != a.hash && snapshot::erased_by(store, &a)?.is_none() {
        node.verdict = Verdict::Tampered {
            detail: format!("stored content hashes to {}", hex(&a.recomputed_hash())),
        };
    } else {
        node.verdict = derive(store, &a)?;
    }
    if a.kind == snapshot::KIND {
        node.log = serde_json::from_slice::<Provenance>(&a.provenance)
            .ok()
            .map(|p| format!("read from batch {} head {}", p.log_batch, p.log_head));
    }
    for p in &a.parents {
        if seen.insert(*p) {
            node.parents.push(audit_node(store, p, seen)?);
        }
    }
    Ok(node)
}

/// The erasures recorded on `a` and on every artifact it derives from (requests, customers).
fn lineage_erasures(store: &Store, a: &StoredArtifact) -> Result<Erasures, AuditError> {
    // `None`: no erasure explains this artifact's content, so none is in its lineage from it.
    let mut all = snapshot::erased_by(store, a)?.unwrap_or_default();
    for p in &a.parents {
        if let Some(parent) = store.artifacts().get(p)? {
            let more = lineage_erasures(store, &parent)?;
            all.requests.extend(more.requests);
            all.customers.extend(more.customers);
        }
    }
    all.requests.sort_unstable();
    all.requests.dedup();
    all.customers.sort();
    all.customers.dedup();
    Ok(all)
}

fn derive(store: &Store, a: &StoredArtifact) -> Result<Verdict, AuditError> {
    let differs = |again: ArtifactHash| -> Result<Verdict, AuditError> {
        if again == a.hash {
            return Ok(Verdict::Identical);
        }
        let detail = format!("re-derived as {}", hex(&again));
        // A redacted artifact must re-derive to exactly its redacted content.
        let redacted_elsewhere = a.recomputed_hash() != a.hash && again != a.recomputed_hash();
        let Erasures { requests, customers } = lineage_erasures(store, a)?;
        Ok(if requests.is_empty() || redacted_elsewhere {
            Verdict::Different { detail }
        } else {
            Verdict::Erased {
                detail,
                requests,
                customers,
            }
        })
    };
    if a.kind == snapshot::KIND {
        return Ok(match snapshot::replay(store, &a.hash)? {
            Replay::Identical => Verdict::Identical,
            Replay::Differs { customer, feature, .. } => Verdict::Different {
                detail: format!("customer '{customer}' feature {feature} recomputes differently"),
            },
            Replay::HashMismatch { recomputed, .. } => Verdict::Different {
                detail: format!("re-derived as {recomputed}"),
            },
            Replay::Erased { requests, customers } => Verdict::Erased {
                detail: "every other row re-derives identically from the log".into(),
                requests,
                customers,
            },
        });
    }
    if a.kind == scores::KIND {
        let (snapshot_hash, model_hashes) = a.parents.split_first().ok_or(ModelError::EmptyTrainingSet)?;
        let (again, _) = scores::build(store, snapshot_hash, model_hashes)?;
        return differs(again.hash());
    }
    if ModelKind::of_artifact(&a.kind).is_some() {
        let (_, model) = models::load(store, &a.hash)?;
        let again = train::retrain(store, &model, &a.parents)?;
        return differs(again.artifact()?.hash());
    }
    if a.kind == drift::KIND {
        if let [from, to] = a.parents[..] {
            let (again, _) = drift::build(store, &from, &to)?;
            return differs(again.hash());
        }
    }
    // Quality and decay reports depend on journals and the log as they were: their bytes are
    // checked against their name above, not re-derived.
    Ok(Verdict::Intact {
        detail: format!("content matches its name; cis does not re-derive a {}", a.kind),
    })
}
