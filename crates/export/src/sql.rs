//! The shared feature definitions rendered as one SQL script over an events export
//! ([`crate::events`]), for Spark SQL or DuckDB: one definition set, two executors.
//!
//! The script is generated from [`definitions`] — each feature's expression from its `Calc`, its
//! window from its `window_days` — and follows `features::compute` rule for rule: windows are
//! half-open `(T − w, T]`; the previous 30 days of a trend are `(T − 60d, T − 30d]`; returns are
//! windowed by their own time; active days are distinct UTC dates of orders, sessions and returns;
//! tenure runs from the earlier of the first event of any kind and the signup date of the latest
//! customer row carrying one (by event time, then event id); RFM is over purchase dates (same-day
//! orders are one purchase). Sums are exact (integers, decimal money) and become doubles only in
//! the final formulas, in the order `compute` applies them, so each value is the double the
//! snapshot holds. The customers are those with a visible event of any kind, metadata included.
//!
//! The output: one row per customer, ordered by id, with the columns of `cis snapshot export`
//! (`customer_id`, `as_of`, `known_at`, every feature, `definition_set_hash`; not
//! `snapshot_hash`, as no snapshot is stored), typed as it types them: money decimal(38, 2)
//! (cents rounded half away from zero), counts bigint, the rest double.

use std::fmt::Write as _;

use cis_core::time::{self, MICROS_PER_DAY};
use cis_core::{AsOf, Choice};
use cis_features::defs::{definitions, set_hash, Calc, FeatureDef};
use cis_storage::hex;

use crate::events::table_name;
use crate::features::ColumnType;
use cis_core::event::Kind;

/// The SQL engine a script is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Spark,
    Duckdb,
}

impl Choice for Dialect {
    const CHOICES: &'static [Dialect] = &[Dialect::Spark, Dialect::Duckdb];

    fn choice_name(self) -> &'static str {
        match self {
            Dialect::Spark => "spark",
            Dialect::Duckdb => "duckdb",
        }
    }
}

/// The days of the trend features' windows (`Calc::*Trend30`): the last 30 days against the
/// 30 before.
const TREND_DAYS: u32 = 30;

impl Dialect {
    /// A string literal. DuckDB doubles a quote; Spark escapes with a backslash (and reads two
    /// adjacent literals as one, so doubling would drop the quote).
    fn literal(self, s: &str) -> String {
        match self {
            Dialect::Duckdb => format!("'{}'", s.replace('\'', "''")),
            Dialect::Spark => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
        }
    }

    /// Microseconds since the epoch of a timestamp column.
    fn micros(self, col: &str) -> String {
        match self {
            Dialect::Duckdb => format!("epoch_us({col})"),
            Dialect::Spark => format!("unix_micros({col})"),
        }
    }

    /// The timestamp `micros` after the epoch, UTC.
    fn timestamp(self, micros: i64) -> String {
        match self {
            Dialect::Duckdb => format!(
                "TIMESTAMPTZ {}",
                self.literal(&time::format(cis_core::time::Timestamp::from_micros(micros)))
            ),
            Dialect::Spark => format!("timestamp_micros({micros})"),
        }
    }

    /// The view of one table of the export at `events`.
    fn view(self, events: &str, table: &str) -> String {
        let root = events.trim_end_matches('/');
        match self {
            Dialect::Duckdb => format!(
                "CREATE OR REPLACE TEMPORARY VIEW {table} AS SELECT * FROM read_parquet({}, hive_partitioning = true);",
                self.literal(&format!("{root}/{table}/*/*.parquet"))
            ),
            Dialect::Spark => format!(
                "CREATE OR REPLACE TEMPORARY VIEW {table} USING parquet OPTIONS (path {});",
                self.literal(&format!("{root}/{table}"))
            ),
        }
    }
}

fn dbl(x: &str) -> String {
    format!("CAST({x} AS DOUBLE)")
}

/// `x` or 0 when the customer has no row in the aggregate it comes from.
fn or0(x: &str) -> String {
    format!("COALESCE({x}, 0)")
}

/// The UTC day number of `t` (epoch microseconds). Through a double: exact for every instant
/// of the next hundred thousand years (`t` < 2^53 and the quotient's error far below a µs).
fn day(t: &str) -> String {
    format!(
        "CAST(FLOOR({} / {}) AS BIGINT)",
        dbl(t),
        dbl(&MICROS_PER_DAY.to_string())
    )
}

/// Days (fractional) of a span of microseconds, as `compute` divides.
fn days(span: &str) -> String {
    format!("{} / {}", dbl(&format!("({span})")), dbl(&MICROS_PER_DAY.to_string()))
}

