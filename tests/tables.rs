//! The feature tables a snapshot or training set must export to, built from the library (the
//! stored snapshot, training's own training set), and the cell-by-cell comparison of a table read
//! back (as JSON: one list of values per column) against them. Shared by the integration binary
//! (parquet and csv crates) and the external one (DuckDB, pandas, Polars).

use cis_core::time::{self, Timestamp};
use cis_features::defs::definitions;
use cis_features::{labels, snapshot};
use cis_storage::{hex, ArtifactHash, Store};
use serde_json::Value;

/// What a column holds, by the documented rule: money (`currency`) decimal(38, 2), counts int64,
/// other units float64; the rest by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Text,
    Time,
    Money,
    Count,
    Real,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell {
    Text(String),
    Time(Timestamp),
    Num(f64),
}

/// The table as the library holds it: column names and kinds, and its cells column by column.
pub(crate) struct Expected {
    pub(crate) columns: Vec<String>,
    pub(crate) kinds: Vec<Kind>,
    pub(crate) cells: Vec<Vec<Cell>>,
}

impl Expected {
    pub(crate) fn rows(&self) -> usize {
        self.cells.first().map_or(0, Vec::len)
    }

    pub(crate) fn column(&self, name: &str) -> &[Cell] {
        let j = self.columns.iter().position(|c| c == name).expect("column");
        &self.cells[j]
    }
}

fn feature_kind(name: &str) -> Kind {
    match definitions().iter().find(|d| d.name == name).map(|d| d.unit) {
        Some("currency") => Kind::Money,
        Some("count") => Kind::Count,
        _ => Kind::Real,
    }
}

/// One snapshot's rows, with labels (churned per row, horizon, labels' K) for a training set.
fn table(store: &Store, parts: &[(ArtifactHash, Option<Vec<bool>>)], labels: Option<(u32, Timestamp)>) -> Expected {
    let mut columns: Vec<String> = vec!["customer_id".into(), "as_of".into(), "known_at".into()];
    let mut kinds = vec![Kind::Text, Kind::Time, Kind::Time];
    let mut cells: Vec<Vec<Cell>> = Vec::new();
    for (n, (hash, churned)) in parts.iter().enumerate() {
        let (_, snap) = snapshot::load(store, hash).expect("load snapshot");
        if n == 0 {
            columns.extend(snap.features.iter().cloned());
            kinds.extend(snap.features.iter().map(|f| feature_kind(f)));
            if labels.is_some() {
                columns.extend(["label_churn", "horizon_days", "labels_known_at"].map(String::from));
                kinds.extend([Kind::Count, Kind::Count, Kind::Time]);
            }
            columns.extend(["snapshot_hash", "definition_set_hash"].map(String::from));
            kinds.extend([Kind::Text, Kind::Text]);
            cells = vec![Vec::new(); columns.len()];
        }
        let w = snap.features.len();
        for (i, c) in snap.matrix.customers.iter().enumerate() {
            let mut row = vec![Cell::Text(c.clone()), Cell::Time(snap.as_of), Cell::Time(snap.known_at)];
            row.extend(snap.matrix.values[i * w..(i + 1) * w].iter().map(|&v| Cell::Num(v)));
            if let (Some((horizon, k)), Some(churned)) = (labels, churned) {
                row.push(Cell::Num(if churned[i] { 1.0 } else { 0.0 }));
                row.push(Cell::Num(f64::from(horizon)));
                row.push(Cell::Time(k));
            }
            row.push(Cell::Text(hex(hash)));
            row.push(Cell::Text(hex(&snap.definition_set)));
            for (col, cell) in cells.iter_mut().zip(row) {
                col.push(cell);
            }
        }
    }
    Expected { columns, kinds, cells }
}

/// The stored snapshot `hash`, read through the library.
pub(crate) fn snapshot_table(store: &Store, hash: &ArtifactHash) -> Expected {
    table(store, &[(*hash, None)], None)
}

/// The training set churn training builds (`labels::training_set`), split back by snapshot.
pub(crate) fn training_table(store: &Store, snapshots: &[ArtifactHash], horizon: u32, known_at: Timestamp) -> Expected {
    let set = labels::training_set(store, snapshots, horizon, known_at).expect("training set");
    let mut at = 0;
    let parts: Vec<(ArtifactHash, Option<Vec<bool>>)> = snapshots
        .iter()
        .map(|h| {
            let (_, snap) = snapshot::load(store, h).expect("load");
            let n = snap.matrix.customers.len();
            assert_eq!(
                set.customers[at..at + n],
                snap.matrix.customers[..],
                "training rows in snapshot order"
            );
            let churned = set.churned[at..at + n].to_vec();
            at += n;
            (*h, Some(churned))
        })
        .collect();
    assert_eq!(at, set.churned.len());
    let t = table(store, &parts, Some((horizon, known_at)));
    // Training's matrix is the features' cells, row for row.
    let w = set.features.len();
    for (j, f) in set.features.iter().enumerate() {
        let col = t.column(f);
        for (i, c) in col.iter().enumerate() {
            assert_eq!(*c, Cell::Num(set.values[i * w + j]));
        }
    }
    t
}

