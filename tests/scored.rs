//! CDNOW scored once, shared by the export tests of both binaries.

use std::sync::OnceLock;

use cis_core::time::Timestamp;
use cis_models::scores::{self, ScoreRow, ScoreSet};
use cis_storage::{ArtifactHash, Store};

use crate::util::{cdnow_models, cdnow_store};

pub(crate) const CUSTOMERS: usize = 2_357;

pub(crate) struct Scored {
    pub(crate) store: Store,
    /// The scores as stored in (and loaded from) the artifact: what an export reads.
    pub(crate) set: ScoreSet,
    /// The scores as computed before they were stored.
    pub(crate) computed: ScoreSet,
    pub(crate) hash: ArtifactHash,
    pub(crate) generated_at: Timestamp,
}

/// CDNOW as of 1997-09-30, scored by a CLV and a segment model (no churn model), built once.
pub(crate) fn scored() -> &'static Scored {
    static SCORED: OnceLock<Scored> = OnceLock::new();
    SCORED.get_or_init(|| {
        let store = cdnow_store();
        let (snap, clv, seg) = cdnow_models(&store);
        let (hash, _, computed) = scores::score(&store, &snap, &[clv, seg]).expect("score");
        let (artifact, set) = scores::load_scores(&store, &hash).expect("load scores");
        let generated_at = Timestamp::from_micros(artifact.created_at);
        Scored {
            store,
            set,
            computed,
            hash,
            generated_at,
        }
    })
}

pub(crate) fn row<'a>(set: &'a ScoreSet, id: &str) -> &'a ScoreRow {
    set.rows
        .iter()
        .find(|r| r.customer_id == id)
        .expect("customer in the scores")
}
