//! The one set of feature definitions every snapshot, model and the API use.
//!
//! Conventions, for every feature as of a time T:
//! - Windows are half-open: an event is in the `w`-day window when `T − w days < event_time ≤ T`.
//! - Money is in major units of the event's currency, summed at face value (cis does no
//!   currency conversion; a mixed-currency feed should be converted upstream).
//! - Times are in days (fractional where the definition says so).
//! - No feature is ever NaN or infinite: each says what it is when its data is missing.
//!
//! Changing anything here (a name, a description, a formula) must bump [`VERSION`]; the set's
//! hash covers every field, so a changed description alone already changes it.

use std::sync::OnceLock;

pub const VERSION: &str = "features-v1";
pub const WINDOWS: [u32; 3] = [7, 30, 90];

/// What a feature computes. Window kinds carry the index into [`WINDOWS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Calc {
    Orders(usize),
    GrossRevenue(usize),
    NetRevenue(usize),
    AvgOrderValue(usize),
    Returns(usize),
    ReturnRate(usize),
    Sessions(usize),
    SessionMinutes(usize),
    PageViews(usize),
    ActiveDays(usize),
    TenureDays,
    DaysSinceLastOrder,
    DaysSinceLastSession,
    LifetimeOrders,
    LifetimeRevenue,
    OrderTrend30,
    RevenueTrend30,
    SessionTrend30,
    RfmFrequency,
    RfmRecencyDays,
    RfmAgeDays,
    RfmMonetary,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureDef {
    pub name: String,
    pub description: String,
    /// Window length in days, for windowed features.
    pub window_days: Option<u32>,
    pub unit: &'static str,
    /// What the value is when the customer has no data for it.
    pub when_missing: &'static str,
    pub calc: Calc,
}

fn windowed(out: &mut Vec<FeatureDef>) {
    type Template = (
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        fn(usize) -> Calc,
    );
    let templates: [Template; 10] = [
        ("orders", "number of orders", "count", "0", Calc::Orders),
        (
            "gross_revenue",
            "sum of order amounts",
            "currency",
            "0",
            Calc::GrossRevenue,
        ),
        (
            "net_revenue",
            "order amounts minus return amounts (returns by their own time)",
            "currency",
            "0",
            Calc::NetRevenue,
        ),
        (
            "avg_order_value",
            "gross revenue / orders",
            "currency",
            "0 when there is no order",
            Calc::AvgOrderValue,
        ),
        ("returns", "number of returns", "count", "0", Calc::Returns),
        (
            "return_rate",
            "returns / orders in the same window (can exceed 1)",
            "ratio",
            "0 when there is no order",
            Calc::ReturnRate,
        ),
        (
            "sessions",
            "number of sessions (by start time)",
            "count",
            "0",
            Calc::Sessions,
        ),
        (
            "session_minutes",
            "total session duration",
            "minutes",
            "0",
            Calc::SessionMinutes,
        ),
        (
            "page_views",
            "total page views (a session without page_views counts 0)",
            "count",
            "0",
            Calc::PageViews,
        ),
        (
            "active_days",
            "distinct UTC calendar dates with an order, session or return",
            "days",
            "0",
            Calc::ActiveDays,
        ),
    ];
    for (wi, w) in WINDOWS.iter().enumerate() {
        for (name, desc, unit, missing, calc) in templates {
            out.push(FeatureDef {
                name: format!("{name}_{w}d"),
                description: format!("{desc}, last {w} days"),
                window_days: Some(*w),
                unit,
                when_missing: missing,
                calc: calc(wi),
            });
        }
    }
}