fn number(v: &Value) -> f64 {
    match v {
        Value::Number(n) => n.as_f64().expect("a number"),
        Value::String(s) => s.parse().unwrap_or_else(|_| panic!("'{s}' is not a number")),
        _ => panic!("{v} is not a number"),
    }
}

/// Compares a table read back (`{"columns": [...], "data": [[column values]...]}`) with
/// `exp`, cell by cell. `typed`: the reader saw the file's types (Parquet): a time is an integer
/// of microseconds, money a decimal text with two places, a count an integer, a float the text
/// of its shortest round trip. Otherwise (CSV) any cell may be text or a number of any type.
pub(crate) fn check(reader: &str, got: &Value, exp: &Expected, typed: bool) {
    let columns: Vec<&str> = got["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| c.as_str().expect("name"))
        .collect();
    assert_eq!(columns, exp.columns, "{reader}: columns");
    let data = got["data"].as_array().expect("data");
    assert_eq!(data.len(), exp.columns.len(), "{reader}");
    for (j, (col, want)) in data.iter().zip(&exp.cells).enumerate() {
        let col = col.as_array().expect("a column");
        let name = &exp.columns[j];
        assert_eq!(col.len(), want.len(), "{reader}: rows of {name}");
        for (i, (v, w)) in col.iter().zip(want).enumerate() {
            let at = || format!("{reader}: {name} of row {i}: read {v}, stored {w:?}");
            match (exp.kinds[j], w) {
                (Kind::Text, Cell::Text(s)) => assert_eq!(v.as_str(), Some(s.as_str()), "{}", at()),
                (Kind::Time, Cell::Time(t)) => match v {
                    Value::String(s) if !typed => assert_eq!(*s, time::format(*t), "{}", at()),
                    _ => assert_eq!(v.as_i64(), Some(t.micros()), "{}", at()),
                },
                (Kind::Money, Cell::Num(x)) => {
                    let read = if typed {
                        let s = v.as_str().unwrap_or_else(|| panic!("{}", at()));
                        let (_, frac) = s.split_once('.').unwrap_or_else(|| panic!("{}", at()));
                        assert_eq!(frac.len(), 2, "{}", at());
                        s.parse::<f64>().expect("decimal")
                    } else {
                        number(v)
                    };
                    // To the cent: exact for sums of amounts, the nearest cent for a mean.
                    assert!((read - x).abs() <= 0.005 + 1e-9, "{}", at());
                    assert_eq!((read * 100.0).round(), (x * 100.0).round(), "{}", at());
                }
                (Kind::Count, Cell::Num(x)) => {
                    if typed {
                        assert_eq!(v.as_i64().map(|n| n as f64), Some(*x), "{}", at());
                    } else {
                        assert_eq!(number(v), *x, "{}", at());
                    }
                }
                (Kind::Real, Cell::Num(x)) => {
                    if typed {
                        assert!(v.is_string(), "{}", at());
                    }
                    assert_eq!(number(v), *x, "{}", at());
                }
                _ => panic!("{}", at()),
            }
        }
    }
}

/// Labels over 90 days, as known on 1998-06-30 (CDNOW) and 2025-10-01 (synthetic): mature for
/// every cutoff below.
pub(crate) const HORIZON: u32 = 90;
pub(crate) const CDNOW_LABELS_KNOWN: &str = "1998-06-30";
pub(crate) const SYNTH_LABELS_KNOWN: &str = "2025-10-01";

fn snapshots(store: &Store, cutoffs: &[&str]) -> Vec<ArtifactHash> {
    cutoffs
        .iter()
        .map(|c| {
            let at = cis_core::AsOf::new(Some(crate::util::t(c)), None);
            snapshot::create(store, at).expect("snapshot").0
        })
        .collect()
}

/// CDNOW with snapshots at two cutoffs.
pub(crate) fn cdnow_cutoffs() -> (Store, Vec<ArtifactHash>) {
    let store = crate::util::cdnow_store();
    let snaps = snapshots(&store, &["1997-09-30", "1997-12-31"]);
    (store, snaps)
}

/// A synthetic population (orders, sessions, returns, customers) with snapshots at two cutoffs.
pub(crate) fn synth_cutoffs() -> (Store, Vec<ArtifactHash>) {
    let store = crate::util::synth_store(cis_synth::SynthConfig {
        customers: 400,
        days: 640,
        seed: 7,
        ..cis_synth::SynthConfig::default()
    });
    let snaps = snapshots(&store, &["2025-03-31", "2025-06-30"]);
    (store, snaps)
}