/// The window days the aggregates need: every definition's and the trends'.
fn window_days() -> Vec<u32> {
    let mut w: Vec<u32> = definitions().iter().filter_map(|d| d.window_days).collect();
    w.push(TREND_DAYS);
    w.sort_unstable();
    w.dedup();
    w
}

struct Script {
    t: i64,
    k: i64,
}

impl Script {
    /// `t` (epoch µs) is in the `w`-day window `(T − w, T]` (the upper bound holds for every
    /// visible row).
    fn in_window(&self, w: u32) -> String {
        format!("t > {}", self.t - i64::from(w) * MICROS_PER_DAY)
    }

    /// `t` is in the 30 days before the last 30: `(T − 60d, T − 30d]`.
    fn in_prev_trend(&self) -> String {
        let d = i64::from(TREND_DAYS) * MICROS_PER_DAY;
        format!("t > {} AND t <= {}", self.t - 2 * d, self.t - d)
    }

    fn count_if(cond: &str) -> String {
        format!("SUM(CASE WHEN {cond} THEN 1 ELSE 0 END)")
    }

    fn sum_if(cond: &str, x: &str) -> String {
        format!("SUM(CASE WHEN {cond} THEN {x} ELSE 0 END)")
    }

    /// The visible rows of `table`: `event_time ≤ T`, `recorded_at ≤ K`.
    fn visible(&self, d: Dialect, table: &str, cols: &str) -> String {
        format!(
            "SELECT customer_id, {} AS t, {cols} FROM {table} WHERE {} <= {} AND {} <= {}",
            d.micros("event_time"),
            d.micros("event_time"),
            self.t,
            d.micros("recorded_at"),
            self.k
        )
    }

    fn ctes(&self, d: Dialect) -> Vec<(&'static str, String)> {
        let ws = window_days();
        let per_window = |f: &dyn Fn(u32) -> String| ws.iter().map(|&w| f(w)).collect::<Vec<_>>().join(",\n    ");
        let orders = per_window(&|w| {
            format!(
                "{} AS n_{w}, {} AS gross_{w}",
                Self::count_if(&self.in_window(w)),
                Self::sum_if(&self.in_window(w), "amount")
            )
        });
        let returns = per_window(&|w| {
            format!(
                "{} AS n_{w}, {} AS amount_{w}",
                Self::count_if(&self.in_window(w)),
                Self::sum_if(&self.in_window(w), "amount")
            )
        });
        let sessions = per_window(&|w| {
            format!(
                "{} AS n_{w}, {} AS secs_{w}, {} AS views_{w}",
                Self::count_if(&self.in_window(w)),
                Self::sum_if(&self.in_window(w), "duration_s"),
                Self::sum_if(&self.in_window(w), "page_views")
            )
        });
        let active = per_window(&|w| {
            format!(
                "COUNT(DISTINCT CASE WHEN {} THEN day END) AS days_{w}",
                self.in_window(w)
            )
        });
        let prev = self.in_prev_trend();
        vec![
            ("o", self.visible(d, table_name(Kind::Order), "amount")),
            (
                "s",
                self.visible(
                    d,
                    table_name(Kind::Session),
                    "duration_s, COALESCE(page_views, 0) AS page_views",
                ),
            ),
            ("r", self.visible(d, table_name(Kind::Return), "amount")),
            (
                "c",
                self.visible(
                    d,
                    table_name(Kind::Customer),
                    &format!("event_id, {} AS signup", d.micros("signup_date")),
                ),
            ),
            (
                "activity",
                "SELECT customer_id, t FROM o UNION ALL SELECT customer_id, t FROM s \
                 UNION ALL SELECT customer_id, t FROM r"
                    .into(),
            ),
            (
                "people",
                "SELECT customer_id, MIN(t) AS first_event FROM \
                 (SELECT customer_id, t FROM activity UNION ALL SELECT customer_id, t FROM c) e GROUP BY customer_id"
                    .into(),
            ),
            (
                "signup",
                "SELECT customer_id, signup FROM (SELECT customer_id, signup, \
                 ROW_NUMBER() OVER (PARTITION BY customer_id ORDER BY t DESC, event_id DESC) AS latest \
                 FROM c WHERE signup IS NOT NULL) g WHERE latest = 1"
                    .into(),
            ),
            (
                "oa",
                format!(
                    "SELECT customer_id,\n    {orders},\n    {} AS n_prev, {} AS gross_prev,\n    \
                     COUNT(*) AS n_all, SUM(amount) AS gross_all, MAX(t) AS last_t\n  FROM o GROUP BY customer_id",
                    Self::count_if(&prev),
                    Self::sum_if(&prev, "amount")
                ),
            ),
            ("ra", format!("SELECT customer_id,\n    {returns}\n  FROM r GROUP BY customer_id")),
            (
                "sa",
                format!(
                    "SELECT customer_id,\n    {sessions},\n    {} AS n_prev, MAX(t) AS last_t\n  FROM s GROUP BY customer_id",
                    Self::count_if(&prev)
                ),
            ),
            (
                "aa",
                format!(
                    "SELECT customer_id,\n    {active}\n  FROM (SELECT customer_id, t, {} AS day FROM activity) a GROUP BY customer_id",
                    day("t")
                ),
            ),
            (
                "purchases",
                format!(
                    "SELECT customer_id, day, SUM(amount) AS total, MIN(day) OVER (PARTITION BY customer_id) AS first_day \
                     FROM (SELECT customer_id, {} AS day, amount FROM o) p GROUP BY customer_id, day",
                    day("t")
                ),
            ),
            (
                "rfm",
                "SELECT customer_id, COUNT(*) - 1 AS repeats, MIN(day) AS first_day, MAX(day) AS last_day, \
                 SUM(CASE WHEN day > first_day THEN total ELSE 0 END) AS repeat_total FROM purchases GROUP BY customer_id"
                    .into(),
            ),
            (
                "base",
                "SELECT p.customer_id, \
                 CASE WHEN g.signup IS NOT NULL AND g.signup < p.first_event THEN g.signup ELSE p.first_event END AS start \
                 FROM people p LEFT JOIN signup g ON g.customer_id = p.customer_id"
                    .into(),
            ),
        ]
    }