fn whole_history(out: &mut Vec<FeatureDef>) {
    let rows: [(&str, &str, &'static str, &'static str, Calc); 12] = [
        (
            "tenure_days",
            "days since the first event of any kind or the signup date, whichever is earlier",
            "days",
            "never missing: every customer in a snapshot has an event",
            Calc::TenureDays,
        ),
        (
            "days_since_last_order",
            "days since the latest order",
            "days",
            "tenure_days when there is no order",
            Calc::DaysSinceLastOrder,
        ),
        (
            "days_since_last_session",
            "days since the latest session",
            "days",
            "tenure_days when there is no session",
            Calc::DaysSinceLastSession,
        ),
        (
            "lifetime_orders",
            "number of orders ever",
            "count",
            "0",
            Calc::LifetimeOrders,
        ),
        (
            "lifetime_revenue",
            "sum of all order amounts ever",
            "currency",
            "0",
            Calc::LifetimeRevenue,
        ),
        (
            "order_trend_30d",
            "(orders in the last 30 days + 1) / (orders in the 30 days before + 1)",
            "ratio",
            "1 when both are 0",
            Calc::OrderTrend30,
        ),
        (
            "revenue_trend_30d",
            "(gross revenue last 30 days + 1) / (gross revenue in the 30 days before + 1)",
            "ratio",
            "1 when both are 0",
            Calc::RevenueTrend30,
        ),
        (
            "session_trend_30d",
            "(sessions in the last 30 days + 1) / (sessions in the 30 days before + 1)",
            "ratio",
            "1 when both are 0",
            Calc::SessionTrend30,
        ),
        (
            "rfm_frequency",
            "repeat purchases: distinct UTC order dates minus one (same-day orders are one purchase)",
            "count",
            "0 when there is no order",
            Calc::RfmFrequency,
        ),
        (
            "rfm_recency_days",
            "days from the first to the last order date (BG/NBD t_x)",
            "days",
            "0 when there is no order",
            Calc::RfmRecencyDays,
        ),
        (
            "rfm_age_days",
            "days from the first order date's midnight to T (BG/NBD T)",
            "days",
            "0 when there is no order",
            Calc::RfmAgeDays,
        ),
        (
            "rfm_monetary",
            "mean order value per repeat purchase date, first purchase date excluded (Gamma-Gamma m_x)",
            "currency",
            "0 when rfm_frequency is 0",
            Calc::RfmMonetary,
        ),
    ];
    for (name, desc, unit, missing, calc) in rows {
        out.push(FeatureDef {
            name: name.into(),
            description: desc.into(),
            window_days: None,
            unit,
            when_missing: missing,
            calc,
        });
    }
}

/// Every feature, in column order.
pub fn definitions() -> &'static [FeatureDef] {
    static DEFS: OnceLock<Vec<FeatureDef>> = OnceLock::new();
    DEFS.get_or_init(|| {
        let mut out = Vec::new();
        windowed(&mut out);
        whole_history(&mut out);
        out
    })
}

/// blake3 over the version and every field of every definition, in order.
pub fn set_hash() -> [u8; 32] {
    static HASH: OnceLock<[u8; 32]> = OnceLock::new();
    *HASH.get_or_init(|| {
        let mut h = blake3::Hasher::new();
        let mut field = |s: &str| {
            h.update(&(s.len() as u32).to_be_bytes());
            h.update(s.as_bytes());
        };
        field(VERSION);
        for d in definitions() {
            field(&d.name);
            field(&d.description);
            field(&d.window_days.map_or(String::new(), |w| w.to_string()));
            field(d.unit);
            field(d.when_missing);
            field(&format!("{:?}", d.calc));
        }
        *h.finalize().as_bytes()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_the_set_is_pinned() {
        let defs = definitions();
        let mut names: Vec<&str> = defs.iter().map(|d| d.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), defs.len());
        assert_eq!(defs.len(), 42);
        // Pinned: if this changes, bump VERSION (old snapshots keep naming the old set).
        assert_eq!(
            cis_storage::hex(&set_hash()),
            "bf5047d8b689521c3df4cce0b2a327e939ec6f2cad263edac2ae5dfd309f150e"
        );
    }
}
