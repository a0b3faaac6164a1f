//! The promotion record: which model held which stage when (a hash-chained ledger).
//!
//! Every `promote` and `retire` appends one JSON record ([`Promotion`]) to the store's
//! `promotions` ledger (`cis_storage::ledger`: append-only, each record chained to the previous
//! one's hash) and flushes it before returning. Nothing is ever rewritten: the stages at a time
//! T are a fold over the records stamped `at ≤ T`, in ledger order.
//!
//! Rules:
//! - a stage (production, staging) has at most one model per kind: promoting kind k's model to
//!   a stage moves the previous holder out of it;
//! - a model holds at most one stage: promoting a staging model to production leaves staging;
//! - promoting a model to the stage it already holds appends nothing (a no-op, reported);
//! - retiring a model that holds no stage is an error and appends nothing (it is almost always a
//!   wrong hash, and an empty retirement would say nothing);
//! - `at` may not be earlier than the last record's: the record is a timeline, and a stamp in
//!   its past would silently rewrite what `stages_at` answered before;
//! - only model artifacts can be promoted; anything else is an error and appends nothing.
//!
//! The clock is an argument (`at`) so that tests are deterministic; the CLI passes wall time.

use std::ops::ControlFlow;

use cis_storage::{hex, ArtifactHash, Ledger, LedgerBroken, LedgerReport, StorageError, Store};
use serde::{Deserialize, Serialize};

use crate::{load, ModelError, ModelKind};
use cis_core::time::{self, Timestamp};

/// The ledger's name in the store.
pub const LEDGER: &str = "promotions";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Production,
    Staging,
}

impl Stage {
    pub const ALL: [Stage; 2] = [Stage::Production, Stage::Staging];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Production => "production",
            Stage::Staging => "staging",
        }
    }
}

impl cis_core::Choice for Stage {
    const CHOICES: &'static [Stage] = &Stage::ALL;

    fn choice_name(self) -> &'static str {
        self.name()
    }
}

/// A stage or none, by name: what the profile API reports.
pub fn stage_name(stage: Option<Stage>) -> &'static str {
    stage.map_or("none", Stage::name)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Promote,
    Retire,
}

/// One record of the ledger. For a retirement, `stage` is the stage the model left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Promotion {
    pub model: String,
    pub kind: ModelKind,
    pub action: Action,
    pub stage: Stage,
    pub reason: String,
    pub who: String,
    pub at: Timestamp,
}

/// Who held a stage, since when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub kind: ModelKind,
    pub stage: Stage,
    pub model: String,
    pub since: Timestamp,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PromotionError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("model {0} holds no stage: nothing to retire")]
    NoStage(String),
    #[error("a reason is required")]
    EmptyReason,
    #[error(
        "time {} is before the last promotion record ({}): the record only grows forward",
        time::format(*at), time::format(*last)
    )]
    BeforeLast { at: Timestamp, last: Timestamp },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("promotion record encoding: {0}")]
    Json(#[from] serde_json::Error),
}

/// What a promote or retire did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Promoted {
        seq: u64,
        kind: ModelKind,
        stage: Stage,
        /// The model that held `stage` for this kind until now.
        replaced: Option<String>,
        /// The stage this model held before (it leaves it).
        left: Option<Stage>,
    },
    /// The model already holds the stage; nothing was appended.
    AlreadyHeld {
        kind: ModelKind,
        stage: Stage,
        since: Timestamp,
    },
    Retired {
        seq: u64,
        kind: ModelKind,
        stage: Stage,
    },
}

/// The whole record, read back: every record in ledger order with its sequence number.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    pub entries: Vec<(u64, Promotion)>,
}

impl Record {
    /// Reads every record through `ledger`.
    pub fn load(ledger: &Ledger) -> Result<Record, ModelError> {
        let mut entries = Vec::new();
        ledger.visit(1, |r| {
            let p: Promotion = serde_json::from_slice(&r.body).map_err(|e| ModelError::PromotionRecord {
                seq: r.seq,
                reason: e.to_string(),
            })?;
            entries.push((r.seq, p));
            Ok::<_, ModelError>(ControlFlow::Continue(()))
        })?;
        Ok(Record { entries })
    }

    /// Reads the store's record through a transient handle (reading cannot fork the chain;
    /// appends go through [`Promotions`]).
    pub fn read(store: &Store) -> Result<Record, ModelError> {
        Record::load(&store.ledger(LEDGER)?)
    }

    /// Every stage holder after the records stamped `at ≤ t`, by kind then stage.
    pub fn holders_at(&self, t: Timestamp) -> Vec<Holder> {
        let mut held: Vec<Holder> = Vec::new();
        for (_, p) in self.entries.iter().filter(|(_, p)| p.at <= t) {
            held.retain(|h| {
                h.model != p.model && !(p.action == Action::Promote && h.kind == p.kind && h.stage == p.stage)
            });
            if p.action == Action::Promote {
                held.push(Holder {
                    kind: p.kind,
                    stage: p.stage,
                    model: p.model.clone(),
                    since: p.at,
                });
            }
        }
        held.sort_by_key(|h| (h.kind as u8, h.stage));
        held
    }

    /// The model of `kind` holding `stage` at `t`.
    pub fn holder(&self, kind: ModelKind, stage: Stage, t: Timestamp) -> Option<Holder> {
        self.holders_at(t)
            .into_iter()
            .find(|h| h.kind == kind && h.stage == stage)
    }

    /// The stage `model` (hex) held at `t`, if any.
    pub fn stage_of(&self, model: &str, t: Timestamp) -> Option<Stage> {
        self.holders_at(t)
            .into_iter()
            .find(|h| h.model == model)
            .map(|h| h.stage)
    }