    /// The feature `def` as a double, exactly as `Acc::finish` computes it.
    fn feature(&self, def: &FeatureDef) -> String {
        let w = def.window_days.unwrap_or(TREND_DAYS);
        let t = self.t;
        let tenure = days(&format!("{t} - b.start"));
        let ratio = |num: String, den: String| format!("({num} + {one}) / ({den} + {one})", one = dbl("1"));
        let count = |x: &str| dbl(&or0(x));
        // Money: an exact decimal sum, then a double of major units.
        let money = |x: &str| dbl(&or0(x));
        let per_order = |x: String| {
            format!(
                "CASE WHEN {} > 0 THEN {x} / {} ELSE {} END",
                or0(&format!("oa.n_{w}")),
                count(&format!("oa.n_{w}")),
                dbl("0")
            )
        };
        let since = |last: &str| {
            format!(
                "CASE WHEN {last} IS NULL THEN {tenure} ELSE {} END",
                days(&format!("{t} - {last}"))
            )
        };
        match def.calc {
            Calc::Orders(_) => count(&format!("oa.n_{w}")),
            Calc::GrossRevenue(_) => money(&format!("oa.gross_{w}")),
            Calc::NetRevenue(_) => dbl(&format!(
                "{} - {}",
                or0(&format!("oa.gross_{w}")),
                or0(&format!("ra.amount_{w}"))
            )),
            Calc::AvgOrderValue(_) => per_order(money(&format!("oa.gross_{w}"))),
            Calc::Returns(_) => count(&format!("ra.n_{w}")),
            Calc::ReturnRate(_) => per_order(count(&format!("ra.n_{w}"))),
            Calc::Sessions(_) => count(&format!("sa.n_{w}")),
            Calc::SessionMinutes(_) => format!("{} / {}", count(&format!("sa.secs_{w}")), dbl("60")),
            Calc::PageViews(_) => count(&format!("sa.views_{w}")),
            Calc::ActiveDays(_) => count(&format!("aa.days_{w}")),
            Calc::TenureDays => tenure,
            Calc::DaysSinceLastOrder => since("oa.last_t"),
            Calc::DaysSinceLastSession => since("sa.last_t"),
            Calc::LifetimeOrders => count("oa.n_all"),
            Calc::LifetimeRevenue => money("oa.gross_all"),
            Calc::OrderTrend30 => ratio(count(&format!("oa.n_{TREND_DAYS}")), count("oa.n_prev")),
            Calc::RevenueTrend30 => ratio(money(&format!("oa.gross_{TREND_DAYS}")), money("oa.gross_prev")),
            Calc::SessionTrend30 => ratio(count(&format!("sa.n_{TREND_DAYS}")), count("sa.n_prev")),
            Calc::RfmFrequency => count("rfm.repeats"),
            Calc::RfmRecencyDays => count("rfm.last_day - rfm.first_day"),
            Calc::RfmAgeDays => format!(
                "CASE WHEN rfm.first_day IS NULL THEN {} ELSE {} END",
                dbl("0"),
                days(&format!("{t} - rfm.first_day * {MICROS_PER_DAY}"))
            ),
            Calc::RfmMonetary => format!(
                "CASE WHEN {} > 0 THEN {} / {} ELSE {} END",
                or0("rfm.repeats"),
                money("rfm.repeat_total"),
                count("rfm.repeats"),
                dbl("0")
            ),
        }
    }
}

/// `x` (a double) typed as `cis snapshot export` types the feature's unit.
fn typed(ty: ColumnType, x: &str) -> String {
    match ty {
        // `(v * 100).round()` cents, as the snapshot export rounds: half away from zero.
        ColumnType::Money => format!(
            "CAST(CAST(ROUND(({x}) * {}) AS DECIMAL(38, 0)) * CAST(0.01 AS DECIMAL(3, 2)) AS DECIMAL(38, 2))",
            dbl("100")
        ),
        ColumnType::Count => format!("CAST({x} AS BIGINT)"),
        ColumnType::Real => x.to_string(),
    }
}

/// The script: the four views over the export at `events` (a directory or an object-store
/// URL, as the engine reads it), then one SELECT of every feature at (T, K).
pub fn render(dialect: Dialect, events: &str, at: AsOf) -> String {
    let script = Script {
        t: at.as_of.micros(),
        k: at.known_at.micros(),
    };
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "-- cis feature definitions {} ({} features) as of T = {}, known at K = {}, over the events export {events}.\n\
         -- Generated by `cis features sql --dialect {}`, one row per customer.",
        hex(&set_hash()),
        definitions().len(),
        time::format(at.as_of),
        time::format(at.known_at),
        dialect.choice_name()
    );
    for &kind in Kind::CHOICES {
        let _ = writeln!(out, "{}", dialect.view(events, table_name(kind)));
    }
    let ctes: Vec<String> = script
        .ctes(dialect)
        .into_iter()
        .map(|(name, body)| format!("{name} AS (\n  {body}\n)"))
        .collect();
    let _ = writeln!(out, "WITH\n{}", ctes.join(",\n"));
    let mut cols = vec![
        "b.customer_id AS customer_id".to_string(),
        format!("{} AS as_of", dialect.timestamp(script.t)),
        format!("{} AS known_at", dialect.timestamp(script.k)),
    ];
    for d in definitions() {
        cols.push(format!(
            "{} AS {}",
            typed(ColumnType::of(&d.name), &script.feature(d)),
            d.name
        ));
    }
    cols.push(format!("{} AS definition_set_hash", dialect.literal(&hex(&set_hash()))));
    let _ = writeln!(
        out,
        "SELECT\n  {}\nFROM base b\n  LEFT JOIN oa ON oa.customer_id = b.customer_id\n  \
         LEFT JOIN ra ON ra.customer_id = b.customer_id\n  LEFT JOIN sa ON sa.customer_id = b.customer_id\n  \
         LEFT JOIN aa ON aa.customer_id = b.customer_id\n  LEFT JOIN rfm ON rfm.customer_id = b.customer_id\n\
         ORDER BY b.customer_id;",
        cols.join(",\n  ")
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use cis_core::time::Timestamp;

    fn at() -> AsOf {
        AsOf::new(Some(Timestamp::from_day(10_000)), None)
    }

    #[test]
    fn every_feature_is_a_column_in_definition_order() {
        let sql = render(Dialect::Duckdb, "/x", at());
        let mut from = 0;
        for d in definitions() {
            let needle = format!(" AS {},\n", d.name);
            let pos = sql[from..]
                .find(&needle)
                .unwrap_or_else(|| panic!("{} missing or out of order", d.name));
            from += pos;
        }
        assert!(sql.contains("read_parquet('/x/orders/*/*.parquet', hive_partitioning = true)"));
        assert_eq!(sql.matches(';').count(), 5, "four views and one query");
    }

    #[test]
    fn paths_are_quoted_for_each_engine() {
        assert_eq!(Dialect::Duckdb.literal("a'b"), "'a''b'");
        assert_eq!(Dialect::Spark.literal(r"a'b\c"), r"'a\'b\\c'");
        let spark = render(Dialect::Spark, "s3://bucket/events/", at());
        assert!(spark.contains("USING parquet OPTIONS (path 's3://bucket/events/orders')"));
    }

    #[test]
    fn windows_are_half_open_at_t() {
        let s = Script {
            t: 1_000 * MICROS_PER_DAY,
            k: 0,
        };
        assert_eq!(s.in_window(7), format!("t > {}", 993 * MICROS_PER_DAY));
        assert_eq!(
            s.in_prev_trend(),
            format!("t > {} AND t <= {}", 940 * MICROS_PER_DAY, 970 * MICROS_PER_DAY)
        );
    }
}