    fn last_at(&self) -> Option<Timestamp> {
        self.entries.last().map(|(_, p)| p.at)
    }
}

/// The process's one appending handle on the promotion record.
pub struct Promotions {
    ledger: Ledger,
}

impl Promotions {
    pub fn open(store: &Store) -> Result<Promotions, PromotionError> {
        Ok(Promotions {
            ledger: store.ledger(LEDGER)?,
        })
    }

    pub fn record(&self) -> Result<Record, PromotionError> {
        Ok(Record::load(&self.ledger)?)
    }

    /// Recomputes the chain; `Ok(Err(_))` names the first altered or missing record.
    pub fn verify(&self) -> Result<Result<LedgerReport, LedgerBroken>, PromotionError> {
        Ok(self.ledger.verify()?)
    }

    /// Checks `model` is a model and `at` is not in the record's past; returns its kind, hex and
    /// the record so far.
    fn prepare(
        &self,
        store: &Store,
        model: &ArtifactHash,
        reason: &str,
        at: Timestamp,
    ) -> Result<(ModelKind, String, Record), PromotionError> {
        let (_, m) = load(store, model)?;
        if !ModelKind::SCORED.contains(&m.kind()) {
            return Err(ModelError::from(crate::ParamError::NotScored(m.kind())).into());
        }
        if reason.trim().is_empty() {
            return Err(PromotionError::EmptyReason);
        }
        let record = self.record()?;
        if let Some(last) = record.last_at().filter(|&last| at < last) {
            return Err(PromotionError::BeforeLast { at, last });
        }
        Ok((m.kind(), hex(model), record))
    }

    fn append(&self, p: &Promotion) -> Result<u64, PromotionError> {
        let (seq, _) = self.ledger.append(&serde_json::to_vec(p)?)?;
        // Reported only once durable: a promotion that a crash could undo was not made.
        self.ledger.flush()?;
        tracing::info!(seq, model = %p.model, action = ?p.action, stage = p.stage.name(), "promotion record");
        Ok(seq)
    }

    /// Puts `model` in `stage` as of `at`: its previous holder (same kind) leaves it.
    pub fn promote(
        &self,
        store: &Store,
        model: &ArtifactHash,
        stage: Stage,
        reason: &str,
        who: &str,
        at: Timestamp,
    ) -> Result<Change, PromotionError> {
        let (kind, model, record) = self.prepare(store, model, reason, at)?;
        let current = record.holder(kind, stage, at);
        if let Some(h) = current.as_ref().filter(|h| h.model == model) {
            return Ok(Change::AlreadyHeld {
                kind,
                stage,
                since: h.since,
            });
        }
        let left = record.stage_of(&model, at);
        let seq = self.append(&Promotion {
            model,
            kind,
            action: Action::Promote,
            stage,
            reason: reason.trim().to_string(),
            who: who.to_string(),
            at,
        })?;
        Ok(Change::Promoted {
            seq,
            kind,
            stage,
            replaced: current.map(|h| h.model),
            left,
        })
    }

    /// Takes `model` out of the stage it holds as of `at`.
    pub fn retire(
        &self,
        store: &Store,
        model: &ArtifactHash,
        reason: &str,
        who: &str,
        at: Timestamp,
    ) -> Result<Change, PromotionError> {
        let (kind, model, record) = self.prepare(store, model, reason, at)?;
        let Some(stage) = record.stage_of(&model, at) else {
            return Err(PromotionError::NoStage(model));
        };
        let seq = self.append(&Promotion {
            model,
            kind,
            action: Action::Retire,
            stage,
            reason: reason.trim().to_string(),
            who: who.to_string(),
            at,
        })?;
        Ok(Change::Retired { seq, kind, stage })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(micros: i64) -> Timestamp {
        Timestamp::from_micros(micros)
    }

    fn rec(model: &str, kind: ModelKind, action: Action, stage: Stage, at: i64) -> Promotion {
        Promotion {
            model: model.into(),
            kind,
            action,
            stage,
            reason: "r".into(),
            who: "t".into(),
            at: Timestamp::from_micros(at),
        }
    }

    #[test]
    fn stages_fold_in_order_and_respect_the_time() {
        use Action::*;
        use ModelKind::*;
        use Stage::*;
        let record = Record {
            entries: vec![
                (1, rec("a", Churn, Promote, Staging, 10)),
                (2, rec("a", Churn, Promote, Production, 20)),
                (3, rec("b", Churn, Promote, Production, 30)),
                (4, rec("c", Clv, Promote, Production, 30)),
                (5, rec("b", Churn, Retire, Production, 40)),
            ],
        };
        assert_eq!(record.holders_at(t(5)), vec![]);
        assert_eq!(record.stage_of("a", t(15)), Some(Staging));
        // a moved to production and left staging.
        assert_eq!(record.stage_of("a", t(20)), Some(Production));
        assert_eq!(record.holder(Churn, Staging, t(20)), None);
        // b replaced a; c is another kind and replaces nothing.
        assert_eq!(record.stage_of("a", t(30)), None);
        assert_eq!(
            record.holder(Churn, Production, t(35)).map(|h| (h.model, h.since)),
            Some(("b".into(), t(30)))
        );
        assert_eq!(record.stage_of("c", t(35)), Some(Production));
        // Retired: production of churn is empty, clv is untouched.
        assert_eq!(record.holder(Churn, Production, t(40)), None);
        assert_eq!(record.holders_at(t(i64::MAX)).len(), 1);
    }
}
